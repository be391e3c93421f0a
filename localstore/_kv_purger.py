"""The app-data store's :class:`Purger`: a background thread deleting expired items."""

from __future__ import annotations

import enum
import logging
import numbers
import threading
import weakref
from typing import TYPE_CHECKING

from localstore._failure_streak import FailureStreak
from localstore.errors import InvalidInputError, KVError, LocalStoreError, StoreClosedError

if TYPE_CHECKING:
    from localstore.kv import KVStore

# (The name of the module callers know: apps filter app-data logs by it.)
log = logging.getLogger("localstore.kv")

DEFAULT_PURGE_INTERVAL_S = 60.0


class PurgerState(enum.Enum):
    """Lifecycle of a :class:`Purger`."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Purger:
    """Background thread deleting expired app-data items every ``interval`` seconds.

    Lifecycle: ``start()`` once, ``stop()`` then ``join()``; ``purge_once()`` does one round
    synchronously (tests call it instead of waiting). It holds its store weakly: once the store
    is closed or garbage-collected the thread exits and ``purge_once()`` raises StoreClosedError.
    A failed round is logged as the index maintainer logs one: the first of a streak at once,
    then at most every 10 minutes, and the round that works again says so.
    """

    def __init__(self, kv: KVStore, *, interval: float = DEFAULT_PURGE_INTERVAL_S) -> None:
        # NaN makes every wait return at once (a busy loop), and a wait past TIMEOUT_MAX (inf)
        # raises OverflowError inside the thread, which then dies unseen.
        usable = isinstance(interval, numbers.Real) and not isinstance(interval, bool)
        if not (usable and 0 < interval <= threading.TIMEOUT_MAX):
            raise InvalidInputError(
                f"the purge interval must be a positive number of seconds, not {interval!r:.40}",
                hint=f"leave it out for the default ({DEFAULT_PURGE_INTERVAL_S:g} s)",
            )
        # Weak: the thread (a GC root) held the store, so a store dropped without close() was
        # never collected, and its purger ran for the life of the process.
        self._kv = weakref.ref(kv)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rounds = 0
        self._round_done = threading.Condition()
        self._streak = FailureStreak()
        self.state = PurgerState.NEW
        self.purged = 0

    def start(self) -> None:
        """Start the thread. Raises KVError if already started."""
        if self.state is not PurgerState.NEW:
            raise KVError(f"cannot start a purger that is {self.state.value}")
        self._thread = threading.Thread(target=self._run, name="localstore-kv-purger", daemon=True)
        self.state = PurgerState.RUNNING
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to exit after its current round."""
        if self.state is PurgerState.RUNNING:
            self.state = PurgerState.STOPPING
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to exit."""
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self.state = PurgerState.STOPPED

    def purge_once(self) -> int:
        """Purge synchronously; return how many items were deleted.

        Raises StoreClosedError once the store is closed or gone (and what purge_expired raises).
        """
        kv = self._kv()
        if kv is None:
            raise StoreClosedError(
                "the app-data store this purger served was garbage-collected",
                hint="keep a reference to the KVStore while you use its purger",
            )
        n = kv.purge_expired()
        self.purged += n
        return n

    def wait_rounds(self, n: int, timeout: float) -> bool:
        """Block until the thread has finished ``n`` rounds in total; False on timeout."""
        with self._round_done:
            return self._round_done.wait_for(lambda: self._rounds >= n, timeout)

    def _run(self) -> None:
        try:
            self._rounds_until_stopped()
        finally:
            # The thread ends (stopped, or its store closed or gone): say so, rather than
            # leave an app's status page showing "running" for a purger that no longer runs.
            self.state = PurgerState.STOPPED

    def _rounds_until_stopped(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.purge_once()
            except StoreClosedError:
                return
            except LocalStoreError as exc:  # a busy or full disk: log it and try next round
                self._failed(exc, expected=True)
            except Exception as exc:  # noqa: BLE001 (why: below)
                # Anything else (a bug, an app's clock that raised) ended the thread silently,
                # its state left RUNNING, and expired items then piled up for the life of the
                # process. Logged with its traceback; the next round tries again.
                self._failed(exc, expected=False)
            else:
                failed = self._streak.succeeded()
                if failed:
                    log.warning("app-data purge works again after %d failed round(s)", failed)
            with self._round_done:
                self._rounds += 1
                self._round_done.notify_all()

    def _failed(self, exc: Exception, *, expected: bool) -> None:
        # Rate-limited: a WARNING every round (each minute) for as long as a disk stayed full
        # buried everything else in an app's log; the streak's length tells it has gone on.
        if not self._streak.failed():
            return
        log.log(
            logging.WARNING if expected else logging.ERROR,
            "app-data purge failed%s (%d round(s) in a row: %s); expired items stay until a "
            "round succeeds (retrying every %g s)",
            "" if expected else " unexpectedly",
            self._streak.count,
            exc,
            self._interval,
            exc_info=not expected,
        )
