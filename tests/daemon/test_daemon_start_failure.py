"""A daemon that cannot start says why in daemon.log, not only on a console nobody reads.

Run as a service (launchd with --no-stderr, a hidden task), its stderr may go nowhere: the log
file is where an operator looks.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sync.control import ControlError, ControlServer
from tests.conftest import run_cli

from .test_control import _Handler


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


def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    """`--port 70000` made bind() raise OverflowError on the server thread: a traceback, a 10 s
    wait, then "the control server did not start in time"."""
    for option in ("--port", "--metrics-port"):
        t0 = time.monotonic()
        done = run_cli(tmp_path / "home", "daemon", option, "70000")
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert "70000" in done.stderr and "0<=x<=65535" in done.stderr
        assert time.monotonic() - t0 < 8


@pytest.mark.parametrize(("port", "metrics_port"), [(70000, None), (0, -1)])
def test_the_control_server_refuses_a_bad_port_at_once(port: int, metrics_port: int | None) -> None:
    server = ControlServer(
        _Handler(), token="t" * 40, metrics_text=lambda: "", port=port, metrics_port=metrics_port
    )
    t0 = time.monotonic()
    with pytest.raises(ControlError) as info:
        server.start()
    assert "port must be 0-65535" in info.value.message
    # The bad metrics port is the one refused: the API port was bound before it.
    assert (server.port != 0) == (metrics_port is not None)
    assert time.monotonic() - t0 < 5
    server.stop()
    assert server.join(10)


def test_a_log_file_the_daemon_cannot_open_is_a_clear_error(tmp_path: Path) -> None:
    """An unwritable daemon.log (a daemon once run with sudo left it root's; here: a folder in
    its place, which root cannot open either) was "unexpected IsADirectoryError ... report it"."""
    home = tmp_path / "home"
    (home / "state" / "daemon.log").mkdir(parents=True)
    done = run_cli(home, "daemon", "--no-stderr")
    assert done.returncode == 1
    assert "unexpected" not in done.stderr and "report it" not in done.stderr
    assert done.stderr.startswith("error: cannot write the daemon's log")
    assert str(home / "state" / "daemon.log") in done.stderr
    assert "check that this user owns" in done.stderr
