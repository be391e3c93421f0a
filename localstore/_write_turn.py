"""A writer's turn: processes waiting for the index's write lock say so, and the holder lets them in.

SQLite has no queue for its write lock. A process that waits polls ``BEGIN IMMEDIATE``
(``begin_taking_turns`` below: every write of ``Index.write()`` and of the maintainer threads
begins there), and one that saves back to back takes the lock again a few
microseconds after each commit, so the poll nearly always finds it taken: beside an app saving
in a loop another process made 17 saves in the app's 6,000, and with a short busy timeout its
saves failed (``bench/writer_fairness.py``).

So a waiter announces itself in a small file next to the index (``index.turn``), mapped into
memory by every process that writes the index: two 64-bit words, the time of the waiter's latest
poll (``time.monotonic_ns()``, one clock for every process of the machine) and the token of the
:class:`WriteTurn` that wrote it. A process about to begin a write reads the first word (a memory
load, no system call: nothing more when nobody waits) and, if another process waits and polled
recently, gives way: it leaves the lock free until that waiter has it (the waiter clears the
word) or stops polling.

Advisory only: the SQLite lock is still what serializes writers. A torn or lost word, a waiter
killed while announced (its word is ignored once ``FRESH_NS`` old), a file that cannot be made
(a read-only folder, a full disk) or opened (another user's, narrower than the index): at worst
a writer gives way for nothing, up to ``FRESH_NS``, or does not give way, as before this existed.

The file has the index file's permission bits, as SQLite gives them to the index's ``-wal`` and
``-shm``: whoever may write the index may take turns. The index is made 0600, so the file is
too; a home whose owner made ``index.db`` group-writable (a home shared by a group) gets a
group-writable turn file. It was always 0600: the other users' processes wrote the index but
could not open the file, and took no turns (nor were they given way).
"""

from __future__ import annotations

import logging
import mmap
import os
import secrets
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import apsw

from localstore import _durable

log = logging.getLogger("localstore.index")

# An announcement older than this is a waiter that stopped polling (gave up, was killed): ignored.
# Well above a waiter's poll interval (Index: at most TURN_POLL_S) and scheduling delays.
FRESH_NS = 100_000_000
# The mapped words: the announcing waiter's latest poll, and its token.
_SIZE = 16


def turn_path(index_path: Path) -> Path:
    """The turn file of the index at ``index_path`` (``data/index.turn``). Not ``index.db-*``:
    what matches that belongs to SQLite, and is compared by tests of a refused index."""
    return index_path.with_suffix(".turn")


def _follow_index(fd: int, index_st: os.stat_result, path: Path) -> None:
    """Give the turn file the index file's group and mode (and, as root, its owner), as SQLite
    does for the -wal and -shm: the umask narrowed a new one, a process run as root (sudo) made
    it root's, or the index's mode or group changed since the file was made (a home made
    group-shared after its first open kept a 0600 turn file for ever). What this user may not
    change is left as it is: turns are advisory."""
    if sys.platform == "win32":  # (no owners or modes to follow there)
        return
    st = os.fstat(fd)
    mode = stat.S_IMODE(index_st.st_mode) & 0o666
    me = os.geteuid()
    try:
        if me == 0 and st.st_uid != index_st.st_uid:
            os.fchown(fd, index_st.st_uid, index_st.st_gid)
        elif st.st_uid == me and st.st_gid != index_st.st_gid:
            os.fchown(fd, -1, index_st.st_gid)  # (EPERM when this user is not in that group)
        if stat.S_IMODE(st.st_mode) != mode and (me == 0 or st.st_uid == me):
            os.fchmod(fd, mode)
    except OSError as exc:
        log.debug("cannot give the write-turn file %s the index's owner and mode: %s", path, exc)


class WriteTurn:
    """This index connection's view of the shared turn file (see the module doc)."""

    def __init__(self, mapped: mmap.mmap) -> None:
        self._map = mapped
        self._words = memoryview(mapped).cast("q")
        # Tells this connection's own announcement from another's (a pid would not: two stores
        # of one home in one process, or a thread of this one waiting, are not to be given way).
        self.token = secrets.randbits(62) + 1
        self.closed = False

    @classmethod
    def open(cls, index_path: Path) -> WriteTurn | None:
        """Map the turn file of the index at ``index_path``, creating it; None where it cannot
        be (the writes then go without turns, as before)."""
        path = turn_path(index_path)
        try:
            index_st = os.stat(index_path)
            mode = stat.S_IMODE(index_st.st_mode) & 0o666
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _durable.O_CLOEXEC, mode)
        except OSError as exc:
            log.debug("cannot open the write-turn file %s: %s", path, exc)
            return None
        try:
            _follow_index(fd, index_st, path)
            if os.fstat(fd).st_size < _SIZE:
                # Written, not ftruncate()d: a shared mapping of a hole that the disk cannot
                # fill later (a full disk) kills the process with SIGBUS at the store.
                # (From offset 0, where the file was opened.)
                os.write(fd, bytes(_SIZE))
            return cls(mmap.mmap(fd, _SIZE))
        except (OSError, ValueError) as exc:
            log.debug("cannot map the write-turn file %s: %s", path, exc)
            return None
        finally:
            os.close(fd)  # (the mapping keeps its own reference)

    def other_waiting(self) -> bool:
        """Whether another connection announced that it waits for the write lock and polled
        within FRESH_NS. Costs one memory load when nobody waits."""
        words = self._words
        polled = words[0]
        if not polled:
            return False
        if words[1] == self.token:
            return False
        if 0 <= time.monotonic_ns() - polled < FRESH_NS:
            return True
        if words[0] == polled:  # a waiter that stopped polling: forget it
            words[0] = 0
        return False

    def announce(self) -> None:
        """Say that this connection waits for the write lock (again at every poll)."""
        words = self._words
        words[1] = self.token
        words[0] = time.monotonic_ns()

    def withdraw(self) -> None:
        """This connection no longer waits (it has the lock, or gave up): clear its announcement
        (another waiter's, written since, stays)."""
        if self.closed:
            return
        words = self._words
        if words[1] == self.token:
            words[0] = 0

    def close(self) -> None:
        """Unmap the file (the index is closing)."""
        if not self.closed:
            self.withdraw()
            self.closed = True
            self._words.release()
            self._map.close()


# A write waiting for another process's lock polls at most this far apart when the home has a
# turn file (it announces itself at each poll, and the holder leaves it the lock: a short poll
# keeps the holder's pause short). Without one, 50 ms, as before turns.
TURN_POLL_S = 0.002
# The longest a writer leaves the lock to one waiter that does not take it (scheduling delays;
# a waiter stuck without polling is forgotten after _write_turn.FRESH_NS anyway).
GIVE_WAY_MAX_S = 0.1


def begin_taking_turns(
    cur: apsw.Cursor,
    turn: WriteTurn | None,
    busy_timeout_ms: int,
    *,
    wait: Callable[[float], None] = time.sleep,
    interrupted: Callable[[], bool] = lambda: False,
) -> None:
    """``BEGIN IMMEDIATE`` on ``cur``'s connection, taking turns with the other writers of the
    home (_write_turn): give way first to one that waits, and announce this one while waiting.

    ``wait(seconds)`` sleeps between polls (Index: with its lock released); ``interrupted()``
    makes a busy lock fail at once (a shutdown). Raises apsw.BusyError once ``busy_timeout_ms``
    has passed; the connection's busy timeout is ``busy_timeout_ms`` again afterwards.

    Without turns a process saving back to back took the lock again microseconds after each
    commit, and a waiter polling for it rarely found it free (seconds of waiting; past a short
    busy timeout, failures). Index.write() and the Maintainer's writes both begin here: the
    maintainer waited with SQLite's busy handler, never announcing, so a stream of saves kept
    its compaction and search-index merges out for as long as it lasted.
    """
    conn = cur.connection
    deadline = time.monotonic() + busy_timeout_ms / 1000
    if turn is not None and not interrupted() and turn.other_waiting():
        _give_way(turn, deadline, wait, interrupted)
    delay = 0.001 if turn is None else TURN_POLL_S / 4
    cap = 0.05 if turn is None else TURN_POLL_S
    announced = False
    try:
        while True:
            conn.setbusytimeout(0)
            try:
                cur.execute("BEGIN IMMEDIATE")
                return
            except apsw.BusyError:
                if interrupted() or time.monotonic() >= deadline:
                    raise
            finally:
                conn.setbusytimeout(busy_timeout_ms)
            if turn is not None:
                turn.announce()
                announced = True
            wait(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, cap)
    finally:
        if announced and turn is not None:
            turn.withdraw()  # (a no-op once the turn is closed)


def _give_way(
    turn: WriteTurn,
    deadline: float,
    wait: Callable[[float], None],
    interrupted: Callable[[], bool],
) -> None:
    """Leave the write lock to another connection that waits for it: wait until that one has
    it, stops polling, or GIVE_WAY_MAX_S have passed."""
    until = min(deadline, time.monotonic() + GIVE_WAY_MAX_S)
    while not interrupted() and turn.other_waiting():
        left = until - time.monotonic()
        if left <= 0:
            return
        wait(min(TURN_POLL_S / 8, left))
