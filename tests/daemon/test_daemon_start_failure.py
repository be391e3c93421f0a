"""A daemon that cannot start says why in daemon.log, not only on a console nobody reads.

Run as a service (launchd with --no-stderr, a hidden task), its stderr may go nowhere: the log
file is where an operator looks.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_a_daemon_that_cannot_open_its_index_says_why_in_its_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "init").returncode == 0
    index = home / "data" / "index.db"
    index.unlink()
    index.mkdir()  # (no user can open a directory as a database; root included)

    done = run_cli(home, "daemon", "--no-stderr")

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "index.db" in done.stderr
    log = (home / "state" / "daemon.log").read_text()
    assert "daemon could not start" in log and "index.db" in log
    assert "fix: check that this user may write index.db" in log
    assert "Traceback" not in log  # (a known error: one line with its fix)
