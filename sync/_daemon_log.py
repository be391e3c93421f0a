"""The daemon's log: ``state/daemon.log`` (rotating, 0600, reopened when deleted or replaced, quiet
while it cannot be written), its text and JSON line formats, the filter that re-levels a flaky
network's reconnect noise, and the handler that forwards error records to control API subscribers.

:func:`configure_logging` installs it; :mod:`sync.daemon` re-exports it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localstore._daemon_state import open_private_append
from localstore.errors import LocalStoreError
from sync._log_hooks import ProcessHooks
from sync._shown import CredentialFilter

log = logging.getLogger("sync.daemon")

LOG_FILE = "daemon.log"
LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3


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
