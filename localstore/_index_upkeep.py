"""Index upkeep off the save path: the Maintainer thread and what its rounds do.

A round compacts superseded revisions, merges the full-text segments, trims the change log, gives
free pages back and checkpoints the WAL, each write taking turns with the home's other writers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

from localstore._failure_streak import FailureStreak
from localstore._index_connect import (
    MAINTENANCE_LOG_EVERY_S,
    WAL_SIZE_LIMIT,
    _close_quietly,
    _durable_commits,
)
from localstore._index_fork import _track_for_fork
from localstore._index_schema import CORE_MIGRATIONS
from localstore._revisions import compact_superseded
from localstore._write_turn import WriteTurn, begin_taking_turns

log = logging.getLogger("localstore.index")

# The home's change counter (op ids).
_LAST_OP = "SELECT value FROM counters WHERE name = 'op_id'"
# The newest rows the change log keeps (see core v7): a few thousand commits of one blueprint,
# or a few large batches; a listing cache further behind reads everything again.
CHANGE_LOG_ROWS = 8000
_TRIM_CHANGE_LOG = (
    "DELETE FROM blueprint_changes WHERE gen <= (SELECT gen FROM blueprint_changes "
    f"ORDER BY gen DESC LIMIT 1 OFFSET {CHANGE_LOG_ROWS})"
)
# The full-text tables (the maintainer merges both, the integrity check checks both).
FTS_TABLES = ("blueprints_fts", "blueprints_described")
# Pages of FTS merge work per table and maintainer round.
FTS_MERGE_PAGES = 64
# A positive 'merge' only merges a level that holds 4 segments, so the entries edits replaced and
# the delete marks of removed blueprints stay in the older, larger segments, which are seldom
# merged: on a 10,000-blueprint home edited daily (100 edits and 10 deletes or creates a day) the
# full-text data went from 6.3 MB to 12.3 MB in 12,600 edits, and kept growing. So once this many
# changes (op ids) have been made since the last time, a round starts an incremental optimize (a
# negative 'merge': every segment onto one level), which the next rounds' merges carry on
# FTS_MERGE_PAGES at a time (about 20 rounds at 10,000) down to one segment with no dead entries.
# Started only by an idle round (no commit since the last): a positive merge works on the level
# with the most segments, and under steady saving that is the newest level (a segment a commit),
# so an optimize started then got no share of the work and its half-merged level only added pages
# (measured: 10.1 MB against 9.3 MB after 6,300 edits with rounds every 256 saves and none idle).
# Rewriting the index once per 2,000 changes costs about 3 KB of writes a change, off the save path.
FTS_OPTIMIZE_EVERY_OPS = 2000
FTS_OPTIMIZED_KEY = "fts_optimized_op"
# A maintainer round that finds no commit since the previous one (idle for MAINTENANCE_INTERVAL_S)
# truncates a WAL larger than this to nothing.
WAL_IDLE_TRUNCATE = 4 * 1024 * 1024
# How often a maintainer round runs when few commits wake it, and the most a failing one waits.
MAINTENANCE_INTERVAL_S = 30.0
# Free pages (deleted rows, compacted revisions, merged FTS segments) stay in index.db for reuse;
# SQLite gives none back without a vacuum. A new index is made with auto_vacuum=INCREMENTAL, and
# a maintainer round hands free pages back to the filesystem once they are more than
# FREE_PAGES_SHARE of the file and FREE_PAGES_FLOOR bytes, keeping FREE_PAGES_SHARE / 2 as slack
# for the next saves, at most FREE_PAGES_PER_ROUND bytes a round (each one a short write, like a
# compaction chunk). Below the bounds the free pages are what steady use reuses anyway (about
# 1,500 pages of a 10,000-blueprint home edited daily: compaction frees a page per revision).
FREE_PAGES_SHARE = 0.25
FREE_PAGES_FLOOR = 8 * 1024 * 1024
FREE_PAGES_PER_ROUND = 8 * 1024 * 1024
# Given back in steps of at most this many bytes, each its own write transaction: moving 8 MB
# of pages in one held the write lock 44 ms (a 10,000-blueprint-sized file after compacting a
# 1 MB blueprint's history), and a save waited as long; a 1 MB step holds it a few ms, and a
# waiting save gets the lock between two steps.
FREE_PAGES_PER_STEP = 1024 * 1024


class Maintainer:
    """Background thread that checkpoints the WAL, merges FTS segments and compacts superseded
    revisions (localstore._revisions), all off the save path.

    Lifecycle: start(), stop(), join(); ``run_once()`` does one round synchronously (tests, close).
    A failing round (a full disk, an I/O error) is logged, retried with backoff on a fresh
    connection, and never ends the thread: with automatic checkpoints off it is the only
    checkpointer below WAL_HARD_LIMIT. Should the thread die anyway, the next commit starts a new
    one. ``health()`` says how it is doing.
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int = 5_000,
        every_commits: int = 256,
        interval_s: float = MAINTENANCE_INTERVAL_S,
    ) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._every = every_commits
        self._interval = interval_s
        self._pending = 0
        # The home's op counter at the last round: a round is idle only if no process changed
        # anything since (see _round).
        self._last_op: int | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._lock = threading.Lock()
        # Health (written by the thread only; read unlocked, each value on its own).
        self._rounds = 0
        self._streak = FailureStreak(every=MAINTENANCE_LOG_EVERY_S)  # consecutive failed rounds
        self._last_error: str | None = None
        self._last_ok: float | None = None  # wall-clock time of the last good round
        self._restarts = 0
        _track_for_fork(self)

    def notify_commit(self) -> None:
        """Count a commit; wake the thread when enough have accumulated (restart it if dead)."""
        self._pending += 1
        if self._pending >= self._every:
            self._wake.set()
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._stop.is_set():
            self._restart(thread)

    def start(self) -> None:
        """Start the thread."""
        with self._start_lock:
            if self._thread is not None:
                raise RuntimeError("maintainer already started")
            self._spawn()

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._run, name="localstore-maintainer", daemon=True)
        self._thread.start()

    def _restart(self, dead: threading.Thread) -> None:
        with self._start_lock:
            if self._thread is not dead or self._stop.is_set():
                return  # another commit restarted it first, or it is being stopped
            self._restarts += 1
            log.error("the index maintainer thread had stopped; started it again")
            self._spawn()

    def stop(self) -> None:
        """Ask the thread to finish its round and exit."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to exit."""
        with self._start_lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            with self._start_lock:
                if self._thread is thread:
                    self._thread = None

    def health(self) -> dict[str, Any]:
        """How maintenance is doing: ``running``, ``rounds``, ``failed_rounds`` (consecutive),
        ``last_error``, ``last_ok`` (Unix time) and ``restarts``."""
        thread = self._thread
        return {
            "running": thread is not None and thread.is_alive(),
            "rounds": self._rounds,
            "failed_rounds": self._streak.count,
            "last_error": self._last_error,
            "last_ok": self._last_ok,
            "restarts": self._restarts,
        }

    def _run(self) -> None:
        conn: apsw.Connection | None = None
        try:
            while not self._stop.is_set():
                # After a failure: 1, 2, 4 ... s up to the interval (space may be freed soon).
                # The exponent is bounded: 2.0 ** 1024 overflows, and the OverflowError ended
                # the thread at the 1,025th failed round in a row (8.5 hours of a full disk),
                # then each restart by a later commit at once, so nothing checkpointed any more.
                wait = self._interval
                if self._streak.count:
                    wait = min(wait, 2.0 ** min(self._streak.count - 1, 30))
                self._wake.wait(timeout=wait)
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    if conn is None:
                        with self._lock:  # (not while a fork copies SQLite's state: _fork_wait)
                            conn = self._open()
                    self._round(conn)
                # Broad on purpose: this thread is the checkpointer; whatever one round hits
                # (a full disk, an I/O error, a bug), ending the thread would let the WAL grow
                # for the life of the process. Logged (rate-limited) and retried.
                except Exception as exc:  # noqa: BLE001
                    self._failed(exc)
                    if conn is not None:  # it may be unusable after an I/O error: start afresh
                        with self._lock:
                            _close_quietly(conn)
                        conn = None
                else:
                    self._succeeded()
        finally:
            if conn is not None:
                with self._lock:
                    _close_quietly(conn)

    def _failed(self, exc: Exception) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._streak.failed():
            log.warning(
                "index maintenance failed (%s round(s) in a row: %s); the write-ahead log is not "
                "checkpointed and grows until a round succeeds (retrying)",
                self._streak.count,
                self._last_error,
                exc_info=not isinstance(exc, apsw.Error),
            )

    def _succeeded(self) -> None:
        self._rounds += 1
        self._last_ok = time.time()
        failed = self._streak.succeeded()
        if failed:
            log.warning("index maintenance works again after %d failed round(s)", failed)

    def _open(self) -> apsw.Connection:
        conn = apsw.Connection(str(self._path))
        try:
            conn.setbusytimeout(self._busy_timeout_ms)
            _durable_commits(conn)
            # Its FTS merges commit too: the first commit after a WAL restart may be this one's.
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}").fetchall()
        except BaseException:
            _close_quietly(conn)
            raise
        return conn

    def run_once(self) -> None:
        """One maintenance round on a fresh connection."""
        conn = self._open()
        try:
            self._round(conn)
        finally:
            conn.close()

    def _round(self, conn: apsw.Connection) -> None:
        # Its writes take turns with the home's other writers (begin_taking_turns): announced
        # while they wait, a process saving back to back gives way to them, where SQLite's busy
        # handler alone left them out for as long as the saves went on (a daemon pulling a
        # large download, an app importing); and they give way to a saver that waits, which
        # waited for every write of the round in a row. Mapped for the round only: a few
        # system calls a round, and nothing held between rounds.
        turn = WriteTurn.open(self._path)
        try:
            self._round_in_turn(conn, turn)
        finally:
            if turn is not None:
                turn.close()

    def _begin(self, turn: WriteTurn | None) -> Callable[[apsw.Connection], None]:
        """How the round's writes begin: in turn, given up at once once the thread is stopped."""

        def begin(conn: apsw.Connection) -> None:
            begin_taking_turns(
                conn.cursor(), turn, self._busy_timeout_ms, interrupted=self._stop.is_set
            )

        return begin

    def _round_in_turn(self, conn: apsw.Connection, turn: WriteTurn | None) -> None:
        begin = self._begin(turn)
        with self._lock:
            # Idle: no commit here since the last round, and no change by any other process
            # either (the op counter is the home's). Judged by this process's commits alone, a
            # daemon that does not save took every timer round for idle while the app saved
            # beside it, and then tried the WAL truncate and started FTS optimizes, which only
            # an idle round is to do (docs/architecture.md, upkeep under steady saving).
            op = int(str(conn.execute(_LAST_OP).fetchall()[0][0]))
            idle = self._pending == 0 and self._last_op in (None, op)
            self._last_op = op
            self._pending = 0
            if int(str(conn.execute("PRAGMA user_version").fetchall()[0][0])) > len(
                CORE_MIGRATIONS
            ):
                # A newer localstore upgraded the index under this process: the revisions,
                # change log and search tables are now laid out as it means them (compacted
                # history read as the wrong type is what core v5 keeps older versions from), so
                # none of them is rewritten here (Index.write refuses for the same reason). The
                # checkpoint copies pages, whatever they mean: a WAL left to grow helps no one.
                with contextlib.suppress(apsw.BusyError):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                return
            failure: apsw.Error | None = None
            try:
                # Superseded revisions stored compacted (before the checkpoint, which then
                # copies those pages too). Its failure (a full disk), or that of giving free
                # pages back, must not cost the checkpoint: raised after it.
                compact_superseded(conn, begin=begin)
            except apsw.BusyError:
                pass  # the app is writing: the next round goes on from the same watermark
            except apsw.Error as exc:
                failure = exc
            try:
                # Bounded FTS merge work per round, then a PASSIVE checkpoint (never blocks
                # writers).
                _merge_and_trim(conn, begin, idle=idle)
            except apsw.BusyError:  # another process writes or checkpoints: the next round
                return
            try:
                # Before the checkpoint, which is what shortens the file.
                release_free_pages(conn, begin=begin)
            except apsw.BusyError:
                pass  # the app is writing: the next round
            except apsw.Error as exc:
                failure = failure or exc
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except apsw.BusyError:  # another process writes or checkpoints: the next round
                return
            if failure is not None:
                raise failure
            if idle and wal_size(self._path) > WAL_IDLE_TRUNCATE:
                self._truncate(conn)

    def _truncate(self, conn: apsw.Connection) -> None:
        # Gives back what a burst left in the WAL (journal_size_limit only cuts it to
        # WAL_SIZE_LIMIT, and only when a writer starts it over). With no busy timeout: a
        # TRUNCATE checkpoint waits for readers holding the write lock, so it is tried only
        # when nobody reads or writes, and otherwise left to the next idle round.
        truncate_wal_now(conn, self._busy_timeout_ms)


def truncate_wal_now(conn: apsw.Connection, busy_timeout_ms: int) -> None:
    """A TRUNCATE checkpoint with no busy timeout (it would wait for every reader and hold the
    write lock meanwhile): done if nobody reads or writes, else left for a later try. The
    connection's busy timeout is ``busy_timeout_ms`` again afterwards."""
    conn.setbusytimeout(0)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except apsw.BusyError:
        pass
    finally:
        conn.setbusytimeout(busy_timeout_ms)


def _merge_and_trim(
    conn: apsw.Connection, begin: Callable[[apsw.Connection], None], *, idle: bool
) -> None:
    """A round's FTS merge work and the change log's trim, in one write started by ``begin(conn)``
    (the merge's `with conn` is then a savepoint): one turn for both. Rolled back on any error."""
    begin(conn)
    try:
        _merge_search_indexes(conn, idle=idle)
        conn.execute(_TRIM_CHANGE_LOG)
        conn.execute("COMMIT")
    except BaseException:
        if not conn.getautocommit():
            conn.execute("ROLLBACK")
        raise


def _merge_search_indexes(conn: apsw.Connection, *, idle: bool) -> None:
    """One round's FTS merge work; an incremental optimize started when one is due."""
    due = False
    if idle:  # see FTS_OPTIMIZE_EVERY_OPS
        op = int(str(conn.execute(_LAST_OP).fetchall()[0][0]))
        key = (FTS_OPTIMIZED_KEY,)
        row = conn.execute("SELECT value FROM settings WHERE key = ?", key).fetchall()
        due = op - (int(str(row[0][0])) if row else 0) >= FTS_OPTIMIZE_EVERY_OPS
    pages = -FTS_MERGE_PAGES if due else FTS_MERGE_PAGES
    with conn:  # one transaction: the mark is written only with the merges it stands for
        for table in FTS_TABLES:
            conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('merge', {pages})")
        if due:
            conn.execute(
                "INSERT OR REPLACE INTO settings VALUES (?, ?)", (FTS_OPTIMIZED_KEY, str(op))
            )


def page_usage(conn: apsw.Connection) -> dict[str, int]:
    """``pages``, ``free_pages`` and ``page_size`` of the index, and its ``auto_vacuum`` mode
    (0 none: free pages are only reused; 2 incremental: the maintainer gives them back)."""
    return {
        name: int(str(conn.execute(f"PRAGMA {pragma}").fetchall()[0][0]))
        for name, pragma in (
            ("pages", "page_count"),
            ("free_pages", "freelist_count"),
            ("page_size", "page_size"),
            ("auto_vacuum", "auto_vacuum"),
        )
    }


def release_free_pages(
    conn: apsw.Connection, *, begin: Callable[[apsw.Connection], None] | None = None
) -> int:
    """Give free pages back to the filesystem when they are a large share of the file (see
    FREE_PAGES_SHARE), a bounded number per call; returns how many pages went. Only for an index
    in incremental auto_vacuum mode (a new one, or one ``check --fix`` converted). Raises
    apsw.Error (BusyError: someone writes; try later). Each step is
    a transaction of its own (``begin(conn)`` starts it when given: the maintainer's takes
    turns; else the pragma alone is one)."""
    usage = page_usage(conn)
    pages, free, size = usage["pages"], usage["free_pages"], usage["page_size"]
    if (
        usage["auto_vacuum"] != 2
        or free * size < FREE_PAGES_FLOOR
        or free < pages * FREE_PAGES_SHARE
    ):
        return 0
    keep = int(pages * FREE_PAGES_SHARE / 2)
    count = min(free - keep, FREE_PAGES_PER_ROUND // size)
    step = max(1, FREE_PAGES_PER_STEP // size)
    done = 0
    while done < count:
        # Each pragma outside a transaction is one (see FREE_PAGES_PER_STEP); stepped to the
        # end: each step of the pragma moves one page (fetchall runs them all).
        n = min(step, count - done)
        if begin is None:
            conn.execute(f"PRAGMA incremental_vacuum({n})").fetchall()
        else:
            _in_transaction(conn, begin, f"PRAGMA incremental_vacuum({n})")
        done += n
    return count


def _in_transaction(
    conn: apsw.Connection, begin: Callable[[apsw.Connection], None], *sql: str
) -> None:
    """Run ``sql`` (each statement stepped to its end) in one transaction started by
    ``begin(conn)``; rolled back on any error."""
    begin(conn)
    try:
        for statement in sql:
            conn.execute(statement).fetchall()
        conn.execute("COMMIT")
    except BaseException:
        if not conn.getautocommit():
            conn.execute("ROLLBACK")
        raise


def wal_size(path: Path) -> int:
    """The size of the index's WAL file now (0 when there is none)."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size
    except OSError:
        return 0
