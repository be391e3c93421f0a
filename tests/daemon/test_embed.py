"""Embedding: one syncing process per home (the flock), daemon detection without network, and an
app's in-process engine (start_sync) that refuses while a daemon syncs the home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import localstore
import sync.embed as embed_module
from sync.embed import (
    HomeLock,
    daemon_running,
    lock_holder,
    start_sync,
    write_state,
)
from sync.errors import SyncLockedError
from sync.memory_remote import MemoryRemote, MemoryServer

from .conftest import eventually, home_settings


def test_home_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    a, b = HomeLock(tmp_path), HomeLock(tmp_path)
    assert lock_holder(tmp_path) is None
    assert a.acquire() and a.acquire()  # re-entrant for its holder
    assert not b.acquire()  # another open file description, same process: refused
    assert lock_holder(tmp_path) == os.getpid()
    a.release()
    assert lock_holder(tmp_path) is None
    assert b.acquire()
    b.release()
    b.release()  # idempotent


def test_the_kernel_releases_the_lock_of_a_killed_holder(tmp_path: Path) -> None:
    code = (
        "import sys, time; from sync.embed import HomeLock; "
        f"HomeLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert lock_holder(tmp_path) == proc.pid
        assert not HomeLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    lock = HomeLock(tmp_path)
    assert lock.acquire()
    lock.release()


def test_daemon_running_trusts_the_state_file_only_with_a_live_holder(tmp_path: Path) -> None:
    settings = home_settings(tmp_path / "h")
    state_dir = settings.paths.state
    assert daemon_running(settings) is None
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    write_state(state_dir, {"pid": int(dead.stdout), "port": 1, "token": "x"})
    assert daemon_running(settings) is None  # the pid is gone
    write_state(state_dir, {"pid": os.getpid(), "port": 1, "token": "x"})
    assert daemon_running(settings) is None  # alive, but nobody holds the flock
    lock = HomeLock(state_dir)
    assert lock.acquire()
    try:
        assert daemon_running(settings) == {"pid": os.getpid(), "port": 1, "token": "x"}
    finally:
        lock.release()
    (state_dir / "daemon.json").write_text("{not json")
    assert daemon_running(settings) is None
    (state_dir / "daemon.json").write_text(json.dumps(["a", "list"]))
    assert daemon_running(settings) is None


def test_start_sync_runs_the_engine_in_process_and_holds_the_lock(tmp_path: Path) -> None:
    server = MemoryServer()
    store = localstore.open(home=tmp_path / "app")
    try:
        handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
        assert lock_holder(store.settings.paths.state) == os.getpid()
        with pytest.raises(SyncLockedError):
            start_sync(store, remote=MemoryRemote(server))
        store.save("notes/a", "x: 1\n")
        assert eventually(lambda: handle.engine.status().pending == 0, 20)
        assert eventually(lambda: len(server.rows) == 1, 20)
    finally:
        store.close()  # stops the engine and releases the lock
    assert lock_holder(store.settings.paths.state) is None


def test_an_app_leaves_sync_to_a_running_daemon(inproc_daemon, tmp_path: Path) -> None:
    home = tmp_path / "shared"
    d = inproc_daemon(home)
    with localstore.open(home=home) as store:
        state = daemon_running(store.settings)
        assert state is not None and state["port"] == d.daemon.server.port
        with pytest.raises(
            SyncLockedError, match=rf"the daemon \(process {os.getpid()}\) already syncs"
        ) as info:
            start_sync(store, remote=MemoryRemote())
        assert "ControlClient" in (info.value.hint or "")
        # The app follows the daemon instead; its own saves reach the daemon's subscribers.
        with d.client() as client:
            client.subscribe(["saved", "moved", "deleted"])
            store.save("from-app/one", "k: v\n")
            event = client.wait_for(
                lambda e: e["data"]["path"] == "from-app/one.blueprint.yaml", 15
            )
            # Found through the index (no file differs from it): the app's own origin is kept.
            assert event["data"]["origin"] == "local" and event["data"]["process"] == "other"
            assert event["event"] == "saved" and event["data"]["kind"] == "created"
            store.move("from-app/one", "from-app/two")
            moved = client.wait_for(lambda e: e["event"] == "moved", 15)
            assert moved["data"]["old_path"] == "from-app/one.blueprint.yaml"
            store.delete("from-app/two")
            client.wait_for(lambda e: e["event"] == "deleted", 15)
        assert d.daemon.metrics.foreign_changes == 3


def test_a_change_by_another_process_is_counted_before_subscribers_get_it(
    inproc_daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon counted foreign_changes after publishing the events; publishing only queues
    them for the server's own thread, so a subscriber could get the event and read the metrics
    before the daemon thread counted it (the test above failed that way, seeing 2 of 3)."""
    home = tmp_path / "shared"
    d = inproc_daemon(home)
    server = d.daemon.server
    assert server is not None
    real_publish = server.publish

    def publish_then_lose_the_cpu(event: str, data: dict[str, Any]) -> None:
        real_publish(event, data)
        if data.get("process") == "other":
            time.sleep(1.0)  # the daemon thread is descheduled right after handing the event on

    monkeypatch.setattr(server, "publish", publish_then_lose_the_cpu)
    with localstore.open(home=home) as store, d.client() as client:
        client.subscribe(["saved"])
        store.save("from-app/one", "k: v\n")
        client.wait_for(lambda e: e["data"].get("process") == "other", 15)
        assert d.daemon.metrics.foreign_changes == 1


def test_store_start_sync_holds_the_home_lock_and_stops_with_the_store(tmp_path) -> None:
    import localstore
    from localstore.errors import LockHeldError
    from sync.errors import SyncLockedError
    from sync.memory_remote import MemoryRemote, MemoryServer

    server = MemoryServer()
    app = localstore.open(home=tmp_path / "h")
    other = localstore.open(home=tmp_path / "h")
    try:
        assert app.daemon() is None and localstore.daemon_running(app.settings) is None
        embedded = app.start_sync(remote=MemoryRemote(server))
        app.save("a/one", "x: 1\n")
        embedded.engine.sync_once()
        assert server.rows and embedded.engine.status().pending == 0
        try:
            other.start_sync(remote=MemoryRemote(server))
        except (LockHeldError, SyncLockedError):
            pass
        else:
            raise AssertionError("a second in-process engine on the same home was allowed")
    finally:
        other.close()
        app.close()  # stops the embedded engine and releases the lock
    again = localstore.open(home=tmp_path / "h")
    try:
        again.start_sync(remote=MemoryRemote(server))
    finally:
        again.close()


CLI = [sys.executable, "-c", "from localstore.cli import main; main()"]


def test_daemon_stop_leaves_an_app_that_syncs_in_process_alone(tmp_path: Path) -> None:
    """`localstore daemon --stop` used the home lock's holder when no daemon.json was there, and
    the lock is also an app's that syncs in-process: it sent that app SIGTERM and said
    'daemon stopped'."""
    home = tmp_path / "h"
    code = (
        "import sys, time; import localstore; from sync.embed import start_sync; "
        "from sync.memory_remote import MemoryRemote; "
        f"s = localstore.open(home={str(home)!r}); start_sync(s, remote=MemoryRemote()); "
        "print('syncing', flush=True); time.sleep(600)"
    )
    app = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None and app.stdout.readline().strip() == "syncing"
        stop = subprocess.run(
            [*CLI, "--home", str(home), "daemon", "--stop"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stop.returncode != 0
        assert f"process {app.pid} syncs it" in stop.stderr and "left alone" in stop.stderr
        assert app.poll() is None  # the app runs on
    finally:
        app.kill()
        app.wait(10)
        if app.stdout is not None:
            app.stdout.close()


def test_an_app_whose_lock_file_is_taken_stops_syncing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon re-checks its lock file every tick; an app syncing in-process did not, so after
    `state/` was deleted a daemon could lock a new file and sync the same home alongside it."""
    monkeypatch.setattr(embed_module, "LOCK_CHECK_S", 0.05)
    app = localstore.open(home=tmp_path / "h")
    try:
        embedded = app.start_sync(remote=MemoryRemote(MemoryServer()))
        lock_file = embedded._lock.path
        lock_file.unlink()  # nobody else wants it: the app locks a new file and syncs on
        # (The file exists a moment before its pid is written into it.)
        assert eventually(lambda: lock_holder(lock_file.parent) == os.getpid(), 10)
        assert not embedded.lost_lock
        with embedded._lock._mutex:  # hold the app's check back while another process takes it
            lock_file.unlink()
            other = HomeLock(lock_file.parent)
            assert other.acquire()
        try:
            assert eventually(lambda: embedded.lost_lock, 10)
            assert embedded.engine.join(10)  # its engine stopped
        finally:
            other.release()
    finally:
        app.close()
