"""Pushing the outbox: passes over the dirty rows in batches bounded by count and bytes, calls the
server refuses as too large or too slow split in halves, a change refused alone parked or
retried, and the pull first when the cursor is below the horizon.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from sync import _state as st
from sync._engine_core import _check_results
from sync._engine_results import _EngineResults
from sync._local import SyncReport
from sync.errors import AuthError, ProtocolError, SyncError, TransientError
from sync.remote import SPLIT_CODES, Change

log = logging.getLogger("sync.engine")

# The SQLSTATE of a push refused whole for a bad argument, among them more changes than the
# server's max_batch ("too many changes"). Which of them it was is told by server_info asked again
# (see _refused_for_limits), never by the message's text.
REFUSED_CALL_CODE = "22023"
# A change that times out (57014) alone this many cycles in a row is parked as too large; one
# timeout alone can be a busy server (another device's push holding the owner lock).
LONE_TIMEOUTS = 3
# What the user can do about a change refused alone for a limit other than size or time
# (SQLSTATE class 54 but 54000; 54001: nested past the server's stack depth): the same text is
# refused the same way every time, so only another text (or the server's limit) helps.
_TOO_COMPLEX_FIX = (
    "simplify it (a less deeply nested meta) and save it again, or ask the project's owner to "
    "raise that server limit"
)
# A change smaller than this that times out alone is never counted towards parking: the server
# parses and writes far more than that per second, so the timeout was the server (busy, slow,
# its lock held), not the change; it would park any small edit as "too large" after three busy
# cycles. Such a cycle fails and is retried with backoff, as any transient error.
LONE_TIMEOUT_MIN_BYTES = 256 * 1024


class _EnginePush(_EngineResults):
    """Push the outbox in batches and hand each batch's answers to ``_handle_results``."""

    def _push_pass(self, report: SyncReport) -> int:
        """Push every item dirty at the start of the pass; returns how many conflicted."""
        self._judge_dirty()
        with self.store.index.read() as cur:
            limit = st.max_op_id(cur)
            total = st.pending_count(cur)
        after, done, conflicts = 0, 0, 0
        while True:
            with self.store.index.read() as cur:
                batch = [
                    i
                    for i in st.outbox_batch(
                        cur, after, self._push_count, max_bytes=self._push_bytes
                    )
                    if i.op_id <= limit
                ]
            if not batch:
                break
            after = batch[-1].op_id
            pairs = self._changes_for(batch)
            done += len(batch)
            if pairs:
                self._set_state("pushing", progress=(min(done, total), max(total, done)))
                conflicts += self._push(pairs, report)
        self._forget_lone_timeouts()
        return conflicts

    def _forget_lone_timeouts(self) -> None:
        """Drop the timeout counts of changes there is nothing left to push for.

        A count goes when its change is pushed, but a change can stop being one without a push:
        a new blueprint deleted before it reached the server (its delete settles without a
        call), an edit that became invalid, a pull that left nothing to send. Each such count
        stayed for the life of the engine (months in a daemon). Run after a pass that pushed
        everything it had: any change timing out alone raised before here. The dict holds only
        large changes that timed out, so a lookup each is cheap.
        """
        if not self._lone_timeouts:
            return
        with self.store.index.read() as cur:
            gone = [i for i in self._lone_timeouts if not st.pushable(cur, i)]
        for blueprint_id in gone:
            del self._lone_timeouts[blueprint_id]

    def _judge_dirty(self) -> None:
        """Judge with this store's validator the dirty rows it has not judged (the daemon's
        watcher or the CLI recorded them while the app was open), if it is the home's: they
        are held otherwise (st._VALID). Outside any transaction, so the validator runs before
        the write lock (BlueprintStore._rejudge); the daemon, with no validator, leaves them."""
        store = self.store
        if store.validator is None or store.home_validator() != store.validator_name:
            return  # none, or another app's rules are the home's now: not ours to judge by
        with store.index.read() as cur:
            after = st.settled_op_id(cur)
        store._rejudge("b.op_id > ? AND b.judged_by IS NOT ?", (after, store.validator_name))

    def _push(self, pairs: Sequence[tuple[Change, st.OutboxItem]], report: SyncReport) -> int:
        """Push one batch and handle its results; returns how many conflicted.

        A call the server refuses as too large or too slow (``SPLIT_CODES``) is never sent again
        as it was (it would fail the same way forever): this cycle's push limits drop to half of
        it (count and bytes) and its changes go again in pieces that size, in order, each
        answered before the next goes; a piece refused again is split again. The batches read
        after it are that small too. Safe after any failure: the server applies a call whole or
        not at all, and a piece it did apply (a lost answer) is replayed by op id. One change
        refused so on its own is handled by ``_lone_refusal``.
        """
        changes = [c for c, _ in pairs]
        try:
            results = self._call(self.remote.push, changes, device=self.store.device_id)
        except TransientError as exc:
            if exc.code not in SPLIT_CODES:
                raise
            if len(pairs) == 1:
                return self._lone_refusal(pairs[0], exc, report)
            sizes = [_push_bytes(c) for c in changes]
            self._push_count = max(1, min(self._push_count, len(pairs) // 2))
            self._push_bytes = max(1, min(self._push_bytes, sum(sizes) // 2))
            log.info(
                "sync: the server refused a push of %d changes (%d bytes) as too large or too "
                "slow (%s); pushing it in halves",
                len(pairs),
                sum(sizes),
                exc,
            )
            return self._push_pieces(pairs, sizes, report)
        except ProtocolError as exc:
            sizes = [_push_bytes(c) for c in changes]
            if not self._refused_for_limits(exc, sizes):
                raise
            log.info(
                "sync: the server refused a push of %d changes (%d bytes) (%s); it now takes at "
                "most %d changes and %d bytes per push: pushing them in batches that size",
                len(pairs),
                sum(sizes),
                exc,
                self.batch_size,
                self.batch_bytes,
            )
            return self._push_pieces(pairs, sizes, report)
        _check_results(changes, results)
        for change in changes:
            self._lone_timeouts.pop(change.id, None)
        self._open_step([c.id for c in changes])
        conflicts = self._handle_results(pairs, results, report)
        self._record_step([c.id for c in changes])
        return conflicts

    def _push_pieces(
        self, pairs: Sequence[tuple[Change, st.OutboxItem]], sizes: list[int], report: SyncReport
    ) -> int:
        """Push a refused call's changes again in order, in pieces of this cycle's push limits."""
        conflicts, start = 0, 0
        while start < len(pairs):
            # Cut by the limits as they are now: a refused piece lowers them further.
            end = start + st.leading_fit(sizes[start:], self._push_count, self._push_bytes)
            conflicts += self._push(pairs[start:end], report)
            start = end
        return conflicts

    def _refused_for_limits(self, exc: ProtocolError, sizes: Sequence[int]) -> bool:
        """Whether a push refused whole (22023) was too large for limits lowered since asked.

        An operator can lower the server's ``max_batch`` under a running engine with nothing
        failing between (no new epoch): its next full push is refused whole as "too many
        changes". That cost a failed cycle shown as an error (about a minute) before the next
        asked again. Now ``server_info`` is asked again at once, and when the refused call is
        over the limits it announces now, this cycle's limits drop to them and the caller pushes
        the changes again in pieces that size (safe: the server applied nothing of the call).
        The same code means a bad argument too (the device name): the limits then still take the
        call and it is not sent again. Asked once a cycle: a server that refuses the batches of
        its own new limit too fails the cycle as before (the next asks again). Raises what
        ``_check_server`` raises (another protocol: RemoteConfigError).
        """
        if exc.code != REFUSED_CALL_CODE or self._reasked_for_refusal or len(sizes) < 2:
            return False  # (one change cannot be cut smaller: it would go again as it was)
        self._reasked_for_refusal = True
        count, size = self._push_count, self._push_bytes
        self._check_server(force=True)
        # The new limits, kept as small as a split earlier in this cycle made them.
        self._push_count = min(count, self.batch_size)
        self._push_bytes = min(size, self.batch_bytes)
        return len(sizes) > self._push_count or sum(sizes) > self._push_bytes

    def _lone_refusal(
        self, pair: tuple[Change, st.OutboxItem], exc: TransientError, report: SyncReport
    ) -> int:
        """One change the server refuses as too large or too slow even alone: park it, or raise.

        Too large (54000, 413) is final for that text: it is parked as ``too_large`` at once and
        the queue goes on (a poison pill must not stall every upload); too complex (the rest of
        class 54: 54001 is JSON nested past the server's stack depth) as ``too_complex``, with
        what to do about it, as sending it again cannot succeed. A timeout (57014) alone
        can be a busy server, so it is raised (the cycle fails and is retried with backoff) until
        it happened ``LONE_TIMEOUTS`` cycles in a row; then it is parked too. A change under
        ``LONE_TIMEOUT_MIN_BYTES`` is never parked for timeouts: its size cannot be the cause.
        A later edit or ``--retry-quarantined`` un-parks it, as for any rejection.
        """
        change, item = pair
        if exc.code == "57014":
            if _push_bytes(change) < LONE_TIMEOUT_MIN_BYTES:
                raise exc
            op, seen = self._lone_timeouts.get(change.id, (change.op_id, 0))
            # Another op id is another text: its count starts again (and replaces the old one).
            seen = seen + 1 if op == change.op_id else 1
            if seen < LONE_TIMEOUTS:
                self._lone_timeouts[change.id] = (change.op_id, seen)
                raise exc
            why = f"the server timed out on this change alone {seen} times in a row"
        elif exc.code in ("54000", "413"):
            why = "the server refuses this change as too large even alone"
        else:
            why = "the server refuses this change as too complex even alone"
        too_complex = exc.code not in ("57014", "54000", "413")
        self._lone_timeouts.pop(change.id, None)
        with self.store.index.write() as cur:
            self._quarantine_push(
                cur,
                change,
                item,
                "too_complex" if too_complex else "too_large",
                # The server's words without the error's hint ("sync retries by itself"),
                # which is no longer true of a parked change.
                f"{why} ({_push_bytes(change)} bytes): {exc.message}"
                + (f"; {_TOO_COMPLEX_FIX}" if too_complex else ""),
                report,
            )
        return 0

    def _changes_for(self, batch: Sequence[st.OutboxItem]) -> list[tuple[Change, st.OutboxItem]]:
        changes: list[tuple[Change, st.OutboxItem]] = []
        settled: list[st.OutboxItem] = []
        for item in batch:
            if item.deleted and (item.base_rev is None or item.base_deleted):
                settled.append(item)  # never on the server, or already deleted there
            elif not item.deleted and not item.valid:
                continue  # fails the app's validator: held back, never pushed as if valid
            else:
                path, op_id = item.path, item.push_op_id
                if not item.deleted and item.id in self._detours:
                    path, op_id = self._detours[item.id]
                changes.append(
                    (
                        Change(
                            op_id=op_id,
                            id=item.id,
                            base_rev=item.base_rev,
                            path=path,
                            content="" if item.deleted else item.content,
                            meta=item.meta,
                            content_hash=item.content_hash,
                            deleted=item.deleted,
                        ),
                        item,
                    )
                )
        if settled:
            with self.store.index.write() as cur:
                for item in settled:
                    st.mark_synced(cur, item.id, item.op_id)
        return changes

    def _reconcile_before_push(self, report: SyncReport) -> None:
        """Pull first (full reconcile, then the delta) when the cursor is below the horizon and
        there is something to push.

        A push's compare-and-swap is by rev, and a row re-created after its tombstone was purged
        started again at rev 1: an edit based on the old row's rev N, pushed before this device
        learnt of the purge, was applied over the new row's rev N, whose content was lost (left
        only in the server's history). Pulled first, the new row meets the edit in a merge and
        the push builds on it. One pull of one row per cycle that has changes to push; nothing
        when the cursor is above the horizon. Since migration 20261122001400 the server answers
        such a push rev_mismatch (a create starts above the horizon); this check still guards
        older projects and rows re-created before that migration.
        """
        if self._pushable() == 0:
            return
        with self.store.index.read() as cur:
            cursor = st.get_cursor(cur)
        try:
            probe = self._call(self.remote.pull, cursor, limit=1)
        except (AuthError, TransientError):
            raise  # the push would fail the same way (offline, logged out): say so now
        except SyncError as exc:
            # A pull the server refuses must not keep the edits from going up, as they did
            # before this check (push, then pull): the push goes ahead, and the pull after it
            # fails and says why. Below the horizon that push may still meet the race above.
            log.debug("sync: the check before the push failed (%s); pushing anyway", exc)
            return
        if probe.reset_required:
            self._pull_all(report)


def _push_bytes(change: Change) -> int:
    """The content and meta bytes of a change (what ``outbox_batch`` counts, as pushed)."""
    return len(change.content.encode("utf-8", "surrogatepass")) + len(
        json.dumps(change.meta, ensure_ascii=False).encode("utf-8", "surrogatepass")
    )
