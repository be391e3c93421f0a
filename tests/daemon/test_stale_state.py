"""A daemon.json left by a daemon that died (SIGKILL, power loss) while its pid now names another
process, and the home's lock is held by someone else (an app syncing in-process)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.embed import daemon_running, lock_holder, write_state

from .conftest import home_settings, process_holding_home_lock

CLI = [sys.executable, "-c", "from localstore.cli import main; main()"]


@pytest.fixture
def lock_holder_proc(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the home's lock (as an app's start_sync does); killed after."""
    with process_holding_home_lock(home_settings(tmp_path / "h").paths.state) as proc:
        yield proc


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process of the user: after a reboot it got the dead daemon's pid."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def test_a_stale_state_file_whose_pid_was_reused_is_not_a_running_daemon(
    tmp_path: Path, lock_holder_proc: subprocess.Popen[str], bystander: subprocess.Popen[bytes]
) -> None:
    """daemon_running trusted daemon.json whenever its pid lived and *anyone* held the lock, so
    `localstore daemon --stop` sent SIGTERM to whatever process had the dead daemon's pid."""
    home = tmp_path / "h"
    settings = home_settings(home)
    write_state(settings.paths.state, {"pid": bystander.pid, "port": 1, "token": "x" * 43})
    assert lock_holder(settings.paths.state) == lock_holder_proc.pid
    assert daemon_running(settings) is None
    stop = subprocess.run(
        [*CLI, "--home", str(home), "daemon", "--stop"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bystander.poll() is None, "an unrelated process was sent SIGTERM"
    assert stop.returncode == 1
    assert f"process {lock_holder_proc.pid} syncs it" in stop.stderr
