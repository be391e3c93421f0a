"""What the watcher asks of watchdog and of the kernel's inotify.

The observer (``_new_observer``), its event filter and handler, the hook that hears watchdog's
queue-overflow log, the warnings watchdog issues, and the kernel's side: per-user watch and
instance limits, probes that ask for a watch in an instance of our own, the watches a process
holds (read from /proc/<pid>/fdinfo), and the ``WatcherError`` for a refused watch.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog import events as wd_events
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from localstore import files as fs
from localstore.errors import WatcherError

# watchdog only logs a kernel queue overflow (IN_Q_OVERFLOW); these are the loggers that do it across
# watchdog versions. Handlers never hear of it (watchdog #654), so we listen to the log.
OVERFLOW_LOGGERS = (
    "watchdog.observers.inotify_c",
    "watchdog.observers.inotify_buffer",
    "watchdog.observers.inotify",
)
_WATCH_LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_watches")
_INSTANCE_LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_instances")
_PROBE_MASK = 0x00000100  # IN_CREATE: any valid mask takes a watch
# Only what the worker acts on: no open/close-nowrite noise (our own reads would cause it).
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    cls
    for cls in (
        wd_events.FileCreatedEvent,
        wd_events.FileDeletedEvent,
        wd_events.FileModifiedEvent,
        getattr(wd_events, "FileAttribEvent", None),
        wd_events.FileMovedEvent,
        getattr(wd_events, "FileClosedEvent", None),
        wd_events.DirCreatedEvent,
        wd_events.DirDeletedEvent,
        wd_events.DirMovedEvent,
        # A folder's chmod/chown (the kernel's mask has IN_ATTRIB anyway, for files): an
        # unreadable folder made readable is then looked at, and watched, at once.
        getattr(wd_events, "DirAttribEvent", None),
    )
    if cls is not None
]


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's observer thread: enqueue, nothing else (a slow handler loses events)."""

    def __init__(self, put: Callable[[Any], None]) -> None:
        super().__init__()
        self._put = put

    def dispatch(self, event: FileSystemEvent) -> None:
        self._put(("fs", event))


class _OverflowHook(logging.Handler):
    """Turns watchdog's 'queue overflowed' log record into a rescan request, for the overflows
    of one watcher's inotify queue only, one request per overflow.

    The loggers are the process's: every watcher's hook hears every watcher's overflow. A
    watcher's own are told by the thread that logs them (watchdog logs the overflow in the
    reader thread of the observer whose queue overflowed). watchdog 7.1 logs each overflow twice
    (its reader, then the recursive watch group), from two loggers; only the logger heard first
    counts, so that each overflow is one rescan whatever the version's order or wording.
    """

    def __init__(
        self, on_overflow: Callable[[], None], threads: Callable[[], frozenset[int]]
    ) -> None:
        super().__init__(level=logging.WARNING)
        self._on_overflow = on_overflow
        self._threads = threads
        self._logger: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" not in record.getMessage().lower():
            return
        # (No thread id when the app set logging.logThreads off: then every watcher rescans, as
        # before, rather than none.)
        if record.thread is not None and record.thread not in self._threads():
            return
        if self._logger is None:
            self._logger = record.name  # (only ever set, from the reader thread)
        if record.name == self._logger:
            self._on_overflow()


class _WatchLimitError(WatcherError):
    """The kernel refused the folder's watch for a per-user limit (ENOSPC: max_user_watches,
    EMFILE: max_user_instances; ENOMEM: a memory limit) or for permissions (EACCES, EPERM).
    Not a missing folder: the watcher goes on with rescans and tries the watch again."""


def _new_observer() -> Any:
    """watchdog's observer for this platform; on inotify, one that reports a move's lone half
    as a move.

    A file moved in from outside the watched tree (``mv ~/Downloads/x``, a tool's temp file
    written in another folder of the same disk) is a lone IN_MOVED_TO, which watchdog's default
    emitter turns into a create: taken for a file being written, it waited ``write_quiet_ms``
    (1 s) for a close-write that never comes. Reported as a move with no source, it is
    complete (a rename lands whole) and is taken after the settle window; a lone moved-away
    half is a move with no destination, a vanish as before.
    """
    if getattr(Observer, "__name__", "") == "InotifyObserver":
        return Observer(generate_full_events=True)  # type: ignore[call-arg]
    return Observer()


def _ignore_rewatch_warning() -> None:
    """Ignore watchdog's "Callback with id ... already exists" RuntimeWarning, and only it.

    watchdog 7.1 issues it in its reader thread when it adds a watch it has already (a folder
    created with a sub-folder in it races its own recursive walk: any save into a new nested
    folder can do it; a folder moved back in too); the watch stays right. Under ``-W error``
    (an app's test suite, this one's) it raised there and killed the thread: an observer
    restart and a full rescan each time, and pytest failed the app's test on the thread's
    exception. Otherwise it printed to the app's stderr. Added in front of the filters each
    time an observer starts (``filterwarnings`` keeps one copy), so it wins over an "error"
    filter set before; one an app sets after the start wins over it.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"Callback with id .* already exists for watch",
        category=RuntimeWarning,
        module=r"watchdog\.",
    )


def _keep_overflow_warnings() -> None:
    """Keep watchdog's overflow warnings from being dropped before our hook sees them.

    Logger.warning() drops a record before any handler when the logger's effective level is above
    WARNING (``localstore daemon --log-level ERROR`` sets the root's), and that warning is the
    only overflow signal watchdog gives: lost events would then wait for the timer rescan. So
    these loggers get WARNING of their own whenever they would drop it. The cost: their warnings
    reach the app's handlers even below its root level. Levels are not restored on stop (several
    watchers may run; restoring would silence the others), and an app that lowers them to DEBUG
    keeps that.
    """
    for name in OVERFLOW_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.isEnabledFor(logging.WARNING):
            logger.setLevel(logging.WARNING)


def _watch_limit() -> int | None:
    """The user's inotify watch limit (fs.inotify.max_user_watches), or None if unknown."""
    return _read_int(_WATCH_LIMIT_FILE)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _watches_free(folders: Sequence[Path]) -> bool:
    """Whether the kernel gives this user a watch for every one of ``folders`` now.

    Asked in an inotify instance of our own, closed at once (which frees its watches): the
    observer's instance is watchdog's, and a watch added behind its back would send events it
    cannot place. A folder gone meanwhile is skipped; any refusal for a limit is an answer no.
    """
    try:
        from watchdog.observers import inotify_c
    except Exception:  # noqa: BLE001 - not Linux: watchdog refuses a libc without inotify
        return False
    fd = inotify_c.inotify_init()
    if fd < 0:
        return False
    try:
        for folder in folders:
            refused = inotify_c.inotify_add_watch(fd, os.fsencode(folder), _PROBE_MASK) < 0
            if refused and ctypes.get_errno() in (errno.ENOSPC, errno.ENOMEM):
                return False
        return True
    finally:
        os.close(fd)


def _root_watch_refused(folder: Path) -> OSError | None:
    """The kernel's refusal of an inotify watch on ``folder`` (as an OSError), or None.

    Asked in a probe instance, closed at once, before watchdog is: watchdog drops EACCES (see
    ``_start_observer``). A refused try costs one ``inotify_init`` and one ``inotify_add_watch``,
    as before; a granted one adds those to the observer's own.
    """
    try:
        from watchdog.observers import inotify_c
    except Exception:  # noqa: BLE001 - not Linux: no inotify, nothing to ask
        return None
    fd = inotify_c.inotify_init()
    if fd < 0:
        err = ctypes.get_errno()
        return OSError(err, os.strerror(err), str(folder))
    try:
        if inotify_c.inotify_add_watch(fd, os.fsencode(folder), _PROBE_MASK) < 0:
            err = ctypes.get_errno()
            return OSError(err, os.strerror(err), str(folder))
        return None
    finally:
        os.close(fd)


def _inotify_watched() -> set[tuple[int, int]] | None:
    """(st_dev, st_ino) of every inode this process's inotify instances watch, or None where
    /proc/self/fdinfo cannot tell (not Linux). Read from the kernel, not from watchdog's private
    state: its layout changes between versions."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    watched: set[tuple[int, int]] = set()
    for fd in fds:
        found = _instance_watches("/proc/self", fd)
        if found is not None:
            watched.update(found)
    return watched


def _instance_watches(proc: str, fd: str) -> list[tuple[int, int]] | None:
    """(st_dev, st_ino) of each watch of the inotify instance at ``proc``/fd/``fd``; None when
    it is no inotify instance, or it cannot be read (closed meanwhile, another user's)."""
    if sys.platform == "win32":  # (no /proc there)
        return None
    try:
        if os.readlink(f"{proc}/fd/{fd}") != "anon_inode:inotify":
            return None
        with open(f"{proc}/fdinfo/{fd}", encoding="ascii") as f:
            text = f.read()
    except OSError:
        return None
    watches = []
    for line in text.splitlines():
        # inotify wd:1 ino:2a0c sdev:800002 mask:... (sdev: the kernel's major<<20 | minor)
        if not line.startswith("inotify "):
            continue
        fields = dict(part.split(":", 1) for part in line.split()[1:] if ":" in part)
        try:
            ino, sdev = int(fields["ino"], 16), int(fields["sdev"], 16)
        except (KeyError, ValueError):
            continue
        watches.append((os.makedev(sdev >> 20, sdev & 0xFFFFF), ino))
    return watches


def inotify_limits() -> tuple[int | None, int | None]:
    """``(max_user_watches, max_user_instances)``; None for a limit the system does not have."""
    return _watch_limit(), _read_int(_INSTANCE_LIMIT_FILE)


@dataclass(frozen=True)
class InotifyUsage:
    """The inotify watches and instances the user's processes hold (``inotify_usage``)."""

    watches: int
    instances: int
    # Held by instances that watch the given folder (a daemon or an app watching this home):
    # not taken from it, since a restart of that watcher frees them first.
    folder_watches: int
    folder_instances: int
    # Processes of the user whose descriptors could not be read (their use is unknown).
    unreadable: int


def inotify_usage(folder: Path | None = None) -> InotifyUsage | None:
    """What this user's processes hold of the inotify limits, best-effort, from
    /proc/<pid>/fdinfo (other users' processes are not readable, and do not count against this
    user's limits anyway); None without /proc. Costs a readlink per open file of the user's
    processes (tens of milliseconds on a desktop): for ``localstore doctor``, not a loop.

    An instance counts once per descriptor: a descriptor shared after a fork is counted twice.
    """
    if sys.platform == "win32":  # (no /proc there)
        return None
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    uid = os.getuid()
    target: tuple[int, int] | None = None
    if folder is not None:
        with contextlib.suppress(OSError):
            target = _identity(folder)
    watches = instances = folder_watches = folder_instances = unreadable = 0
    for pid in pids:
        proc = f"/proc/{pid}"
        try:
            if os.stat(proc).st_uid != uid:
                continue
        except OSError:
            continue  # exited meanwhile
        try:
            fds = os.listdir(f"{proc}/fd")
        except OSError:
            unreadable += 1  # exited meanwhile, or not ours to read (a setuid program)
            continue
        for fd in fds:
            found = _instance_watches(proc, fd)
            if found is None:
                continue
            instances += 1
            watches += len(found)
            if target is not None and target in found:
                folder_instances += 1
                folder_watches += len(found)
    return InotifyUsage(watches, instances, folder_watches, folder_instances, unreadable)


def _folders(root: Path, rules: fs.IgnoreRules) -> dict[tuple[int, int], str]:
    """(st_dev, st_ino) -> relative path of every folder a rescan walks (hidden, ignored and
    linked folders are not; unlistable ones are left out: the rescan reports those)."""
    out: dict[tuple[int, int], str] = {}
    stack = [("", str(root))]
    while stack:
        prefix, directory = stack.pop()
        try:
            st = os.stat(directory, follow_symlinks=False)
            with os.scandir(directory) as entries:
                subs = [
                    (prefix + e.name + "/", e.path)
                    for e in entries
                    if e.is_dir(follow_symlinks=False) and rules.walks_into(prefix, e.name)
                ]
        except OSError:
            continue
        out[(st.st_dev, st.st_ino)] = prefix.rstrip("/")
        stack.extend(subs)
    return out


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _denied(exc: WatcherError) -> bool:
    """Whether a refused watch was refused for permissions."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM)


def _uid() -> int | str:
    return os.getuid() if hasattr(os, "getuid") else "?"


def _folder_gone(exc: WatcherError) -> bool:
    """Whether a refused watch means the folder is not there (not a folder any more)."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (errno.ENOENT, errno.ENOTDIR)


def _watch_error(exc: OSError, root: Path) -> WatcherError:
    """The WatcherError for a refused watch; a per-user limit's is a ``_WatchLimitError``."""
    if exc.errno == errno.ENOSPC:
        return _WatchLimitError(
            f"cannot watch {root}: the inotify watch limit (fs.inotify.max_user_watches = "
            f"{_watch_limit()}) is used up, by this or other programs",
            hint="raise it: sudo sysctl fs.inotify.max_user_watches=524288 "
            "(and put the setting in /etc/sysctl.d/ to keep it)",
        )
    if exc.errno == errno.EMFILE:
        return _WatchLimitError(
            f"cannot watch {root}: too many inotify instances (fs.inotify.max_user_instances = "
            f"{_read_int(_INSTANCE_LIMIT_FILE)})",
            hint="raise it: sudo sysctl fs.inotify.max_user_instances=512 (and put the "
            "setting in /etc/sysctl.d/ to keep it), or stop other watching programs",
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        # The folder is in place but this user may not read it (a folder made with sudo, a
        # share's permissions): rescan-only like a limit, and watched once it is readable (the
        # rescans report what they cannot list meanwhile; nothing under it is deleted).
        return _WatchLimitError(
            f"cannot watch {root}: permission denied (this user, uid {_uid()}, may not read it)",
            hint=f"give this user read access to the folder (chown it to this user, or chmod "
            f"u+rx '{root}' as its owner); it is watched again as soon as it is readable",
        )
    if exc.errno == errno.ENOMEM:
        # A memory limit (inotify marks are charged to the session's or container's memory
        # cgroup): a limit like the two above, so start() goes on with rescans as for those.
        return _WatchLimitError(
            f"cannot watch {root}: the kernel refused the memory for inotify watches",
            hint="free memory, or raise the memory limit of this session or container "
            "(inotify watches are counted against it)",
        )
    return WatcherError(
        f"cannot watch {root}: {exc.strerror or exc}",
        hint="check that the folder exists and is readable",
    )
