"""Which processes have a home's store open, or watch it: marks they hold (no network).

Open stores (below); running watchers (:class:`WatchMark`, after it).

Every open ``BlueprintStore`` holds a shared ``flock`` on ``state/store-open.lock`` for its whole
life (the kernel drops it when the process dies, even by SIGKILL). ``check --fix`` must not move
a damaged index aside under another open store: that store keeps its SQLite connection to the
moved file and goes on writing its history there. The daemon's lock (``state/daemon.lock``) only
shows the daemon and an app syncing in-process; an app that opened the store without syncing
holds none, and the rebuild went ahead under it. SQLite has no documented way to ask whether other
connections have a database open, so the stores say so themselves.

flock, not ``fcntl`` record locks: a record lock belongs to the process (two stores of one app
would be one holder, and closing any descriptor of the file drops it: the field-notes trap), while
an flock belongs to one open file description, so a second store in the same process is seen too.
Windows has no shared lock in ``msvcrt``; there the mark is not taken, and Windows itself refuses
to rename an index another process has open (SQLite opens it without FILE_SHARE_DELETE), so the
rebuild fails there with a storage error instead of losing history. A forked child closes its
inherited copies of this process's marks at once (``_forget_marks_in_child``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from localstore import _durable
from localstore.config import Settings
from localstore.files import unlink_file

OPEN_LOCK_FILE = "store-open.lock"
WATCHERS_DIR = "watchers"
# A watcher's mark is written under a temp name and renamed into place once locked; a temp its
# writer died before renaming is removed by a reader once this old (a live one is a moment old).
_STALE_MARK_TEMP_S = 60.0

log = logging.getLogger("localstore.store")

# The marks this process holds, for _forget_marks_in_child (a forked child must not keep them).
_HELD: weakref.WeakSet[OpenMark | WatchMark] = weakref.WeakSet()
_HELD_LOCK = threading.Lock()


def _held(mark: OpenMark | WatchMark) -> None:
    with _HELD_LOCK:
        _HELD.add(mark)


def _let_go(mark: OpenMark | WatchMark) -> None:
    with _HELD_LOCK:
        _HELD.discard(mark)


class OpenMark:
    """This store's shared flock on ``state/store-open.lock`` (see the module doc)."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def take(cls, state_dir: Path, *, create: bool = True) -> OpenMark:
        """Open (creating) the mark file and take its shared lock; waits only while a
        ``check --fix`` rebuild holds it exclusively (a rename and an empty index's creation).

        A mark that cannot be taken (a read-only state folder, Windows) is no reason to refuse
        the open: the store opens unmarked, and a rebuild then cannot see it (as before marks).
        ``create=False`` (a read-only store, which writes nothing in the home): only an existing
        mark file is opened, for reading (an flock needs no write access).
        """
        path = Path(state_dir) / OPEN_LOCK_FILE
        if sys.platform == "win32":  # pragma: no cover - see the module doc
            return cls(path, None)
        import fcntl

        flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
        try:
            fd = os.open(path, flags | _durable.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.debug("cannot take the open-store mark %s: %s", path, exc)
            return cls(path, None)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError as exc:  # (a filesystem without flock: NFS without local locks, say)
            os.close(fd)
            log.debug("cannot lock the open-store mark %s: %s", path, exc)
            return cls(path, None)
        mark = cls(path, fd)
        _held(mark)
        return mark

    @property
    def held(self) -> bool:
        """Whether this store holds its mark (False: unmarked, see take())."""
        return self._fd is not None

    def try_exclusive(self) -> bool:
        """Turn this store's shared lock exclusive without waiting; False when another open
        store holds the mark. After False this store no longer holds it at all (Linux drops
        the old lock before it tries the new one): the caller is to fail its open and close."""
        if self._fd is None or sys.platform == "win32":  # (never held there: see take())
            return True
        import fcntl

        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        return True

    def share(self) -> None:
        """Back to a shared lock after try_exclusive(): other stores may open again."""
        if self._fd is not None and sys.platform != "win32":
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def holders(self) -> list[int]:
        """The other processes holding the mark, by pid (Linux's /proc/locks; [] elsewhere or
        when it cannot be read). For messages only: never a reason to refuse or allow."""
        if sys.platform == "win32":
            return []
        try:
            st = os.stat(self.path)
            text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
        except OSError:
            return []
        ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        pids: set[int] = set()
        for line in text.splitlines():
            # "1: FLOCK  ADVISORY  READ  1234 fe:00:5678 0 EOF"; a waiter's line has "->" second.
            f = line.split()
            if len(f) >= 6 and f[1] == "FLOCK" and f[5] == ident and f[4].isdigit():
                pids.add(int(f[4]))
        pids.discard(os.getpid())
        pids.discard(0)  # (a holder outside this pid namespace)
        return sorted(pids)

    def close(self) -> None:
        """Let go of the mark (idempotent). The file stays: removing it would race a new store."""
        fd, self._fd = self._fd, None
        _let_go(self)
        if fd is not None:
            os.close(fd)


def _forget_marks_in_child() -> None:
    """In a forked child: let go of the parent's marks without unlocking or removing them.

    A child inherits each mark's open file description, and an flock belongs to the description:
    a child that outlived the parent's store (a ``multiprocessing`` worker pool) kept the home
    marked open, so ``check --fix`` refused after the app had closed it, and kept a watcher
    marked after the app died, so commands left fresh changes to no one. Closing the child's copy
    drops only its reference (``LOCK_UN`` would unlock the parent's too, and a WatchMark's close
    would remove the parent's file); the child cannot use the parent's store anyway.
    """
    global _HELD_LOCK
    _HELD_LOCK = threading.Lock()  # (another thread of the parent may have held it)
    for mark in list(_HELD):
        fd, mark._fd = mark._fd, None
        if isinstance(mark, WatchMark):
            mark._lock = threading.Lock()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):  # (no fork on Windows)
    os.register_at_fork(after_in_child=_forget_marks_in_child)


def describe_pid(pid: int) -> str:
    """``pid N`` with the process's name where /proc tells it (``pid N (python3)``)."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        name = ""
    return f"pid {pid} ({name})" if name else f"pid {pid}"


# -- running watchers --------------------------------------------------------------------------------
#
# A store with no watcher of its own (a CLI command; an app's store in another process: watchers
# of this process are not asked, see docs/architecture.md) must leave a change that a watcher
# elsewhere is still to record to that watcher: read in an editor's pause, half an
# in-place save that parses was recorded as a revision, and a file gone for a moment in a save
# dance was recorded deleted. The daemon's write-quiet period was found in daemon.json, but an
# app syncing in-process (start_sync runs a Watcher) or running a Watcher of its own writes none:
# a CLI command beside it recorded the half. So every running Watcher holds a file of its own,
# ``state/watchers/<pid>-<token>.json``, locked exclusively for as long as it runs, with its
# write-quiet period and delete grace. A file nobody holds is a dead watcher's, removed by the
# next reader. Windows: none (a file open there cannot be renamed); daemon.json still answers.


@dataclass(frozen=True, slots=True)
class WatchPeriods:
    """How long a running watcher leaves a change before it records it, in seconds: a file
    written without a close (``write_quiet_s``), a vanished file (``grace_s``)."""

    write_quiet_s: float
    grace_s: float


class WatchMark:
    """A running Watcher's file under ``state/watchers/`` (see above); close() when it stops."""

    def __init__(self, path: Path | None, fd: int | None) -> None:
        self.path = path
        self._fd = fd
        self._lock = threading.Lock()  # (stop() and the dying worker both close it)

    @classmethod
    def take(cls, state_dir: Path, periods: WatchPeriods) -> WatchMark:
        """Write and lock this watcher's mark. One that cannot be written (a read-only state
        folder, a filesystem without flock, Windows) leaves the watcher unmarked, logged: other
        processes then record its fresh changes themselves, as before marks."""
        if sys.platform == "win32":  # pragma: no cover - see above
            return cls(None, None)
        folder = Path(state_dir) / WATCHERS_DIR
        body = json.dumps(
            {
                "pid": os.getpid(),
                "write_quiet_ms": round(periods.write_quiet_s * 1000),
                "delete_grace_ms": round(periods.grace_s * 1000),
            }
        ).encode()
        fd = -1
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".lstmp")
            # Locked before it has its name: a reader never finds a live watcher's file free.
            if not _durable.try_lock(fd, blocking=False):  # pragma: no cover - a new file
                raise OSError(errno.EAGAIN, "the new mark is locked")
            os.write(fd, body)
            path = folder / f"{os.getpid()}-{secrets.token_hex(4)}.json"
            os.rename(tmp, path)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            log.debug("cannot mark the watcher in %s: %s", folder, exc)
            return cls(None, None)
        mark = cls(path, fd)
        _held(mark)
        # The marks of dead watchers go here too, not only when another process reads them: a
        # daemon alone on its home (nothing else records a change there) left one a death
        # (SIGKILL, OOM, a power cut), for good. A few syscalls a mark, once per watcher start.
        _marked_watchers(folder)
        return mark

    def close(self) -> None:
        """Remove the mark and let go of it (idempotent)."""
        with self._lock:
            fd, self._fd = self._fd, None
        _let_go(self)
        if fd is None or self.path is None:
            return
        with contextlib.suppress(OSError):  # (state/ deleted under it: nothing to remove)
            unlink_file(self.path)
        os.close(fd)


def watching_elsewhere(settings: Settings) -> WatchPeriods | None:
    """The longest periods of the watchers other processes run on ``settings``' home, or None
    when none runs (the daemon's from daemon.json too). A few syscalls per watcher, no network;
    asked only when a change is to be recorded by a store without a watcher of its own."""
    from localstore._daemon_state import daemon_write_quiet_s

    found: list[WatchPeriods] = []
    quiet = daemon_write_quiet_s(settings)
    if quiet is not None:  # (a daemon does not write its grace there: the home's setting)
        found.append(WatchPeriods(quiet, settings.delete_grace_ms / 1000))
    found += _marked_watchers(settings.paths.state / WATCHERS_DIR)
    if not found:
        return None
    return WatchPeriods(max(p.write_quiet_s for p in found), max(p.grace_s for p in found))


def _marked_watchers(folder: Path) -> list[WatchPeriods]:
    """The periods of the live watchers of other processes marked in ``folder``; dead ones'
    marks (their holder gone: nothing holds the lock) are removed on the way."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found: list[WatchPeriods] = []
    # This process's own watchers answer for their stores themselves. Known by the marks it
    # holds, not by the pid in a name: a daemon in a container runs as the same pid after every
    # restart (its dead marks were skipped, and never removed), and two pid namespaces sharing
    # a home both have a pid 1 (a command skipped the other one's live watcher).
    with _HELD_LOCK:
        own = {m.path.name for m in _HELD if isinstance(m, WatchMark) and m.path is not None}
    for name in names:
        path = folder / name
        if name.startswith("."):
            _remove_stale_temp(path)
            continue
        if not name.endswith(".json") or name in own:
            continue
        periods = _read_live_mark(path)
        if periods is not None:
            found.append(periods)
    return found


def _read_live_mark(path: Path) -> WatchPeriods | None:
    try:
        fd = os.open(path, os.O_RDONLY | _durable.O_CLOEXEC)
    except OSError:
        return None  # (gone since the listing: its watcher stopped)
    try:
        if not _durable.lock_taken(fd):
            with contextlib.suppress(OSError):
                unlink_file(path)  # a dead watcher's (the name is never used again)
            return None
        data = json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict):
        return None
    return WatchPeriods(_ms(data.get("write_quiet_ms")), _ms(data.get("delete_grace_ms")))


def _ms(value: object) -> float:
    """Seconds from a mark's milliseconds; a bad value counts as the watcher's default (1 s)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        value = 1000
    return float(value) / 1000


def _remove_stale_temp(path: Path) -> None:
    try:
        st = os.lstat(path)
    except OSError:
        return
    if time.time() - max(st.st_mtime, st.st_ctime) > _STALE_MARK_TEMP_S:
        with contextlib.suppress(OSError):
            unlink_file(path)
