"""Fault injection: a laptop that sleeps, as the clock spans are measured on sees it
(``sync._timefmt.span_clock``: how long an outage or the daemon's uptime lasted).

A test cannot suspend the machine. Only ``sync._timefmt``'s view of the time module changes, so
time.monotonic(), which every timer and wait runs on and which stands still in suspend on Linux
and macOS, goes on as it does for real.
"""

from __future__ import annotations

import sys
import time

NIGHT_S = 10 * 3600.0


class SleepsBetweenReadings:
    """A ``time`` module for ``sync._timefmt`` whose clocks that count suspend (CLOCK_BOOTTIME;
    macOS's CLOCK_MONOTONIC) move on a night (NIGHT_S) between any two readings of them: the
    laptop sleeps after each. Install it with
    ``monkeypatch.setattr(sync._timefmt, "time", SleepsBetweenReadings())``."""

    def __init__(self) -> None:
        self.readings = 0

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def clock_gettime(self, clock: int) -> float:
        now = time.clock_gettime(clock)
        if clock == time.CLOCK_MONOTONIC and sys.platform != "darwin":
            return now  # Linux's stands still in suspend
        self.readings += 1
        return now + self.readings * NIGHT_S
