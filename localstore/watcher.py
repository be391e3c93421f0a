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

This module holds ``Watcher``'s lifecycle, its synchronous steps and the worker loop; the rest of
it is built in layers, each in a module of its own (``_watch_state`` lists them), and what it asks
of watchdog, inotify and the file system is in ``_inotify`` and ``_fstype``. Their public names
are re-exported here.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from localstore import files as fs
from localstore._fstype import filesystem_type, is_remote_filesystem, remote_fs_notice
from localstore._inotify import (
    OVERFLOW_LOGGERS,
    InotifyUsage,
    _identity,
    _keep_overflow_warnings,
    _uid,
    _watch_error,
    _WatchLimitError,
    inotify_limits,
    inotify_usage,
)
from localstore._presence import WatchMark, WatchPeriods
from localstore._reconcile import ROOT_MARK_SETTING
from localstore._watch_events import FENCE_RELAY_S
from localstore._watch_health import HEALTH_CHECK_S
from localstore._watch_ingest import MAX_FAILURES, _doubling  # noqa: F401  (MAX_FAILURES: re-exported)
from localstore._watch_rescan import RescanReport, _Rescans
from localstore._watch_state import (  # noqa: F401  (DEFAULT_WRITE_QUIET_MS: re-exported)
    DEFAULT_WRITE_QUIET_MS,
    WatcherState,
    WatcherStats,
)
from localstore.errors import StoreClosedError, WatcherError
from localstore.events import Event

if TYPE_CHECKING:
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


# How long stopping for the store's close waits for the watcher's threads.
CLOSE_JOIN_S = 10.0
# Back-off of the rescan that follows a failed worker step (doubling from the first to the last).
ERROR_RESCAN_S = (0.5, 60.0)
# Started, not yet stopped watchers (see running_watcher): an app's in-process sync must not
# start a second watcher on a store the app already watches.
_STARTED: weakref.WeakSet[Watcher] = weakref.WeakSet()
_STARTED_LOCK = threading.Lock()
_MAX_DRAIN = 20_000


class Watcher(_Rescans):
    """Keeps a store's index in step with external edits of its blueprints folder.

    Lifecycle: ``start()``, ``stop()``, ``join()`` (or use it as a context manager); a watcher runs
    once. ``rescan()`` and ``wait_idle()`` are the synchronous steps tests and the daemon use instead
    of sleeping. Events reach ``store.subscribe`` subscribers (origin ``external``).
    """

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

    def stop(self) -> None:
        """Ask the watcher to stop (idempotent); ``join()`` waits for it. Nothing in a child
        forked from the watcher's process: its threads are the parent's, and go on there."""
        if self.store.index.forked:
            # The child shares the parent's inotify instance (one open file description):
            # stopping the observer here removed the parent's watches, and its editor edits
            # went unseen. (Nor may the parent's pid marks be freed from here.)
            return
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
