"""The background loop over months: long outages, clock steps, state that must stay bounded."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from sync.engine import WorkerState
from sync.errors import TransientError
from sync.memory_remote import MemoryRemote, MemoryServer

from .conftest import Device

WAIT = 30.0


def _pushed_signal(server: MemoryServer) -> tuple[threading.Event, MemoryRemote]:
    seen = threading.Event()
    observer = MemoryRemote(server, user="u")
    observer.subscribe(seen.set)
    return seen, observer


def test_backoff_stays_capped_after_thousands_of_failures(
    make_device: Callable[..., Device],
) -> None:
    # 2 ** (failures - 1) as a float overflows past 1,024 failures in a row.
    a = make_device("a", rng=random.Random(3))
    for failures in (1_025, 5_000, 10**6):
        delay = a.engine.backoff_delay(failures)
        assert a.engine.backoff_cap_s / 2 <= delay <= a.engine.backoff_cap_s


def test_the_loop_survives_a_night_offline(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """1,100 failed cycles in a row (at the default 0.5 s base and 60 s cap, about 14 hours of a
    laptop without network): the loop thread died of an OverflowError computing the next backoff,
    and nothing synced again until the daemon was restarted. The waits are shrunk, the failures
    are real cycles of the real loop."""
    a = make_device("a", backoff_base_s=1e-6, backoff_cap_s=1e-5, poll_interval_s=3600)
    a.remote.fail_next(1_100, TransientError("network is unreachable"))
    seen, observer = _pushed_signal(server)
    try:
        a.store.save("offline/x", "v: 1\n")
        a.engine.start()
        assert seen.wait(WAIT), "nothing was pushed once the network came back"
        assert a.engine.worker_state is WorkerState.RUNNING
        assert sum(a.remote.calls.values()) > 1_100
    finally:
        observer.close()
        a.engine.stop()
        a.engine.join(WAIT)
