"""Ingesting one path: reading a YAML and its meta, deciding whose it is, and recording it.

Shared by the full pass (``Reconciler._fix``), the watcher (one settled path at a time) and a
load's ``ingest_path``.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import TYPE_CHECKING, Any

from localstore import _late_meta as late_meta
from localstore import files as fs
from localstore._reconcile_core import META_READ_LIMIT, _from_index, _Scan
from localstore._reconcile_leftovers import _ReconcileLeftovers
from localstore._reconcile_metas import _MetaChanged, _written_after
from localstore._reconcile_problems import (
    _evicted,
    _meta_not_a_file,
    cloud_stub,
    flag_reason,
    said_of_file,
)
from localstore._reconcile_record import _SET_STATS, _stat_columns
from localstore.blueprint import BlueprintMeta, decode_meta, new_id, sha256_hex, utc_now
from localstore.errors import InvalidInputError, InvalidMetaError, StorageError
from localstore.events import Event

if TYPE_CHECKING:
    from localstore.store import CheckReport, Row


class _ReconcileIngest(_ReconcileLeftovers):
    """Reconcile one path: read its pair, decide its identity, record it."""

    def ingest_path(self, rel: str) -> list[Event]:
        """Reconcile one blueprint path (YAML or meta) in its own transaction; returns its events.

        A YAML that is gone removes its blueprint (the caller applies any grace period first).
        """
        if rel.endswith(fs.META_SUFFIX):
            rel = fs.yaml_path_for(rel)
        if not self.store.index.write_open:
            # Judged before the lock (the ingest takes the verdict for the very bytes judged):
            # inside a caller's transaction that would gain nothing, and read the file twice.
            self.store._judge_files_ahead([rel])
        with self.store.index.write() as cur:
            self.ingest_locked(cur, rel)
        self.store.events.publish(self.events)
        return list(self.events)

    def ingest_locked(
        self, cur: Any, rel: str, *, may_delete: bool = True, trust_stat: bool = True
    ) -> bool:
        """Reconcile one YAML path inside the caller's write transaction (events collect in
        ``self.events`` for the caller to publish after its commit).

        Returns False, changing nothing, if the file is missing and ``may_delete`` is false.
        Without ``trust_stat`` a pair whose size, mtime and change time match the index is still
        read and compared by hash (see ``_holds``).
        """
        from localstore.store import CheckReport

        report = CheckReport()
        self._moving = None
        try:
            y_st = os.stat(self.store.root / rel, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):  # (ENOTDIR: a folder of it is a file)
            if not may_delete:
                return False
            row = self._at_path(cur, rel)
            if (
                row is not None
                and self._nfc_alias(rel) is None
                and cloud_stub(self.store.root, rel) is None
            ):
                # (Renamed to its NFD form, or evicted by a sync client: kept; the full pass
                # reports it.)
                self._delete_locked(cur, row, report)
            return True
        if not stat.S_ISREG(y_st.st_mode):
            return True  # a folder or link with a blueprint's name: the scan skips it too
        scan = _Scan()
        scan.yamls[rel] = fs.FileStat.of(y_st)
        meta_rel = fs.meta_path_for(rel)
        with contextlib.suppress(FileNotFoundError):
            m_st = os.stat(self.store.root / meta_rel, follow_symlinks=False)
            if stat.S_ISREG(m_st.st_mode):  # (as the scan: a link is no meta file)
                scan.metas[meta_rel] = fs.FileStat.of(m_st)
        row = self._at_path(cur, rel)
        if (
            row is None
            or not self._stat_matches(row, scan.yamls[rel], scan.metas.get(meta_rel))
            or not (trust_stat or self._holds(row, rel, meta_rel))
        ):
            self._ingest_locked(cur, rel, scan, report)
        return True

    def _restamp(self, cur: Any, rel: str, scan: _Scan) -> bool:
        """Record the scanned stats of a pair whose bytes are the row's (a touch, a chmod, an
        index from before core v8 without change times); False, changing nothing, otherwise.

        Two reads and hashes instead of the whole ingest (parse, validation, lookups): the
        first open of an upgraded 10,000-blueprint home read every pair, and spent 6 s at it.
        The stats are the scan's, taken before the reads: a change after them is seen next time.
        """
        meta_rel = fs.meta_path_for(rel)
        y, m = scan.yamls[rel], scan.metas.get(meta_rel)
        if m is None:
            return False
        row = self._at_path(cur, rel)
        if row is None or row.flagged is not None or not self._holds(row, rel, meta_rel):
            return False
        cur.execute(
            f"UPDATE blueprints SET {_SET_STATS} WHERE rid=?", (*_stat_columns(y, m), row.rid)
        )
        return True

    def _ingest_locked(
        self,
        cur: Any,
        rel: str,
        scan: _Scan,
        report: CheckReport,
        *,
        retried: bool = False,
    ) -> None:
        try:
            self._ingest_once(cur, rel, scan, report, retried=retried)
        except _MetaChanged:
            # Another program saved the meta file after it was read and before a flushed temp
            # was renamed over it (nothing recorded yet): read the pair again, once (a later
            # race is the watcher's next event, or the next open).
            if not retried:
                self._ingest_locked(cur, rel, scan, report, retried=True)
        except (OSError, StorageError) as exc:
            if self._moving is None and not _from_index(exc):
                # Failed before its content could say whose it is (its YAML or meta cannot be
                # read): its inode can. The caller then keeps the old path's blueprint (see
                # ``moving``); without it, the old path was recorded deleted and its meta
                # removed, and the YAML, readable again, got a new id.
                self._moving = self._moved_here(cur, rel, scan)
            raise

    def _ingest_once(
        self,
        cur: Any,
        rel: str,
        scan: _Scan,
        report: CheckReport,
        *,
        retried: bool = False,
    ) -> None:
        store = self.store
        self._meta_placed = False
        self._meta_seen = None
        # (The stats _record records are the scan's, taken before these reads.)
        yaml_bytes = self._read(rel)
        if yaml_bytes is None:
            return
        read = self._meta_bytes_of(cur, rel, yaml_bytes, report)
        if read is None:
            return
        meta_bytes, row_at_path = read
        decoded = self._meta_of(cur, rel, scan, report, yaml_bytes, meta_bytes, row_at_path)
        if decoded is None:
            return
        meta_bytes, found = decoded
        identity, meta, write_meta, copied, replaced = self._pair_identity(
            cur, rel, found, yaml_bytes, row_at_path
        )
        if self._case_collision(cur, rel, identity, report):
            return
        arrived: bytes | None = None  # (the YAML as it arrived with the meta: _late_meta.py)
        if replaced is not None:
            arrived = self._replace_at_path(cur, rel, replaced, copied, meta, report)
        try:
            prepared = store._prepare(rel, yaml_bytes, meta, identity)
        except InvalidInputError as exc:
            detail = said_of_file(exc, rel)
            report.problems.append({"kind": "invalid-yaml", "path": rel, "detail": detail})
            live = identity if identity is not None and not identity.deleted else None
            self._refuse(cur, live, detail, scan, rel)
            return
        kept = self._start_move(cur, identity, rel)  # (from, arriving id: a keep beside cut off)
        if write_meta and not self._place_meta(
            cur, rel, scan, report, meta_bytes, prepared.meta_bytes, meta.id, retried=retried
        ):
            return
        if arrived is not None and sha256_hex(arrived) != sha256_hex(yaml_bytes):
            # An edit made under the made-up id: the version that arrived comes first.
            with contextlib.suppress(InvalidInputError):  # (then the edit alone, as before)
                self._record(cur, identity, store._prepare(rel, arrived, meta), rel, scan, report)
                identity = self._with_id(cur, meta.id)
        mark = len(self.events)
        self._record(cur, identity, prepared, rel, scan, report)
        if kept is not None:
            late_meta.explain_kept(self, mark, *kept, rel, report)

    def _meta_bytes_of(
        self, cur: Any, rel: str, yaml_bytes: bytes, report: CheckReport
    ) -> tuple[bytes | None, Row | None] | None:
        """The bytes of the meta file of the YAML ``rel`` (None: none, not even in a save's temp)
        and the row at ``rel``; None, reported, when the pair is not to be ingested now."""
        store = self.store
        meta_rel = fs.meta_path_for(rel)
        try:
            meta_bytes, self._meta_seen = fs.read_regular_seen(
                store.root / meta_rel, META_READ_LIMIT
            )
        except fs.NotAFileError as exc:
            # A link (or folder) in the meta file's place: read through, a JSON file elsewhere
            # became this blueprint's meta (its id, name and tags), in history and synced; nor
            # is it replaced behind the user's back, as a YAML's link is not. Left as it is
            # and reported until it is moved away; the pair is then taken as one without meta.
            report.problems.append(_meta_not_a_file(meta_rel, exc.what))
            return None
        except FileNotFoundError:
            meta_bytes = None
        row_at_path = self._at_path(cur, rel)
        if meta_bytes is None:
            meta_bytes = self._recover_meta_temp(meta_rel, report)
            if meta_bytes is None and row_at_path is not None:
                stub = cloud_stub(store.root, meta_rel)
                if stub is not None:
                    # Its meta is in iCloud, not gone: one written here (from the index) would
                    # make iCloud keep both once it downloads the real one. Left until it is back.
                    report.problems.append(_evicted(rel, stub))
                    return None
        elif (
            row_at_path is not None
            and sha256_hex(meta_bytes) == row_at_path.meta_sha256
            and sha256_hex(yaml_bytes) != row_at_path.yaml_sha256
        ):
            # New YAML beside the indexed meta: an update may have died between its two
            # renames, its meta still in the (flushed) temp. Only a temp of the same blueprint
            # written after both files is that update's; an older leftover is not.
            y_st = os.stat(store.root / rel, follow_symlinks=False)
            m_st = os.stat(store.root / meta_rel, follow_symlinks=False)
            newer = self._recover_meta_temp(
                meta_rel,
                report,
                same_id=row_at_path.id,
                not_before=_written_after(y_st, m_st),
            )
            meta_bytes = newer or meta_bytes
        return meta_bytes, row_at_path

    def _meta_of(
        self,
        cur: Any,
        rel: str,
        scan: _Scan,
        report: CheckReport,
        yaml_bytes: bytes,
        meta_bytes: bytes | None,
        row_at_path: Row | None,
    ) -> tuple[bytes | None, BlueprintMeta | None] | None:
        """The meta bytes and decoded meta of the pair at ``rel`` (None, None: no meta file),
        those of a moving update's temp when one died between its renames; None when the meta
        file is invalid (reported, and the pair refused)."""
        if meta_bytes is None:
            return None, None
        meta_rel = fs.meta_path_for(rel)
        try:
            meta = decode_meta(meta_bytes, source=meta_rel)
        except InvalidMetaError as exc:
            report.problems.append({"kind": "invalid-meta", "path": meta_rel, "detail": str(exc)})
            self._refuse(cur, row_at_path, flag_reason(exc, rel), scan, rel)
            return None
        if row_at_path is None:
            recovered = self._finish_moving_update(cur, rel, meta, meta_bytes, yaml_bytes, report)
            if recovered is not None:
                return recovered
        return meta_bytes, meta

    def _pair_identity(
        self,
        cur: Any,
        rel: str,
        meta: BlueprintMeta | None,
        yaml_bytes: bytes,
        row_at_path: Row | None,
    ) -> tuple[Row | None, BlueprintMeta, bool, bool, Row | None]:
        """Whose the pair at ``rel`` is (``meta``: its decoded meta file, None: none): (identity,
        meta to record, write the meta, a copy, the row this path held that goes)."""
        identity: Row | None = None
        replaced: Row | None = None
        copied = False  # (a live pair's meta, copied here: given a new id)
        write_meta = False
        if meta is not None:
            identity, meta, write_meta, copied = self._identity_by_meta(
                cur, rel, meta, yaml_bytes, row_at_path
            )
            if row_at_path is not None and (identity is None or row_at_path.id != identity.id):
                # Another pair was put over this path: the blueprint that lived here is gone.
                replaced = row_at_path
        else:
            write_meta = True
            identity = row_at_path or self._match_moved_yaml(cur, sha256_hex(yaml_bytes))
            if identity is not None:
                meta = identity.meta
                if identity.path != rel:
                    # A YAML moved alone: its meta file is still at the old name, and it may
                    # hold edits no pass has read yet (a name or tags changed by hand). Taken
                    # from the index instead, those were lost when that file was removed below.
                    meta = self._meta_left_behind(identity) or meta
            else:
                now = utc_now()
                meta = BlueprintMeta(
                    id=new_id(), name=fs.display_name(rel), created=now, modified=now
                )
        assert meta is not None
        return identity, meta, write_meta, copied, replaced

    def _replace_at_path(
        self,
        cur: Any,
        rel: str,
        replaced: Row,
        copied: bool,
        meta: BlueprintMeta,
        report: CheckReport,
    ) -> bytes | None:
        """Take the path ``rel`` from ``replaced``, the blueprint that lived there: park it (it
        moves later in this pass), retire its made-up id, or record it deleted. Returns the YAML
        as it arrived under a retired made-up id, else None."""
        # (A copy of a live pair's meta is no meta of this YAML's own come late: its new id
        # got the made-up id's first YAML as its first revision, and the retired id's event
        # named it as the one this YAML's own meta had brought.) A live blueprint moving here
        # is: a sync tool's move whose meta came after the YAML's quiet period (the watcher
        # held it as a copy until the old pair went). Taken for another pair put over this
        # one, the made-up id was recorded deleted with no reason given.
        own = not copied
        found = late_meta.made_up(cur, replaced) if own else None
        if self._moves_later(replaced, rel):
            self._park(cur, replaced)
        elif found is not None:
            return late_meta.retire(self, cur, replaced, found, meta, report)
        else:
            self._delete_locked(cur, replaced, report)
        return None

    def _start_move(self, cur: Any, identity: Row | None, rel: str) -> tuple[str, str] | None:
        """Note that ``identity`` moves to ``rel`` (if it is live at another path) and have its
        old meta follow; returns (old path, arriving id) when a keep beside was cut off."""
        if identity is None or identity.deleted or identity.path == rel:
            return None
        self._moving = identity.id
        arriving = late_meta.kept_before(self, cur, identity, rel)
        kept = (identity.path, arriving) if arriving is not None else None
        # A moved pair brings its meta along; only a YAML moved alone needs one written
        # (write_meta is already set then). Rewriting every moved meta cost a durable write
        # per file on a folder rename and reformatted the user's file.
        self._follow_meta(identity.path, rel)
        return kept

    def _place_meta(
        self,
        cur: Any,
        rel: str,
        scan: _Scan,
        report: CheckReport,
        meta_bytes: bytes | None,
        data: bytes,
        blueprint_id: str,
        *,
        retried: bool,
    ) -> bool:
        """Write the pair's meta file (``data``) beside the YAML ``rel``: over the one read
        (``meta_bytes``), or to a free name. False when another program's meta came first: the
        pair is then read again, once, and this ingest records nothing."""
        meta_rel = fs.meta_path_for(rel)
        if meta_bytes is not None:
            # Only over the meta file read (or the temp recovered into its place): another
            # program's save since (a tool finishing the pair it was copying, the person
            # typing a name) was replaced unrecorded by a plain rename.
            if not self._write_meta_over(meta_rel, data):
                if not retried:
                    self._ingest_locked(cur, rel, scan, report, retried=True)
                return False
        elif not fs.create_file(self.store.root / meta_rel, data):
            # The pair's own meta came since it was read (a tool writing the pair file by
            # file): replacing it lost its id for good. Read the pair again, once (a later
            # race is the watcher's next event, or the next open).
            if not retried:
                self._ingest_locked(cur, rel, scan, report, retried=True)
            return False
        self._meta_placed = True
        report.fixed.append({"kind": "meta-written", "path": meta_rel, "detail": blueprint_id})
        return True
