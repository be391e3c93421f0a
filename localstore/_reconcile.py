"""Reconcile the index with the files on disk (the files are the truth).

Used on open, by ``check``, by the watcher for every settled path and for rescans. The pass is
incremental: a pair whose size, mtime and change time match the index is not read at all
(``files.stat_unchanged``); others are hashed and compared, so touching a file without changing it
costs one read and records nothing.

Identity rules: the id in the meta file is the identity. A YAML that moved without its meta is re-paired
with the blueprint whose file vanished and whose YAML hash matches; a meta file whose YAML was renamed
by the user follows it; a copied pair (same id at two live paths) gets a new id for the copy.

``Reconciler`` is built in layers, one private module each, every class building on the one before:
``_reconcile_core`` (the pass's state, the scan, row lookups and reads), ``_reconcile_problems``
(what ``check`` reports of a file it cannot take), ``_reconcile_record`` (rows, revisions, flags
and deletes), ``_reconcile_metas`` (meta files: recovered, written, followed), ``_reconcile_moves``
(whose a pair is: moves, copies, case twins), ``_reconcile_leftovers`` (stale temps, files set
aside, orphan metas), ``_reconcile_ingest`` (one path). The blueprints folder's identity is in
``_reconcile_root``. This module holds ``Reconciler`` itself (the full pass: ``run``, ``check``'s
compare and ``--fix``) and re-exports the names callers import from here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import apsw

from localstore import files as fs
from localstore._flag_words import flags_in_older_words, note_flag_words
from localstore._reconcile_core import META_READ_LIMIT as META_READ_LIMIT
from localstore._reconcile_core import RefusedPair as RefusedPair
from localstore._reconcile_core import _from_index, _Listed, log
from localstore._reconcile_core import _Scan as _Scan
from localstore._reconcile_core import stamp_inodes as stamp_inodes
from localstore._reconcile_ingest import _ReconcileIngest
from localstore._reconcile_leftovers import STALE_TEMP_SECONDS as STALE_TEMP_SECONDS
from localstore._reconcile_leftovers import keep_orphan_meta as keep_orphan_meta
from localstore._reconcile_leftovers import keep_recovered as keep_recovered
from localstore._reconcile_leftovers import orphan_home as orphan_home
from localstore._reconcile_moves import moved_first as moved_first
from localstore._reconcile_problems import flag_reason as flag_reason
from localstore._reconcile_problems import reason_of as reason_of
from localstore._reconcile_root import CONFIRM_EMPTY_NAME as CONFIRM_EMPTY_NAME
from localstore._reconcile_root import ROOT_ID_SETTING as ROOT_ID_SETTING
from localstore._reconcile_root import ROOT_MARK_NAME as ROOT_MARK_NAME
from localstore._reconcile_root import ROOT_MARK_SETTING as ROOT_MARK_SETTING
from localstore._reconcile_root import adopt_root as adopt_root
from localstore._reconcile_root import check_root as check_root
from localstore._reconcile_root import read_root_mark as read_root_mark
from localstore._reconcile_root import refuse_a_vanished_root as refuse_a_vanished_root
from localstore._reconcile_root import root_loop_error as root_loop_error
from localstore.blueprint import sha256_hex
from localstore.errors import IndexStoreError, LocalStoreError, StoreClosedError
from localstore.index import map_apsw_error

if TYPE_CHECKING:
    from localstore._presence import WatchPeriods
    from localstore.store import CheckReport, Row


def _pair_stats(scan: _Scan, rel: str) -> list[fs.FileStat]:
    """The scanned stats of the YAML at ``rel`` and of its meta file (if scanned)."""
    m = scan.metas.get(fs.meta_path_for(rel))
    return [scan.yamls[rel]] if m is None else [scan.yamls[rel], m]


class Reconciler(_ReconcileIngest):
    """One reconcile pass over a store (or one path of it)."""

    def run(self, *, fix: bool) -> CheckReport:
        """Compare everything; with ``fix`` apply the differences to the index (and missing metas)."""
        from localstore.store import CheckReport

        report = CheckReport()
        self._compare(report, fix=fix)
        self._parked_pairs(report, fix=fix)
        return report

    def _compare(self, report: CheckReport, *, fix: bool) -> None:
        """Compare the files with the index; with ``fix`` apply the differences."""
        if fix:
            check_root(self.store)  # the folder may have gone since the open checked it
        with self.store.index.read() as cur:
            by_path = self._live_rows(cur)
            self._reword = (
                fix
                and any(row.flagged is not None for row in by_path.values())
                and flags_in_older_words(cur)
            )
        scan = self.scan(by_path)
        changed, missing = self._candidates(scan, by_path)
        orphans = self._orphan_metas(scan)
        stale = self._stale_temps(scan)
        self._report_flagged(by_path, report)
        self._report_unsupported(scan, report)
        if fix:
            self._stamp_inodes(scan, by_path, changed)
        if not (changed or missing or orphans or stale):
            return
        if not fix:
            self._describe(scan, by_path, changed, missing, orphans, stale, report)
            return
        self._judge_ahead(changed)
        try:
            self._fix(report)
        except apsw.Error as exc:  # never leaks out of the public API (open, reconcile, check)
            raise map_apsw_error(exc, "reconcile the index with the files") from exc
        if self._reword:
            self._reworded(report)
        self.store.events.publish(self.events)

    def _reworded(self, report: CheckReport) -> None:
        """The pass's flagged lines in the words its fix flagged them anew with (they were
        taken before it: check --fix, the first thing run after an upgrade, showed the old)."""
        with self.store.index.read() as cur:
            for problem in report.problems:
                row = self._at_path(cur, problem["path"]) if problem["kind"] == "flagged" else None
                if row is not None and row.flagged:
                    problem["detail"] = row.flagged

    def _parked_pairs(self, report: CheckReport, *, fix: bool) -> None:
        """Report each blueprint core v11 kept under a key of its own (index._v11_path_keys)
        beside the one holding its path's key; with ``fix``, give it that key once it is free.

        Such a pair is one file on macOS and Windows, so it stays reported until one of the two
        is renamed. A rename of the kept one gives it its new path's key; a rename (or delete)
        of the other frees the key, which the next full pass gives back here, so that the
        blueprint is again found by its key and blocks the names it collides with.
        """
        parked: list[tuple[int, str, str, Row | None]] = []
        with self.store.index.read() as cur:
            # Keys that start with NUL, through the live-path index: no row, no cost. (Sorted
            # here: ORDER BY path made SQLite scan the whole listing index in path order.)
            for rid, path in sorted(
                cur.execute(
                    "SELECT rid, path FROM blueprints WHERE path_key < char(1) AND deleted = 0"
                ).fetchall(),
                key=lambda r: str(r[1]),
            ):
                key = fs.path_key(str(path))
                holder = self.store._row_by(cur, "path_key = ? AND deleted = 0", (key,))
                parked.append((int(rid), str(path), key, holder))
        for rid, path, key, holder in parked:
            if holder is not None:
                detail = f"differs only by case from {holder.path}; rename one of them"
                report.problems.append({"kind": "case-collision", "path": path, "detail": detail})
                continue
            if not fix:
                continue
            try:
                with self.store.index.write() as cur:
                    # (Taken meanwhile by another process's save: reported next time instead.)
                    cur.execute(
                        "UPDATE blueprints SET path_key = ? WHERE rid = ? AND deleted = 0 AND "
                        "NOT EXISTS (SELECT 1 FROM blueprints WHERE path_key = ? AND deleted = 0)",
                        (key, rid, key),
                    )
            except apsw.Error as exc:  # never leaks out of the public API (open, check)
                raise map_apsw_error(exc, "reconcile the index with the files") from exc

    def _judge_ahead(self, changed: list[str]) -> None:
        """Run the app's validator on the changed files before _fix takes the write lock, as
        the watcher does for its batch: inside it, a slow validator held every other process's
        writes to the home up (at open, after the app was closed a while: many files).

        The ingest inside uses a verdict only for the very bytes judged (BlueprintStore.
        _judge_ahead), so a file changed in between is judged again there; one that cannot be
        read or parsed here is left to the ingest, which reports it. A pair whose bytes are the
        row's (a touch: _restamp records its stats, nothing is judged) is not judged here either.
        At most JUDGED_AHEAD files are read: past that (a first open of a copied home) the rest
        are judged inside, as before, rather than every pair read twice.
        """
        from localstore.store import JUDGED_AHEAD

        store = self.store
        if store.validator is None or not changed:
            return
        texts: list[bytes] = []
        with store.index.read() as cur:
            for rel in changed[:JUDGED_AHEAD]:
                try:
                    yaml_bytes = self._read(rel)
                    if yaml_bytes is None:
                        continue
                    row = self._at_path(cur, rel)
                    if (
                        row is not None
                        and row.flagged is None
                        and sha256_hex(yaml_bytes) == row.yaml_sha256
                        and self._holds(row, rel, fs.meta_path_for(rel))
                    ):
                        continue  # a restamp
                except (LocalStoreError, OSError):
                    continue
                texts.append(yaml_bytes)
        store._judge_texts_ahead(texts)

    def _stamp_inodes(self, scan: _Scan, by_path: dict[str, _Listed], changed: list[str]) -> None:
        """Record the scanned inodes of unchanged pairs whose rows have none (core v8 rows).

        No read: the pair's size, mtime and change time matched, which is what core v8 took
        for unchanged, and the scan has already lstat'ed both files. Reading every pair once
        instead (as the v8 upgrade had to, for the change times) cost about 5 s at 10,000
        blueprints; it would only catch a same-tick rename made before the upgrade. A pair that
        differs goes the usual way (_restamp or an ingest), which records its inodes too. One
        write transaction, on the first open after the upgrade only (later opens find none).
        """
        unstamped = {
            path: row.rid
            for path, row in by_path.items()
            if row.yaml_ino is None or row.meta_ino is None
        }
        stamp_inodes(self.store, scan, unstamped, changed)

    def _fix(self, report: CheckReport) -> None:
        """Apply the differences found under the write lock, one path per savepoint."""
        with self.store.index.write() as cur:
            # Re-scan under the write lock: another process may have saved since the first look.
            by_path = self._live_rows(cur)
            scan = self.scan(by_path)
            changed, missing = self._candidates(scan, by_path)
            # A watcher of another process (the daemon's, an app's) waits for a write's close
            # and gives a vanished file a grace period: read now, half an editor's in-place save
            # that parses was recorded as a revision by any CLI command's open, and a file gone
            # for a moment in a save dance was recorded deleted (its new file then a new
            # blueprint). What it is still to record is its: left alone here, files new,
            # changed or gone alike.
            elsewhere = self._watching_elsewhere() if changed or missing else None
            left: set[str] = set()
            if elsewhere is not None:
                left = {rel for rel in changed if self._watchers_pair(cur, scan, rel, elsewhere)}
                left.update(
                    row.path
                    for row in missing
                    if fs.folder_changed_within(self.store.root, row.path, elsewhere.grace_s)
                )
                changed = [rel for rel in changed if rel not in left]
                missing = [row for row in missing if row.path not in left]
            self._moved_first(changed, scan, missing)
            self._changed = changed
            for rel in changed:
                with self._isolated(rel, report):
                    if not self._restamp(cur, rel, scan):
                        self._ingest_locked(cur, rel, scan, report)
            if self._reword:
                self._note_reworded(cur, by_path, left, report)
            for parked in list(self._parked.values()):
                with self._isolated(parked.path, report):
                    self._unpark(cur, parked, report)
            for row in missing:
                with self._isolated(row.path, report):
                    self._gone(cur, row, scan, report)
            for rel in self._orphan_metas(self.scan()):
                if fs.yaml_path_for(rel) in left:
                    continue  # (its YAML, gone for a moment, is the watcher's to judge)
                if rel in self._leaving:
                    continue  # (a moved YAML's old meta, removed once the move is committed)
                if self._yaml_may_follow(rel):
                    continue
                with self._isolated(rel, report):
                    self._handle_orphan(cur, rel, report)
            for rel in self._stale_temps(scan):
                with self._isolated(rel, report):
                    self.clear_stale_temp(rel, report)

    def _gone(self, cur: Any, row: _Listed, scan: _Scan, report: CheckReport) -> None:
        """Record deleted the live ``row`` whose YAML the scan did not find, unless it moved
        meanwhile, its move's ingest failed, or its file is still there (reported then)."""
        current = self._with_id(cur, row.id)
        if current is None or current.deleted or current.path != row.path:
            return
        if current.id in self._move_failed:
            # Its files moved to a path whose ingest failed (reported as skipped):
            # recorded deleted, with the meta left behind removed, the next pass
            # gave the moved YAML a new id and dropped that meta's hand edits.
            return
        kept = self._still_on_disk(current, scan)
        if kept is not None:
            report.problems.append(kept)
        else:
            self._delete_locked(cur, current, report)

    @staticmethod
    def _note_reworded(
        cur: Any, by_path: dict[str, _Listed], left: set[str], report: CheckReport
    ) -> None:
        """Note the home's flags in today's words, unless a flagged file was not read again
        (skipped: unreadable; left to another process's watcher): the next pass tries again."""
        missed = left | {p["path"] for p in report.problems if p["kind"] == "skipped"}
        if not any(row.flagged and path in missed for path, row in by_path.items()):
            note_flag_words(cur)

    @staticmethod
    def _moved_first(changed: list[str], scan: _Scan, missing: Sequence[_Listed]) -> None:
        """``moved_first`` for the pass: the vanished pairs are its missing rows."""
        gone = {row.yaml_ino for row in missing if row.yaml_ino is not None}
        if gone:
            moved_first(changed, lambda rel: fs.ino_key(scan.yamls[rel].st_ino), gone)

    def _watchers_pair(self, cur: Any, scan: _Scan, rel: str, periods: WatchPeriods) -> bool:
        """Whether the changed pair at ``rel`` is the other process's watcher's to record now.

        A pair written within its ``write_quiet_s`` may be half written. A pair that would be a
        copy of a live one (``copied_from``) is held by that watcher for its delete grace
        (Watcher._copy_wait): a sync tool applying another device's move writes the new pair
        before it deletes the old one. Decided here once the pair was older than the quiet
        period (1 s) but younger than a ``delete_grace_ms`` set above it, the move became a
        copy: a new id written into the arriving meta (which synced back), the old id recorded
        deleted when the old pair went, and sync pushed a delete and a create. A YAML whose meta
        may have vanished within the grace is held likewise (below).
        """
        stats = _pair_stats(scan, rel)
        if fs.changed_within(stats, periods.write_quiet_s):
            return True
        if fs.meta_path_for(rel) not in scan.metas and fs.folder_changed_within(
            self.store.root, rel, periods.grace_s
        ):
            # Its meta may have gone just now, a pair deleted file by file (a sync tool's half
            # of a move; the watcher gives a vanished meta its grace too). Taken here, the YAML
            # left behind got a made-up id and a meta written beside it, recorded deleted once
            # the YAML went (a create and a delete, pushed by a sync pass run in between).
            return True
        return fs.changed_within(stats, periods.grace_s) and self.copied_from(cur, rel) is not None

    def _watching_elsewhere(self) -> WatchPeriods | None:
        """The periods of the watchers other processes run on this home, when no watcher runs
        on this store object (its own rescans and events decide then), else None."""
        if self.store._watched():
            return None
        return self.store._watching_elsewhere()

    def _yaml_may_follow(self, meta_rel: str) -> bool:
        """Whether a meta file without its YAML is a watcher's to judge: one runs in another
        process and the meta came within its ``write_quiet_s``, so a tool writing the pair file
        by file may bring the YAML next. A sync tool applying another device's move writes the
        new pair (in any order) before it deletes the old one: a command's open in between took
        the arriving meta, its id live at the old path, for a hand-edited copy and moved it to
        <data>/recovered/, and the YAML then came without it and got a new id."""
        periods = self._watching_elsewhere()
        if periods is None:
            return False
        try:
            st = os.lstat(self.store.root / meta_rel)
        except OSError:
            return False
        return fs.changed_within([st], periods.write_quiet_s)

    @contextlib.contextmanager
    def _isolated(self, rel: str, report: CheckReport) -> Iterator[None]:
        """Run one path's repair in its own savepoint; if that path fails, report it and go on.

        One file the pass cannot handle (unreadable, a name the disk refuses for its meta) made
        every open() fail, so a single bad file took the whole store, and the daemon, down. The
        index failing is not a bad file: that still ends the pass.
        """
        mark = len(self.events)
        parked = dict(self._parked)
        leaving = set(self._leaving)
        entered = False
        self._moving = None
        try:
            with self.store.index.write():
                entered = True
                yield
        except (StoreClosedError, IndexStoreError):
            raise  # (also a write SQLite rolled back whole: going on would commit piecemeal)
        except (OSError, LocalStoreError, apsw.ConstraintError) as exc:
            if not entered or _from_index(exc):
                # The savepoint could not start or end (a full disk under the index): the index
                # failing, not this path. Swallowed at the start, it also broke the pass with
                # "generator didn't yield" instead of the error.
                raise
            del self.events[mark:]  # rolled back with the savepoint: nothing to announce
            self._parked = parked
            self._leaving = leaving  # (their removals went with the savepoint)
            if self._moving is not None:
                self._move_failed.add(self._moving)
            log.warning("reconcile skipped %s: %s", rel, exc)
            report.problems.append({"kind": "skipped", "path": rel, "detail": str(exc)})
