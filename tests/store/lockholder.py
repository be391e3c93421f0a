"""Test helpers: another process holding the index's write lock, and a look at who waits for it."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

# Holds BEGIN IMMEDIATE on the file until it reads a line (or its stdin closes).
_HOLDER = (
    "import apsw, sys\n"
    "c = apsw.Connection(sys.argv[1])\n"
    "c.execute('BEGIN IMMEDIATE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.readline()\n"
    "c.execute('ROLLBACK')\n"
    "c.close()\n"
)


class LockHolder:
    """Another process holding the index's write lock until release()."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    @property
    def holding(self) -> bool:
        return self.proc.poll() is None

    def release(self) -> None:
        with self.proc:  # closes its pipes: stdin's EOF lets it go
            pass


def holders() -> Iterator[Callable[[Path], LockHolder]]:
    """Fixture body (``holder_factory = pytest.fixture(holders)``): start holders, all released
    at teardown."""
    made: list[LockHolder] = []

    def start(db: Path) -> LockHolder:
        made.append(LockHolder(db))
        return made[-1]

    yield start
    for h in made:
        h.release()


def waiting_for_lock(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside the index's wait for the write lock (its stack says so)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "_begin_immediate":
            return True
        frame = frame.f_back
    return False
