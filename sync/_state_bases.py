"""Server bases in bulk: the mark of the base record kept besides the index
(``sync.base_record``), the bases it lists and takes back after a rebuild, and the marks verify
compares."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sync._state_items import IN_CHUNK
from sync._state_keys import get_cursor, get_state, set_state
from sync._state_watermark import _unsettle

BASE_RECORD_KEY = "base_record"


def base_record_mark(cur: Any) -> tuple[str, int] | None:
    """(identity, seq) of the last append to ``state/sync-bases.jsonl`` (``sync.base_record``):
    every base with ``base_seq`` above that seq may be missing from the file. None: never
    written from this index (a new home, an older version's index, or one `check --fix` rebuilt).
    """
    raw = get_state(cur, BASE_RECORD_KEY)
    if raw is None:
        return None
    try:
        mark = json.loads(raw)
        return str(mark["identity"]), int(mark["seq"])
    except (ValueError, KeyError, TypeError):
        return None


def set_base_record_mark(cur: Any, identity: str, seq: int) -> None:
    set_state(cur, BASE_RECORD_KEY, json.dumps({"identity": identity, "seq": seq}))


def lower_base_record_mark(cur: Any, seq: int) -> None:
    """Make the next append reach bases recorded from rows at ``seq + 1`` and above (rows below
    the cursor applied again by a quarantine retry)."""
    mark = base_record_mark(cur)
    if mark is not None and mark[1] > seq:
        set_base_record_mark(cur, mark[0], max(seq, 0))


def bases_since(cur: Any, seq: int) -> list[tuple[str, int, int, str, str, bool]]:
    """(id, rev, seq, hash, path, deleted) of every server base recorded with ``base_seq > seq``."""
    return [
        (str(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4]), bool(r[5]))
        for r in cur.execute(
            "SELECT id, base_rev, base_seq, base_hash, base_path, base_deleted FROM sync_items "
            "WHERE base_rev IS NOT NULL AND base_seq > ?",
            (seq,),
        )
    ]


def bases_of(cur: Any, ids: Sequence[str]) -> list[tuple[str, int, int, str, str, bool]]:
    """:func:`bases_since` for the server bases of ``ids`` (those that have one)."""
    out: list[tuple[str, int, int, str, str, bool]] = []
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), IN_CHUNK):
        part = unique[i : i + IN_CHUNK]
        out.extend(
            (str(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4]), bool(r[5]))
            for r in cur.execute(
                "SELECT id, base_rev, base_seq, base_hash, base_path, base_deleted FROM "
                f"sync_items WHERE base_rev IS NOT NULL AND id IN ({','.join('?' * len(part))})",
                tuple(part),
            )
        )
    return out


def base_count(cur: Any) -> int:
    """How many blueprints have a server base."""
    return int(
        cur.execute("SELECT count(*) FROM sync_items WHERE base_rev IS NOT NULL").fetchall()[0][0]
    )


def knows_no_server(cur: Any) -> bool:
    """True for an index with no sync knowledge at all: no cursor and no server base."""
    if get_cursor(cur) != 0:
        return False
    return not cur.execute("SELECT 1 FROM sync_items WHERE base_rev IS NOT NULL LIMIT 1").fetchall()


def restore_base(
    cur: Any,
    blueprint_id: str,
    *,
    rev: int,
    seq: int,
    content_hash: str,
    path: str,
    deleted: bool,
    synced_op_id: int,
    held: bool,
) -> None:
    """Take a base from the record kept besides the index into an item that has none.

    ``held``: the local copy has the base's content, so the base text is that local revision
    (a ``sync_bases`` row with its hash, as for any synced base). Otherwise the text at that rev
    is not held here: no ``sync_bases`` row, and the merge runs without a content base (but with
    the base's path). An item that already has a base keeps it.
    """
    cur.execute(
        "INSERT INTO sync_items (id, base_rev, base_seq, base_hash, base_path, base_deleted, "
        "synced_op_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "base_rev = excluded.base_rev, base_seq = excluded.base_seq, "
        "base_hash = excluded.base_hash, base_path = excluded.base_path, "
        "base_deleted = excluded.base_deleted, "
        "synced_op_id = max(sync_items.synced_op_id, excluded.synced_op_id) "
        "WHERE sync_items.base_rev IS NULL",
        (blueprint_id, rev, seq, content_hash, path, int(deleted), synced_op_id),
    )
    if held:
        cur.execute(
            "INSERT INTO sync_bases (id, rev, path, content, meta, hash) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
            (blueprint_id, rev, path, "", "", content_hash),
        )
    _unsettle(cur, blueprint_id)


def known_server_ids(cur: Any) -> set[str]:
    """Ids this device believes exist on the server (base recorded)."""
    return {str(r[0]) for r in cur.execute("SELECT id FROM sync_items WHERE base_rev IS NOT NULL")}


def local_fingerprints(cur: Any) -> dict[str, tuple[str, bool]]:
    """Every blueprint id with (content_hash, deleted), tombstones included."""
    return {
        str(r[0]): (str(r[1]), bool(r[2]))
        for r in cur.execute("SELECT id, content_hash, deleted FROM blueprints")
    }


@dataclass(frozen=True, slots=True)
class BaseMark:
    """The server row a blueprint builds on, and the local revision that held it (verify)."""

    rev: int
    server_hash: str
    held_rev: int | None
    held_hash: str | None


def held_hash(cur: Any, blueprint_id: str, rev: int | None) -> str | None:
    """The local content hash of the revision that stored server rev ``rev`` (None: unknown,
    or the base is kept as text)."""
    rows = cur.execute(
        "SELECT hash FROM sync_bases WHERE id = ? AND rev = ?", (blueprint_id, rev)
    ).fetchall()
    return str(rows[0][0]) if rows and rows[0][0] else None


def base_marks(cur: Any) -> dict[str, BaseMark]:
    """:class:`BaseMark` of each blueprint that has a base."""
    return {
        str(r[0]): BaseMark(
            int(r[1]),
            str(r[2] or ""),
            None if r[3] is None else int(r[3]),
            str(r[4]) if r[4] else None,
        )
        for r in cur.execute(
            "SELECT i.id, i.base_rev, i.base_hash, b.rev, b.hash FROM sync_items i "
            "LEFT JOIN sync_bases b ON b.id = i.id WHERE i.base_rev IS NOT NULL"
        )
    }
