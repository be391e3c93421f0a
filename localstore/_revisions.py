"""History storage: a revision's text as stored, and the compaction of superseded revisions.

Every revision keeps its full YAML and meta (any earlier version can be restored), and a
revision row is about 2.3 KB for a 2 KB blueprint, so SQLite fits one per 4 KB page: an app
autosaving one blueprint grew the index by 41 MB per 10,000 saves, 98% of it history. Once a
newer revision of the same blueprint exists, the maintainer thread (``Maintainer``, off the
save path) rewrites the older one's ``content`` and ``meta`` as zlib BLOBs (about 500 bytes
together: 7 MB per 10,000). The current revision (``blueprints.rev``) is never compacted: the
full-text view ``blueprints_text`` and the sync outbox read it in SQL as plain text. Each
revision is compressed on its own, not as a delta of its neighbour, so restoring one never
depends on another row.

Every reader of ``revisions.content`` or ``revisions.meta`` in Python goes through
:func:`revision_text` (a TEXT value is returned as it is, a BLOB decoded); the SQL type tells
the two apart, so no flag column is needed. Core schema v5 keeps an older localstore, which
would read a BLOB as its bytes, out of an index that may hold one.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import apsw

# settings key: the highest revisions.seq whose predecessor has been looked at (revisions.seq
# only grows, so each new revision is visited once; its predecessor is the one it superseded).
WATERMARK_KEY = "revisions_compacted_seq"
# Rows per write transaction (the write lock is held ~1-3 ms) and per maintainer round.
COMPACT_CHUNK = 100
COMPACT_PER_ROUND = 1000
# And at most this many bytes of plain text rewritten per write transaction (but always one
# row). The transaction reads, deletes and inserts each row while it holds the write lock, so its
# hold grows with the rows' size: 100 superseded revisions of a 1 MB blueprint held it 113 ms
# (of an 8 MB one, the largest a save takes, about a second), and every save waited that long.
# A chunk of 2 KB blueprints (about 230 KB) is not cut by it.
COMPACT_CHUNK_BYTES = 1024 * 1024
_LEVEL = 6


def revision_text(value: Any) -> str:
    """The text of a ``revisions.content`` or ``revisions.meta`` value, as it was saved."""
    if isinstance(value, bytes):
        return zlib.decompress(value).decode("utf-8")
    return str(value)


def _compress(plain: bytes) -> bytes:
    return zlib.compress(plain, _LEVEL)


def compact_superseded(
    conn: apsw.Connection,
    *,
    limit: int | None = None,
    begin: Callable[[apsw.Connection], None] | None = None,
) -> int:
    """Compact the revisions superseded since the last call (up to ``limit`` new revisions
    looked at); returns how many were compacted. Raises apsw.Error (BusyError: try later).

    Reads and compresses outside any write transaction; each chunk's UPDATEs run in a short
    ``BEGIN IMMEDIATE`` (``begin(conn)`` when given: the maintainer's takes turns) that
    re-checks, per row, that it is still plain text and older than its blueprint's current
    revision.
    """
    # (Any: apsw's stubs type each row value as a wide union; every value is converted here.)
    db: Any = conn
    done = 0
    left = COMPACT_PER_ROUND if limit is None else limit
    while left > 0:
        rows = db.execute("SELECT value FROM settings WHERE key = ?", (WATERMARK_KEY,)).fetchall()
        mark = int(rows[0][0]) if rows else 0
        fresh = db.execute(
            "SELECT seq, id, rev FROM revisions WHERE seq > ? ORDER BY seq LIMIT ?",
            (mark, min(COMPACT_CHUNK, left)),
        ).fetchall()
        if not fresh:
            break
        updates: list[tuple[bytes, bytes, int]] = []
        size = 0
        marked = mark
        for fresh_seq, ident, rev in fresh:
            older = db.execute(
                "SELECT seq, content, meta FROM revisions WHERE id = ? AND rev < ? "
                "ORDER BY rev DESC LIMIT 1",
                (ident, rev),
            ).fetchall()
            if older and isinstance(older[0][1], str):
                seq, content, meta = older[0]
                plain = (str(content).encode("utf-8"), str(meta).encode("utf-8"))
                updates.append((_compress(plain[0]), _compress(plain[1]), int(seq)))
                size += len(plain[0]) + len(plain[1])
            if size >= COMPACT_CHUNK_BYTES:  # (see COMPACT_CHUNK_BYTES) this chunk ends here
                marked = int(fresh_seq)
                done += _apply(conn, updates, marked, begin)
                updates, size = [], 0
        if marked != int(fresh[-1][0]):  # (the watermark moves even when nothing was compacted)
            done += _apply(conn, updates, int(fresh[-1][0]), begin)
        left -= len(fresh)
    return done


_COLUMNS = "seq, id, rev, op_id, origin, device, ts, path, content, meta, content_hash, deleted"


def _apply(
    conn: apsw.Connection,
    updates: list[tuple[bytes, bytes, int]],
    mark: int,
    begin: Callable[[apsw.Connection], None] | None = None,
) -> int:
    """Rewrite the rows, still plain and superseded, with their compacted values.

    DELETE and INSERT (same ``seq``), not UPDATE: SQLite rebalances a b-tree page that a delete
    leaves underfull, but not one that an update shrank, so updated in place each ~500-byte row
    kept its own 4 KB page and the index did not shrink at all (measured: 1.37 -> 1.36 MB).
    """
    db: Any = conn
    if begin is None:
        db.execute("BEGIN IMMEDIATE")
    else:
        begin(conn)
    try:
        changed = 0
        for content, meta, seq in updates:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM revisions WHERE seq = ? AND typeof(content) = 'text' "
                "AND rev < (SELECT b.rev FROM blueprints b WHERE b.id = revisions.id)",
                (seq,),
            ).fetchall()
            if not rows:
                continue  # compacted meanwhile, or current again (never compacted)
            row = list(rows[0])
            row[8], row[9] = content, meta
            db.execute("DELETE FROM revisions WHERE seq = ?", (seq,))
            db.execute(f"INSERT INTO revisions ({_COLUMNS}) VALUES ({', '.join('?' * 12)})", row)
            changed += 1
        db.execute(
            "INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
            "excluded.value",
            (WATERMARK_KEY, str(mark)),
        )
        db.execute("COMMIT")
    except BaseException:
        if not conn.getautocommit():
            db.execute("ROLLBACK")
        raise
    return changed
