"""A sync engine's calls that act, once its store is closed, raise StoreClosedError.

``engine.pause()``, ``resume()``, ``request_sync()`` and ``subscribe_status()`` returned normally
after ``store.close()`` (the app's own engine, or ``EmbeddedSync.engine``): a pause or a listener
taken for a sync that can never run again, where every store call and the EmbeddedSync's own
pause/resume/subscribe_status already raise. The realtime hint the engine takes from its remote
is not an app's call: one arriving while the store closes must not raise into the remote.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.errors import StoreClosedError
from sync.engine import SyncEngine, SyncStatus
from sync.memory_remote import MemoryRemote, MemoryServer
from tests.daemon.conftest import eventually

from .conftest import Device


def _acting_calls(engine: SyncEngine, heard: list[SyncStatus]) -> dict[str, Callable[[], Any]]:
    return {
        "pause": engine.pause,
        "resume": engine.resume,
        "request_sync": engine.request_sync,
        "subscribe_status": lambda: engine.subscribe_status(heard.append),
    }


def _settled(engine: SyncEngine) -> bool:
    return engine.status().last_synced_at is not None and not engine.cycle_running


def test_an_engines_calls_after_its_store_closed_raise_and_change_nothing(
    make_device: Callable[..., Device],
) -> None:
    dev = make_device("a")
    heard: list[SyncStatus] = []
    dev.engine.subscribe_status(heard.append)  # (taken while open: must hear nothing after)
    dev.store.close()
    for name, call in _acting_calls(dev.engine, []).items():
        with pytest.raises(StoreClosedError, match="store is closed") as info:
            call()
        assert "open the store again" in info.value.hint, name
    assert heard == [] and not dev.engine._paused and dev.engine._wake_at is None
    assert len(dev.engine._listeners) == 1  # (the refused subscription kept nothing)


def test_an_embedded_syncs_engine_refuses_the_same_calls_after_close(tmp_path: Path) -> None:
    store = localstore.open(home=tmp_path / "h")
    handle = store.start_sync(remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    engine = handle.engine
    store.close()
    for call in _acting_calls(engine, []).values():
        with pytest.raises(StoreClosedError):
            call()


def test_a_realtime_hint_while_the_store_closes_does_not_raise_into_the_remote(
    make_device: Callable[..., Device],
) -> None:
    """The engine subscribes its remote's hints; a hint after the store closed (before the loop
    noticed) woke the loop through request_sync(), which must not fail the pushing handle."""
    a, b = make_device("a", poll_interval_s=3600), make_device("b")
    a.engine.start()
    # Its first cycle done (closed under it, the loop ended there): it sleeps for an hour.
    assert eventually(lambda: _settled(a.engine), 20)
    a.store.close()  # (not hooked to the engine: its loop sleeps until something wakes it)
    b.store.save("x", "v: 1\n")
    b.sync()  # the server calls a's hint on this thread
    assert a.engine.join(10)  # woken, its cycle found the store closed: the loop ended
