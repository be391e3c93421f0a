"""The daemon: one process per home that watches, syncs and tells desktop apps what is going on.

``Daemon(settings).run()`` is what ``localstore daemon`` calls. In order, it:

1. takes the home lock (:class:`sync.embed.HomeLock`, an flock the kernel drops when the process
   dies, so a SIGKILLed daemon never blocks the next one) or refuses with LockHeldError;
2. opens the store (reconcile on open) and starts the watcher;
3. opens the cloud session (``localstore login``) and starts the sync engine; without a session,
   or without a keychain, it runs offline (watcher + control API, sync state ``offline``) and tries
   again when asked to sync and every ``RELOGIN_CHECK_S``;
4. serves the control API (:mod:`sync.control`) and writes ``state/daemon.json`` (pid, port,
   token; 0600, atomic) last, so a client that finds the file finds a daemon ready to answer;
5. waits for SIGTERM/SIGINT/SIGHUP, the control API's ``stop`` (or ``stop()``), then stops in reverse order within
   ``STOP_BUDGET_S``. A sync cycle in flight gets what is left of the budget to finish; if it
   does not, it is abandoned, which is safe because every sync step is resumable (the outbox is
   rebuilt from the index, pushes are idempotent by op id, the cursor commits with its page).

Store events (saved, deleted, moved, invalid, conflict), sync status changes and error log
records are forwarded to control API subscribers. Saves that other processes make through their own
``localstore.open()`` (an app next to the daemon) raise no event in the daemon's store, and its
watcher rightly sees them as echoes (the index already has them); so when another connection
committed (the index's ``data_version`` moved) the daemon looks for index rows with a newer op id
than it has seen, publishes those it did not publish itself, and wakes the engine to push them.
This costs one ``PRAGMA data_version`` per tick (no file I/O) and one indexed query per tick after
another connection's commit. Metrics are counters kept here plus gauges read
from the engine, the watcher and the server.

Its parts: the log (``sync._daemon_log``), the counters (``sync._daemon_metrics``) and the control
API's ops with the status and metrics they report (``sync._daemon_ops``, a base of Daemon).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from localstore import files as fs
from localstore._daemon_state import EXIT_HOME_GONE, PAUSED_DETAIL, read_pause
from localstore.config import Settings, home_name
from localstore.errors import LocalStoreError, NewerIndexError
from localstore.events import Event
from localstore.index import CORE_MIGRATIONS
from localstore.store import BlueprintStore
from localstore.watcher import DEFAULT_WRITE_QUIET_MS, Watcher
from sync._app_validator import AppValidator, load_app_validator
from sync._daemon_log import LOG_FILE, _ErrorForwarder, configure_logging, log_start_failure
from sync._daemon_metrics import DaemonMetrics, _MeteredEngine
from sync._daemon_ops import RELOGIN_CHECK_S, DaemonOps, _home_folder
from sync._follow import ForeignChanges, WatcherKeeper, close_remote, foreign_events, session_lost
from sync._keychain_watch import KeychainWatch, keychain_failure
from sync._local import offline_hint
from sync._timefmt import span_clock
from sync.control import ControlServer
from sync.embed import STATE_FILE, HomeLock, home_gone, lock_holder, remove_state, write_state
from sync.engine import SyncEngine, SyncStatus, WorkerState
from sync.errors import NotLoggedInError, SyncError
from sync.remote import Remote
from sync.session_marker import SessionMarker

__all__ = [
    "LOG_FILE",
    "STOP_BUDGET_S",
    "Daemon",
    "DaemonMetrics",
    "configure_logging",
    "log_start_failure",
]

log = logging.getLogger("sync.daemon")

STOP_BUDGET_S = 4.0
# A sync loop that ended on its own is replaced at the next tick; one that dies again within
# SYNC_RESTART_MAX_S of its restart waits SYNC_RESTART_S, doubling up to SYNC_RESTART_MAX_S.
SYNC_RESTART_S = 5.0
SYNC_RESTART_MAX_S = 300.0
TICK_S = 0.5
# Distinct errors of one tick check logged in full before the rest go to DEBUG (_check_failed).
TICK_ERRORS_KEPT = 32
REMOTE_TIMEOUT_S = 15.0
# Store event kind -> control API event name (created and modified are both "saved").
_EVENT_NAMES = {
    "created": "saved",
    "modified": "saved",
    "deleted": "deleted",
    "moved": "moved",
    "invalid": "invalid",
    "conflict": "conflict",
}

RemoteFactory = Callable[[Settings], Remote]


# -- the daemon ------------------------------------------------------------------------------------


class Daemon(DaemonOps):
    """Watcher + sync engine + control API for one home. ``run()`` blocks until stopped.

    ``remote_factory`` builds the Remote (default: the home's Supabase session); it may raise
    NotLoggedInError, in which case the daemon runs offline. Raises LockHeldError when another
    process syncs the home, and the store's and watcher's errors when they cannot start.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        remote_factory: RemoteFactory | None = None,
        port: int = 0,
        metrics_port: int | None = None,
        poll_interval_s: float | None = None,
        install_signals: bool = True,
        on_ready: Callable[[], object] | None = None,
    ) -> None:
        self.settings = settings
        self.remote_factory = remote_factory or _supabase_remote
        self.metrics = DaemonMetrics()
        self.started_at = time.time()
        # Uptime from a clock that never steps: a wall-clock step (NTP after a resume, a manual
        # change) made time.time() - started_at jump or go negative. started_at stays wall time.
        self._started_up = span_clock()
        self.token = secrets.token_urlsafe(32)
        self._port = port
        self._metrics_port = metrics_port
        self._poll_interval_s = poll_interval_s
        self._install_signals = install_signals
        # Told once run() serves (daemon.json written): `localstore daemon` passes systemd's
        # READY=1, so a start that fails before is reported by `systemctl start`.
        self._on_ready = on_ready
        self._lock = HomeLock.for_settings(settings)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.stopped_cleanly = False
        self.exit_code = 0
        self._init_parts()
        self._init_offline()
        self._init_status()
        self._init_tick_checks()

    def _init_parts(self) -> None:
        """Set up the slots of what _start makes: store, validator, watcher, engine, server."""
        self._engine_mutex = threading.Lock()
        self.store: BlueprintStore | None = None
        # The app's validator its config names (daemon_validator), imported in _start.
        self.validator = AppValidator()
        self.watcher: Watcher | None = None
        self.engine: _MeteredEngine | None = None
        self.remote: Remote | None = None
        self.server: ControlServer | None = None
        self._unsubs: list[Callable[[], None]] = []
        self._forwarder: _ErrorForwarder | None = None

    def _init_offline(self) -> None:
        """Set up why the daemon is offline, and what tells it of a login or logout."""
        self._offline_reason = ""
        self._offline_on_keychain = False
        self._offline_hint = ""
        self._next_relogin = 0.0
        # Changes on every login/logout of this home (sync/session_marker.py); see _check_session.
        self._session_marker = SessionMarker.for_settings(self.settings)

    def _init_status(self) -> None:
        """Set up the pause and what status reads, with the locks that order them."""
        self._paused = False
        self._paused_since: float | None = None  # (a pause is kept in state/: see _start)
        # pause and resume one at a time: the control pool runs ops at once, and a resume that
        # removed the file while a pause still wrote it left the file and the flag disagreeing.
        self._pause_mutex = threading.Lock()
        self._status_mutex = threading.Lock()
        # The count of new files that never parsed (see _with_unaccepted), and the watcher's
        # (raw events, rescans) when it was taken: unchanged, no file changed since.
        self._unaccepted_mutex = threading.Lock()
        self._unaccepted: tuple[tuple[int, int] | None, int] = (None, 0)
        self._status_unsub: Callable[[], None] | None = None

    def _init_tick_checks(self) -> None:
        """Set up what the tick's checks follow: other processes' changes, the watcher, the
        keychain, the sync loop, and the errors logged so far."""
        # Foreign-change follower (see the module docstring), made once the store is open.
        self._foreign: ForeignChanges | None = None
        self._watcher_keeper: WatcherKeeper | None = None
        # Errors of the tick's checks logged so far, per check (see _guarded).
        self._tick_errors: dict[str, set[str]] = {}
        self._keychain = KeychainWatch()
        # The sync loop found dead and not replaced yet, and when to replace it (_check_sync_loop).
        self._sync_dead: SyncEngine | None = None
        self._sync_restart_delay = 0.0
        self._sync_restart_due = 0.0
        self._sync_restarted_at = -math.inf

    # -- lifecycle ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, serve until SIGTERM/SIGINT/SIGHUP, a ``stop`` request or stop(), then
        shut down.

        Returns 0, or 1 when the home's lock was lost to another process (see ``_check_lock``),
        so a service manager restarts it (and the restart reports who holds the home).
        """
        self._lock.acquire_or_raise("start the daemon")
        previous = self._trap_signals()
        try:
            self._start()
            self._ready.set()
            log.info(
                "daemon ready: pid %d, control port %d, home %s, sync %s",
                os.getpid(),
                self.server.port if self.server else 0,
                home_name(self.settings),
                "on" if self.engine else f"offline ({self._offline_reason})",
            )
            if self._on_ready is not None:
                self._on_ready()
            while not self._stop.wait(self._tick_interval()):
                self._tick()
            log.info("daemon stopping")
        finally:
            self._shutdown()
            self._restore_signals(previous)
        return self.exit_code

    def wait_ready(self, timeout: float) -> bool:
        """Wait until run() serves (for embedding the daemon in tests and tools)."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Ask run() to return (thread- and signal-safe)."""
        self._stop.set()

    def _trap_signals(self) -> dict[int, Any]:
        if not self._install_signals or threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, _frame: FrameType | None) -> None:
            self._stop.set()

        previous: dict[int, Any] = {}
        # SIGHUP too: a foreground daemon whose terminal closes gets one, and its default action
        # killed the process without removing daemon.json or giving the sync cycle its budget.
        # (No reload is attached to it: settings, daemon_validator among them, are read at
        # start; a changed config.yaml takes a restart.)
        hup = getattr(signal, "SIGHUP", None)  # (none on Windows)
        # SIGBREAK: Ctrl-Break in the console of a Windows daemon (Windows only); untrapped it
        # ended the process at once, as SIGHUP did here.
        brk = getattr(signal, "SIGBREAK", None)
        extra = [s for s in (hup, brk) if s is not None]
        for sig in (signal.SIGTERM, signal.SIGINT, *extra):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def _start(self) -> None:
        started = time.monotonic()
        self.store = self._open_store()
        self.metrics.startup_reconcile_seconds = time.monotonic() - started
        self._foreign = ForeignChanges(self.store)
        self._unsubs.append(self.store.events.observe(self._claim))
        self._unsubs.append(self.store.subscribe(self._on_store_event))
        self.watcher = Watcher(self.store)
        self.watcher.start()
        self._watcher_keeper = WatcherKeeper(self.store)
        # A pause outlives a restart (a reboot on a metered connection): read before the engine
        # starts, so it never runs a cycle first.
        pause = read_pause(self.settings.paths.state)
        if pause is not None:
            since = pause.get("since")
            self._paused = True
            self._paused_since = float(since) if isinstance(since, int | float) else None
            log.info("sync stays paused, as it was when the daemon stopped (%s)", PAUSED_DETAIL)
        self._attach_engine()
        self.server = ControlServer(
            self,
            token=self.token,
            port=self._port,
            metrics_port=self._metrics_port,
            metrics_text=self.prometheus_text if self._metrics_port is not None else None,
            on_subscribers=self._follow_status,
        )
        self.server.start()
        self._forwarder = _ErrorForwarder(self.server.publish)
        logging.getLogger().addHandler(self._forwarder)
        write_state(self.settings.paths.state, self._state_record())

    def _open_store(self) -> BlueprintStore:
        """The home's store, judging with the app's validator when the config names one.

        Without one its watcher's edits are judged by none, and sync holds them until the app
        opens (docs/daemon.md, "The app's validator in the daemon"). The validator never takes
        the home over from another the app recorded (replace_home_validator=False): a config
        left naming an older version's rules would judge everything by them.
        """
        self.validator = load_app_validator(self.settings)
        if self.validator.function is None:
            if self.validator.spec:
                log.error(
                    "the app's validator is not used: %s (fix: %s)",
                    self.validator.error,
                    self.validator.hint,
                )
            return BlueprintStore(self.settings)
        store = BlueprintStore(
            self.settings,
            validator=self.validator.function,
            validator_name=self.validator.name,
            replace_home_validator=False,
        )
        status = self.validator.status(store.home_validator())
        if status["problem"]:
            log.warning("%s (fix: %s)", status["detail"], status["hint"])
        else:
            log.info("the app's validator: %s", status["detail"])
        return store

    def _state_record(self) -> dict[str, Any]:
        from localstore import __version__

        assert self.server is not None
        return {
            "pid": os.getpid(),
            "port": self.server.port,
            "token": self.token,
            "host": "127.0.0.1",
            # A script's --home: the home folder, or None for the platform folders' home (no
            # folder of its own: pass no --home). home_name is the same said to a person.
            "home": _home_folder(self.settings),
            "home_name": home_name(self.settings),
            "started_at": self.started_at,
            "version": __version__,
            # The core schema this daemon writes: a newer localstore's `status` and `doctor`
            # tell by it that this daemon is older than the index they upgraded (restart it).
            "core_schema": len(CORE_MIGRATIONS),
            "metrics_port": self.server.metrics_bound_port,
            "log": str(self.settings.paths.state / LOG_FILE),
            # The CLI's store in another process leaves a change younger than this to the
            # watcher (daemon_write_quiet_s): it would record half an editor's in-place save.
            "write_quiet_ms": round(self.watcher.write_quiet_s * 1000)
            if self.watcher is not None
            else DEFAULT_WRITE_QUIET_MS,
        }

    def _shutdown(self) -> None:
        deadline = time.monotonic() + STOP_BUDGET_S
        if self.engine is not None:
            # Stopping first: the lock wait interrupted below then fails a cycle that is already
            # stopping (logged at DEBUG), not a running one (a "locked index" warning).
            self.engine.stop()
        if self.store is not None:  # the engine and watcher joined below must not wait 30 s
            self.store.index.interrupt_lock_waits()  # for a write lock another process holds
        try:
            remove_state(self.settings.paths.state, os.getpid())
        except OSError as exc:
            # (Windows: a reader or a scanner held it past the retries.) A daemon.json left here
            # is ignored (its pid gone, the lock free); raising skipped the rest of the
            # shut-down, the lock's release included.
            log.warning("could not remove %s: %s", STATE_FILE, exc.strerror or exc)
        if self._forwarder is not None:
            logging.getLogger().removeHandler(self._forwarder)
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()
        if self.server is not None:
            self.server.stop()
            self.server.join(max(0.1, deadline - time.monotonic()))
        abandoned = False
        if self.engine is not None:
            self.engine.stop()
            abandoned = not self.engine.join(max(0.1, deadline - time.monotonic() - 0.5))
        # A `sync` request runs its cycle on a control-op thread, not the engine's loop: joining
        # the loop alone closed the remote and the store under that cycle.
        if self.server is not None:
            ops_done = self.server.wait_ops(max(0.1, deadline - time.monotonic() - 0.5))
            abandoned = abandoned or not ops_done
        if abandoned:
            # Closing the index under a running cycle could fail in odd places; leaving it to
            # process exit is safe (SQLite rolls back the open transaction, sync resumes).
            log.warning("the sync cycle did not finish in time; abandoned (it resumes next start)")
        else:
            self._close_components(deadline)
        self._lock.release()
        self.stopped_cleanly = not abandoned

    def _close_components(self, deadline: float) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher.join(max(0.1, deadline - time.monotonic()))
        close_remote(self.remote)
        if self.store is not None:
            self.store.close()

    # -- the engine --------------------------------------------------------------------------------

    def _attach_engine(self) -> bool:
        """Open the cloud session and start the engine; False (offline) when that is impossible.

        A remote opened for an engine that then cannot start is closed here, whatever the error.
        """
        with self._engine_mutex:
            if self.engine is not None:
                return True
            assert self.store is not None
            try:
                remote = self.remote_factory(self.settings)
            except NotLoggedInError as exc:
                return self._go_offline("not logged in", exc)
            except (SyncError, LocalStoreError) as exc:
                # (A keychain that cannot be read on a home that never logged in is a
                # NotLoggedInError already: remote_from_settings asks the index first.)
                return self._go_offline(exc.message, exc)
            kwargs: dict[str, Any] = {}
            if self._poll_interval_s is not None:
                kwargs["poll_interval_s"] = self._poll_interval_s
            paused = self._paused
            try:
                engine = _MeteredEngine(self.store, remote, **kwargs)
                engine.metrics = self.metrics
                if paused:
                    engine.pause()
                engine.start()
            except NewerIndexError:
                close_remote(remote)
                raise  # (the tick stops the daemon for it; at start, its own exit code)
            except Exception as exc:  # any error: the remote must not leak (see the docstring)
                # The remote is open (HTTP client, refresh timer, an index connection): left
                # to itself, and tried again at the next tick since nothing set the next try,
                # one leaked twice a second for as long as the fault lasted (realtime unable to
                # start a thread at the process's thread limit made it worse each time). Offline
                # instead, with the reason in the status, tried again every RELOGIN_CHECK_S.
                close_remote(remote)
                reason = f"sync could not start: {exc}"
                if reason != self._offline_reason and not isinstance(exc, LocalStoreError):
                    log.error("sync could not start", exc_info=exc)  # (a bug: its traceback)
                return self._go_offline(reason, exc)
            self.remote, self.engine = remote, engine
            # A `pause` (or `resume`) handled while the engine started saw no engine yet and only
            # set the flag; read it again now that _op_pause can see the engine.
            if self._paused and not paused:
                engine.pause()
            elif paused and not self._paused:
                engine.resume()
            self._offline_reason = self._offline_hint = ""
            if self.server is not None:
                self._follow_status(self.server.subscribers)
            log.info("sync started for %s", getattr(remote, "identity", "the cloud"))
            return True

    def _check_session(self) -> None:
        """Follow `localstore logout` / `login` made while the daemon runs (every tick: one stat).

        When the session marker changed, the engine's remote checks the keychain: if the home was
        logged out, or another user logged in, the engine and remote are dropped at once (no
        further cycle, refresh or realtime with that session) and a new remote is opened from
        whatever session is stored now, so the new user's first cycle runs the engine's identity
        check (a home that synced with another user of the project is refused there). The same
        user logging in again keeps the engine (its remote takes the new session) and syncs
        now: after a revoked session the engine waits ATTENTION_RETRY_S (or its poll interval)
        for a person, and the person just logged in; status said "error" until that wait
        ended. Offline, a changed marker means "try now" rather than at the next
        RELOGIN_CHECK_S.
        """
        if not self._session_marker.changed():
            return
        engine = self.engine
        if engine is not None:
            lost = session_lost(self.remote)
            if lost is None:
                engine.request_sync()
                return
            self._detach_engine(lost)
        if self.engine is None:
            self._next_relogin = 0.0

    def _detach_engine(self, exc: SyncError) -> None:
        """Stop the engine and close its remote (the session they use is no longer this home's)."""
        with self._engine_mutex:
            engine, remote = self.engine, self.remote
            self.engine = self.remote = None
        with self._status_mutex:
            if self._status_unsub is not None:
                self._status_unsub()
                self._status_unsub = None
        log.warning("sync stopped: %s", exc.message)
        if engine is not None:
            engine.stop()
            if not engine.join(STOP_BUDGET_S):
                log.warning(
                    "the sync cycle in flight did not finish; its remote is closed under it"
                )
        close_remote(remote)
        self._go_offline("not logged in", exc)
        if self.server is not None:
            self.server.publish("sync", self._sync_status())

    def _go_offline(self, reason: str, exc: BaseException) -> bool:
        if reason != self._offline_reason:
            log.warning("sync is off: %s", exc)
        self._offline_reason = reason
        self._offline_on_keychain = keychain_failure(exc)
        # What to do about it, shown by `localstore status` under the reason.
        self._offline_hint = offline_hint(reason, exc)
        self._next_relogin = time.monotonic() + RELOGIN_CHECK_S
        return False

    def _tick_interval(self) -> float:
        return TICK_S

    def _tick(self) -> None:
        # First, and on its own: with the home deleted or moved away, the lock check below
        # "restored" state/ at the old path (a home made again, holding only this daemon's
        # files), and nothing else failed, so the daemon ran on for ever on an index no path
        # names. One stat.
        gone = self._home_gone()
        if gone:
            self._stop_home_gone(gone, "the home was deleted or moved, or its disk unmounted")
            return
        if not self._guarded("the home's lock", self._check_lock, default=True):
            return
        newer = self._guarded("the index's schema version", self._newer_index)
        if newer is not None:
            self._stop_upgraded(newer)
            return
        self._guarded("the watcher", self._check_watcher)
        self._guarded("the sync loop", self._check_sync_loop)
        # (Distinct names: a check's success clears only its own logged errors.)
        self._guarded("the login marker", self._check_session)
        self._guarded("a new login", self._relogin_if_due)
        self._guarded("the keychain", self._follow_keychain)
        self._guarded("changes made by other processes", self._follow_foreign_changes)

    def _follow_keychain(self) -> None:
        """End sync's wait for a person when the keychain opens (see sync._keychain_watch)."""
        self._keychain.follow(
            self.engine,
            offline_on_keychain=self._offline_on_keychain,
            attach_now=self._attach_now,
        )

    def _attach_now(self) -> None:
        self._next_relogin = 0.0

    def _relogin_if_due(self) -> None:
        # Offline only: notice a `localstore login` made while the daemon runs.
        due = self.engine is None and time.monotonic() >= self._next_relogin
        if due and self._attach_engine() and self.server is not None:
            self.server.publish("sync", self._sync_status())

    def _guarded(self, what: str, check: Callable[[], Any], default: Any = None) -> Any:
        """Run one of the tick's checks; an error it raises is logged, not fatal.

        One check that cannot run (a permission error reading the login marker, a locked index
        in the follower) made the error leave run() and the daemon shut down, watcher and sync
        with it. Now each check runs on its own: the others go on, and the failing one is tried
        again next tick. Each distinct error is logged once (ERROR; a traceback when it is not
        one of ours), then at DEBUG, and the check's recovery once at INFO, so a lasting fault
        writes a few lines, not two a second (known errors, such as a locked index, at WARNING). The one error that stops the daemon is one raised
        while the home's index is gone from its path (``_home_gone``).
        """
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - any check's failure: see the docstring
            self._check_failed(what, exc)
            return default
        if self._tick_errors.pop(what, None):
            log.info("%s: the check works again", what)
        return result

    def _check_failed(self, what: str, exc: Exception) -> None:
        gone = self._home_gone()
        if gone:
            self._stop_home_gone(gone, f"the check of {what} failed with: {exc}")
            return
        seen = self._tick_errors.setdefault(what, set())
        key = f"{type(exc).__qualname__}: {exc}"
        if key in seen or len(seen) > TICK_ERRORS_KEPT:
            log.debug("%s: still failing: %s", what, key)
            return
        if len(seen) == TICK_ERRORS_KEPT:
            # An error text that changes every time (it names a count, a temporary file, a
            # time) must neither grow this set forever nor, once it is full, log every tick
            # for as long as it lasts: one line says so, the rest go to DEBUG until the check
            # works again. The marker ("" is no error's key) makes the set one larger.
            seen.add("")
            log.warning(
                "%s keeps failing with other errors (%d different ones so far); the rest are "
                "logged at DEBUG until it works again: %s",
                what,
                TICK_ERRORS_KEPT + 1,
                key,
            )
            return
        seen.add(key)
        # A known error (a locked or full index...) names its cause: a warning, as before; an
        # unexpected one is an ERROR with its traceback (and an `error` event for clients).
        known = isinstance(exc, (LocalStoreError, SyncError))
        log.log(
            logging.WARNING if known else logging.ERROR,
            "%s could not be checked (the daemon goes on; tried again every %.1f s): %s",
            what,
            self._tick_interval(),
            key,
            exc_info=None if known else exc,
        )

    def _stop_home_gone(self, gone: str, why: str) -> None:
        """Stop with EXIT_HOME_GONE (which the service files do not restart), saying why."""
        log.error(
            "stopping: the home's index %s is gone (%s), so every change would be lost at exit; %s",
            self.settings.paths.index_db,
            gone,
            why,
        )
        self.exit_code = EXIT_HOME_GONE
        self._stop.set()

    def _newer_index(self) -> NewerIndexError | None:
        """The refusal every write now meets if a newer localstore upgraded the index since
        this daemon opened it (one of its threads met it, or this tick's read), else None."""
        return self.store.index.newer_version() if self.store is not None else None

    def _stop_upgraded(self, exc: NewerIndexError) -> None:
        """Stop (exit 1: the service restarts it, as the installed localstore) after a newer
        localstore upgraded the home's index under this daemon, saying why and what to do.

        Every write of this daemon is refused from then on (its rows could mean what the newer
        version does not): the watcher could record no edit, sync could not apply or push. It
        went on for days (the app updated, the daemon started by the old one still running),
        retrying each edit, failing each sync cycle with a traceback, and holding the home's
        lock, so the newer app could not sync the home itself. Nothing is lost by stopping:
        the edits are in the files, and the newer version's reconcile records them. Exit 1, not
        EXIT_INDEX_NEWER (78, which the service files do not restart): a restart runs the
        installed localstore, the newer one after an upgrade in place, which then serves the
        home; one that is still this version refuses the index at start with 78 and stays down.
        """
        from localstore import __version__

        log.error(
            "stopping: a newer localstore upgraded this home's index while this daemon "
            "(localstore %s) ran, so it can no longer write to it: %s; edits made meanwhile "
            "are in the files, and the newer version records them when it opens the home "
            "(fix: start the daemon again, so that the newer localstore serves the home: "
            "a service restarts it by itself; otherwise `localstore daemon --detach`)",
            __version__,
            exc.message,
        )
        self.exit_code = 1
        self._stop.set()

    def _home_gone(self) -> str:
        """Why the home's index is not at its path any more ("" when it is, or when unsure).

        Deleted with the data folder, or its disk unmounted: the store then writes to a file
        no path names, and everything saved or pulled is lost when the daemon exits. That is
        the only state in which a failing check stops the daemon (exit EXIT_HOME_GONE, which
        the service files do not restart: a restart would make a new, empty home there).
        Anything else (permissions, a full disk, a locked index) may heal, and the daemon's
        other work goes on meanwhile.
        """
        return home_gone(self.settings.paths.index_db)

    def _check_lock(self) -> bool:
        """Keep the home's lock and daemon.json in place; False (and stop, exit 1) if lost.

        Deleting ``state/`` (a clean-up script, a user tidying up) takes the lock file and
        daemon.json with it: a second daemon could then lock a new file and sync the same home,
        and clients could not find this one. So every tick the lock file is checked (and locked
        again if it vanished) and daemon.json rewritten if it is gone.
        """
        state_dir = self.settings.paths.state
        try:
            held = self._lock.still_held()
            if held and self.server is not None and not (state_dir / STATE_FILE).exists():
                log.warning("state/daemon.json was deleted; writing it again")
                write_state(state_dir, self._state_record())
        except OSError as exc:
            # Raised to _guarded (which goes on with the tick): logged once, then at DEBUG, and
            # its recovery once. Logged here, a full disk or an unwritable state/ wrote an ERROR
            # every tick, two a second, for as long as it lasted.
            raise fs.map_os_error(
                exc, "cannot restore the home's lock or daemon.json in", state_dir
            ) from exc
        if held:
            return True
        pid = lock_holder(state_dir)
        log.error(
            "process %s took this home's lock after state/ was deleted; stopping so that only "
            "one process syncs the home",
            pid or "?",
        )
        self.exit_code = 1
        self._stop.set()
        return False

    def _check_watcher(self) -> None:
        """Replace a watcher whose worker died (``WatcherKeeper``: shared with embedding apps)."""
        keeper = self._watcher_keeper
        new = keeper.check(self.watcher) if keeper is not None else None
        if new is not None:
            self.watcher = new
            self.metrics.watcher_restarts += 1

    def _check_sync_loop(self) -> None:
        """Replace a sync loop whose thread ended on its own (the engine logged why).

        Only a bug ends it (each cycle's errors are caught), but one did: after ~14 hours
        offline the backoff overflowed, the loop thread ended, and nothing synced again until
        the daemon was restarted, while status kept the last state it had. The dead engine's
        remote is closed and a new engine started from the home's session, as at start.
        """
        engine = self.engine
        if engine is None or self._stop.is_set() or engine.worker_state is not WorkerState.STOPPED:
            return
        now = time.monotonic()
        if self._sync_dead is not engine:
            self._sync_dead = engine
            # Dead again soon after a restart: wait, so a loop that dies at once is not
            # restarted twice a second for months (each start opens a remote).
            if now - self._sync_restarted_at < SYNC_RESTART_MAX_S:
                self._sync_restart_delay = min(
                    self._sync_restart_delay * 2 or SYNC_RESTART_S, SYNC_RESTART_MAX_S
                )
            else:
                self._sync_restart_delay = 0.0
            self._sync_restart_due = now + self._sync_restart_delay
            log.error(
                "the sync loop stopped unexpectedly; restarting it%s",
                f" in {self._sync_restart_delay:.0f} s" if self._sync_restart_delay else "",
            )
        if now < self._sync_restart_due:
            return
        with self._engine_mutex:
            if self.engine is not engine:
                return
            remote = self.remote
            self.engine = self.remote = None
        with self._status_mutex:
            if self._status_unsub is not None:
                self._status_unsub()
                self._status_unsub = None
        close_remote(remote)
        self._sync_dead = None
        self._sync_restarted_at = now
        if self._attach_engine():
            self.metrics.sync_restarts += 1
        if self.server is not None:
            self.server.publish("sync", self._sync_status())

    # -- changes made by other processes -------------------------------------------------------

    def _follow_foreign_changes(self) -> None:
        """Publish rows other processes changed; candidates wait one tick for our own events.

        The trigger is the index's ``data_version``, which moves on every commit of another
        connection, as for an app's in-process sync. It was file activity seen by the watcher
        in the last 3 s: a watcher in rescan-only mode (the inotify limit taken) reports none,
        and clients never heard another process's saves; a commit that came more than 3 s after
        the writer's last file event (a large import's full-text flush) waited for the next one.
        """
        foreign, store = self._foreign, self.store
        if foreign is None or store is None:
            return
        rows = foreign.poll(foreign.index_changed())
        for row in rows:
            # Counted before it is sent: a subscriber that reads the metrics once it has the
            # event must find the event counted (the fan-out runs on the server's own thread).
            self.metrics.foreign_changes += 1
            for event in foreign_events(store, row):
                self._forward(event)
        if rows and self.engine is not None:
            self.engine.request_sync(self.engine.debounce_s)

    # -- events ------------------------------------------------------------------------------------

    def _claim(self, events: Sequence[Event]) -> None:
        # A commit's events, all before any subscriber hears one (EventBus.observe): claimed
        # one by one as they were forwarded, a long batch could outlast the follower's tick
        # and this store's own rows go out again as another process's.
        if self._foreign is not None and self.store is not None:
            # What other processes changed before this commit in the same blueprints goes out
            # first (see ForeignChanges.before_own), as the poll's rows do.
            for row in self._foreign.before_own(events):
                self.metrics.foreign_changes += 1
                for foreign in foreign_events(self.store, row):
                    self._forward(foreign)
            for event in events:
                self._foreign.claim(event.id, event.rev)

    def _on_store_event(self, event: Event) -> None:
        self.metrics.store_events += 1
        self._forward(event)

    def _forward(self, event: Event) -> None:
        """Send a store event (or another process's change, ``process: "other"``) to clients."""
        if self.server is not None:
            data = event.to_dict()
            data["kind"] = data.pop("event")
            self.server.publish(_EVENT_NAMES.get(event.kind, event.kind), data)

    def _follow_status(self, subscribers: int) -> None:
        """Listen to the engine's status only while someone is subscribed.

        With a listener, the engine recomputes its status (index counts, O(blueprints)) on every
        state change; an idle poll on 10,000 blueprints then costs twice the CPU for nobody.
        """
        with self._status_mutex:
            if subscribers > 0 and self._status_unsub is None and self.engine is not None:
                self._status_unsub = self.engine.subscribe_status(self._on_status)
            elif subscribers == 0 and self._status_unsub is not None:
                self._status_unsub()
                self._status_unsub = None

    def _on_status(self, status: SyncStatus) -> None:
        if self.server is not None:
            self.server.publish("sync", status.to_dict())


def _supabase_remote(settings: Settings) -> Remote:
    from sync.supabase_remote import remote_from_settings

    # A background process: a locked keychain is an error to wait on, never a prompt.
    return remote_from_settings(settings, timeout_s=REMOTE_TIMEOUT_S, keychain_prompt=False)
