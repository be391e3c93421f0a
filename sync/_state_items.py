"""What this device knows of each server row (``sync_items``) and the merge base it keeps
(``sync_bases``): read one or many, record what a pull or an accepted push settled."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from localstore._revisions import revision_text
from sync._state_watermark import _unsettle
from sync.remote import server_path_key


@dataclass(frozen=True, slots=True)
class ItemState:
    """What this device recorded about one server row."""

    id: str
    base_rev: int | None
    base_seq: int
    base_hash: str
    base_path: str
    base_deleted: bool
    synced_op_id: int


@dataclass(frozen=True, slots=True)
class Base:
    """The content of a blueprint at its base revision."""

    rev: int
    path: str
    content: str
    meta: dict[str, Any]
    # The local revision holding this content when the base is kept as a hash into history
    # (the newest one with that hash); None for a base kept as text (e.g. from a merge).
    local_rev: int | None = None


# -- items and bases ----------------------------------------------------------------------------


_ITEM_COLUMNS = "id, base_rev, base_seq, base_hash, base_path, base_deleted, synced_op_id"


def _item_state(r: Sequence[Any]) -> ItemState:
    """An ItemState from a row of _ITEM_COLUMNS."""
    return ItemState(
        str(r[0]),
        None if r[1] is None else int(r[1]),
        int(r[2]),
        str(r[3]),
        str(r[4]),
        bool(r[5]),
        int(r[6]),
    )


def get_item(cur: Any, blueprint_id: str) -> ItemState | None:
    """The recorded server knowledge of one blueprint."""
    rows = cur.execute(
        f"SELECT {_ITEM_COLUMNS} FROM sync_items WHERE id = ?", (blueprint_id,)
    ).fetchall()
    return _item_state(rows[0]) if rows else None


# Ids per IN (...) query: well under SQLite's variable limit, and a pulled page is at most 1000.
IN_CHUNK = 500


def items_for(cur: Any, ids: Sequence[str]) -> dict[str, ItemState]:
    """:func:`get_item` for many ids: one query per ``IN_CHUNK`` ids instead of one per id.

    Ids without a row are absent from the result (keys are the ids as given).
    """
    out: dict[str, ItemState] = {}
    for i in range(0, len(ids), IN_CHUNK):
        part = ids[i : i + IN_CHUNK]
        for r in cur.execute(
            f"SELECT {_ITEM_COLUMNS} FROM sync_items WHERE id IN ({','.join('?' * len(part))})",
            tuple(part),
        ):
            out[r[0]] = _item_state(r)
    return out


def current_op_id(cur: Any, blueprint_id: str) -> int:
    """The blueprint's current op id (0 when the index has no row)."""
    rows = cur.execute("SELECT op_id FROM blueprints WHERE id = ?", (blueprint_id,)).fetchall()
    return int(rows[0][0]) if rows else 0


_BASE_UPSERT = (
    "INSERT INTO sync_bases (id, rev, path, content, meta, hash) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET rev = excluded.rev, path = excluded.path, "
    "content = excluded.content, meta = excluded.meta, hash = excluded.hash"
)


def record_base(
    cur: Any,
    blueprint_id: str,
    *,
    rev: int,
    seq: int,
    content_hash: str,
    path: str,
    deleted: bool,
    content: str | None,
    meta: dict[str, Any] | None,
    synced_op_id: int | None,
    held_hash: str | None = None,
) -> None:
    """Remember the server row this device now builds on.

    ``synced_op_id`` None keeps the recorded one (the local copy stays dirty); ``content`` None
    keeps the stored base content (a tombstone keeps the last live content as merge base).
    ``held_hash`` is the content hash of a local revision that holds exactly this content (the
    local hash, in case the server's differs): only that hash is stored.
    """
    cur.execute(
        "INSERT INTO sync_items (id, base_rev, base_seq, base_hash, base_path, base_deleted, "
        "synced_op_id) VALUES (?, ?, ?, ?, ?, ?, coalesce(?, 0)) ON CONFLICT(id) DO UPDATE SET "
        "base_rev = excluded.base_rev, base_seq = excluded.base_seq, "
        "base_hash = excluded.base_hash, base_path = excluded.base_path, "
        "base_deleted = excluded.base_deleted, "
        "synced_op_id = coalesce(?, sync_items.synced_op_id)",
        (blueprint_id, rev, seq, content_hash, path, int(deleted), synced_op_id, synced_op_id),
    )
    if content is not None and held_hash:
        cur.execute(_BASE_UPSERT, (blueprint_id, rev, path, "", "", held_hash))
    elif content is not None:
        meta_json = json.dumps(meta or {}, ensure_ascii=False)
        cur.execute(_BASE_UPSERT, (blueprint_id, rev, path, content, meta_json, ""))
    # A newer server row is now the base: an older one parked as unstorable is history (it
    # stayed listed, and counted as needing attention, after its successor was applied).
    cur.execute(_DROP_PULL_PARKED, (blueprint_id,))
    if synced_op_id is not None:
        cur.execute(_DROP_PUSH_SETTLED, (blueprint_id,))
    _unsettle(cur, blueprint_id)


_DROP_PULL_PARKED = "DELETE FROM sync_quarantine WHERE id = ? AND direction = 'pull'"

# A refused push whose blueprint has nothing left to push (synced at its current op id): the
# change stopped being one without a push (a never-synced blueprint deleted, its delete settled
# unsent; a pulled row taken over the local copy, or the copy's edit moved to a keep-both copy
# with an id of its own). Left, the entry stayed listed as needing attention for good, with
# nothing a retry could send. Only the accepted push (record_accepted) dropped entries before.
_DROP_PUSH_SETTLED = (
    "DELETE FROM sync_quarantine WHERE id = ?1 AND direction = 'push' "
    "AND coalesce((SELECT op_id FROM blueprints WHERE id = ?1), 0) "
    "<= coalesce((SELECT synced_op_id FROM sync_items WHERE id = ?1), 0)"
)


def drop_pull_parked(cur: Any, blueprint_id: str) -> None:
    """Drop a parked server row of ``blueprint_id`` (a later row of the id settled it)."""
    cur.execute(_DROP_PULL_PARKED, (blueprint_id,))
    _unsettle(cur, blueprint_id)


def record_synced_bases(cur: Any, saved: Sequence[tuple[Any, str]]) -> None:
    """:func:`record_base` for many live server rows just stored as they are (clean takes).

    ``saved`` pairs each ServerRow-like row with the content hash of the local revision now
    holding it. Each row is recorded synced at the blueprint's current op id, so none is dirty
    afterwards and W needs no lowering. Two statements for the run instead of three per row.
    """
    rows = [r for r, _ in saved]
    cur.executemany(
        "INSERT INTO sync_items (id, base_rev, base_seq, base_hash, base_path, base_deleted, "
        "synced_op_id) VALUES (?1, ?2, ?3, ?4, ?5, 0, "
        "coalesce((SELECT op_id FROM blueprints WHERE id = ?1), 0)) ON CONFLICT(id) DO UPDATE SET "
        "base_rev = excluded.base_rev, base_seq = excluded.base_seq, "
        "base_hash = excluded.base_hash, base_path = excluded.base_path, base_deleted = 0, "
        "synced_op_id = excluded.synced_op_id",
        [(r.id, r.rev, r.seq, r.content_hash, r.path) for r in rows],
    )
    cur.executemany(_BASE_UPSERT, [(r.id, r.rev, r.path, "", "", h) for r, h in saved])
    # As in record_base; one read first, so a download with nothing parked pays no deletes.
    if cur.execute("SELECT 1 FROM sync_quarantine LIMIT 1").fetchall():
        cur.executemany(_DROP_PULL_PARKED, [(r.id,) for r in rows])
        cur.executemany(_DROP_PUSH_SETTLED, [(r.id,) for r in rows])


@dataclass(frozen=True, slots=True)
class Accepted:
    """A pushed change the server applied (what :func:`record_accepted` records)."""

    id: str
    rev: int
    seq: int
    content_hash: str
    path: str
    deleted: bool
    op_id: int


def record_accepted(cur: Any, accepted: Sequence[Accepted]) -> None:
    """Record many applied pushes: new base (a hash into history), synced at the pushed op id.

    Also drops their quarantine entries. No :func:`_unsettle`: each blueprint ends synced at
    the op id it pushed, or was edited since, which gave it an op id above any watermark.
    """
    cur.executemany(
        "INSERT INTO sync_items (id, base_rev, base_seq, base_hash, base_path, base_deleted, "
        "synced_op_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "base_rev = excluded.base_rev, base_seq = excluded.base_seq, "
        "base_hash = excluded.base_hash, base_path = excluded.base_path, "
        "base_deleted = excluded.base_deleted, "
        "synced_op_id = max(sync_items.synced_op_id, excluded.synced_op_id)",
        [(a.id, a.rev, a.seq, a.content_hash, a.path, int(a.deleted), a.op_id) for a in accepted],
    )
    # A tombstone keeps the last live base (the merge base if an edit revives it elsewhere).
    cur.executemany(
        _BASE_UPSERT,
        [(a.id, a.rev, a.path, "", "", a.content_hash) for a in accepted if not a.deleted],
    )
    cur.executemany("DELETE FROM sync_quarantine WHERE id = ?", [(a.id,) for a in accepted])


def renew_push_op(cur: Any, blueprint_id: str, op_id: int) -> None:
    """Push this item next time under a fresh op id (its base changed while it stayed dirty)."""
    cur.execute(
        "INSERT INTO sync_items (id, push_op_id) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET "
        "push_op_id = excluded.push_op_id",
        (blueprint_id, op_id),
    )
    _unsettle(cur, blueprint_id)


def server_holder(cur: Any, path: str) -> str | None:
    """The id this device last synced as live at ``path`` on the server, or None: paths compared
    as the server compares them (``sync.remote.server_path_key``, its ``lower(path)``). A scan:
    asked only for rename cycles.

    SQLite's NOCASE folds ASCII letters only: a swap of 'É' and 'Ö' to 'ö' and 'é' was no cycle
    here while the server refused both renames as ``path_taken``, so neither ever went up.
    """
    rows = cur.execute(
        "SELECT id FROM sync_items WHERE base_rev IS NOT NULL AND base_deleted = 0 "
        "AND base_path = ? COLLATE NOCASE LIMIT 1",
        (path,),
    ).fetchall()
    if rows:  # (equal but for ASCII case: one key on the server too)
        return str(rows[0][0])
    # Otherwise only a base path with a character beyond ASCII can have the key (the Kelvin
    # sign's is 'k', for one): those few are keyed in Python.
    key = server_path_key(path)
    for rid, base_path in cur.execute(
        "SELECT id, base_path FROM sync_items WHERE base_rev IS NOT NULL AND base_deleted = 0 "
        "AND base_path GLOB '*[^ -~]*'"
    ):
        if server_path_key(str(base_path)) == key:
            return str(rid)
    return None


def mark_synced(cur: Any, blueprint_id: str, op_id: int) -> None:
    """Record that the local copy at ``op_id`` needs no push (keeps any base)."""
    cur.execute(
        "INSERT INTO sync_items (id, synced_op_id) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET "
        "synced_op_id = max(sync_items.synced_op_id, excluded.synced_op_id)",
        (blueprint_id, op_id),
    )
    cur.execute(_DROP_PUSH_SETTLED, (blueprint_id,))  # (kept if edited since ``op_id``)


def mark_unsynced(cur: Any, blueprint_id: str) -> None:
    """Make the item dirty again (it is uploaded on the next push)."""
    cur.execute("UPDATE sync_items SET synced_op_id = 0 WHERE id = ?", (blueprint_id,))
    _unsettle(cur, blueprint_id)


def forget_server_row(cur: Any, blueprint_id: str) -> None:
    """The server has no row for this id any more: the next push is a create."""
    cur.execute(
        "UPDATE sync_items SET base_rev = NULL, base_hash = '', base_deleted = 0 WHERE id = ?",
        (blueprint_id,),
    )
    _unsettle(cur, blueprint_id)


def get_base(cur: Any, blueprint_id: str) -> Base | None:
    """The stored merge base of one blueprint (None if unknown)."""
    rows = cur.execute(
        "SELECT rev, path, content, meta, hash FROM sync_bases WHERE id = ?", (blueprint_id,)
    ).fetchall()
    if not rows:
        return None
    r = rows[0]
    if not r[4]:
        return Base(int(r[0]), str(r[1]), str(r[2]), json.loads(r[3]))
    held = local_revision_with_hash(cur, blueprint_id, str(r[4]))
    # 'modified' may differ from the server's copy; the meta merge never uses the base's.
    if held is None:
        return None
    return Base(int(r[0]), str(r[1]), held.content, held.meta, local_rev=held.rev)


def local_revision_with_hash(cur: Any, blueprint_id: str, digest: str) -> Base | None:
    """A past local revision of this blueprint with that content hash (newest), if any."""
    rows = cur.execute(
        "SELECT rev, path, content, meta FROM revisions WHERE id = ? AND content_hash = ? "
        "AND deleted = 0 ORDER BY rev DESC LIMIT 1",
        (blueprint_id, digest),
    ).fetchall()
    if not rows:
        return None
    r = rows[0]
    return Base(int(r[0]), str(r[1]), revision_text(r[2]), json.loads(revision_text(r[3])))
