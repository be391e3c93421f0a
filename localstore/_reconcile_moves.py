"""Whose a pair is: moves (by id, by hash, by inode), copies, swapped names and case twins.

The identity rules of a pair (docs/architecture.md, "Identity across a pass") and the parking of a
blueprint whose path another one takes in the same pass; ``moved_first`` puts moved files before
copies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

from localstore import _late_meta as late_meta
from localstore import files as fs
from localstore._reconcile_core import _Scan, log
from localstore._reconcile_metas import _ReconcileMetas, _written_after
from localstore.blueprint import BlueprintMeta, decode_meta, new_id, sha256_hex, utc_now

if TYPE_CHECKING:
    from localstore.store import CheckReport, Row


def moved_first(
    paths: list[str], ino_of: Callable[[str], int | None], gone: Container[int]
) -> None:
    """Put first (in place, otherwise in the order given) the paths whose YAML is the very file
    a vanished pair had: its inode (``ino_of``, as ``fs.ino_key`` gives it) is among ``gone``,
    the inodes the index recorded for the YAMLs no longer at their paths. Moved, not copied.

    The first path ingested that carries a vanished blueprint's id (or its YAML's hash) takes
    its identity as a move; a later one finds it live and is a copy. In path order, ``cp m.*
    backup/; mv m.* z/`` gave the identity, the history and sync's record to the copy, and a
    new id to the original. A rename keeps the inode; a copy never has it. Shared by the full
    pass (Reconciler._fix) and the watcher's batches (Watcher._process_due).
    """
    paths.sort(key=lambda rel: ino_of(rel) not in gone)


class _ReconcileMoves(_ReconcileMetas):
    """Decide whose a pair is: the blueprint it moved from, a copy, or a new one."""

    def _moved_here(self, cur: Any, rel: str, scan: _Scan) -> str | None:
        """The id of the live blueprint whose YAML ``rel`` is by inode: the one the index
        recorded at another path, which no longer holds that file (a rename keeps the inode;
        a copy does not, nor does a hard link left at both paths). None if there is none."""
        y = scan.yamls.get(rel)
        if y is None:
            return None
        ino = fs.ino_key(y.st_ino)
        rows = cur.execute(
            "SELECT id, path FROM blueprints WHERE yaml_ino = ? AND deleted = 0 AND path != ?",
            (ino, rel),
        ).fetchall()
        for bp_id, path in rows:
            try:
                there = os.stat(self.store.root / str(path), follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return str(bp_id)
            except OSError:
                continue  # (cannot tell: not taken as moved)
            if fs.ino_key(there.st_ino) != ino:
                return str(bp_id)
        return None

    def _identity_by_meta(
        self,
        cur: Any,
        rel: str,
        meta: BlueprintMeta,
        yaml_bytes: bytes,
        row_at_path: Row | None,
    ) -> tuple[Row | None, BlueprintMeta, bool, bool]:
        """Whose the pair at ``rel`` is, by the id its meta holds: (identity, meta to record,
        write the meta, a copy). None for a new blueprint.

        The identity rules of a pair with a meta, the same for the watcher (one path at a time)
        and for every reconcile pass (docs/architecture.md, "Identity across a pass"):

        - another pair's meta pasted over this path's unchanged YAML (its blueprint live or
          deleted): the blueprint here keeps its id and gets its own meta back;
        - the id live at another path whose meta still holds it: a copy, given a new id;
        - otherwise the id's own blueprint: moved here when it is live (its old pair gone), back
          from deleted, at this path, when it was recorded deleted, whatever this YAML holds. A
          sync tool applies a move as "delete the old pair, then create the new one", and a
          delete seen first (past its grace, or by an open in between) is recorded first; taken
          for a new blueprint instead, the id and history would split and sync push a delete and
          a create. The pair's meta is left as it came (rewritten, it would sync back).
        """
        identity = self._with_id(cur, meta.id)
        # (This path's blueprint when its YAML is unchanged: only the meta was put over it.)
        unchanged = row_at_path
        if row_at_path is not None and sha256_hex(yaml_bytes) != row_at_path.yaml_sha256:
            unchanged = None
        if self._live_elsewhere(identity, rel) and unchanged is not None:
            return unchanged, unchanged.meta, True, False
        if self._copy_source(identity, rel):
            # (Live elsewhere, but the file there no longer carries this id: two pairs swapped
            # names, or another file took the old name; the blueprint moved here.)
            return None, meta.replace(id=new_id(), created=utc_now()), True, True
        if (
            identity is not None
            and identity.deleted
            and unchanged is not None
            and late_meta.made_up(cur, unchanged) is None
        ):
            # The same paste, of a deleted blueprint's meta: taken as that blueprint come back,
            # the one here was recorded deleted (a delete sync pushed) and the other revived with
            # this YAML. A lone YAML's own meta come late (its id made up by the store) is no
            # paste: _late_meta gives the made-up id way below.
            return unchanged, unchanged.meta, True, False
        return identity, meta, False, False

    def _finish_moving_update(
        self,
        cur: Any,
        rel: str,
        meta: BlueprintMeta,
        meta_bytes: bytes,
        yaml_bytes: bytes,
        report: CheckReport,
    ) -> tuple[bytes, BlueprintMeta] | None:
        """The new meta of a save that moved a blueprint and changed it, if it died between
        renaming the new YAML and the new meta (the bytes and their meta, or None).

        Such a save first moves the old pair to the new path, then renames both new files over
        it: the new path held the new YAML beside the old meta, reconcile recorded that mix (a
        revision nobody saved) and swept the flushed meta temp away later. Recognised as for an
        update in place: the meta is exactly the one indexed for its blueprint, whose old path is
        gone, and the YAML differs; only a temp of that blueprint written after both files is
        taken.
        """
        moved = self._with_id(cur, meta.id)
        if (
            moved is None
            or moved.deleted
            or moved.path == rel
            or sha256_hex(meta_bytes) != moved.meta_sha256
            or sha256_hex(yaml_bytes) == moved.yaml_sha256
            or self._exact_exists(moved.path)  # (a case-only move on a case-blind disk too)
        ):
            return None
        root = self.store.root
        y_st = os.stat(root / rel, follow_symlinks=False)
        m_st = os.stat(root / fs.meta_path_for(rel), follow_symlinks=False)
        newer = self._recover_meta_temp(
            fs.meta_path_for(rel),
            report,
            same_id=moved.id,
            not_before=_written_after(y_st, m_st),
        )
        if newer is None:
            return None
        return newer, decode_meta(newer, source=fs.meta_path_for(rel))

    def _moves_later(self, row: Row, rel: str) -> bool:
        """Whether ``row``'s id is in the meta of another path this pass has yet to ingest.

        Two pairs that swapped names: the first path's blueprint is about to move to the other
        one, so it is not deleted (a delete revision and an event, then a re-creation).
        """
        if self._changed is None:
            return False  # one path at a time (watcher, load): nothing later to move it
        if self._claims is None:
            self._claims = {}
            for path in self._changed:
                found = self._meta_id_at(path)
                if found is not None:
                    self._claims.setdefault(found, path)
        later = self._claims.get(row.id)
        return later is not None and later != rel

    def _park(self, cur: Any, row: Row) -> None:
        """Free ``row``'s path for the blueprint taking it; its own ingest moves it (_record)."""
        # A key no real path has: the live-path unique index holds one row per key.
        cur.execute("UPDATE blueprints SET path_key = ? WHERE rid = ?", ("\x00" + row.id, row.rid))
        self._parked[row.id] = row

    def _unpark(self, cur: Any, row: Row, report: CheckReport) -> None:
        """A parked blueprint whose new path was not ingested after all: record it deleted (its
        files are elsewhere; a later pass that can read them brings it back with its id)."""
        del self._parked[row.id]
        current = self._with_id(cur, row.id)
        if current is not None and not current.deleted:
            self._delete_locked(cur, current, report)
        cur.execute(
            "UPDATE blueprints SET path_key = ? WHERE rid = ?", (fs.path_key(row.path), row.rid)
        )

    def copied_from(self, cur: Any, rel: str) -> str | None:
        """The path of the live pair the pair at ``rel`` would be taken for a copy of now (the
        copy rule of ``_ingest_once``, ``_copy_source``), else None. For the watcher's copy
        hold; a meta that cannot be read or is not valid is none (the ingest reports it)."""
        meta_id = self._meta_id_at(rel)
        row = None if meta_id is None else self._with_id(cur, meta_id)
        return row.path if row is not None and self._copy_source(row, rel) else None

    def _live_elsewhere(self, row: Row | None, rel: str) -> bool:
        """Whether ``row`` is a live blueprint indexed at another path than ``rel`` whose YAML
        is still there."""
        return (
            row is not None
            and not row.deleted
            and row.path != rel
            and (self.store.root / row.path).exists()
        )

    def _copy_source(self, row: Row | None, rel: str) -> bool:
        """Whether a pair at ``rel`` whose meta holds ``row``'s id is a copy of ``row``: it is
        live at another path whose meta still holds that id (the same id at two live paths; a
        meta there that cannot be read is taken to hold it)."""
        return (
            row is not None
            and self._live_elsewhere(row, rel)
            and self._meta_id_at(row.path, unreadable=row.id) == row.id
        )

    def _case_collision(
        self, cur: Any, rel: str, identity: Row | None, report: CheckReport
    ) -> bool:
        """True (reported) if another live blueprint's path differs from ``rel`` only by case.

        Linux allows both names (a git checkout, a sync tool), but the index keeps one live path
        per case-folded key so that the store works on macOS and Windows folders too: the file
        already indexed keeps it, the other one is left alone (no meta written) and reported.
        """
        if identity is not None and not identity.deleted and identity.path == rel:
            # Indexed at this very path already: a pair core v11 found to be one name was
            # kept as it was (index._v11_path_keys), and its edits are recorded as any other's.
            # _parked_pairs reports it.
            return False
        holder = self.store._row_by(
            cur, "path_key = ? AND deleted = 0 AND path != ?", (fs.path_key(rel), rel)
        )
        if holder is None or (identity is not None and holder.id == identity.id):
            return False  # free, or this blueprint itself changing the case of its name
        if not self._exact_exists(holder.path):
            # The holder's file is gone (renamed to this case, edited and without its meta):
            # the files say it was deleted, which frees the key.
            self._delete_locked(cur, holder, report)
            return False
        log.warning("%s differs only by case from %s; it is not indexed", rel, holder.path)
        report.problems.append(
            {
                "kind": "case-collision",
                "path": rel,
                "detail": f"differs only by case from {holder.path}; rename one of them",
            }
        )
        return True

    def _match_moved_yaml(self, cur: Any, digest: str) -> Row | None:
        """A YAML moved without its meta: the live blueprint with that hash whose file is gone."""
        from localstore.store import _ROW_COLUMNS, Row

        sql = f"SELECT {_ROW_COLUMNS} FROM blueprints WHERE yaml_sha256 = ? AND deleted = 0"
        for t in cur.execute(sql, (digest,)).fetchall():
            row = Row.from_tuple(t)
            if not (self.store.root / row.path).exists():
                return row
        return None
