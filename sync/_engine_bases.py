"""The record of synced bases kept besides the index (``state/sync-bases.jsonl``, see
``sync.base_record``): appended after each step that takes server rows as bases, and read back
into an index ``check --fix`` rebuilt (docs/sync-engine.md, "After `check --fix`").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from localstore import files as fs
from localstore.errors import LocalStoreError, NewerIndexError, StoreClosedError
from sync import _state as st
from sync import base_record
from sync._apply import drop_known
from sync._engine_core import _check_results, _EngineCore
from sync._local import SyncReport, list_conflicts
from sync.remote import Change, PushResult, ServerRow

log = logging.getLogger("sync.engine")

# The record of synced bases (sync.base_record) is rewritten whole once it is larger than this
# and than four times what its live entries take (an estimated line each).
BASE_RECORD_COMPACT_MIN = 256 * 1024
BASE_RECORD_LINE = 140
# How many blueprints the warning after a recovery without a record names (the rest counted).
RETURNED_NAMED = 20


class _EngineBases(_EngineCore):
    """Keep the record of synced bases, and recover the bases from it into a rebuilt index."""

    def _record_bases(self, report: SyncReport | None) -> None:
        """Append the bases not in ``state/sync-bases.jsonl`` yet and move its mark; never raises.

        At the end of a cycle (``report``), and by the first step of a cycle that finds no
        record to append to (``None``: the file is then written whole). Every base change comes
        with a server seq above the cursor the last append saw (a pulled row is above the
        cursor it was pulled from; a push gets a new seq), so the rows to append are those with
        ``base_seq`` above that cursor: one range read, and none at all in an idle poll (cursor
        unchanged, nothing pushed). The steps of the cycle appended most of them already
        (``_record_step``); those are not written twice. The mark moves only after the file is
        written.
        """
        if report is not None and self._unrecorded is not None:
            self._name_returned(self._unrecorded)
            self._unrecorded = None
        identity = self.remote.identity
        state_dir = self.store.settings.paths.state
        try:
            with self.store.index.read() as cur:
                mark = st.base_record_mark(cur)
                cursor = st.get_cursor(cur)
                whole = (
                    mark is None
                    or mark[0] != identity
                    or not base_record.record_path(state_dir).exists()
                )
                since = 0 if whole or mark is None else mark[1]
                if report is not None and not whole and since >= cursor and not report.pushed:
                    return
                rows = st.bases_since(cur, since)
                count = st.base_count(cur) if not whole else len(rows)
            entries = [base_record.BaseEntry(*r) for r in rows]
            if whole:
                base_record.rewrite(state_dir, identity, entries)
                self._recorded.clear()
                self._step_open = False  # (a file written whole has no open step)
            else:
                fresh = [e for e in entries if self._recorded.get(e.id) != e]
                if not fresh and not self._step_open:
                    # The steps appended all of it: only the mark moves.
                    size = 0
                else:
                    size = base_record.append(state_dir, fresh, done=True)
                    self._step_open = False
                if size > max(BASE_RECORD_COMPACT_MIN, 4 * BASE_RECORD_LINE * count):
                    with self.store.index.read() as cur:
                        everything = [base_record.BaseEntry(*r) for r in st.bases_since(cur, 0)]
                    base_record.rewrite(state_dir, identity, everything)
            with self.store.index.write() as cur:
                st.set_base_record_mark(cur, identity, cursor)
            # Above the mark, only what a later read of the range could bring again is kept.
            self._recorded = {
                e.id: e for e in [*self._recorded.values(), *entries] if e.seq > cursor
            }
        except (LocalStoreError, OSError) as exc:
            # The index still holds the bases; the next cycle appends them (the mark stayed).
            _record_failed(exc)

    def _rebuilt(self) -> bool:
        """True when this home synced before: its account is recorded, or `check --fix` set a
        damaged index aside. (A new home with files of its own, or one that imported a bundle,
        downloads the server's blueprints as a matter of course: nothing to warn about.)"""
        if self._synced_before:
            return True
        index = self.store.settings.paths.index_db
        return any(index.parent.glob(f"{index.name}.damaged-*"))

    def _name_returned(self, held: set[str]) -> None:
        """Warn of the blueprints the server brought to a home recovered without a record.

        Nothing outside the lost index says whether this device had deleted them (the record
        did not exist yet) or never had them: they are kept, the safe side, and named, so a
        person who deleted one deletes it again (every version stays in its history). Conflict
        copies made by this cycle are this home's own texts, not downloads.
        """
        try:
            copies = {c.copy_id for c in list_conflicts(self.store) if c.copy_id}
            with self.store.index.read() as cur:
                rows = cur.execute("SELECT id, path FROM blueprints WHERE deleted = 0").fetchall()
        except LocalStoreError as exc:
            log.warning("sync: could not list the blueprints the server brought back: %s", exc)
            return
        came = sorted(str(p) for i, p in rows if i not in held and i not in copies)
        if not came:
            return
        shown = ", ".join(came[:RETURNED_NAMED])
        more = f" and {len(came) - RETURNED_NAMED} more" if len(came) > RETURNED_NAMED else ""
        log.warning(
            "sync: this home's index was rebuilt with no record of what it had synced (%s), so "
            "%d blueprint(s) it did not hold came from the server: %s%s. Any of them deleted "
            "here before the index was lost came back; delete it again if so (`localstore rm`).",
            base_record.RECORD_FILE,
            len(came),
            shown,
            more,
        )

    def _record_held_bases(self) -> None:
        """Write the record whole from an index that holds bases but never wrote it; never raises.

        An index of a version before the record (``tests/upgrade/fixtures``) has its bases and
        no mark. The record was first written by a cycle's first commit, so a home offline since
        the upgrade (every cycle failing on the network), or killed in that first cycle, still
        had none when its index was lost, and ``check --fix`` then recovered it without bases:
        its changes waiting for upload came back as conflict copies and its deletes came back.
        Written under the account of the index (the remote's is not checked yet: the bases are
        that account's). Once per engine; one read of the mark when there is nothing to do.
        """
        if self._held_recorded:
            return
        state_dir = self.store.settings.paths.state
        try:
            with self.store.index.read() as cur:
                identity = st.get_state(cur, "identity")
                if identity is None or st.base_record_mark(cur) is not None:
                    self._held_recorded = True
                    return
                rows = st.bases_since(cur, 0)
                cursor = st.get_cursor(cur)
            if not rows:
                # A rebuilt index (no bases yet): the record is what `_recover_bases` reads.
                self._held_recorded = True
                return
            base_record.rewrite(state_dir, identity, [base_record.BaseEntry(*r) for r in rows])
            self._step_open = False
            with self.store.index.write() as cur:
                st.set_base_record_mark(cur, identity, cursor)
            self._recorded.clear()
            self._held_recorded = True
        except (LocalStoreError, OSError) as exc:
            log.warning("sync: could not write the record of synced bases: %s", exc)

    def _open_step(self, ids: Sequence[str]) -> None:
        """Before a step commits bases for ``ids``: say so in the record (``open_step``).

        What keeps the one window ``_record_step`` leaves (a kill after the step's commit,
        before its append) from misleading a recovery: the step is then still open in the file,
        and the recovery does not trust the older bases it has for those ids. The record is so
        ahead of the index (a step that never committed is open too, which only makes the
        recovery careful), never silently behind. The first step of an engine first appends
        what a killed process's steps committed and never recorded (the index has them), which
        closes its open steps. Never raises: without it the recovery is as before.
        """
        if not ids:
            return
        state_dir = self.store.settings.paths.state
        try:
            with self.store.index.read() as cur:
                kept = self._record_kept(cur)
            if not kept:
                return  # the step's own append writes the record whole
            if not self._steps_closed or self._step_open:
                # A step a killed process left open, or one of ours that raised after its
                # commit: append what the index has and the file lacks, which closes it (closing
                # it with only this step's bases would leave the record silently behind).
                self._step_open = True
                self._record_bases(None)
                self._steps_closed = True
            base_record.open_step(state_dir, ids)
            self._step_open = True
        except (LocalStoreError, OSError) as exc:
            _record_failed(exc)

    def _record_kept(self, cur: Any) -> bool:
        """Whether this account's record of synced bases exists and the index says it is this
        account's (the mark): then a step appends to it; otherwise it is written whole."""
        mark = st.base_record_mark(cur)
        return (
            mark is not None
            and mark[0] == self.remote.identity
            and base_record.record_path(self.store.settings.paths.state).exists()
        )

    def _open_pull_step(self, rows: Sequence[ServerRow]) -> None:
        """``_open_step`` for the rows of a page this device does not build on already (its own
        pushes coming back change no base: no fsync for them)."""
        if not rows:
            return
        try:
            with self.store.index.read() as cur:
                ids = [r.id for r in drop_known(cur, rows)]
        except LocalStoreError as exc:
            _record_failed(exc)
            return
        self._open_step(ids)

    def _record_step(self, ids: Sequence[str]) -> None:
        """Append the bases of ``ids`` that one step of the cycle just committed; never raises.

        Called right after each commit that takes server rows as bases (a push batch's results,
        a pulled page), not once after the cycle: a process killed after a step's commit left
        the record a whole cycle behind, and a recovery from it (the index lost too) took the
        older bases for that cycle's items, so a delete, a rename with an edit or an edit back
        made after it were misread (see ``_recover_bases``). Now only a kill between a step's
        commit and this append (one fsync) leaves it behind. One read of those ids, one append.
        """
        if not ids:
            return
        state_dir = self.store.settings.paths.state
        try:
            with self.store.index.read() as cur:
                rows = st.bases_of(cur, ids) if self._record_kept(cur) else None
            if rows is None:
                self._record_bases(None)  # no record to append to: write it whole now
                return
            fresh = [
                e
                for e in (base_record.BaseEntry(*r) for r in rows)
                if self._recorded.get(e.id) != e
            ]
            if fresh or self._step_open:
                base_record.append(state_dir, fresh, done=True)  # (closes the step)
                self._step_open = False
            self._recorded.update((e.id, e) for e in fresh)
        except (LocalStoreError, OSError) as exc:
            # The end of the cycle appends them (the mark did not move).
            _record_failed(exc)

    def _recover_bases(self) -> None:
        """Take the bases back from ``state/sync-bases.jsonl`` into an index that has none.

        Only for an index that never wrote the record and knows nothing of the server (one
        ``check --fix`` rebuilt; a new home has no record of this account). What the files are
        now, compared with what this device last synced, tells the intent the index held:

        * a live copy equal to its base (content and path) is clean: nothing to push, and the
          server's rows up to the base's seq are not downloaded again;
        * any other live copy is an edit (a rename, an edit back to an older text: none is
          taken for an old copy) and is pushed on that base, merged like any other edit;
        * a base with no copy left anywhere is a delete made here: it is pushed on that base.
          If another device changed the blueprint since, the push conflicts and the server's
          version comes down (an edit beats a delete), as it did before.

        The base of an id in a step the record says is still open (``base_record.unsettled``: a
        kill between that step's commit and its append) may be older than the lost index's: the
        copy is then taken as an edit with no base text, pushed on that base, and meets the
        server's newer revision: identical (settled) or not (both kept). A record a failed write
        left behind (no open step) is read as it is.

        With no record at all, a home that synced before still cannot tell a delete of its own
        from a blueprint it never had: the end of the cycle names what the server brought
        (``_name_returned``).
        """
        identity = self.remote.identity
        with self.store.index.read() as cur:
            if st.base_record_mark(cur) is not None or not st.knows_no_server(cur):
                return
        state_dir = self.store.settings.paths.state
        entries = base_record.read(state_dir, identity)
        # Bases a kill left open (see _open_step): the index may have had newer ones.
        unsure = base_record.unsettled(state_dir) if entries else set()
        if not entries:
            if self._rebuilt():
                self._note_unrecorded()
            return
        local = self._local_copies()
        deletes = [e for e in entries.values() if not e.deleted and e.id not in local]
        if deletes:
            deletes = self._vanished_here(deletes)
        results = self._push_recovered_deletes(deletes) if deletes else {}
        restored = self._restore_bases(entries, local, unsure, results)
        log.info(
            "sync: %d synced bases taken from %s into a rebuilt index (%d deletes pushed)",
            restored,
            base_record.RECORD_FILE,
            sum(1 for r in results.values() if r.status == "applied"),
        )

    def _note_unrecorded(self) -> None:
        """Keep the ids the rebuilt index holds, for the end of the cycle to name what came.

        A rebuilt index with no record (lost before this version wrote one, or lost with the
        state folder): a delete made here cannot be told from a blueprint never downloaded, so
        the server's copy comes back. The end of the cycle names what came
        (``_name_returned``), so that it does not come silently.
        """
        with self.store.index.read() as cur:
            holding = {str(r[0]) for r in cur.execute("SELECT id FROM blueprints")}
        self._unrecorded = holding or None

    def _local_copies(self) -> dict[str, tuple[str, str, int, bool]]:
        """The index's rows by id: (path, content hash, op id, deleted)."""
        with self.store.index.read() as cur:
            return {
                str(r[0]): (str(r[1]), str(r[2]), int(r[3]), bool(r[4]))
                for r in cur.execute(
                    "SELECT id, path, content_hash, op_id, deleted FROM blueprints"
                )
            }

    def _restore_bases(
        self,
        entries: dict[str, base_record.BaseEntry],
        local: dict[str, tuple[str, str, int, bool]],
        unsure: set[str],
        results: dict[str, PushResult],
    ) -> int:
        """Write the recorded bases into the index (see ``_recover_bases``); how many.

        ``local`` is ``_local_copies()``, ``unsure`` the ids of steps a kill left open,
        ``results`` the recovered deletes' push results by id.
        """
        restored = 0
        with self.store.index.write() as cur:
            for e in entries.values():
                here = local.get(e.id)
                if here is None and not e.deleted:
                    result = results.get(e.id)
                    if result is None or result.status != "applied":
                        continue  # the server's version comes down with the pull, as before
                    assert result.rev is not None and result.seq is not None
                    # The delete pushed just now is the base: a tombstone, nothing held here.
                    e = replace(e, rev=result.rev, seq=result.seq, deleted=True)
                # The local copy holds the base's text (only moved, or not changed at all).
                # Not for a base a kill left open: the copy may be an edit back to it made
                # on the newer base the index had. With no base text and no clean mark, it is
                # pushed on the recorded base and meets the server's newer row: settled when
                # equal, else both kept (a conflict copy), never overwritten.
                held = (
                    here is not None
                    and not here[3]
                    and here[1] == e.content_hash
                    and e.id not in unsure
                )
                clean = held and here is not None and not e.deleted and here[0] == e.path
                st.restore_base(
                    cur,
                    e.id,
                    rev=e.rev,
                    seq=e.seq,
                    content_hash=e.content_hash,
                    path=e.path,
                    deleted=e.deleted,
                    synced_op_id=here[2] if clean and here is not None else 0,
                    held=held and not e.deleted,
                )
                restored += 1
        return restored

    def _vanished_here(self, entries: list[base_record.BaseEntry]) -> list[base_record.BaseEntry]:
        """The recorded blueprints with no file left anywhere in the home: deleted here.

        A blueprint the index does not hold can still have files: a YAML that does not parse
        gets no row in a rebuilt index, nor does a pair in a folder this home does not scan
        (another client moved it into a hidden folder: that is not this device's delete). Any
        meta file naming the id, anywhere under the blueprints folder, keeps it off the list (a
        plain search of its bytes: a meta file too broken to parse still counts). Reads every
        meta file, once, and only when a recovery finds candidates.
        """
        wanted = {e.id.lower() for e in entries}
        root = self.store.settings.paths.blueprints
        for folder, _dirs, names in os.walk(root):
            for name in names:
                if not wanted:
                    break
                if not name.endswith(fs.META_SUFFIX):
                    continue
                try:
                    with open(os.path.join(folder, name), "rb") as fh:
                        text = fh.read().decode("utf-8", "replace").lower()
                except OSError:
                    continue
                wanted -= {w for w in wanted if w in text}
        return [e for e in entries if e.id.lower() in wanted]

    def _push_recovered_deletes(
        self, entries: list[base_record.BaseEntry]
    ) -> dict[str, PushResult]:
        """Push the deletes a rebuilt index lost, each on its recorded base; results by id."""
        with self.store.index.write() as cur:
            ops = [self.store.index.next_op_id(cur) for _ in entries]
        changes = [
            Change(
                op_id=op,
                id=e.id,
                base_rev=e.rev,
                path=e.path,
                content="",
                meta={},
                content_hash=e.content_hash,
                deleted=True,
            )
            for op, e in zip(ops, entries, strict=True)
        ]
        out: dict[str, PushResult] = {}
        for i in range(0, len(changes), self.batch_size):
            part = changes[i : i + self.batch_size]
            results = self._call(self.remote.push, part, device=self.store.device_id)
            _check_results(part, results)
            for change, result in zip(part, results, strict=True):
                out[change.id] = result
                if result.status == "rejected":
                    log.warning(
                        "sync: the delete of %s made before the index was rebuilt was refused "
                        "(%s); the server's copy comes back",
                        change.path,
                        result.message or result.code,
                    )
        return out


def _record_failed(exc: BaseException) -> None:
    """Log a failed update of the base record (never raised: the index still holds the bases,
    and a later step or cycle appends them). A store closed under the cycle is no failure: the
    loop stops quietly on its next step; nor is an index a newer localstore upgraded meanwhile:
    the cycle's next write is refused too, and the loop stops on it with its own line."""
    if not isinstance(exc, StoreClosedError | NewerIndexError):
        log.warning("sync: could not update the record of synced bases: %s", exc)
