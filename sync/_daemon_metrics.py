"""The daemon's counters (:class:`DaemonMetrics`) and the engine that counts every cycle into them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sync.engine import SyncEngine, SyncReport


@dataclass
class DaemonMetrics:
    """Counters since the daemon started."""

    sync_cycles: int = 0
    sync_failures: int = 0
    pushed: int = 0
    pulled: int = 0
    merged: int = 0
    conflicts: int = 0
    quarantined: int = 0
    store_events: int = 0
    foreign_changes: int = 0
    watcher_restarts: int = 0
    sync_restarts: int = 0
    startup_reconcile_seconds: float = 0.0
    last_cycle_seconds: float = 0.0

    def add(self, report: SyncReport, seconds: float) -> None:
        """Count one successful cycle."""
        self.sync_cycles += 1
        self.pushed += report.pushed
        self.pulled += report.pulled
        self.merged += report.merged
        self.conflicts += report.conflicts
        self.quarantined += report.quarantined
        self.last_cycle_seconds = seconds


class _MeteredEngine(SyncEngine):
    """The engine with every cycle's report counted (the loop calls sync_once itself)."""

    metrics: DaemonMetrics

    def sync_once(self) -> SyncReport:
        started = time.monotonic()
        try:
            report = super().sync_once()
        except BaseException:
            self.metrics.sync_failures += 1
            raise
        self.metrics.add(report, time.monotonic() - started)
        return report
