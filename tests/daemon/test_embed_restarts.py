"""An app that starts and stops its in-process sync many times keeps nothing of the old ones.

Each start added the handle's stop to the store's close hooks for good (``store.start_sync``
added it twice), so every old handle, its engine and its remote stayed alive until the store
closed: an app that stops sync when it goes offline and starts it again grew all day.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from localstore.watcher import Watcher, WatcherState
from sync.embed import start_sync
from sync.memory_remote import MemoryRemote, MemoryServer

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")


def test_stopped_syncs_leave_no_close_hooks_behind(stores: StoreOpener, tmp_path: Path) -> None:
    server = MemoryServer()
    store = stores(home=tmp_path / "h")
    hooks_before = len(store._on_close)
    old: list[weakref.ref[object]] = []
    for i in range(12):
        remote = MemoryRemote(server)
        if i % 2:  # both ways an app can start it
            handle = start_sync(store, remote=remote, poll_interval_s=3600)
        else:
            handle = store.start_sync(remote=remote, poll_interval_s=3600)
        old.append(weakref.ref(handle))
        handle.stop()
        del handle
    gc.collect()
    assert len(store._on_close) == hooks_before
    assert not [r for r in old if r() is not None]


def test_a_running_sync_is_still_stopped_by_the_stores_close(
    stores: StoreOpener, tmp_path: Path
) -> None:
    server = MemoryServer()
    store = stores(home=tmp_path / "h")
    first = store.start_sync(remote=MemoryRemote(server), poll_interval_s=3600)
    first.stop()
    second = store.start_sync(remote=MemoryRemote(server), poll_interval_s=3600)
    store.close()
    assert second.engine.join(0)


def test_stopped_watchers_are_not_kept_by_the_store(stores: StoreOpener, tmp_path: Path) -> None:
    # The same for a watcher an app (or the daemon's keeper, after each death) starts again.
    store = stores(home=tmp_path / "h")
    hooks_before = len(store._on_close)
    gone: list[weakref.ref[object]] = []
    for _ in range(8):
        watcher = Watcher(store)
        watcher.start()
        watcher.stop()
        watcher.join(10)
        gone.append(weakref.ref(watcher))
        del watcher
    gc.collect()
    assert len(store._on_close) == hooks_before
    assert not [r for r in gone if r() is not None]
    running = Watcher(store)
    running.start()
    store.close()
    assert running.state is WatcherState.STOPPED
