"""Pulling: pages after the persisted cursor, fetches of rows by id (paged, halved when refused),
the full reconcile below the tombstone horizon, and parked pulled rows fetched and applied again.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence

from sync import _state as st
from sync._apply import path_unblocked
from sync._engine_apply import _EngineApply, _row_error, _row_or_none
from sync._local import SyncReport
from sync.errors import ProtocolError, TransientError
from sync.remote import SPLIT_CODES, PagedFetchRemote, ServerRow, VerifyRow

log = logging.getLogger("sync.engine")

FETCH_CHUNK = 200


class _EnginePull(_EngineApply):
    """Pull the server's changes and apply them; re-fetch rows parked or below the horizon."""

    def _pull_all(self, report: SyncReport) -> None:
        with self.store.index.read() as cur:
            cursor = st.get_cursor(cur)
        resets = 0
        while True:
            # The total of a pull is unknown until the last page: 0 says "unknown".
            self._set_state("pulling", progress=(report.pulled, 0))
            page = self._call(self.remote.pull, cursor, limit=self.pull_limit)
            if page.reset_required:
                if resets:
                    raise ProtocolError("the server asked for a reset twice in one pull")
                resets += 1
                report.reset = True
                self._full_reconcile(page.horizon, report)
                cursor = page.horizon
                continue
            self._open_pull_step(page.changes)
            self._apply_page(page.changes, page.next, page.horizon, report)
            self._record_step([r.id for r in page.changes])
            report.pulled += len(page.changes)
            cursor = page.next
            if not page.more:
                break

    def _fetch_pages(self, ids: Sequence[str]) -> Iterator[list[ServerRow]]:
        """The user's rows for ``ids``, one server answer at a time, for the caller to apply
        each before the next is asked for.

        A remote with ``fetch_page`` (PagedFetchRemote) answers at most its byte budget (16 MiB
        and one row) and names the ids left, which are asked for next: all the rows of a chunk
        at once were up to 200 large blueprints in memory here, and on the server one jsonb
        over its 256 MiB (54000) or the statement timeout (57014). A call still refused so
        (``SPLIT_CODES``: a server without fetch_rows_page, whose fetch_rows refuses an answer
        over the budget, or a slow one) is asked again in halves; one id alone is at most one
        row (18 MiB), which the server answers, so a lone refusal is a real failure and raised.
        """
        paged = self.remote if isinstance(self.remote, PagedFetchRemote) else None
        asked: Sequence[str] = ids
        while asked:
            try:
                if paged is None:
                    rows, rest = self._call(self.remote.fetch, asked), []
                else:
                    page = self._call(paged.fetch_page, asked)
                    rows, rest = page.rows, page.rest
            except TransientError as exc:
                if exc.code not in SPLIT_CODES or len(asked) < 2:
                    raise
                log.info(
                    "sync: the server refused a fetch of %d rows (%s); fetching it in halves",
                    len(asked),
                    exc,
                )
                half = len(asked) // 2
                yield from self._fetch_pages(asked[:half])
                yield from self._fetch_pages(asked[half:])
                return
            yield rows
            asked = rest

    def _refetch_parked(self, ids: Sequence[str], report: SyncReport) -> None:
        """Fetch the server rows of parked pulled rows ``ids`` again and apply them.

        Each answer's rows are un-parked as they are applied (one that fails again is parked
        again); a failed fetch raises and leaves the rest parked: the cursor is past them and
        nothing else would fetch them. Ids the server no longer has are un-parked too.
        """
        for i in range(0, len(ids), FETCH_CHUNK):
            part = ids[i : i + FETCH_CHUNK]
            left = set(part)
            for rows in self._fetch_pages(part):
                if not rows:
                    continue
                self._apply_rows(rows, report, unpark=[r.id for r in rows])
                left.difference_update(r.id for r in rows)
                # Below the cursor: the next record append must reach them.
                with self.store.index.write() as cur:
                    st.lower_base_record_mark(cur, min(r.seq for r in rows) - 1)
            if left:
                # There is nothing to apply.
                self._apply_rows([], report, unpark=sorted(left))

    def _rerun_unblocked(self, report: SyncReport) -> None:
        """Apply again the server rows parked for a reason on this device once it is gone: the
        blueprint's own file did not parse (``unparsable_local``, see
        ``Applier._wait_for_parse``) and parses again, or a file that cannot be indexed held the
        row's path (``path_blocked``) and was fixed, moved or removed (``path_unblocked``).

        An edit made meanwhile raises the op id and its push meets the server's row (the entry
        goes with that newer base). A file fixed back to exactly its last synced text raises
        none: nothing is pushed, so the parked row (a delete, a newer revision) never ran again
        and the replicas stayed apart until someone ran ``--retry-quarantined``. Re-applying it
        here takes it as a delta pull would: the delete applies to an unedited copy, an edit
        still beats it. A blocked path's row had nothing else to bring it back either (the
        cursor is past it). One read of the quarantine per cycle (and a few lstats per
        ``path_blocked`` row); a fetch only for such rows whose reason is gone.
        """
        with self.store.index.read() as cur:
            ids = st.parked_unblocked(cur, lambda path: path_unblocked(self.store, cur, path))
            pushes = st.parsed_push_parks(cur)
        if pushes:
            # A push parked because its file did not parse where the server's blueprint wants
            # the path (_path_taken): a file fixed back to exactly its recorded text raises no
            # op id. The row parked for that path (below) usually moves it aside (a new op id),
            # but not when no row is parked (the server's blueprint is held here at another
            # path), and a file deleted instead left the entry listed for good. Un-parked, it
            # goes up in this cycle's next push round.
            with self.store.index.write() as cur:
                for blueprint_id in st.parsed_push_parks(cur):
                    st.unquarantine(cur, blueprint_id)
        if ids:
            self._refetch_parked(ids, report)

    # -- full reconcile (below the tombstone horizon) ----------------------------------------------

    def _server_rows(self) -> dict[str, VerifyRow]:
        rows: dict[str, VerifyRow] = {}
        after: str | None = None
        while True:
            page = self._call(self.remote.verify, after)
            for row in page.rows:
                rows[row.id] = row
            if not page.more or page.next is None:
                return rows
            after = page.next

    def _full_reconcile(self, horizon: int, report: SyncReport) -> None:
        """Rebuild server knowledge from ids and hashes instead of an unsafe delta.

        Rows at or below the horizon come by verify + fetch; rows above it come by the delta pull
        that follows (from cursor = horizon). Known ids the server no longer has were deleted
        there and their tombstones purged: deleted here too unless edited here (edit beats
        delete), in which case they are pushed again as creates.
        """
        log.warning("sync: cursor is below the tombstone horizon %d; full reconcile", horizon)
        server = self._server_rows()
        with self.store.index.read() as cur:
            known = st.known_server_ids(cur)
            seen = {i: item.base_seq for i in known if (item := st.get_item(cur, i)) is not None}
        self._vanished(sorted(known - server.keys()), report)
        self._drop_parked_gone(server.keys())
        stale = sorted(
            v.id for v in server.values() if v.seq <= horizon and seen.get(v.id) != v.seq
        )
        for i in range(0, len(stale), FETCH_CHUNK):
            for rows in self._fetch_pages(stale[i : i + FETCH_CHUNK]):
                self._apply_rows(rows, report)
                report.pulled += len(rows)
        with self.store.index.write() as cur:
            st.set_state(cur, "cursor", str(horizon))
            st.set_state(cur, "horizon", str(horizon))

    def _drop_parked_gone(self, on_server: Collection[str]) -> None:
        """Drop parked server rows (direction ``pull``) that the server no longer has and this
        device does not hold: deleted there, their tombstones purged, so nothing is left to
        store or retry. A parked row has no base, so ``_vanished`` never sees it, and its
        tombstone, which drops it in a delta pull, will not come: it stayed listed for good."""
        with self.store.index.read() as cur:
            parked = [
                e.id for e in st.quarantined(cur) if e.direction == "pull" and e.id not in on_server
            ]
        gone = [i for i in parked if (row := _row_or_none(self.store, i)) is None or row.deleted]
        if gone:
            with self.store.index.write() as cur:
                for blueprint_id in gone:
                    st.drop_pull_parked(cur, blueprint_id)

    def _vanished(self, ids: Sequence[str], report: SyncReport) -> None:
        # An edit of one of them that no watcher recorded beats the delete: committed first,
        # judged before its own write (BlueprintStore._record_edits_first), its row is dirty
        # below and pushed again as a create. Met by the delete inside this transaction, it was
        # judged holding the write lock, and the delete's refusal (ChangedOnDiskError) undid
        # the whole transaction, the edit's recording with it: every later pass failed so.
        rows = [_row_or_none(self.store, blueprint_id) for blueprint_id in ids]
        self.store._record_edits_first(
            [row.path for row in rows if row is not None and not row.deleted], "external"
        )
        with self.store.index.write() as cur:
            known = len(st.known_server_ids(cur))
            # Safety valve: a server that lost most rows at once (restored, wiped) must not
            # delete this device's data; re-upload instead and say so.
            wipe = len(ids) > 10 and len(ids) * 2 > known
            for blueprint_id in ids:
                item = st.get_item(cur, blueprint_id)
                row = _row_or_none(self.store, blueprint_id)
                synced = item.synced_op_id if item else 0
                if row is not None and not row.deleted and row.flagged and not wipe:
                    # Its file does not parse: an edit in progress (a flag bumps no op id, so
                    # it looks clean). A delta pull parks such a delete and leaves the file
                    # alone (Applier._wait_for_parse); deleting it here took the half-typed edit
                    # from under the person's editor. Kept: once it parses it is an edit, and
                    # with the server row forgotten below it goes up as new (edit beats delete).
                    report.errors.append(
                        _row_error(
                            row.path,
                            f"does not parse here ({row.flagged}) and was deleted on the "
                            "server meanwhile; the file is kept: fix it (it then goes up again "
                            "as new) or delete it",
                        )
                    )
                elif row is not None and not row.deleted and row.op_id <= synced and not wipe:
                    self.store.delete(blueprint_id, origin="remote")
                    st.mark_synced(cur, blueprint_id, st.current_op_id(cur, blueprint_id))
                st.forget_server_row(cur, blueprint_id)
                if wipe and row is not None and not row.deleted:
                    st.mark_unsynced(cur, blueprint_id)
                # Pushed again as a create: under a fresh op id, never a replay of an old answer.
                self._renew(cur, blueprint_id)
            if wipe:
                report.errors.append(
                    f"the server no longer has {len(ids)} of {known} known blueprints; "
                    "they were kept here and will be uploaded again"
                )
