"""An app that forks while it syncs in-process (``multiprocessing`` with the fork start method, a
worker pool): the child inherited the home lock's open file description, and an flock belongs to
the description, so the home stayed locked while the child lived, after the app stopped its sync.
Starting sync again (or a daemon) was refused with "process ? already syncs this home"."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from localstore._daemon_state import lock_is_held
from sync.embed import HomeLock, start_sync
from sync.memory_remote import MemoryRemote, MemoryServer

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")


def _fork_sleeper() -> tuple[int, int]:
    """A child that does nothing until its pipe closes (or it is killed); (pid, write end).

    Returns once the child runs: its at-fork handlers (which let go of the parent's locks and
    marks) are over by then. Returning at once, a loaded machine ran the parent's next step
    before the child had been scheduled at all, its inherited locks still held (CI failed so).
    """
    read_end, write_end = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no threads; wait for the parent, then leave at once
        try:
            os.close(write_end)
            os.close(ready_read)
            os.write(ready_write, b"r")
            os.read(read_end, 1)
        finally:
            os._exit(0)
    os.close(read_end)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"r", "the forked child ended before it ran"
    finally:
        os.close(ready_read)
    return pid, write_end


def test_a_forked_child_does_not_keep_the_home_locked(stores: StoreOpener, tmp_path: Path) -> None:
    store = stores(home=tmp_path / "h")
    server = MemoryServer()
    handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
    pid, pipe = _fork_sleeper()
    try:
        handle.stop()
        assert not lock_is_held(store.settings.paths.state)
        again = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
        again.stop()
        lock = HomeLock(store.settings.paths.state)  # (a daemon starting now)
        assert lock.acquire()
        lock.release()
    finally:
        os.close(pipe)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
