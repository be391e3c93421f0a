"""Apply server rows to the local store: clean takes, the merge ladder, keep-both, edit beats delete.

One ``Applier`` serves one sync pass. Every method runs inside the caller's index write
transaction (``store.index.write()`` is nestable), so a file change and the sync bookkeeping that
says "this device now builds on server rev N" commit together: a kill between them leaves files
newer than the index, which reconcile-on-open ingests as a local change, which the next pass
resolves against the same server row (local equals remote) without losing anything.

Decisions, by local state (dirty = changed since the last recorded match with the server):

* clean or absent: take the server row (write, move, delete) with ``origin="remote"``.
* dirty delete vs remote edit: the edit wins; the blueprint is revived with the remote content.
* dirty edit vs remote delete: the edit wins; the tombstone becomes the base and the next push
  (``base_rev`` = tombstone rev) revives it on the server.
* both live: ``sync.merge.resolve`` with base = the stored content at ``base_rev``; with no base
  (an index rebuilt by ``check --fix``, an imported bundle), a local copy the server's history
  holds (:func:`ancestor_probes`) is that revision, so the server's newer version is simply
  taken. Keep-both
  gives the server version the id and path and makes the local version a new blueprint at a
  conflict path, plus a conflict record.
* an incoming path held locally by another id: the server row keeps the path, the local one moves
  to a conflict path (and is pushed again).
* a live row at a path this home never scans (a hidden folder, an ignored name): recorded as the
  base but not held here; a local edit is kept as a conflict copy, the local copy removed, and
  the row parked as ``unscanned_path`` (see ``Applier._out_of_view``).

``Applier`` is built in layers, each a module (the linear chain ``sync.engine`` uses):
``_apply_reads`` (its state and what it reads of local copies and bases) <- ``_apply_writes``
(writing a server row, making room for it) <- ``_apply_cases`` (the decisions above) <- this
module (the entry points the engine calls). Module-level helpers: ``_apply_paths`` (conflict
paths and ids, path merges and shapes), ``_apply_rows`` (server rows before they are applied)
and ``_apply_policy`` (an app's policy, contained). Their names are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from localstore import files as fs
from localstore.blueprint import BlueprintMeta
from localstore.errors import InvalidInputError, UnsafePathError
from localstore.store import JUDGED_AHEAD, Row
from sync import _state as st
from sync._apply_cases import _ApplierCases
from sync._apply_paths import (  # noqa: F401  (re-exported: the engine imports them from here)
    canonical_path,
    conflict_path,
    copy_id_for,
    is_path_shape_error,
    merge_path,
    path_unblocked,
    utc_stamp,
)
from sync._apply_policy import (  # noqa: F401  (re-exported: the engine imports them from here)
    contained,
)
from sync._apply_reads import (  # noqa: F401  (re-exported: the engine imports them from here)
    ApplyStats,
)
from sync._apply_rows import (  # noqa: F401  (re-exported: the engine imports them from here)
    Prefetched,
    ancestor_probes,
    drop_known,
    is_known,
    refuse_unreadable,
    stored_meta,
)
from sync._apply_writes import (  # noqa: F401  (re-exported: the engine imports them from here)
    UnparsedInTheWay,
)
from sync.merge import Version, merge
from sync.remote import ServerRow

# The most verdicts one merge remembers: the line step's result, the block merge's, the
# structural result (Applier.judge_ahead stops before one could push out another's).
_MERGE_VERDICTS = 3


class Applier(_ApplierCases):
    """Applies server rows to one store inside the caller's write transaction."""

    # -- entry points --------------------------------------------------------------------------

    def judge_ahead(self, rows: Sequence[ServerRow]) -> None:
        """Run the app's validator on what applying ``rows`` will save, before the caller takes
        the write lock: a slow validator inside the pass's transaction held every other
        process's writes to the home up (and past their busy timeout they failed).

        Judged: each live row's text (a clean take's save, the server's side of a merge), and
        for a row whose local copy has unpushed edits, the local text (kept by a merge or as a
        conflict copy) and what the merge ladder makes of the three versions, read here as
        ``_three_way`` will read them inside. The verdicts are remembered by the bytes judged
        (BlueprintStore._judge_ahead), so the saves and the merge inside use them only for the
        very same texts: anything changed in between is judged again inside, as before. A
        callable policy is not asked here (it is the app's code, asked once, inside); what it
        returns of its own is judged inside.
        """
        store = self.store
        if self._judge is None or not rows:
            return
        texts: list[str] = []
        merges: list[tuple[Version | None, Version, Version]] = []
        with store.index.read() as cur:
            items = st.items_for(cur, [r.id for r in rows])
            for r in rows:
                item = items.get(r.id)
                if is_known(item, r):
                    continue  # apply_row skips it
                if r.deleted:
                    # A delete meets an edit no watcher recorded: the edit is ingested (and
                    # kept) first; nothing else of the row is saved.
                    gone = self._unrecorded_text(self._local_row(r.id, cur))
                    texts.extend([gone] if gone is not None else [])
                    continue
                if r.unreadable is not None:
                    continue  # apply_row refuses it (refuse_unreadable): nothing is saved
                texts.append(r.content)
                local = self._local_row(r.id, cur)
                # An edit on disk no watcher has recorded yet: apply_row ingests it first (see
                # _fresh), and a blueprint in the row's way is moved aside with its edit.
                unrecorded = self._unrecorded_text(local)
                holder = self._live_row_at(cur, r.path)
                if holder is not None and (local is None or holder.id != local.id):
                    texts.extend(t for t in [self._unrecorded_text(holder)] if t is not None)
                elif holder is None:
                    # A file an editor put at the row's path that no row describes yet: the
                    # save records it first (BlueprintStore._ingest_first) and moves it aside.
                    texts.extend(t for t in [self._unindexed_text(r.path)] if t is not None)
                synced = item.synced_op_id if item is not None else 0
                if unrecorded is not None and local is not None:
                    texts.append(unrecorded)
                elif local is None or local.deleted or local.flagged or local.op_id <= synced:
                    continue  # a clean take: only the server's text is saved
                local_text = unrecorded if unrecorded is not None else self._text(cur, local)
                local_v = Version(local_text, json.loads(local.meta_json))
                texts.append(local_v.content)
                match = self._ancestor(local, item, r)
                base = (
                    st.Base(match.rev, match.path, local_v.content, dict(local_v.meta))
                    if match is not None
                    else self._find_base(cur, local.id, item, r)
                )
                base_v = Version(base.content, dict(base.meta)) if base is not None else None
                merges.append((base_v, local_v, Version(r.content, dict(r.meta))))
        room = JUDGED_AHEAD - store._judge_texts_ahead(texts)
        if not (callable(self.policy) or self.policy == "merge"):
            return  # the other policies never run the ladder past "one side changed"
        for base_v, local_v, remote_v in merges:
            if room < _MERGE_VERDICTS:
                break  # the memo keeps no more for certain: the rest are judged inside
            before = store._judged_count
            merge(base_v, local_v, remote_v, validator=store.validator, judge=self._judge)
            room -= store._judged_count - before

    def apply_row(self, cur: Any, r: ServerRow, *, force: bool = False) -> None:
        """Bring one server row into the store (a pulled row or a push conflict's current row).

        Raises InvalidInputError (and subclasses) when the row cannot be stored here; the caller
        parks it in quarantine (also a StorageError that :func:`is_path_shape_error` accepts).
        Other storage errors propagate: the pass stops, nothing is skipped. ``force`` (a
        quarantine retry) applies a live row this device knows but does not hold (one at a path
        it does not scan, see :meth:`_out_of_view`) again, in case that changed here.
        """
        item = st.get_item(cur, r.id)
        known = is_known(item, r)
        if known and not force:
            return  # already known: our own push coming back, or a replayed page
        local = self._local_row(r.id, cur)
        if known and (r.deleted or (local is not None and not local.deleted)):
            return  # held here as the server has it: nothing to retry
        away: UnsafePathError | None = None
        if not r.deleted:
            # Everything that can refuse the row, before anything is written (a path moved
            # aside, a conflict copy). A refused row's savepoint puts back the files the store
            # wrote for it too (Index.undo_on_rollback), but refusing first writes nothing, and
            # leaves nothing for a kill during the undo to strand (reconcile would adopt such
            # files as new blueprints).
            away = self._check_row(r, local)
        if away is not None and local is not None and not local.deleted and local.flagged:
            raise away  # an unparsable local file: parked, and the file left exactly as it is
        if local is not None and not local.deleted:
            local = self._fresh(local) or local
        synced = item.synced_op_id if item is not None else 0
        dirty = local is not None and local.op_id > synced
        if away is not None:
            self._out_of_view(cur, local, item, r, away, dirty=dirty)
            return
        if local is not None and local.deleted and not dirty and self._lost_own_push(item, r):
            # The delete was settled as "never on the server", yet the row is there: it pushes
            # now on this base (taking the row would bring back what this device deleted).
            self._record(cur, r, synced=False)
            st.mark_unsynced(cur, r.id)
            return
        if local is not None and not local.deleted and local.flagged:
            self._wait_for_parse(cur, local, r)
            return
        if local is None or not dirty:
            self._take_clean(cur, local, r)
        elif local.deleted:
            self._local_delete_vs(cur, local, item, r)
        elif r.deleted:
            self._local_edit_vs_delete(cur, local, item, r)
        else:
            self._three_way(cur, local, item, r)

    def plan_clean_save(
        self,
        r: ServerRow,
        known: Prefetched,
        taken_ids: set[str],
        taken_keys: set[str],
    ) -> tuple[Any, str] | None:
        """A ``SaveRequest`` and its path key for a row that needs no decision, or None.

        None sends the row through :meth:`apply_row`. Only rows whose local copy is absent or
        clean and unchanged on disk, whose path is canonical and free here and not used by
        another row of the same batch, qualify: the batch then saves them together with few disk
        flushes. ``known`` is the local state read for this row's window before the run's saves.
        The caller records their bases (:func:`sync._state.record_synced_bases`) in the same
        transaction once the batch is saved; a hook per row cost three statements per row.

        The meta is validated here (the store takes a ``BlueprintMeta`` as it is); the path is
        validated by the store (see :func:`canonical_path`). Either way a bad row is quarantined,
        never written.
        """
        if self._request_type is None or r.deleted or r.id in taken_ids or r.unreadable:
            return None  # (an unreadable row: apply_row parks it, see refuse_unreadable)
        item = known.items.get(r.id)
        if is_known(item, r):
            return None  # already known: apply_row skips it at once
        local = known.local(r.id)
        if local is not None and not self._clean_and_settled(local, item):
            return None
        if local is not None and local.deleted and self._lost_own_push(item, r):
            return None  # apply_row pushes the local delete instead (see there)
        if not canonical_path(r.path):
            return None  # apply_row normalizes it (and records the server's path as the base)
        key = fs.path_key(r.path)
        holder = known.live.get(key)
        if key in taken_keys or (holder is not None and holder != r.id):
            return None
        try:
            meta = BlueprintMeta.from_dict(stored_meta(r), source=f"server row {r.id}")
        except InvalidInputError:
            return None  # apply_row reports it
        if meta.id != r.id:
            return None
        self.stats.applied += 1
        return self._request_type(r.path, r.content, meta=meta, id=r.id), key

    def _lost_own_push(self, item: st.ItemState | None, r: ServerRow) -> bool:
        """True when live row ``r`` is this device's own write that it never heard back about.

        A push whose response was lost (a kill, a dropped connection) leaves no base: the engine
        then settles a later local delete without pushing it (nothing to delete on the server,
        as far as it knows), and the row comes back in the next pull.
        """
        return (
            not r.deleted
            and r.device == self.store.device_id
            and (item is None or item.base_rev is None)
        )

    def _clean_and_settled(self, local: Row, item: st.ItemState | None) -> bool:
        if local.flagged or local.op_id > (item.synced_op_id if item is not None else 0):
            return False
        return local.deleted or self._fresh(local, ingest=False) is local

    def as_indexed(self, local: Row) -> bool:
        """Whether ``local``'s files are as the index recorded them (no edit unrecorded yet)."""
        return self._fresh(local, ingest=False) is local
