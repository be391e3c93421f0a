"""Uptime is measured on the monotonic clock: a wall-clock step must not make it jump or go
negative (an NTP correction after a resume, a manual change). started_at stays wall time.

The step is injected for sync.daemon's, sync._daemon_ops' (where status and metrics are read)
and sync._timefmt's (the uptime clock's) view of the time module only: changing the real system
clock would disturb every other process on the machine.
"""

from __future__ import annotations

import sys
import time
import types

import pytest

import sync.daemon as daemon_mod
from sync import _daemon_ops, _timefmt


def test_uptime_ignores_a_wall_clock_step(inproc_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    d = inproc_daemon()
    with d.client() as c:
        before = c.status()["daemon"]
        real = time
        stepped = types.SimpleNamespace(
            **{k: getattr(real, k) for k in dir(real) if not k.startswith("__")}
        )
        stepped.time = lambda: real.time() - 3600  # the wall clock steps back one hour
        monkeypatch.setattr(daemon_mod, "time", stepped)
        monkeypatch.setattr(_daemon_ops, "time", stepped)
        after = c.status()["daemon"]
        gauge = c.metrics()["gauges"]["uptime_seconds"]
    assert after["started_at"] == before["started_at"]  # still the wall-clock start
    assert before["uptime_s"] <= after["uptime_s"] < before["uptime_s"] + 60
    assert after["uptime_s"] <= gauge < after["uptime_s"] + 60


@pytest.mark.skipif(sys.platform == "win32", reason="time.monotonic() counts sleep on Windows")
def test_uptime_counts_a_suspend(inproc_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """A laptop's night: the monotonic clock stands still while suspended (Linux, macOS), so
    uptime left the night out: 'up 2 h' in the morning for a daemon started yesterday, next to
    a started_at that says otherwise. The suspend is injected in sync.daemon's and
    sync._daemon_ops' view of the time module: the clocks that count it move on 10 h,
    time.monotonic() does not."""
    d = inproc_daemon()
    with d.client() as c:
        before = c.status()["daemon"]
        real = time
        slept = types.SimpleNamespace(
            **{k: getattr(real, k) for k in dir(real) if not k.startswith("__")}
        )
        night = 10 * 3600.0
        slept.time = lambda: real.time() + night
        slept.clock_gettime = lambda clock: (
            real.clock_gettime(clock)
            + (night if clock != real.CLOCK_MONOTONIC or sys.platform == "darwin" else 0.0)
        )
        monkeypatch.setattr(daemon_mod, "time", slept)
        monkeypatch.setattr(_daemon_ops, "time", slept)
        monkeypatch.setattr(_timefmt, "time", slept)  # where the uptime clock is read
        after = c.status()["daemon"]
        gauge = c.metrics()["gauges"]["uptime_seconds"]
    assert before["uptime_s"] + night <= after["uptime_s"] < before["uptime_s"] + night + 60
    assert after["uptime_s"] <= gauge < after["uptime_s"] + 60
