"""SIGTERM while a control client's `sync` request runs a cycle on the control pool."""

from __future__ import annotations

import json
import threading
from typing import Any

from websockets.sync.client import connect

from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import PullPage

from .conftest import eventually


class _SlowPullRemote(MemoryRemote):
    """Fault injection: once ``block`` is set, pull waits for ``release`` (a slow network)."""

    def __init__(self, server: MemoryServer) -> None:
        super().__init__(server)
        self.block = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def pull(self, since: int, **kwargs: Any) -> PullPage:
        if self.block.is_set():
            self.entered.set()
            self.release.wait(30)
        return super().pull(since, **kwargs)


def test_stop_waits_for_a_requested_cycle_before_closing_the_store(inproc_daemon) -> None:
    """A `sync` request runs its cycle on a control-pool thread, which the shut-down did not
    wait for: only the engine's own loop thread was joined, so the remote and the store were
    closed under the request's cycle, which then failed in the middle of its work."""
    remote = _SlowPullRemote(MemoryServer())
    d = inproc_daemon(remote_factory=lambda _settings: remote, poll_interval_s=3600)
    engine = d.daemon.engine
    assert engine is not None
    assert eventually(lambda: d.daemon.metrics.sync_cycles >= 1, 30)  # the start-up cycle
    closed_during_cycle: list[bool] = []
    real_close = remote.close

    def close() -> None:
        closed_during_cycle.append(engine._cycle_lock.locked())
        remote.release.set()  # (on a daemon that closes it under the cycle: let it go on)
        real_close()

    remote.close = close  # type: ignore[method-assign]
    remote.block.set()
    port, token = d.state["port"], d.state["token"]
    with connect(
        f"ws://127.0.0.1:{port}", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        ws.send(json.dumps({"id": 1, "op": "sync", "args": {"wait": True}}))
        assert remote.entered.wait(30)
        d.daemon.stop()
        # The slow pull ends well within the 4 s stop budget (if the daemon has not closed the
        # remote under it first).
        timer = threading.Timer(1.5, remote.release.set)
        timer.start()
        try:
            d.thread.join(30)
        finally:
            timer.cancel()
    assert not d.thread.is_alive() and not d.errors
    assert closed_during_cycle == [False], "the remote was closed under a running cycle"
    assert d.daemon.stopped_cleanly
