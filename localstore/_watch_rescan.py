"""The folder compared with the index: one part of ``Watcher`` (see ``_watch_state``).

A rescan compares sizes, mtimes and change times with the index and feeds only the differences
into the per-path machinery (so a file still being written is never read, and a save dance never
deletes); stopped, the watcher applies them at once. Folders it cannot list are reported, and
their blueprints left alone.
"""

from __future__ import annotations

import errno
import queue
import time
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from localstore import files as fs
from localstore._reconcile import Reconciler, _Scan, moved_first, stamp_inodes
from localstore._watch_due import _DuePaths
from localstore._watch_events import _FENCE_PREFIX, _canonical
from localstore._watch_state import log
from localstore.errors import WatcherError


@dataclass(frozen=True)
class RescanReport:
    """What a rescan found different from the index."""

    scanned: int
    changed: int
    missing: int
    seconds: float


@dataclass
class _Diff:
    scanned: int
    changed: list[str]
    missing: list[str]
    orphans: list[str]
    stale: list[str]
    unlistable: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)  # of unlistable: for permissions


class _Rescans(_DuePaths):
    """The folder compared with the index (the layer above ``_DuePaths``)."""

    def _diff(self) -> _Diff:
        rec = Reconciler(self.store)
        with self.store.index.read() as cur:
            indexed = {
                str(r[0]): r[1:]
                for r in cur.execute(
                    "SELECT path, yaml_size, yaml_mtime_ns, yaml_ctime_ns, yaml_ino, meta_size, "
                    "meta_mtime_ns, meta_ctime_ns, meta_ino, rid FROM blueprints WHERE deleted = 0"
                )
            }
        scan, unlistable, denied = self._scan(rec, indexed)
        changed = []
        self._told = {p: t for p, t in self._told.items() if p in scan.yamls and p not in indexed}
        for rel, y in scan.yamls.items():
            m = scan.metas.get(fs.meta_path_for(rel))
            known = indexed.get(rel)
            told = self._told.get(rel)
            if told is not None and told.unchanged(y, m):
                continue  # a new file refused with these stats: told once, not read again
            if (
                known is None
                or m is None
                or not fs.stat_unchanged(y, *known[:4])
                or not fs.stat_unchanged(m, *known[4:8])
            ):
                changed.append(rel)
        # Rows of a core v8 index with no inode yet, stamped as the open's reconcile does: a
        # store opened without one (`localstore watch`, an app's reconcile=False) left them
        # unstamped, and a same-tick rename over them went unseen until an open reconciled.
        unstamped = {p: k[8] for p, k in indexed.items() if k[3] is None or k[7] is None}
        if unstamped:
            stamp_inodes(self.store, scan, unstamped, set(changed))
        # Under a folder that could not be listed a blueprint is unknown, not deleted.
        missing = [
            p
            for p in indexed
            if p not in scan.yamls and not any(p.startswith(u) for u in unlistable)
        ]
        changed.sort()
        gone = {ino for p in missing if (ino := indexed[p][3]) is not None}
        moved_first(changed, lambda rel: fs.ino_key(scan.yamls[rel].st_ino), gone)
        return _Diff(
            scanned=len(scan.yamls),
            changed=changed,
            missing=sorted(missing),
            orphans=rec._orphan_metas(scan),
            stale=[t for t in rec._stale_temps(scan) if _FENCE_PREFIX not in t],
            unlistable=unlistable,
            denied=denied,
        )

    def _scan(self, rec: Reconciler, indexed: Container[str]) -> tuple[_Scan, list[str], list[str]]:
        """``Reconciler.scan``, except that folders it cannot list are returned, not raised.

        The reconciler's own full pass still raises on them (it would take their blueprints for
        deleted); the watcher keeps running, reports them and leaves their blueprints alone.
        """
        errors: list[tuple[str, OSError]] = []
        scan = _Scan()
        # (The watcher's rules, not the reconciler's fresh read of the ignore file: that file
        # may be half saved; see _rules_event.)
        for rel, st in fs.walk_blueprint_files(self.root, self._ignore, unlistable=errors):
            if rel.endswith(fs.TEMP_SUFFIX):
                scan.temps[rel] = st
            elif rel.endswith(fs.YAML_SUFFIX):
                if rel in indexed or _canonical(rel):
                    scan.yamls[rel] = st
            else:
                scan.metas[rel] = st
        unlistable = sorted({prefix for prefix, _ in errors})
        denied = sorted({p for p, exc in errors if exc.errno in (errno.EACCES, errno.EPERM)})
        if unlistable != self._unlistable:
            for prefix, exc in errors:
                log.warning(
                    "cannot list %s (%s); its blueprints are left as they are",
                    prefix or ".",
                    exc.strerror or exc,
                )
        return scan, unlistable, denied

    def _rescan_into_pending(self, reason: str, done: queue.SimpleQueue[Any] | None) -> None:
        started = time.monotonic()
        root_ok = self._check_observer()
        self._rescan_wanted = None
        if not root_ok:
            # An empty listing would mark every blueprint missing. The health check rescans once
            # the folder is back.
            self._next_rescan = time.monotonic() + self._interval()
            log.warning("rescan (%s) skipped: %s", reason, self._root_problem)
            if done is not None:
                done.put(WatcherError(f"cannot rescan: {self._root_problem}"))
            return
        self._look_at_rules(time.monotonic())
        diff = self._diff()
        now = time.monotonic()
        for rel in diff.changed:
            self._found_by_rescan(rel, now, missing=False)
        for rel in diff.missing:
            self._found_by_rescan(rel, now, missing=True)
        # A failed path the rescan does not find different (its file was put back, or it was
        # indexed some other way) has nothing left to index.
        for rel in [k for k in self._failing if k not in self._pending]:
            self._forget_failure(rel)
        self._update_ingest_problem()
        if diff.stale:
            from localstore.store import CheckReport

            # (Kept aside, not removed, if one holds an interrupted save's only copy.)
            sweeper, swept = Reconciler(self.store), CheckReport()
            for rel in diff.stale:
                sweeper.clear_stale_temp(rel, swept)
        if diff.orphans:
            log.info("meta files without their YAML: %s", ", ".join(diff.orphans[:10]))
        readable = [
            p for p in self._unlistable if p not in diff.unlistable and (self.root / p).is_dir()
        ]
        self._unlistable, self._denied = diff.unlistable, diff.denied
        if readable and self._observer is not None:
            # watchdog skipped their watches while it could not read them (it drops EACCES)
            # and does not take them later by itself: the observer is restarted to take them
            # (the restart rescans). Without it, edits there waited for the timer rescan.
            log.warning(
                "%s can be read again; watching it", ", ".join(p or "." for p in readable[:5])
            )
            self._rewatch = True
            self._next_health = 0.0
        self._step_error = None
        self._errors_in_row = 0
        self.stats.rescans += 1
        self._last_rescan_s = time.monotonic() - started
        if self._unwatched or self._unwatched_suspects:
            self._check_watches()  # a folder deleted since, or a limit raised
        self._next_rescan = time.monotonic() + self._interval()
        log.debug(
            "rescan (%s): %d changed, %d missing", reason, len(diff.changed), len(diff.missing)
        )
        if done is not None:
            done.put(self._report(diff, started))

    @staticmethod
    def _report(diff: _Diff, started: float) -> RescanReport:
        return RescanReport(
            scanned=diff.scanned,
            changed=len(diff.changed),
            missing=len(diff.missing),
            seconds=time.monotonic() - started,
        )

    def _rescan_now(self) -> RescanReport:
        """Apply the differences at once (the watcher is not running, so nothing is mid-save)."""
        started = time.monotonic()
        problem, _ = self._root_status()
        if problem is not None:
            raise WatcherError(f"cannot rescan: {problem}", hint="bring the folder back first")
        diff = self._diff()
        items = [(rel, False) for rel in diff.changed] + [(rel, True) for rel in diff.missing]
        for i in range(0, len(items), self.batch_size):
            self._ingest_batch(items[i : i + self.batch_size])
        self._pending.clear()
        self._gated.clear()
        if diff.orphans or diff.stale:
            self.store.reconcile()
        self.stats.rescans += 1
        return self._report(diff, started)
