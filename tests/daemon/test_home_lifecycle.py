"""A daemon that runs for months while its home changes under it: the home deleted or moved away,
the disk holding it full."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from localstore._daemon_state import EXIT_HOME_GONE
from sync.daemon import TICK_S
from sync.embed import STATE_FILE, daemon_running, lock_holder
from tests.store import test_disk_full
from tests.store.test_disk_full import DiskSpace

from .conftest import DaemonProc, eventually, home_settings

# A real full disk (a small tmpfs), the store's disk-full tests' fixture.
disk = test_disk_full.disk


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _wait_exit(d: DaemonProc, timeout: float = 30.0) -> int | None:
    """The daemon's exit code once it exits by itself, None if it still runs after ``timeout``."""
    if not eventually(lambda: d.proc.poll() is not None, timeout):
        return None
    return int(d.proc.returncode)


def test_a_daemon_whose_home_is_deleted_stops_and_does_not_make_it_again(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    """`rm -rf` of the whole home while the daemon ran: its tick "restored" the deleted lock
    file and daemon.json, which made `home/state/` again, and it ran on for ever on an index no
    path names (everything it saved or pulled lost at exit), reported as running by
    `localstore status` on a home that holds nothing but its own state files."""
    home = tmp_path / "h"
    d = spawn_daemon(home)
    d.wait_ready()

    # (Again while it fails: the daemon may write its log into state/ during the rmtree, as
    # it would during a user's `rm -rf`, and the rmtree then finds the folder not empty.)
    def removed() -> bool:
        shutil.rmtree(home, ignore_errors=True)
        return not home.exists()

    assert eventually(removed, 10)
    assert _wait_exit(d) == EXIT_HOME_GONE, d.output()
    assert not home.exists(), _files_under(tmp_path)
    assert "is gone" in d.output()


def test_a_daemon_whose_home_is_moved_stops_and_leaves_no_home_at_the_old_path(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    """`mv` of the home: the daemon made `state/` again at the old path (lock, daemon.json, log),
    so two homes now claimed it, and kept syncing the moved index under the old paths, while a
    daemon started on the moved home (its lock file an inode nobody held any more) synced the
    same index too."""
    home, moved = tmp_path / "h", tmp_path / "moved"
    d = spawn_daemon(home)
    d.wait_ready()
    os.rename(home, moved)
    assert _wait_exit(d) == EXIT_HOME_GONE, d.output()
    assert not home.exists(), _files_under(tmp_path)
    assert daemon_running(home_settings(moved)) is None
    assert lock_holder(home_settings(moved).paths.state) is None
    # The moved home is whole: a daemon started there serves it.
    again = spawn_daemon(moved)
    assert again.wait_ready()["pid"] == again.proc.pid
    assert again.stop() == 0


def _restore_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "sync.daemon"
        and r.levelno >= logging.WARNING
        and "No space left on device" in r.getMessage() + str(r.exc_info and r.exc_info[1])
    ]


def test_a_state_file_that_cannot_be_restored_on_a_full_disk_is_not_logged_every_tick(
    inproc_daemon: Any, disk: DiskSpace, caplog: pytest.LogCaptureFixture
) -> None:
    """daemon.json deleted while the disk is full (a clean-up freeing space, state/ removed):
    its rewrite failed every tick and each failure was an ERROR, two a second for as long as
    the disk stayed full (the journal's, under systemd, where stderr goes). Now it is one line,
    and the file is back once the disk has room."""
    caplog.set_level(logging.DEBUG)
    d = inproc_daemon(disk.root / "home")
    state_file = d.daemon.settings.paths.state / STATE_FILE
    # The freed page of daemon.json is taken again at once (a tick in between may have
    # rewritten it while there was room: then again).
    disk.fill()
    while state_file.exists():
        state_file.unlink(missing_ok=True)
        disk.fill()
    time.sleep(8 * TICK_S)  # eight ticks, each of which tries the rewrite
    assert d.thread.is_alive() and d.daemon.exit_code == 0
    assert not state_file.exists()
    errors = _restore_errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    disk.free()
    assert eventually(lambda: daemon_running(d.daemon.settings) is not None, 15)
    assert any("works again" in r.getMessage() for r in caplog.records)
