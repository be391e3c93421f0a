"""A sync loop whose thread ended on its own is replaced: a daemon runs for months, and a loop that
died (the backoff overflow after ~14 hours offline was one way) meant nothing synced again until
the daemon was restarted, while status still said the last state it had."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import sync.daemon as daemon_module
from sync.engine import WorkerState
from sync.memory_remote import MemoryRemote, MemoryServer

WAIT = 20.0


class LoopKilled(BaseException):
    """Ends the sync loop's thread, as an error its per-cycle boundary does not catch."""


def _kill_loop(engine: Any) -> None:
    """Fault injection: the loop's next cycle raises LoopKilled; wait for its thread to end."""

    def die() -> None:
        raise LoopKilled("injected")

    engine._attempt = die
    engine.request_sync()
    assert engine.join(WAIT)
    assert engine.worker_state is WorkerState.STOPPED


# The injected error ends the loop's thread unhandled, as a real bug would: that is the point.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_sync_loop_is_restarted(inproc_daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_module, "SYNC_RESTART_S", 0.05)
    server = MemoryServer()
    d = inproc_daemon(remote_factory=lambda _s: MemoryRemote(server), poll_interval_s=3600)
    first = d.daemon.engine
    assert first is not None
    _kill_loop(first)
    assert d.daemon.store is not None
    pushed = threading.Event()
    observer = MemoryRemote(server)
    observer.subscribe(pushed.set)
    try:
        d.daemon.store.save("after/x", "v: 1\n")
        assert pushed.wait(WAIT), "nothing synced after the sync loop died"
        assert d.daemon.engine is not first
        assert first.remote._closed  # the dead loop's remote is closed, not left open
        with d.client() as c:
            assert c.metrics()["counters"]["sync_restarts"] == 1
            assert c.status()["sync"]["state"] != "stopped"
        # Dead again soon after its restart: replaced again, after a wait (a loop that dies at
        # once must not be restarted every tick for months).
        second = d.daemon.engine
        _kill_loop(second)
        pushed.clear()
        d.daemon.store.save("after/y", "v: 2\n")
        assert pushed.wait(WAIT), "nothing synced after the sync loop died again"
        assert d.daemon.engine is not second
        assert d.daemon._sync_restart_delay == 0.05
        with d.client() as c:
            assert c.metrics()["counters"]["sync_restarts"] == 2
    finally:
        observer.close()
