"""The daemon's process-wide error hooks: what Python would print on stderr becomes a log record.

Three things reach stderr without going through ``logging``: a thread that ends on an unhandled
error (``threading.excepthook``), an exception Python has to ignore, raised in ``__del__``, a
weakref finalizer or an async generator's clean-up (``sys.unraisablehook``), and a warning
(``warnings.showwarning``). Under ``daemon --detach``, launchd and the Windows task stderr is
``state/daemon.out``, which nothing rotates, so for a daemon that runs for months each of these
grew it without bound. :class:`ProcessHooks` routes all three to the rotated ``daemon.log``
(``sync.daemon.configure_logging`` installs them; closing its log file puts back the hooks it
found, as a test's clean-up does).

A warning or an ignored exception that repeats (a ``ResourceWarning`` per request, a ``__del__``
failing for every object of a kind) is logged in full once, then as one line with its count at
its 10th, 100th, 1000th... occurrence: daemon.log is bounded (5 MB x 3), and a flood would rotate
away everything else in it. Python's own once-per-place warning filter is no such bound: any
``warnings.catch_warnings()`` (which libraries use) resets it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from sync.engine import LOGGED_ATTR

__all__ = ["ProcessHooks"]

# The records keep the names they always had: thread ends and ignored exceptions are the
# daemon's lines, warnings the logger logging.captureWarnings uses.
log = logging.getLogger("sync.daemon")
warnings_log = logging.getLogger("py.warnings")


def log_thread_end(args: threading.ExceptHookArgs) -> None:
    """The daemon's ``threading.excepthook``: a thread that ended on an unhandled error is a
    log record (ERROR, with its traceback unless its code logged it already), not a traceback
    printed on stderr.

    A sync loop that a bug ends at once is restarted every SYNC_RESTART_MAX_S at most for as long
    as the daemon runs, and each end printed its traceback to daemon.out (Python's default hook).
    """
    if args.exc_type is SystemExit:
        return  # (as the default hook: a thread may end itself that way)
    name = args.thread.name if args.thread is not None else "?"
    if getattr(args.exc_value, LOGGED_ATTR, False):
        log.error("thread %s ended on an unhandled error (logged above)", name)
        return
    log.error(
        "thread %s ended on an unhandled error",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )


def _logged_in_full_or_counted(n: int) -> bool:
    """True for the 1st, 10th, 100th... occurrence of one warning or ignored exception."""
    return str(n).rstrip("0") == "1"


class _Repeats:
    """How many times each warning or ignored exception was seen, by the place that raised it.

    Keyed by place (type, file, line), not by text: a ResourceWarning's text names the object
    left unclosed, so text keys would log each one in full. The places are lines of code, a
    bounded set, so the counts need no eviction.
    """

    def __init__(self) -> None:
        # Reentrant: a finalizer that the garbage collector runs inside count() (any allocation
        # can start a collection) may raise and come back here on the same thread.
        self._lock = threading.RLock()
        self._seen: dict[tuple[str, ...], int] = {}

    def count(self, key: tuple[str, ...]) -> int:
        with self._lock:
            n = self._seen.get(key, 0) + 1
            self._seen[key] = n
            return n


class ProcessHooks:
    """The daemon's thread-end, unraisable and warning hooks; :meth:`restore` puts back the
    hooks :meth:`install` replaced."""

    def __init__(self) -> None:
        self._repeats = _Repeats()
        self._previous: tuple[Any, Any, Any] | None = None
        # Bound once: restore() tells its own hooks from later ones by identity, and each
        # attribute access of a method makes a new bound-method object.
        self._unraisable = self._log_unraisable
        self._showwarning = self._log_warning

    def install(self) -> None:
        """Route thread ends, ignored exceptions and warnings to the log, from now on."""
        self._previous = (threading.excepthook, sys.unraisablehook, warnings.showwarning)
        threading.excepthook = log_thread_end
        sys.unraisablehook = self._unraisable
        warnings.showwarning = self._showwarning

    def restore(self) -> None:
        """Put back the hooks install() replaced. Idempotent.

        A hook someone installed after ours is theirs to keep: only hooks still ours go back.
        """
        if self._previous is None:
            return
        excepthook, unraisablehook, showwarning = self._previous
        self._previous = None
        if threading.excepthook is log_thread_end:
            threading.excepthook = excepthook
        if sys.unraisablehook is self._unraisable:
            sys.unraisablehook = unraisablehook
        if warnings.showwarning is self._showwarning:
            warnings.showwarning = showwarning

    def _log_unraisable(self, unraisable: Any) -> None:
        # (Any: sys.UnraisableHookArgs is not a class typeshed lets us name at run time.)
        exc_type: type[BaseException] = unraisable.exc_type
        obj = unraisable.object
        # By place, and by the object's type rather than its repr, which names its address.
        key: tuple[str, ...] = ("unraisable", exc_type.__qualname__, unraisable.err_msg or "")
        key += (type(obj).__qualname__,)
        tb: TracebackType | None = unraisable.exc_traceback
        while tb is not None:  # the innermost frame: where it was raised
            if tb.tb_next is None:
                key += (tb.tb_frame.f_code.co_filename, str(tb.tb_lineno))
            tb = tb.tb_next
        what = unraisable.err_msg or "Exception ignored in"
        if obj is not None:
            # Text now, not the object: a record that kept the object being finalized would
            # resurrect it (sys.unraisablehook's documentation).
            what = f"{what}: {_safe_text(repr, obj)}"
        n = self._repeats.count(key)
        if n == 1:
            exc_info = (exc_type, unraisable.exc_value, unraisable.exc_traceback)
            log.warning("%s", what, exc_info=exc_info)
        elif _logged_in_full_or_counted(n):
            log.warning(
                "%s (%s: %s, the same error %d times so far; logged in full the first time)",
                what,
                exc_type.__qualname__,
                _safe_text(str, unraisable.exc_value),
                n,
            )

    def _log_warning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        # Our own hook, not logging.captureWarnings(True): that one logs the formatted text
        # only, so repeats could be told apart by their text alone (see _Repeats).
        if file is not None:
            # A file of its own was asked for (warnings.showwarning's contract): written there,
            # as the standard hook does.
            with contextlib.suppress(OSError):
                file.write(warnings.formatwarning(message, category, filename, lineno, line))
            return
        n = self._repeats.count(("warning", category.__qualname__, filename, str(lineno)))
        if n == 1:
            text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
            warnings_log.warning("%s", text)
        elif _logged_in_full_or_counted(n):
            warnings_log.warning(
                "%s:%s: %s: %s (this warning %d times so far; logged in full the first time)",
                filename,
                lineno,
                category.__qualname__,
                message,
                n,
            )


def _safe_text(show: Callable[[object], str], obj: object) -> str:
    try:
        return show(obj)
    except Exception:  # noqa: BLE001 - a broken __repr__ or __str__ must not hide the error
        return f"<{type(obj).__qualname__} object ({show.__name__} failed)>"
