"""The answers to a push batch: accepted changes recorded as bases, conflicts merged, rejections
parked in quarantine, and the special cases (a path taken on the server, an id that belongs to
another user, an op id already used, a blueprint that is the server's own come early).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from localstore import _late_meta as late_meta
from localstore import files as fs
from localstore._identity import replace_device_id
from localstore.blueprint import BlueprintMeta, decode_meta, encode_meta, new_id, sha256_hex
from localstore.errors import InvalidInputError
from localstore.index import WriteOutcome
from sync import _state as st
from sync._apply import Applier, ApplyStats, UnparsedInTheWay, conflict_path, utc_stamp
from sync._engine_apply import _row_error, _row_or_none
from sync._engine_pull import _EnginePull
from sync._local import SyncReport
from sync._shown import shown
from sync.errors import ProtocolError
from sync.remote import Change, PushResult, RevisionMatch, ServerRow

log = logging.getLogger("sync.engine")


class _EngineResults(_EnginePull):
    """Handle the results of one push batch in one index transaction."""

    def _handle_results(
        self,
        pairs: Sequence[tuple[Change, st.OutboxItem]],
        results: Sequence[PushResult],
        report: SyncReport,
    ) -> int:
        stats = ApplyStats()
        ancestors = self._conflict_ancestors(results)
        applier = Applier(self.store, self.policy, now=self.now, stats=stats, ancestors=ancestors)
        current = [r.current for r in results if r.current is not None]
        # The app's validator on the conflicts' rows and merges, before the write lock.
        applier.judge_ahead(current)
        self._journal(current)
        with self._detours_kept() as outcome, self.store.index.write(outcome) as cur:
            st.journal_clear(cur)
            self._record_accepted(cur, pairs, results, report)
            self._use_up_detours(cur, pairs, results)
            conflicts, reused, foreign = self._settle_refused(cur, applier, pairs, results, report)
            # In the transaction that raised the op counter: committed after it, a kill in
            # between left the counter above the server's highest op and the id as it was, and
            # no later push met a used op id again (a home sharing the id kept it for good).
            given_up = self._new_device_id() if reused else None
        self._finish_apply(stats, report)
        if given_up is not None:
            log.warning(
                "sync: the server holds other changes under this home's device id %s (a home "
                "restored from a backup, or a copy of another home); it pushes as %s from now on",
                given_up,
                self.store.device_id,
            )
        for change, item in foreign:
            self._take_new_id(change, item, report)
        return conflicts

    def _conflict_ancestors(self, results: Sequence[PushResult]) -> dict[str, RevisionMatch]:
        """One lookup for the batch: conflicts of creates this device holds without a base."""
        return self._ancestors(
            [
                r.current
                for r in results
                if r.status == "conflict" and r.reason != "path_taken" and r.current is not None
            ]
        )

    def _record_accepted(
        self,
        cur: Any,
        pairs: Sequence[tuple[Change, st.OutboxItem]],
        results: Sequence[PushResult],
        report: SyncReport,
    ) -> None:
        """Record the batch's accepted changes as their bases.

        Accepted changes first, in three statements for the batch: they touch only their own
        sync rows, so the order against the conflicts handled after them does not matter.
        """
        accepted = [
            _accepted(change, item, result)
            for (change, item), result in zip(pairs, results, strict=True)
            if result.status == "applied"
        ]
        st.record_accepted(cur, accepted)
        report.pushed += len(accepted)

    def _use_up_detours(
        self,
        cur: Any,
        pairs: Sequence[tuple[Change, st.OutboxItem]],
        results: Sequence[PushResult],
    ) -> None:
        """Drop the detours of the batch's changes; one applied at its passing path stays dirty."""
        for (change, item), result in zip(pairs, results, strict=True):
            detoured = self._detours.pop(change.id, None) is not None
            if detoured and result.status == "applied" and change.path != item.path:
                # The detour is used up either way. Applied, the blueprint is at its
                # passing path on the server: still dirty, its own path goes up in the next
                # round under its own push op id (the detour had one of its own, so a kill
                # before this commit leaves that one unused: the push of the own path then
                # meets the detour's row, this device's write, and keeps its path).
                st.mark_unsynced(cur, change.id)

    def _settle_refused(
        self,
        cur: Any,
        applier: Applier,
        pairs: Sequence[tuple[Change, st.OutboxItem]],
        results: Sequence[PushResult],
        report: SyncReport,
    ) -> tuple[int, bool, list[tuple[Change, st.OutboxItem]]]:
        """Handle the batch's changes the server did not apply: merge conflicts, quarantine
        rejections, renew a reused op id.

        Returns the number of conflicts, whether an op id was reused, and the creates refused
        for an id another user owns (never synced under this id: ``_take_new_id`` after the
        transaction).
        """
        conflicts = 0
        reused = False
        foreign: list[tuple[Change, st.OutboxItem]] = []
        for (change, item), result in zip(pairs, results, strict=True):
            if result.status == "applied":
                continue
            if result.code == "not_owner" and item.base_rev is None and not change.deleted:
                foreign.append((change, item))  # never synced under this id: _take_new_id
            elif result.status == "rejected" and result.code == "op_id_reused":
                self._reused_op(cur, change, result)
                reused = True
            elif result.status == "rejected":
                self._quarantine_push(
                    cur, change, item, result.code or "rejected", result.message or "", report
                )
            else:
                conflicts += 1
                self._push_conflict(cur, applier, change, item, result, report)
        return conflicts, reused, foreign

    @contextmanager
    def _detours_kept(self) -> Iterator[WriteOutcome]:
        """Put the detours back as they were when the transaction (given the outcome yielded)
        rolls back.

        They follow the transaction: one added in it holds an op id drawn in it, which the
        rollback hands out again (the next change of this device drew it too, and one of the
        two pushes met ``op_id_reused``: a new device id for nothing, and one more round); one
        used up in it is still to be pushed.
        """
        kept = dict(self._detours)
        outcome = WriteOutcome()
        try:
            yield outcome
        except BaseException:
            if not outcome.done:  # (done: an interrupt after the COMMIT; they are as committed)
                self._detours = kept
            raise

    def _take_new_id(self, change: Change, item: st.OutboxItem, report: SyncReport) -> None:
        """Give a blueprint the server refused as another user's (``not_owner``) an id of its own.

        Only for one this device never synced (no server base): its id came from elsewhere, most
        likely a bundle another user of the same project exported (an import keeps ids, and ids
        are unique across the project, not per user). Quarantining it, as before, refused every
        later edit too: it never synced. It is done the way reconcile treats a copied pair: the
        meta file gets a new id and reconcile records that, the old id as deleted (its history
        stays under that id; never on the server, its delete is not pushed) and the new one as
        created, which the next push sends as new. A kill between the two leaves a meta file the
        next reconcile records the same way. If the files no longer hold that blueprint (moved,
        deleted, being edited), the change is quarantined as any rejection.
        """
        local = self.store.row_by_id(change.id)
        fresh: str | None = None
        if local is not None and not local.deleted and not local.flagged:
            meta_path = self.store.abspath(fs.meta_path_for(local.path))
            try:
                raw, seen = fs.read_regular_seen(meta_path)
                meta = decode_meta(raw, source=str(meta_path))
            except (FileNotFoundError, InvalidInputError):
                meta = None
            if meta is not None and meta.id == change.id:
                fresh = new_id()
                try:
                    # Only over the meta file read: an edit saved since (a name typed in) was
                    # replaced unrecorded by the plain rename. Being edited: quarantined below.
                    fs.write_checked(meta_path, encode_meta(meta.replace(id=fresh)), seen)
                except fs.TargetChangedError as changed:
                    self.store._keep_set_aside(changed.set_aside, str(meta_path))
                    fresh = None
                from localstore._reconcile import Reconciler

                Reconciler(self.store, origin="merge").ingest_path(local.path)
        if fresh is None or self.store.row_by_id(fresh) is None:
            with self.store.index.write() as cur:
                self._quarantine_push(
                    cur, change, item, "not_owner", "id belongs to another user", report
                )
            return
        message = (
            f"{change.path}: its id {change.id} belongs to another user of this project (an "
            f"imported bundle keeps ids); it now has the new id {fresh} and is pushed as new"
        )
        report.errors.append(message)
        log.warning("sync: %s", message)

    @staticmethod
    def _quarantine_push(
        cur: Any, change: Change, item: st.OutboxItem, code: str, message: str, report: SyncReport
    ) -> None:
        """Park a change the server refused (the outbox skips it until a new edit or a retry)."""
        st.quarantine(cur, change.id, item.op_id, change.path, "push", code, message)
        report.count_quarantined(change.id)
        log.warning("sync: %s quarantined: %s", change.path, message)

    def _push_conflict(
        self,
        cur: Any,
        applier: Applier,
        change: Change,
        item: st.OutboxItem,
        result: PushResult,
        report: SyncReport,
    ) -> None:
        if result.reason == "missing":
            # The server has no such row (purged, or a fresh project): push it as a create.
            if change.deleted:
                st.mark_synced(cur, change.id, item.op_id)
            st.forget_server_row(cur, change.id)
            self._renew(cur, change.id)
            return
        current = result.current
        if current is None:
            raise ProtocolError(f"push conflict {result.reason!r} without the current row")
        if result.reason == "path_taken":
            self._path_taken(cur, applier, change, current, report)
            return
        self._apply_one(cur, applier, current, report)

    def _path_taken(
        self,
        cur: Any,
        applier: Applier,
        change: Change,
        winner: ServerRow,
        report: SyncReport,
    ) -> None:
        # If the holder is one of ours that is leaving that path (a later op of this push, or
        # the next pass), the collision is an ordering artefact: retry next round instead of
        # moving anything. Only if its move will really go up: one held back (it fails the
        # validator) or parked in quarantine keeps the path taken on the server, and retrying
        # would refuse this change every round of every cycle with nothing to show for it.
        holder = _row_or_none(self.store, winner.id)
        leaving = holder is not None and (
            holder.deleted or fs.path_key(holder.path) != fs.path_key(change.path)
        )
        local = _row_or_none(self.store, change.id)
        if local is not None and not local.deleted and change.path != local.path:
            # A passing path (below) someone else took first: try again without it, nothing
            # is moved (the blueprint is not at that path here).
            self._renew(cur, change.id)
            return
        if leaving and st.pushable(cur, winner.id):
            if winner.id not in self._detours and self._rename_cycle(cur, change.id, winner.id):
                # Each rename of the cycle waits for the next to leave its path: none ever
                # goes up. This one passes through a free path first; the others then follow
                # in order, and it goes to its own path last. (The op id is drawn in the
                # batch's transaction: a rollback drops the detour too, _detours_kept.)
                passing = self._passing_path(change.path)
                self._detours[change.id] = (passing, self.store.index.next_op_id(cur))
            self._renew(cur, change.id)
            return
        # (Not when the holder is live here at another path, its move held back: the server's
        # meta put beside this YAML would be that blueprint's, live elsewhere; reconcile gave
        # the YAML its own id back, and the push met the same path every round of every cycle.)
        live_here = holder is not None and not holder.deleted
        if not live_here and self._arrived_early(cur, applier, change, winner):
            return
        try:
            applier.move_for_path_conflict(cur, change.id, winner)
        except UnparsedInTheWay as exc:
            # Its file does not parse here (an edit in progress): the store will not move it,
            # and raising stopped every cycle here, nothing else synced. Parked at its current
            # op id (a flag bumps none): an edit un-parks it, and so does the file parsing again
            # as it was or its delete (_rerun_unblocked). It is then moved aside as usual, and
            # the pulled row that wants its path (parked as path_blocked meanwhile) is stored.
            op_id = st.current_op_id(cur, change.id)
            st.quarantine(cur, change.id, op_id, change.path, "push", "unparsable_local", str(exc))
            report.count_quarantined(change.id, _row_error(change.path, str(exc)))
            log.warning("sync: %s quarantined: %s", shown(change.path), exc)

    def _rename_cycle(self, cur: Any, start: str, holder: str) -> bool:
        """True when the renames of this device lead from ``holder`` back to ``start``.

        ``start`` wants the path the server gives ``holder``; ``holder`` wants the path the
        server gives the next one (as this device last synced it), and so on. A chain that ends
        at a free path or at a blueprint staying where it is resolves by itself, in order.
        """
        seen = {start}
        current = holder
        while current not in seen:
            seen.add(current)
            row = self.store.row_by_id(current, cur)
            if row is None or row.deleted or not st.pushable(cur, current):
                return False
            nxt = st.server_holder(cur, row.path)
            if nxt is None or nxt == current:
                return False
            current = nxt
        return current == start

    def _passing_path(self, path: str) -> str:
        """A free path next to ``path`` for one push: ``stem (moving <device> <stamp>)``."""
        return conflict_path(
            path,
            self.store.device_name,
            utc_stamp(self.now()),
            lambda p: self.store.exists(p) or p in {d[0] for d in self._detours.values()},
            word="moving",
        )

    def _arrived_early(self, cur: Any, applier: Applier, change: Change, winner: ServerRow) -> bool:
        """Give the server's identity to a blueprint that is the server's own, come early.

        A YAML that a file sync tool (or a piecewise copy) brought here before its meta got a
        meta made up by reconcile (localstore/_late_meta.py); pushed under that id before the
        real meta came, it meets the server's row at its path. Never synced, exactly the
        server's content at exactly that path, and a meta nobody described: it is that row.
        Moving it to a conflict copy, as any other, made a copy of identical content with a
        conflict record on every device. The server's meta is written in the made-up one's
        place and reconcile retires the made-up id (never pushed: its delete is settled
        unsent) and records the server's, which the pull of this pass then finds equal. The
        YAML is not touched (a file sync tool would otherwise see a delete or a change). A
        pass that rolls back leaves that meta file: the next reconcile records the same, or the
        next pass's collision move does (its ingest retires the id; nothing is moved). The
        caller rules out a server row live here elsewhere; files changed since they were
        recorded (an edit the watcher has yet to see) are not replaced either.
        """
        found = self._servers_own(cur, applier, change, winner)
        if found is None:
            return False
        local, meta = found
        if not self._meta_replaced(local, meta):
            return False
        return self._made_up_id_retired(cur, local, winner)

    def _servers_own(
        self, cur: Any, applier: Applier, change: Change, winner: ServerRow
    ) -> tuple[Any, BlueprintMeta] | None:
        """The local row and the server's meta when the pushed blueprint is ``winner`` come
        early (see ``_arrived_early``), else None."""
        local = _row_or_none(self.store, change.id)
        if (
            local is None
            or local.deleted
            or change.base_rev is not None
            or local.path != winner.path
            # (The YAML's bytes: the content hash covers the meta, whose id differs.)
            or local.yaml_sha256 != sha256_hex(winner.content.encode("utf-8"))
        ):
            return None
        found = late_meta.made_up(cur, local)
        if found is None or found.described or not applier.as_indexed(local):
            # (Files changed since they were recorded: a name or tags typed into the meta file
            # that the watcher has yet to see were replaced by the server's meta unrecorded.
            # The path collision's move records them first.)
            return None
        try:
            meta = BlueprintMeta.from_dict(winner.meta, source=f"the server's meta of {winner.id}")
        except InvalidInputError:
            return None
        if meta.id != winner.id:
            return None
        return local, meta

    def _meta_replaced(self, local: Any, meta: BlueprintMeta) -> bool:
        """Write the server's ``meta`` over the made-up meta file of ``local``; False when that
        file changed since it was recorded (set aside, nothing written)."""
        meta_abs = self.store.abspath(fs.meta_path_for(local.path))
        recorded = (local.meta_size, local.meta_mtime_ns, local.meta_ctime_ns, local.meta_ino)
        try:
            # Only over the meta file as_indexed found: a name typed in after that look was
            # replaced unrecorded by the plain rename. The collision's move records it first.
            fs.write_checked(meta_abs, encode_meta(meta), recorded)
        except fs.TargetChangedError as changed:
            self.store._keep_set_aside(changed.set_aside, str(meta_abs))
            return False
        return True

    def _made_up_id_retired(self, cur: Any, local: Any, winner: ServerRow) -> bool:
        """Reconcile the pair under the server's meta; whether that retired the made-up id."""
        from localstore._reconcile import Reconciler

        rec = Reconciler(self.store)
        rec.ingest_locked(cur, local.path, trust_stat=False)
        self.store.events.publish(rec.events)
        after = self.store.row_by_id(local.id, cur)
        if after is not None and not after.deleted:
            # Reconcile did not retire the made-up id (the files changed again in between):
            # taken as done, it stayed live beside the meta written here. The collision's
            # move records the files first and moves what is still this blueprint aside.
            log.warning(
                "sync: %s: the server's meta of %s written in place of the one made up for it "
                "was not adopted; it is treated as a path collision",
                local.path,
                winner.id,
            )
            return False
        log.info(
            "sync: %s is the server's %s brought here before its meta; the id %s made up for it "
            "is retired",
            local.path,
            winner.id,
            local.id,
        )
        return True

    def _reused_op(self, cur: Any, change: Change, result: PushResult) -> None:
        """Push again a change whose op id this device had already used for another change.

        The op counter went back (the index was restored from a backup) or another home pushes
        under this device id (a copy made before copies took ids of their own): the server
        answers ``op_id_reused`` with the highest op id it holds for this device instead of
        replaying the other change's answer. The counter jumps above it and the change gets a
        fresh op id; it stays dirty and goes up in the next round. Quarantining it would wait
        for a person for nothing; taking the replayed answer, as before, lost the change.
        """
        high = result.max_op_id if result.max_op_id is not None else change.op_id
        self.store.index.raise_op_counter(cur, max(high, change.op_id))
        self._renew(cur, change.id)
        log.info(
            "sync: op id %d of this device was already used for another change on the server "
            "(a home restored from a backup?); %s goes again above op id %d",
            change.op_id,
            change.path,
            high,
        )

    def _new_device_id(self) -> str:
        """Push under a new device id from now on: another home may share this one.

        An ``op_id_reused`` answer means another change was pushed under this device id and op
        id: this home went back in time (a restore) or is a copy of another live home that
        shares its id (copied before copies took ids of their own, localstore._identity). In
        the second case the merge would also take the other home's writes for this one's own
        (its own-device checks), so the id is replaced, as a copy's would be at open; after a
        restore that is harmless. In the batch's own transaction, after its rows: the raised op
        counter and the new id commit together, so a rolled-back batch leaves the id as it was,
        and a kill cannot keep the one without the other (afterwards the counter is above the
        server's ops and no later push meets a used op id: the shared id stayed for good).
        Returns the id given up.
        """
        old = self.store.device_id
        replace_device_id(self.store.index, new_id)  # (store.device_id reads it from the index)
        return old


def _accepted(change: Change, item: st.OutboxItem, result: PushResult) -> st.Accepted:
    if result.rev is None or result.seq is None:
        raise ProtocolError(f"push result for op {result.op_id} is applied without rev and seq")
    # The pushed text is the local revision with this hash: the base is kept as that hash.
    return st.Accepted(
        change.id,
        result.rev,
        result.seq,
        item.content_hash,
        change.path,
        change.deleted,
        item.op_id,
    )
