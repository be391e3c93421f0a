"""Which process an object belongs to: a child forked from it holds only a copy.

A child forked from an app (``multiprocessing``'s fork start method, a worker pool) inherits
every object the app holds, but not its threads, and it shares its sockets, inotify instance and
lock files. Whatever such an object does there (stop, close, send) acts on the parent's
resources, or waits for a thread only the parent has: each owner asks :attr:`ProcessOwner.forked`
first. One check for all of them (the index, the cloud remote, the control client), not a pid
comparison written again in each.
"""

from __future__ import annotations

import os

__all__ = ["ProcessOwner"]


class ProcessOwner:
    """The process that made an object (the one running when this was built)."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()

    @property
    def forked(self) -> bool:
        """True in a child forked from the owning process."""
        return os.getpid() != self.pid

    def __repr__(self) -> str:
        return f"ProcessOwner(pid={self.pid})"
