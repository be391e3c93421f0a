"""The app is updated while the daemon the older version started goes on running: the newer
localstore opens the home and upgrades its index, after which every write of the old daemon is
refused (`Index.write`: NewerIndexError). Real daemon processes and real CLI processes; the newer
localstore is this code with one core schema version more (what its open migrates to)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from localstore._daemon_state import EXIT_INDEX_NEWER
from localstore.index import CORE_MIGRATIONS
from sync.embed import STATE_FILE, daemon_running, lock_holder, write_state
from tests.conftest import run_cli

from .conftest import REPO, DaemonProc, eventually, home_settings

# The newer localstore: one core migration more than this code knows.
NEWER = (
    "import localstore._index_upkeep as _upkeep\n"
    "import localstore.index as _index\n"
    "_index.CORE_MIGRATIONS = _upkeep.CORE_MIGRATIONS = (*_index.CORE_MIGRATIONS,"
    " 'CREATE TABLE IF NOT EXISTS newer_version_rows (x)')\n"
)
# A daemon of a version from before it stopped by itself on such an upgrade (its other parts
# are this code's): what a person still has running after updating the app.
OLDER_DAEMON = "import sync.daemon as _d\n_d.Daemon._newer_index = lambda self: None\n"
OFFLINE = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}  # no keychain: offline


def _cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The newer localstore's CLI on ``home`` (its first open upgrades the index)."""
    return run_cli(home, *args, stdin=stdin, env=OFFLINE, prelude=NEWER)


def _home(home: Path) -> None:
    """A home made by this (the older) version, with one blueprint."""
    old = [sys.executable, "-c", "from localstore.cli import main; main()", "--home", str(home)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    subprocess.run([*old, "init"], check=True, capture_output=True, env=env, cwd=REPO)
    saved = subprocess.run(
        [*old, "save", "team/hello", "-f", "-"],
        input=b"steps: [a]\n",
        capture_output=True,
        env=env,
        cwd=REPO,
    )
    assert saved.returncode == 0, saved.stderr


def _wait_exit(d: DaemonProc, timeout: float = 60.0) -> int | None:
    if not eventually(lambda: d.proc.poll() is not None, timeout):
        return None
    return int(d.proc.returncode)


def _log(home: Path) -> str:
    return (home_settings(home).paths.state / "daemon.log").read_text()


def test_a_daemon_stops_by_itself_when_a_newer_localstore_upgrades_its_home(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    """Before: it ran on for days with every write refused (each edit retried and given up,
    each sync cycle failed with a traceback), holding the home's lock, so the newer app could
    not sync the home. Now it stops with one line saying what to do, with exit 1, which the
    service restarts: as the newer localstore, which serves the home, or as this one, which
    refuses the index at start with the code no service restarts."""
    home = tmp_path / "home"
    _home(home)
    d = spawn_daemon(home, env=OFFLINE)
    state = d.wait_ready()

    upgraded = _cli(home, "ls")  # the updated app opens the home
    assert upgraded.returncode == 0, upgraded.stderr

    assert _wait_exit(d) == 1, d.output()
    log = _log(home)
    assert "Traceback" not in log
    stopping = [line for line in log.splitlines() if "newer localstore" in line]
    assert len(stopping) == 1, stopping
    assert (
        " ERROR sync.daemon: stopping: a newer localstore upgraded this home's index"
        in (stopping[0])
    )
    assert "edits made meanwhile are in the files" in stopping[0]
    assert "start the daemon again, so that the newer localstore serves the home" in stopping[0]
    # It let go of the home: the newer version's daemon or app can sync it.
    settings = home_settings(home)
    assert lock_holder(settings.paths.state) is None and daemon_running(settings) is None
    # (What it wrote in daemon.json for the newer `status` and `doctor` to compare.)
    assert state["core_schema"] == len(CORE_MIGRATIONS)

    # A restart that runs this version again is refused at start, with the code no service
    # restarts (tests/packaging/test_newer_index_daemon.py): no loop of restarts.
    again = spawn_daemon(home, env=OFFLINE)
    assert _wait_exit(again) == EXIT_INDEX_NEWER, again.output()
    assert _cli(home, "ls").stdout.splitlines()[-1].startswith("team/hello")


def test_an_older_daemon_left_running_is_named_by_status_and_doctor_and_loses_no_edit(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    """A daemon of a version that does not stop by itself: its watcher sees edits it can no
    longer record. Before, the newer `status` did not mention it, and `doctor` relayed its
    watcher's "upgrade localstore to open this home", the opposite of what to do; the watcher
    retried each edit five times, then every 30 s to 5 min, with an ERROR each time."""
    home = tmp_path / "home"
    _home(home)
    d = spawn_daemon(home, env=OFFLINE, prelude=OLDER_DAEMON)
    pid = d.wait_ready()["pid"]
    assert _cli(home, "ls").returncode == 0  # the updated app opens the home

    root = home / "blueprints" / "team"
    (root / "hello.blueprint.yaml").write_text("steps: [edited]\n")
    (root / "new.blueprint.yaml").write_text("steps: [new]\n")
    client = d.client()

    def refused() -> bool:
        problem = client.status()["watcher"].get("problem") or ""
        return "and 1 more blueprint(s)" in problem and "newer localstore" in problem

    assert eventually(refused, 30), client.status()["watcher"]

    status = _cli(home, "status")
    assert status.returncode == 3, status.stderr
    assert f"daemon: the daemon (pid {pid}) runs localstore" in status.stdout
    assert "older than this home's index" in status.stdout
    assert "fix: restart the daemon, so that this localstore serves the home" in status.stdout
    doctor = _cli(home, "--json", "doctor")
    check = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}["daemon"]
    assert check["status"] == "problem" and "older than this home's index" in check["detail"]
    assert "restart the daemon" in check["fix"]

    # A daemon from before daemon.json named its schema: older than any version that asks.
    settings = home_settings(home)
    state = json.loads((settings.paths.state / STATE_FILE).read_text())
    del state["core_schema"]
    write_state(settings.paths.state, {**state, "version": "0.0.9"})
    status = _cli(home, "status")
    assert status.returncode == 3
    assert f"the daemon (pid {pid}) runs an older localstore (0.0.9)" in status.stdout

    # Its watcher gave each edit up at once, in one line, and left it in the file.
    watcher = [
        line
        for line in _log(home).splitlines()
        if "localstore.watcher" in line and (" WARNING " in line or " ERROR " in line)
    ]
    assert len(watcher) == 1, watcher
    assert "it stays in the file for the newer version to record" in watcher[0]
    assert d.stop() == 0
    # The newer version's open records both edits from the files: nothing was lost.
    assert _cli(home, "show", "team/hello").stdout == "steps: [edited]\n"
    assert _cli(home, "show", "team/new").stdout == "steps: [new]\n"
    assert _cli(home, "check").returncode == 0
