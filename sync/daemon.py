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
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import logging.handlers
import math
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from localstore import files as fs
from localstore._daemon_state import (
    EXIT_HOME_GONE,
    PAUSED_DETAIL,
    clear_pause,
    open_private_append,
    read_pause,
    write_pause,
)
from localstore.config import Settings, home_name
from localstore.errors import LocalStoreError, NewerIndexError, WatcherError
from localstore.events import Event
from localstore.index import CORE_MIGRATIONS
from localstore.store import BlueprintStore
from localstore.watcher import DEFAULT_WRITE_QUIET_MS, Watcher, WatcherState
from sync._app_validator import AppValidator, load_app_validator
from sync._follow import (
    ForeignChanges,
    WatcherKeeper,
    close_remote,
    foreign_events,
    realtime_health,
    session_lost,
    watcher_health,
)
from sync._keychain_watch import KeychainWatch, keychain_failure
from sync._local import (
    SyncStateName,
    list_flagged,
    local_status,
    offline_hint,
    status_hint,
    unaccepted_files,
)
from sync._log_hooks import ProcessHooks
from sync._shown import CredentialFilter
from sync._timefmt import span_clock
from sync.control import ControlServer, OpError
from sync.embed import STATE_FILE, HomeLock, home_gone, lock_holder, remove_state, write_state
from sync.engine import SyncEngine, SyncReport, SyncStatus, WorkerState
from sync.errors import NotLoggedInError, SyncError
from sync.login_names import login_listed
from sync.remote import Remote
from sync.session_marker import SessionMarker

__all__ = ["LOG_FILE", "STOP_BUDGET_S", "Daemon", "DaemonMetrics", "configure_logging"]

log = logging.getLogger("sync.daemon")

LOG_FILE = "daemon.log"
LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3
STOP_BUDGET_S = 4.0
RELOGIN_CHECK_S = 60.0
# A sync loop that ended on its own is replaced at the next tick; one that dies again within
# SYNC_RESTART_MAX_S of its restart waits SYNC_RESTART_S, doubling up to SYNC_RESTART_MAX_S.
SYNC_RESTART_S = 5.0
SYNC_RESTART_MAX_S = 300.0
TICK_S = 0.5
# Distinct errors of one tick check logged in full before the rest go to DEBUG (_check_failed).
TICK_ERRORS_KEPT = 32
REMOTE_TIMEOUT_S = 15.0
SYNC_WAIT_IDLE_S = 10.0
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


# -- logging ---------------------------------------------------------------------------------------


# Each line's time names one instant: local time with its UTC offset (text), UTC (JSON). Without
# an offset the hour a DST change repeats logged the same times twice, and a daemon running
# when the user changed the time zone (travel) kept the zone it started with (Python reads it
# once), so its lines were hours off the journal's with nothing on the line to tell.


class _TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        local = time.localtime(record.created)
        # The offset of that instant (DST-aware), from tm_gmtoff: strftime's %z is the zone's
        # name on Windows ("W. Europe Daylight Time", CPython issue 82232).
        sign, minutes = "-" if local.tm_gmtoff < 0 else "+", abs(local.tm_gmtoff) // 60
        return (
            time.strftime("%Y-%m-%d %H:%M:%S", local)
            + f",{int(record.msecs):03d}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        )


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{utc}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _private_log(path: str) -> None:
    """Create the log file 0600 if it is missing and make an existing one private (see
    :func:`open_private_append`). Raises OSError (the caller reports a log it cannot write)."""
    os.close(open_private_append(path))


class _LogFileHandler(logging.handlers.RotatingFileHandler):
    """Rotating, reopened at its path when the file there was deleted or replaced, and quiet
    while the file cannot be written.

    The daemon restores ``state/`` when it is deleted (``Daemon._check_lock``); a plain handler
    kept writing to the deleted file, so daemon.log stayed missing until 5 MB had piled up in the
    unlinked inode (months at INFO). One ``stat`` per record, as WatchedFileHandler does (which
    does not rotate).

    A write that fails with an OSError (a full disk, a read-only remount, state/ made
    unwritable) is not passed to ``logging.Handler.handleError``, which prints a whole traceback
    to stderr for every record: under systemd stderr is the journal, and hours of a full disk
    flooded it. Instead the first failure is one line on stderr (the path and why), the records
    that follow are counted, and once a write succeeds again the log itself says how many were
    lost and since when (and stderr that logging works again). Any other error (a formatting bug)
    still gets the standard traceback.
    """

    _file_id: tuple[int, int] | None = None
    # Set while writes fail: (when the first failed, its error); _lost counts records dropped.
    _failing: tuple[float, OSError] | None = None
    _lost = 0
    # The OSError handleError saw during the write under way (see _write).
    _write_error: OSError | None = None
    # The process hooks that log into this file (configure_logging): put back when it closes,
    # so a test's clean-up (or logging.shutdown) leaves none writing to a closed log.
    hooks: ProcessHooks | None = None

    def close(self) -> None:
        if self.hooks is not None:
            self.hooks.restore()
        super().close()

    def _open(self) -> Any:
        _private_log(self.baseFilename)
        stream = super()._open()
        st = os.fstat(stream.fileno())
        self._file_id = (st.st_dev, st.st_ino)
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        if self._failing is not None and not self._resume():
            self._lost += 1
            return
        if not self._write(record):
            self._lost += 1
            if self._failing is None:
                assert self._write_error is not None
                self._failing = (time.time(), self._write_error)
                _to_stderr(
                    f"localstore: cannot write the log {self.baseFilename}: "
                    f"{_os_reason(self._write_error)}; its records are dropped (and counted) "
                    "until it can be written again"
                )

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            self._write_error = exc  # emit reports it once; no traceback per record
        else:
            super().handleError(record)

    def _write(self, record: logging.LogRecord) -> bool:
        """Write one record; False when an OSError stopped it (the stream is then dropped)."""
        self._write_error = None
        if self.stream is not None and not self._same_file():
            try:
                self.stream.close()
                self.stream = None  # (reopened just below)
                # state/ only, not the folders above it: with the home deleted or moved away,
                # making them again left a home at the old path (the daemon stops then: its
                # last lines go to stderr, and the failed write is one line there).
                Path(self.baseFilename).parent.mkdir(mode=0o700, exist_ok=True)
                self.stream = self._open()
            except OSError:
                self.handleError(record)
        if self._write_error is None:
            super().emit(record)  # (calls handleError on a failure)
        if self._write_error is None:
            return True
        # Drop the stream with what it buffered: kept, a record counted as lost could still
        # reach the file later, and every later write would fail on it first. (FileHandler
        # opens the file again for the next record.)
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()  # (its flush fails again; close() still closes the file)
        return False

    def _resume(self) -> bool:
        """After failed writes: True once the log can be written again, with a line saying how
        many records it lost (on a line of its own: a write cut short can leave half a line)."""
        assert self._failing is not None
        since, error = self._failing
        try:
            _private_log(self.baseFilename)
            with open(self.baseFilename, "ab+") as f:  # ("a": a write goes to the end)
                end = f.seek(0, os.SEEK_END)
                if end and (f.seek(end - 1), f.read(1))[1] != b"\n":
                    f.write(b"\n")
        except FileNotFoundError:
            pass  # (state/ is gone: _write makes it again)
        except OSError:
            return False  # still full: the newline did not fit either
        lost = self._lost
        note = log.makeRecord(
            log.name,
            logging.WARNING,
            __file__,
            0,
            "logging resumed: %d log record(s) were lost while %s could not be written "
            "(since %s: %s)",
            (
                lost,
                self.baseFilename,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)),
                _os_reason(error),
            ),
            None,
        )
        if not self._write(note):
            return False
        self._failing, self._lost = None, 0
        _to_stderr(f"localstore: logging to {self.baseFilename} works again; {lost} record(s) lost")
        return True

    def _same_file(self) -> bool:
        try:
            st = os.stat(self.baseFilename)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._file_id


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    return exc.strerror or str(exc)


def _to_stderr(line: str) -> None:
    # Best effort: stderr may be gone (pythonw) or be state/daemon.out on the same full disk.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class _QuietReconnects(logging.Filter):
    """Re-level, for the daemon's log, the lines a network that comes and goes writes each time.

    A laptop changes networks daily for months; each lost connection is expected and heals by
    itself. The realtime library logs every dropped or refused connection as two ERRORs
    (realtime runs with ``auto_reconnect=False``: ``sync._realtime`` rebuilds it, and logs one
    WARNING per outage and its length when it ends). Those become DEBUG. A refusal a person has
    to act on (HTTP 401/403: a bad key, a revoked session) stays an ERROR, and so does anything
    else the library logs (a join error, a callback that failed). (The engine logs a cloud
    outage once itself, its retries at DEBUG, for embedding apps too.)
    """

    # The library logs these with f-strings: its message text is all there is to match.
    _REALTIME = (
        "WebSocket connection closed with code",
        "Auto-reconnect disabled, terminating connection",
        "Connection attempt failed",
        "Connection failed permanently",
    )
    _NEEDS_A_PERSON = re.compile(r"HTTP 4\d\d")

    def filter(self, record: logging.LogRecord) -> bool:
        # Marked: the record is shared, and the next handler (stderr) sees it re-levelled.
        if getattr(record, "localstore_quieted", False) or self._expected(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.localstore_quieted = True
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True

    def _expected(self, record: logging.LogRecord) -> bool:
        if record.name == "realtime" or record.name.startswith("realtime."):
            msg = str(record.msg)
            return msg.startswith(self._REALTIME) and not self._NEEDS_A_PERSON.search(msg)
        return False


def configure_logging(
    state_dir: Path, *, level: str = "INFO", as_json: bool = False, stderr: bool = True
) -> list[logging.Handler]:
    """Log to ``state/daemon.log`` (rotating) and stderr; returns the handlers it installed."""
    fmt: logging.Formatter = (
        _JsonFormatter()
        if as_json
        else _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    file_handler = _LogFileHandler(
        state_dir / LOG_FILE, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handlers: list[logging.Handler] = [file_handler]
    if stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger()
    root.setLevel(level.upper())
    quiet = _QuietReconnects()
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(quiet)
        # Keys and tokens out of every line, whichever library wrote it (the realtime URL
        # carries the anon key): see sync._shown.CredentialFilter.
        h.addFilter(CredentialFilter())
        root.addHandler(h)
    # Third-party chatter (HTTP requests per sync call) stays out of INFO logs.
    for noisy in ("httpx", "httpcore", "websockets", "hpack", "realtime"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Thread ends, ignored exceptions and warnings too (sync._log_hooks), until the file closes.
    hooks = ProcessHooks()
    hooks.install()
    file_handler.hooks = hooks
    return handlers


def log_start_failure(handler: logging.Handler, exc: BaseException) -> None:
    """Record in ``handler`` (the log file) why the daemon could not start: a known error as one
    line with its hint, anything else with its traceback."""
    hint = getattr(exc, "hint", "")
    known = hint or isinstance(exc, LocalStoreError)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = f"daemon could not start: {message}" + (f" (fix: {hint})" if hint else "")
    record = log.makeRecord(
        log.name,
        logging.ERROR,
        __file__,
        0,
        text,
        (),
        None if known else (type(exc), exc, exc.__traceback__),
    )
    handler.handle(record)


class _ErrorForwarder(logging.Handler):
    """Error log records of our own loggers become ``error`` events for subscribers."""

    def __init__(self, publish: Callable[[str, dict[str, Any]], None]) -> None:
        super().__init__(level=logging.ERROR)
        self._publish = publish

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("sync", "localstore")):
            self._publish("error", {"logger": record.name, "message": record.getMessage()})


# -- metrics ---------------------------------------------------------------------------------------


def _home_folder(settings: Settings) -> str | None:
    """daemon.json's and status' ``home``: the home folder, None for the platform folders'."""
    return None if settings.home is None else str(settings.home)


@dataclass
class DaemonMetrics:
    """Counters since the daemon started."""

    sync_cycles: int = 0
    sync_failures: int = 0
    pushed: int = 0
    pulled: int = 0
    merged: int = 0
    conflicts: int = 0
    quarantined: int = 0
    store_events: int = 0
    foreign_changes: int = 0
    watcher_restarts: int = 0
    sync_restarts: int = 0
    startup_reconcile_seconds: float = 0.0
    last_cycle_seconds: float = 0.0

    def add(self, report: SyncReport, seconds: float) -> None:
        """Count one successful cycle."""
        self.sync_cycles += 1
        self.pushed += report.pushed
        self.pulled += report.pulled
        self.merged += report.merged
        self.conflicts += report.conflicts
        self.quarantined += report.quarantined
        self.last_cycle_seconds = seconds


class _MeteredEngine(SyncEngine):
    """The engine with every cycle's report counted (the loop calls sync_once itself)."""

    metrics: DaemonMetrics

    def sync_once(self) -> SyncReport:
        started = time.monotonic()
        try:
            report = super().sync_once()
        except BaseException:
            self.metrics.sync_failures += 1
            raise
        self.metrics.add(report, time.monotonic() - started)
        return report


# -- the daemon ------------------------------------------------------------------------------------


class Daemon:
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
        self._engine_mutex = threading.Lock()
        self.store: BlueprintStore | None = None
        # The app's validator its config names (daemon_validator), imported in _start.
        self.validator = AppValidator()
        self.watcher: Watcher | None = None
        self.engine: _MeteredEngine | None = None
        self.remote: Remote | None = None
        self.server: ControlServer | None = None
        self._offline_reason = ""
        self._offline_on_keychain = False
        self._offline_hint = ""
        self._next_relogin = 0.0
        # Changes on every login/logout of this home (sync/session_marker.py); see _check_session.
        self._session_marker = SessionMarker.for_settings(settings)
        self._paused = False
        self._paused_since: float | None = None  # (a pause is kept in state/: see _start)
        self._unsubs: list[Callable[[], None]] = []
        self._forwarder: _ErrorForwarder | None = None
        self.stopped_cleanly = False
        self.exit_code = 0
        self._status_mutex = threading.Lock()
        # The count of new files that never parsed (see _with_unaccepted), and the watcher's
        # (raw events, rescans) when it was taken: unchanged, no file changed since.
        self._unaccepted_mutex = threading.Lock()
        # pause and resume one at a time: the control pool runs ops at once, and a resume that
        # removed the file while a pause still wrote it left the file and the flag disagreeing.
        self._pause_mutex = threading.Lock()
        self._unaccepted: tuple[tuple[int, int] | None, int] = (None, 0)
        self._status_unsub: Callable[[], None] | None = None
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

    def _validator_status(self) -> dict[str, Any]:
        home = None
        if self.store is not None:
            try:
                home = self.store.home_validator()
            except LocalStoreError as exc:  # (a locked or damaged index: say so, do not fail)
                out = self.validator.status(None)
                out["home_error"] = str(exc)
                return out
        return self.validator.status(home)

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
                if self._keychain_failure_without_login(exc):
                    # A keychain that cannot be read on a home that never logged in (the index
                    # lists every name stored): not logged in, as `status` and `doctor` say. Its
                    # error sent a new user to fix a keychain they had no use for yet.
                    return self._go_offline("not logged in", exc)
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

    def _keychain_failure_without_login(self, exc: BaseException) -> bool:
        """Whether opening the remote failed on the keychain while no login is listed."""
        if not keychain_failure(exc) or self.store is None:
            return False
        try:
            return not login_listed(self.store.index, self.settings)
        except LocalStoreError:
            return False  # (cannot tell: the keychain's own error is the better guess)

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

    # -- control API ---------------------------------------------------------------------------------

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        """Answer one control op (runs on the control server's pool)."""
        if op == "status":
            return self.status()
        if op == "sync":
            return self._op_sync(args)
        if op == "verify":
            return self._op_verify()
        if op == "pause":
            return self._op_pause(True)
        if op == "resume":
            return self._op_pause(False)
        if op == "metrics":
            return self.metrics_snapshot()
        if op == "stop":
            # SIGTERM's clean stop for whoever holds the token (the user who can read
            # daemon.json, who could signal the process anyway). On Windows it is the only one:
            # os.kill(pid, SIGTERM) there is TerminateProcess, which runs no shut-down at all.
            log.info("stop requested through the control API")
            self._stop.set()
            return {"stopping": True, "pid": os.getpid()}
        raise OpError("unknown_op", f"unknown op {op!r}")

    def _sync_status(self) -> dict[str, Any]:
        out = self._engine_status()
        if self._paused:
            out["paused_since"] = self._paused_since
            out["detail"] = "; ".join(d for d in (out.get("detail"), PAUSED_DETAIL) if d)
        return out

    def _engine_status(self) -> dict[str, Any]:
        if self.engine is None:
            assert self.store is not None
            # The documented SyncStatus fields, read from the index: a daemon that is not
            # logged in still has pending uploads, conflicts and flagged files to show. It sent
            # only its state, so clients printed "pending uploads: None".
            state: SyncStateName = "paused" if self._paused else "offline"
            try:
                out = local_status(self.store, state=state).to_dict()
            except LocalStoreError as exc:  # (a locked or damaged index: say so, do not fail)
                out = {"state": state, "last_error": str(exc)}
            out.update(detail=self._offline_reason, hint=self._offline_hint, logged_in=False)
            return out
        out = self.engine.status().to_dict()
        out["logged_in"] = True
        out["identity"] = getattr(self.remote, "identity", "")
        return out

    def status(self) -> dict[str, Any]:
        """Daemon, sync and watcher status as one JSON-friendly dict."""
        watcher = self.watcher
        watcher_state, problem = watcher_health(watcher, self._watcher_keeper)
        return {
            "daemon": {
                "pid": os.getpid(),
                "home": _home_folder(self.settings),  # (as in daemon.json)
                "home_name": home_name(self.settings),
                "started_at": self.started_at,
                "uptime_s": round(span_clock() - self._started_up, 3),
                "device_id": self.store.device_id if self.store else "",
                "device_name": self.settings.device_name,
            },
            "sync": self._with_hint(self._with_unaccepted(self._sync_status())),
            "watcher": {
                "state": watcher_state,
                "problem": problem,
                # Not a problem: how the folder is watched (a network file system's rescans).
                "notice": watcher.notice if watcher else None,
                "stats": asdict(watcher.stats) if watcher else {},
            },
            "index": self.store.index_health() if self.store else None,
            "validator": self._validator_status(),
            # The hint channel (docs/daemon.md, "Realtime health"); null while sync is off.
            "realtime": realtime_health(self.remote) if self.engine is not None else None,
        }

    def _with_hint(self, sync: dict[str, Any]) -> dict[str, Any]:
        """Make ``hint`` what the person should do, as EmbeddedSync.status() and `localstore
        status` say it (sync._local.status_hint): the login's hint while offline for want of
        one, then a line for each thing that needs attention; None when nothing. It carried only
        the login's, so a client of the control API had counts and nothing saying what to do."""
        sync["hint"] = status_hint(sync, sync.get("hint") or None)
        return sync

    def _with_unaccepted(self, sync: dict[str, Any]) -> dict[str, Any]:
        """Count new files that never parsed among the flagged ones, as `localstore status` does.

        They have no index row, so the engine's count (kept cheap for its status events) misses
        them; the status op, asked for on demand, stats the folder for them.
        """
        if self.store is not None and isinstance(sync.get("flagged"), int):
            sync["flagged"] += self._unaccepted_count(self.store)
        return sync

    def _unaccepted_count(self, store: BlueprintStore) -> int:
        """len(unaccepted_files), walked again only when the watcher saw the folder change.

        A walk stats every file (0.3 s at 10,000 blueprints): too much for every status request.
        The key is read before the walk, so a change during it makes the next request walk again.
        """
        watcher = self.watcher
        key = None
        if watcher is not None and watcher.state is WatcherState.RUNNING:
            key = (watcher.stats.raw_events, watcher.stats.rescans)
        with self._unaccepted_mutex:
            known, count = self._unaccepted
            if key is None or key != known:
                count = len(unaccepted_files(store))
                self._unaccepted = (key, count)
            return count

    def _sync_engine(self) -> SyncEngine:
        """The engine, attached now if it was not yet; OpError when sync is off."""
        if self.engine is None and not self._attach_engine():
            logged_out = self._offline_reason == "not logged in"
            # The hint of the reason sync is off, as `status` gives it: the login's hint was
            # given whatever the reason, so a keychain that could not be read, or an engine
            # that could not start, sent the user to log in again, which changed nothing.
            hint = self._offline_hint or (
                "log in with `localstore login`; the daemon picks the session up"
                if logged_out
                else f"see the daemon's log ({self.settings.paths.state / LOG_FILE}) for why; "
                f"the daemon tries again every {RELOGIN_CHECK_S:.0f} s and at each sync request"
            )
            raise OpError(
                "not_logged_in" if logged_out else "offline",
                f"sync is off: {self._offline_reason}",
                hint=hint,
            )
        engine = self.engine
        assert engine is not None
        return engine

    def _op_verify(self) -> dict[str, Any]:
        # Here, not in the CLI: this engine's cycle lock keeps it between two cycles. Run in
        # `localstore sync --verify`'s own process, a push of the daemon's between its read of
        # the server and its read of the index was reported as a difference (exit 3). Allowed
        # while paused: it changes nothing, here or on the server.
        return self._sync_engine().verify().to_dict()

    def _op_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        wait = args.get("wait", False)
        if not isinstance(wait, bool):
            raise OpError("bad_request", "'wait' must be true or false")
        retry = args.get("retry_quarantined", False)
        if not isinstance(retry, bool):
            raise OpError("bad_request", "'retry_quarantined' must be true or false")
        engine = self._sync_engine()
        if self._paused:
            raise OpError("paused", "sync is paused", hint="resume it first")
        # Here, not in the CLI: the daemon holds the home's lock, so `localstore sync
        # --retry-quarantined` (the command `status` prints for each entry) was refused with
        # "another process is syncing this home" whenever the daemon ran.
        retried = engine.retry_quarantined() if retry else 0
        if not wait:
            engine.request_sync()
            status = self._with_unaccepted(self._sync_status())
            return {"requested": True, "retried": retried, "status": status}
        self._wait_for_watcher()
        report = engine.sync_once()
        # The engine's `flagged` counts index rows only: a new file that never parsed has none,
        # and was left out of the reply (and of "needs attention"); `localstore sync` patched
        # the count itself, other clients got the low one. The reply lists them all, as
        # `localstore status` does (a folder walk: small next to the cycle just run).
        status = self._sync_status()
        assert self.store is not None
        flagged = [f.to_dict() for f in (*list_flagged(self.store), *unaccepted_files(self.store))]
        status["flagged"] = len(flagged)
        return {
            "report": report.to_dict(),
            "status": status,
            "flagged_files": flagged,
            "retried": retried,
        }

    def _wait_for_watcher(self) -> None:
        """Barrier: edits made before a `sync` request are indexed before the cycle reads the outbox.

        If the watcher cannot say so (it failed, the folder is missing, it is still behind after
        SYNC_WAIT_IDLE_S), the request is refused rather than answered with a cycle that may
        silently leave those edits out.
        """
        watcher = self.watcher
        if watcher is None:
            return
        try:
            idle = watcher.wait_idle(SYNC_WAIT_IDLE_S)
            why = "it is still busy" if watcher.problem is None else watcher.problem
        except WatcherError as exc:
            idle, why = False, exc.message
        if not idle:
            raise OpError(
                "watcher_behind",
                f"the watcher cannot confirm that every edit is indexed: {why}",
                hint="see `localstore status`; try again, or sync without waiting",
            )

    def _op_pause(self, pause: bool) -> dict[str, Any]:
        with self._pause_mutex:
            # Recorded first: a pause must outlive a restart (docs/daemon.md, "Pause"). A state/
            # that cannot be written still pauses this daemon, as before, with a warning.
            state_dir = self.settings.paths.state
            try:
                if pause:
                    self._paused_since = write_pause(state_dir)
                else:
                    clear_pause(state_dir)
                    self._paused_since = None
            except OSError as exc:
                log.warning(
                    "could not %s the pause in %s (%s); it holds until the daemon stops",
                    "record" if pause else "remove",
                    state_dir,
                    exc.strerror or exc,
                )
                self._paused_since = time.time() if pause else None
            self._paused = pause
            try:
                if self.engine is not None:
                    if pause:
                        self.engine.pause()
                    else:
                        self.engine.resume()
                return self._sync_status()
            except LocalStoreError as exc:
                # Done by now (recorded, and the engine's flag set before it publishes its status):
                # only the counts that status reads from the index failed (a locked or damaged
                # index). An error reply said the pause or resume failed, and the user ran it again
                # or took sync for paused when it was not.
                word = "paused" if pause else "resumed"
                log.warning("sync %s, but its status could not be read: %s", word, exc.message)
                return {
                    "state": "paused" if pause else "idle",
                    "warning": {
                        "message": f"sync {word}, but the daemon could not report its status: "
                        f"{exc.message}",
                        "hint": exc.hint or "see `localstore doctor` and the daemon's log",
                    },
                }

    # -- metrics -----------------------------------------------------------------------------------

    def metrics_snapshot(self) -> dict[str, Any]:
        """Counters and gauges (what the ``metrics`` op and /metrics report)."""
        out: dict[str, Any] = {"counters": asdict(self.metrics), "gauges": {}}
        gauges = out["gauges"]
        gauges["uptime_seconds"] = round(span_clock() - self._started_up, 3)
        gauges["threads"] = threading.active_count()
        if self.engine is not None:
            status = self.engine.status()
            gauges.update(
                queue_depth=status.pending,
                conflicts_open=status.conflicts,
                quarantine=status.quarantined,
                held=status.held,
            )
        realtime = realtime_health(self.remote) if self.engine is not None else None
        if realtime is not None:
            gauges["realtime_subscribed"] = int(realtime["state"] == "subscribed")
            gauges["realtime_failures"] = realtime["failures"]
            out["counters"].update({f"realtime_{k}": v for k, v in realtime["stats"].items()})
        if self.store is not None:
            index = self.store.index_health()
            gauges["index_wal_bytes"] = index["wal_bytes"]
            if index["maintainer"] is not None:
                gauges["index_maintainer_running"] = int(index["maintainer"]["running"])
                gauges["index_maintenance_failed_rounds"] = index["maintainer"]["failed_rounds"]
        if self.watcher is not None:
            w = self.watcher.stats
            out["counters"].update(
                watcher_raw_events=w.raw_events,
                watcher_ingested=w.ingested,
                watcher_rescans=w.rescans,
                watcher_overflows=w.overflows,
                watcher_failures=w.failures,
                watcher_errors=w.errors,
            )
        if self.server is not None:
            control = asdict(self.server.stats)
            # The connections open now are a gauge, and the counter of all of them is
            # `control_connections` (Prometheus: ..._connections_total): reported as they are
            # named in ServerStats, they came out as `localstore_control_connections_total_total`
            # and a counter that went down.
            gauges["control_connections_open"] = control.pop("connections")
            control["connections"] = control.pop("connections_total")
            out["counters"].update({f"control_{k}": v for k, v in control.items()})
        with contextlib.suppress(ImportError, OSError):
            import psutil

            proc = psutil.Process()
            gauges["rss_bytes"] = proc.memory_info().rss
            # psutil has no num_fds() on Windows (AttributeError, which metrics would raise):
            # there the open handles are the same measure.
            count_open = getattr(proc, "num_fds", None) or getattr(proc, "num_handles", None)
            if count_open is not None:
                gauges["open_files"] = count_open()
        return out

    def prometheus_text(self) -> str:
        """The metrics in Prometheus text exposition format."""
        snap = self.metrics_snapshot()
        lines: list[str] = []
        for kind, values in (("counter", snap["counters"]), ("gauge", snap["gauges"])):
            for name, value in sorted(values.items()):
                metric = f"localstore_{name}"
                if kind == "counter" and not name.endswith("seconds"):
                    metric += "_total"
                mtype = "gauge" if name.endswith("seconds") or kind == "gauge" else "counter"
                lines.append(f"# TYPE {metric} {mtype}")
                lines.append(f"{metric} {float(value):g}")
        return "\n".join(lines) + "\n"


def _supabase_remote(settings: Settings) -> Remote:
    from sync.supabase_remote import remote_from_settings

    # A background process: a locked keychain is an error to wait on, never a prompt.
    return remote_from_settings(settings, timeout_s=REMOTE_TIMEOUT_S, keychain_prompt=False)
