"""Watch the blueprints folder: every external edit, from any editor, picked up once and correctly.

Threads: watchdog's observer thread only enqueues raw events; one worker thread turns them into
settled per-path ingests. Per path the worker keeps a due time:

- close-write or move-in: due after the settle window (``settle_ms``);
- create or modify without a close: the file is being written; due only after ``write_quiet_ms``
  without further writes (a chunked slow write is never read half-way; the close-write ends it);
- vanish (delete, move-away): due after ``delete_grace_ms``; if the file is back by then it is a
  modify, so vim/emacs/JetBrains/git save dances never look like deletes. A path still missing
  then is deleted only after a fence laid at that moment has come back, so the other half of a
  rename (which watchdog may report late, as a create) is pending before the delete is considered.

Due paths are ingested in one index write transaction (a savepoint per path), existing files first and
vanished ones last, so a moved pair is matched by its meta id (or its YAML hash) before its old path
is looked at. The per-path truth logic is the Reconciler's: content hashes decide whether anything
changed, which is also what suppresses the echo of the store's own writes (a time window would drop
real edits made right after a save).

Rescans (at start, every ``rescan_interval_s``, and when watchdog logs an inotify queue overflow)
compare sizes, mtimes and change times with the index and feed only the differences into the same
per-path machinery, so a rescan never reads a file that is still being written and never deletes
during a save dance either.

A path whose ingest fails (a full disk, a locked or read-only index, an unreadable file) is retried
with a back-off; after ``MAX_FAILURES`` tries it leaves the pending list and a rescan, brought
forward, tries it again (so does any new event on it). While any path cannot be indexed the
watcher is DEGRADED and says why.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import itertools
import logging
import os
import queue
import secrets
import stat
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw
from watchdog import events as wd_events
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from localstore import files as fs
from localstore._listing import below
from localstore._presence import WatchMark, WatchPeriods
from localstore._reconcile import (
    CONFIRM_EMPTY_NAME,
    ROOT_MARK_NAME,
    ROOT_MARK_SETTING,
    Reconciler,
    _Scan,
    adopt_root,
    moved_first,
    read_root_mark,
    stamp_inodes,
)
from localstore.blueprint import sha256_hex
from localstore.errors import LocalStoreError, NewerIndexError, StoreClosedError, WatcherError
from localstore.events import Event
from localstore.index import map_apsw_error

if TYPE_CHECKING:
    from localstore.config import Settings
    from localstore.store import BlueprintStore

__all__ = [
    "InotifyUsage",
    "RescanReport",
    "Watcher",
    "WatcherState",
    "WatcherStats",
    "filesystem_type",
    "inotify_limits",
    "inotify_usage",
    "is_remote_filesystem",
    "remote_fs_notice",
    "running_watcher",
]

log = logging.getLogger("localstore.watcher")

DEFAULT_WRITE_QUIET_MS = 1000
DEFAULT_BATCH_SIZE = 500
HEALTH_CHECK_S = 2.0
FENCE_RELAY_S = 5.0
# How long stopping for the store's close waits for the watcher's threads.
CLOSE_JOIN_S = 10.0
MAX_DELETE_HOLD_S = 5.0
# A delete is recorded only once nothing has vanished for this long under its folder (the
# nearest one still there): `rm -rf` of the blueprints folder is over by then, the folder gone.
# Not `write_quiet_ms`: that is set for slow writers, and would hold every delete as long.
DELETE_QUIET_S = 1.0
# How many recorded YAMLs are looked for in a folder that lost its mark (see _same_root).
_ROOT_SAMPLE = 16
# Ingest failures of one path (a full disk, a locked or read-only index, an unreadable file): the
# retries wait RETRY_S[0] doubling up to RETRY_S[1]; after MAX_FAILURES tries the path is given
# up: it leaves the pending list and a rescan brought forward to GIVE_UP_RESCAN_S[0] (doubling per
# further give-up of the same path, up to GIVE_UP_RESCAN_S[1], never later than the timer rescan)
# tries it again, as does any new event on it. The edit is never dropped: the index still differs
# from the file, so every rescan and reconcile finds it.
MAX_FAILURES = 5
RETRY_S = (0.25, 30.0)
GIVE_UP_RESCAN_S = (30.0, 300.0)
# Ingest-failure log lines of one kind (retrying, giving up) at most this often; the others go to
# DEBUG and are counted in the next one. A full disk failed every path every 0.1 s, each one a
# WARNING into a log on that same full disk.
FAILURE_LOG_S = 60.0
# Back-off of the rescan that follows a failed worker step (doubling from the first to the last).
ERROR_RESCAN_S = (0.5, 60.0)
# watchdog only logs a kernel queue overflow (IN_Q_OVERFLOW); these are the loggers that do it across
# watchdog versions. Handlers never hear of it (watchdog #654), so we listen to the log.
OVERFLOW_LOGGERS = (
    "watchdog.observers.inotify_c",
    "watchdog.observers.inotify_buffer",
    "watchdog.observers.inotify",
)
_FENCE_PREFIX = ".lswatch-"
# A folder inotify does not watch (the user's watch limit is used up; watchdog skips such
# sub-folders without a word): its edits are found by rescans, this often (stretched to ten times
# a rescan's duration, so a big tree costs at most a tenth of a core).
LIMITED_RESCAN_S = 30.0
# The folder itself cannot be watched (the watch or instance limit is used up): the watcher runs
# on rescans alone (at the interval above) and tries to take the watch again after the first
# delay, doubling up to the second while the kernel refuses it. A failed try is one
# inotify_init and one inotify_add_watch.
LIMIT_RETRY_S = (2.0, 60.0)
# Folders left unwatched: after a rescan, a probe asks the kernel for their watches (in an
# inotify instance of its own, closed at once); when it gets them all, the observer is started
# again to take them. A restart that still leaves folders unwatched (watchdog skipping a folder
# for some other reason) waits longer before the next one, doubling up to this.
REWATCH_MAX_S = 600.0
# A folder moved out of the tree (to the desktop's Trash) keeps its inotify watches, and those of
# its sub-folders: the kernel follows the folder wherever it goes, and watchdog lets a watch go
# only when its folder is deleted. The observer is started again this long after the first such
# move (one restart and rescan for a burst of them), which drops them.
STALE_WATCHES_S = 60.0
_WATCH_LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_watches")
_INSTANCE_LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_instances")
_PROBE_MASK = 0x00000100  # IN_CREATE: any valid mask takes a watch
# Started, not yet stopped watchers (see running_watcher): an app's in-process sync must not
# start a second watcher on a store the app already watches.
_STARTED: weakref.WeakSet[Watcher] = weakref.WeakSet()
_STARTED_LOCK = threading.Lock()
_MAX_DRAIN = 20_000

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


class WatcherState(enum.Enum):
    """Lifecycle of a watcher: NEW -> RUNNING -> STOPPING -> STOPPED, never back.

    Two more values describe a running watcher's health (``state`` reports them; ``stop()`` works
    from both): DEGRADED, running but something is not watched (``problem`` says what: the folder
    is missing, a sub-folder cannot be listed, a step failed and a rescan is due); FAILED, the
    worker thread died (``failure`` says why) and nothing is watched any more: stop it and start a
    new Watcher (the daemon does).
    """

    NEW = "new"
    RUNNING = "running"
    DEGRADED = "degraded"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class WatcherStats:
    """Counters for tests, benchmarks and status pages."""

    raw_events: int = 0
    ingested: int = 0
    batches: int = 0
    rescans: int = 0
    overflows: int = 0
    failures: int = 0
    restarts: int = 0
    errors: int = 0
    events: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RescanReport:
    """What a rescan found different from the index."""

    scanned: int
    changed: int
    missing: int
    seconds: float


@dataclass(slots=True)
class _PathState:
    """Scheduling state of one blueprint (keyed by its YAML path)."""

    due: float
    writing: bool = False
    vanished_at: float | None = None
    quiet_s: float = 0.0
    # The fence that must come back before this path's delete may be ingested (0: none laid).
    gate: int = 0


@dataclass(slots=True)
class _Failing:
    """A path whose ingest keeps failing: kept apart from ``_PathState``, which is dropped when
    the path is taken for ingest (and, after a give-up, for good until it is found again)."""

    tries: int = 0
    error: str = ""
    # The blueprint this path's failed ingest was taking from another path (a move), and the
    # paths it vanished from whose delete waits until this path is resolved (_held_for_move).
    moving: str | None = None
    held: set[str] = field(default_factory=set)


class _BatchLost(Exception):
    """The batch's transaction is gone (SQLite rolled it back after ``cause``)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class _Diff:
    scanned: int
    changed: list[str]
    missing: list[str]
    orphans: list[str]
    stale: list[str]
    unlistable: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)  # of unlistable: for permissions


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


class Watcher:
    """Keeps a store's index in step with external edits of its blueprints folder.

    Lifecycle: ``start()``, ``stop()``, ``join()`` (or use it as a context manager); a watcher runs
    once. ``rescan()`` and ``wait_idle()`` are the synchronous steps tests and the daemon use instead
    of sleeping. Events reach ``store.subscribe`` subscribers (origin ``external``).
    """

    def __init__(
        self,
        store: BlueprintStore,
        *,
        settle_ms: int | None = None,
        delete_grace_ms: int | None = None,
        rescan_interval_s: float | None = None,
        write_quiet_ms: int = DEFAULT_WRITE_QUIET_MS,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        s = store.settings
        self.store = store
        self.root = Path(store.root)
        self.settle_s = (s.settle_ms if settle_ms is None else settle_ms) / 1000
        self.grace_s = (s.delete_grace_ms if delete_grace_ms is None else delete_grace_ms) / 1000
        interval = s.rescan_interval_s if rescan_interval_s is None else rescan_interval_s
        self.rescan_interval_s = max(0.05, float(interval))
        # A folder on a network or FUSE file system (see filesystem_type): edits made elsewhere
        # send no inotify event, so the timer rescans it this often. Detected at start and
        # whenever another folder takes the path's place; remote_fs overrides the detection.
        self.remote_rescan_interval_s = max(0.05, float(s.remote_rescan_interval_s))
        self._remote_setting = s.remote_fs
        self.filesystem: str | None = None
        self.remote = False
        self.write_quiet_s = write_quiet_ms / 1000
        self.batch_size = max(1, batch_size)
        self.stats = WatcherStats()
        self._state = WatcherState.NEW
        self._state_lock = threading.Lock()
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: dict[str, _PathState] = {}
        # Asks whether a young pair would be a copy (_copy_wait); kept, as making one compiles
        # the ignore rules (ten times the cost of the question), and it keeps no state for it.
        self._copies = Reconciler(store)
        self._ignore = fs.IgnoreRules.for_root(self.root)
        # The ignore file's stat when its rules were read (None: there was none), and when it is
        # due to be read again after an editor's save (None: no save under way). Its rules are
        # never taken from a save half done (see _rules_event).
        self._rules_sig = _ignore_file_sig(self.root)
        self._rules_at: float | None = None
        self._rules_writing = False
        self._cond = threading.Condition()
        self._token = secrets.token_hex(4)
        self._fence_counter = itertools.count(1)
        self._fence_seen = 0
        self._gated: set[str] = set()
        self._idle = False
        self._rescan_wanted: str | None = None
        self._next_rescan = 0.0
        self._next_health = 0.0
        self._observer: Any = None
        self._worker: threading.Thread | None = None
        self._unhook_close: Callable[[], None] | None = None
        self._hook = _OverflowHook(self._on_overflow, self._observer_threads)
        self._mark = WatchMark(None, None)  # (taken by start(); see localstore._presence)
        self._failure: BaseException | None = None
        # Health (see WatcherState.DEGRADED); written by the worker only.
        self._root_problem: str | None = None
        # (st_dev, st_ino) of the folder being watched: a different folder at the same path (a
        # drive unmounted from under it, a restore) is not taken for the same one unchecked.
        self._root_id: tuple[int, int] | None = None
        # The folder's mark (see _reconcile.ROOT_MARK_NAME): an inode number can be handed out
        # again, so a recreated empty folder can have the old identity. None: not marked.
        self._root_mark: str | None = None
        # The identity of a folder taken for the same one without its mark (see _same_root): it
        # is not restarted or rescanned for the missing mark again.
        self._unmarked_ok: tuple[int, int] | None = None
        self._unlistable: list[str] = []
        self._denied: list[str] = []  # of those, the ones refused for permissions
        # Folders inotify does not watch (confirmed by two looks) and the ones seen once; the
        # watch limit when they were found (a raised limit is the moment to watch them again).
        self._unwatched: list[str] = []
        self._unwatched_suspects: set[str] = set()
        self._watch_problem: str | None = None
        self._watch_check_due = True
        self._rewatch = False
        self._rewatch_delay = 0.0
        self._next_rewatch = 0.0
        # When a folder first moved out of the tree since the observer started (its watches
        # went with it: STALE_WATCHES_S); None: none did.
        self._stale_since: float | None = None
        # Rescan-only mode (no observer: the folder's own watch was refused for a limit): why,
        # and when the watch is tried again.
        self._limit_problem: str | None = None
        self._limit_retry_delay = 0.0
        self._limit_retry_at = 0.0
        self._limit_reason = ""
        self._limit_denied = False  # refused for permissions (see _watch_error)
        # Bumped whenever the observer is replaced or dropped (wait_idle lays a new fence then).
        self._observer_epoch = 0
        self._last_rescan_s = 0.0
        self._step_error: str | None = None
        self._errors_in_row = 0
        # Paths whose ingest failed, oldest first; the problem text is built on the worker (other
        # threads read the string only, never the dict).
        self._failing: dict[str, _Failing] = {}
        self._ingest_problem: str | None = None
        self._all_indexed = True
        self._log_next: dict[str, float] = {}
        self._log_skipped: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def state(self) -> WatcherState:
        """Where the watcher is in its lifecycle; while running, also whether it is healthy."""
        state = self._state
        if state is WatcherState.RUNNING:
            if self._failure is not None or (
                self._worker is not None and not self._worker.is_alive()
            ):
                return WatcherState.FAILED
            if self.problem is not None:
                return WatcherState.DEGRADED
        return state

    @property
    def failure(self) -> BaseException | None:
        """The exception that ended the worker thread (state FAILED), or None."""
        return self._failure

    @property
    def problem(self) -> str | None:
        """Why the watcher is DEGRADED (or FAILED), for status pages; None when all is well."""
        if self._failure is not None:
            return f"the watcher stopped working: {self._failure}"
        parts = [
            p
            for p in (
                self._root_problem,
                self._limit_problem,
                self._watch_problem,
                self._step_error,
                self._ingest_problem,
            )
            if p
        ]
        unlistable = self._unlistable
        if self._limit_problem is not None and self._limit_denied:
            unlistable = [p for p in unlistable if p]  # the folder itself: said above
        if unlistable:
            shown = ", ".join(p or "." for p in unlistable[:5])
            text = f"cannot list {shown}; the blueprints there are not watched"
            denied = [p for p in self._denied if p in unlistable]
            if denied:
                first = self.root / denied[0]
                text += (
                    f" (permission denied: this user, uid {_uid()}, may not read "
                    f"{', '.join(p or '.' for p in denied[:5])}); give it read access "
                    f"(chown it to this user, or chmod u+rx '{first}' as its owner); it is "
                    "watched as soon as it is readable"
                )
            parts.append(text)
        return "; ".join(parts) or None

    @property
    def notice(self) -> str | None:
        """What a status page should say about how this folder is watched, though nothing is
        wrong (a network or FUSE file system, rescanned on a timer); None when plain inotify."""
        if not self.remote:
            return None
        return _remote_notice(
            self.root, self.filesystem, self._remote_setting, self._remote_interval()
        )

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    def start(self) -> None:
        """Watch the folder and start the worker (an initial rescan runs first).

        Raises ReadOnlyStoreError for a store opened read-only (a watcher records what
        changes). Raises WatcherError if already started, or if the folder cannot be watched for a reason
        other than inotify's per-user limits (it is missing, say). When a limit refuses the
        folder's watch (max_user_watches, max_user_instances, or ENOMEM: a memory limit) the
        watcher starts DEGRADED in rescan-only mode instead: ``problem`` names the fix, rescans
        run every ``LIMITED_RESCAN_S``, ``wait_idle`` rescans before its fence, and the watch is
        tried again with a back-off (``LIMIT_RETRY_S``; a retry refused for any other reason
        while the folder is in place keeps that mode too). A folder this user may not read
        starts that mode too, its problem saying so (watchdog itself drops that refusal).
        """
        with self._state_lock:
            if self._state is not WatcherState.NEW:
                raise WatcherError(
                    f"the watcher is {self._state.value}; a watcher starts once",
                    hint="create a new Watcher",
                )
            if self.store.closed:
                raise StoreClosedError("the store is closed", hint="open it again")
            if self.store.read_only:
                # A watcher records what changes, and lays its fences in the folder: on a
                # read-only store it started, then failed in wait_idle ("cannot lay a fence ...
                # check that the blueprints folder exists"), and recorded nothing.
                raise self.store.index.read_only_error("watch the blueprints folder")
            try:
                self._root_id = _identity(self.root)
            except OSError as exc:
                raise _watch_error(exc, self.root) from exc
            self._detect_filesystem()
            self._root_mark = self.store.index.get_setting(ROOT_MARK_SETTING)
            try:
                self._observer = self._start_observer()
            except _WatchLimitError as exc:
                # An IDE holding every watch must not leave the folder unsynced: rescans find
                # the edits (later than events would), and the watch is taken when it is free.
                self._observer = None
                self._limited(exc)
            self._state = WatcherState.RUNNING
        with _STARTED_LOCK:
            _STARTED.add(self)
        # Seen by other processes' stores (a CLI command beside an app): they leave to this
        # watcher a change younger than its periods (localstore._presence).
        self._mark = WatchMark.take(
            self.store.paths.state, WatchPeriods(self.write_quiet_s, self.grace_s)
        )
        _keep_overflow_warnings()
        for name in OVERFLOW_LOGGERS:
            logging.getLogger(name).addHandler(self._hook)
        self._rescan_wanted = "start"
        self._worker = threading.Thread(target=self._run, name="localstore-watcher", daemon=True)
        self._worker.start()
        try:
            self._unhook_close = self.store.on_close(self._on_store_close)
        except StoreClosedError:
            # Closed by another thread since the check above: its hooks ran without this one,
            # and nothing else would ever stop the threads just started (nor free the mark).
            self.stop()
            self.join(CLOSE_JOIN_S)
            raise

    def _start_observer(self) -> Any:
        # watchdog 7 drops EACCES from inotify_add_watch (InotifyFD._raise_error returns for
        # it), even for the folder it was asked to watch: an unreadable folder was "watched"
        # with nothing watched, fences never came back (wait_idle and the daemon's `sync
        # --wait` timed out), edits waited for the timer rescan, and once the folder was
        # readable it still was not watched. So the kernel is asked first, in a probe instance.
        refused = _root_watch_refused(self.root)
        if refused is not None:
            raise _watch_error(refused, self.root) from refused
        _ignore_rewatch_warning()
        try:
            # The inotify instance is created here: EMFILE (max_user_instances) comes from this
            # line, and escaped as a bare OSError that neither start()'s callers nor the health
            # check's restart expected.
            observer = _new_observer()
        except OSError as exc:
            raise _watch_error(exc, self.root) from exc
        try:
            observer.schedule(
                _Handler(self._q.put), str(self.root), recursive=True, event_filter=_EVENT_FILTER
            )
            observer.start()
        except OSError as exc:
            observer.stop()
            raise _watch_error(exc, self.root) from exc
        return observer

    def stop(self) -> None:
        """Ask the watcher to stop (idempotent); ``join()`` waits for it."""
        with self._state_lock:
            if self._state is WatcherState.NEW:
                self._state = WatcherState.STOPPED
                return
            if self._state is not WatcherState.RUNNING:
                return
            self._state = WatcherState.STOPPING
        with _STARTED_LOCK:
            _STARTED.discard(self)
        self._mark.close()  # (what it has pending now is for the next look, not for it)
        for name in OVERFLOW_LOGGERS:
            logging.getLogger(name).removeHandler(self._hook)
        if self._unhook_close is not None:
            self._unhook_close()  # a stopped watcher is not kept by the store until it closes
        observer = self._observer
        if observer is not None:  # None: rescan-only mode
            observer.stop()
        self._q.put(("stop",))

    def join(self, timeout: float | None = None) -> None:
        """Wait until the observer and the worker have exited."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in (self._observer, self._worker):
            if thread is None or thread is threading.current_thread() or not thread.is_alive():
                continue
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        alive = any(t is not None and t.is_alive() for t in (self._observer, self._worker))
        with self._state_lock:
            if self._state is WatcherState.STOPPING and not alive:
                self._state = WatcherState.STOPPED

    def _on_store_close(self) -> None:
        self.stop()
        self.join(CLOSE_JOIN_S)

    def _require_running(self) -> None:
        if self._state is not WatcherState.RUNNING:
            raise WatcherError(
                f"the watcher is {self._state.value}", hint="start() it first (a watcher runs once)"
            )
        if self._failure is not None:
            raise WatcherError(f"the watcher failed: {self._failure}") from self._failure

    # -- synchronous steps -------------------------------------------------------------------------

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every change made before this call is settled and processed.

        A fence file is created in the folder; once its event arrives, every earlier event has been
        seen (inotify keeps order). Returns False on timeout, and as soon as nothing is left to do
        but some change could not be indexed (``problem`` says why; it is tried again later): a
        caller such as the daemon's ``sync`` barrier must not take that edit for indexed. Raises
        WatcherError if not running.
        """
        self._require_running()
        deadline = time.monotonic() + timeout
        if self._unwatched or self._unwatched_suspects or self._observer is None or self.remote:
            # No event comes from a folder inotify does not watch (nor from any, in rescan-only
            # mode; nor for another machine's edit on a network file system): look at the files
            # (queued before the fence, so the fence's event finds the rescan's work pending).
            self._q.put(("rescan", "barrier", None))
        epoch = -1
        relay_at = 0.0
        n = -1
        with self._cond:
            while not (n > 0 and self._fence_seen >= n and self._idle):
                now = time.monotonic()
                if (n < 0 or self._fence_seen < n) and (epoch != self._epoch() or now >= relay_at):
                    # A fence can be lost with everything else (queue overflow, a restarted
                    # observer): lay a new one then, and after a while without it anyway.
                    epoch = self._epoch()
                    relay_at = now + FENCE_RELAY_S
                    self._cond.release()
                    try:
                        n = self._lay_fence()
                    except OSError as exc:
                        raise WatcherError(
                            f"cannot lay a fence in {self.root}: {exc.strerror or exc}",
                            hint=self.problem or "check that the blueprints folder exists",
                        ) from exc
                    finally:
                        self._cond.acquire()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._failure is not None or not self._worker_alive():
                    return False
                self._cond.wait(min(remaining, 0.5))
            return self._all_indexed

    def _epoch(self) -> int:
        return self._observer_epoch + self.stats.overflows

    def _lay_fence(self) -> int:
        n = next(self._fence_counter)
        if self._observer is None:
            # Rescan-only mode: no event would bring a fence file back. The worker's queue keeps
            # order as inotify does, so a fence queued behind the work stands for it.
            self._q.put(("fence", n))
            return n
        fence = self.root / f"{_FENCE_PREFIX}{self._token}-{n}{fs.TEMP_SUFFIX}"
        os.close(os.open(fence, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        # (A scanner opens a new file on Windows: a plain unlink failed the flush or sync.)
        fs.unlink_file(fence)
        return n

    def rescan(self, *, timeout: float = 120.0) -> RescanReport:
        """Compare the whole folder with the index (size, mtime and change time first, hash when
        needed).

        While running, the rescan runs on the worker and this waits until its changes are processed
        (vanished files still get their grace period). Otherwise it applies the differences at once.
        """
        if self._state is WatcherState.RUNNING:
            self._require_running()
            done: queue.SimpleQueue[RescanReport | Exception] = queue.SimpleQueue()
            self._q.put(("rescan", "requested", done))
            try:
                report = done.get(timeout=timeout)
            except queue.Empty:
                raise WatcherError("the rescan did not finish in time") from None
            if isinstance(report, WatcherError):
                raise report
            if isinstance(report, Exception):
                raise WatcherError(f"the rescan failed: {report}") from report
            self.wait_idle(timeout)
            return report
        if self._state is WatcherState.STOPPING:
            raise WatcherError("the watcher is stopping")
        return self._rescan_now()

    def subscribe(
        self, callback: Callable[[Event], None], *, kinds: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Receive the events of external edits (origin ``external``); returns an unsubscribe."""

        def only_external(event: Event) -> None:
            if event.origin == "external":
                callback(event)

        return self.store.subscribe(only_external, kinds=kinds)

    # -- worker ------------------------------------------------------------------------------------

    def _worker_alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _on_overflow(self) -> None:
        self.stats.overflows += 1
        self._q.put(("rescan", "overflow", None))

    def _observer_threads(self) -> frozenset[int]:
        """The thread ids of this watcher's watchdog threads (none in rescan-only mode).

        Where watchdog reads the kernel's queue: the observer's own inotify reader in watchdog
        7.1, an emitter's buffer thread in older versions (which log no overflow; listed in case
        one does).
        """
        obs = self._observer
        if obs is None:
            return frozenset()
        try:
            emitters = list(getattr(obs, "emitters", ()))
        except RuntimeError:  # (the set changed: the observer is being stopped, its overflow moot)
            emitters = []
        readers = [getattr(obs, "_inotify_fd", None)]
        readers += [getattr(e, "_inotify", None) for e in emitters]
        return frozenset(
            t.ident
            for t in (obs, *emitters, *readers)
            if isinstance(t, threading.Thread) and t.ident is not None
        )

    def _run(self) -> None:
        try:
            self._loop()
        except StoreClosedError:
            log.info("watcher stopped: the store was closed")
        except BaseException as exc:  # the worker's boundary: record, log, wake waiters
            self._failure = exc
            log.exception("the watcher worker failed")
        finally:
            self._mark.close()  # (a failed worker records nothing more)
            with self._cond:
                self._idle = False
                self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except StoreClosedError:
                raise
            # The worker's per-item boundary: one item's failure must not end the watching of
            # every other path (logged, counted and followed by a rescan in _step_failed).
            except Exception as exc:  # noqa: BLE001
                self._step_failed(exc)

    def _step(self) -> bool:
        """One round of the worker; True when asked to stop."""
        self._rules_due(time.monotonic())
        if self._rescan_wanted is not None:
            self._rescan_into_pending(self._rescan_wanted, None)
        self._process_due()
        now = time.monotonic()
        if now >= self._next_health:
            # A missing folder is looked for more often: it is one stat, and a restore is
            # picked up within half a second.
            self._next_health = now + (HEALTH_CHECK_S if self._root_problem is None else 0.5)
            if self._check_observer() and self._watch_check_due:
                self._check_watches()
        if now >= self._next_rescan:
            self._rescan_wanted = "timer"
            return False
        self._update_idle()
        item = self._next_item()
        if item is None:
            return False
        if item[0] == "stop":
            return True
        self._handle(item)
        return self._drain()

    def _step_failed(self, exc: Exception) -> None:
        """Log and count a failed step, then rescan after a back-off instead of dying.

        The item that failed is gone (or still pending); whatever it was about, the rescan finds
        the difference again. Pending paths wait out the back-off too, so a path that keeps
        failing cannot spin the worker.
        """
        self.stats.errors += 1
        self._errors_in_row += 1
        first, most = ERROR_RESCAN_S
        delay = _doubling(first, most, self._errors_in_row - 1)
        log.error(
            "the watcher failed to handle a change (%s: %s); rescanning in %.1f s",
            type(exc).__name__,
            exc,
            delay,
            exc_info=exc,
        )
        self._step_error = f"{type(exc).__name__}: {exc} (rescan due)"
        now = time.monotonic()
        self._rescan_wanted = None
        self._next_rescan = now + delay
        for st in self._pending.values():
            st.due = max(st.due, now + delay)

    def _next_item(self) -> Any:
        now = time.monotonic()
        wake = min(self._next_rescan, self._next_health)
        if self._pending:
            wake = min(wake, min(st.due for st in self._pending.values()))
        if self._rules_at is not None:
            wake = min(wake, self._rules_at)
        try:
            return self._q.get(timeout=max(0.0, wake - now))
        except queue.Empty:
            return None

    def _check_observer(self) -> bool:
        """Restart watchdog's threads if one died; True when the watched folder is in place.

        While the blueprints folder is missing (or replaced by an empty one) there is nothing to
        watch and nothing may be deleted: report it and look again at the next health check. Once
        it is back (or replaced by a folder with blueprints in it: a restore), watch it anew and
        rescan. A folder whose watch a limit refuses is in place: rescans and deletes go on
        (rescan-only mode) and the watch is tried again when ``_limit_retry_at`` is due.
        """
        _keep_overflow_warnings()  # in case the app raised the levels after start()
        problem, ident = self._root_status()
        if problem is not None:
            if problem != self._root_problem:
                log.error("%s; no rescans or deletes until it is back", problem)
            self._root_problem = problem
            return False
        obs = self._observer
        same_root = self._same_root(ident)
        since = self._stale_since
        stale = since is not None and time.monotonic() - since >= STALE_WATCHES_S
        if stale:
            self._rewatch = True
        if obs is None:
            if same_root and time.monotonic() < self._limit_retry_at:
                return True  # rescan-only, the next try of the watch is not due yet
            healthy = False
        else:
            threads = [obs, getattr(obs, "_inotify_fd", None), *getattr(obs, "emitters", ())]
            healthy = all(t is None or t.is_alive() for t in threads)
        if same_root and healthy and not self._rewatch:
            return True
        limit_error: WatcherError | None = None
        with self._state_lock:
            if self._state is not WatcherState.RUNNING:
                return False
            if obs is not None:
                # The old observer goes first: its watches count against the same limit the
                # new one needs them under (a restart used to need twice the folder's watches).
                obs.stop()
                self._observer = None
                self._observer_epoch += 1
            try:
                self._observer = self._start_observer()
            except _WatchLimitError as exc:
                limit_error = exc  # the folder is in place: rescan-only until the retry
            except WatcherError as exc:
                if not _folder_gone(exc):
                    # Refused for another reason while the folder is in place (ENOMEM: a memory
                    # limit on the session's inotify marks; EACCES): rescan-only with the same
                    # back-off too. Taken for a missing folder, it stopped rescans and deletes
                    # and was tried (and logged as an ERROR) every 0.5 s for as long as it
                    # lasted.
                    limit_error = exc
                else:
                    # Gone again between the stat and the watch: retried at the next health
                    # check.
                    self._root_problem = exc.message
                    log.error("cannot watch the blueprints folder yet: %s", exc.message)
                    return False
            else:
                self._observer_epoch += 1
        if obs is not None:
            with contextlib.suppress(RuntimeError):
                obs.join(5)
        if self._root_problem is not None or ident != self._root_id:
            log.warning("the blueprints folder %s is back; watching it and rescanning", self.root)
            self._adopt_root(ident)
            self._detect_filesystem()  # a share mounted where a local folder was, or back
        elif limit_error is not None:
            pass  # _limited logs it
        elif obs is None:
            log.warning("the blueprints folder %s is watched again", self.root)
        elif self._rewatch and stale:
            log.info("watching %s anew: folders moved out of it kept their watches", self.root)
        elif self._rewatch:
            log.warning("watching every folder again (watches are free, or a folder is readable)")
        elif healthy:
            pass  # nothing died: the folder lost its mark, and _same_root said so
        else:
            log.error("a watchdog thread died; restarting the observer and rescanning")
        self._root_problem = None
        self._root_id = ident
        self._rewatch = False
        self._stale_since = None
        self._watch_check_due = True
        if limit_error is not None:
            self._limited(limit_error)
            if obs is None and same_root:
                return True  # a failed retry: the timer rescans go on as they were
        else:
            self._limit_problem = None
            self._limit_retry_delay = 0.0
            self.stats.restarts += 1
        self._rescan_wanted = "observer-restarted"
        return True

    def _limited(self, exc: WatcherError) -> None:
        """Go on in rescan-only mode: the folder's own watch was refused (for a limit, or for
        another reason while the folder is in place), tried again with a back-off.

        Logged once per reason (an ERROR when it starts, a WARNING when the reason changes);
        the tries in between go to DEBUG: a laptop can stay in this mode for months.
        """
        first, most = LIMIT_RETRY_S
        self._limit_retry_delay = min(most, self._limit_retry_delay * 2 or first)
        self._limit_retry_at = time.monotonic() + self._limit_retry_delay
        self._unwatched, self._unwatched_suspects, self._watch_problem = [], set(), None
        self._limit_denied = _denied(exc)
        if self._limit_denied:
            # Rescans cannot list it either: nothing is found, nothing is deleted.
            problem = (
                f"{exc.message}; its blueprints are left as they are and watching is tried "
                f"again; {exc.hint}"
            )
        else:
            problem = (
                f"{exc.message}; edits are found by a rescan every {self._interval():.0f} s "
                f"and watching is tried again; {exc.hint}"
            )
        if self._limit_problem is None:
            log.error("%s", problem)
        elif self._limit_reason != exc.message:
            log.warning("%s", problem)
        else:
            log.debug("still cannot watch %s: %s", self.root, exc.message)
        self._limit_problem = problem
        self._limit_reason = exc.message

    def _root_status(self) -> tuple[str | None, tuple[int, int] | None]:
        """What is wrong with the blueprints folder itself (None: nothing), and its identity."""
        try:
            st = os.stat(self.root)
        except OSError as exc:
            return (
                f"the blueprints folder {self.root} is missing ({exc.strerror or exc}); if its "
                f"blueprints were deleted on purpose, make the folder again with an empty file "
                f"{CONFIRM_EMPTY_NAME} in it",
                None,
            )
        if not stat.S_ISDIR(st.st_mode):
            return f"the blueprints folder {self.root} is not a folder", None
        ident = (st.st_dev, st.st_ino)
        if (
            self._root_id is not None
            and (ident != self._root_id or not self._root_marked())
            and not (self.root / CONFIRM_EMPTY_NAME).is_file()
            and self._looks_emptied()
        ):
            # An unmounted drive leaves its empty mount point; a rescan would delete everything.
            # The user's confirmation file says otherwise (as it does to an open: check_root).
            return (
                f"the blueprints folder {self.root} was replaced by a folder without blueprints "
                "(an unmounted drive?); its blueprints are kept until it has some again, or "
                f"until an empty file {CONFIRM_EMPTY_NAME} in it says they were deleted on purpose",
                ident,
            )
        return None, ident

    def _same_root(self, ident: tuple[int, int] | None) -> bool:
        """Whether the folder in place is the one being watched, so that it needs no new watch
        and no rescan: its identity, and its mark or (the mark removed) its blueprints.

        An inode number alone is no proof (ext4 hands a freed one out again: see
        ``_reconcile.ROOT_MARK_NAME``), but a folder with the recorded YAMLs still in it at their
        recorded inodes is the old folder that lost its mark (``rm -rf`` removes it among the
        first files, or a user cleaning hidden files). Taken for a new one, it was watched anew
        and rescanned at every health check (2 s) for as long as the mark was missing. One
        without them (a copy put back in place) is watched anew and rescanned once. Either way
        the mark is not written back while running: the folder may be one an ``rm -rf`` is
        emptying, which a file put back into it fails ("Directory not empty"), as metas did;
        the next open (``check_root``) writes it. An unmarked folder without blueprints is still
        a replaced one (``_root_status``).
        """
        if self._root_problem is not None or ident != self._root_id:
            return False
        if self._root_marked():
            self._unmarked_ok = None
            return True
        if self._unmarked_ok == ident:
            return True
        self._unmarked_ok = ident
        if self._holds_recorded():
            log.warning(
                "the blueprints folder %s lost its mark %s but still holds its blueprints; "
                "watching on (the next open of the store writes the mark back)",
                self.root,
                ROOT_MARK_NAME,
            )
            return True
        log.warning(
            "the blueprints folder %s lost its mark %s and holds none of the recorded "
            "blueprints as they were (a copy put back?); watching it anew and rescanning",
            self.root,
            ROOT_MARK_NAME,
        )
        return False

    def _holds_recorded(self) -> bool:
        """Whether any of a sample of the live blueprints' YAMLs is in the folder with the inode
        the index recorded for it (one of them edited or deleted meanwhile does not count
        against the folder). Picked at random: spread over the folder, not the sub-folder an
        ``rm`` has just emptied."""
        with self.store.index.read() as cur:
            rows = cur.execute(
                "SELECT path, yaml_ino FROM blueprints WHERE deleted = 0 "
                "AND yaml_ino IS NOT NULL ORDER BY random() LIMIT ?",
                (_ROOT_SAMPLE,),
            ).fetchall()
        return any(self._yaml_ino(path) == int(ino) for path, ino in rows)

    def _root_marked(self) -> bool:
        """Whether the folder carries the mark it had at start (or there was none to carry)."""
        return self._root_mark is None or read_root_mark(self.root) == self._root_mark

    def _adopt_root(self, ident: tuple[int, int] | None) -> None:
        """Record a folder adopted while running as the one the index describes, as an open
        does (``adopt_root``): marked, so that emptying it later is an ordinary delete and not
        taken for a folder replaced by an empty one; its identity, so that writes and the next
        open take it for the folder; the user's confirmation removed once it has answered."""
        if ident is None:
            return
        try:
            adopt_root(self.store, f"{ident[0]}:{ident[1]}")
            self._root_mark = self.store.index.get_setting(ROOT_MARK_SETTING)
        except LocalStoreError as exc:
            log.warning("cannot record the blueprints folder %s: %s", self.root, exc)

    def _looks_emptied(self) -> bool:
        """Whether the folder holds no blueprint file while the index has live blueprints."""
        unlistable: list[tuple[str, OSError]] = []
        walk = fs.walk_blueprint_files(self.root, self._ignore, unlistable=unlistable)
        if any(rel.endswith(fs.YAML_SUFFIX) for rel, _ in walk) or unlistable:
            return False
        with self.store.index.read() as cur:
            rows = cur.execute("SELECT 1 FROM blueprints WHERE deleted = 0 LIMIT 1").fetchall()
        return bool(rows)

    def _drain(self) -> bool:
        for _ in range(_MAX_DRAIN):
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return False
            if item[0] == "stop":
                return True
            self._handle(item)
        return False

    def _update_idle(self) -> None:
        with self._cond:
            self._idle = (
                self._q.empty()
                and not self._pending
                and self._rescan_wanted is None
                and self._rules_at is None
            )
            self._all_indexed = not self._failing
            self._cond.notify_all()

    def _handle(self, item: tuple[Any, ...]) -> None:
        if item[0] == "fs":
            self.stats.raw_events += 1
            self._on_fs_event(item[1], time.monotonic())
        elif item[0] == "fence":
            self._fence_back(item[1], time.monotonic())
        elif item[0] == "rescan":
            try:
                self._rescan_into_pending(item[1], item[2])
            except Exception as exc:
                if item[2] is not None:
                    item[2].put(exc)  # rescan() raises it instead of waiting for its timeout
                raise

    # -- raw events --------------------------------------------------------------------------------

    def _on_fs_event(self, ev: FileSystemEvent, now: float) -> None:
        src = os.fsdecode(ev.src_path)
        dest = os.fsdecode(ev.dest_path) if ev.dest_path else ""
        if self._is_fence(src):
            self._release_gated(now)
            return
        synthetic = getattr(ev, "is_synthetic", False)
        if not ev.is_directory:
            self._rules_event(ev.event_type, src, dest, now)
        if ev.is_directory:
            # watchdog adds synthetic events for sub-folders; the top folder's event covers them.
            if not synthetic:
                self._on_dir_event(ev, src, dest, now)
            return
        if ev.event_type == wd_events.EVENT_TYPE_MOVED:
            if not fs.swapped_out(src, dest):
                # (A save that replaced the file swaps it out to its temp's name while the new
                # version takes its place, the other half of that swap: never a vanish, whose
                # grace would hold the echo's check back 400 ms instead of the settle's 40.)
                self._vanish(self._key(src), now)
            self._appear(self._key(dest), now)
        elif ev.event_type == wd_events.EVENT_TYPE_DELETED:
            self._vanish(self._key(src), now)
        elif ev.event_type == wd_events.EVENT_TYPE_CLOSED:
            self._appear(self._key(src), now)
        elif ev.event_type == wd_events.EVENT_TYPE_CREATED and synthetic:
            # Listed inside a folder that appeared: complete unless a write event says otherwise.
            key = self._key(src)
            if key is not None:
                self._found_by_rescan(key, now, missing=False)
        elif ev.event_type in (wd_events.EVENT_TYPE_CREATED, wd_events.EVENT_TYPE_MODIFIED):
            self._writing(self._key(src), now)
        elif ev.event_type == getattr(wd_events, "EVENT_TYPE_ATTRIB", "attrib"):
            self._touched(self._key(src), now)

    def _on_dir_event(self, ev: FileSystemEvent, src: str, dest: str, now: float) -> None:
        if ev.event_type == getattr(wd_events, "EVENT_TYPE_ATTRIB", "attrib"):
            if self._unlistable:  # a chmod or chown may have made it readable: look now
                self._rescan_wanted = "folder-permissions"
            return
        if ev.event_type in (wd_events.EVENT_TYPE_CREATED, wd_events.EVENT_TYPE_MOVED):
            # watchdog watches a new folder, or silently does not (the watch limit): look.
            self._watch_check_due = True
        if src and ev.event_type in (wd_events.EVENT_TYPE_DELETED, wd_events.EVENT_TYPE_MOVED):
            # (No source: moved in from outside the tree; see _new_observer.)
            if os.path.abspath(src) == str(self.root):
                log.error("the blueprints folder %s itself went away", self.root)
                self._rescan_wanted = "root-gone"
                return
            self._vanish_tree(src, now)
        if ev.event_type == wd_events.EVENT_TYPE_MOVED and dest:
            self._appear_tree(dest, now, strong=True)
        elif ev.event_type == wd_events.EVENT_TYPE_MOVED and self._stale_since is None:
            self._stale_since = now  # moved out of the tree: its watches went with it
        elif ev.event_type == wd_events.EVENT_TYPE_CREATED:
            self._appear_tree(src, now, strong=False)

    def _is_fence(self, abs_path: str) -> bool:
        name = os.path.basename(abs_path)
        prefix = f"{_FENCE_PREFIX}{self._token}-"
        if not name.startswith(prefix):
            return False
        with contextlib.suppress(ValueError):
            n = int(name[len(prefix) : -len(fs.TEMP_SUFFIX)])
            with self._cond:
                self._fence_seen = max(self._fence_seen, n)
                self._idle = False  # not idle until this round's work is done
        return True

    def _fence_back(self, n: int, now: float) -> None:
        """A fence queued in rescan-only mode reached the worker (see ``_lay_fence``)."""
        with self._cond:
            self._fence_seen = max(self._fence_seen, n)
            self._idle = False
        self._release_gated(now)

    def _rules_event(self, kind: str, src: str, dest: str, now: float) -> None:
        """An event of the ignore file: read its rules again once the save is done.

        Editors save it as any file: vim renames it away and writes a new one, VS Code truncates
        it and writes. Read at the first event, the rules came from a missing or empty file
        (the default patterns alone), and the rescan that followed took every pair in an
        ignored folder for a new blueprint (``created`` events that sync pushed, meta files
        written into that folder). So a save is waited out as a blueprint's is: the settle
        window after a close or a move-in, the quiet period while written, the delete grace
        after a vanish; the rules in force meanwhile are the old ones.
        """
        ignore = str(self.root / fs.IGNORE_FILE_NAME)
        if dest == ignore:
            delay, self._rules_writing = self.settle_s, False  # moved in: complete
        elif src != ignore:
            return
        elif kind in (wd_events.EVENT_TYPE_MOVED, wd_events.EVENT_TYPE_DELETED):
            delay, self._rules_writing = self.grace_s, False
        elif kind in (wd_events.EVENT_TYPE_CREATED, wd_events.EVENT_TYPE_MODIFIED):
            delay, self._rules_writing = self.write_quiet_s, True
        elif kind == wd_events.EVENT_TYPE_CLOSED:
            delay, self._rules_writing = self.settle_s, False
        elif self._rules_writing:
            return  # an attribute change mid-write: the close or the quiet period decides
        else:
            delay = self.settle_s
        self._rules_at = now + delay

    def _rules_due(self, now: float) -> None:
        """Read the ignore file's rules if its save is done and the file changed; rescan then."""
        if self._rules_at is None or now < self._rules_at:
            return
        self._rules_at, self._rules_writing = None, False
        sig = _ignore_file_sig(self.root)
        if sig != self._rules_sig:
            self._rules_sig = sig
            self._ignore = fs.IgnoreRules.for_root(self.root)
            self._rescan_wanted = "ignore-rules"

    def _look_at_rules(self, now: float) -> None:
        """At a rescan: take an ignore file changed without an event (rescan-only mode, a network
        file system, a change while stopped) once it is settled, as ``_rules_event`` would; a
        save under way keeps the rules in force until then."""
        # The same patterns, anew: the rules cache each folder's verdict, and a long-running
        # watcher sees folders come and go (the rescan used to read the file each time).
        self._ignore = fs.IgnoreRules(self._ignore.patterns)
        if self._rules_at is not None:
            return  # a save is being waited out
        sig = _ignore_file_sig(self.root)
        if sig == self._rules_sig:
            return
        if sig is None:
            self._rules_at = now + self.grace_s  # gone, or renamed away by a save
            return
        age = time.time() - max(sig[1], sig[2]) / 1e9
        if 0 <= age < self.write_quiet_s:
            self._rules_at = now + (self.write_quiet_s - age)
            return
        self._rules_sig = sig
        self._ignore = fs.IgnoreRules.for_root(self.root)

    def _key(self, abs_path: str) -> str | None:
        """The YAML path a raw event is about, or None if it is not a blueprint file we track."""
        try:
            rel = Path(abs_path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        if rel == fs.IGNORE_FILE_NAME:
            return None  # (its rules: _rules_event)
        if rel.endswith(fs.META_SUFFIX):
            yaml_rel = fs.yaml_path_for(rel)
        elif rel.endswith(fs.YAML_SUFFIX):
            yaml_rel = rel
        else:
            return None
        # The full scan's own rules (IgnoreRules.scans): hidden folders, side files.
        if not self._ignore.scans(rel):
            return None
        return yaml_rel if _canonical(yaml_rel) else None

    def _state_for(self, key: str, now: float) -> _PathState:
        st = self._pending.get(key)
        if st is None:
            st = self._pending[key] = _PathState(due=now)
        return st

    def _appear(self, key: str | None, now: float) -> None:
        """Closed after writing, or moved in: complete; ingest after the settle window."""
        if key is None:
            return
        st = self._state_for(key, now)
        st.writing = False
        st.vanished_at = None
        st.gate = 0
        st.quiet_s = 0.0
        st.due = now + self.settle_s

    def _writing(self, key: str | None, now: float) -> None:
        """Created or written without a close yet: wait for the close (or a quiet period)."""
        if key is None:
            return
        st = self._state_for(key, now)
        st.writing = True
        st.vanished_at = None
        st.gate = 0
        st.due = now + self.write_quiet_s

    def _touched(self, key: str | None, now: float) -> None:
        """Attributes changed (touch, chmod): cheap to check once settled, unless mid-write."""
        if key is None:
            return
        st = self._state_for(key, now)
        if not st.writing:
            st.vanished_at = None
            st.due = now + self.settle_s

    def _vanish(self, key: str | None, now: float) -> None:
        """Deleted or moved away: hold for the grace period (an editor may be saving)."""
        if key is None:
            return
        st = self._state_for(key, now)
        st.writing = False
        st.vanished_at = now
        st.gate = 0  # a new vanish: its move partner may be behind any fence laid so far
        # Only an indexed blueprint can be deleted by mistake; anything else is looked at at once.
        st.due = now + self.grace_s if self._indexed(key) else now

    def _found_by_rescan(self, key: str, now: float, *, missing: bool) -> None:
        if key in self._pending:
            return  # events already drive it
        if missing:
            self._vanish(key, now)
        else:
            st = self._state_for(key, now)
            st.due = now + self.settle_s
            st.quiet_s = self.write_quiet_s

    def _vanish_tree(self, abs_dir: str, now: float) -> None:
        try:
            low, high = below(Path(abs_dir).relative_to(self.root).as_posix())
        except ValueError:
            return
        with self.store.index.read() as cur:
            paths = [
                str(r[0])
                for r in cur.execute(
                    # (One range of the path index; an emoji-named sub-folder is in it too.)
                    "SELECT path FROM blueprints WHERE deleted = 0 AND path >= ? AND path < ?",
                    (low, high),
                )
            ]
        paths += [k for k in self._pending if k.startswith(low)]
        for rel in paths:
            self._vanish(rel, now)

    def _appear_tree(self, abs_dir: str, now: float, *, strong: bool) -> None:
        unlistable: list[tuple[str, OSError]] = []
        for rel, _ in fs.walk_blueprint_files(
            Path(abs_dir), fs.IgnoreRules(()), unlistable=unlistable
        ):
            key = self._key(os.path.join(abs_dir, rel))
            if key is None:
                continue
            if strong:
                self._appear(key, now)
            else:
                self._found_by_rescan(key, now, missing=False)
        if unlistable:
            # The rescan reports it (state DEGRADED) and keeps what is under it as unknown.
            self._rescan_wanted = "unlistable-folder"

    # -- processing --------------------------------------------------------------------------------

    def _process_due(self) -> None:
        while True:
            now = time.monotonic()
            present: list[str] = []
            gone: list[str] = []
            for key, st in list(self._pending.items()):
                if st.due > now:
                    continue
                verdict = self._verdict(key, st, now)
                if verdict == "present":
                    present.append(key)
                elif verdict == "gone":
                    gone.append(key)
                elif verdict == "drop":
                    del self._pending[key]
                    self._gated.discard(key)
                    if self._forget_failure(key):
                        self._update_ingest_problem()
            gone = self._hold_deletes(self._gate_deletes(self._quiet_deletes(gone, now), now), now)
            # (A folder that was just watched anew gets its rescan before any delete goes out.)
            if gone and (not self._check_observer() or self._rescan_wanted is not None):
                # Everything looks gone when the folder itself is: hold every delete until the
                # folder is back (or replaced by one with blueprints); then the paths are checked
                # again. Without this, a drive unmounted for a second deleted every blueprint.
                for key in gone:
                    self._pending[key].due = now + HEALTH_CHECK_S
                gone = []
            present = self._moves_first(sorted(present), now)
            if not present and not gone:
                return
            # Existing files first: a move's new path claims the identity before its old path is
            # looked at (which then finds nothing to delete).
            items = [(k, False) for k in present] + [(k, True) for k in sorted(gone)]
            for k, _ in items:
                del self._pending[k]
                self._gated.discard(k)
            for i in range(0, len(items), self.batch_size):
                self._ingest_batch(items[i : i + self.batch_size])

    def _moves_first(self, present: list[str], now: float) -> list[str]:
        """The due paths, those whose YAML has the inode the index recorded for a vanished
        path first (``moved_first``); none while such a moved file is still settling.

        ``cp m.* backup/; mv m.* z/``: in path order ``backup/m`` found ``m`` gone and took the
        blueprint's identity as a move (its history, tags and sync record), and the original,
        moved to ``z/``, got a new id. The copy is often due before the move (closed a moment
        earlier): it is then held until the move is due too (at most a settle window, and only
        while a vanished blueprint's very file is pending elsewhere), so they go in one batch,
        the move first. Pulling the move forward instead could ingest its YAML before its meta
        had followed it.
        """
        vanished = [k for k, st in self._pending.items() if st.vanished_at is not None]
        if not present or not vanished:
            return present
        gone = self._recorded_inos(vanished)
        if not gone:
            return present
        taken = set(present)
        settling = [
            st.due
            for k, st in self._pending.items()
            if k not in taken
            and st.vanished_at is None
            and not st.writing
            and st.due > now  # (one due now was judged already: present, or rescheduled)
            and self._yaml_ino(k) in gone
        ]
        if settling:
            release = max(settling)
            for k in present:
                self._pending[k].due = max(self._pending[k].due, release)
            return []
        moved_first(present, self._yaml_ino, gone)
        return present

    def _recorded_inos(self, paths: Iterable[str]) -> set[int]:
        """The YAML inodes the index recorded for the live blueprints at ``paths``."""
        with self.store.index.read() as cur:
            return {
                int(r[0])
                for key in paths
                for r in cur.execute(
                    "SELECT yaml_ino FROM blueprints WHERE path = ? AND deleted = 0 "
                    "AND yaml_ino IS NOT NULL",
                    (key,),
                )
            }

    def _yaml_ino(self, key: str) -> int | None:
        """The inode of the YAML at ``key`` as the index stores it (None: none there)."""
        try:
            return fs.ino_key(os.stat(self.root / key, follow_symlinks=False).st_ino)
        except OSError:
            return None

    def _quiet_deletes(self, gone: list[str], now: float) -> list[str]:
        """Let a delete through only once nothing has vanished for ``DELETE_QUIET_S`` under the
        nearest folder of it still standing; the others are due again when it will be quiet.

        ``rm -rf`` of the blueprints folder removes file by file for seconds, the folder
        itself last: each delete recorded once its grace was over, while the folder was still
        there, was pushed by sync to every device (about a third of the blueprints; the rest
        was then held as a folder away). Held until the deleting stops, the deletes find the
        folder gone (``_process_due`` holds them as before). A sub-folder's own files are
        judged under the folder above it once it is gone, so a big ``rm -rf team`` records
        them all once it ends. A vanish undone (a save dance) no longer counts.
        """
        standing: dict[str, str] = {}
        latest: dict[str, float] = {}
        ready = []
        for key in gone:
            folder = self._standing_folder(os.path.dirname(key), standing)
            if folder not in latest:
                latest[folder] = self._last_vanish_below(folder)
            quiet_at = latest[folder] + DELETE_QUIET_S
            if now >= quiet_at:
                ready.append(key)
            else:
                self._pending[key].due = quiet_at
        return ready

    def _standing_folder(self, folder: str, known: dict[str, str]) -> str:
        """``folder`` (relative) or its nearest parent that is still there ("": the root)."""
        if folder not in known:
            up = folder
            while up and not os.path.isdir(self.root / up):
                up = os.path.dirname(up)
            known[folder] = up
        return known[folder]

    def _last_vanish_below(self, folder: str) -> float:
        """When the latest pending vanish under ``folder`` (relative; "": everywhere) was seen."""
        prefix = f"{folder}/" if folder else ""
        return max(
            (
                st.vanished_at
                for key, st in self._pending.items()
                if st.vanished_at is not None and key.startswith(prefix)
            ),
            default=0.0,
        )

    def _gate_deletes(self, gone: list[str], now: float) -> list[str]:
        """Let a delete through only once a fence laid after its file was found gone has come back.

        A rename is done before its source is found missing, so both of its events are in the
        kernel queue before such a fence; inotify keeps order, so by the time the fence is seen the
        destination is pending and ``_hold_deletes`` keeps the delete back until it is ingested.
        Without the fence the destination could still be in flight: watchdog pairs a move's two
        halves for only 0.5 s, and when the second half comes later (a stalled thread under load)
        it reports the source deleted and, later, the destination created. A delete ingested in
        between lost the blueprint's identity (about one case-only rename in 1,000 under load).
        """
        passed = [k for k in gone if 0 < self._pending[k].gate <= self._fence_seen]
        waiting = [k for k in gone if not 0 < self._pending[k].gate <= self._fence_seen]
        if not waiting:
            return passed
        try:
            n = self._lay_fence()
        except OSError as exc:
            # No fence, no events from this folder either (it is gone or read-only): the rescan
            # and the hold are all there is; waiting would only stall every delete.
            log.warning("cannot lay a fence in %s (%s); deleting without one", self.root, exc)
            return gone
        for key in waiting:
            st = self._pending[key]
            st.gate = n
            # Re-checked when the fence comes back; if it was lost (overflow), a new one then.
            st.due = now + FENCE_RELAY_S
            self._gated.add(key)
        return passed

    def _release_gated(self, now: float) -> None:
        """A fence came back: the deletes that waited for it are due again."""
        for key in list(self._gated):
            st = self._pending.get(key)
            if st is None or st.gate == 0:
                self._gated.discard(key)
            elif st.gate <= self._fence_seen:
                st.due = min(st.due, now)
                self._gated.discard(key)

    def _hold_deletes(self, gone: list[str], now: float) -> list[str]:
        """Keep deletes back while a file that appeared is still settling: it may be the same
        blueprint moved (its YAML matched by hash or its meta by id); deleting first would lose
        the identity. Bounded, so a folder that never settles still gets its deletes."""
        waiting = [st.due for st in self._pending.values() if st.vanished_at is None]
        if not gone or not waiting:
            return gone
        release = min(waiting) + self.settle_s
        kept = []
        for key in gone:
            st = self._pending[key]
            assert st.vanished_at is not None
            if now < st.vanished_at + self.grace_s + MAX_DELETE_HOLD_S:
                st.due = release
            else:
                kept.append(key)
        return kept

    def _verdict(self, key: str, st: _PathState, now: float) -> str:
        """'present', 'gone' (grace over), 'drop' (nothing to do) or 'wait' (rescheduled)."""
        if not self._ignore.scans(key) and not self._indexed(key):
            # Pending from before the ignore rules took it out (a pattern just added): a new
            # blueprint is never made of an ignored file.
            return "drop"
        try:
            y = os.stat(self.root / key, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):  # (ENOTDIR: a folder of it is a file)
            if not self._indexed(key):
                # Nothing indexed here (our own delete's echo, a temp that came and went): no
                # delete to hold back; if the file comes back, its event schedules it again.
                return "drop"
            if st.vanished_at is None:
                st.vanished_at = now
            if now < st.vanished_at + self.grace_s:
                st.due = st.vanished_at + self.grace_s
                return "wait"
            return "gone"
        except OSError:
            return "present"  # the ingest reports the read error and retries
        if st.quiet_s and not st.writing:
            # Found by a rescan, not by a close: a file modified moments ago may still be written.
            age = time.time() - y.st_mtime
            if 0 <= age < st.quiet_s:
                st.due = now + (st.quiet_s - age)
                return "wait"
        if not os.path.lexists(self.root / fs.meta_path_for(key)):
            if self._yaml_as_recorded(key, y):
                # Only its meta went: the watcher cannot tell a meta deleted alone from a folder
                # deleted file by file (`rm -rf`, in no pair order, maybe stalled for seconds
                # between the two files). Written back, the meta landed after `rm` had listed
                # the folder, and `rm` failed ("Directory not empty"); no quiet wait rules that
                # out. The open's reconcile and `check --fix` write it (`check` reports it).
                return "drop"
            if (wait := self._lone_yaml_wait(y)) > 0:
                st.due = now + wait
                return "wait"
        elif (wait := self._copy_wait(key, y)) > 0:
            st.due = now + wait
            return "wait"
        return "present"

    def _lone_yaml_wait(self, y: os.stat_result) -> float:
        """Seconds to hold a YAML found without its meta; 0 to ingest it (its meta is written).

        A YAML written moments ago: a tool writing the pair (unzip, scp, git checkout or rebase)
        is likely to bring its meta next. Ingested at once, it got a new id and a meta written
        by us; the real meta then replaced it, and the store recorded a junk blueprint created
        and deleted (which sync pushed), or git refused the next checkout over the meta we had
        left. Its age counts from its last status change too (a rename sets st_ctime; on
        Windows that field is the creation time, also "now" for a tool's temp file): sync tools
        (Syncthing, Dropbox, rsync -t) give the file the other device's older mtime, so an
        mtime-only age let the lone YAML through at once. An mtime in the future (the other
        device's clock ahead) says nothing of when the file changed here: it made the age
        negative, and the YAML went through at once all the same.
        """
        wall = time.time()
        age = wall - (y.st_ctime if y.st_mtime > wall else max(y.st_mtime, y.st_ctime))
        return self.write_quiet_s - age if 0 <= age < self.write_quiet_s else 0.0

    def _yaml_as_recorded(self, key: str, y: os.stat_result) -> bool:
        """Whether the YAML at ``key`` has the stat the live row there recorded (unchanged)."""
        with self.store.index.read() as cur:
            rows = cur.execute(
                "SELECT yaml_size, yaml_mtime_ns, yaml_ctime_ns, yaml_ino FROM blueprints "
                "WHERE path = ? AND deleted = 0",
                (key,),
            ).fetchall()
        return bool(rows) and fs.stat_unchanged(y, *rows[0])

    def _copy_wait(self, key: str, y: os.stat_result) -> float:
        """Seconds to hold a pair that arrived less than the delete grace ago and would be taken
        for a copy of a live pair now (``Reconciler.copied_from``); 0 to ingest it.

        A sync tool (Syncthing, and others that do the same) applies a move made on another
        device as "write the pair at the new path, then delete the old one", the delete often
        well past the settle window. Taken at once, the new pair found the old one still live
        with its id, and the copy rule gave it a new id and rewrote its meta; the old id was
        then recorded deleted (history split, sync pushed a delete and a create, the rewritten
        meta went back to the other device). Held until the grace is over, the ingest finds the
        old pair gone (a move: id and history kept, an edit a new revision) or still there (a
        copy, as before). The age counts from the pair's last status change (a rename into
        place or a write sets it; sync tools set the other device's older mtime).
        """
        try:
            m = os.stat(self.root / fs.meta_path_for(key), follow_symlinks=False)
        except OSError:
            return 0.0
        age = time.time() - max(y.st_ctime, m.st_ctime)
        if not 0 <= age < self.grace_s:
            return 0.0
        with self.store.index.read() as cur:
            if self._copies.copied_from(cur, key) is None:
                return 0.0
        return self.grace_s - age

    def _judge_ahead(self, items: Sequence[tuple[str, bool]]) -> None:
        """Run the app's validator on the due files before the batch takes the write lock (a
        slow validator held every other process's writes up). A file that changes before its
        ingest reads it is judged again there (the verdict is kept by the bytes judged); one
        that cannot be read or parsed here is left to the ingest, which reports it. A file
        whose bytes are the ones recorded (the echo of this store's own save, a touch) is not
        judged, when the row holds this validator's verdict on them: its ingest keeps that
        verdict. Only then: a touch or a hand edit of the meta file alone of a blueprint another
        process recorded (the CLI, a daemon without the validator: judged by none) was judged
        inside the batch's transaction, the YAML being the one recorded."""
        store = self.store
        if store.validator is None:
            return
        for rel, _ in items:
            try:
                raw = fs.read_regular(self.root / rel, store.limits.max_bytes)
                if sha256_hex(raw) != self._recorded_verdict_on(rel):
                    store._judge_ahead(raw)
            except (LocalStoreError, OSError):
                continue

    def _recorded_verdict_on(self, key: str) -> str | None:
        """The sha256 of the YAML the live row at ``key`` recorded when that row holds this
        store's validator's verdict on it (BlueprintStore._row_verdict_holds), else None."""
        with self.store.index.read() as cur:
            rows = cur.execute(
                "SELECT yaml_sha256 FROM blueprints WHERE path = ? AND deleted = 0 "
                "AND flagged IS NULL AND judged_by IS ?",
                (key, self.store.validator_name),
            ).fetchall()
        return str(rows[0][0]) if rows else None

    def _indexed(self, key: str) -> bool:
        # By the path itself, not its key: a row core v11 kept under a key of its own
        # (index._v11_path_keys) is indexed at its path all the same.
        with self.store.index.read() as cur:
            rows = cur.execute(
                "SELECT 1 FROM blueprints WHERE path = ? AND deleted = 0",
                (key,),
            ).fetchall()
        return bool(rows)

    def _ingest_batch(self, items: Sequence[tuple[str, bool]]) -> None:
        rec = Reconciler(self.store)
        failed: list[tuple[str, BaseException]] = []
        vanished: list[str] = []
        # Failed paths that were taking a blueprint from another path (rel: its id), and the
        # deletes kept back for such a move (old path, the moved path that failed).
        moves: dict[str, str] = {}
        held: list[tuple[str, str]] = []
        self._judge_ahead(items)
        try:
            with self.store.index.write():
                for rel, may_delete in items:
                    mark = len(rec.events)
                    try:
                        with self.store.index.write() as cur:
                            if may_delete and (mover := self._held_for_move(cur, rel, moves)):
                                held.append((rel, mover))
                                continue
                            # An event (or a rescan) brought this path here: its stat alone
                            # does not prove the content is what the index holds.
                            if not rec.ingest_locked(
                                cur, rel, may_delete=may_delete, trust_stat=False
                            ):
                                vanished.append(rel)
                    except StoreClosedError:
                        raise
                    # (Anything else too: a bug for one path must not stop the others.)
                    except Exception as exc:
                        del rec.events[mark:]
                        if rec.moving is not None:
                            moves[rel] = rec.moving
                        if self.store.index.conn.getautocommit():
                            # SQLite rolled the whole batch back (it does on SQLITE_FULL): the
                            # paths before this one are undone, and each one after it would
                            # commit on its own, its event then never published.
                            raise _BatchLost(exc) from exc
                        if _not_found(exc) and not os.path.lexists(self.root / rel):
                            # The file went away while it was read (a git checkout removing
                            # what it had just written): a vanish, checked again after its
                            # grace, not a failure (a WARNING and DEGRADED on every checkout).
                            vanished.append(rel)
                            continue
                        failed.append((rel, exc))
        except StoreClosedError:
            raise
        except (OSError, LocalStoreError, apsw.Error, _BatchLost) as exc:
            # The batch's own transaction (begin or commit), or lost: every path in it failed.
            cause = exc.cause if isinstance(exc, _BatchLost) else exc
            failed = [(rel, cause) for rel, _ in items]
            rec.events.clear()
            vanished = []
            held = []
        self.stats.batches += 1
        self.stats.ingested += len(items) - len(failed)
        now = time.monotonic()
        failed_paths = {rel for rel, _ in failed}
        for rel, _ in items:
            if rel not in failed_paths:
                self._forget_failure(rel)
        for rel in vanished:
            self._vanish(rel, now)
        for rel, error in failed:
            self._retry_later(rel, now, error)
            if rel in moves:
                self._failing[rel].moving = moves[rel]
        for rel, mover in held:
            failing = self._failing.get(mover)
            if failing is None:  # (gone since: nothing holds the delete back any more)
                self._vanish(rel, now)
                continue
            failing.held.add(rel)
            log.info(
                "keeping %s: its blueprint moved to %s, which cannot be indexed yet",
                rel,
                mover,
            )
        self._update_ingest_problem()
        for ev in rec.events:
            self.stats.events[ev.kind] = self.stats.events.get(ev.kind, 0) + 1
        self.store.events.publish(rec.events)

    def _held_for_move(self, cur: Any, rel: str, moves: dict[str, str]) -> str | None:
        """The moved path whose failed ingest keeps the delete of ``rel`` back (its blueprint's
        files moved there; ``moves`` are this batch's), None if nothing does.

        Such a blueprint stays at its old path, its meta (perhaps with hand edits) with it,
        until the move is indexed or its file is gone (``_forget_failure``; a rescan finds the
        old path again meanwhile). Deleted after its grace, as before, its old meta was removed
        and its id lost: the moved YAML, indexed later, got a new one without those edits.
        """
        rows = cur.execute(
            "SELECT id FROM blueprints WHERE path = ? AND deleted = 0", (rel,)
        ).fetchall()
        if not rows:
            return None
        bp_id = str(rows[0][0])
        for path, moving in moves.items():
            if moving == bp_id:
                return path
        for path, failing in self._failing.items():
            if failing.moving == bp_id and path != rel:
                return path
        return None

    def _retry_later(self, rel: str, now: float, exc: BaseException) -> None:
        """Schedule the next try of a path whose ingest failed, backing off; give up after
        ``MAX_FAILURES`` tries (a rescan or a new event tries again; see ``GIVE_UP_RESCAN_S``).

        The count lives in ``_failing``: ``_PathState`` is dropped when a path is taken for
        ingest, so keeping it there made every retry the first (0.1 s, forever).
        """
        self.stats.failures += 1
        failing = self._failing.setdefault(rel, _Failing())
        failing.tries += 1
        failing.error = _describe(exc)
        if isinstance(exc, NewerIndexError):
            # A newer localstore upgraded the index under this process: no write of this code
            # will be taken again, so no retry (five tries per edit, then a rescan every 30 s
            # to 5 min, each logged, for as long as the process ran). The edit stays in the
            # file, and the newer version's reconcile records it; the owner of the store stops
            # on it (the daemon's tick: Index.newer_version()). A later change or rescan still
            # tries, at most one line a minute.
            failing.tries = max(failing.tries, MAX_FAILURES)
            self._log_failure(
                "newer",
                "cannot index %s: %s; it stays in the file for the newer version to record",
                rel,
                failing.error,
                exc=exc,
            )
            return
        if failing.tries < MAX_FAILURES:
            first, most = RETRY_S
            delay = _doubling(first, most, failing.tries - 1)
            self._state_for(rel, now).due = now + delay
            self._log_failure(
                "retry",
                "cannot index %s yet (try %d): %s; retrying in %.2g s",
                rel,
                failing.tries,
                failing.error,
                delay,
                exc=exc,
            )
            return
        # Given up: off the pending list (the worker sleeps; wait_idle answers), still failing.
        # The file still differs from the index, so the rescan brought forward here finds it.
        first, most = GIVE_UP_RESCAN_S
        delay = min(self._interval(), _doubling(first, most, failing.tries - MAX_FAILURES))
        self._next_rescan = min(self._next_rescan, now + delay)
        self._log_failure(
            "give-up",
            "giving up on %s for now after %d tries (%s); a rescan in %.0f s tries again, "
            "and so does its next change",
            rel,
            failing.tries,
            failing.error,
            delay,
            exc=exc,
        )

    def _forget_failure(self, rel: str) -> bool:
        """``rel`` needs no retry any more (indexed, or nothing to index); True if it failed."""
        failing = self._failing.pop(rel, None)
        if failing is None:
            return False
        # The move is resolved (indexed: its old path has nothing left to delete; or its file
        # is gone): the deletes it held back are looked at again, after their grace.
        now = time.monotonic()
        for old in failing.held:
            self._vanish(old, now)
        if not self._failing:
            log.info("indexing works again: every blueprint that failed is indexed")
        return True

    def _update_ingest_problem(self) -> None:
        """The DEGRADED reason while some path cannot be indexed (built here, read anywhere)."""
        if not self._failing:
            self._ingest_problem = None
            return
        rel, failing = next(iter(self._failing.items()))
        more = f" and {len(self._failing) - 1} more blueprint(s)" if len(self._failing) > 1 else ""
        when = (
            "retrying"
            if any(k in self._pending for k in self._failing)
            else "tried again at the next rescan or change"
        )
        self._ingest_problem = f"cannot index {rel}{more}: {failing.error} ({when})"

    def _log_failure(self, kind: str, msg: str, *args: object, exc: BaseException) -> None:
        """Log one ingest failure, at most once per ``FAILURE_LOG_S`` per kind (else DEBUG)."""
        now = time.monotonic()
        if now < self._log_next.get(kind, 0.0):
            self._log_skipped[kind] = self._log_skipped.get(kind, 0) + 1
            log.debug(msg, *args)
            return
        skipped = self._log_skipped.pop(kind, 0)
        if skipped:
            msg += f" ({skipped} more like this in the last {FAILURE_LOG_S:.0f} s)"
        self._log_next[kind] = now + FAILURE_LOG_S
        unexpected = not isinstance(exc, OSError | LocalStoreError | apsw.Error)
        # An unexpected exception is a bug: its traceback is what a report needs.
        log.log(
            logging.ERROR if kind == "give-up" or unexpected else logging.WARNING,
            msg,
            *args,
            exc_info=exc if unexpected else None,
        )

    # -- rescans -----------------------------------------------------------------------------------

    def _diff(self) -> _Diff:
        rec = Reconciler(self.store)
        with self.store.index.read() as cur:
            indexed = {
                str(r[0]): r[1:]
                for r in cur.execute(
                    "SELECT path, yaml_size, yaml_mtime_ns, yaml_ctime_ns, yaml_ino, meta_size, "
                    "meta_mtime_ns, meta_ctime_ns, meta_ino, rid FROM blueprints WHERE deleted = 0"
                )
            }
        scan, unlistable, denied = self._scan(rec, indexed)
        changed = []
        for rel, y in scan.yamls.items():
            m = scan.metas.get(fs.meta_path_for(rel))
            known = indexed.get(rel)
            if (
                known is None
                or m is None
                or not fs.stat_unchanged(y, *known[:4])
                or not fs.stat_unchanged(m, *known[4:8])
            ):
                changed.append(rel)
        # Rows of a core v8 index with no inode yet, stamped as the open's reconcile does: a
        # store opened without one (`localstore watch`, an app's reconcile=False) left them
        # unstamped, and a same-tick rename over them went unseen until an open reconciled.
        unstamped = {p: k[8] for p, k in indexed.items() if k[3] is None or k[7] is None}
        if unstamped:
            stamp_inodes(self.store, scan, unstamped, set(changed))
        # Under a folder that could not be listed a blueprint is unknown, not deleted.
        missing = [
            p
            for p in indexed
            if p not in scan.yamls and not any(p.startswith(u) for u in unlistable)
        ]
        changed.sort()
        gone = {ino for p in missing if (ino := indexed[p][3]) is not None}
        moved_first(changed, lambda rel: fs.ino_key(scan.yamls[rel].st_ino), gone)
        return _Diff(
            scanned=len(scan.yamls),
            changed=changed,
            missing=sorted(missing),
            orphans=rec._orphan_metas(scan),
            stale=[t for t in rec._stale_temps(scan) if _FENCE_PREFIX not in t],
            unlistable=unlistable,
            denied=denied,
        )

    def _scan(self, rec: Reconciler, indexed: Container[str]) -> tuple[_Scan, list[str], list[str]]:
        """``Reconciler.scan``, except that folders it cannot list are returned, not raised.

        The reconciler's own full pass still raises on them (it would take their blueprints for
        deleted); the watcher keeps running, reports them and leaves their blueprints alone.
        """
        errors: list[tuple[str, OSError]] = []
        scan = _Scan()
        # (The watcher's rules, not the reconciler's fresh read of the ignore file: that file
        # may be half saved; see _rules_event.)
        for rel, st in fs.walk_blueprint_files(self.root, self._ignore, unlistable=errors):
            if rel.endswith(fs.TEMP_SUFFIX):
                scan.temps[rel] = st
            elif rel.endswith(fs.YAML_SUFFIX):
                if rel in indexed or _canonical(rel):
                    scan.yamls[rel] = st
            else:
                scan.metas[rel] = st
        unlistable = sorted({prefix for prefix, _ in errors})
        denied = sorted({p for p, exc in errors if exc.errno in (errno.EACCES, errno.EPERM)})
        if unlistable != self._unlistable:
            for prefix, exc in errors:
                log.warning(
                    "cannot list %s (%s); its blueprints are left as they are",
                    prefix or ".",
                    exc.strerror or exc,
                )
        return scan, unlistable, denied

    def _rescan_into_pending(self, reason: str, done: queue.SimpleQueue[Any] | None) -> None:
        started = time.monotonic()
        root_ok = self._check_observer()
        self._rescan_wanted = None
        if not root_ok:
            # An empty listing would mark every blueprint missing. The health check rescans once
            # the folder is back.
            self._next_rescan = time.monotonic() + self._interval()
            log.warning("rescan (%s) skipped: %s", reason, self._root_problem)
            if done is not None:
                done.put(WatcherError(f"cannot rescan: {self._root_problem}"))
            return
        self._look_at_rules(time.monotonic())
        diff = self._diff()
        now = time.monotonic()
        for rel in diff.changed:
            self._found_by_rescan(rel, now, missing=False)
        for rel in diff.missing:
            self._found_by_rescan(rel, now, missing=True)
        # A failed path the rescan does not find different (its file was put back, or it was
        # indexed some other way) has nothing left to index.
        for rel in [k for k in self._failing if k not in self._pending]:
            self._forget_failure(rel)
        self._update_ingest_problem()
        if diff.stale:
            from localstore.store import CheckReport

            # (Kept aside, not removed, if one holds an interrupted save's only copy.)
            sweeper, swept = Reconciler(self.store), CheckReport()
            for rel in diff.stale:
                sweeper.clear_stale_temp(rel, swept)
        if diff.orphans:
            log.info("meta files without their YAML: %s", ", ".join(diff.orphans[:10]))
        readable = [
            p for p in self._unlistable if p not in diff.unlistable and (self.root / p).is_dir()
        ]
        self._unlistable, self._denied = diff.unlistable, diff.denied
        if readable and self._observer is not None:
            # watchdog skipped their watches while it could not read them (it drops EACCES)
            # and does not take them later by itself: the observer is restarted to take them
            # (the restart rescans). Without it, edits there waited for the timer rescan.
            log.warning(
                "%s can be read again; watching it", ", ".join(p or "." for p in readable[:5])
            )
            self._rewatch = True
            self._next_health = 0.0
        self._step_error = None
        self._errors_in_row = 0
        self.stats.rescans += 1
        self._last_rescan_s = time.monotonic() - started
        if self._unwatched or self._unwatched_suspects:
            self._check_watches()  # a folder deleted since, or a limit raised
        self._next_rescan = time.monotonic() + self._interval()
        log.debug(
            "rescan (%s): %d changed, %d missing", reason, len(diff.changed), len(diff.missing)
        )
        if done is not None:
            done.put(self._report(diff, started))

    def _interval(self) -> float:
        """Seconds between timer rescans: shorter while some folder is not watched, and on a
        network or FUSE file system (stretched to ten times a rescan's duration, so a big tree
        costs at most a tenth of a core)."""
        interval = self.rescan_interval_s
        if self._unwatched or self._observer is None:
            interval = min(interval, max(LIMITED_RESCAN_S, 10 * self._last_rescan_s))
        if self.remote:
            interval = min(interval, self._remote_interval())
        return interval

    def _remote_interval(self) -> float:
        stretched = max(self.remote_rescan_interval_s, 10 * self._last_rescan_s)
        return min(self.rescan_interval_s, stretched)

    def _detect_filesystem(self) -> None:
        """Decide whether inotify can be trusted for this folder (see ``filesystem_type``)."""
        fstype = filesystem_type(self.root)
        setting = self._remote_setting
        remote = is_remote_filesystem(fstype) if setting == "auto" else setting == "remote"
        changed = (fstype, remote) != (self.filesystem, self.remote)
        self.filesystem, self.remote = fstype, remote
        if not changed:
            return
        if remote:
            log.warning("%s", self.notice)
        elif is_remote_filesystem(fstype):
            log.info(
                "the blueprints folder %s is on %s, but remote_fs is local: edits made on other "
                "machines are found only by the rescan every %.0f s",
                self.root,
                fstype,
                self.rescan_interval_s,
            )

    def _check_watches(self) -> None:
        """Find the folders inotify does not watch; report them and rescan them more often.

        watchdog 7 skips a sub-folder whose watch the kernel refuses (ENOSPC: the user's
        ``max_user_watches`` is used up, often by an IDE or an indexer) without a word, so the
        watches are read back from the kernel (/proc/self/fdinfo) and compared with the folders
        a rescan walks. A folder must be missing at two looks (one health check apart): watchdog
        adds the watch of a new folder a moment after it appears.

        While folders are unwatched, each look (after every rescan) also asks the kernel whether
        their watches are free now (``_watches_free``: another program closed, or the limit was
        raised); if so the observer is restarted to take them.
        """
        self._watch_check_due = False
        if self._observer is None:
            # Rescan-only mode: nothing is watched and _limit_problem says why; looked at once
            # the observer is back (it sets _watch_check_due).
            self._watch_check_due = True
            return
        watched = _inotify_watched()
        if watched is None:
            return  # no /proc: nothing to compare with (and no inotify limits to report)
        folders = _folders(self.root, self._ignore)
        missing = {rel for ident, rel in folders.items() if ident not in watched}
        confirmed = sorted(missing & (self._unwatched_suspects | set(self._unwatched)))
        self._unwatched_suspects = missing - set(confirmed)
        if self._unwatched_suspects:
            self._watch_check_due = True  # looked at again at the next health check
        was = bool(self._unwatched)
        self._unwatched = confirmed
        if not confirmed:
            if was:
                log.info("every folder is watched again")
            self._watch_problem = None
            self._rewatch_delay = 0.0
            return
        limit = _watch_limit()
        if not was:
            self._next_rescan = min(self._next_rescan, time.monotonic() + self._interval())
            log.error(
                "%d folder(s) under %s are not watched (%s): the inotify watch limit "
                "(fs.inotify.max_user_watches = %s) is used up; rescanning every %.0f s instead",
                len(confirmed),
                self.root,
                ", ".join(p or "." for p in confirmed[:5]),
                limit,
                self._interval(),
            )
        elif time.monotonic() >= self._next_rewatch and _watches_free(
            [self.root / rel for rel in confirmed]
        ):
            # The kernel has the watches now (an IDE closed, or the limit was raised as the
            # problem says): the health check restarts the observer to take them. Backing off
            # keeps a folder watchdog skips for another reason from restarting it every rescan.
            first = max(LIMITED_RESCAN_S, self._interval())
            self._rewatch_delay = min(REWATCH_MAX_S, self._rewatch_delay * 2 or first)
            self._next_rewatch = time.monotonic() + self._rewatch_delay
            self._rewatch = True
            self._watch_check_due = True
            self._next_health = 0.0
        shown = ", ".join(p or "." for p in confirmed[:5])
        more = f" and {len(confirmed) - 5} more" if len(confirmed) > 5 else ""
        self._watch_problem = (
            f"{len(confirmed)} folder(s) are not watched ({shown}{more}): the inotify watch "
            f"limit (fs.inotify.max_user_watches = {limit}) is used up, by this or other "
            f"programs; edits there are found by a rescan every {self._interval():.0f} s; "
            "raise it: sudo sysctl fs.inotify.max_user_watches=524288 (and in /etc/sysctl.d/ "
            "to keep it)"
        )

    @staticmethod
    def _report(diff: _Diff, started: float) -> RescanReport:
        return RescanReport(
            scanned=diff.scanned,
            changed=len(diff.changed),
            missing=len(diff.missing),
            seconds=time.monotonic() - started,
        )

    def _rescan_now(self) -> RescanReport:
        """Apply the differences at once (the watcher is not running, so nothing is mid-save)."""
        started = time.monotonic()
        problem, _ = self._root_status()
        if problem is not None:
            raise WatcherError(f"cannot rescan: {problem}", hint="bring the folder back first")
        diff = self._diff()
        items = [(rel, False) for rel in diff.changed] + [(rel, True) for rel in diff.missing]
        for i in range(0, len(items), self.batch_size):
            self._ingest_batch(items[i : i + self.batch_size])
        self._pending.clear()
        self._gated.clear()
        if diff.orphans or diff.stale:
            self.store.reconcile()
        self.stats.rescans += 1
        return self._report(diff, started)


def change_settling(watcher: Watcher, key: str, stats: Sequence[os.stat_result]) -> bool:
    """Whether a change to ``key`` (a YAML path; ``stats``: its files' ``lstat``s) is still the
    watcher's to record: it has the path pending, or the change is younger than its write-quiet
    period (a write without a close waits that long there; its events may not have reached the
    worker yet). ``BlueprintStore.load`` then leaves the revision to it: read in an in-place
    save's pause, half a file that parses was recorded as a revision."""
    # (``_pending`` is the worker's; a membership test from another thread is one atomic dict
    # lookup, and a stale answer only moves the decision to the age test below.)
    # (As the worker ages a lone YAML; a daemon's watcher is judged the same way from another
    # process, by BlueprintStore.load and the open's reconcile: fs.changed_within.)
    return key in watcher._pending or fs.changed_within(stats, watcher.write_quiet_s)


def running_watcher(store: BlueprintStore) -> Watcher | None:
    """A started, not stopped and not failed Watcher of ``store`` (this store object), or None."""
    with _STARTED_LOCK:
        started = list(_STARTED)
    for watcher in started:
        if watcher.store is store and watcher.state in (
            WatcherState.RUNNING,
            WatcherState.DEGRADED,
        ):
            return watcher
    return None


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


def _doubling(first: float, most: float, doublings: int) -> float:
    """``first`` doubled ``doublings`` times, at most ``most``: every back-off of the watcher.

    The exponent is bounded (as sync's ``backoff_delay``): ``2 ** 1024`` does not fit a float, and
    the OverflowError it raised after ~1,025 failures in a row (about 17 hours of a full disk at
    the 60 s step back-off) ended the worker thread.
    """
    return min(most, first * 2.0 ** min(max(0, doublings), 64))


def _describe(exc: BaseException) -> str:
    """An ingest error as a status page shows it: "the disk is full", not "FullError: ..."."""
    if isinstance(exc, apsw.Error):
        return str(map_apsw_error(exc, "cannot write the index"))
    if isinstance(exc, LocalStoreError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"


def _not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is (or was raised from) a file-not-found error."""
    seen: BaseException | None = exc
    for _ in range(5):  # a mapped error keeps the OSError as its cause
        if seen is None:
            return False
        if isinstance(seen, FileNotFoundError):
            return True
        seen = seen.__cause__
    return False


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


def _ignore_file_sig(root: Path) -> tuple[int, int, int, int] | None:
    """Size, mtime, change time (ns) and inode of the root's ignore file; None if it has none."""
    try:
        st = os.stat(root / fs.IGNORE_FILE_NAME)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _canonical(rel: str) -> bool:
    """Whether ``rel`` is a path the store would save under (anything else is not tracked)."""
    try:
        return fs.normalize_path(rel) == rel
    except (LocalStoreError, ValueError):
        # ValueError: a name that is not valid UTF-8 (surrogate escapes) fails to encode; it is
        # not a blueprint the store could hold, and it must not stop the watcher.
        return False


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


# -- file systems inotify cannot fully watch ---------------------------------------------------------

# statfs f_type magic numbers (linux/magic.h and the file systems' own headers) of file systems
# whose files other machines (or another kernel: a VM's host) change: inotify reports only the
# changes made through this kernel. FUSE covers sshfs, rclone, gvfs, virtiofs and the like.
_REMOTE_MAGIC = {
    0x6969: "nfs",
    0x517B: "smbfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x65735546: "fuse",
    0x01021997: "9p",
    0x00C36400: "ceph",
    0x5346414F: "afs",
    0x6B414653: "afs",
    0x73757245: "coda",
    0x564C: "ncpfs",
    0x786F4256: "vboxsf",
    0x7461636F: "ocfs2",
    0x01161970: "gfs2",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
    0x19830326: "beegfs",
    0x20030528: "orangefs",
}
_LOCAL_MAGIC = {
    0xEF53: "ext4",
    0x9123683E: "btrfs",
    0x58465342: "xfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlay",
    0x2FC12FC1: "zfs",
    0xF2F52010: "f2fs",
    0x4D44: "vfat",
    0x2011BAB0: "exfat",
    0x5346544E: "ntfs",
    0x7366746E: "ntfs3",
    0x9FA0: "proc",
    0x62656572: "sysfs",
    0x3434: "nilfs2",
    0xCA451A4E: "bcachefs",
}
# File system type names as /proc/self/mountinfo gives them; "fuse.<name>" (sshfs, rclone,
# gvfsd-fuse...) counts too, except fuseblk, a FUSE driver of a local disk (ntfs-3g).
_REMOTE_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "smb2",
        "9p",
        "virtiofs",
        "fuse",
        "ceph",
        "afs",
        "coda",
        "ncpfs",
        "vboxsf",
        "vmhgfs",
        "davfs",
        "glusterfs",
        "lustre",
        "gpfs",
        "ocfs2",
        "gfs2",
        "beegfs",
        "orangefs",
        "pvfs2",
    }
)
_MOUNTINFO = Path("/proc/self/mountinfo")


def filesystem_type(path: Path) -> str | None:
    """The type of the file system ``path`` is on ("ext4", "nfs4", "fuse.sshfs"...), or None.

    From /proc/self/mountinfo (the mount that holds ``path``: its device, else the longest mount
    point above it), which names FUSE file systems by their driver; else from statfs(2)'s magic
    number (no /proc); None when neither tells (not Linux, or ``path`` is gone).
    """
    try:
        real = os.path.realpath(path)
        dev = os.stat(real).st_dev
    except OSError:
        return None
    found = _mount_fstype(real, dev)
    if found is not None:
        return found
    magic = _statfs_magic(real)
    if magic is None:
        return None
    return _REMOTE_MAGIC.get(magic) or _LOCAL_MAGIC.get(magic) or f"0x{magic:x}"


def is_remote_filesystem(fstype: str | None) -> bool:
    """Whether files on ``fstype`` can change without an inotify event (edits made by other
    machines, or by a VM's host). ``fuseblk`` (ntfs-3g on a local disk) is local."""
    if fstype is None:
        return False
    return fstype in _REMOTE_TYPES or fstype.startswith("fuse.")


def remote_fs_notice(settings: Settings) -> str | None:
    """What a watcher of this home will say about its folder's file system (for ``doctor``):
    None when inotify sees every change there (or ``remote_fs`` is ``local``)."""
    root = settings.paths.blueprints
    while not root.exists() and root != root.parent:
        root = root.parent  # not created yet: it will be made on the file system above it
    fstype = filesystem_type(root)
    setting = settings.remote_fs
    remote = is_remote_filesystem(fstype) if setting == "auto" else setting == "remote"
    if not remote:
        return None
    interval = min(settings.rescan_interval_s, settings.remote_rescan_interval_s)
    return _remote_notice(settings.paths.blueprints, fstype, setting, interval)


def _remote_notice(root: Path, fstype: str | None, setting: str, interval: float) -> str:
    why = (
        f"on a network or FUSE file system ({fstype})"
        if setting == "auto"
        else f"on {fstype or 'a file system'} set as remote (remote_fs: remote)"
    )
    return (
        f"the blueprints folder {root} is {why}: inotify does not report edits made on other "
        f"machines, so they are found by a rescan every {interval:.3g} s "
        "(remote_rescan_interval_s; remote_fs: local if only this machine edits it)"
    )


def _mount_fstype(real: str, dev: int) -> str | None:
    """The mountinfo type of the mount holding ``real`` (an absolute, resolved path)."""
    if sys.platform == "win32":  # (no /proc there)
        return None
    try:
        text = _MOUNTINFO.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None
    by_dev: tuple[int, str] | None = None
    by_prefix: tuple[int, str] | None = None
    for line in text.splitlines():
        # 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            mount_point = _unescape_mount(fields[4])
            major, minor = (int(n) for n in fields[2].split(":"))
            fstype = fields[sep + 1]
        except (ValueError, IndexError):
            continue
        if not (
            real == mount_point
            or mount_point == "/"
            or real.startswith(mount_point.rstrip("/") + "/")
        ):
            continue
        # Later lines mount over earlier ones at the same point: >= keeps the last.
        if by_prefix is None or len(mount_point) >= by_prefix[0]:
            by_prefix = (len(mount_point), fstype)
        if os.makedev(major, minor) == dev and (by_dev is None or len(mount_point) >= by_dev[0]):
            by_dev = (len(mount_point), fstype)
    # A btrfs sub-volume has a device number of its own, unlike its mount: the prefix then.
    best = by_dev or by_prefix
    return best[1] if best is not None else None


def _unescape_mount(field: str) -> str:
    """A mountinfo path field with its octal escapes (space, tab, newline, backslash) undone."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _statfs_magic(path: str) -> int | None:
    """statfs(2)'s f_type for ``path`` (via ctypes: os.statvfs does not give it), or None."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        statfs = libc.statfs
    except (OSError, AttributeError):
        return None
    # struct statfs starts with f_type (a long on every Linux ABI but s390x); 256 bytes hold it all.
    buf = ctypes.create_string_buffer(256)
    if statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF
