"""A child forked from an app that syncs (a worker pool with the fork start method) using the
parent's store object through its events bus or its sync engine.

The store's own calls refused it (tests/store/test_embedding_lifecycle.py), but the events bus and
the engine only asked ``store.closed``: in the child a subscriber was kept that nothing would ever
call, a pause or resume "worked" on a copy of the parent's engine (the parent went on syncing),
and sync_once() waited for ever for the cycle lock that the parent's sync thread held at the fork.
Now each refuses as the store does, naming the fix (open the home again in the child).

A real os.fork(); the parent's engine is a real one, its cycle held open by a status listener.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from localstore.errors import StoreClosedError
from localstore.events import Event
from sync.embed import start_sync
from sync.engine import SyncStatus, WorkerState
from sync.memory_remote import MemoryRemote, MemoryServer
from tests.conftest import eventually
from tests.store import test_embedding_lifecycle
from tests.store.test_embedding_lifecycle import _in_child

from .conftest import Device, server_snapshot


def _refusals(calls: dict[str, Callable[[], object]]) -> str:
    """In the child: each call's refusal (one line each), or what it did instead."""
    out = []
    for name, call in calls.items():
        try:
            call()
            out.append(f"{name}: accepted")
        except StoreClosedError as exc:
            out.append(f"{name}: {exc}")
    return "\n".join(out)


def _assert_refused(result: str, names: list[str]) -> None:
    lines = result.splitlines()
    assert [line.split(":")[0] for line in lines] == names, result
    for line in lines:
        assert f"opened by process {os.getpid()}" in line and "localstore.open()" in line, line


def test_the_events_bus_refuses_a_forked_child(make_device: Callable[..., Device]) -> None:
    store = make_device("a").store
    heard: list[Event] = []
    store.subscribe(heard.append)
    store.save("a/x", "v: 1\n")
    calls: dict[str, Callable[[], object]] = {
        "subscribe": lambda: store.events.subscribe(print),
        "observe": lambda: store.events.observe(print),
        # (Published in the child, the parent's subscribers, copied, would run there.)
        "publish": lambda: store.events.publish(heard[-1:]),
    }
    _assert_refused(_in_child(lambda: _refusals(calls)), list(calls))
    store.save("a/x", "v: 2\n")  # the parent's bus goes on
    assert [e.kind for e in heard] == ["created", "modified"]


def test_the_sync_engine_refuses_a_forked_child(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forked while the parent's sync thread is inside a cycle (its status listener runs there)."""
    monkeypatch.setattr(test_embedding_lifecycle, "FORK_CHILD_S", 15.0)  # (hung before: for ever)
    dev = make_device("a")
    engine = dev.engine
    dev.store.save("a/x", "v: 1\n")
    inside, release = threading.Event(), threading.Event()

    def listener(status: SyncStatus) -> None:
        if status.state == "pushing" and not inside.is_set():
            inside.set()
            release.wait(30)

    engine.subscribe_status(listener)
    parent_sync = threading.Thread(target=engine.sync_once)
    parent_sync.start()
    try:
        assert inside.wait(10)
        calls: dict[str, Callable[[], object]] = {
            "sync_once": engine.sync_once,
            "pause": engine.pause,
            "resume": engine.resume,
            "request_sync": engine.request_sync,
            "subscribe_status": lambda: engine.subscribe_status(print),
            "start": engine.start,
        }
        result = _in_child(lambda: _refusals(calls))
    finally:
        release.set()
        parent_sync.join(30)
    _assert_refused(result, list(calls))
    # The parent's engine was not paused or started by the child, and its pass went on.
    assert engine.status().state == "idle"
    assert engine.worker_state is WorkerState.NEW
    assert [path for path, _ in server_snapshot(server).values()] == ["a/x.blueprint.yaml"]


def test_an_in_process_sync_handle_refuses_a_forked_child(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """A pause from the child wrote the home's pause file: the parent's sync stopped."""
    store = make_device("a").store
    handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
    try:
        calls: dict[str, Callable[[], object]] = {
            "pause": handle.pause,
            "resume": handle.resume,
            "subscribe_status": lambda: handle.subscribe_status(print),
        }
        _assert_refused(_in_child(lambda: _refusals(calls)), list(calls))
        assert not handle.paused
    finally:
        handle.stop()


def test_stop_in_a_forked_child_leaves_the_parents_engine_running(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app's own engine (not start_sync's) stopped in a forked child (an atexit handler, a
    ``with`` block set up before the fork). Forked while a parent thread held the engine's
    condition (its loop does while it picks the next wake-up, a hint thread while it asks for a
    sync), the child's stop() waited for it for ever."""
    monkeypatch.setattr(test_embedding_lifecycle, "FORK_CHILD_S", 15.0)  # (hung before: for ever)
    dev = make_device("a", poll_interval_s=3600)
    engine = dev.engine
    engine.start()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine._cond:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold, name="holds-the-engine-condition")
    holder.start()
    try:
        assert held.wait(10)

        def stop_and_join() -> str:
            engine.stop()
            return f"joined: {engine.join(5)}"

        result = _in_child(stop_and_join)
    finally:
        release.set()
        holder.join(10)
    assert result == "joined: True"
    assert engine.worker_state is WorkerState.RUNNING
    dev.store.save("a/after", "v: 1\n")  # (the parent's loop still syncs a local edit)
    assert eventually(lambda: len(server_snapshot(server)) == 1, 10), engine.status()
