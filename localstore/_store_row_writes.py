"""What a recorded change writes in the index: the blueprint's row, its search tables' text,
its revision, and the events it publishes. The layer above ``_StoreUnrecorded``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from localstore import files as fs
from localstore._fts_text import indexed_text
from localstore._revisions import revision_text
from localstore._store_search import fts_tags
from localstore._store_types import Row, _Prepared
from localstore._store_unrecorded import _StoreUnrecorded
from localstore.blueprint import (
    BlueprintMeta,
    content_hash,
    encode_meta,
    sha256_hex,
    tags_json,
    utc_now,
)
from localstore.events import Event

# The columns a save writes, in the order of _row_values.
_ROW_WRITE = (
    "id",
    "path",
    "path_key",
    "folder",
    "name",
    "description",
    "author",
    "version",
    "tags",
    "created",
    "modified",
    "yaml_sha256",
    "meta_sha256",
    "content_hash",
    "yaml_size",
    "yaml_mtime_ns",
    "meta_size",
    "meta_mtime_ns",
    "valid",
    "problems",
    "meta_json",
    "rev",
    "op_id",
    "yaml_ctime_ns",
    "meta_ctime_ns",
    "yaml_ino",
    "meta_ino",
    "judged_by",
)


def change_events(previous: Row | None, p: _Prepared, rev: int, origin: str) -> list[Event]:
    """The events of one recorded change: created, moved and/or modified, and invalid."""
    old_path = previous.path if previous is not None and not previous.deleted else None
    events = []
    if old_path is None:
        events.append(Event("created", p.meta.id, p.path, origin, rev, content_hash=p.content_hash))
    else:
        assert previous is not None
        if old_path != p.path:
            events.append(Event("moved", p.meta.id, p.path, origin, rev, old_path, p.content_hash))
        if old_path == p.path or previous.content_hash != p.content_hash:
            events.append(
                Event("modified", p.meta.id, p.path, origin, rev, content_hash=p.content_hash)
            )
    if not p.valid:
        events.append(
            Event(
                "invalid",
                p.meta.id,
                p.path,
                origin,
                rev,
                content_hash=p.content_hash,
                detail="; ".join(p.problems),
            )
        )
    return events


def _row_values(
    p: _Prepared,
    meta_sha: str,
    rev: int,
    op_id: int,
    y_st: os.stat_result | fs.FileStat,
    m_st: os.stat_result | fs.FileStat,
) -> tuple[Any, ...]:
    """The values a save writes in the row of ``p``, in the order of _ROW_WRITE."""
    m = p.meta
    return (
        m.id,
        p.path,
        fs.path_key(p.path),
        fs.folder_of(p.path),
        m.name,
        m.description,
        m.author,
        m.version,
        tags_json(m.tags),
        m.created,
        m.modified,
        p.yaml_sha256,
        meta_sha,
        p.content_hash,
        y_st.st_size,
        y_st.st_mtime_ns,
        m_st.st_size,
        m_st.st_mtime_ns,
        int(p.valid),
        json.dumps(list(p.problems), ensure_ascii=False) if p.problems else "[]",
        p.meta_bytes.decode("utf-8"),  # the meta file's own JSON (reconcile stores the same)
        rev,
        op_id,
        # (For a save, the temps' times: _place_files records the renamed files' ones.)
        y_st.st_ctime_ns,
        m_st.st_ctime_ns,
        # (A rename keeps the inode: the temp's is the placed file's, which _place_files
        # checks before it records the change times.)
        fs.ino_key(y_st.st_ino),
        fs.ino_key(m_st.st_ino),
        p.judged_by,
    )


def _changed_columns(existing: Row, values: tuple[Any, ...]) -> list[tuple[str, Any]]:
    """The columns of ``existing``'s row whose values (in the order of _ROW_WRITE) differ, with
    the new values, and the flag and deletion a save clears."""
    before = (
        existing.id,
        existing.path,
        fs.path_key(existing.path),
        fs.folder_of(existing.path),
        existing.name,
        existing.description,
        existing.author,
        existing.version,
        tags_json(existing.tags),
        existing.created,
        existing.modified,
        existing.yaml_sha256,
        existing.meta_sha256,
        existing.content_hash,
        existing.yaml_size,
        existing.yaml_mtime_ns,
        existing.meta_size,
        existing.meta_mtime_ns,
        int(existing.valid),
        json.dumps(list(existing.problems), ensure_ascii=False),
        existing.meta_json,
        existing.rev,
        existing.op_id,
        existing.yaml_ctime_ns,
        existing.meta_ctime_ns,
        existing.yaml_ino,
        existing.meta_ino,
        existing.judged_by,
    )
    changed = [(c, v) for c, v, old in zip(_ROW_WRITE, values, before, strict=True) if v != old]
    if existing.flagged is not None:
        changed.append(("flagged", None))
    if existing.deleted:
        changed.append(("deleted", 0))
    return changed


def _described_same(indexed: Row | None, m: BlueprintMeta, rel: str, text: str | None) -> bool:
    """Whether the search entry of ``indexed`` (None: none) has the described columns of ``m``
    at ``rel`` already (never when ``text`` is None: the entry goes)."""
    return (
        indexed is not None
        and text is not None
        and indexed.name == m.name
        and indexed.description == m.description
        and tuple(indexed.tags) == tuple(m.tags)
        and indexed.path == rel
    )


def _remove_entries(cur: Any, rid: int, indexed: Row, described_same: bool) -> None:
    """Remove the search entries of the row ``rid`` indexed from ``indexed`` (the entry of the
    described columns only if ``described_same`` is false)."""
    # External content: FTS5 removes an entry given exactly the values it indexed, which
    # are the row's fields and the text of its current revision.
    old = cur.execute(
        "SELECT content FROM revisions WHERE id = ? AND rev = ?", (indexed.id, indexed.rev)
    ).fetchall()
    old_name, old_description, old_path = (
        indexed_text(indexed.name),
        indexed_text(indexed.description),
        indexed_text(indexed.path),
    )
    old_tags = indexed_text(fts_tags(indexed.tags))
    cur.execute(
        "INSERT INTO blueprints_fts(blueprints_fts, rowid, name, description, tags, "
        "content, path) VALUES ('delete', ?, ?, ?, ?, ?, ?)",
        (
            rid,
            old_name,
            old_description,
            old_tags,
            indexed_text(revision_text(old[0][0])) if old else "",
            old_path,
        ),
    )
    if not described_same:
        cur.execute(
            "INSERT INTO blueprints_described(blueprints_described, rowid, name, "
            "description, tags, path) VALUES ('delete', ?, ?, ?, ?, ?)",
            (rid, old_name, old_description, old_tags, old_path),
        )


def _entry_text(m: BlueprintMeta, rel: str, text: str) -> tuple[str, str, str, str]:
    """The name, description, path and content search indexes for ``m`` at ``rel``."""
    # As the blueprints_text view gives them (localstore._fts_text: CJK characters apart).
    name, description, path = (
        indexed_text(m.name),
        indexed_text(m.description),
        indexed_text(rel),
    )
    return name, description, path, indexed_text(text)


class _StoreRowWrites(_StoreUnrecorded):
    """Index rows, search text and revisions written (the layer above ``_StoreUnrecorded``)."""

    def _upsert_row(
        self,
        cur: Any,
        existing: Row | None,
        p: _Prepared,
        rev: int,
        op_id: int,
        y_st: os.stat_result | fs.FileStat,
        m_st: os.stat_result | fs.FileStat,
    ) -> tuple[str, str, int]:
        """Insert or update the blueprint's row; returns the sha256 of its YAML and meta bytes,
        and the row's rid."""
        m = p.meta
        yaml_sha, meta_sha = p.yaml_sha256, sha256_hex(p.meta_bytes)
        values = _row_values(p, meta_sha, rev, op_id, y_st, m_st)
        if existing is None:
            cur.execute(
                f"INSERT INTO blueprints ({', '.join(_ROW_WRITE)}, flagged, deleted) "
                f"VALUES ({','.join('?' * len(_ROW_WRITE))}, NULL, 0)",
                values,
            )
            rid = cur.connection.last_insert_rowid()  # (RETURNING costs a statement journal)
        else:
            rid = existing.rid
            # SET only what changed: SQLite rewrites the entry of every index whose column is in
            # the SET list, changed or not (eight indexes: a third of a save's pages).
            changed = _changed_columns(existing, values)
            cur.execute(
                f"UPDATE blueprints SET {', '.join(c + '=?' for c, _ in changed)} WHERE rid=?",
                (*(v for _, v in changed), rid),
            )
        same_tags = existing is not None and not existing.deleted and existing.tags == m.tags
        self._reindex_text(
            cur,
            rid,
            existing if existing is not None and not existing.deleted else None,
            m,
            p.path,
            p.text,
            tags_indexed=same_tags,
            new_row=existing is None,
        )
        return yaml_sha, meta_sha, rid

    def _reindex_text(
        self,
        cur: Any,
        rid: int,
        indexed: Row | None,
        m: BlueprintMeta,
        rel: str,
        text: str | None,
        *,
        tags_indexed: bool = False,
        new_row: bool = False,
    ) -> None:
        """Replace a blueprint's search entries; ``indexed`` is the live row it was indexed from,
        ``new_row`` says the row was just inserted (so it has no tags to remove)."""
        tags_source = fts_tags(m.tags)
        tags_text = indexed_text(tags_source)
        # The small index of the described columns is left alone when none of them changed
        # (most saves change only the content).
        described_same = _described_same(indexed, m, rel, text)
        if indexed is not None:
            _remove_entries(cur, rid, indexed, described_same)
        if (not tags_indexed or text is None) and not new_row:
            cur.execute("DELETE FROM blueprint_tags WHERE rid = ?", (rid,))
            tags_indexed = False
        if text is None:
            cur.execute("DELETE FROM fts_plain WHERE rid = ?", (rid,))
            return
        name, description, path, content = _entry_text(m, rel, text)
        cur.execute(
            "INSERT INTO blueprints_fts(rowid, name, description, tags, content, path) "
            "VALUES (?,?,?,?,?,?)",
            (rid, name, description, tags_text, content, path),
        )
        # The view calls indexed_text() only for rows missing from fts_plain (index.py, v6);
        # indexed_text() gives back the very object it was given when there is nothing to split.
        plain = (
            name is m.name
            and description is m.description
            and path is rel
            and content is text
            and tags_text is tags_source
        )
        cur.execute(
            "INSERT OR IGNORE INTO fts_plain VALUES (?)"
            if plain
            else "DELETE FROM fts_plain WHERE rid = ?",
            (rid,),
        )
        if not described_same:
            cur.execute(
                "INSERT INTO blueprints_described(rowid, name, description, tags, path) "
                "VALUES (?,?,?,?,?)",
                (rid, name, description, tags_text, path),
            )
        if not tags_indexed and m.tags:
            cur.executemany("INSERT INTO blueprint_tags VALUES (?, ?)", [(rid, t) for t in m.tags])

    def _add_revision(
        self,
        cur: Any,
        blueprint_id: str,
        rev: int,
        op_id: int,
        origin: str,
        rel: str,
        yaml_bytes: bytes,
        meta: BlueprintMeta,
        deleted: bool,
        *,
        meta_bytes: bytes | None = None,
        chash: str | None = None,
        text: str | None = None,
    ) -> None:
        """Record one revision; ``meta_bytes``/``chash``/``text`` (``yaml_bytes`` decoded) when
        the caller has them already."""
        cur.execute(
            "INSERT INTO revisions (id, rev, op_id, origin, device, ts, path, content, meta, "
            "content_hash, deleted) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                blueprint_id,
                rev,
                op_id,
                origin,
                self._revision_device(cur),
                utc_now(),
                rel,
                text if text is not None else yaml_bytes.decode("utf-8"),
                (meta_bytes if meta_bytes is not None else encode_meta(meta)).decode("utf-8"),
                chash if chash is not None else content_hash(yaml_bytes, meta),
                int(deleted),
            ),
        )
