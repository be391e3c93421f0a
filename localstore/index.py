"""The SQLite index (apsw): connection, schema migrations, transactions, maintenance.

The index is derived from the files and can be rebuilt from them; it also holds history, sync state
and app data. One :class:`Index` owns one apsw connection guarded by an RLock, so a desktop app may call
it from many threads. Several processes may open the same file: WAL mode, a busy timeout, and writes
that start with ``BEGIN IMMEDIATE`` (so a read never has to be upgraded to a write, which SQLite can
refuse at once with SQLITE_BUSY regardless of the timeout). A write waits for another process's
write lock with the RLock released, so the process's reads never wait for that lock, and the
writers take turns (localstore/_write_turn.py): one saving back to back leaves the lock to another
process that waits for it.

Checkpoints and FTS merges are kept off the save path: automatic checkpoints are off and a
:class:`Maintainer` thread with its own connection runs them in the background (a commit checkpoints
itself only past WAL_HARD_LIMIT, and an idle round truncates what a burst left in the WAL).

Each component (core, kv, credentials, sync) registers its own ordered list of migrations; versions are
tracked per component in ``component_versions`` and the core's version is mirrored in
``PRAGMA user_version``.

This module holds :class:`Index` and re-exports what its callers import; its parts live in
``_index_schema`` (the core migrations), ``_index_connect`` (opening a connection, the WAL guard),
``_index_errors`` (apsw errors mapped into the tree), ``_index_upkeep`` (the Maintainer),
``_index_fork`` (fork safety) and ``_write_turn`` (BEGIN IMMEDIATE, taking turns).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn

import apsw

from localstore._callbacks import call_each
from localstore._index_connect import MAINTENANCE_LOG_EVERY_S as MAINTENANCE_LOG_EVERY_S
from localstore._index_connect import _connect
from localstore._index_connect import add_functions as add_functions
from localstore._index_errors import (
    _NOT_DAMAGE,
    _WriteLost,
    forked_error,
    map_apsw_error,
    note_os_error,
)
from localstore._index_errors import index_damaged as index_damaged
from localstore._index_errors import set_aside as set_aside
from localstore._index_fork import _track_for_fork
from localstore._index_schema import (
    _ADDS_COLUMN,
    _PLAIN_ROWS,
    CORE_MIGRATIONS,
    Migration,
    _has_column,
    _old_v1_pieces,
    _reshape_core_v1,
    oldest_core_read_as_is,
)
from localstore._index_schema import CORE_READ_WITHOUT as CORE_READ_WITHOUT
from localstore._index_upkeep import _LAST_OP, FTS_TABLES, page_usage, truncate_wal_now
from localstore._index_upkeep import FTS_OPTIMIZED_KEY as FTS_OPTIMIZED_KEY
from localstore._index_upkeep import Maintainer as Maintainer
from localstore._index_upkeep import release_free_pages as release_free_pages
from localstore._index_upkeep import wal_size as wal_size
from localstore._process_owner import ProcessOwner
from localstore._write_turn import WriteTurn, begin_taking_turns
from localstore.errors import (
    IndexStoreError,
    LocalStoreError,
    NewerIndexError,
    ReadOnlyStoreError,
    StorageError,
    StoreClosedError,
)

log = logging.getLogger("localstore.index")

# The most changed blueprint rows an Index notes between two blueprint_changes() calls: past it,
# the listing cache reads everything again anyway (cheaper than patching that many rows).
CHANGED_ROWS_KEPT = 2000
# Run by Index.write() before the COMMIT of a transaction that changed blueprint rows.
_COUNT_BLUEPRINT_COMMIT = "UPDATE counters SET value = value + 1 WHERE name = 'blueprints_gen'"
BLUEPRINTS_GEN = "SELECT value FROM counters WHERE name = 'blueprints_gen'"
# One row a statement, VALUES: an INSERT ... SELECT may insert many rows, so SQLite opens a
# statement transaction for it, and FTS5 answers that by flushing the save's pending terms to
# disk (a one-row segment per save, 10 % of a save's time; see Index._on_row_change).
_LOG_CHANGE = "INSERT INTO blueprint_changes VALUES (?, ?)"


class WriteOutcome:
    """Whether a level of Index.write() stands, for a caller whose with-block an exception left.

    ``done`` is set once the outermost level's COMMIT is done, even when an exception came
    right after it (the caller must then not undo its files: the index holds them), or once
    an inner level is released into the enclosing transaction, whose rollback then runs the
    caller's undo_on_rollback callbacks. False: the level was rolled back."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class Index:
    """One apsw connection to index.db, safe to share between threads."""

    def __init__(
        self, path: Path, *, busy_timeout_ms: int = 30_000, read_only: str | None = None
    ) -> None:
        """Open the index at ``path``; ``read_only``: why it must not be written (a write then
        raises ReadOnlyStoreError saying so), None for the usual writable open."""
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.read_only = read_only
        # How a read-only index was opened (localstore._read_only: shared, private-wal,
        # immutable); None for a writable one.
        self.read_access: str | None = None
        self._lock = threading.RLock()
        # The process that opened the connection: a forked child must not use it (forked_error).
        self._process = ProcessOwner()
        # Set by interrupt_lock_waits(): a write finding another process's write lock gives up.
        self._no_lock_waits = False
        self._depth = 0
        # The turn file shared with the other processes writing this index (_write_turn): set
        # once the index is accepted, None for a read-only one or where it cannot be made.
        self._turn: WriteTurn | None = None
        self._conn: apsw.Connection | None
        if read_only is None:
            self._conn = _connect(self.path, busy_timeout_ms)
        else:
            from localstore._read_only import connect_read_only

            self._conn, self.read_access = connect_read_only(self.path, busy_timeout_ms)
        self._init_write_state()
        # The schema version of each component this connection brought up to date (what its
        # code knows), for newer_version() and write(); and the refusal of a write because a
        # newer localstore upgraded one of them meanwhile, once one was refused (None until then).
        self._known_versions: dict[str, int] = {}
        self.newer: NewerIndexError | None = None
        # This connection's ``PRAGMA data_version`` when newer_version() or write() last read
        # the versions and found none newer (None: read them next time). Only another
        # connection's commit can upgrade the index, and every such commit moves data_version.
        self._versions_checked_at: int | None = None
        self.conn.set_rollback_hook(self._on_sqlite_rollback)
        self.conn.set_update_hook(self._on_row_change)
        try:
            if read_only is None:
                self.register_schema("core", CORE_MIGRATIONS)
                # (After the schema check: a refused newer index gets no file beside it.)
                self._turn = WriteTurn.open(self.path)
            else:
                self._check_schema_read_only()
        except BaseException:
            # An index this code refuses (a newer version's) must be left as it was: the open
            # connection kept the -wal and -shm files it had made until the process ended. No
            # checkpoint on the way out either: that would write into the refused file.
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            raise
        _track_for_fork(self)

    def _init_write_state(self) -> None:
        """Start the bookkeeping of write transactions and their commits (see write()) empty."""
        self._commits = 0
        # Whether SQLite's rollback hook fired since the open write began (ours or its own):
        # with the connection back in autocommit mode, the sign that it did not commit.
        self._rolled_back = False
        # For tests only: called right after the outermost COMMIT returned, before anything
        # else, to deliver an interrupt exactly there.
        self._after_commit_statement: Callable[[], None] | None = None
        # Write transactions begun on this connection: what was read inside one holds until it
        # ends (no other writer commits meanwhile), so a value read once per transaction is
        # cached against this (BlueprintStore._revision_device).
        self.write_serial = 0
        self._commit_listeners: list[Any] = []
        self._rollback_listeners: list[Callable[[], None]] = []
        # Told once the connection is closed (see on_close).
        self._close_listeners: list[Callable[[], None]] = []
        # The thread whose transaction is open (set and cleared under the lock by that thread),
        # what after_commit() queued per open level (outermost first), and a close() asked for
        # from inside that transaction (done when it ends).
        self._owner: int | None = None
        self._deferred: list[list[Callable[[], None]]] = []
        # What undo_on_rollback() registered per open level (outermost first).
        self._undo: list[list[Callable[[], None]]] = []
        self._close_pending = False
        # The change numbers (op_id) this connection committed, as ranges (first, last), noted
        # under the lock right after each COMMIT once someone asked (own_ops): a follower of
        # other connections' commits tells its own rows from theirs by them, exactly, where the
        # events published after the commit come too late to (docs/daemon.md). The first op_id
        # drawn by the open transaction (all up to its last draw are its own: it holds the
        # write lock, and a rolled-back savepoint takes its draws back).
        self._own_ops: list[tuple[int, int]] | None = None
        self._first_op: int | None = None
        # The open transaction's own range, read right before its COMMIT (see _commit_statement).
        self._commit_ops: tuple[int, int] | None = None
        # Set when SQLite rolled the open write transaction back by itself (see _WriteLost);
        # the error that did it, once a level has seen it.
        self._lost = False
        self._lost_cause: BaseException | None = None
        # Blueprint rows this connection changed (rowids; some perhaps rolled back since), noted
        # only once someone asked (blueprint_changes) and None past CHANGED_ROWS_KEPT; whether
        # the open transaction changed any, and how many of its commits did.
        self._changed_rids: set[int] | None = set()
        self._track_rids = False
        self._blueprints_touched = False
        # The blueprint rows the open write transaction changed (None: more than
        # CHANGED_ROWS_KEPT), written to the change log at its commit (core v7).
        self._txn_rids: set[int] | None = set()
        self.blueprint_commits = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def conn(self) -> apsw.Connection:
        """The raw connection (only under :meth:`read` or :meth:`write`)."""
        if self._conn is None:
            raise StoreClosedError("the index is closed", hint="open the store again")
        return self._conn

    def close(self) -> None:
        """Checkpoint what is cheap to checkpoint, then close the connection.

        Called from inside a write transaction of the calling thread (a callback run by code
        that holds one), the close is deferred until that outermost transaction ends, by commit
        or rollback: closing the connection under it would roll it back behind its owner's back
        (its statements then fail on a closed index, half of its work done in memory). ``closed``
        is True from the call on. Another thread's close waits for the transaction, as before.
        """
        with self._lock:
            if self._conn is None:
                return
            if self._depth > 0:  # (the lock is reentrant: only the transaction's thread gets here)
                self._close_pending = True
                return
            self._close_now()
        self._tell_closed()  # (with the lock released: a listener may join a thread needing it)

    def _close_now(self) -> None:
        conn, self._conn = self._conn, None
        self._close_pending = False
        if conn is None:
            return
        if self._turn is not None:
            self._turn.close()
        if self.read_only is None:  # (a read-only connection may not checkpoint)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except apsw.Error:  # another process holds the WAL busy; its maintainer will do it
                pass
        conn.close()

    @property
    def forked(self) -> bool:
        """True in a child forked from the process that opened the index."""
        return self._process.forked

    def check_process(self) -> None:
        """Raise StoreClosedError (forked_error) in a child forked from the process that opened
        the index: for what else uses the store's connection, locks or threads (its events, a
        sync engine), which the child must not touch either."""
        if self.forked:
            raise forked_error(self._process.pid)

    @property
    def write_open(self) -> bool:
        """True if the calling thread has a write transaction open (what it reads is uncommitted)."""
        return self._owner == threading.get_ident() and self._depth > 0

    @property
    def lock_held(self) -> bool:
        """True if the calling thread holds this index's lock (it is inside read() or write()):
        it must not then wait for another thread that needs the index (a deadlock)."""
        # (What threading.Condition asks an RLock; write_open misses a read() held around.)
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    @property
    def closed(self) -> bool:
        """True after close() (also while a close waits for the open transaction to end)."""
        return self._conn is None or self._close_pending

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once what the calling thread has written is committed.

        With a write transaction open on this thread (at any depth), the callback is queued and
        runs on this thread after the outermost COMMIT, once the lock is released (unless the
        thread held it before the transaction); it is dropped if the transaction, or the
        savepoint it was queued in, rolls back. With none open it runs at once. For change
        events: a subscriber must never hear of a change other connections cannot see yet,
        or that is then rolled back, nor run while this thread holds the index lock.
        """
        # _owner is only ever set to this thread's id by this thread, so an unlocked read is
        # exact for the question asked (another thread's transaction does not hold this one).
        if self._owner == threading.get_ident() and self._deferred:
            self._deferred[-1].append(callback)
            return
        callback()

    def undo_on_rollback(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` if the calling thread's open write transaction rolls back.

        For a component that changed files in a write that has committed or released: with no
        enclosing transaction on this thread it committed, and the callback is dropped. Inside
        one (a save run by the sync engine's transaction is a savepoint), the callback is queued
        at the enclosing level and runs if that level, or one around it, rolls back; it is
        dropped when the outermost commits. Callbacks run newest first, on this thread, under
        the index lock and before the ROLLBACK itself: the files are put back while this
        process still holds the write lock (no other process sees them disagree with the
        index), and the undo can still read what the transaction wrote. So a callback may read
        the index and touch files, but must not write the index. One that raises is logged and
        the others still run (the rollback goes ahead: reconcile heals what is left).
        """
        if self._owner == threading.get_ident() and self._undo:
            self._undo[-1].append(callback)

    def on_commit(self, callback: Any) -> None:
        """Call ``callback()`` after every outermost write commit (used by the maintainer)."""
        self._commit_listeners.append(callback)

    def on_rollback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every rollback, of a transaction or of a savepoint.

        For a component that caches what it writes (the app-data hot tier): its write can be
        released into a caller's enclosing transaction that is then rolled back. The callback
        runs under the index lock, so it must only note the fact (no locks, no I/O).
        """
        self._rollback_listeners.append(callback)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, on the closing thread, after the connection is closed.

        For a component with a thread on this index (the app-data purger): without it, the
        thread slept on after the store closed until its next round found the index closed.
        Called with the index's lock released, except for a close deferred into a transaction
        of the closing thread (called when it ends, under the lock: a callback must then not
        wait for another thread that needs the index; ``lock_held`` tells). One that raises is
        logged and the others still run.
        """
        self._close_listeners.append(callback)

    def remove_close_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback`` (registered with :meth:`on_close`); absent is fine.
        Takes no lock, as :meth:`remove_rollback_listener`."""
        with contextlib.suppress(ValueError):
            self._close_listeners.remove(callback)

    def _tell_closed(self) -> None:
        listeners, self._close_listeners = self._close_listeners, []
        for cb in listeners:
            try:
                cb()
            except Exception:  # closing goes on; the component logs why
                log.exception("index close listener %r failed", cb)

    def remove_rollback_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback`` (registered with :meth:`on_rollback`); absent is fine.

        Takes no lock, so a weakref finalizer (run by the garbage collector in whatever thread,
        whatever locks it holds) may call it: list.remove is atomic, and a rollback walks a copy.
        """
        try:
            self._rollback_listeners.remove(callback)
        except ValueError:
            pass

    # -- transactions --------------------------------------------------------------------------------

    # Cursors are handed out as Any: apsw's stubs type every row value as a wide union, and every
    # caller converts the values it reads explicitly anyway.
    @contextmanager
    def read(self) -> Iterator[Any]:
        """A cursor for reads, under the lock."""
        self.check_process()  # (before the lock: a parent thread may hold the child's copy)
        with self._lock:
            cur = self.conn.cursor()
            try:
                yield cur
            except apsw.Error as exc:
                note_os_error(self.conn, exc)
                raise map_apsw_error(exc, "read the index") from exc
            finally:
                cur.close()

    @contextmanager
    def write(self, outcome: WriteOutcome | None = None) -> Iterator[Any]:
        """A write transaction: BEGIN IMMEDIATE at the outermost level, SAVEPOINTs inside.

        Rolls back on any exception from the body. One that comes after the body returned
        (KeyboardInterrupt, SystemExit, or one raised by a commit listener or an after-commit
        callback) may find the outermost COMMIT done: it still propagates, and ``outcome``
        tells whether the write stands (see WriteOutcome). Raises IndexStoreError (busy past
        the timeout, corrupt) and the mapped storage errors. When SQLite rolls the whole
        transaction back by itself (after SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM,
        SQLITE_INTERRUPT inside it), every level still open fails, whatever its body caught: an inner level and any write statement with an
        IndexStoreError (``_WriteLost``), the outermost with the error that did it (mapped, e.g.
        DiskFullError); nothing of the transaction is committed.
        """
        self.check_process()
        if self.read_only is not None:
            raise self.read_only_error()
        # (The after-commit callbacks of the outermost level's COMMIT and the interrupt that came
        # right after it, set once it is done.)
        ended: list[Any] = []
        try:
            with self._lock:
                conn = self.conn
                cur = conn.cursor()
                outer = self._depth == 0
                name = f"sp{self._depth}"
                level = self._open_level(conn, cur, outer, name)
                try:
                    yield cur
                except BaseException as exc:
                    self._depth -= 1
                    self._deferred.pop()  # what this level queued never happened
                    undo = self._undo.pop()
                    note_os_error(conn, exc)
                    lost = self._note_lost(conn, exc)
                    cause: BaseException | None = self._lost_cause or exc
                    self._rollback(cur, outer, name, undo)
                    self._end(outer)  # (the outermost forgets the loss: captured above)
                    if lost and isinstance(exc, Exception):  # (not KeyboardInterrupt and the like)
                        self._raise_lost(outer, cause)
                    raise
                if not outer:
                    self._release(conn, cur, name, level, outcome)
                    return
                ended[:] = self._commit(conn, cur, outcome)  # (one store: set or not at all)
        finally:
            # In a finally, not on the next line: an interrupt (a signal's KeyboardInterrupt)
            # right after the lock's release skipped them, and a committed write's kept files
            # stayed in the folder, its events never came.
            if ended:
                self._after_outer_commit(*ended)

    def _open_level(self, conn: apsw.Connection, cur: apsw.Cursor, outer: bool, name: str) -> int:
        """Begin the outermost level (BEGIN IMMEDIATE) or a SAVEPOINT (under the lock); return
        the level's place in _deferred and _undo."""
        if not outer and self._lost:
            raise _WriteLost(self._lost_cause) from self._lost_cause
        try:
            if outer:
                self._begin_immediate(cur)
                self.write_serial += 1
                # The versions are read only when another connection committed since they
                # were last found fine (an upgrade is such a commit): one pragma per write,
                # no page read, as the core check alone cost before.
                seen = int(str(cur.execute("PRAGMA data_version").fetchall()[0][0]))
                newer = None if seen == self._versions_checked_at else self._newer_in(cur)
            else:
                cur.execute(f"SAVEPOINT {name}")
        except apsw.Error as exc:
            note_os_error(conn, exc)
            if not outer and self._note_lost(conn, exc):
                self._raise_lost(outer, self._lost_cause)
            raise map_apsw_error(exc, "start a write") from exc
        if outer and newer is not None:
            # A newer localstore upgraded the index (the core, or the tables of a component
            # this connection uses: sync's, app data's) since this one opened it (the app
            # updated while the daemon ran): its rows may mean what this code does not
            # write (the bump is what keeps an older version out at open), so no write,
            # as at open.
            cur.execute("ROLLBACK")
            # Kept: a long-running owner (the daemon's tick) stops on it, whichever of its
            # threads met it first (docs/daemon.md, "A newer localstore upgraded the home").
            self.newer = newer
            raise self.newer
        if outer:
            self._versions_checked_at = seen
        self._depth += 1
        if outer:
            self._owner = threading.get_ident()
            self._rolled_back = False
        self._deferred.append([])
        self._undo.append([])
        return self._depth - 1

    def _commit(
        self, conn: apsw.Connection, cur: apsw.Cursor, outcome: WriteOutcome | None
    ) -> tuple[list[Callable[[], None]], BaseException | None]:
        """Commit the outermost level whose body returned (under the lock); return its
        after-commit callbacks and the interrupt that came once its COMMIT was done, if any.

        Raises (after the rollback) when it did not commit."""
        queued, undo = self._deferred[0], self._undo[0]
        counted = self._blueprints_touched
        try:
            self._depth = 0
            if self._note_lost(conn, None):
                # The body caught the error that rolled the transaction back and went on: what
                # it did since then was refused (see _mark_lost), so this level did not happen.
                cause = self._lost_cause
                self._rollback(cur, True, "sp0", undo)
                self._end(True)
                self._raise_lost(True, cause)
            self._commit_statement(conn, cur, counted, undo)
            if self._after_commit_statement is not None:
                self._after_commit_statement()
            self._note_commit(counted, outcome)
            self._end(True)
        except BaseException as exc:
            # Ended above (rolled back, or committed and noted) unless _owner is still set: then
            # it came between COMMIT and _end (a signal, a test hook), or before the COMMIT.
            if self._owner is None or not self._end_interrupted(conn, cur, counted, outcome):
                raise
            return queued, exc
        return queued, None

    def _commit_statement(
        self,
        conn: apsw.Connection,
        cur: apsw.Cursor,
        counted: bool,
        undo: Sequence[Callable[[], None]],
    ) -> None:
        """Log the change, note this commit's own op_id range (if asked for), then COMMIT."""
        try:
            if counted:
                cur.execute(_COUNT_BLUEPRINT_COMMIT)
                gen = int(str(cur.execute(BLUEPRINTS_GEN).fetchall()[0][0]))
                # (A rolled-back savepoint's rows are listed too: read again, unchanged.)
                cur.executemany(_LOG_CHANGE, [(gen, r) for r in self._txn_rids or (-1,)])
            if self._first_op is not None and self._own_ops is not None:
                last = cur.execute(_LAST_OP).fetchall()[0][0]
                # Kept where _end_interrupted finds it too: an interrupt right after the COMMIT
                # otherwise lost the range, and the follower published this connection's own
                # revisions as another process's (process="other").
                self._commit_ops = (self._first_op, int(str(last)))
            cur.execute("COMMIT")
        except apsw.Error as exc:
            note_os_error(conn, exc)
            self._rollback(cur, True, "sp0", undo)
            self._end(True)
            raise map_apsw_error(exc, "commit to the index") from exc

    def _note_commit(self, counted: bool, outcome: WriteOutcome | None) -> None:
        """Bookkeeping of a done COMMIT (under the lock). Done twice by an interrupt right after
        it (see _end_interrupted): a listing then reads again, never misses a change."""
        if outcome is not None:
            outcome.done = True
        if counted:
            self.blueprint_commits += 1
        own_ops = self._commit_ops
        if own_ops is not None and self._own_ops is not None and own_ops[0] <= own_ops[1]:
            ranges = self._own_ops
            if ranges and ranges[-1][1] >= own_ops[1]:
                return  # (noted already: this is the second time)
            if ranges and ranges[-1][1] + 1 == own_ops[0]:
                ranges[-1] = (ranges[-1][0], own_ops[1])  # (no other commit between)
            else:
                ranges.append(own_ops)

    def _end_interrupted(
        self,
        conn: apsw.Connection,
        cur: apsw.Cursor,
        counted: bool,
        outcome: WriteOutcome | None,
    ) -> bool:
        """End the outermost level an exception left before its _end; True if it committed.

        Asks the connection, not a flag set after the COMMIT (the exception may have come
        between the statement's return and any next line): back in autocommit mode with no
        rollback seen, the COMMIT was done. Then the write stands and its caller must not undo
        its files (they are what the index now holds). Otherwise it is rolled back here."""
        self._depth = 0
        try:
            if conn.getautocommit() and not self._rolled_back:
                self._note_commit(counted, outcome)
                return True
            self._rollback(cur, True, "sp0", self._undo[0] if self._undo else ())
            return False
        finally:
            self._end(True)

    def _release(
        self,
        conn: apsw.Connection,
        cur: apsw.Cursor,
        name: str,
        level: int,
        outcome: WriteOutcome | None,
    ) -> None:
        """Release an inner level whose body returned into the enclosing one (under the lock).

        Raises (after rolling it back) when SQLite had rolled the transaction back or the
        RELEASE failed. An exception that comes while the level is neither merged nor rolled
        back hands it to the enclosing level whole and makes that one unable to commit: it
        cannot tell whether the RELEASE was done, and its files must agree with the index."""
        queued, undo = self._deferred[level], self._undo[level]
        try:
            if self._note_lost(conn, None):
                self._drop_level(level)
                cause = self._lost_cause
                self._rollback(cur, False, name, undo)
                self._raise_lost(False, cause)
            try:
                cur.execute(f"RELEASE {name}")
            except apsw.Error as exc:
                self._drop_level(level)
                note_os_error(conn, exc)
                lost = self._note_lost(conn, exc)
                self._rollback(cur, False, name, undo)
                if lost:
                    self._raise_lost(False, self._lost_cause)
                raise map_apsw_error(exc, "commit to the index") from exc
            if outcome is not None:
                outcome.done = True
            # Released into the enclosing level: it commits or rolls back with it. Each list
            # merged by one assignment, undo last: an interrupt finds it merged or not at all.
            self._deferred[level - 1 :] = [self._deferred[level - 1] + queued]
            self._undo[level - 1 :] = [self._undo[level - 1] + undo]
            self._depth = level
        except BaseException as exc:
            if len(self._undo) > level:  # neither merged nor rolled back (see above)
                self._hand_over(level, exc, outcome)
            raise

    def _drop_level(self, level: int) -> None:
        """Forget an inner level that is rolled back (its callbacks are the caller's now)."""
        del self._deferred[level:]
        del self._undo[level:]
        self._depth = level

    def _hand_over(self, level: int, exc: BaseException, outcome: WriteOutcome | None) -> None:
        """Give an interrupted inner level to the enclosing one, which then rolls back whole."""
        self._undo[level - 1 :] = [self._undo[level - 1] + self._undo[level]]
        del self._deferred[level:]  # (never published: the enclosing level will roll back)
        self._depth = level
        if outcome is not None:
            outcome.done = True  # (its caller's undo then joins the enclosing level's)
        self._mark_lost()
        if self._lost_cause is None:
            self._lost_cause = exc

    def _after_outer_commit(
        self, queued: Sequence[Callable[[], None]], interrupted: BaseException | None
    ) -> None:
        """Tell the commit listeners, then run the after-commit callbacks (lock released).

        All of them run whatever one raises, even KeyboardInterrupt: the write is committed,
        and its events, its kept files' removal, the maintainer's nudge belong to it. The
        first BaseException (``interrupted`` first) is raised once they ran; an Exception of
        an after-commit callback is only logged (it must not make the write look failed)."""
        self._commits += 1
        told = call_each(tuple(self._commit_listeners), logged=None)
        ran = call_each(queued, logged=(log, "after-commit callback %r failed"))
        for exc in (interrupted, told, ran):
            if exc is not None:
                raise exc

    # -- a transaction SQLite rolled back by itself ----------------------------------------------

    def _on_row_change(self, _op: int, _db: str, table: str, rowid: int) -> None:
        """The connection's update hook: note a blueprint row this connection changed.

        Not a trigger: a statement that fires triggers runs in a statement transaction, and
        FTS5 answers each one by flushing its pending terms to disk (a save's INSERT into
        blueprints went from 21 to 179 us, and every save left a tiny segment to merge). A
        Python call per changed row of any table costs about 1 % of a save instead.
        """
        if table == "blueprints":
            self._blueprints_touched = True
            txn = self._txn_rids
            if txn is not None:
                txn.add(rowid)
                if len(txn) > CHANGED_ROWS_KEPT:
                    self._txn_rids = None
            changed = self._changed_rids
            if self._track_rids and changed is not None:
                changed.add(rowid)
                if len(changed) > CHANGED_ROWS_KEPT:
                    self._changed_rids = None

    def blueprint_changes(self) -> set[int] | None:
        """The rowids of the blueprint rows this connection changed since the last call (some
        perhaps rolled back: read them again), or None if more than CHANGED_ROWS_KEPT changed.

        The first call only starts the noting (a process that never asks keeps nothing). Under
        the lock, outside a write transaction.
        """
        changed, self._changed_rids = self._changed_rids, set()
        self._track_rids = True
        return changed

    def _on_sqlite_rollback(self) -> None:
        """The connection's rollback hook: SQLite ends a transaction with a rollback.

        Ours (the outermost level's ROLLBACK, a failed COMMIT) run with ``_depth`` 0. Inside an
        open write it is SQLite's own response to an error (lang_transaction.html, "Response To
        Errors Within A Transaction"): from here on the connection is in autocommit mode, so
        every statement the write's code runs next would commit on its own, and a SAVEPOINT
        would open a new transaction that its RELEASE commits. Refused at once, before any
        level sees the error, since a caller's per-item handler may catch it and go on.
        """
        self._rolled_back = True
        if self._depth > 0:
            self._mark_lost()

    def _note_lost(self, conn: apsw.Connection, exc: BaseException | None) -> bool:
        """True if the open transaction is gone; notes ``exc`` as its cause (the first seen)."""
        if not self._lost and not conn.getautocommit():
            return False
        self._mark_lost()
        if self._lost_cause is None and exc is not None and not isinstance(exc, _WriteLost):
            self._lost_cause = exc
        return True

    def _mark_lost(self) -> None:
        if not self._lost:
            self._lost = True
            # Checked per statement only from now until the outermost level ends: a hook on
            # every statement of every write would cost each one a Python call.
            self.conn.exec_trace = self._refuse_after_loss

    def _refuse_after_loss(self, cur: apsw.Cursor, sql: str, bindings: Any) -> bool:
        """Exec tracer while a lost write is still open: reads go on (an undo path reads the
        committed revision it puts back), anything that writes or opens a transaction fails."""
        if cur.is_readonly and not sql.lstrip()[:9].upper().startswith(("SAVEPOINT", "BEGIN")):
            return True
        raise _WriteLost(self._lost_cause)

    @staticmethod
    def _raise_lost(outer: bool, cause: BaseException | None) -> NoReturn:
        """Fail a level of a lost write: an inner one with _WriteLost, which no per-item handler
        takes for one item's failure; the outermost with the error that lost it, typed."""
        if isinstance(cause, _WriteLost):
            raise cause  # (a body that caught a level's _WriteLost and went on, then raised it)
        if not outer:
            raise _WriteLost(cause) from cause
        if isinstance(cause, apsw.Error):
            raise map_apsw_error(cause, "write to the index") from cause
        if isinstance(cause, StorageError) and not isinstance(cause, _WriteLost):
            raise cause  # (mapped where it happened; its own cause kept)
        raise _WriteLost(cause) from cause

    def _end(self, outer: bool) -> None:
        """Bookkeeping when a level ends (under the lock): the outermost frees the connection
        for a close() that came from inside it."""
        if not outer:
            return
        self._owner = None
        self._blueprints_touched = False
        self._txn_rids = set()
        self._first_op = None
        self._commit_ops = None
        self._deferred.clear()
        self._undo.clear()
        if self._lost:
            self._lost = False
            self._lost_cause = None
            if self._conn is not None:
                self._conn.exec_trace = None
        if self._close_pending:
            self._close_now()
            self._tell_closed()

    def _begin_immediate(self, cur: apsw.Cursor) -> None:
        # Waits for another process's write lock with this index's lock RELEASED: SQLite's busy
        # handler would sleep up to busy_timeout_ms holding it, and every read of this process
        # (a status request, the daemon's tick, close() at shutdown) queued behind a lock that
        # it does not need. So BEGIN IMMEDIATE runs with no busy timeout and the waiting is done
        # here, same overall timeout and same error when it expires. (Under an enclosing read()
        # of the same thread the release only lowers the count: that thread waits holding the
        # lock, as before.) Reads keep the busy timeout: they never wait for a writer in WAL.
        begin_taking_turns(
            cur,
            self._turn,
            self.busy_timeout_ms,
            wait=self._wait_unlocked,
            interrupted=lambda: self._no_lock_waits,
        )

    def _wait_unlocked(self, seconds: float) -> None:
        """Sleep with this index's lock released; raise if the index was closed meanwhile."""
        self._lock.release()
        try:
            time.sleep(seconds)
        finally:
            self._lock.acquire()
        # Any other thread's transaction ended before the lock came back (each holds it
        # throughout), so this is still the outermost level; but the index may be closed.
        if self._conn is None:
            raise StoreClosedError(
                "the index was closed while a write waited for it",
                hint="open the store again",
            )

    def interrupt_lock_waits(self) -> None:
        """Make writes give up at once on another process's write lock, from now on.

        For a shutdown: the threads it joins (watcher, sync) must not wait out the busy timeout
        (30 s) for a lock another process holds. Such a write fails as if the timeout had
        expired (IndexStoreError); one that finds the lock free goes ahead as usual.
        """
        self._no_lock_waits = True

    def _rollback(
        self, cur: apsw.Cursor, outer: bool, name: str, undo: Sequence[Callable[[], None]] = ()
    ) -> None:
        try:
            self._run_undo(undo)
        finally:  # (an interrupt in an undo: the rollback must still happen, and the others)
            self._rollback_statements(cur, outer, name)

    @staticmethod
    def _run_undo(undo: Sequence[Callable[[], None]]) -> None:
        """Run the undo callbacks, newest first (see undo_on_rollback: before the ROLLBACK)."""
        # (An Exception only logged: the rollback must happen; reconcile records what is left.)
        exc = call_each(reversed(undo), logged=(log, "undo callback %r failed during a rollback"))
        if exc is not None:
            raise exc

    def _rollback_statements(self, cur: apsw.Cursor, outer: bool, name: str) -> None:
        try:
            if outer:
                if not self.conn.getautocommit():
                    cur.execute("ROLLBACK")
            elif not self._lost:  # (lost: SQLite rolled it all back, its savepoints with it)
                cur.execute(f"ROLLBACK TO {name}")
                cur.execute(f"RELEASE {name}")
        except apsw.Error:  # the transaction is already gone (SQLite rolled it back itself)
            pass
        for cb in tuple(self._rollback_listeners):  # (see remove_rollback_listener)
            cb()

    # -- schema ------------------------------------------------------------------------------------

    def register_schema(self, component: str, migrations: Sequence[Migration]) -> None:
        """Bring one component's tables to the newest version (idempotent, multi-process safe).

        ``migrations[i]`` is the SQL (or the function of the cursor) that takes the component from
        version i to i+1.
        """
        version = self._schema_version(component)
        if version is not None and version > len(migrations):
            # Refused on a read, before any write lock: nothing of a newer version's index is
            # changed, and a newer process holding the lock does not make this a 30 s wait.
            raise self._newer_error(component, version, len(migrations))
        # (Only a component in use: a newer version's archive tables refused above leave the
        # rest of the home usable, as at open.)
        with self._lock:  # (newer_version() compares and notes under it)
            self._known_versions[component] = len(migrations)
            self._versions_checked_at = None  # (one more component to compare)
        if version == len(migrations) and not (component == "core" and self._core_v1_is_old()):
            # Up to date, the common case: no write transaction. Taking one cost every
            # `localstore status` a wait for the write lock while another process held it, and
            # failed on an index this user may read but not write.
            return
        if self.read_only is not None:
            raise self._read_only_schema_error(component, version or 0, len(migrations))
        try:
            self._migrate(component, migrations)
        except apsw.Error as exc:
            # Not inside write(), which leaves errors of its body to the caller: a read-only
            # index.db reached `localstore status` as a raw apsw.ReadOnlyError traceback.
            raise map_apsw_error(exc, f"update the {component} tables of {self.path}") from exc

    def read_only_error(self, action: str = "write to the index") -> ReadOnlyStoreError:
        """The refusal of a write to this read-only index, naming why it is read-only."""
        return ReadOnlyStoreError(
            f"cannot {action}: this store is open read-only ({self.read_only})",
            hint="open the home without read_only where it may be written (copy a snapshot "
            "to a writable folder first); 'localstore export' copies blueprints out",
        )

    def _read_only_schema_error(self, component: str, version: int, known: int) -> LocalStoreError:
        """Why a read-only index cannot be used for a component whose tables are missing or
        older than this version's (it cannot create or update them)."""
        if version == 0:
            return self.read_only_error(
                f"create the {component} tables (this home has never had them)"
            )
        return IndexStoreError(
            f"the {component} tables of {self.path} were made by an older localstore "
            f"(v{version}; this version reads v{known}) and a read-only open cannot update them",
            hint="copy the home to a folder you may write and open the copy once (that updates "
            "its index), or read it with the localstore version that made it",
        )

    def _check_schema_read_only(self) -> None:
        """Refuse an index whose core tables this version cannot read as they are.

        A read-only open cannot migrate: an older localstore's index (a backup made before an
        upgrade) is read as it is when every step it lacks only adds indexes (CORE_READ_WITHOUT),
        else refused with what to do, never read with queries its tables do not fit.
        """
        version = self._schema_version("core") or 0
        known = len(CORE_MIGRATIONS)
        if version > known:
            raise self._newer_error("core", version, known)
        oldest = oldest_core_read_as_is()
        if version < oldest or self._core_v1_is_old():
            read = f"v{known}" if oldest == known else f"v{oldest} to v{known}"
            raise IndexStoreError(
                f"the index {self.path} was made by an older localstore (core schema "
                f"v{version}; this version reads {read}) and a read-only open cannot update it",
                hint="copy the home to a folder you may write and open the copy once (that "
                "updates its index), or read it with the localstore version that made it",
            )

    def schema_version(self, component: str, migrations: Sequence[Migration]) -> int:
        """The component's schema version in this index (0: none of its tables yet), read only.

        For a caller that only reads the component's tables (a dry run) and must not create
        them: register_schema would. Raises NewerIndexError when a newer version wrote them.
        """
        version = self._schema_version(component)
        if version is not None and version > len(migrations):
            raise self._newer_error(component, version, len(migrations))
        return version or 0

    def newer_version(self) -> NewerIndexError | None:
        """The refusal a write would meet because a newer localstore upgraded the index since
        this connection opened it (any component it brought up to date), or None.

        For a process that runs for days (the daemon's tick, twice a second; an app's sync,
        every 2 s): it stops serving the home then, instead of having each write refused. The
        versions are read only after another connection committed (``PRAGMA data_version``
        moved: an upgrade is such a commit); otherwise this is that one pragma, no file I/O. An
        idle daemon read them at every tick: two statements more per tick, three times the
        SQL of its idle tick before it checked (bench/idle_daemon.py).
        """
        if self.newer is not None:
            return self.newer
        with self.read() as cur:  # (holds the lock throughout: see register_schema)
            # Read before the versions: a commit after this read moves it again, so the next
            # call reads them.
            seen = int(str(cur.execute("PRAGMA data_version").fetchall()[0][0]))
            if seen == self._versions_checked_at:
                return None
            newer = self._newer_in(cur)
            if newer is None:
                self._versions_checked_at = seen
        return newer

    def _newer_in(self, cur: Any) -> NewerIndexError | None:
        """The refusal for the core, or a component this connection brought up to date, whose
        version in the index is above what this code knows (read with ``cur``); else None."""
        core = int(str(cur.execute("PRAGMA user_version").fetchall()[0][0]))
        versions = {"core": core}
        if self._known_versions.keys() - {"core"}:
            # (The table is there: the core's registration made it, before any other's.)
            rows = cur.execute("SELECT component, version FROM component_versions").fetchall()
            versions.update((str(c), int(str(v))) for c, v in rows)
            versions["core"] = max(core, versions["core"])
        known = {"core": len(CORE_MIGRATIONS), **self._known_versions}
        for component in sorted(known, key=lambda c: (c != "core", c)):  # (the core first)
            if versions.get(component, 0) > known[component]:
                return self._newer_error(component, versions[component], known[component])
        return None

    def _newer_error(self, component: str, version: int, known: int) -> NewerIndexError:
        return NewerIndexError(
            f"the index {self.path} was written by a newer localstore ({component} schema "
            f"v{version}; this version knows up to v{known}); it was left unchanged",
            hint="upgrade localstore to open this home",
        )

    def _schema_version(self, component: str) -> int | None:
        """The component's recorded schema version, or None when none is recorded yet.

        For the core, the higher of that and ``PRAGMA user_version`` (which mirrors it): a newer
        version that raised only the pragma is still newer."""
        with self.read() as cur:
            if component == "core":
                pragma = int(cur.execute("PRAGMA user_version").fetchall()[0][0])
                if pragma > len(CORE_MIGRATIONS):
                    return pragma
            if not cur.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'component_versions'"
            ).fetchall():
                return None
            row = cur.execute(
                "SELECT version FROM component_versions WHERE component = ?", (component,)
            ).fetchall()
        return int(row[0][0]) if row else None

    def _core_v1_is_old(self) -> bool:
        with self.read() as cur:
            return bool(_old_v1_pieces(cur))

    def _migrate(self, component: str, migrations: Sequence[Migration]) -> None:
        with self.write() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS component_versions ("
                " component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"
            )
            row = cur.execute(
                "SELECT version FROM component_versions WHERE component = ?", (component,)
            ).fetchall()
            current = int(row[0][0]) if row else 0
            if current > len(migrations):  # (another process made it newer meanwhile)
                raise self._newer_error(component, current, len(migrations))
            if component == "core" and current >= 1:
                _reshape_core_v1(cur, _old_v1_pieces(cur))
            for version in range(current, len(migrations)):
                step = migrations[version]
                if not isinstance(step, str):
                    step(cur)
                    continue
                adds = _ADDS_COLUMN.get(step)
                if adds is not None and _has_column(cur, "blueprints", adds):
                    continue  # (ADD COLUMN has no IF NOT EXISTS)
                cur.execute(step)
            if current != len(migrations):
                cur.execute(
                    "INSERT INTO component_versions VALUES (?, ?) ON CONFLICT(component) "
                    "DO UPDATE SET version = excluded.version",
                    (component, len(migrations)),
                )
                if component == "core":
                    cur.execute(f"PRAGMA user_version = {len(migrations)}")

    # -- small helpers -----------------------------------------------------------------------------

    def next_op_id(self, cur: Any) -> int:
        """Draw the next change number (inside a write transaction)."""
        # Two statements, not UPDATE ... RETURNING: inside a transaction that already wrote,
        # RETURNING cost 20-100 us against 5 (it opens a statement journal).
        cur.execute("UPDATE counters SET value = value + 1 WHERE name = 'op_id'")
        row = cur.execute(_LAST_OP).fetchall()
        op = int(row[0][0])
        if self._first_op is None:
            self._first_op = op
        return op

    def own_ops(self) -> list[tuple[int, int]]:
        """The op_ids this connection committed since the last call, as ranges (first, last).

        The first call only starts the noting (a process that never asks keeps nothing). Call it
        under the lock (``read()``): no commit of this connection can land in between, so with
        a read transaction around it, the rows read and the ranges agree.
        """
        ranges = self._own_ops or []
        self._own_ops = []
        return ranges

    def raise_op_counter(self, cur: Any, at_least: int) -> None:
        """Make every later op id greater than ``at_least`` (inside a write transaction).

        The sync engine calls it when the server says this device already used op ids up to
        ``at_least`` (an index restored from a backup rolled the counter back).
        """
        cur.execute(
            "UPDATE counters SET value = max(value, ?) WHERE name = 'op_id'", (int(at_least),)
        )

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        """Read one value from the settings table."""
        with self.read() as cur:
            rows = cur.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchall()
        return str(rows[0][0]) if rows else default

    def set_setting(self, key: str, value: str) -> None:
        """Write one value to the settings table."""
        with self.write() as cur:
            cur.execute(
                "INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                "excluded.value",
                (key, value),
            )

    def quick_check(self) -> None:
        """Raise the damaged-index error when SQLite's quick check finds damaged pages."""
        try:
            problems = self.pragma_check("quick_check")
        except apsw.Error as exc:
            raise map_apsw_error(exc, f"check {self.path}") from exc
        if problems:
            cause = apsw.CorruptError("; ".join(problems[:3]))
            raise map_apsw_error(cause, f"check {self.path}") from cause

    def pragma_check(self, pragma: Literal["quick_check", "integrity_check"]) -> list[str]:
        """What SQLite's ``PRAGMA quick_check`` or ``integrity_check`` finds; [] when healthy.

        FTS5 keeps each full-text table's list of segments cached on the connection, and reads
        it again only when a statement opens a cursor on the table after another connection
        committed. The pragmas call FTS5's own check without that step (SQLite 3.54): on a
        connection that last read the search tables before another connection merged them (this
        process's maintainer, another process's), the check read segments the merge had deleted
        and reported "fts5: corruption found reading blob" on a healthy index; at open, that
        would have set a healthy index aside and lost its history. So a cursor is opened on each
        first, in the read transaction the pragma then runs in.
        """
        with self.read() as cur:
            cur.execute("SAVEPOINT pragma_check")
            try:
                for table in FTS_TABLES:
                    cur.execute(f"SELECT 1 FROM {table} WHERE rowid = 0").fetchall()
                rows = cur.execute(f"PRAGMA {pragma}").fetchall()
            finally:
                # (An I/O error may have rolled the transaction back already.)
                if cur.connection.in_transaction:
                    cur.execute("RELEASE pragma_check")
        return [str(r[0]) for r in rows if str(r[0]) != "ok"]

    def integrity_check(self) -> list[str]:
        """SQLite's integrity check; an empty list means healthy."""
        problems = self.pragma_check("integrity_check")
        if self.read_only is not None:
            # FTS5's full check is an INSERT, which a read-only connection refuses (check failed
            # with "cannot write the index" on a snapshot). The pragma above checks the search
            # tables' own structure, not their agreement with the text (docs/architecture.md,
            # "Read-only homes"); a writable copy's 'check' does that.
            return problems
        # The search indexes against the text they were built from (external content: a save
        # removes an entry by giving back the values it indexed, so drift would show here).
        problems += [f"search index ({t}): {why}" for t, why in self.search_index_problems()]
        return problems

    def search_index_problems(self) -> list[tuple[str, str]]:
        """(table, FTS5's complaint) for each full-text table that fails its integrity check."""
        out = []
        with self.read() as cur:
            for table in FTS_TABLES:
                try:
                    cur.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")
                except _NOT_DAMAGE as exc:
                    # The check is an INSERT: on an index this user cannot write (or that another
                    # process holds) it fails without saying anything about the table, and was
                    # reported as damage with 'check --fix' as the cure.
                    raise map_apsw_error(exc, f"check the search index {table}") from exc
                except apsw.Error as exc:
                    out.append((table, str(exc)))
        return out

    def page_usage(self) -> dict[str, int]:
        """The index file's pages, free pages, page size and auto_vacuum mode (page_usage())."""
        with self.read() as cur:
            return page_usage(cur.connection)

    def vacuum(self) -> int:
        """Rewrite the index in incremental auto_vacuum mode, giving every free page back to
        the filesystem; returns the bytes given back. For an index made before new ones got that
        mode (SQLite changes it only by a VACUUM): afterwards the maintainer gives free pages
        back as they accumulate. A whole rewrite: it holds the write lock for about a second per
        60 MB of index and needs that much free space again. Raises IndexStoreError (inside a
        transaction, busy past the timeout) and DiskFullError."""
        with self.read() as cur:
            if self._depth > 0:
                raise IndexStoreError(
                    "cannot vacuum the index inside a write transaction",
                    hint="call vacuum() after the transaction ends",
                )
            conn = cur.connection
            before = page_usage(conn)
            cur.execute("PRAGMA auto_vacuum=INCREMENTAL").fetchall()
            try:
                cur.execute("VACUUM").fetchall()
            except apsw.Error as exc:
                # Out of space half-way, the pages the rewrite had written stay in the WAL (a
                # rollback does not shorten it) and the disk stayed full, for this process's
                # next save and every other program, until some checkpoint reset the WAL.
                self._truncate_wal(cur)
                note_os_error(conn, exc)
                raise map_apsw_error(exc, "rewrite the index (VACUUM)") from exc
            # The rewrite went through the WAL: copy it back now, and cut the WAL, if nobody
            # reads (otherwise the maintainer's next idle round does).
            self._truncate_wal(cur)
            after = page_usage(conn)
        return max(0, before["pages"] - after["pages"]) * after["page_size"]

    def _truncate_wal(self, cur: apsw.Cursor) -> None:
        """Checkpoint and cut the WAL to nothing if no reader is in the way (never waits)."""
        truncate_wal_now(cur.connection, self.busy_timeout_ms)

    def rebuild_search_indexes(self) -> list[str]:
        """Rebuild every full-text table that fails its check from the text it indexes (derived
        data: nothing is lost); returns the tables rebuilt."""
        broken = [table for table, _ in self.search_index_problems()]
        if broken:
            with self.write() as cur:
                # What the view gives depends on the plain-rows list: made again from the text
                # first, so a list that had gone wrong is not rebuilt into the index.
                cur.execute("DELETE FROM fts_plain")
                cur.execute(f"INSERT INTO fts_plain {_PLAIN_ROWS}")
        for table in broken:
            with self.write() as cur:
                cur.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")
        return broken
