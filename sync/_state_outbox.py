"""The outbox: the dirty blueprints to push (a query over committed rows, see ``sync._state``),
their counts for status, and which of them the app's validator holds back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sync._state_watermark import _DIRTY_WHERE, settled_op_id

# Valid for sync: the row passed its validator, and that validator is the home's. With a
# validator recorded for the home (settings key ``validator``: the app opened the store with
# one), a row judged by none (the daemon's watcher or the CLI recorded it: they have no
# validator) or by another is held like an invalid one until the app judges it (at its next
# open, in its own sync's push, or with revalidate()). Before, such an edit went up as valid
# although the app would refuse it (docs/architecture.md, "The app's validator").
_HOME_VALIDATOR = "(SELECT value FROM settings WHERE key = 'validator')"
_VALID = f"(b.valid = 1 AND ({_HOME_VALIDATOR} IS NULL OR b.judged_by IS {_HOME_VALIDATOR}))"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One dirty blueprint as it should be pushed (content and meta of its current revision)."""

    id: str
    path: str
    content_hash: str
    rev: int
    op_id: int
    push_op_id: int
    deleted: bool
    valid: bool
    base_rev: int | None
    base_deleted: bool
    content: str
    meta: dict[str, Any]


# -- outbox -------------------------------------------------------------------------------------


def leading_fit(sizes: Sequence[int], max_count: int, max_bytes: int) -> int:
    """How many of ``sizes``, from the first, make one push: at most ``max_count`` items and
    ``max_bytes`` together, but at least one (a change over the budget still goes, alone)."""
    total, count = 0, 0
    for size in sizes[:max_count]:
        total += size
        if count and total > max_bytes:
            break
        count += 1
    return count


def outbox_batch(
    cur: Any, after_op_id: int, limit: int, *, max_bytes: int | None = None
) -> list[OutboxItem]:
    """Dirty items with op_id > ``after_op_id``, oldest change first (none at or below W).

    At most ``limit`` items and, with ``max_bytes``, at most that many bytes of content and meta
    (``push_bytes``) together, but always at least one item: a blueprint larger than the budget
    still goes, alone. The sizes are read first without the texts (``octet_length`` reads a
    record's header, not its string), so a queue of large blueprints is never loaded whole.
    """
    after_op_id = max(after_op_id, settled_op_id(cur))
    upto: int | None = None
    if max_bytes is not None:
        sizes = cur.execute(
            f"SELECT b.op_id, CASE WHEN b.deleted = 0 AND {_VALID} "
            "THEN coalesce(octet_length(r.content), 0) ELSE 0 END "
            "+ coalesce(octet_length(r.meta), 0) "
            "FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
            "LEFT JOIN revisions r ON r.id = b.id AND r.rev = b.rev "
            f"WHERE b.op_id > ? AND {_DIRTY_WHERE} ORDER BY b.op_id LIMIT ?",
            (after_op_id, limit),
        ).fetchall()
        count = leading_fit([int(size) for _, size in sizes], len(sizes), max_bytes)
        if not count:
            return []
        upto = int(sizes[count - 1][0])
        # Bounded by op id too: an item edited between the two reads moves past ``upto`` (every
        # edit takes a new op id), so the texts read below are the ones just measured or fewer.
        limit = count
    rows = cur.execute(
        "SELECT b.id, b.path, b.content_hash, b.rev, b.op_id, "
        f"max(b.op_id, coalesce(s.push_op_id, 0)), b.deleted, {_VALID}, "
        "s.base_rev, coalesce(s.base_deleted, 0), r.content, r.meta "
        "FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        "LEFT JOIN revisions r ON r.id = b.id AND r.rev = b.rev "
        f"WHERE b.op_id > ? AND b.op_id <= ? AND {_DIRTY_WHERE} ORDER BY b.op_id LIMIT ?",
        (after_op_id, upto if upto is not None else 2**63 - 1, limit),
    ).fetchall()
    return [
        OutboxItem(
            id=str(r[0]),
            path=str(r[1]),
            content_hash=str(r[2]),
            rev=int(r[3]),
            op_id=int(r[4]),
            push_op_id=int(r[5]),
            deleted=bool(r[6]),
            valid=bool(r[7]),
            base_rev=None if r[8] is None else int(r[8]),
            base_deleted=bool(r[9]),
            content="" if r[10] is None else str(r[10]),
            meta=json.loads(r[11]) if r[11] else {},
        )
        for r in rows
    ]


def dirty_ids(cur: Any) -> set[str]:
    """The ids ``outbox_batch`` would return, all of them, without reading any text (verify
    reports them as pending; reading the whole outbox's texts for that held them all in memory)."""
    rows = cur.execute(
        "SELECT b.id FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        f"WHERE b.op_id > ? AND {_DIRTY_WHERE}",
        (settled_op_id(cur),),
    ).fetchall()
    return {str(r[0]) for r in rows}


def pending_count(cur: Any, *, scan_all: bool = False) -> int:
    """Number of dirty items that are not parked in quarantine and have something to push.

    Reads only rows above the settled watermark; ``scan_all`` ignores it (tests compare both).
    """
    row = cur.execute(
        "SELECT count(*) FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        f"WHERE b.op_id > ? AND {_DIRTY_WHERE} "
        "AND NOT (b.deleted = 1 AND (s.base_rev IS NULL OR s.base_deleted = 1))",
        (0 if scan_all else settled_op_id(cur),),
    ).fetchall()
    return int(row[0][0])


def pushable(cur: Any, blueprint_id: str) -> bool:
    """True when the next push pass will send this blueprint (dirty, not parked, valid or a delete
    the server needs)."""
    row = cur.execute(
        "SELECT 1 FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        f"WHERE b.id = ? AND {_DIRTY_WHERE} AND (b.deleted = 0 AND {_VALID} "
        "OR b.deleted = 1 AND s.base_rev IS NOT NULL AND s.base_deleted = 0)",
        (blueprint_id,),
    ).fetchall()
    return bool(row)


def held_count(cur: Any, *, scan_all: bool = False) -> int:
    """Dirty live items that fail the app's validator, or that it has not judged yet (held
    back until they are valid)."""
    row = cur.execute(
        "SELECT count(*) FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        f"WHERE b.op_id > ? AND {_DIRTY_WHERE} AND b.deleted = 0 AND NOT {_VALID}",
        (0 if scan_all else settled_op_id(cur),),
    ).fetchall()
    return int(row[0][0])


def never_synced_counts(cur: Any) -> tuple[int, int]:
    """(pending, held) of a home without sync tables (it never synced): every live blueprint
    is to push; the ones its validator does not pass are held. For a read-only store, which
    cannot create the tables that pending_count and held_count read."""
    row = cur.execute(
        f"SELECT count(*), coalesce(sum(NOT {_VALID}), 0) FROM blueprints b WHERE b.deleted = 0"
    ).fetchall()
    return int(row[0][0]), int(row[0][1])
