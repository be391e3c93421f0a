"""Sync inside a desktop app, and the one lock that keeps a home to a single syncing process.

A home is synced by at most one process: the daemon (``localstore daemon``) or an app that runs the
engine in-process (:func:`start_sync`). Both hold :class:`HomeLock`, an ``fcntl.flock`` on
``state/daemon.lock``. flock was chosen over a pid file alone because the kernel releases it when
the holder dies, even by SIGKILL, so a crashed daemon never leaves the home stuck; and over POSIX
``fcntl`` record locks because those are dropped when *any* descriptor of the file is closed in the
process (the field-notes trap about SQLite), while flock belongs to one open file description.

:func:`daemon_running` answers "does a daemon serve this home?" from ``state/daemon.json`` plus
the pid and the flock, without any network I/O, so ``localstore.open()`` can call it cheaply.
It only needs the standard library and :mod:`localstore.config`; the ``localstore`` package keeps
its own copy of it (``localstore`` never imports ``sync``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore._daemon_state import (
    LOCK_FILE,
    STATE_FILE,
    daemon_running,
    lock_is_held,
    read_state,
)
from localstore.config import Settings
from localstore.errors import LockHeldError
from sync.errors import SyncLockedError

if TYPE_CHECKING:
    from localstore.store import BlueprintStore
    from sync.engine import SyncEngine
    from sync.remote import Remote

__all__ = [
    "LOCK_FILE",
    "STATE_FILE",
    "EmbeddedSync",
    "HomeLock",
    "daemon_running",
    "lock_holder",
    "read_state",
    "remove_state",
    "start_sync",
    "write_state",
]

log = logging.getLogger("sync.embed")


class HomeLock:
    """The single-sync-process lock of a home: ``flock(LOCK_EX)`` on ``state/daemon.lock``.

    ``acquire(blocking=False)`` returns False when another open file description holds it (another
    process, or another HomeLock in this process). The holder's pid is written into the file for
    error messages; the lock itself is the flock, never the file's content. Meets
    ``sync.engine.EngineLock``.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None
        self._mutex = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings) -> HomeLock:
        """The lock of ``settings``' home."""
        return cls(settings.paths.state)

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self, blocking: bool = False) -> bool:
        """Take the lock; False if another holder has it (only when not ``blocking``)."""
        with self._mutex:
            if self._fd is not None:
                return True
            fd = self._lock_file(blocking)
            if fd is None:
                return False
            self._fd = fd
            return True

    def _lock_file(self, blocking: bool) -> int | None:
        """Open (creating) and flock the file at ``path`` and write our pid into it; None if
        another process holds it (only when not ``blocking``)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def still_held(self) -> bool:
        """Check that the file at ``path`` is the one locked; re-lock it if it was deleted.

        An flock belongs to an inode: if ``state/`` (or the lock file) is deleted while we hold
        it, another process can create and lock a new file at the same path, and two processes
        sync one home. The daemon calls this every tick: a vanished or replaced file is locked
        anew (the pid written again). Returns False when another process holds the file now at
        the path: this one must stop syncing. Raises OSError when the file cannot be created.
        """
        with self._mutex:
            fd = self._fd
            if fd is None:
                return False
            held = os.fstat(fd)
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
                    return True
            except FileNotFoundError:
                pass
            log.warning("the lock file %s was deleted or replaced; locking it again", self.path)
            new = self._lock_file(blocking=False)
            if new is None:
                return False
            self._fd = new
            os.close(fd)  # the old inode: nobody can find it by path any more
            return True

    def acquire_or_raise(self, what: str = "sync") -> None:
        """Take the lock or raise LockHeldError naming the holder's pid."""
        if not self.acquire(blocking=False):
            pid = lock_holder(self.path.parent)
            who = f"process {pid}" if pid else "another process"
            raise LockHeldError(
                f"cannot {what}: {who} already syncs this home",
                hint="stop it first (`localstore status` shows the daemon), or use that one",
            )

    def release(self) -> None:
        """Release the lock (idempotent). The file stays: deleting it would race a new holder."""
        with self._mutex:
            fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the description releases the flock


def lock_holder(state_dir: Path) -> int | None:
    """The pid written by the lock's current holder, or None when nobody holds it."""
    if not lock_is_held(state_dir):
        return None
    try:
        text = (Path(state_dir) / LOCK_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


# -- state/daemon.json -----------------------------------------------------------------------------


def write_state(state_dir: Path, data: dict[str, Any]) -> Path:
    """Write ``state/daemon.json`` atomically with mode 0600 (it holds the control token)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file 0600 before any byte is written: the token is never world-readable.
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".daemon-", suffix=".lstmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, state_dir / STATE_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return state_dir / STATE_FILE


def remove_state(state_dir: Path, pid: int) -> None:
    """Remove ``state/daemon.json`` if it still belongs to ``pid``."""
    current = read_state(state_dir)
    if current is not None and current.get("pid") == pid:
        with contextlib.suppress(FileNotFoundError):
            (Path(state_dir) / STATE_FILE).unlink()


# -- in-process sync for embedding apps -----------------------------------------------------------


# How often an app's in-process sync checks that its home lock file is still its own.
LOCK_CHECK_S = 2.0


class EmbeddedSync:
    """An app's in-process sync engine holding the home lock; stop() (or closing the store) ends it."""

    def __init__(self, engine: SyncEngine, lock: HomeLock, remote: Remote | None) -> None:
        self.engine = engine
        self._lock = lock
        self._remote = remote
        self._stopped = False
        self._mutex = threading.Lock()
        # True once another process took the home's lock (see _watch_lock): sync stopped.
        self.lost_lock = False
        self._done = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch_lock, name="localstore-sync-lock", daemon=True
        )
        self._watcher.start()

    def _watch_lock(self) -> None:
        """Check the home's lock file every LOCK_CHECK_S, as the daemon does every tick.

        Deleting ``state/`` takes the lock file with it; another process could then lock a new
        file at the same path and sync the same home alongside this app. A vanished file is
        locked again; a file another process holds now stops this engine.
        """
        while not self._done.wait(LOCK_CHECK_S):
            try:
                held = self._lock.still_held()
            except OSError as exc:
                log.error("cannot restore the home's lock %s: %s; retrying", self._lock.path, exc)
                continue
            if not held:
                log.error(
                    "process %s took this home's lock after it was deleted; stopping this "
                    "app's sync so that only one process syncs the home",
                    lock_holder(self._lock.path.parent) or "?",
                )
                self.lost_lock = True
                self.engine.stop()
                return

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the engine, close the remote it opened and release the lock. Idempotent."""
        with self._mutex:
            if self._stopped:
                return
            self._stopped = True
        self._done.set()
        if self._watcher is not threading.current_thread():
            self._watcher.join(timeout)
        try:
            self.engine.stop()
            self.engine.join(timeout)
            close = getattr(self._remote, "close", None)
            if callable(close):
                close()
        finally:
            self._lock.release()

    def __enter__(self) -> EmbeddedSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sync(
    store: BlueprintStore, *, remote: Remote | None = None, **engine_kwargs: Any
) -> EmbeddedSync:
    """Run the sync engine inside this process for ``store``'s home, holding the home lock.

    ``remote`` defaults to the home's Supabase session (``localstore login``); a remote opened here
    is closed by ``stop()``. Raises SyncLockedError when a daemon (or another app) syncs this
    home: follow it with ``sync.control.ControlClient`` instead. Raises NotLoggedInError without
    a session.
    """
    from sync.engine import SyncEngine

    lock = HomeLock.for_settings(store.settings)
    if not lock.acquire(blocking=False):
        pid = lock_holder(store.settings.paths.state)
        raise SyncLockedError(
            f"process {pid or '?'} already syncs this home",
            hint="follow the daemon's events with sync.control.ControlClient instead",
        )
    opened: Remote | None = None
    try:
        if remote is None:
            from sync.supabase_remote import remote_from_settings

            remote = opened = remote_from_settings(store.settings)
        engine = SyncEngine(store, remote, **engine_kwargs)
        engine.start()
    except BaseException:
        close = getattr(opened, "close", None)
        if callable(close):
            close()
        lock.release()
        raise
    handle = EmbeddedSync(engine, lock, opened)
    store.on_close(handle.stop)
    return handle
