"""A sync engine that cannot start leaves nothing behind, and is not tried again every tick.

A daemon that goes online (a `localstore login` while it runs offline, a restart of a dead sync
loop, another user's login) opens a remote, then builds and starts an engine on it. When the
engine's start failed (its realtime could not start a thread: the process's thread limit; an
index error building it), the remote was never closed (its HTTP client, refresh timer and index
connection stayed open), the half-started engine stayed subscribed to the store, and since the
daemon had not gone offline its next try came at the next tick: a remote leaked twice a second
for as long as the fault lasted.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sync.control import ControlRequestError
from sync.errors import NotLoggedInError
from sync.memory_remote import MemoryRemote, MemoryServer

from .conftest import eventually

WAIT = 20.0


class _NoThreads(MemoryRemote):
    """Fault injection: realtime cannot start its threads (the process's thread limit)."""

    def subscribe(self, callback: Any) -> Any:
        raise RuntimeError("can't start new thread")


def test_a_failed_engine_start_closes_its_remote_and_waits_for_the_next_try(
    inproc_daemon: Any,
) -> None:
    server = MemoryServer()
    opened: list[MemoryRemote] = []
    calls = {"n": 0}

    def factory(_settings: Any) -> MemoryRemote:
        calls["n"] += 1
        if calls["n"] == 1:
            raise NotLoggedInError("not logged in yet")  # the daemon starts offline
        remote = _NoThreads(server)
        opened.append(remote)
        return remote

    d = inproc_daemon(remote_factory=factory)
    assert d.daemon.engine is None
    store = d.daemon.store
    assert store is not None
    subscribers = len(store.events._subs)

    # Count the daemon's ticks (event-driven: no sleeping for a time).
    ticks = {"n": 0}
    ticked = threading.Condition()
    plain_tick = d.daemon._tick

    def counting_tick() -> None:
        plain_tick()
        with ticked:
            ticks["n"] += 1
            ticked.notify_all()

    d.daemon._tick = counting_tick

    def wait_ticks(n: int) -> None:
        with ticked:
            target = ticks["n"] + n
            assert ticked.wait_for(lambda: ticks["n"] >= target, WAIT)

    d.daemon._next_relogin = 0.0  # a login was just noticed: try now
    assert eventually(lambda: len(opened) >= 1, WAIT)
    wait_ticks(4)

    # Tried once, not at every tick since.
    assert len(opened) == 1, f"{len(opened)} remotes opened in 4 ticks"
    # The remote of the failed start is closed, and no half-started engine listens to the store.
    assert opened[0]._closed
    assert len(store.events._subs) == subscribers
    assert d.daemon.engine is None and d.daemon.remote is None
    # The status says why sync is off (what the person or the log has to go on).
    with d.client() as c:
        sync = c.status()["sync"]
    assert sync["state"] == "offline"
    assert "can't start new thread" in sync["detail"]
    # A sync request is refused with the reason, and a hint that fits it: it said "log in with
    # `localstore login`" whatever the reason, and logging in again changed nothing.
    with d.client() as c, pytest.raises(ControlRequestError) as refused:
        c.sync(wait=False)
    assert refused.value.code == "offline"
    assert "can't start new thread" in refused.value.message
    assert "login" not in refused.value.hint and "daemon's log" in refused.value.hint
    assert len(opened) == 2  # (the request tried again)
    assert d.thread.is_alive() and not d.errors


def test_a_daemon_whose_engine_cannot_start_at_launch_runs_offline(inproc_daemon: Any) -> None:
    """The same fault at launch: the daemon serves (watcher, control API) offline, as for any
    other reason sync cannot run, instead of failing to start."""
    server = MemoryServer()
    opened: list[MemoryRemote] = []

    def factory(_settings: Any) -> MemoryRemote:
        remote = _NoThreads(server)
        opened.append(remote)
        return remote

    d = inproc_daemon(remote_factory=factory)
    assert d.daemon.engine is None
    assert opened and all(r._closed for r in opened)
    with d.client() as c:
        assert c.status()["sync"]["state"] == "offline"


def test_an_engine_whose_start_fails_lets_go_of_the_store_and_the_lock(tmp_path: Any) -> None:
    """The engine itself: a start that raised left it RUNNING with no thread, subscribed to the
    store and holding its lock (an app that tried again could not: "another process is
    syncing this home")."""
    from localstore.store import BlueprintStore
    from sync.engine import SyncEngine, WorkerState

    from .conftest import home_settings

    lock = threading.Lock()
    store = BlueprintStore(home_settings(tmp_path / "home"))
    try:
        subscribers = len(store.events._subs)
        engine = SyncEngine(store, _NoThreads(MemoryServer()), lock=lock)
        try:
            engine.start()
        except RuntimeError as exc:
            assert "can't start new thread" in str(exc)
        else:
            raise AssertionError("the injected fault did not reach start()")
        assert engine.worker_state is WorkerState.STOPPED
        assert len(store.events._subs) == subscribers
        assert lock.acquire(blocking=False), "the failed start kept the sync lock"
        lock.release()
        assert engine.join(1)
    finally:
        store.close()
