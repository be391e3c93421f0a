"""What an app is told when its in-process sync stops without being asked: another process took
the home's lock, or the engine's thread ended. The engine's own status stayed at its last state
(``idle``), so an app showing it said "synced" while nothing synced any more."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sync.embed as embed_module
from sync.embed import HomeLock, lock_holder, start_sync
from sync.memory_remote import MemoryRemote, MemoryServer

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .conftest import eventually


def test_status_says_sync_stopped_when_another_process_took_the_lock(
    stores: StoreOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_module, "LOCK_CHECK_S", 0.05)
    store = stores(home=tmp_path / "h")
    handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    lock_file = handle._lock.path
    assert eventually(lambda: lock_holder(lock_file.parent) == os.getpid(), 10)
    with handle._lock._mutex:  # another process takes a new file at the path
        lock_file.unlink()
        other = HomeLock(lock_file.parent)
        assert other.acquire()
    try:
        assert eventually(lambda: handle.lost_lock, 10)
        assert handle.engine.join(10)
        status = handle.status()
        assert status["state"] == "error" and status["running"] is False
        assert "took this home's lock" in status["detail"]
    finally:
        other.release()


def test_status_says_sync_stopped_when_the_engine_thread_ended(
    stores: StoreOpener, tmp_path: Path
) -> None:
    store = stores(home=tmp_path / "h")
    handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    assert handle.status()["running"] is True
    handle.engine.stop()  # (as a loop that ended on its own: nobody stopped the handle)
    assert handle.engine.join(10)
    status = handle.status()
    assert status["state"] == "error" and status["running"] is False
    assert "stopped" in status["detail"]


def test_an_apps_sync_stops_when_its_home_is_deleted_and_does_not_make_it_again(
    stores: StoreOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon stops when its home is deleted or moved away; an app syncing in-process
    "restored" its lock file instead, making ``state/`` (and the folders above it) again at the
    old path, and its engine synced on into an index no path named."""
    monkeypatch.setattr(embed_module, "LOCK_CHECK_S", 0.05)
    home = tmp_path / "h"
    store = stores(home=home)
    handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    assert eventually(lambda: lock_holder(handle._lock.path.parent) == os.getpid(), 10)
    moved = tmp_path / "moved"
    home.rename(moved)  # the user moves the home away while the app runs
    assert eventually(lambda: handle.home_gone, 10)
    assert handle.engine.join(10)
    assert not home.exists(), sorted(map(str, home.rglob("*")))  # nothing made at the old path
    status = handle.status()
    assert status["state"] == "error" and status["running"] is False
    assert "deleted or moved away" in status["detail"]


def test_status_after_the_store_closed_says_sync_stopped_with_what_was_known(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """A UI timer still polling ``status()`` while the app shuts down got StoreClosedError ("the
    index is closed") once the store had closed, though the docs say ``running`` is False once
    the sync stopped."""
    store = stores(home=tmp_path / "h")
    store.save("notes/a", "x: 1\n")
    handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    assert eventually(lambda: handle.status()["last_synced_at"] is not None, 20)
    handle.pause()
    store.save("notes/b", "x: 2\n")  # waits while paused: one pending
    before = handle.status()
    assert before["pending"] == 1 and before["running"] is True
    store.close()
    after = handle.status()
    assert after["running"] is False and after["realtime"] is None
    assert after["pending"] == 1 and after["last_synced_at"] == before["last_synced_at"]
    assert after["state"] == "paused" and "store is closed" in after["detail"]


def test_pause_resume_and_status_listeners_after_the_store_closed_raise_store_closed(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """A "Pause sync" click handled after the app closed its store recorded a pause for the
    home (``state/sync-paused.json``: the daemon and the app's next start were paused) and
    status() then said "paused"; resume() removed a pause another process had recorded; and
    subscribe_status() kept a listener nothing would call. Each now raises StoreClosedError,
    as every store call after close() does, and writes nothing."""
    from localstore.errors import StoreClosedError

    store = stores(home=tmp_path / "h")
    handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    store.close()
    pause_file = tmp_path / "h" / "state" / "sync-paused.json"
    for name, call in (
        ("pause", handle.pause),
        ("resume", handle.resume),
        ("subscribe_status", lambda: handle.subscribe_status(print)),
    ):
        with pytest.raises(StoreClosedError):
            call()
        assert not pause_file.exists(), name
    assert handle.status()["state"] != "paused" and not handle.paused
