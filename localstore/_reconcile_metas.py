"""Meta files during an ingest: finishing a save that died between its two renames, writing a
pair's meta only over the file that was read, following a renamed YAML, and telling a known meta.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore import files as fs
from localstore._reconcile_core import log
from localstore._reconcile_record import _ReconcileRecord
from localstore._revisions import revision_text
from localstore.blueprint import BlueprintMeta, decode_meta, sha256_hex
from localstore.errors import InvalidMetaError, LocalStoreError, StorageError

if TYPE_CHECKING:
    from localstore.store import CheckReport, Row


class _MetaChanged(Exception):
    """Another program saved a meta file between an ingest's read of it and the rename that
    was to put a flushed temp in its place (nothing replaced): the ingest reads it again."""


def _written_after(*stats: os.stat_result) -> int:
    """The time (ns) a save's meta temp beside these files was written at or after: the latest
    of their modification times that the wall clock has reached.

    A time in the future says nothing of when a file was written here: a meta file synced from a
    device whose clock runs ahead (Syncthing and rsync -t keep mtimes), restored from a backup,
    touched by hand, or written before this clock was stepped back. Taken as the bound, it
    refused the very temp of the update killed between its two renames, and reconcile recorded
    the new YAML with the old meta (the update's name, tags and description lost, its temp later
    swept as stale). Such a file counts by its change time instead (when it got here), or not at
    all when that too lies ahead.
    """
    now_ns = time.time_ns()
    bound = 0
    for st in stats:
        for t in (st.st_mtime_ns, st.st_ctime_ns):
            if t <= now_ns:
                bound = max(bound, t)
                break
    return bound


class _ReconcileMetas(_ReconcileRecord):
    """Recover, write, move and recognise the meta files of the pairs being ingested."""

    def _recover_meta_temp(
        self,
        meta_rel: str,
        report: CheckReport,
        *,
        same_id: str | None = None,
        not_before: int = 0,
    ) -> bytes | None:
        """Finish a save that died between renaming its YAML and its meta file.

        Both temp files were flushed before the first rename, so the meta's temp beside the YAML
        is complete: renaming it into place keeps the blueprint's id (a new id would turn a pulled
        or imported blueprint into a duplicate) and, for an update, its new name, tags and so on
        (recording the new YAML with the old meta lost them, and the temp was later removed as
        stale). Only a temp with id ``same_id`` (if given) and an mtime from ``not_before`` on
        is taken. Saves write their temps under the index write lock that the caller holds, so
        a temp seen here is never one of a save in progress.
        """
        target = self.store.root / meta_rel
        prefix = f".{target.name}."
        try:
            temps = [
                e
                for e in os.scandir(target.parent)
                if e.name.startswith(prefix) and e.name.endswith(fs.TEMP_SUFFIX)
            ]
        except OSError:
            return None
        for entry in sorted(temps, key=lambda e: e.stat().st_mtime_ns, reverse=True):
            if entry.stat().st_mtime_ns < not_before:
                break  # sorted newest first: the rest are older still
            raw = self._read_meta(str(Path(meta_rel).parent / entry.name).removeprefix("./"))
            try:
                found = decode_meta(raw or b"", source=entry.name)
            except InvalidMetaError:
                continue
            if same_id is not None and found.id != same_id:
                continue
            self._move_temp_in(entry.path, meta_rel)
            fs.fsync_dir(target.parent)
            self._meta_placed = True
            report.fixed.append({"kind": "meta-recovered", "path": meta_rel, "detail": entry.name})
            return raw
        return None

    def _move_temp_in(self, temp: str, meta_rel: str) -> None:
        """Rename a flushed meta temp to ``meta_rel``, only over the meta file this ingest read
        (none: only to a free name). Raises _MetaChanged if another program saved the meta file
        since (it stays; a version of its taken off the name is kept), OSError.

        The plain rename replaced a meta file saved between the read and the rename (a sync
        client's download of the pair, the person's edit), lost in no revision."""
        target = str(self.store.root / meta_rel)
        seen = self._meta_seen
        if seen is None:
            if not fs.place_new(temp, target):
                raise _MetaChanged(meta_rel)
        else:
            st = os.lstat(temp)
            try:
                fs.replace_recorded(temp, target, seen, (st.st_ino, st.st_size, st.st_mtime_ns))
            except fs.TargetChangedError as changed:
                self._keep_taken_off(changed.set_aside, meta_rel)
                raise _MetaChanged(meta_rel) from changed
        with contextlib.suppress(OSError):
            self._meta_seen = fs.recorded_of(os.lstat(target))

    def _write_meta_over(self, meta_rel: str, data: bytes) -> bool:
        """Write ``data`` to ``meta_rel`` if it is still the meta file this ingest read (or a
        temp recovered into its place); False, changing nothing, if another program saved it
        since (a version of its taken off the name is kept). Raises StorageError."""
        try:
            fs.write_checked(self.store.root / meta_rel, data, self._meta_seen)
        except fs.TargetChangedError as changed:
            self._keep_taken_off(changed.set_aside, meta_rel)
            return False
        except fs.NameTakenError:
            return False
        return True

    def _keep_taken_off(self, files: Sequence[str], rel: str) -> None:
        """Keep the versions of another program's a checked write took off ``rel`` (it saved
        twice during the write, see files.TargetChangedError) unless a revision holds them."""
        from localstore._kept_edits import keep_set_aside

        for aside in files:
            try:
                keep_set_aside(self.store, aside, rel)
            except (OSError, LocalStoreError) as exc:
                # (Left beside it under an aside name: a later pass keeps it, see _kept_aside.)
                log.warning("could not keep %s (a version of %s): %s", aside, rel, exc)

    @staticmethod
    def _meta_known(cur: Any, blueprint_id: str, raw: bytes) -> bool:
        """Whether ``raw`` is a meta file the store has: the live one, or one in history."""
        digest = sha256_hex(raw)
        live = cur.execute(
            "SELECT 1 FROM blueprints WHERE id = ? AND meta_sha256 = ?", (blueprint_id, digest)
        ).fetchall()
        if live:
            return True
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
        for (value,) in cur.execute("SELECT meta FROM revisions WHERE id = ?", (blueprint_id,)):
            if revision_text(value) == text:
                return True
        return False

    def _meta_left_behind(self, row: Row) -> BlueprintMeta | None:
        """The meta file still at ``row``'s old path if it is valid and carries its id."""
        meta_rel = fs.meta_path_for(row.path)
        try:
            raw = self._read_meta(meta_rel)
            found = None if raw is None else decode_meta(raw, source=meta_rel)
        except (StorageError, InvalidMetaError):
            return None
        return found if found is not None and found.id == row.id else None

    def _follow_meta(self, old_rel: str, new_rel: str) -> None:
        """The user renamed the YAML: move its meta file along (we rewrite it at the new place).

        The old meta is removed once the move is committed, and only if it is still the file
        seen here. Removed at once, an ingest failing after it (the new meta refused, the index
        full) rolled the move back but not the unlink: hand edits in that meta that no pass had
        recorded (a name, tags) were lost, and the blueprint with them.
        """
        meta_rel = fs.meta_path_for(old_rel)
        old_meta = self.store.root / meta_rel
        old_yaml = self.store.root / old_rel
        try:
            seen = fs.recorded_of(os.lstat(old_meta))
        except FileNotFoundError:
            return
        if old_yaml.exists():
            return
        self._leaving.add(meta_rel)

        def remove() -> None:
            self._leaving.discard(meta_rel)
            try:
                st = os.lstat(old_meta)
            except FileNotFoundError:
                return
            # (Saved again since, or its YAML back: another program's, not this move's.)
            if fs.recorded_of(st) != seen or old_yaml.exists():
                return
            try:
                fs.remove_file(old_meta)
            except StorageError as exc:  # (committed: a later pass removes it as an orphan)
                log.warning("could not remove %s after its YAML moved: %s", meta_rel, exc)

        self.store.index.after_commit(remove)

    def _meta_id_at(self, yaml_rel: str, *, unreadable: str | None = None) -> str | None:
        """The id the meta file beside ``yaml_rel`` holds now: None if there is none or it is
        not valid, ``unreadable`` if it cannot be read."""
        meta_rel = fs.meta_path_for(yaml_rel)
        try:
            raw = self._read_meta(meta_rel)
        except StorageError:
            return unreadable
        try:
            return None if raw is None else decode_meta(raw, source=meta_rel).id
        except InvalidMetaError:
            return None
