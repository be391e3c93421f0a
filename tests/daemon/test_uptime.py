"""Uptime is measured on the monotonic clock: a wall-clock step must not make it jump or go
negative (an NTP correction after a resume, a manual change). started_at stays wall time.

The step is injected for sync.daemon's view of the time module only: changing the real system
clock would disturb every other process on the machine.
"""

from __future__ import annotations

import time
import types

import pytest

import sync.daemon as daemon_mod


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
        after = c.status()["daemon"]
        gauge = c.metrics()["gauges"]["uptime_seconds"]
    assert after["started_at"] == before["started_at"]  # still the wall-clock start
    assert before["uptime_s"] <= after["uptime_s"] < before["uptime_s"] + 60
    assert after["uptime_s"] <= gauge < after["uptime_s"] + 60
