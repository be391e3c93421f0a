"""Applying pulled server rows in index transactions: chunks, runs of clean takes saved together,
one row at a time where it needs a decision (``sync._apply.Applier``), the server's revision
lookup for copies without a base, and the apply journal that settles an apply a kill cut short.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from localstore._revisions import revision_text
from localstore.errors import (
    AlreadyExistsError,
    ChangedOnDiskError,
    InvalidInputError,
    LocalStoreError,
    NotFoundError,
    StorageError,
    UnsafePathError,
)
from localstore.events import Event
from localstore.store import BlueprintStore
from sync import _state as st
from sync._apply import (
    Applier,
    ApplyStats,
    Prefetched,
    ancestor_probes,
    copy_id_for,
    drop_known,
    is_known,
    is_path_shape_error,
)
from sync._engine_bases import _EngineBases
from sync._kept_merges import highest_kept
from sync._local import SyncReport
from sync._shown import MAX_SHOWN, shown
from sync.errors import ProtocolError, RemoteConfigError
from sync.remote import MAX_MATCH_PROBES, RevisionMatch, ServerRow

log = logging.getLogger("sync.engine")

APPLY_BATCH_CHARS = 8 * 2**20
# Pulled rows whose local state is read together (see _apply_batched).
PREFETCH_WINDOW = 64


class _EngineApply(_EngineBases):
    """Apply server rows to the store (a pulled page, a push's conflicts, a re-fetched parked row)."""

    def _apply_page(
        self, rows: Sequence[ServerRow], nxt: int, horizon: int, report: SyncReport
    ) -> None:
        """Apply rows in transactions of ``apply_batch`` rows (or ``APPLY_BATCH_CHARS`` of
        content); the cursor commits with the last one.

        Rows this device already builds on (its own pushes coming back after an upload) are
        dropped first, so they cost neither a journal entry nor a transaction.
        """
        with self.store.index.read() as cur:
            rows = drop_known(cur, rows)
        ancestors = self._ancestors(rows)  # one lookup for the page, not one per chunk or row
        chunks = self._chunks(rows)
        for n, chunk in enumerate(chunks or [()]):
            last = n == len(chunks) - 1 or not chunks
            self._apply_rows(
                chunk, report, cursor=(nxt, horizon) if last else None, ancestors=ancestors
            )

    def _chunks(self, rows: Sequence[ServerRow]) -> list[Sequence[ServerRow]]:
        chunks: list[Sequence[ServerRow]] = []
        start, chars = 0, 0
        for i, row in enumerate(rows):
            if i > start and (
                i - start >= self.apply_batch or chars + len(row.content) > APPLY_BATCH_CHARS
            ):
                chunks.append(rows[start:i])
                start, chars = i, 0
            chars += len(row.content)
        if start < len(rows):
            chunks.append(rows[start:])
        return chunks

    def _apply_rows(
        self,
        rows: Sequence[ServerRow],
        report: SyncReport,
        *,
        cursor: tuple[int, int] | None = None,
        unpark: Sequence[str] = (),
        ancestors: dict[str, RevisionMatch] | None = None,
    ) -> None:
        if not rows and not unpark and self._cursor_kept(cursor):
            # An empty page (an idle poll) leaves the cursor where it is: nothing to commit,
            # so no write lock, which every other process's writer waits for.
            return
        stats = ApplyStats()
        if ancestors is None:
            ancestors = self._ancestors(rows)
        applier = Applier(self.store, self.policy, now=self.now, stats=stats, ancestors=ancestors)
        # The app's validator on what the rows save (their texts, merges' results) runs here,
        # before the write lock: inside, a slow one held every other process's writes up.
        applier.judge_ahead(rows)
        self._journal(rows)
        with self.store.index.write() as cur:
            for blueprint_id in unpark:
                st.unquarantine(cur, blueprint_id)  # a row that fails again is parked again
            if unpark:
                # A retry: each row on its own, and a row this device knows but does not hold
                # (a path it does not scan) is applied again: the path may be scanned by now.
                for row in rows:
                    self._apply_one(cur, applier, row, report, force=True)
            else:
                self._apply_batched(cur, applier, rows, report)
            st.journal_clear(cur)
            if cursor is not None:
                st.set_state(cur, "cursor", str(cursor[0]))
                st.set_state(cur, "horizon", str(cursor[1]))
        self._finish_apply(stats, report)

    def _cursor_kept(self, cursor: tuple[int, int] | None) -> bool:
        """Whether the index holds ``cursor`` (next, horizon) already (or it is None) and no
        apply journal: then an apply of no rows would write nothing."""
        with self.store.index.read() as cur:
            if st.journal_read(cur):
                return False
            return cursor is None or (
                st.get_state(cur, "cursor") == str(cursor[0])
                and st.get_state(cur, "horizon") == str(cursor[1])
            )

    def _apply_batched(
        self, cur: Any, applier: Applier, rows: Sequence[ServerRow], report: SyncReport
    ) -> None:
        """Apply rows in order; runs of clean takes go through ``store.save_many`` together.

        A clean take needs no decision, so saving a run of them in one call lets the store flush
        the disk a few times per run instead of a few times per blueprint. Any row that needs a
        decision first flushes the run, so the order of the page is kept.
        """
        save_many = getattr(self.store, "save_many", None)
        run: list[tuple[ServerRow, Any]] = []
        ids: set[str] = set()
        keys: set[str] = set()
        known: Prefetched | None = None
        for pos, row in enumerate(rows):
            if known is None or pos >= known.end:
                # The local state of the next rows in three queries (not four per row). Small
                # windows, so a page full of merges does not read the rest of it after each one.
                known = Prefetched(self.store, cur, rows[pos : pos + PREFETCH_WINDOW])
                known.end = pos + PREFETCH_WINDOW
            if is_known(known.items.get(row.id), row):
                continue  # our own push coming back, or a replayed page: nothing to do
            planned = None
            if save_many is not None:
                planned = applier.plan_clean_save(row, known, ids, keys)
            if planned is not None:
                request, key = planned
                run.append((row, request))
                ids.add(row.id)
                keys.add(key)
                continue
            self._flush_run(cur, applier, run, report)
            ids.clear()
            keys.clear()
            self._apply_one(cur, applier, row, report)
            known = None  # the apply may have changed any row or path: read them again
        self._flush_run(cur, applier, run, report)

    def _flush_run(
        self, cur: Any, applier: Applier, run: list[tuple[ServerRow, Any]], report: SyncReport
    ) -> None:
        """Save a run; if one row's path cannot exist here, apply its rows one by one instead.

        ``save_many`` raises for a storage failure of any item and restores the whole run, so
        one row (a file where the server has a folder) would fail every pull, and the cursor
        could never pass it. Row by row, that row alone is quarantined.
        """
        try:
            rows = self._save_run(cur, applier, run, report)
        except StorageError as exc:
            if not is_path_shape_error(exc):
                raise
            rows = [row for row, _ in run]
            run.clear()
        for row in rows:  # (a run's rows have distinct ids and paths: order does not matter)
            applier.stats.applied -= 1  # counted when planned; apply_row counts what it does
            self._apply_one(cur, applier, row, report)

    def _save_run(
        self, cur: Any, applier: Applier, run: list[tuple[ServerRow, Any]], report: SyncReport
    ) -> list[ServerRow]:
        """Save a run of clean takes; returns the rows that need :meth:`_apply_one` instead."""
        if not run:
            return []
        # Looked up, not called as a method: stores without batched saves take the slow path.
        save_many: Callable[..., list[Any]] = getattr(self.store, "save_many")  # noqa: B009
        results = save_many([request for _, request in run], origin="remote")
        saved: list[tuple[ServerRow, str]] = []
        again: list[ServerRow] = []
        for (row, _), result in zip(run, results, strict=True):
            if not isinstance(result, LocalStoreError):
                saved.append((row, result.content_hash))
                continue
            if isinstance(result, (AlreadyExistsError, ChangedOnDiskError)) or (
                isinstance(result, UnsafePathError) and applier.unscanned(row.path)
            ):
                # AlreadyExistsError: a file at the path the index has not seen (an editor was
                # faster than the watcher), not a bad row: apply_row indexes it and moves it
                # aside. ChangedOnDiskError: an editor saved this blueprint after the run was
                # planned; the store recorded the edit and wrote nothing, and apply_row merges.
                # A path this home never scans (a hidden folder, an ignored name): apply_row
                # records the row and takes the local copy out of view (Applier._out_of_view).
                again.append(row)
                continue
            op_id = st.current_op_id(cur, row.id)
            message = getattr(result, "message", str(result))
            st.quarantine(cur, row.id, op_id, row.path, "pull", "invalid_remote", message)
            report.count_quarantined(row.id, _row_error(row.path, message))
        # Same transaction as the saves (the caller's): files, index rows and bases commit
        # together, exactly as a per-row tx_hook would, with two statements for the run.
        st.record_synced_bases(cur, saved)
        run.clear()
        return again

    def _apply_one(
        self,
        cur: Any,
        applier: Applier,
        row: ServerRow,
        report: SyncReport,
        *,
        force: bool = False,
    ) -> None:
        """Apply one row in its own savepoint; a row this device cannot store is parked."""
        try:
            try:
                with self.store.index.write() as inner:
                    applier.apply_row(inner, row, force=force)
            except ChangedOnDiskError:
                # An editor saved between the applier's look at the files and the store's write:
                # the store recorded the edit, but this savepoint rolled that back. Once more:
                # the applier now records the edit itself and merges. A second refusal stops
                # the pass like any store error (the next cycle looks again).
                with self.store.index.write() as inner:
                    applier.apply_row(inner, row, force=force)
        except (InvalidInputError, StorageError, AlreadyExistsError) as exc:
            if isinstance(exc, StorageError) and not is_path_shape_error(exc):
                raise  # the disk or the index: the pass stops, nothing is skipped
            # AlreadyExistsError here: a file at the path that the store cannot record (its YAML
            # or meta does not parse) and so will not overwrite. Parked until the person fixes,
            # moves or removes it (the next cycle then applies it: _rerun_unblocked); raising
            # would stop every pull.
            code = (
                "invalid_remote"
                if isinstance(exc, InvalidInputError)
                else "path_blocked"
                if isinstance(exc, AlreadyExistsError)
                else "unwritable_path"
            )
            op_id = st.current_op_id(cur, row.id)
            st.quarantine(cur, row.id, op_id, row.path, "pull", code, exc.message)
            report.count_quarantined(row.id, _row_error(row.path, exc.message))
            log.warning("sync: cannot store server row %s (%s): %s", row.id, shown(row.path), exc)

    def _ancestors(self, rows: Sequence[ServerRow]) -> dict[str, RevisionMatch]:
        """Ask the server which local copies without a base are revisions it had (by id).

        See ``sync._apply.ancestor_probes``: after `check --fix` rebuilt the index, or on a
        device that imported an old bundle, a copy with no base is merged without one, and an
        older, unedited copy became a conflict copy of an ancestor. One request for all of
        ``rows`` (a push batch, a pull page), none when every row has a base. A remote without
        the lookup, or a server whose schema predates it, leaves the old behaviour (a merge
        without a base: nothing is lost, a conflict copy at worst).
        """
        ask = getattr(self.remote, "match_revisions", None)
        if not rows or not self._ancestry or not callable(ask):
            return {}
        with self.store.index.read() as cur:
            probes = ancestor_probes(cur, rows)
        found: dict[str, RevisionMatch] = {}
        for i in range(0, len(probes), MAX_MATCH_PROBES):
            try:
                matches = self._call(ask, probes[i : i + MAX_MATCH_PROBES])
            except (RemoteConfigError, ProtocolError) as exc:
                # Only a way to spare conflict copies, never needed to sync correctly: a server
                # that refuses it (grants, a broken reply) must not stop every cycle.
                matches, why = None, str(exc)
            else:
                why = "the function is not deployed"
            if matches is None:
                self._ancestry = False
                log.warning(
                    "sync: the server's revision history cannot be asked (%s; deploy the latest "
                    "sync/supabase/migrations); copies this device holds without a sync base "
                    "are merged without one",
                    why,
                )
                return found
            found.update((m.id, m) for m in matches)
        return found

    def _journal(self, rows: Sequence[ServerRow]) -> None:
        if rows:
            with self.store.index.write() as cur:
                # The local hashes of rows with unpushed edits: a keep-both's copy id follows
                # from one (see _recover_copy). One query per chunk; none found on a download.
                dirty = st.dirty_hashes(cur, [r.id for r in rows if not r.deleted])
                st.journal_write(cur, rows, dirty)

    def _recover_journal(self) -> None:
        """Settle the rows of an apply that a kill cut short (see ``sync._state`` journal)."""
        with self.store.index.read() as cur:
            # Empty but after a kill: no write lock for nothing (only a sync of this home,
            # which holds its lock, writes the journal, so none appears after this read).
            if not st.journal_read(cur):
                return
        events: list[Event] = []
        with self.store.index.write() as cur:
            for entry in st.journal_read(cur):
                self._recover_entry(cur, entry, events)
            st.journal_clear(cur)
        if events:
            self.store.events.publish(events)

    def _recover_entry(self, cur: Any, entry: dict[str, Any], events: list[Event]) -> None:
        row = _row_or_none(self.store, entry["id"])
        item = st.get_item(cur, entry["id"])
        if row is None or (item is not None and item.base_seq >= entry["seq"]):
            return
        if row.op_id <= (item.synced_op_id if item is not None else 0):
            return
        if entry["deleted"] != row.deleted:
            return
        if not row.deleted and (row.content_hash != entry["hash"] or row.path != entry["path"]):
            return  # a real local change (or a half-written pair): the normal merge handles it
        text = cur.execute(
            "SELECT content, meta FROM revisions WHERE id = ? AND rev = ?", (row.id, row.rev)
        ).fetchall()
        if not row.deleted and text and entry.get("local"):
            # Before record_base: the record's base is the one the apply merged against.
            self._recover_copy(cur, entry, item, revision_text(text[0][0]), events)
        st.record_base(
            cur,
            row.id,
            rev=entry["rev"],
            seq=entry["seq"],
            content_hash=entry["hash"],
            path=entry["path"],
            deleted=entry["deleted"],
            content=None if row.deleted or not text else revision_text(text[0][0]),
            meta=None if row.deleted or not text else json.loads(revision_text(text[0][1])),
            synced_op_id=row.op_id,
            held_hash=row.content_hash,
        )

    def _recover_copy(
        self,
        cur: Any,
        entry: dict[str, Any],
        item: st.ItemState | None,
        remote: str,
        events: list[Event],
    ) -> None:
        """Record again the conflict of a keep-both apply that a kill cut short.

        The blueprint holds the server's version (the caller checked), so the apply got past
        the copy: if a blueprint with the copy's id (derived from the local hash the journal
        kept, ``copy_id_for``) is live here and no record names it, the kill came after its
        files and before the commit, and reconcile adopted it as an ordinary blueprint: nobody
        was told there was a conflict. The record's reason cannot say what the merge found
        (that was decided inside, not journaled).
        """
        copy_id = copy_id_for(entry["id"], entry["local"], entry["rev"], self.store.device_id)
        copy = self.store.row_by_id(copy_id, cur)
        if copy is None or copy.deleted or st.has_conflict_for_copy(cur, copy_id):
            return
        known = item is not None and item.base_rev is not None
        base = st.get_base(cur, entry["id"]) if known else None
        cid = st.add_conflict(
            cur,
            blueprint_id=entry["id"],
            path=entry["path"],
            copy_id=copy_id,
            copy_path=copy.path,
            reason="content (recorded again after a sync was cut short)",
            base=base.content if base is not None else None,
            local=self._journaled_local(cur, entry, copy),
            remote=remote,
            base_rev=item.base_rev if item is not None else None,
            remote_rev=entry["rev"],
            above=highest_kept(self.store.paths.state),
        )
        detail = f"conflict #{cid}: local version kept at {copy.path}"
        events.append(Event("conflict", entry["id"], entry["path"], "remote", detail=detail))
        log.warning("sync: %s (recorded again after an interrupted sync)", detail)

    def _journaled_local(self, cur: Any, entry: dict[str, Any], copy: Any) -> str:
        """The local version a killed keep-both kept as ``copy``: the revision with the hash the
        journal holds, from the blueprint's history (the edit that was not pushed) or the
        copy's. Not the copy's current text: the person may have edited the copy since (in an
        editor before this open, which reconcile made its first revision, or after), and the
        record's local side then showed their edit as what the conflict found."""
        for ident in (entry["id"], copy.id):
            held = st.local_revision_with_hash(cur, ident, entry["local"])
            if held is not None:
                return held.content
        # (Not reached while history holds every revision: it is compacted, never deleted.)
        rows = cur.execute(
            "SELECT content FROM revisions WHERE id = ? AND rev = ?", (copy.id, copy.rev)
        ).fetchall()
        return revision_text(rows[0][0]) if rows else ""

    def _finish_apply(self, stats: ApplyStats, report: SyncReport) -> None:
        report.conflicts += stats.conflicts
        report.merged += stats.merged
        report.errors.extend(stats.errors)
        for blueprint_id, message in stats.parked:
            report.count_quarantined(blueprint_id, message)
        if stats.events:
            self.store.events.publish(stats.events)


def _row_error(path: str, message: str) -> str:
    """One report line for a server row that could not be stored (its path said once)."""
    # The path is the server's: escaped and cut, as in the quarantine record.
    return shown(message if message.startswith(path) else f"{path}: {message}", 4 * MAX_SHOWN)


def _row_or_none(store: BlueprintStore, blueprint_id: str) -> Any:
    try:
        return store.row(blueprint_id, include_deleted=True)
    except NotFoundError:
        return None
