"""Sync hears changes again after the server dropped its realtime socket for silence.

Hosted Realtime (Phoenix) closes a socket that sent nothing for its websocket timeout (60 s); the
sync's realtime client keeps it alive with a ping every ``health_interval_s``. When its event loop
blocks past the timeout (a stuck callback, a suspended thread), hosted drops the socket. The local
gateway never did, so the rebuild that must follow was never exercised. Here the gateway's timeout
is scaled down to 4 s (twice the health check's ping interval).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localstore.events import Event
from sync.localcloud.stack import LocalCloud

from .conftest import _require_environment, new_email
from .devices import open_device

IDLE_S = 4.0


@pytest.fixture(scope="module")
def idle_cloud() -> Iterator[LocalCloud]:
    """A stack whose gateway closes realtime sockets silent for IDLE_S."""
    _require_environment()
    with LocalCloud(realtime_idle_timeout_s=IDLE_S) as lc:
        yield lc


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_blocked_realtime_loop_is_dropped_and_sync_hears_changes_after(
    idle_cloud: LocalCloud, tmp_path: Path
) -> None:
    email = new_email()
    a = open_device(tmp_path, "a", idle_cloud.url, idle_cloud.anon_key, email)
    b = open_device(tmp_path, "b", idle_cloud.url, idle_cloud.anon_key, email)
    try:
        b.engine.start()
        state = b.remote.realtime_state
        assert state["subscribed"], state
        hints = b.remote._hints
        assert hints is not None and hints._loop is not None
        # The fault: B's realtime loop blocks for longer than the server's timeout.
        hints._loop.call_soon_threadsafe(time.sleep, 1.5 * IDLE_S)
        assert _wait_for(lambda: b.remote.realtime_state["subscribes"] > state["subscribes"], 20), (
            f"the dropped socket was never rebuilt: {b.remote.realtime_state}"
        )
        assert b.remote.realtime_state["rebuilds"] > state["rebuilds"]
        got = threading.Event()
        b.store.subscribe(lambda ev: got.set() if _remote(ev) else None)
        a.store.save("rt/idle.blueprint.yaml", "z: 3\n", name="idle")
        assert a.sync() is None
        assert got.wait(10), f"B never heard of A's save: {b.remote.realtime_state}"
        assert (b.store.root / "rt/idle.blueprint.yaml").read_text() == "z: 3\n"
    finally:
        b.close()
        a.close()


def _remote(ev: Event) -> bool:
    return ev.origin == "remote" and ev.path == "rt/idle.blueprint.yaml"
