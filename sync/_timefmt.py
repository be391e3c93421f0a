"""How long something lasted, for a log line a person reads."""

from __future__ import annotations


def span(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``: an outage's length for the log."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
