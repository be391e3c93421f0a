"""How long something lasted: the clock to measure it on, and its text for a log line."""

from __future__ import annotations

import sys
import time


def span_clock() -> float:
    """Seconds on a clock that counts time spent suspended and is never stepped.

    time.monotonic() stops while a laptop sleeps on Linux and macOS: a span measured on it left
    every night out (a daemon's uptime, a night offline logged as minutes). CLOCK_BOOTTIME
    (Linux) and macOS's CLOCK_MONOTONIC count the sleep; Windows' time.monotonic() already does.
    For lengths only: timers and deadlines keep the monotonic clock their waits run on."""
    if sys.platform == "win32":
        return time.monotonic()
    if sys.platform == "darwin":
        return time.clock_gettime(time.CLOCK_MONOTONIC)
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


def span(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``: an outage's length for the log."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
