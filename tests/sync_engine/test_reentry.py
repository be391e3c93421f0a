"""Callbacks that run inside a sync cycle (status listeners, store-event subscribers on the syncing
thread) and call back into the engine: refused with EngineStateError, never a hang on the
engine's own (non-reentrant) cycle lock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localstore.events import Event
from sync.engine import SyncStatus
from sync.errors import EngineStateError
from sync.memory_remote import MemoryServer

from .conftest import Device, close_device, open_device

WAIT = 20.0


def _in_thread(fn: Callable[[], Any]) -> threading.Thread:
    # A daemon thread: before the fix the call never returned, and the test must still end.
    t = threading.Thread(target=fn, name="reentry-caller", daemon=True)
    t.start()
    t.join(WAIT)
    return t


def test_a_status_listener_calling_the_engine_gets_an_error_not_a_hang(
    make_device: Callable[..., Device],
) -> None:
    a = make_device("a")
    a.store.save("re/one", "v: 1\n")
    outcome: dict[str, object] = {}

    def on_status(status: SyncStatus) -> None:
        if status.state != "idle" or "verify" in outcome:
            return
        outcome["verify"] = "called"
        try:
            a.engine.verify()  # "after each sync, verify"
        except EngineStateError as exc:
            outcome["verify"] = exc
        try:
            a.engine.sync_once()
        except EngineStateError as exc:
            outcome["sync_once"] = exc

    a.engine.subscribe_status(on_status)
    t = _in_thread(lambda: outcome.setdefault("report", a.engine.sync_once()))
    assert not t.is_alive(), "sync_once hung: the listener waited for its own cycle"
    assert isinstance(outcome["verify"], EngineStateError)
    assert isinstance(outcome["sync_once"], EngineStateError)
    assert "request_sync" in outcome["verify"].hint
    # The cycle itself completed, and the engine works normally afterwards.
    assert "report" in outcome
    assert a.engine.verify().clean


def test_a_store_event_subscriber_on_the_sync_thread_gets_an_error_not_a_hang(
    tmp_path: Path, server: MemoryServer
) -> None:
    # Devices opened here, not by make_device: a hung sync thread would hold the index lock,
    # and the fixture's teardown would then wait for it forever instead of failing.
    a, b = open_device(tmp_path, "a", server), open_device(tmp_path, "b", server)
    a.store.save("re/two", "v: 1\n")
    a.sync()
    refused: list[Exception] = []

    def on_event(event: Event) -> None:
        if event.origin == "remote":
            try:
                b.engine.sync_once()
            except EngineStateError as exc:
                refused.append(exc)

    b.store.subscribe(on_event)
    t = _in_thread(b.sync)
    assert not t.is_alive(), "sync_once hung: the subscriber waited for its own cycle"
    try:
        assert len(refused) == 1
        assert b.text("re/two") == "v: 1\n"
    finally:
        close_device(b)
        close_device(a)
