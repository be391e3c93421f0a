"""The Watcher's state: the records it keeps, and the constructor that sets up what its parts share.

``Watcher`` is built in layers, each a class in a module of its own that adds one part of the
work to the one below it: ``_WatcherBase`` (here: the state), ``_watch_health._FolderHealth``
(the folder and its observer), ``_watch_events._EventIntake`` (raw events to due times),
``_watch_ingest._Ingest`` (due paths into the index), ``_watch_due._DuePaths`` (which paths are
due, deletes held back), ``_watch_rescan._Rescans`` (the folder compared with the index), and
``watcher.Watcher`` (lifecycle, synchronous steps, the worker loop). A layer calls only what it
or a layer below it defines; the worker thread owns this state (see ``watcher``).
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore import files as fs
from localstore._inotify import _OverflowHook
from localstore._presence import WatchMark
from localstore._reconcile import Reconciler, RefusedPair

if TYPE_CHECKING:
    from localstore.store import BlueprintStore

# One logger for every part of the watcher: users and tests filter on its name.
log = logging.getLogger("localstore.watcher")
DEFAULT_WRITE_QUIET_MS = 1000
DEFAULT_BATCH_SIZE = 500


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


class _WatcherBase:
    """The Watcher's state, set up by its constructor; every layer above reads and writes it."""

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
        self.store = store
        self.root = Path(store.root)
        self._init_timing(
            store,
            settle_ms=settle_ms,
            delete_grace_ms=delete_grace_ms,
            rescan_interval_s=rescan_interval_s,
            write_quiet_ms=write_quiet_ms,
            batch_size=batch_size,
        )
        self._init_intake()
        self._init_rules(store)
        self._init_worker()
        self._init_folder_health()
        self._init_watches()
        self._init_step_memory()

    def _init_timing(
        self,
        store: BlueprintStore,
        *,
        settle_ms: int | None,
        delete_grace_ms: int | None,
        rescan_interval_s: float | None,
        write_quiet_ms: int,
        batch_size: int,
    ) -> None:
        """Set up the waits, intervals and batch size: the arguments given, else the settings."""
        s = store.settings
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

    def _init_intake(self) -> None:
        """Set up the counters, the lifecycle state, and the queue of events and due paths."""
        self.stats = WatcherStats()
        self._state = WatcherState.NEW
        self._state_lock = threading.Lock()
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: dict[str, _PathState] = {}

    def _init_rules(self, store: BlueprintStore) -> None:
        """Set up the ignore rules and the copy check that uses them."""
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

    def _init_worker(self) -> None:
        """Set up the worker's wake-ups, fences, timers, observer and failure."""
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

    def _init_folder_health(self) -> None:
        """Set up what the worker knows of the watched folder: its identity and its problems."""
        # Health (see WatcherState.DEGRADED); written by the worker only.
        self._root_problem: str | None = None
        # (st_dev, st_ino) of the folder being watched: a different folder at the same path (a
        # drive unmounted from under it, a restore) is not taken for the same one unchecked.
        self._root_id: tuple[int, int] | None = None
        # The folder's mark (see _reconcile_root.ROOT_MARK_NAME): an inode number can be handed out
        # again, so a recreated empty folder can have the old identity. None: not marked.
        self._root_mark: str | None = None
        # The identity of a folder taken for the same one without its mark (see _same_root): it
        # is not restarted or rescanned for the missing mark again.
        self._unmarked_ok: tuple[int, int] | None = None
        self._unlistable: list[str] = []
        self._denied: list[str] = []  # of those, the ones refused for permissions

    def _init_watches(self) -> None:
        """Set up the state of inotify's watches: folders not watched, and the watch limit."""
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

    def _init_step_memory(self) -> None:
        """Set up what steps remember: rescans, step errors, failing ingests, what was told."""
        self._last_rescan_s = 0.0
        self._step_error: str | None = None
        self._errors_in_row = 0
        # Paths whose ingest failed, oldest first; the problem text is built on the worker (other
        # threads read the string only, never the dict).
        self._failing: dict[str, _Failing] = {}
        self._ingest_problem: str | None = None
        # The new files refused with an ``invalid`` event this watcher published, by YAML path:
        # a rescan passes each by while its stats are the ones it was refused with (see
        # _Ingest._tell_once). Kept in memory: a new watcher tells each once more.
        self._told: dict[str, RefusedPair] = {}
        self._all_indexed = True
        self._log_next: dict[str, float] = {}
        self._log_skipped: dict[str, int] = {}

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


def _ignore_file_sig(root: Path) -> tuple[int, int, int, int] | None:
    """Size, mtime, change time (ns) and inode of the root's ignore file; None if it has none."""
    try:
        st = os.stat(root / fs.IGNORE_FILE_NAME)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
