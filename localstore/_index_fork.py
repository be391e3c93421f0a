"""Forking a process with open indexes: the fork waits for their transactions to end.

Every Index and Maintainer registers here (_track_for_fork); the fork hooks set up at the end of
this module run _fork_wait before a fork and _fork_done after it, on both sides.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localstore._index_upkeep import Maintainer
    from localstore.index import Index

log = logging.getLogger("localstore.index")

# How long a fork waits for this process's index transactions to end (see _fork_wait): as long as
# a write waits for another process's lock by default, which is what the child's writes waited
# for, and then failed, before.
FORK_WAIT_S = 30.0

# Every Index and Maintainer of this process: a fork waits for their locks (_fork_wait).
_LIVE: weakref.WeakSet[Index | Maintainer] = weakref.WeakSet()
_LIVE_MUTEX = threading.Lock()
# The locks _fork_wait took, released on both sides of the fork.
_HELD_AT_FORK: list[Any] = []


def _track_for_fork(owner: Index | Maintainer) -> None:
    with _LIVE_MUTEX:
        _LIVE.add(owner)


def _fork_wait() -> None:
    """Before a fork: wait until no thread of this process is inside an index transaction.

    SQLite keeps the locks of all connections to a file in one table per process (its unix
    VFS), and a child inherits that table. Forked while a thread of the parent was inside a write
    (a save, a pulled page, a maintenance round), the child "held" the write lock in its own
    table, which nothing in the child ever releases: every write of the store the child opened
    itself, as the docs tell it to, waited out the busy timeout and failed with "the index stayed
    locked by another process" (and a read in flight left a read mark the child believed held).
    So the forking thread takes every index's lock (each one's connection is used only under
    it) and every maintainer's (its rounds and its connection's open and close), waiting up to
    FORK_WAIT_S in all, and lets go of them on both sides once the fork is done. A lock still
    held then (a thread that waits for the forking one inside a transaction) is left, with a
    warning: the fork goes on, as before.
    """
    with _LIVE_MUTEX:
        live = list(_LIVE)
    # (Imported here: both modules register their objects through this one.)
    from localstore._index_upkeep import Maintainer
    from localstore.index import Index

    # Maintainers first: a round never takes an index's lock, nor a transaction a maintainer's.
    locks: list[Any] = [o._lock for o in live if isinstance(o, Maintainer)]
    locks += [o._lock for o in live if isinstance(o, Index)]
    deadline = time.monotonic() + FORK_WAIT_S
    missed = 0
    for lock in locks:
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _HELD_AT_FORK.append(lock)
        else:
            missed += 1
    if missed:
        log.warning(
            "forking while %d index transaction(s) of this process stayed open for %.0f s: a "
            "store the child opens may find the index locked for good (fork before the long "
            "write, or use the spawn start method)",
            missed,
            FORK_WAIT_S,
        )
    _LIVE_MUTEX.acquire()  # (held across the fork: a child must not inherit it taken)
    _HELD_AT_FORK.append(_LIVE_MUTEX)


def _fork_done() -> None:
    """After a fork, in the parent and in the child: let go of what _fork_wait took."""
    while _HELD_AT_FORK:
        lock = _HELD_AT_FORK.pop()
        with contextlib.suppress(RuntimeError):  # (the child's forking thread is the owner)
            lock.release()


if hasattr(os, "register_at_fork"):  # (no fork on Windows)
    os.register_at_fork(before=_fork_wait, after_in_parent=_fork_done, after_in_child=_fork_done)
