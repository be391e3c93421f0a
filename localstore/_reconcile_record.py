"""Recording a pair in the index: a new revision, a refreshed stat, a flag, a refusal, a delete.

The layer of ``Reconciler`` that writes rows, revisions and events for what the ingest decided,
and the stat columns it writes (``_SET_STATS``, ``_stat_columns``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from localstore import files as fs
from localstore._reconcile_core import RefusedPair, _Scan
from localstore._reconcile_problems import _ReconcileProblems
from localstore.blueprint import encode_meta, sha256_hex
from localstore.events import Event

if TYPE_CHECKING:
    from localstore.store import CheckReport, Row, _Prepared


# The stat recorded for a file no scan saw before it was read: matches no file (see _record).
_UNSEEN = fs.FileStat(-2, -2, -2, -2)


def _stat_columns(
    y: fs.FileStat | os.stat_result, m: fs.FileStat | os.stat_result
) -> tuple[int, ...]:
    """The values of the eight stat columns (SET yaml_size=?, ... meta_ino=?) for ``y``, ``m``."""
    return (
        y.st_size,
        y.st_mtime_ns,
        y.st_ctime_ns,
        fs.ino_key(y.st_ino),
        m.st_size,
        m.st_mtime_ns,
        m.st_ctime_ns,
        fs.ino_key(m.st_ino),
    )


_SET_STATS = (
    "yaml_size=?, yaml_mtime_ns=?, yaml_ctime_ns=?, yaml_ino=?, "
    "meta_size=?, meta_mtime_ns=?, meta_ctime_ns=?, meta_ino=?"
)


class _ReconcileRecord(_ReconcileProblems):
    """Write what the ingest decided into the index: rows, revisions, flags, deletes, events."""

    def _record(
        self,
        cur: Any,
        identity: Row | None,
        prepared: object,
        rel: str,
        scan: _Scan,
        report: CheckReport,
    ) -> None:
        from localstore.store import _Prepared, change_events

        assert isinstance(prepared, _Prepared)
        store = self.store
        y_st, m_st = self._recorded_stats(rel, scan)
        if (
            identity is not None
            and not identity.deleted
            and identity.path == rel
            and identity.content_hash == prepared.content_hash
        ):
            self._refresh_stats(cur, identity, prepared, y_st, m_st)
            return
        rev = (identity.rev if identity else 0) + 1
        op_id = store.index.next_op_id(cur)
        store._upsert_row(cur, identity, prepared, rev, op_id, y_st, m_st)
        if identity is not None and self._parked.pop(identity.id, None) is not None:
            # (_upsert_row sets path_key only if the key of the path changed: set it here.)
            cur.execute(
                "UPDATE blueprints SET path_key = ? WHERE rid = ?", (fs.path_key(rel), identity.rid)
            )
        store._add_revision(
            cur,
            prepared.meta.id,
            rev,
            op_id,
            self.origin,
            rel,
            prepared.yaml_bytes,
            prepared.meta,
            False,
        )
        events = change_events(identity, prepared, rev, self.origin)
        self.events.extend(events)
        kind = events[0].kind
        report.fixed.append({"kind": kind, "path": rel, "detail": prepared.meta.id})

    def _recorded_stats(
        self, rel: str, scan: _Scan
    ) -> tuple[fs.FileStat | os.stat_result, fs.FileStat | os.stat_result]:
        """The stats to record for the pair at ``rel``: the YAML's and the meta file's."""
        meta_rel = fs.meta_path_for(rel)
        # The stats recorded are the scan's, taken before the files were read. Taken after (as
        # they were), an edit saved during the read was recorded with the old bytes' hash and
        # the new file's stat: the index took the file for unchanged, nothing read it again
        # while no watcher ran, and the next save overwrote the edit unrecorded. Such an edit
        # now leaves the recorded stat unlike the file's, so the next look (open, load, save,
        # the watcher) reads it. (A file the scan did not see gets a stat no file has: the
        # same.) A meta this ingest put in place itself is stat'ed after that, as a save's is.
        y_st: fs.FileStat | os.stat_result = scan.yamls.get(rel, _UNSEEN)
        m_st: fs.FileStat | os.stat_result = (
            os.lstat(self.store.root / meta_rel)
            if self._meta_placed
            else scan.metas.get(meta_rel, _UNSEEN)
        )
        return y_st, m_st

    @staticmethod
    def _refresh_stats(
        cur: Any,
        identity: Row,
        prepared: _Prepared,
        y_st: fs.FileStat | os.stat_result,
        m_st: fs.FileStat | os.stat_result,
    ) -> None:
        """Record new stats and meta for ``identity``, whose content ``prepared`` has already."""
        # Same content (a touch, or only 'modified' changed): refresh the stat cache only.
        # A flagged row is healed the same way: it still holds that content as its last good
        # revision, so a file that was invalid for a moment (truncated, then written back)
        # is no new revision, nor an op id for sync to push. (Row.holds() is False while
        # flagged: it served here and recorded exactly such a revision.)
        cur.execute(
            f"UPDATE blueprints SET {_SET_STATS}, yaml_sha256=?, meta_sha256=?, meta_json=?, "
            "modified=?, flagged=NULL WHERE rid=?",
            (
                *_stat_columns(y_st, m_st),
                sha256_hex(prepared.yaml_bytes),
                sha256_hex(prepared.meta_bytes),
                encode_meta(prepared.meta).decode("utf-8"),
                prepared.meta.modified,
                identity.rid,
            ),
        )

    def _refuse(self, cur: Any, row: Row | None, reason: str, scan: _Scan, rel: str) -> None:
        """The pair at ``rel`` is not taken for ``reason`` (flag_reason: what check and status
        say, with what to do): flag the live ``row`` it would update, or, when it is no recorded
        blueprint, tell subscribers with an ``invalid`` event of no id.

        The event has no id as status lists such a file: the meta's id, or one made up, was
        never recorded, and an app that looked it up was told "not found". A new pair whose
        meta file was refused got no event at all (one whose YAML was refused did): the app
        showed nothing of a file the user could see was not taken."""
        if row is not None:
            self._flag(cur, row, reason, scan, rel)
        else:
            meta = scan.metas.get(fs.meta_path_for(rel))
            self.refused[rel] = RefusedPair(scan.yamls.get(rel), meta, reason)
            self.events.append(Event("invalid", "", rel, self.origin, detail=reason))

    def _flag(self, cur: Any, row: Row, reason: str, scan: _Scan, rel: str) -> None:
        """Keep the last good revision indexed, remember why the file is not accepted."""
        y = scan.yamls.get(rel)
        m = scan.metas.get(fs.meta_path_for(rel))
        cur.execute(
            f"UPDATE blueprints SET flagged=?, {_SET_STATS} WHERE rid=?",
            (
                reason,
                y.st_size if y else row.yaml_size,
                y.st_mtime_ns if y else row.yaml_mtime_ns,
                y.st_ctime_ns if y else row.yaml_ctime_ns,
                fs.ino_key(y.st_ino) if y else row.yaml_ino,
                m.st_size if m else -1,
                m.st_mtime_ns if m else -1,
                m.st_ctime_ns if m else -1,
                fs.ino_key(m.st_ino) if m else None,
                row.rid,
            ),
        )
        if row.flagged != reason:
            self.events.append(
                Event("invalid", row.id, row.path, self.origin, row.rev, detail=reason)
            )

    def _delete_locked(self, cur: Any, row: Row, report: CheckReport, *, detail: str = "") -> None:
        content = self.store._revision_content(row.id, row.rev).encode("utf-8")
        meta_abs = self.store.root / fs.meta_path_for(row.path)
        if meta_abs.exists() and not (self.store.root / row.path).exists():
            fs.remove_file(meta_abs)
        rev = self.store._mark_deleted(cur, row, content, self.origin)
        self.events.append(
            Event(
                "deleted",
                row.id,
                row.path,
                self.origin,
                rev=rev,
                content_hash=row.content_hash,
                detail=detail,
            )
        )
        report.fixed.append({"kind": "deleted", "path": row.path, "detail": row.id})
