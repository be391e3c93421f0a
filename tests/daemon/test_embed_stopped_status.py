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
