"""A daemon whose home's index a newer localstore wrote: refused untouched, with an exit code the
service files do not restart (systemd's RestartPreventExitStatus=, launchd's successful exit), and
a line in daemon.log saying what to do. Real daemon processes, run with each service file's own
command line, on a real index whose schema is ahead of this code."""

from __future__ import annotations

import json
import os
import plistlib
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import apsw

from localstore._daemon_state import (
    EXIT_HOME_GONE,
    EXIT_HOME_LOCKED,
    EXIT_HOME_READ_ONLY,
    EXIT_INDEX_NEWER,
)
from localstore.cli import EXIT_ERROR
from localstore.config import Settings, load_settings
from localstore.index import CORE_MIGRATIONS
from sync.cli_daemon import service_plan
from tests.conftest import run_cli

CLI = [sys.executable, "-c", "from localstore.cli import main; main()"]
_TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"  # offline: no keychain
    return env


def _settings(home: Path) -> Settings:
    return load_settings(home=home, environ={})


def _newer_home(home: Path) -> None:
    """A home with one blueprint whose index records a core schema one ahead of this code."""
    assert run_cli(home, "init").returncode == 0
    saved = run_cli(home, "save", "team/hello", "-f", "-", stdin="steps: [a]\n")
    assert saved.returncode == 0, saved.stderr
    conn = apsw.Connection(str(home / "data" / "index.db"))
    newer = len(CORE_MIGRATIONS) + 1
    conn.execute("UPDATE component_versions SET version = ? WHERE component = 'core'", (newer,))
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _index_files(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((home / "data").glob("index.db*"))}


def _unit_keys(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_daemon_on_a_newer_index_exits_with_a_code_no_service_restarts(tmp_path: Path) -> None:
    """Before: exit 1, which systemd's `Restart=on-failure` (every 5 s) and launchd's
    `KeepAlive: {SuccessfulExit: false}` (every 10 s) answered with a restart, forever, each one
    re-reading the refused index and logging the refusal again."""
    home = tmp_path / "home"
    _newer_home(home)
    settings = _settings(home)
    before = _index_files(home)
    log = settings.paths.state / "daemon.log"

    # systemd: the unit's own ExecStart, as systemd runs it.
    unit = service_plan(settings, str(home), platform="linux").text
    keys = _unit_keys(unit)
    args = [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(keys["ExecStart"][0])]
    done = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == EXIT_INDEX_NEWER == 78, done.stderr
    assert keys["Restart"] == ["on-failure"]
    prevented = {int(c) for v in keys["RestartPreventExitStatus"] for c in v.split()}
    assert prevented == {EXIT_HOME_LOCKED, EXIT_HOME_GONE, EXIT_INDEX_NEWER, EXIT_HOME_READ_ONLY}
    assert "written by a newer localstore" in done.stderr and "upgrade localstore" in done.stderr
    assert "Traceback" not in done.stderr
    logged = log.read_text()
    assert "daemon could not start: the index" in logged and "newer localstore" in logged
    assert "start the daemon again (its service does not restart it)" in logged
    assert "Traceback" not in logged

    # launchd: a successful exit is the only one KeepAlive {SuccessfulExit: false} leaves alone.
    plist = plistlib.loads(service_plan(settings, str(home), platform="darwin").text.encode())
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    done = subprocess.run(
        plist["ProgramArguments"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text().count("written by a newer localstore") == 2

    # Windows: RestartOnFailure retries a task that failed to start, not a non-zero exit; the
    # task runs the daemon without --no-restart-code, so Task Scheduler shows the real code.
    task = ET.fromstring(
        service_plan(settings, str(home), platform="win32").text.replace('encoding="UTF-16"', "")
    )
    arguments = task.find("t:Actions/t:Exec/t:Arguments", _TASK_NS)
    assert arguments is not None and "--no-restart-code" not in (arguments.text or "")

    # Nothing of the newer index was changed by the refusals.
    assert _index_files(home) == before


def test_cli_and_detach_on_a_newer_index_exit_1_with_the_upgrade_hint(tmp_path: Path) -> None:
    """The other commands keep the CLI's documented "error" code (docs/cli.md): 1, with the hint;
    `daemon --detach` reports the daemon's code and its reason."""
    home = tmp_path / "home"
    _newer_home(home)
    before = _index_files(home)
    done = run_cli(home, "--json", "ls")
    assert done.returncode == EXIT_ERROR, done.stderr
    error = json.loads(done.stderr)["error"]
    assert error["exit_code"] == EXIT_ERROR and "newer localstore" in error["message"]
    assert "upgrade localstore" in error["hint"]
    detach = subprocess.run(
        [*CLI, "--home", str(home), "daemon", "--detach"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert detach.returncode == EXIT_ERROR
    assert f"the daemon exited with code {EXIT_INDEX_NEWER}" in detach.stderr
    assert "newer localstore" in detach.stderr
    assert _index_files(home) == before
