"""The background loop: its lifecycle (start, run, stop, join), wake-ups (local edits debounced,
remote hints, polls), pause and resume, and what a failed cycle leads to (backoff with jitter,
a slow retry while a person must act, a stop).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading

from localstore.errors import NewerIndexError
from localstore.events import Event
from localstore.store import _count_arg
from sync._engine_conditions import _local_condition
from sync._engine_core import WorkerState, _seconds_arg
from sync._engine_cycle import _EngineCycle
from sync._timefmt import span, span_clock
from sync.errors import (
    EngineStateError,
    RateLimitedError,
    SyncError,
    SyncLockedError,
    TransientError,
)

log = logging.getLogger("sync.engine")

# After an error only a person can fix (logged out, wrong project), retry this seldom.
ATTENTION_RETRY_S = 60.0
# A local condition that lasts (a full disk) is warned about again at most this often; the
# retries in between log at DEBUG (a retry a minute would otherwise fill the daemon's log).
CONDITION_LOG_EVERY_S = 600.0
# Set (True) on an error that ended the sync loop once the engine has logged it with its
# traceback: a threading.excepthook that logs (the daemon's) then logs no second copy.
LOGGED_ATTR = "_localstore_logged"


class _EngineLoop(_EngineCycle):
    """Run cycles on a thread (or the caller's) until stopped; back off after failures."""

    def start(self) -> None:
        """Run the loop on a background thread (once). Raises EngineStateError, SyncLockedError,
        and what starting the thread raised (the engine is then stopped and holds nothing)."""
        self._begin()
        thread = threading.Thread(target=self._loop, name="localstore-sync", daemon=True)
        try:
            thread.start()  # (RuntimeError at the process's thread limit)
        except BaseException:
            self._let_go()
            raise
        self._thread = thread

    def run(self) -> None:
        """Run the loop in this thread until :meth:`stop` (from another thread or a callback).

        Raises EngineStateError (not new), SyncLockedError (the lock is held elsewhere).
        """
        self._begin()
        self._loop()

    def stop(self) -> None:
        """Ask the loop to finish its current step and exit. Idempotent. Nothing in a child
        forked from the store's process: the loop is the parent's, and goes on there."""
        if self.store.index.forked:
            # (An atexit handler or a ``with`` block of the app's, run in a multiprocessing
            # worker.) The child has no loop thread to stop, and a parent thread holding
            # _cond at the fork (the loop picking its next wake-up, a hint asking for a sync)
            # left the child's copy taken for good: this waited for ever.
            return
        with self._cond:
            if self._worker is WorkerState.NEW:
                self._worker = WorkerState.STOPPED
            elif self._worker is WorkerState.RUNNING:
                self._worker = WorkerState.STOPPING
            self._cond.notify_all()

    def record_newer_index(self, exc: NewerIndexError) -> None:
        """Show in the status that a newer localstore upgraded the index under this process
        (state ``error``, ``last_error`` saying to restart with the newer localstore; its status
        listeners hear it), for an owner that saw it before a cycle met a refused write: an
        app's in-process sync, which stops this engine then. Nothing is written (it would be
        refused)."""
        self._record_error(exc)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background loop to exit; True when it has (or never ran)."""
        if timeout is not None:
            _seconds_arg("timeout", timeout)
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _begin(self) -> None:
        self.store.index.check_process()  # (a loop in a forked child: the parent's store)
        with self._cond:
            if self._worker is not WorkerState.NEW:
                raise EngineStateError(f"the engine is {self._worker.value}; it runs once")
            if self.lock is not None:
                if not self.lock.acquire(blocking=False):
                    raise SyncLockedError("another process is syncing this home")
                self._lock_held = True
            self._worker = WorkerState.RUNNING
            self._next_at = self.clock()
        try:
            self._unsubs.append(self.store.subscribe(self._on_store_event))
            try:
                self._unsubs.append(self.remote.subscribe(self._request_sync))
            except SyncError as exc:  # realtime is only a hint: polling covers for it
                log.warning("sync: realtime subscription failed (%s); polling only", exc)
        except BaseException:
            # Anything else (realtime could not start a thread at the process's limit): the
            # engine does not run, so it lets go of what it took. Left RUNNING, subscribed to
            # the store and holding the lock, it was one more store subscriber (and a held
            # sync lock) for each try of an owner that tries again (the daemon, every tick).
            self._let_go()
            raise

    def _let_go(self) -> None:
        """Let go of what _begin took (subscriptions, the lock) and mark the engine stopped."""
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()
        with self._cond:
            self._worker = WorkerState.STOPPED
            held, self._lock_held = self._lock_held, False
            self._cond.notify_all()
        if held and self.lock is not None:
            self.lock.release()

    def _loop(self) -> None:
        try:
            while self._wait_until_due():
                try:
                    self._attempt()
                finally:
                    self.cycle_running = False
        except BaseException as exc:
            # Only a bug gets here (_attempt catches each cycle's errors). Logged, so the log
            # file says why syncing stopped (the thread's own report goes to stderr only), and
            # marked so, so the daemon's threading.excepthook does not log the traceback again.
            log.critical("sync: the loop ended on an unexpected error", exc_info=True)
            with contextlib.suppress(AttributeError, TypeError):
                setattr(exc, LOGGED_ATTR, True)
            raise
        finally:
            # The loop's own thread lets go of what _begin took, whatever ended it.
            self._let_go()
            log.debug("sync loop stopped")

    def request_sync(self, delay: float = 0.0) -> None:
        """Wake the loop to sync after ``delay`` seconds (a command, a remote hint).

        This also cuts a backoff short; local edits (the store events the engine follows itself)
        do not, so a failing server is not hammered by every save. Raises StoreClosedError once
        the store is closed (nothing can sync any more).
        """
        self._check_store_open()
        self._request_sync(delay)

    def _request_sync(self, delay: float = 0.0) -> None:
        """request_sync() unchecked, for the remote's realtime hints and EmbeddedSync's follower:
        not an app's call, so one arriving as the store closes must not raise into the remote's
        thread (the loop finds the store closed and ends)."""
        _seconds_arg("delay", delay)
        self._wake(delay, urgent=True)

    def _wake(self, delay: float, *, urgent: bool) -> None:
        with self._cond:
            due = self.clock() + max(0.0, delay)
            if self._wake_at is None or due < self._wake_at:
                self._wake_at = due
            self._urgent = self._urgent or urgent
            self._cond.notify_all()

    def pause(self) -> None:
        """Stop syncing (the current step finishes) until resume().

        Status listeners hear of it on this thread (see subscribe_status). Raises
        StoreClosedError once the store is closed (nothing paused).
        """
        self._check_store_open()
        if self._mark_paused(True):
            self._notify_status()

    def resume(self) -> None:
        """Sync again, starting now.

        Status listeners hear of it on this thread (see subscribe_status). Raises what
        publishing the status raised (a listener makes it read the index), after waking the
        loop all the same; StoreClosedError once the store is closed (nothing resumed).
        """
        self._check_store_open()
        try:
            if self._mark_paused(False):
                self._notify_status()
        finally:
            # Woken whatever publishing did: a status read that failed (a locked or damaged
            # index) skipped this, and the un-paused engine slept until some later trigger.
            # The error still reaches the caller (the daemon logs it and says so in its reply).
            self._request_sync()

    def _mark_paused(self, paused: bool) -> bool:
        """Pause or un-pause without telling the status listeners; whether the status changed.

        For EmbeddedSync, which orders its pauses under a lock and tells the listeners once it
        has let go of it: one waiting for a thread that pauses would deadlock under that lock.
        """
        with self._cond:
            self._paused = paused
            self._cond.notify_all()
        return self._set_state("paused" if paused else "idle", progress=None, notify=False)

    def _on_store_event(self, event: Event) -> None:
        # Remote-origin changes are the engine's own applies; anything else is a local change.
        if event.origin != "remote" and event.kind != "conflict":
            self._wake(self.debounce_s, urgent=False)

    def _wait_until_due(self) -> bool:
        with self._cond:
            while True:
                if self._worker is not WorkerState.RUNNING:
                    return False
                if self._paused:
                    self._cond.wait()
                    continue
                now = self.clock()
                due = self._due()
                if due <= now:
                    self.cycle_running = True
                    self._wake_at = None
                    self._urgent = False
                    return True
                self._cond.wait(timeout=min(due - now, 3600.0))

    def _due(self) -> float:
        wake = self._wake_at if self._wake_at is not None else math.inf
        if self._failures and not self._urgent:
            return self._next_at  # backing off: a local edit does not cut the wait short
        return min(wake, self._next_at)

    def _attempt(self) -> None:
        try:
            self.sync_once()
        except Exception as exc:  # noqa: BLE001
            # The loop thread must survive anything; _on_failure logs each kind with its reason
            # (an unexpected one with its traceback).
            self._on_failure(exc)
            return
        if self._condition is not None:
            log.info("sync: %s; syncing again", self._condition.cleared)
            self._condition = None
        if self._offline_since is not None:
            log.info(
                "sync: the cloud answers again, after %s offline",
                span(span_clock() - self._offline_since),
            )
            self._offline_since = None
        self._stopped_for = None
        self._failures = 0
        self._next_at = self.clock() + self.poll_interval_s

    def _on_failure(self, exc: Exception) -> None:
        """Classify a failed cycle: stop, retry (with backoff) or wait for a person; log it."""
        if self._store_gone(exc):
            # The app closed the store (quitting): nothing can sync any more, and nothing failed.
            log.debug(
                "sync: the store was closed; the loop stops (%s: %s)", type(exc).__name__, exc
            )
            self.stop()
            return
        if self._worker is not WorkerState.RUNNING:
            log.debug("sync: the cycle cut short by stop(): %s", exc)
            return  # (the daemon's shutdown interrupts lock waits; the loop ends anyway)
        if isinstance(exc, NewerIndexError):
            # A newer localstore upgraded the index under this process: every write of this
            # code is refused from now on, so every retry would fail. It was an "unexpected
            # failure" with a traceback, retried with backoff for as long as the process ran.
            # The loop stops (each of the cycle's steps is a transaction, refused whole at its
            # BEGIN, and the next cycle resumes: sync_once), and the status says what to do.
            log.error("sync stopped: %s", self._last_error)
            self.stop()
            return
        if isinstance(exc, SyncError):
            self._after_failure(exc, exc.action)
            return
        condition = _local_condition(exc)
        if condition is None:
            log.exception("sync: unexpected failure; retrying with backoff")
            self._after_failure(exc, "retry")
            return
        delay = self._back_off(exc)
        now = self.clock()
        if condition is not self._condition or now - self._condition_warned_at >= (
            CONDITION_LOG_EVERY_S
        ):
            self._condition, self._condition_warned_at = condition, now
            log.warning("sync: %s; retrying in %.1fs", condition.describe(exc), delay)
        else:
            log.debug("sync: %s; retrying in %.1fs", condition.describe(exc), delay)

    def _back_off(self, exc: BaseException) -> float:
        """Count one more failure and schedule the retry; returns the delay."""
        self._failures += 1
        delay = self.backoff_delay(self._failures)
        if isinstance(exc, RateLimitedError) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        self._next_at = self.clock() + delay
        return delay

    def _after_failure(self, exc: BaseException, action: str) -> None:
        now = self.clock()
        if action in ("retry", "quarantine"):
            delay = self._back_off(exc)
            if not isinstance(exc, TransientError):
                log.info("sync: %s; retrying in %.1fs", exc, delay)
            elif self._offline_since is None:
                # Once per outage, and its end once (_attempt): a laptop offline for a night
                # wrote an INFO line per retry, hundreds, into every embedding app's log.
                self._offline_since = span_clock()
                log.warning(
                    "sync: the cloud cannot be reached (%s); retrying until it answers", exc
                )
            else:
                log.debug("sync: %s; retrying in %.1fs", exc, delay)
        else:
            # refresh_auth that failed twice, or tell_user: wait for a person, retry seldom.
            self._failures = 1
            self._next_at = now + max(self.poll_interval_s, ATTENTION_RETRY_S)
            if str(exc) == self._stopped_for:
                log.debug("sync still stopped until fixed: %s", exc)
            else:
                self._stopped_for = str(exc)
                log.warning("sync stopped until fixed: %s", exc)

    def backoff_delay(self, failures: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, capped."""
        # The exponent is bounded: 2 ** 1024 does not fit a float, and the OverflowError it
        # raised after ~14 hours offline (at the default base and cap) ended the loop thread.
        _count_arg("failures", failures)
        doublings = min(max(0, failures - 1), 64)
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2**doublings))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)
