"""The daemon keeps its parts working: a watcher that stopped is replaced, a lost lock is noticed.

These run on an in-process daemon (offline, or with a memory remote): no keychain needed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

import pytest
from watchdog.observers import inotify_c

from localstore import _watch_health, _watch_ingest
from localstore.errors import LockHeldError
from localstore.watcher import WatcherState
from sync import _follow
from sync.cli_daemon import check_daemon
from sync.control import ControlRequestError
from sync.daemon import Daemon
from sync.embed import HomeLock, daemon_running, lock_holder
from sync.memory_remote import MemoryRemote

from .conftest import eventually, kill_watcher, write_external


def test_a_dead_watcher_is_reported_and_restarted(inproc_daemon, monkeypatch) -> None:
    d = inproc_daemon()
    old = d.daemon.watcher
    assert old is not None
    kill_watcher(old, monkeypatch)
    root = d.daemon.settings.paths.blueprints
    with d.client() as c:
        c.subscribe()
        assert eventually(lambda: d.daemon.watcher is not old, 10)
        status = c.status()
        assert status["watcher"]["state"] == "running"
        assert status["watcher"]["problem"] is None
        write_external(root, "after.blueprint.yaml", "name: after\n")
        ev = c.wait_for(lambda e: e.get("event") == "saved", 10)
        assert ev["data"]["path"] == "after.blueprint.yaml"
        assert c.metrics()["counters"]["watcher_restarts"] == 1
    assert old.state is WatcherState.STOPPED


def test_a_missing_folder_is_reported_and_sync_wait_is_refused(
    inproc_daemon, tmp_path: Path
) -> None:
    d = inproc_daemon(remote_factory=lambda _settings: MemoryRemote())
    root = d.daemon.settings.paths.blueprints
    with d.client() as c:
        assert "report" in c.sync(wait=True)
        shutil.rmtree(root)
        assert eventually(lambda: c.status()["watcher"]["state"] == "degraded", 10)
        assert "missing" in c.status()["watcher"]["problem"]
        with pytest.raises(ControlRequestError) as info:
            c.sync(wait=True)
        assert info.value.code == "watcher_behind"
        finding = check_daemon(d.daemon.settings)
        assert finding.status == "problem" and "degraded" in finding.detail
        root.mkdir()
        write_external(root, "back.blueprint.yaml", "name: back\n")
        assert eventually(lambda: c.status()["watcher"]["state"] == "running", 10)
        assert "report" in c.sync(wait=True)
        assert check_daemon(d.daemon.settings).status == "ok"


def test_deleting_the_state_folder_does_not_let_a_second_daemon_in(inproc_daemon) -> None:
    d = inproc_daemon()
    settings = d.daemon.settings
    shutil.rmtree(settings.paths.state)
    # The next tick locks a new lock file and writes daemon.json again.
    assert eventually(lambda: daemon_running(settings) is not None, 10)
    running = daemon_running(settings)
    assert running is not None and running["pid"] == os.getpid()
    assert lock_holder(settings.paths.state) == os.getpid()
    second = Daemon(settings, install_signals=False)
    with pytest.raises(LockHeldError):
        second.run()
    with d.client() as c:
        assert c.status()["daemon"]["pid"] == os.getpid()


def test_a_daemon_that_lost_its_lock_stops_with_an_error(inproc_daemon) -> None:
    d = inproc_daemon()
    state = d.daemon.settings.paths.state
    # Another process's lock on a new file put at the path in one step (as after `rm -r state`
    # and a second daemon's start, without the race of doing those two things separately).
    other = HomeLock(state / "other")
    assert other.acquire()
    try:
        os.replace(other.path, state / "daemon.lock")
        d.thread.join(10)
        assert not d.thread.is_alive()
        assert d.daemon.exit_code == 1
        assert d.errors == []
    finally:
        other.release()


def test_an_index_that_cannot_be_written_is_reported_and_heals(inproc_daemon, monkeypatch) -> None:
    """A full disk under the index: status names it (the watcher used to say `running` while it
    retried every 0.1 s), a waiting sync is refused with the reason, and once there is room the
    edit is indexed and synced without anyone acting."""
    # The rescan that retries a given-up path: 2 s instead of 30.
    monkeypatch.setattr(_watch_ingest, "GIVE_UP_RESCAN_S", (2.0, 2.0))
    d = inproc_daemon(remote_factory=lambda _settings: MemoryRemote())
    store = d.daemon.store
    assert store is not None
    root = d.daemon.settings.paths.blueprints

    with store.index.read() as cur:
        normal = int(cur.execute("PRAGMA max_page_count").fetchall()[0][0])

    def cap_index(full: bool) -> None:
        # SQLITE_FULL for real: the index may not grow past its current size.
        with store.index.read() as cur:
            pages = int(cur.execute("PRAGMA page_count").fetchall()[0][0])
            cur.execute(f"PRAGMA max_page_count={pages if full else normal}").fetchall()

    big = "name: big\nsteps:\n" + "".join(f"  - step {i} lorem ipsum\n" for i in range(5000))
    with d.client() as c:
        assert "report" in c.sync(wait=True)
        cap_index(True)
        try:
            write_external(root, "big.blueprint.yaml", big)
            assert eventually(lambda: c.status()["watcher"]["state"] == "degraded", 10)
            problem = c.status()["watcher"]["problem"]
            assert "cannot index big.blueprint.yaml" in problem and "disk is full" in problem
            with pytest.raises(ControlRequestError) as info:
                c.sync(wait=True)
            assert info.value.code == "watcher_behind" and "disk is full" in str(info.value)
            finding = check_daemon(d.daemon.settings)
            assert finding.status == "problem" and "disk is full" in finding.detail
        finally:
            cap_index(False)
        assert eventually(lambda: c.status()["watcher"]["state"] == "running", 15)
        assert c.status()["watcher"]["problem"] is None
        assert store.exists("big")
        report = c.sync(wait=True)["report"]
        assert report["pushed"] == 1, report


def test_a_watcher_that_cannot_be_restarted_is_tried_again_and_reported_failed(
    inproc_daemon, monkeypatch
) -> None:
    """The daemon stopped the dead watcher before its first try: when that try failed, the next
    tick saw a *stopped* watcher, never tried again (the docs promised every 5 s), and status
    said `stopped` with doctor finding nothing wrong. Edits went unseen until a restart."""
    # A short first retry delay (the real one is 5 s).
    monkeypatch.setattr(_follow, "WATCHER_RESTART_S", 0.4)
    d = inproc_daemon()
    old = d.daemon.watcher
    assert old is not None
    root = d.daemon.settings.paths.blueprints
    shutil.rmtree(root)  # the first tries fail: nothing to watch
    kill_watcher(old, monkeypatch)
    with d.client() as c:
        c.subscribe()
        # Tried, failed, and still reported as the failure it is (not "stopped").
        assert eventually(
            lambda: "cannot restart it" in (c.status()["watcher"]["problem"] or ""), 10
        )
        assert c.status()["watcher"]["state"] == "failed"
        finding = check_daemon(d.daemon.settings)
        assert finding.status == "problem" and "failed" in finding.detail
        root.mkdir()
        assert eventually(lambda: d.daemon.watcher is not old, 15)
        assert c.status()["watcher"]["state"] == "running"
        write_external(root, "back.blueprint.yaml", "name: back\n")
        ev = c.wait_for(lambda e: e.get("event") == "saved", 10)
        assert ev["data"]["path"] == "back.blueprint.yaml"
        assert c.metrics()["counters"]["watcher_restarts"] == 1


def test_a_folder_the_watch_limit_refuses_still_syncs(inproc_daemon, monkeypatch) -> None:
    """An IDE holding every inotify watch made Watcher.start() raise, and the daemon refused to
    start: no sync at all. It starts with a rescan-only watcher now, says why with the sysctl,
    and `sync --wait` covers edits no event reports."""
    monkeypatch.setattr(_watch_health, "LIMITED_RESCAN_S", 0.5)
    monkeypatch.setattr(_watch_health, "LIMIT_RETRY_S", (0.2, 0.5))
    refusing = [True]
    real = inotify_c.inotify_add_watch

    def add_watch(fd: int, path: bytes, mask: int) -> int:
        if refusing[0]:
            ctypes.set_errno(errno.ENOSPC)
            return -1
        return real(fd, path, mask)

    monkeypatch.setattr(inotify_c, "inotify_add_watch", add_watch)
    d = inproc_daemon(remote_factory=lambda _settings: MemoryRemote())
    root = d.daemon.settings.paths.blueprints
    with d.client() as c:
        watcher = c.status()["watcher"]
        assert watcher["state"] == "degraded"
        assert "sudo sysctl fs.inotify.max_user_watches" in watcher["problem"]
        finding = check_daemon(d.daemon.settings)
        assert finding.status == "problem" and "max_user_watches" in finding.detail
        write_external(root, "edited.blueprint.yaml", "name: edited\n")
        report = c.sync(wait=True)["report"]
        assert report["pushed"] == 1, report
        refusing[0] = False  # the IDE closed
        assert eventually(lambda: c.status()["watcher"]["state"] == "running", 10)
        assert check_daemon(d.daemon.settings).status == "ok"
