"""A pair's files placed and undone: staged temps renamed into place in the write's transaction,
moves renamed (folders' case matched, empty folders pruned), and on a failure the files put
back as they were, a replaced editor's version kept aside. The layer above ``_StoreRowWrites``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from localstore import files as fs
from localstore._kept_edits import keep_set_aside
from localstore._revisions import revision_text
from localstore._store_core import log
from localstore._store_row_writes import _StoreRowWrites, change_events
from localstore._store_search import _DESCRIBED, _FULL
from localstore._store_types import Row, _Batch, _Orphans, _Prepared
from localstore.blueprint import Blueprint, sha256_hex
from localstore.errors import LocalStoreError, StorageError


def _recorded_now(path: str) -> fs.Recorded | None:
    """The stats of the file at ``path`` as a write's ``recorded`` (None: no file there)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, fs.ino_key(st.st_ino))


def _rename_over(src: Path, dst: Path, recorded: fs.Recorded) -> None:
    """Rename the file ``src`` over ``dst`` if ``dst`` is still the file ``recorded`` (a meta
    file without its YAML a move kept first); else raise TargetChangedError, that file in
    place and ``src`` where it was (see files.replace_recorded). Raises OSError."""
    st = os.lstat(src)
    fs.replace_recorded(str(src), str(dst), recorded, (st.st_ino, st.st_size, st.st_mtime_ns))


def _put_orphan_back(target: str, orphans: _Orphans | None) -> None:
    """Put back at ``target`` the meta file without its YAML a failed save or move replaced
    (see BlueprintStore._keep_orphan_meta), unless the name is taken again. Raises
    StorageError."""
    if orphans and target in orphans:
        fs.ensure_dir(Path(target).parent)  # (a move back pruned the folder it left empty)
        fs.create_file(Path(target), orphans[target][1])


def _moved_recorded(was: fs.Recorded | None, path: str) -> fs.Recorded | None:
    """What a write is to replace at ``path``, where a move just renamed the file the index
    recorded as ``was``: its stats but the change time, which the rename set (None: no file
    there)."""
    now = _recorded_now(path)
    if now is None or was is None:
        return now
    return (was[0], was[1], now[2], was[3])


def _cross_disk_error(old_rel: str, new_rel: str) -> StorageError:
    """EXDEV from a move: a folder of the blueprints folder is a mount point (another disk)."""
    old_dir, new_dir = fs.folder_of(old_rel) or ".", fs.folder_of(new_rel) or "."
    return StorageError(
        f"cannot move {old_rel} to {new_rel}: the folders {old_dir!r} and {new_dir!r} are on "
        "different disks (one is mounted inside the blueprints folder), and a move renames the "
        "files, which cannot cross disks",
        hint="move it to a folder on the same disk; or save a copy at the new path (it gets a new "
        "id) and delete this one; or mount that disk outside the blueprints folder",
    )


def _recorded_pair(row: Row) -> tuple[fs.Recorded, fs.Recorded]:
    """What ``row`` recorded of its YAML and meta files (size, mtime, ctime, inode)."""
    return (
        (row.yaml_size, row.yaml_mtime_ns, row.yaml_ctime_ns, row.yaml_ino),
        (row.meta_size, row.meta_mtime_ns, row.meta_ctime_ns, row.meta_ino),
    )


def _saved_blueprint(p: _Prepared, rev: int) -> Blueprint:
    """The Blueprint a save of ``p`` as revision ``rev`` returns."""
    return Blueprint(
        path=p.path,
        content=p.text,
        meta=p.meta,
        rev=rev,
        content_hash=p.content_hash,
        valid=p.valid,
        problems=p.problems,
    )


class _StoreFiles(_StoreRowWrites):
    """Pairs' files placed and undone (the layer above ``_StoreRowWrites``)."""

    def _keep_set_aside(self, files: Sequence[str], target: str) -> None:
        """Keep in <data>/recovered/ the files of another program's that a write took off
        ``target`` (see files.TargetChangedError) and no revision holds; remove the rest."""
        rel = os.path.relpath(target, self._root_str).replace(os.sep, "/")
        for aside in files:
            try:
                keep_set_aside(self._as_store, aside, rel)
            except (OSError, LocalStoreError) as exc:
                # (Left where it is, in the blueprints folder: reconcile keeps it later.)
                log.warning("could not keep %s (a version of %s): %s", aside, rel, exc)

    @staticmethod
    def _place_files(cur: Any, batch: _Batch) -> None:
        """Rename the batch's temps into place, then record the placed files' change times.

        The rename sets them (the temps' stats in the rows have the times before it): without
        this, no saved pair would match its row, and every open would read every file again.
        """
        if batch.placing:
            # FTS5 keeps a transaction's new entries in memory and writes them out as a segment
            # at COMMIT (~100-150 us of CPU a 2 KB blueprint, the largest part of its commit).
            # Written here instead, the work runs while the flusher thread waits for the temps'
            # fsyncs, not after the folder's fsync on the way to the acknowledgement. A no-op
            # for a table with nothing pending; it never changes what gets indexed.
            for table in (_FULL, _DESCRIBED):
                cur.execute(f"INSERT INTO {table}({table}) VALUES ('flush')")
        batch.pending.commit()
        placed = batch.pending.take_placed()
        if not batch.placing:
            return
        cur.executemany(
            "UPDATE blueprints SET yaml_ctime_ns = ?, meta_ctime_ns = ? WHERE rid = ?",
            [
                (placed.get(yaml_abs), placed.get(meta_abs), rid)
                for yaml_abs, (rid, meta_abs) in batch.placing.items()
            ],
        )
        batch.placing.clear()

    def _undo_touched(
        self,
        touched: Sequence[tuple[Row | None, str]],
        ingested: Mapping[str, tuple[bytes, bytes | None]],
        placed: fs.PlacedFiles,
        orphans: _Orphans,
    ) -> None:
        """Put back the files of a batch's saves, newest first (see :meth:`_undo_files`)."""
        for existing, new_rel in reversed(touched):
            self._undo_files(existing, new_rel, placed, ingested, orphans)

    def _undo_released(
        self,
        touched: Sequence[tuple[Row | None, str]],
        written: Sequence[tuple[str, str]],
        ingested: Mapping[str, tuple[bytes, bytes | None]],
        pending: fs.PendingWrites,
        orphans: _Orphans,
    ) -> None:
        """Put back the files of a batch whose write was released into a caller's transaction
        that then rolled back (see Index.undo_on_rollback), newest first.

        Unlike the undo of the batch's own failure, this may come long after the files were
        written (a sync pass applies a whole page before it commits), so an editor may have
        saved over one of them since: a pair that no longer holds what the batch wrote is left
        as it is, and reconcile records it, rather than an edit put back over and lost. (A
        later undo of the same transaction that put back what this batch wrote makes the
        pair hold it again: undos run newest first.)
        """
        for (existing, new_rel), (yaml_sha, meta_sha) in reversed(
            list(zip(touched, written, strict=True))
        ):
            seen = self._held(new_rel, yaml_sha, meta_sha)
            if seen is None:
                log.warning(
                    "%s changed on disk before a failed write could put it back; left as it "
                    "is (reconcile records it)",
                    new_rel,
                )
                continue
            for rel in (new_rel, fs.meta_path_for(new_rel)):
                pending.restore_latest(str(self.abspath(rel)))
            # The files the batch placed, as they are now: a later write of the same transaction
            # undone before this one (newest first) put back what this batch wrote by a file of
            # its own (a new inode: a move's undo, a save's put-back), which the stats of the
            # batch's own placing no longer describe, so its put-back was refused as "changed
            # on disk". The bytes just checked are the batch's; their stats (taken before each
            # read) are what the put-back's swap compares: an editor's save since still shows.
            placed = {**pending.placed, **{p: st for p, st in seen.items() if p in pending.placed}}
            self._undo_files(existing, new_rel, placed, ingested, orphans)
        pending.discard_previous()
        self._keep_undone(pending)

    def _keep_undone(self, pending: fs.PendingWrites) -> None:
        """Keep the files an undo took off a name or could not put back (another program's
        save over a file the write had placed, see PendingWrites.to_keep) that no revision
        holds; remove the rest."""
        to_keep, pending.to_keep = pending.to_keep, []
        for aside, target in to_keep:
            self._keep_set_aside([aside], target)

    def _held(self, rel: str, yaml_sha: str, meta_sha: str) -> dict[str, fs.Recorded] | None:
        """If the pair at ``rel`` has exactly these bytes (by sha256), each file's stats taken
        just before its read (by absolute path); else None."""
        seen: dict[str, fs.Recorded] = {}
        try:
            for path, sha in ((rel, yaml_sha), (fs.meta_path_for(rel), meta_sha)):
                target = str(self.abspath(path))
                data, seen[target] = fs.read_regular_seen(target)
                if sha256_hex(data) != sha:
                    return None
        except (OSError, StorageError):
            return None
        return seen

    def _ready_folder(self, cur: Any, batch: _Batch, folder: str) -> None:
        """Before a batch's first write, refuse a blueprints folder gone (see
        refuse_a_vanished_root); make ``folder`` if the batch has not made it yet."""
        if not batch.root_checked:
            from localstore._reconcile import refuse_a_vanished_root

            refuse_a_vanished_root(self._as_store, cur)
            batch.root_checked = True
        if folder not in batch.made_dirs:
            fs.ensure_dir(Path(folder))
            batch.made_dirs.add(folder)

    def _commit_pair(
        self,
        cur: Any,
        existing: Row | None,
        p: _Prepared,
        origin: str,
        batch: _Batch,
        yaml_abs: str,
    ) -> Blueprint:
        """Stage both files (made durable by the batch's commit), then the index row and revision.

        Kept whole: its steps (move, stage, flush, row, revision), in order, are the crash contract.
        """
        folder, yaml_name = os.path.split(yaml_abs)
        meta_name = fs.meta_path_for(yaml_name)
        meta_abs = folder + os.sep + meta_name  # same folder, checked above
        self._ready_folder(cur, batch, folder)
        old_path = existing.path if existing is not None and not existing.deleted else None
        moved = old_path is not None and old_path != p.path
        # What the index recorded of the files this save replaces, checked when the save
        # reached them (_edited_on_disk): the batch places its files later, and replaces only
        # those (an editor's save in between is put back, see files.replace_recorded).
        yaml_was: fs.Recorded | None = None
        meta_was: fs.Recorded | None = None
        if existing is not None and old_path is not None:
            yaml_was, meta_was = _recorded_pair(existing)
        if moved:
            # Rename first, then write: a crash in between leaves one pair with one id (a move
            # that reconcile recognises). Writing the new pair before removing the old one would
            # leave two pairs with the same id, indistinguishable from a user's copy.
            assert old_path is not None
            orphan = batch.orphans.get(meta_abs)
            self._rename_pair(old_path, p.path, over=None if orphan is None else orphan[0])
            batch.made_dirs.clear()  # the move may have removed the folder it left
            batch.folders.clear()  # (and put names the listings do not hold: read them again)
            # The renames set the files' change times (taken again); size, mtime and inode stay
            # the row's: a file an editor saved at the old name after the check moved with the
            # pair, and taken again whole it counted as the recorded file, unlinked unrecorded.
            yaml_was = _moved_recorded(yaml_was, yaml_abs)
            meta_was = _moved_recorded(meta_was, meta_abs)
        # Names this batch's listing of the folder does not hold are new: no replaced file's
        # mode to keep, so no lstat for it (see _may_exist).
        listed = batch.folders.get(folder)
        yaml_new = meta_new = False
        if listed is not None:
            yaml_key, meta_key = fs.path_key(yaml_name), fs.path_key(meta_name)
            yaml_new, meta_new = yaml_key not in listed, meta_key not in listed
            listed[yaml_key] = yaml_name
            listed[meta_key] = meta_name
        # A rename keeps size and mtime, so the temp files' stats are the final files' stats (but
        # for the change time, which the rename sets: _place_files records it).
        if old_path is not None and old_path in batch.recorded_here:
            # The pair holds an edit only this transaction records: kept when replaced, a kill
            # before the commit leaves its bytes set aside, for reconcile to keep, rather than
            # nowhere (moved, the pair now holds them at the new path).
            batch.pending.keep_before_replacing(yaml_abs)
            batch.pending.keep_before_replacing(meta_abs)
        if moved:
            # (A file the move did not bring, gone since: its name is placed as a new one.)
            yaml_new, meta_new = yaml_was is None, meta_was is None
        elif old_path is None and meta_abs in batch.orphans:
            meta_was, meta_new = batch.orphans[meta_abs][0], False
        y_st = batch.pending.add(yaml_abs, p.yaml_bytes, new=yaml_new, recorded=yaml_was)
        m_st = batch.pending.add(meta_abs, p.meta_bytes, new=meta_new, recorded=meta_was)
        batch.pending.start_flush()  # both fsyncs run while the index statements below do
        rev = (existing.rev if existing else 0) + 1
        op_id = self.index.next_op_id(cur)
        yaml_sha, meta_sha, rid = self._upsert_row(cur, existing, p, rev, op_id, y_st, m_st)
        batch.written.append((yaml_sha, meta_sha))
        batch.placing[yaml_abs] = (rid, meta_abs)
        self._add_revision(
            cur,
            p.meta.id,
            rev,
            op_id,
            origin,
            p.path,
            p.yaml_bytes,
            p.meta,
            False,
            meta_bytes=p.meta_bytes,
            chash=p.content_hash,
            text=p.text,
        )
        bp = _saved_blueprint(p, rev)
        batch.events.extend(change_events(existing, p, rev, origin))
        return bp

    def _undo_files(
        self,
        existing: Row | None,
        new_rel: str,
        placed: fs.PlacedFiles,
        ingested_pairs: Mapping[str, tuple[bytes, bytes | None]] | None = None,
        orphans: _Orphans | None = None,
    ) -> None:
        """Put the committed version back after a failed save (best effort; reconcile heals).

        ``placed``: the files the save put in place, with their stats. A new pair's file that
        is not one of them was never written (the save failed first), or is another program's
        (an editor created the name the save found free): removed, it was lost with no
        revision anywhere; so was an editor's save over a placed file (fs.remove_placed).
        ``orphans``: the meta files without their YAML the batch replaced (_keep_orphan_meta),
        put back at a name the new pair's meta left."""
        if existing is None or existing.deleted:
            try:
                for rel in (new_rel, fs.meta_path_for(new_rel)):
                    target = str(self.abspath(rel))
                    if target in placed:
                        left = fs.remove_placed(target, placed[target])
                        if left is not None:
                            self._keep_set_aside([left], target)
                        if left is None:
                            _put_orphan_back(target, orphans)
                self._prune_empty_dirs(self.abspath(new_rel).parent)
            except (OSError, StorageError):
                log.warning("could not remove %s after a failed save", new_rel)
            return
        # Only the files the save put in place go back. One it never placed holds what it held
        # (the save failed first), or another program's file: one it saved over the recorded
        # version after the save checked it, put back in place by files.replace_recorded.
        # Written over with the recorded version, that program's save was lost.
        written = (
            str(self.abspath(new_rel)) in placed,
            str(self.abspath(fs.meta_path_for(new_rel))) in placed,
        )
        if existing.path != new_rel:
            if os.path.lexists(self.abspath(existing.path)):
                # A file at the old name: the move never happened (its destination was taken
                # first, see _rename_pair: nothing to put back), or another program made the
                # name since. Either way nothing goes back over it: the restore below wrote the
                # committed revision over that program's file, lost unrecorded. Reconcile
                # records both pairs on the next open.
                return
            self._rename_pair_quiet(new_rel, existing.path)
            placed = self._moved_back(placed, new_rel, existing.path)
            try:
                _put_orphan_back(str(self.abspath(fs.meta_path_for(new_rel))), orphans)
            except StorageError:  # (its copy in <data>/recovered/ stays: check reports it)
                log.warning("could not put back %s after a failed move", fs.meta_path_for(new_rel))
        if not any(written):
            return
        ingested = ingested_pairs.get(existing.path) if ingested_pairs is not None else None
        self._restore_pair_best_effort(existing, ingested, written, placed)

    def _moved_back(self, placed: fs.PlacedFiles, new_rel: str, old_rel: str) -> fs.PlacedFiles:
        """``placed`` with the pair's files at ``new_rel`` taken back to ``old_rel``: each is
        the file placed if its inode, size and mtime are (a rename sets only the change time,
        taken anew here for the check without a swap)."""
        moved = dict(placed)
        for new, old in (
            (new_rel, old_rel),
            (fs.meta_path_for(new_rel), fs.meta_path_for(old_rel)),
        ):
            seen = moved.pop(str(self.abspath(new)), None)
            if seen is None:
                continue
            try:
                now = fs.recorded_of(os.lstat(self.abspath(old)))
            except OSError:
                continue
            moved[str(self.abspath(old))] = (
                now if now[:2] + now[3:] == seen[:2] + seen[3:] else None
            )
        return moved

    def _restore_pair_best_effort(
        self,
        existing: Row,
        ingested: tuple[bytes, bytes | None] | None = None,
        written: tuple[bool, bool] = (True, True),
        placed: fs.PlacedFiles | None = None,
    ) -> None:
        """After a failed write, put back the committed version if a file was already replaced
        (``ingested``: the bytes of an edit recorded in the failed transaction, which rolled its
        revision back; the disk is the truth, so those bytes go back, not the older revision).
        ``written``: whether the write placed the YAML, the meta file: only those go back.
        ``placed``: the stats of the files the write placed: a file that is no longer the one
        placed there is another program's save, left as it is (see _put_back)."""
        yaml_abs = self.abspath(existing.path)
        meta_abs = self.abspath(fs.meta_path_for(existing.path))
        if ingested is not None:
            try:
                if fs.read_regular(yaml_abs) == ingested[0] and (
                    ingested[1] is None or fs.read_regular(meta_abs) == ingested[1]
                ):
                    return  # (put back by a rename already: the disk may be full)
            except (OSError, StorageError):
                pass
            items = [(yaml_abs, ingested[0])] if written[0] else []
            if ingested[1] is not None and written[1]:
                items.append((meta_abs, ingested[1]))
            self._put_back(existing.path, items, placed)
            return
        try:
            current = sha256_hex(fs.read_regular(yaml_abs))
            current_meta = sha256_hex(fs.read_regular(meta_abs))
        except (OSError, StorageError):
            current = current_meta = ""
        if current == existing.yaml_sha256 and current_meta == existing.meta_sha256:
            return
        try:
            with self.index.read() as cur:
                rows = cur.execute(
                    "SELECT content, meta FROM revisions WHERE id = ? AND rev = ?",
                    (existing.id, existing.rev),
                ).fetchall()
        except (OSError, StorageError):  # reconcile on the next open records what is on disk
            log.warning("could not put back %s after a failed write", existing.path)
            return
        if rows:
            items = [
                (path, revision_text(text).encode())
                for path, text, put in (
                    (yaml_abs, rows[0][0], written[0]),
                    (meta_abs, rows[0][1], written[1]),
                )
                if put
            ]
            self._put_back(existing.path, items, placed)

    def _put_back(
        self, rel: str, items: Sequence[tuple[Path, bytes]], placed: fs.PlacedFiles | None
    ) -> None:
        """Write a version back over the files a failed write placed (best effort).

        Each file is written over only if it is still the one the write placed (``placed``):
        an editor's save over it since (the failed commit, or a sync page's statements, ran
        in between) was replaced by the plain rename, in no revision. That save stays at its
        name, which reconcile records; a version it saved twice meanwhile is kept. (Without
        ``placed``, the caller knows the file is its own: written over as before.)"""
        for path, data in items:
            target = str(path)
            try:
                if placed is None:
                    fs.atomic_write(path, data)
                    continue
                seen = placed.get(target)
                if seen is None:
                    continue  # (no longer ours just after the rename: that program's)
                fs.write_checked(path, data, seen)
            except fs.TargetChangedError as changed:
                log.warning(
                    "%s changed on disk before a failed write could put it back; left "
                    "as it is (reconcile records it)",
                    target,
                )
                self._keep_set_aside(changed.set_aside, target)
            except (OSError, StorageError):  # reconcile on the next open records the disk
                log.warning("could not put back %s after a failed write", rel)

    def _rename_pair(self, old_rel: str, new_rel: str, *, over: fs.Recorded | None = None) -> None:
        """Move both files of a pair (YAML first; reconcile re-pairs a YAML that moved alone).

        The new names were found free: a file another program put at one since is not renamed
        over (it was lost, unrecorded). Raises NameTakenError then, the pair back where it was.
        ``over``: the meta file without its YAML at the new meta name, kept first (see
        _keep_orphan_meta), replaced only if it is still that file (TargetChangedError else)."""
        self._match_folder_case(old_rel, new_rel)
        moved: list[tuple[Path, Path]] = []
        for src, dst, recorded in (
            (old_rel, new_rel, None),
            (fs.meta_path_for(old_rel), fs.meta_path_for(new_rel), over),
        ):
            src_abs, dst_abs = self.abspath(src), self.abspath(dst)
            try:
                # (The platform's rename: on Windows written through, the folder cannot be
                # flushed there, and retried while an editor or a scanner has the file open.)
                if recorded is not None:
                    _rename_over(src_abs, dst_abs, recorded)
                elif not fs.rename_new(src_abs, dst_abs):
                    raise fs.NameTakenError(str(dst_abs))
            except fs.NameTakenError:
                self._move_back(moved, old_rel, new_rel)
                raise
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    if not os.path.lexists(src_abs):
                        continue  # (Linux says EXDEV before it looks for the file: none here)
                    raise _cross_disk_error(old_rel, new_rel) from exc
                raise fs.map_os_error(exc, "cannot move", src_abs) from exc
            moved.append((src_abs, dst_abs))
        fs.fsync_dir(self.abspath(new_rel).parent)
        old_dir = self.abspath(old_rel).parent
        if old_dir != self.abspath(new_rel).parent:
            fs.fsync_dir(old_dir)
            self._prune_empty_dirs(old_dir)

    def _move_back(self, moved: Sequence[tuple[Path, Path]], old_rel: str, new_rel: str) -> None:
        """Rename the files a failed ``_rename_pair`` moved back to their old names.

        Raises StorageError if one cannot go back (another program took its old name since: that
        file is its, and stays). The moved file is then set aside beside its new name, for
        reconcile to remove as a version the store has, or keep in ``<data>/recovered/``. Left at
        the new name, it was half a pair with the file that made the move fail (another program's
        meta): the retry recorded this blueprint's YAML as a new blueprint under that meta's id,
        and refused the move as if the name were that blueprint's.
        """
        stranded: list[str] = []
        for back_src, back_dst in moved:
            if fs.rename_new(back_dst, back_src):
                continue
            fs.set_aside(str(back_dst))
            fs.fsync_dir(back_dst.parent)
            stranded.append(
                fs.printable(os.path.relpath(back_src, self._root_str).replace(os.sep, "/"))
            )
        if stranded:
            log.error(
                "moving %s to %s failed half way: %s was taken meanwhile; the moved file is "
                "set aside",
                old_rel,
                new_rel,
                ", ".join(stranded),
            )
            raise StorageError(
                f"moving {fs.printable(old_rel)} to {fs.printable(new_rel)} failed: another "
                f"program created files at both names meanwhile ({', '.join(stranded)} too); "
                "nothing was moved",
                hint="'localstore check' shows what is there now; its last version is in "
                "'localstore history'",
            )

    def _rename_pair_quiet(self, old_rel: str, new_rel: str) -> None:
        try:
            fs.ensure_dir(self.abspath(new_rel).parent)
            self._rename_pair(old_rel, new_rel)
        except StorageError:  # reconcile on the next open records wherever the pair is
            log.warning("could not move %s back to %s after a failed write", old_rel, new_rel)

    def _prune_empty_dirs(self, directory: Path) -> None:
        root = self.root.resolve()
        d = directory
        removed = False
        while d.resolve() != root and root in d.resolve().parents:
            try:
                # (Not retried on Windows: a folder another program has open, as Explorer's
                # current folder, stays, empty; it is harmless and goes with the next prune.)
                d.rmdir()
            except OSError:
                break
            removed = True
            d = d.parent
        if removed:
            # The removals are durable once the folder left standing is flushed (one fsync per
            # pass, only when a folder went: a move or delete that emptied it, never a plain
            # save). Without it an emptied folder could come back after a power cut.
            try:
                fs.fsync_dir(d)
            except StorageError:
                log.warning("could not flush %s after removing empty folders", d)

    def _read_pair(self, rel: str) -> tuple[bytes | None, bytes | None]:
        """The bytes of a pair's YAML and meta files as they are on disk (None: missing)."""
        out: list[bytes | None] = []
        for path in (rel, fs.meta_path_for(rel)):
            try:
                # Whole (a put-back restores them), and regular files only: a link's target
                # would be put back as a file of the blueprints folder.
                out.append(fs.read_regular(self.abspath(path)))
            except FileNotFoundError:
                out.append(None)
        return out[0], out[1]
