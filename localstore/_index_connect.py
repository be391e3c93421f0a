"""Opening a connection to index.db: its file mode, pragmas, SQL functions and WAL guard.

Automatic checkpoints are off on every connection; the maintainer (localstore/_index_upkeep.py)
runs them, and _WalGuard checkpoints on the writer's own connection only past WAL_HARD_LIMIT.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import apsw

from localstore._failure_streak import FAILURE_LOG_EVERY_S
from localstore._fts_text import indexed_text
from localstore._index_errors import map_apsw_error, note_os_error
from localstore._time_key import sql_time_key
from localstore.errors import IndexStoreError

log = logging.getLogger("localstore.index")

# What a checkpointed WAL is cut back to when a writer starts it over (PRAGMA journal_size_limit).
# Unset, the file kept its peak size (an import, a first sync's pull) for the life of the process.
# Above what one maintenance cycle writes in steady use (256 saves of ~21 pages, about 22 MB), so
# the file is not cut and grown again every cycle; a burst's excess is given back at its end.
WAL_SIZE_LIMIT = 32 * 1024 * 1024
# Past this size a commit checkpoints (PASSIVE) on the writer's own connection, then again only
# after each further WAL_FALLBACK_STEP. The maintainer's checkpoints run beside the writes, so
# under steady writing they never catch up with the WAL's end, and SQLite starts a WAL over only
# when it is wholly checkpointed: without this it grew by every save (240 MB after 3,000 saves in
# 35 s), and without bound when the maintainer failed or was not running. At most WAL_SIZE_LIMIT,
# so the started-over file is not cut: the commits after it write over blocks the file has, and
# one that appends pays in its flush for new blocks and the file's size (a save's commit: 331 us
# appending against 189 us writing over, on the benchmark VM). It was 64 MB: steady saves then
# appended for the first 32 MB of every 64. A save that checkpoints here pays 3-6 ms, about one
# save in 170 of ~20 pages (docs/benchmarks/store.md).
WAL_HARD_LIMIT = 16 * 1024 * 1024
WAL_FALLBACK_STEP = 16 * 1024 * 1024
# A maintainer whose rounds keep failing says so again at most this often (first failure: at once).
MAINTENANCE_LOG_EVERY_S = FAILURE_LOG_EVERY_S


def _durable_commits(conn: apsw.Connection) -> None:
    """The flush settings of every connection that commits or checkpoints (one pragma per call).

    The maintainer's connection needs them as much as the store's: it commits compacted history
    and FTS merges, and it runs the checkpoints that copy acknowledged commits into the database
    file (after which the WAL may be started over). Left to SQLite's defaults it ran without
    F_FULLFSYNC on macOS, so a checkpointed page could still sit in the drive's cache.
    """
    conn.execute("PRAGMA synchronous=FULL").fetchall()
    if sys.platform == "darwin":
        # macOS's fsync leaves the data in the drive's cache: without F_FULLFSYNC a power cut
        # can lose a commit that synchronous=FULL acknowledged (and a checkpointed page).
        conn.execute("PRAGMA fullfsync=ON").fetchall()
        conn.execute("PRAGMA checkpoint_fullfsync=ON").fetchall()


def _connect(path: Path, busy_timeout_ms: int) -> apsw.Connection:
    conn: apsw.Connection | None = None
    _create_private(path)
    try:
        conn = apsw.Connection(str(path))
        conn.setbusytimeout(busy_timeout_ms)
        # The query planner stability guarantee. Without it SQLite marks FTS5's own segment
        # lookup (SELECT pgno FROM <fts>_idx WHERE segid=? AND term<=? ...) expired at every
        # bind, because its plan may depend on the value, and prepares it again from scratch:
        # a sixth of a search's time. Nothing here needs value-dependent plans (no ANALYZE
        # statistics; the one LIKE, search's folder filter, cannot use an index anyway).
        conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)
        add_functions(conn)
        if int(str(conn.execute("PRAGMA page_count").fetchall()[0][0])) == 0:
            # A new file: auto_vacuum can be chosen only before the first table exists (an
            # existing index changes mode only through a VACUUM: Index.reclaim_free_pages()).
            # INCREMENTAL adds no work to a commit beyond keeping the pointer map (one page per
            # ~1,000 pages) current; the maintainer decides when to give space back.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL").fetchall()
        # One pragma per call, each read back: a multi-statement execute leaves later pragmas
        # unapplied until its cursor is consumed (field notes).
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()
        if not mode or str(mode[0][0]).lower() != "wal":
            raise IndexStoreError(f"cannot switch {path} to WAL mode (got {mode})")
        _durable_commits(conn)
        conn.execute("PRAGMA foreign_keys=ON").fetchall()
        conn.execute("PRAGMA wal_autocheckpoint=0").fetchall()
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}").fetchall()
        conn.execute("PRAGMA cache_size=-16000").fetchall()
        page_size = int(str(conn.execute("PRAGMA page_size").fetchall()[0][0]))
        # Replaces the automatic checkpoint (off above) with one that fires only past the hard
        # limit; a WAL hook runs after the commit has released the write lock.
        conn.setwalhook(_WalGuard(path, page_size))
    except apsw.Error as exc:
        if conn is not None:
            note_os_error(conn, exc)
            _close_quietly(conn)
        raise map_apsw_error(exc, f"open {path}") from exc
    return conn


def _create_private(path: Path) -> None:
    """Create a new index file 0600 whatever the umask (SQLite gives its -wal and -shm the
    database file's mode). LocalStore makes ``data/`` 0700, but a home pointed at an existing
    folder others can read had its history, sync state and app data readable by them."""
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600
        )
    except OSError:
        return  # it exists (the usual case), or SQLite says what is wrong when it opens it
    os.close(fd)


def add_functions(conn: apsw.Connection) -> None:
    """Register the SQL functions every index connection needs (read-only ones too)."""
    # The text search indexes (the blueprints_text view, schema v4): without it no search
    # can make a snippet, nor check or rebuild its index, on this connection.
    conn.create_scalar_function("localstore_fts_text", _sql_indexed_text, 1, deterministic=True)
    # A listing sorted by a stamp in a store holding one not in its own form (store.list).
    conn.create_scalar_function("localstore_time_key", sql_time_key, 1, deterministic=True)


def _sql_indexed_text(*values: Any) -> Any:
    """localstore_fts_text(text) in SQL: indexed_text() of a string, any other value as it is."""
    (value,) = values
    # isascii() here first: one Python frame less for most text. (Since v6 the view calls this
    # only for rows with text to split; a snippet read each hit's row about 11 times.)
    if type(value) is not str or value.isascii():
        return value
    return indexed_text(value)


class _WalGuard:
    """The WAL hook of a writing connection: the fallback checkpoint past WAL_HARD_LIMIT."""

    def __init__(self, path: Path, page_size: int) -> None:
        self._path = path
        self._hard = WAL_HARD_LIMIT // page_size
        self._step = WAL_FALLBACK_STEP // page_size
        self._next = self._hard
        self._page_size = page_size
        self._logged = float("-inf")

    def __call__(self, conn: apsw.Connection, dbname: str, pages: int) -> int:
        # Never raises: what the hook returns (or raises) becomes the result of a COMMIT that
        # has already happened.
        if pages < self._hard:
            self._next = self._hard  # the WAL was started over
            return apsw.SQLITE_OK
        if pages < self._next:
            return apsw.SQLITE_OK
        try:
            conn.wal_checkpoint(dbname, apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.BusyError:
            # Another connection was checkpointing (a maintainer, another process's commit):
            # nothing was copied, so the next commit tries again (busy costs nothing). Counted
            # as done, it put the next try a whole step later: twice in a row under load, the
            # WAL reached 51 MB.
            return apsw.SQLITE_OK
        except apsw.Error as exc:  # the commit stands; the maintainer or the next step retries
            outcome = f"failed ({exc})"
        else:
            outcome = "done"
        # Then only every WAL_FALLBACK_STEP: a WAL pinned by a reader in another process cannot
        # be started over, and a checkpoint per commit would then cost every save an fsync.
        self._next = pages + self._step
        now = time.monotonic()
        if now - self._logged >= MAINTENANCE_LOG_EVERY_S:
            self._logged = now
            # INFO: steady writing alone gets here (see WAL_HARD_LIMIT); a failing maintainer
            # says so itself, at WARNING.
            log.info(
                "the write-ahead log of %s reached %d MB; a save checkpointed it (%s)",
                self._path,
                pages * self._page_size // 1_000_000,
                outcome,
            )
        return apsw.SQLITE_OK


def _close_quietly(conn: apsw.Connection) -> None:
    try:
        conn.close()
    except apsw.Error:  # a connection broken by an I/O error; nothing left to release
        pass
