"""Edits nobody recorded yet (an editor saved while no watcher ran): what a write would replace is
recorded first, in a transaction of its own, after waiting for a file a watcher sees still being
written to settle. The layer above ``_StoreJudge``.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from localstore import files as fs
from localstore._presence import WatchPeriods
from localstore._store_judge import _StoreJudge
from localstore._store_types import Row, _Batch, _RecordFirst
from localstore.errors import ChangedOnDiskError, LocalStoreError, StorageError

# How long a write that must record an editor's unrecorded file first waits, at most, for that
# file to settle when a watcher runs (see BlueprintStore._await_settled), and how often it looks.
# Bounded: an editor that keeps the file open and half written (or a watcher with a long
# write-quiet period) must not hold the write up for long; its file is recorded as it is then.
_SETTLE_WAIT_MAX_S = 2.0


_SETTLE_POLL_S = 0.02


def _settle_pause(seconds: float) -> None:
    """Sleep between two looks at a file being written (a function of its own: a test times an
    editor's write with it)."""
    time.sleep(seconds)


class _StoreUnrecorded(_StoreJudge):
    """Unrecorded edits recorded before a write (the layer above ``_StoreJudge``)."""

    @staticmethod
    def _edited_on_disk(row: Row, yaml_abs: str) -> bool:
        """True if a live row's files differ from its stat cache (an edit not recorded yet).

        A missing YAML is not an edit: it holds nothing to keep, and a vanished file is the
        watcher's and reconcile's call (editors delete and recreate files while saving). The
        names are not followed: a link in a file's place is a change (see _refuse_not_files)."""
        try:
            y = os.lstat(yaml_abs)
        except FileNotFoundError:
            return False
        if not fs.stat_unchanged(
            y, row.yaml_size, row.yaml_mtime_ns, row.yaml_ctime_ns, row.yaml_ino
        ):
            return True
        meta_abs = yaml_abs[: -len(fs.YAML_SUFFIX)] + fs.META_SUFFIX
        try:
            m = os.lstat(meta_abs)
        except FileNotFoundError:
            return row.meta_size != -1  # (-1: indexed without a meta file, a flagged row)
        return not fs.stat_unchanged(
            m, row.meta_size, row.meta_mtime_ns, row.meta_ctime_ns, row.meta_ino
        )

    @staticmethod
    def _record_first(batch: _Batch, rel: str) -> None:
        """Have the pair at ``rel`` (an edit nobody recorded) committed before this batch
        replaces it, when the batch can (raises _RecordFirst, once a path).

        Recorded inside the batch's transaction only, the edit's revision rolled back with a
        save killed after its renames and before its commit: the file it replaced was the
        edit's only copy, and the next open recorded the save's version over the older one.
        Committed first, a kill leaves the edit in history. A batch inside a caller's
        transaction cannot commit on its own, nor can an editor still writing be caught up
        with forever: those record it in the batch, as before."""
        if batch.recorded_first is not None and rel not in batch.recorded_first:
            raise _RecordFirst(rel)

    def _settle_first(self, batch: _Batch, rel: str) -> None:
        """Wait for the unrecorded pair at ``rel`` to settle (_await_settled) before this batch
        records it inside its transaction, where it cannot commit it first (_record_first,
        whose commit waits the same way); once a path and write.

        Met at an item's first look (a sync pass's download, a write inside an app's
        transaction), an in-place editor's file between its truncate and its write was recorded
        at once: the empty or half-written file as a revision (an invalid one), the finished
        edit as another after it. Only a file found changed comes here, so an unchanged one
        costs nothing. The wait holds the lock (at most _SETTLE_WAIT_MAX_S; the watcher cannot
        record meanwhile, so it ends when the change is older than the watcher's write-quiet
        period, or at the limit): rejected, undoing the attempt to wait outside it, which
        inside a caller's transaction holds the lock all the same."""
        if batch.recorded_first is None and rel not in batch.settled:
            batch.settled.add(rel)
            self._await_settled([rel])

    def _commit_ingest(self, rels: Iterable[str]) -> None:
        """Record the pairs at ``rels`` as external changes in a transaction of their own, and
        publish their events (see _record_first)."""
        from localstore._reconcile import Reconciler

        rels = list(rels)
        self._await_settled(rels)
        self._judge_files_ahead(rels)
        reconciler = Reconciler(self._as_store)
        with self.index.write() as cur:
            for rel in rels:
                reconciler.ingest_locked(cur, rel, may_delete=False)
        self.events.publish(reconciler.events)

    def _await_settled(self, rels: Sequence[str]) -> None:
        """Wait (outside the write lock) until the unrecorded files at ``rels`` are no longer
        being written, when a watcher runs on this home (here or in another process), at most
        _SETTLE_WAIT_MAX_S.

        A write meets an editor's file exactly while the editor writes it: its swap
        (files.replace_recorded) finds the file changed because the editor's truncate changed
        it, and the write then records that file first. Read at once, it recorded the
        truncated or half-written file as a revision (an invalid one when empty). The watcher
        waits for such a file to settle (close-write, or its write-quiet period); the write now
        waits by the same rule (_settling, as load uses) and stops waiting as soon as the
        watcher has recorded the file (its row matches the disk again) or the change is older
        than the watcher's write-quiet period. Without a watcher, no one waits for a write to
        settle (load, reconcile), and neither does this: the file is recorded as it is, as
        before. Rejected: leaving the recording to the watcher and retrying the write, which
        needs the same wait (the write may not replace the edit before it is recorded) and a
        second path through the batch."""
        waiting = list(rels)
        deadline = time.monotonic() + _SETTLE_WAIT_MAX_S
        while True:
            waiting = [rel for rel in self._unrecorded_paths(waiting) if self._being_written(rel)]
            if not waiting or time.monotonic() >= deadline:
                return
            _settle_pause(_SETTLE_POLL_S)

    def _being_written(self, rel: str) -> bool:
        """Whether the pair at ``rel`` changed too recently for a running watcher to have
        recorded it (see _settling)."""
        try:
            yaml_abs = self.abspath(rel)
            st = os.lstat(yaml_abs)
        except (LocalStoreError, OSError):
            return False  # (gone or out of the folder: nothing to wait for, the ingest judges it)
        try:
            m_st: os.stat_result | None = os.lstat(self.abspath(fs.meta_path_for(rel)))
        except OSError:
            m_st = None
        return self._settling(rel, st, m_st)

    def _record_edits_first(
        self, rels: Iterable[str], origin: str, new_files: Callable[[str], bool] | None = None
    ) -> None:
        """Commit, before a write that replaces or removes the pairs at ``rels``, what they hold
        that the index has not recorded (an edit, or a file where no live blueprint is and
        ``new_files`` passes the path): see _record_first. Nothing for a remote write (it
        refuses an edit) or inside a caller's transaction (reconcile keeps what a kill leaves
        set aside); a remote write's are judged ahead instead (see _judge_unrecorded_ahead)."""
        if self.index.write_open:
            return
        if origin == "remote":
            self._judge_unrecorded_ahead(rels, new_files)
            return
        todo = self._unrecorded_paths(rels, new_files)
        if todo:
            self._commit_ingest(todo)

    def _judge_unrecorded_ahead(
        self, rels: Iterable[str], new_files: Callable[[str], bool] | None = None
    ) -> None:
        """Run the validator, before a remote write takes the lock, on what the pairs at
        ``rels`` hold that the index has not recorded.

        A remote write records such an edit inside its own transaction and refuses itself (an
        edit beats a remote write); it cannot commit the edit first, as a local one does: the
        write would then no longer see it, and replace it. That ingest judged the edit inside
        the lock; it now takes this verdict for the very bytes. Stats only, and only with a
        validator and outside a caller's transaction (a sync pass judges its rows' edits ahead
        itself, sync._apply.Applier.judge_ahead)."""
        if self.validator is None or self.index.write_open:
            return
        self._judge_files_ahead(self._unrecorded_paths(rels, new_files))

    def _unrecorded_paths(
        self, rels: Iterable[str], new_files: Callable[[str], bool] | None = None
    ) -> builtins.list[str]:
        """The paths of ``rels`` whose pair holds what the index has not recorded (its stats
        differ from the live row's, or a file is where no live blueprint is, when ``new_files``
        passes that path). A path that leads out of the blueprints folder is left out: the write
        refuses it (an item's error), where raised here it failed the whole batch."""
        todo = []
        with self.index.read() as cur:
            for rel in dict.fromkeys(rels):
                try:
                    yaml_abs = str(self.abspath(rel))
                except LocalStoreError:
                    continue
                row = self._row_by(cur, "path = ? AND deleted = 0", (rel,))
                if (
                    self._edited_on_disk(row, yaml_abs)
                    if row is not None
                    else os.path.lexists(yaml_abs) and (new_files is None or new_files(rel))
                ):
                    todo.append(rel)
        return todo

    def _ingest_first(self, cur: Any, rel: str, batch: _Batch) -> bool:
        """Record the pair at ``rel`` as an external change inside this transaction (its events
        are published with the batch's), keeping its bytes for an undo of the batch.

        Returns True if the index changed (a revision, a new blueprint, a flag), False if the
        files only had new stats (a touch)."""
        from localstore._reconcile import Reconciler

        reconciler = Reconciler(self._as_store)
        reconciler.ingest_locked(cur, rel, may_delete=False)
        batch.events.extend(reconciler.events)
        try:
            # Regular files only: these bytes are written back if the batch fails, and a link's
            # target read here became a regular file in the blueprints folder.
            yaml_bytes = fs.read_regular(self.abspath(rel), self.limits.max_bytes)
        except (FileNotFoundError, StorageError):
            return bool(reconciler.events)
        try:
            meta_bytes: bytes | None = fs.read_regular(self.abspath(fs.meta_path_for(rel)))
        except (FileNotFoundError, StorageError):
            meta_bytes = None
        batch.ingested.setdefault(rel, (yaml_bytes, meta_bytes))
        if reconciler.events:
            batch.recorded_here.add(rel)
        return bool(reconciler.events)

    @staticmethod
    def _refuse_remote(rel: str, what: str = "version") -> None:
        """A pulled row must not replace (or delete) an edit it was never merged with (the sync
        engine planned it against the index before the editor saved): the edit is recorded, and
        the caller applies the row through its merging path instead."""
        raise ChangedOnDiskError(
            f"{rel} changed on disk after the remote {what} was planned; the change is "
            f"recorded and the remote {what} was not applied",
            hint=f"apply the remote {what} through a merge (sync does this itself)",
        )

    def _settling(self, rel: str, st: os.stat_result, m_st: os.stat_result | None) -> bool:
        """Whether a running Watcher of this store, or the daemon's watching this home from
        another process, is still to record the change at ``rel``."""
        from localstore.watcher import change_settling, running_watcher

        watcher = running_watcher(self._as_store)
        stats = [st] if m_st is None else [st, m_st]
        if watcher is not None:
            return change_settling(watcher, rel, stats)
        # No watcher here, but the daemon or an app may watch this home from its own process (a
        # CLI command beside it): the same age rule, without its pending set. Asked only for a
        # change that would be recorded now (a few syscalls, no network).
        periods = self._watching_elsewhere()
        return periods is not None and fs.changed_within(stats, periods.write_quiet_s)

    def _watching_elsewhere(self) -> WatchPeriods | None:
        """The periods of the watchers other processes run on this home (the daemon's, an app's),
        or None when none runs."""
        from localstore._presence import watching_elsewhere

        return watching_elsewhere(self.settings)

    def _vanish_settling(self, rel: str) -> bool:
        """Whether the YAML at ``rel``, gone, is a watcher's to judge: one runs on this store, or
        in another process and its folder changed within that watcher's delete grace."""
        if self._watched():
            return True
        periods = self._watching_elsewhere()
        return periods is not None and fs.folder_changed_within(self.root, rel, periods.grace_s)

    def _watched(self) -> bool:
        """Whether a Watcher runs on this store object (it then decides what a vanished file is)."""
        # Imported here: the watcher module imports this one, and watchdog costs start-up time.
        from localstore.watcher import running_watcher

        return running_watcher(self._as_store) is not None
