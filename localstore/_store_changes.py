"""Changes other than a save: delete and move, and the history of revisions with load_revision
and restore. The layer above ``_StoreReads``.
"""

from __future__ import annotations

import builtins
import json
import os
import posixpath
from collections.abc import Sequence
from typing import Any

import apsw

from localstore import files as fs
from localstore._kept_edits import keep_flagged
from localstore._revisions import revision_text
from localstore._store_args import _SQL_INT_MAX, _count_arg, _hook_arg, _origin_arg, _rev_arg
from localstore._store_core import log
from localstore._store_paths import _TAKEN_HINT
from localstore._store_reads import _StoreReads
from localstore._store_types import Revision, Row, TxHook
from localstore.blueprint import Blueprint, BlueprintMeta
from localstore.errors import (
    AlreadyExistsError,
    InvalidInputError,
    LocalStoreError,
    NotFoundError,
    RevisionNotFoundError,
    UnsafePathError,
)
from localstore.events import Event
from localstore.index import WriteOutcome, map_apsw_error


def _to_another_path(failed: AlreadyExistsError | UnsafePathError) -> LocalStoreError:
    """A restore's error for a path that is taken (or now collides or is ignored)."""
    # The save's hint ("... or save with that blueprint's id") would overwrite the other
    # blueprint: a restore's way out is another path.
    return type(failed)(
        failed.message,
        hint="restore it to another path: restore(ref, rev, path=...), "
        "'localstore restore REF REV --path NEWPATH'",
    )


class _StoreChanges(_StoreReads):
    """delete, move, history and restore (the layer above ``_StoreReads``)."""

    # -- delete / move -----------------------------------------------------------------------------

    def delete(
        self, ref: fs.StrPath, *, origin: str = "local", tx_hook: TxHook | None = None
    ) -> Revision:
        """Delete a blueprint's files; its history stays and ``restore`` brings it back.

        Raises NotFoundError, StorageError (the blueprint and its files are left as they were),
        ChangedOnDiskError for a remote delete of a blueprint with an edit not recorded yet (the
        edit is recorded and nothing is deleted: an edit beats a delete).
        """
        self._check_writable("delete")
        _origin_arg(origin)
        if tx_hook is not None:
            _hook_arg(tx_hook)
        with self.index.read() as cur:
            path = self._resolve(cur, ref).path
        # The edit must be in history before the pair is set aside: recorded only in the
        # delete's transaction, a kill before its commit rolled the edit back, and the next open
        # recorded the delete with the older version (and swept the file set aside).
        self._record_edits_first([path], origin)
        events: list[Event] = []
        removing: tuple[str, list[tuple[str, str]]] | None = None
        aside: list[tuple[str, str]] = []  # (temp name, file) of the pair's files set aside
        refused: str | None = None
        recorded_rev: Revision | None = None
        outcome = WriteOutcome()
        try:
            with self.index.write(outcome) as cur:
                row, recorded = self._record_before_delete(cur, self._resolve(cur, ref), events)
                if recorded and origin == "remote":
                    # The deleting device never saw this edit: an edit beats a delete. The
                    # edit is committed, not rolled back, so the error's "recorded" holds.
                    refused = row.path
                else:
                    recorded_rev = self._record_delete(cur, row, origin, tx_hook, events)
                    # The files go last, once the index statements and the hook succeeded:
                    # only the commit can still fail. They are renamed aside, not unlinked,
                    # until the commit is done, so a failed commit puts them back with a rename
                    # (rewriting their bytes needed space: on a full disk the pair was lost).
                    # A kill after the renames leaves a vanished pair, which reconcile records
                    # as this same delete (the index already holds what the files held), and
                    # temp files it removes once stale.
                    removing = (row.path, aside)
                    self._set_pair_aside(row.path, aside)
        except BaseException as exc:
            self._delete_failed(outcome, removing, events)
            if isinstance(exc, apsw.Error):
                raise map_apsw_error(exc, "delete") from exc
            raise
        self._deleted(removing, events)
        if refused is not None:
            self._refuse_remote(refused, "delete")
        assert recorded_rev is not None  # (set on every path that does not raise)
        return recorded_rev

    def _record_delete(
        self, cur: Any, row: Row, origin: str, tx_hook: TxHook | None, events: list[Event]
    ) -> Revision:
        """Record the delete of ``row`` in the index (its revision, the caller's hook, its event
        in ``events``); its files are left as they are. Returns the delete's revision."""
        yaml_bytes, meta_bytes = self._read_pair(row.path)
        content, kept = self._deleted_content(cur, row, yaml_bytes, meta_bytes)
        rev = self._mark_deleted(cur, row, content, origin)
        recorded_rev = self._revision_row(cur, row.id, rev)
        bp = self._blueprint_from(row, content.decode("utf-8"))
        if tx_hook is not None:
            tx_hook(cur, bp)
        events.append(
            Event(
                kind="deleted",
                id=row.id,
                path=row.path,
                origin=origin,
                rev=rev,
                content_hash=row.content_hash,
                detail=kept,
            )
        )
        return recorded_rev

    def _deleted_content(
        self, cur: Any, row: Row, yaml_bytes: bytes | None, meta_bytes: bytes | None
    ) -> tuple[bytes, str]:
        """The content the delete revision holds (the file's, or the last revision's when the
        row is flagged or the file is gone), and where a flagged file was kept ("" if not)."""
        kept = ""
        if row.flagged or yaml_bytes is None:
            content = self._revision_content(row.id, row.rev).encode("utf-8")
            if row.flagged:
                # The file that does not parse goes with the delete: kept first.
                kept = keep_flagged(
                    self._as_store, cur, row, yaml_bytes, meta_bytes, "a delete removed"
                )
        else:
            content = yaml_bytes
        return content, kept

    def _delete_failed(
        self,
        outcome: WriteOutcome,
        removing: tuple[str, builtins.list[tuple[str, str]]] | None,
        events: Sequence[Event],
    ) -> None:
        """Clean up after a delete raised: finished if its write committed, else its files put
        back."""
        if outcome.done:
            # Raised once the index committed the delete (see _save_attempt): the pair
            # stays gone, as the index says, and the delete is finished.
            self._deleted(removing, events)
        elif removing is not None:
            self._put_back_pair(*removing)

    def _deleted(
        self, removing: tuple[str, builtins.list[tuple[str, str]]] | None, events: Sequence[Event]
    ) -> None:
        """Finish a delete whose write committed (or was released into a caller's)."""
        if removing is not None:
            # A caller's transaction that rolls back later must find the files back (see
            # _save_attempt); nothing is registered when this delete committed by itself.
            removed = removing
            self.index.undo_on_rollback(lambda: self._put_back_pair(*removed))
            self.index.after_commit(lambda: self._discard_pair(*removed))
        self.events.publish(events)

    @staticmethod
    def _revision_row(cur: Any, blueprint_id: str, rev: int) -> Revision:
        """The revision as history() shows it (its recorded time and content hash)."""
        r = cur.execute(
            "SELECT id, rev, origin, device, ts, path, content_hash, deleted FROM revisions "
            "WHERE id = ? AND rev = ?",
            (blueprint_id, rev),
        ).fetchall()[0]
        return Revision(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]))

    def _record_before_delete(self, cur: Any, row: Row, events: list[Event]) -> tuple[Row, bool]:
        """Ingest an edit not recorded yet: the delete revision must hold what the user last had,
        not the older indexed version. Returns the row as it is now and whether it changed."""
        if not self._edited_on_disk(row, str(self.abspath(row.path))):
            return row, False
        from localstore._reconcile import Reconciler

        reconciler = Reconciler(self._as_store)
        reconciler.ingest_locked(cur, row.path, may_delete=False)
        events.extend(reconciler.events)
        return self._resolve(cur, row.id), bool(reconciler.events)

    def _set_pair_aside(self, rel: str, aside: list[tuple[str, str]]) -> None:
        """Rename the pair's files to temp names beside them (``aside`` gets each as it goes),
        then flush the folder: a committed delete must not come back after a power cut."""
        for path in (rel, fs.meta_path_for(rel)):
            target = str(self.abspath(path))
            temp = fs.set_aside(target)
            if temp is not None:
                aside.append((temp, target))
        if aside:
            fs.fsync_dir(os.path.dirname(aside[0][1]))

    def _put_back_pair(self, rel: str, aside: list[tuple[str, str]]) -> None:
        """Rename the files of a failed delete back (no space needed); reconcile heals a miss."""
        while aside:
            temp, target = aside.pop()
            try:
                # Never over a file another program put at the name meanwhile (it is kept):
                # the plain rename after a look lost one made between the two.
                if not fs.place_new(temp, target):
                    fs.discard(temp)
            except OSError:  # reconcile on the next open records the vanished pair
                log.error("could not put back %s after a failed delete", rel)

    def _discard_pair(self, rel: str, aside: list[tuple[str, str]]) -> None:
        """Remove a committed delete's files (set aside) and the folders it left empty."""
        while aside:
            fs.discard(aside.pop()[0])
        self._prune_empty_dirs(self.abspath(rel).parent)

    def _mark_deleted(self, cur: Any, row: Row, content: bytes, origin: str) -> int:
        rev = row.rev + 1
        op_id = self.index.next_op_id(cur)
        # The path's key too: a row core v11 kept under a key of its own (see _exact_row) is
        # found by its path once deleted, like any other (restore, history by path). It costs
        # nothing extra: this UPDATE moves the row from the live-path index to the deleted-path
        # one (core v12) whatever its key.
        cur.execute(
            "UPDATE blueprints SET deleted = 1, rev = ?, op_id = ?, flagged = NULL, path_key = ? "
            "WHERE rid = ?",
            (rev, op_id, fs.path_key(row.path), row.rid),
        )
        self._reindex_text(cur, row.rid, row, row.meta, row.path, None)
        self._add_revision(cur, row.id, rev, op_id, origin, row.path, content, row.meta, True)
        return rev

    def move(
        self,
        ref: fs.StrPath,
        new_path: fs.StrPath,
        *,
        origin: str = "local",
        tx_hook: TxHook | None = None,
    ) -> Blueprint:
        """Move or rename a blueprint; its id, content and history are kept.

        Raises NotFoundError, UnsafePathError, AlreadyExistsError, StorageError.
        """
        self._check_writable("move")
        _origin_arg(origin)
        try:
            with self.index.read() as cur:
                row = self._resolve(cur, ref)
        except NotFoundError as exc:
            folder = self._folder_given(ref, new_path)
            if folder is not None:
                raise folder from exc
            raise
        try:
            return self.save(new_path, None, id=row.id, origin=origin, tx_hook=tx_hook)
        except AlreadyExistsError as exc:
            if exc.hint != _TAKEN_HINT:
                raise  # (a folder or link in a file's place: its own hint says what to do)
            # (save's hint, "or save with that blueprint's id", would overwrite that blueprint,
            # which no move means.)
            raise AlreadyExistsError(
                exc.message, hint="choose another path, or first move or delete the blueprint there"
            ) from exc

    def _folder_given(self, ref: fs.StrPath, new_path: fs.StrPath) -> NotFoundError | None:
        """The error for a folder given to move as its REF (``mv team Team``), saying how to
        move what is in it; None if ``ref`` names no folder of blueprints."""
        if not isinstance(ref, str) or not isinstance(new_path, str) or not ref.strip("/ "):
            return None
        try:
            inside = self.list(folder=ref, limit=2)
        except InvalidInputError:
            return None
        if not inside:
            return None
        depth = len(fs.normalize_path(ref).split("/"))
        first = inside[0].path.removesuffix(fs.YAML_SUFFIX)
        target = posixpath.join(new_path.strip("/ "), *first.split("/")[depth:])
        hint = f"move the blueprints in it one by one: 'localstore mv {first} {target}'"
        if len(inside) > 1:
            hint += (
                "; to change only its letter case, move them through a folder of another name"
                " (a folder takes its new case with the last blueprint that leaves it)"
            )
        return NotFoundError(f"{ref!r} is a folder, not a blueprint", hint=hint)

    # -- history -----------------------------------------------------------------------------------

    def history(
        self, ref: fs.StrPath, *, limit: int | None = None, before: int | None = None
    ) -> builtins.list[Revision]:
        """A blueprint's revisions (deleted ones too), newest first.

        ``limit``: at most this many (``None``, the default, is every revision: a caller that
        checks a whole lineage, such as import, must not get a silently cut list). ``before``:
        only revisions older than this revision number. Page through a long history by passing
        the last revision's ``rev`` as ``before`` for the next page (a cursor, not an offset:
        a save between two pages neither repeats nor skips a revision); a page shorter than
        ``limit`` is the last. Raises NotFoundError, InvalidInputError for a limit that is not
        a whole number >= 0 or a ``before`` that is not an int.
        """
        self._check_open()
        limit = None if limit is None else _count_arg("limit", limit)
        before = None if before is None else _rev_arg("before", before)
        with self.index.read() as cur:
            row = self._resolve(cur, ref, include_deleted=True)
            rows = cur.execute(
                "SELECT id, rev, origin, device, ts, path, content_hash, deleted FROM revisions "
                "WHERE id = ? AND rev < ? ORDER BY rev DESC LIMIT ?",
                (
                    row.id,
                    # (SQLite's integers are 64-bit; LIMIT -1 is no limit)
                    _SQL_INT_MAX if before is None else max(min(before, _SQL_INT_MAX), -1),
                    -1 if limit is None else limit,
                ),
            ).fetchall()
        return [Revision(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows]

    def load_revision(self, ref: fs.StrPath, rev: int) -> Blueprint:
        """A past revision's content and meta. Raises RevisionNotFoundError, InvalidInputError
        for a revision number that is not an int."""
        self._check_open()
        rev = _rev_arg("rev", rev)
        with self.index.read() as cur:
            row = self._resolve(cur, ref, include_deleted=True)
            rows = cur.execute(
                "SELECT path, content, meta, content_hash FROM revisions WHERE id = ? AND rev = ?",
                (row.id, min(rev, _SQL_INT_MAX)),  # (SQLite's integers are 64-bit)
            ).fetchall()
        if not rows:
            raise RevisionNotFoundError(
                f"{row.path} has no revision {rev}", hint="see 'localstore history REF'"
            )
        path, text, meta_json, chash = rows[0]
        meta = BlueprintMeta.from_dict(json.loads(revision_text(meta_json)))
        return Blueprint(
            path=path, content=revision_text(text), meta=meta, rev=rev, content_hash=chash
        )

    def restore(
        self,
        ref: fs.StrPath,
        rev: int,
        *,
        path: fs.StrPath | None = None,
        origin: str = "local",
        expected_rev: int | None = None,
    ) -> Blueprint:
        """Make a past revision current again (also brings back a deleted blueprint).

        The blueprint stays where it is, or comes back where it was deleted (a restore brings
        back content and meta, it does not undo a move); ``path`` puts it elsewhere. Restoring
        the content it already has records nothing and returns the current revision.

        Raises RevisionNotFoundError, AlreadyExistsError or UnsafePathError (its path is taken
        or collides by case: pass ``path``), RevisionConflictError (``expected_rev`` is given
        and the blueprint is no longer at that revision, deleted counting as one),
        InvalidInputError for a revision that is not an int.
        """
        self._check_writable("restore")
        _origin_arg(origin)
        if expected_rev is not None:
            _rev_arg("expected_rev", expected_rev)
        old = self.load_revision(ref, rev)
        meta = old.meta.replace(modified="")
        # Its save runs inside the transaction below, so it cannot commit an edit it replaces
        # first (see _record_first): the blueprint's pair and the target are done here.
        self._record_edits_first(self._restore_targets(old.id, path), origin)
        # Judged before the write lock below (its save runs inside it): a revision that no longer
        # loads is left to the save, which refuses it there as before.
        self._judge_texts_ahead([old.content])
        saved = self._save_restored(old, meta, path, origin, expected_rev)
        if isinstance(saved, Blueprint):
            return saved
        if isinstance(saved, (AlreadyExistsError, UnsafePathError)) and path is None:
            raise _to_another_path(saved) from saved
        raise saved

    def _save_restored(
        self,
        old: Blueprint,
        meta: BlueprintMeta,
        path: fs.StrPath | None,
        origin: str,
        expected_rev: int | None,
    ) -> Blueprint | LocalStoreError:
        """Save revision ``old`` with ``meta`` as the blueprint's current one (where it is,
        or at ``path``). Returns what the save returned, or the error it refused with (its
        transaction committed)."""
        # One write transaction from reading where the blueprint is to the save: otherwise a
        # move committed in between (another thread or process) was undone by saving at the
        # path read before it.
        with self.index.write():
            current = self.row(old.id, include_deleted=True)
            try:
                return self.save(
                    path or current.path,
                    old.content,
                    meta=meta,
                    id=old.id,
                    origin=origin,
                    expected_rev=expected_rev,
                )
            except LocalStoreError as exc:
                # Raised once the transaction commits: a save that refuses still keeps an
                # edit it found unrecorded on disk (see save), so this must not roll back.
                return exc
