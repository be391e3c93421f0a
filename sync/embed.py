"""Sync inside a desktop app, and the one lock that keeps a home to a single syncing process.

A home is synced by at most one process: the daemon (``localstore daemon``) or an app that runs the
engine in-process (:func:`start_sync`). Both hold :class:`HomeLock`, an ``fcntl.flock`` on
``state/daemon.lock``. flock was chosen over a pid file alone because the kernel releases it when
the holder dies, even by SIGKILL, so a crashed daemon never leaves the home stuck; and over POSIX
``fcntl`` record locks because those are dropped when *any* descriptor of the file is closed in the
process (the field-notes trap about SQLite), while flock belongs to one open file description.

:func:`daemon_running` answers "does a daemon serve this home?" from ``state/daemon.json`` plus
the pid and the flock, without any network I/O, so ``localstore.open()`` can call it cheaply.
It only needs the standard library and :mod:`localstore.config`; the ``localstore`` package keeps
its own copy of it (``localstore`` never imports ``sync``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore import _durable
from localstore import files as fs
from localstore._daemon_state import (
    LOCK_FILE,
    PAUSED_DETAIL,
    STATE_FILE,
    clear_pause,
    daemon_running,
    lock_is_held,
    read_pause,
    read_state,
    write_pause,
)
from localstore._state_temps import write_state_file
from localstore.config import Settings
from localstore.errors import (
    InvalidInputError,
    LocalStoreError,
    LockHeldError,
    NewerIndexError,
    StoreClosedError,
    wrong_type,
)
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
from sync._local import offline_hint, status_hint
from sync.errors import EngineStateError, NotLoggedInError, SyncError, SyncLockedError
from sync.session_marker import SessionMarker

if TYPE_CHECKING:
    from localstore.events import Event
    from localstore.store import BlueprintStore
    from localstore.watcher import Watcher
    from sync.engine import SyncEngine, SyncStatus
    from sync.remote import Remote

__all__ = [
    "LOCK_FILE",
    "STATE_FILE",
    "EmbeddedSync",
    "HomeLock",
    "daemon_running",
    "lock_holder",
    "read_state",
    "remove_state",
    "start_sync",
    "write_state",
]

log = logging.getLogger("sync.embed")

# The HomeLocks of this process that hold their flock (see _forget_locks_in_child).
_HELD: weakref.WeakSet[HomeLock] = weakref.WeakSet()


def home_gone(index_db: Path) -> str:
    """Why the home's index is not at its path any more ("" when it is, or when unsure).

    Deleted with the data folder, moved away with the home, or its disk unmounted: the store
    then writes to a file no path names, and everything saved or pulled is lost at exit.
    Anything else (no permission, say) may heal: "" then, not "gone".
    """
    try:
        os.stat(index_db)
    except (FileNotFoundError, NotADirectoryError) as exc:
        return exc.strerror or type(exc).__name__
    except OSError:
        return ""
    return ""


class HomeLock:
    """The single-sync-process lock of a home: ``flock(LOCK_EX)`` on ``state/daemon.lock``.

    ``acquire(blocking=False)`` returns False when another open file description holds it (another
    process, or another HomeLock in this process). The holder's pid is written into the file for
    error messages; the lock itself is the flock, never the file's content. Meets
    ``sync.engine.EngineLock``.
    """

    def __init__(self, state_dir: Path, name: str = LOCK_FILE) -> None:
        self.path = Path(state_dir) / name
        self._fd: int | None = None
        self._mutex = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings) -> HomeLock:
        """The lock of ``settings``' home."""
        return cls(settings.paths.state)

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self, blocking: bool = False) -> bool:
        """Take the lock; False if another holder has it (only when not ``blocking``)."""
        with self._mutex:
            if self._fd is not None:
                return True
            fd = self._lock_file(blocking)
            if fd is None:
                return False
            self._fd = fd
            _HELD.add(self)
            return True

    def _lock_file(self, blocking: bool) -> int | None:
        """Open (creating) and flock the file at ``path`` and write our pid into it; None if
        another process holds it (only when not ``blocking``)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _durable.O_CLOEXEC, 0o600)
        try:
            # flock on POSIX; on Windows (no fcntl module) a byte-range lock past the pid.
            locked = _durable.try_lock(fd, blocking=blocking)
        except OSError:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def still_held(self) -> bool:
        """Check that the file at ``path`` is the one locked; re-lock it if it was deleted.

        An flock belongs to an inode: if ``state/`` (or the lock file) is deleted while we hold
        it, another process can create and lock a new file at the same path, and two processes
        sync one home. The daemon calls this every tick: a vanished or replaced file is locked
        anew (the pid written again). Returns False when another process holds the file now at
        the path: this one must stop syncing. Raises OSError when the file cannot be created.
        """
        with self._mutex:
            fd = self._fd
            if fd is None:
                return False
            held = os.fstat(fd)
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
                    return True
            except FileNotFoundError:
                pass
            log.warning("the lock file %s was deleted or replaced; locking it again", self.path)
            new = self._lock_file(blocking=False)
            if new is None:
                return False
            self._fd = new
            os.close(fd)  # the old inode: nobody can find it by path any more
            return True

    def acquire_or_raise(self, what: str = "sync") -> None:
        """Take the lock or raise LockHeldError naming the holder's pid."""
        if not self.acquire(blocking=False):
            pid = lock_holder(self.path.parent)
            who = f"process {pid}" if pid else "another process"
            raise LockHeldError(
                f"cannot {what}: {who} already syncs this home",
                hint="stop it first (`localstore status` shows the daemon), or use that one",
            )

    def release(self) -> None:
        """Release the lock (idempotent). The file stays: deleting it would race a new holder."""
        with self._mutex:
            fd, self._fd = self._fd, None
            _HELD.discard(self)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            # Windows frees a lock left to its handle's close only "eventually": a daemon
            # restarted at once met exit 75. (On POSIX the close below frees the flock.)
            with contextlib.suppress(OSError):
                _durable.unlock(fd)
            os.close(fd)  # closing the description releases the flock


def _forget_locks_in_child() -> None:
    """In a forked child: let go of the parent's home locks without unlocking them.

    A child inherits the lock's open file description, and an flock belongs to the description:
    a child that outlived the parent's ``release()`` (a ``multiprocessing`` worker pool) kept the
    home locked, so the app could not start sync again, nor a daemon. Closing the child's copy
    drops only its reference (``LOCK_UN`` would unlock the parent too); the child does not sync.
    """
    for lock in list(_HELD):
        fd, lock._fd = lock._fd, None
        lock._mutex = threading.Lock()  # (another thread of the parent may have held it)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):  # (no fork on Windows)
    os.register_at_fork(after_in_child=_forget_locks_in_child)


def lock_holder(state_dir: Path) -> int | None:
    """The pid written by the lock's current holder, or None when nobody holds it."""
    if not lock_is_held(state_dir):
        return None
    try:
        text = (Path(state_dir) / LOCK_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


# -- state/daemon.json -----------------------------------------------------------------------------


def write_state(state_dir: Path, data: dict[str, Any]) -> Path:
    """Write ``state/daemon.json`` atomically with mode 0600 (it holds the control token)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_state_file(state_dir / STATE_FILE, json.dumps(data, indent=2).encode("utf-8"))
    return state_dir / STATE_FILE


def remove_state(state_dir: Path, pid: int) -> None:
    """Remove ``state/daemon.json`` if it still belongs to ``pid``."""
    current = read_state(state_dir)
    if current is not None and current.get("pid") == pid:
        with contextlib.suppress(FileNotFoundError):
            fs.unlink_file(Path(state_dir) / STATE_FILE)


# -- in-process sync for embedding apps -----------------------------------------------------------


# How often an app's in-process sync checks that its home lock file is still its own.
LOCK_CHECK_S = 2.0
# How often it looks for saves of other processes and for a logout/login (as the daemon's tick).
TICK_S = 0.5
# Without a session (after a logout), how often it tries to open one; a login is noticed at once.
RELOGIN_CHECK_S = 60.0
# How long a stop waits for an old engine when a new login replaces it.
REPLACE_JOIN_S = 10.0

RemoteFactory = Callable[[Settings], "Remote"]

# What EmbeddedSync.status() says once a newer localstore upgraded the home under the app.
UPGRADED_DETAIL = (
    "a newer localstore upgraded this home's index while this app ran, so this app can no "
    "longer write to it: its sync stopped and left the home to the newer version (edits stay "
    "in the files until that version records them)"
)
UPGRADED_FIX = (
    "restart this app, so that it runs the newer localstore (one that still runs this version "
    "cannot open the home: update the app)"
)


class EmbeddedSync:
    """An app's in-process sync: the engine, the home lock, and what the daemon would follow.

    Besides the engine it runs (see docs/daemon.md, "Embedding"): a Watcher on the store unless
    the app runs one (``watcher``; stopped with the sync if started here), and a small thread
    that every ``TICK_S`` publishes to the store's subscribers the changes other processes
    committed (the CLI, another ``localstore.open()``; events with ``process="other"``, which
    wake the engine as the app's own saves do), replaces the watcher it started if that one
    died (``watcher`` is then the new one; ``watcher_restarts`` counts them), checks the home's
    lock file every ``LOCK_CHECK_S`` and, when ``start_sync`` opened the remote from the home's
    login, replaces remote and engine after a ``localstore logout``/``login``. ``engine`` is
    then the new engine; ``offline`` says why nothing syncs (None while an engine runs). stop()
    (or closing the store) ends it all.

    A pause is the home's, as the daemon's (docs/daemon.md, "Pause"): one recorded in
    ``state/sync-paused.json`` (``localstore daemon --pause``, or this app before it quit) holds
    from the start, before any cycle; ``pause()``/``resume()`` record/remove it; a pause or
    resume another process records while this runs (the CLI) is followed within a tick.
    ``status()`` shows it (``paused_since`` and the hint in ``detail``).
    """

    def __init__(
        self,
        engine: SyncEngine,
        lock: HomeLock,
        remote: Remote | None,
        *,
        watcher: Watcher | None = None,
        own_watcher: bool = False,
        remote_factory: RemoteFactory | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self._lock = lock
        # The remote this object must close: the one start_sync opened, never an app's own.
        self._remote = remote
        self.watcher = watcher
        self._own_watcher = own_watcher
        # Only the watcher started here is replaced when it dies: an app's own is the app's.
        self._watcher_keeper = WatcherKeeper(self.store) if own_watcher else None
        self._factory = remote_factory
        self._engine_kwargs = dict(engine_kwargs or {})
        self._init_lifecycle()
        self._status_listeners: dict[int, Callable[[SyncStatus], None]] = {}
        self._status_unsubs: dict[int, Callable[[], None]] = {}
        self._listener_seq = 0
        # The engine's status as last read, for status() once the store (its index) is closed.
        self._last_status: SyncStatus | None = None
        self._marker = SessionMarker.for_settings(self.store.settings) if remote_factory else None
        self._init_pause()
        self._start_follower()

    def _init_lifecycle(self) -> None:
        """Set up whether this sync runs, and why it stopped or is offline."""
        self._stopped = False
        # Takes the handle's stop back from the store's close hooks (start_sync sets it).
        self._unhook_close: Callable[[], None] = lambda: None
        self._mutex = threading.Lock()
        # True once another process took the home's lock (see _check_lock): sync stopped.
        self.lost_lock = False
        self.home_gone = False  # the home's index vanished from its path: sync stopped
        # A newer localstore upgraded the home's index while this app ran: sync stopped and the
        # home's lock released, for the newer version (see _stop_upgraded).
        self.upgraded: NewerIndexError | None = None
        # Why no engine syncs ("not logged in", ...), None while one does.
        self.offline: str | None = None
        self._offline_hint = ""  # (what to do about ``offline``)
        self._offline_on_keychain = False  # (``offline`` for a keychain failure)
        self._next_relogin = 0.0
        # Ends sync's wait for a person when the keychain opens, as the daemon's does.
        self._keychain = KeychainWatch()

    def _init_pause(self) -> None:
        """Set up the home's pause, paused now if one is recorded (before any cycle)."""
        # The home's pause (see the class doc). _paused is this sync's; _pause_recorded whether
        # the file was there at the last look, so that only a change made by another process
        # (the CLI) is followed; _pause_mutex orders those looks with pause()/resume().
        self._state_dir = self.store.settings.paths.state
        self._pause_mutex = threading.RLock()
        recorded = read_pause(self._state_dir)
        self._pause_recorded = recorded is not None
        self._paused = False
        self.paused_since: float | None = None
        if recorded is not None:
            # Before the engine's first cycle: someone on a metered connection paused sync.
            log.info("sync stays paused, as recorded for this home (%s)", PAUSED_DETAIL)
            self._set_paused(True, _since(recorded))()  # (no listener yet)

    def _start_follower(self) -> None:
        """Start following the store's commits and the follower thread (see the class doc)."""
        self._foreign = ForeignChanges(self.store)  # (takes index_changed()'s baseline)
        # Observed, not subscribed: a whole commit is claimed before any subscriber hears of it.
        self._unsub_claims = self.store.events.observe(self._claim)
        self._done = threading.Event()
        self._ticker = threading.Thread(
            target=self._run, name="localstore-sync-follow", daemon=True
        )
        self._ticker.start()

    # -- the follower thread -------------------------------------------------------------------------

    def _run(self) -> None:
        next_lock_check = time.monotonic() + LOCK_CHECK_S
        while not self._done.wait(min(TICK_S, LOCK_CHECK_S)):
            now = time.monotonic()
            if now >= next_lock_check:
                next_lock_check = now + LOCK_CHECK_S
                if not self._check_lock() or not self._check_index_version():
                    return
            for step in (
                self._follow_pause,
                self._check_watcher,
                self._follow_keychain,  # (before the session: an attach it allows comes now)
                self._check_session,
                self._follow_foreign_changes,
            ):
                if self._done.is_set():
                    # stop() (the store closing) came during this tick: the steps left would
                    # publish another process's changes to an app that is closing its store.
                    return
                try:
                    step()
                except Exception as exc:  # the thread must survive a bad tick; logged with why
                    if self._done.is_set():  # the store closed under the last tick: expected
                        return
                    if isinstance(exc, LocalStoreError):
                        log.warning("%s: %s", step.__name__.strip("_").replace("_", " "), exc)
                    else:
                        log.exception("in-process sync: %s failed", step.__name__)

    def _check_lock(self) -> bool:
        """Check the home's lock file, as the daemon does every tick; False when it was lost.

        Deleting ``state/`` takes the lock file with it; another process could then lock a new
        file at the same path and sync the same home alongside this app. A vanished file is
        locked again; a file another process holds now stops this engine. A home deleted or
        moved away as a whole stops it too, as it stops the daemon: locking "again" made
        ``state/`` anew at the old path, and the engine went on syncing into an index no path
        names (everything it pulled lost when the app closed).
        """
        gone = home_gone(self.store.settings.paths.index_db)
        if gone:
            log.error(
                "stopping this app's sync: the home's index %s is gone (%s): the home was "
                "deleted or moved, or its disk unmounted; open the store where it is now",
                self.store.settings.paths.index_db,
                gone,
            )
            self.home_gone = True
            self.engine.stop()
            return False
        try:
            held = self._lock.still_held()
        except OSError as exc:
            log.error("cannot restore the home's lock %s: %s; retrying", self._lock.path, exc)
            return True
        if held:
            return True
        log.error(
            "process %s took this home's lock after it was deleted; stopping this "
            "app's sync so that only one process syncs the home",
            lock_holder(self._lock.path.parent) or "?",
        )
        self.lost_lock = True
        self.engine.stop()
        return False

    def _check_index_version(self) -> bool:
        """False (sync stopped, the home let go) once a newer localstore upgraded the home's
        index under this app, as the daemon's tick stops it (docs/daemon.md, "A newer
        localstore upgraded the home"). A read: the core's version is in the file's header."""
        try:
            newer = self.store.index.newer_version()
        except LocalStoreError as exc:  # (the next check asks again; the lock check logs)
            log.debug("cannot read the index's schema version: %s", exc)
            return True
        if newer is None:
            return True
        self._stop_upgraded(newer)
        return False

    def _stop_upgraded(self, exc: NewerIndexError) -> None:
        """Stop this sync for good and release the home's lock: every write of this localstore
        is refused now (its rows could mean what the newer version does not).

        Before, the engine's loop stopped at its first refused write, but this handle kept the
        home's lock (and its watcher, each edit given up) for as long as the app ran: the newer
        version's daemon exited 75 and the newer app's ``start_sync`` was refused, so nothing
        synced the home until this app quit, and its status said to start sync again, which
        changes nothing. Nothing is lost: edits stay in the files until the newer version
        records them. The store stays open (the app's): its reads go on.
        """
        from localstore import __version__

        log.error(
            "stopping this app's sync: a newer localstore upgraded this home's index while this "
            "app (localstore %s) ran, so it can no longer write to it: %s; the home is left to "
            "the newer version (its daemon, or an app running it), and edits made meanwhile "
            "stay in the files until it records them (fix: restart this app, so that it runs "
            "the newer localstore)",
            __version__,
            exc.message,
        )
        self.upgraded = exc
        self.stop()  # (on this thread: waits for the engine, then releases the lock)
        # After the loop ended: a cycle finishing meanwhile does not set the state back.
        self.engine.record_newer_index(exc)

    def _claim(self, events: Sequence[Event]) -> None:
        # Before any subscriber hears this commit: what other processes changed before it in
        # the same blueprints is heard first (the app's own save of a blueprint another
        # process had just moved came as "modified" at a path it had never heard of).
        if not self._done.is_set():
            rows = self._foreign.before_own(events)
            if rows:
                self.store.events.publish(
                    e for row in rows for e in foreign_events(self.store, row)
                )
        for event in events:
            self._foreign.claim(event.id, event.rev)

    def _follow_foreign_changes(self) -> None:
        """Publish the rows another process committed to the store's subscribers (as the daemon).

        The trigger is the index's ``data_version`` rather than the daemon's file activity: it
        moves on every other connection's commit whether or not a watcher runs here. The events
        reach the app and the engine alike: the engine wakes for them as for the app's own saves
        (after its debounce, without cutting a back-off short), so there is no second wake-up
        here. ``_claim`` sees them too (they are not this store's own: nothing to look for).
        """
        rows = self._foreign.poll(self._foreign.index_changed())
        if rows:
            events = [e for row in rows for e in foreign_events(self.store, row)]
            if self._done.is_set():
                return  # stopped while they were read: nobody is to hear of them any more
            log.debug("%d change(s) by another process", len(events))
            # This thread holds no index transaction: delivered now, on this thread.
            self.store.events.publish(events)

    def _check_watcher(self) -> None:
        """Replace the watcher start_sync started if its worker died (the daemon's keeper)."""
        keeper = self._watcher_keeper
        if keeper is None or self._done.is_set():
            return
        new = keeper.check(self.watcher)
        if new is not None:
            self.watcher = new

    @property
    def watcher_restarts(self) -> int:
        """How many times the watcher start_sync started was replaced after it died."""
        return self._watcher_keeper.restarts if self._watcher_keeper is not None else 0

    def watcher_status(self) -> dict[str, Any]:
        """The followed watcher as the daemon's ``status`` reports it: ``state`` (``running``,
        ``degraded``, ``failed``, ...; ``stopped`` without one), ``problem`` and ``restarts``.

        A dead watcher that could not be replaced yet is ``failed``, with the reason.
        """
        state, problem = watcher_health(self.watcher, self._watcher_keeper)
        return {"state": state, "problem": problem, "restarts": self.watcher_restarts}

    def _check_session(self) -> None:
        """Follow `localstore logout` / `login` under a remote start_sync opened (as the daemon).

        A logout, or another user's login, makes the remote refuse for good: the engine is
        stopped and the remote closed at once, and a new remote is opened from what is stored
        now (the new user's first cycle runs the engine's identity check). Without a session it
        stays offline, trying again at the next login or every RELOGIN_CHECK_S.
        """
        if self._factory is None or self._marker is None:
            return
        if self._marker.changed():
            if self.offline is None:
                lost = session_lost(self._remote)
                if lost is None:
                    # The same user logged in again: the engine carries on, and syncs now (after
                    # a revoked session it waits a minute or more for a person, who just acted).
                    self.engine._request_sync()  # (unchecked: the store may be closing)
                    return
                self._detach(lost)
            self._attach()
        elif self.offline is not None and time.monotonic() >= self._next_relogin:
            self._attach()

    def _follow_keychain(self) -> None:
        """End sync's wait for a person when the keychain opens (see sync._keychain_watch)."""
        self._keychain.follow(
            None if self.offline is not None else self.engine,
            offline_on_keychain=self._offline_on_keychain,
            attach_now=self._attach_now,
        )

    def _attach_now(self) -> None:
        self._next_relogin = 0.0

    def _detach(self, exc: SyncError) -> None:
        with self._mutex:
            engine, remote = self.engine, self._remote
            self._remote = None
            self.offline = "not logged in"
            self._offline_hint = offline_hint(self.offline, exc)
        log.warning("sync stopped: %s", exc.message)
        engine.stop()
        if not engine.join(REPLACE_JOIN_S):
            log.warning("the sync cycle in flight did not finish; its remote is closed under it")
        close_remote(remote)

    def _attach(self) -> None:
        """Open a remote from the home's session and start a new engine; offline if impossible.

        A remote opened for an engine that then cannot start is closed here, whatever the error,
        as the daemon's ``_attach_engine`` closes it: left open (HTTP client, refresh timer,
        realtime threads), one leaked at every try for as long as the fault lasted.
        """
        assert self._factory is not None
        self._next_relogin = time.monotonic() + RELOGIN_CHECK_S
        try:
            remote = self._factory(self.store.settings)
        except (SyncError, LocalStoreError) as exc:
            if self._done.is_set():
                return  # (the store closed under it: a stopped sync is not "offline")
            reason = "not logged in" if isinstance(exc, NotLoggedInError) else exc.message
            self._go_offline(reason, exc)
            return
        try:
            started = self._start_engine(remote)
        except Exception as exc:  # any error: the remote must not leak (see the docstring)
            close_remote(remote)
            if self._done.is_set():
                return  # (the store closed under it: a stopped sync is not "offline")
            if not isinstance(exc, LocalStoreError | SyncError):
                log.error("sync could not start", exc_info=exc)  # (a bug: its traceback)
            # (Not "not logged in" with the login hint: the person just logged in.)
            self._go_offline(f"sync could not start: {exc}", exc)
            return
        if not started:  # stopped meanwhile
            close_remote(remote)
            return
        log.info("sync started again for %s", getattr(remote, "identity", "the cloud"))

    def _start_engine(self, remote: Remote) -> bool:
        """Start an engine on ``remote`` as this sync's; False when this sync stopped meanwhile.

        Raises what building or starting it raised (the engine then holds nothing)."""
        from sync.engine import SyncEngine

        engine = SyncEngine(self.store, remote, **self._engine_kwargs)
        if self.engine.status().state == "paused":  # a pause of the old engine outlives the login
            engine.pause()
        with self._mutex:
            if self._stopped:
                return False
            if self._paused:  # (read under the mutex: a pause() now reaches this engine)
                engine.pause()  # (no listener on it yet: nobody is called under the mutex)
            unsubs = {t: engine.subscribe_status(f) for t, f in self._status_listeners.items()}
            engine.start()  # (the old engine's listeners stay theirs if this raises)
            self._status_unsubs.update(unsubs)
            self.engine, self._remote, self.offline = engine, remote, None
        return True

    def _go_offline(self, reason: str, exc: BaseException) -> None:
        if reason != self.offline:
            log.warning("sync is off: %s", exc)
        self._offline_on_keychain = keychain_failure(exc)
        hint = offline_hint(reason, exc)
        # Both at once, under the mutex status() reads them under: set one after the other, a
        # status read between showed the new reason with the old one's hint (a misconfigured
        # project with "log in", for a person who just had).
        with self._mutex:
            self.offline, self._offline_hint = reason, hint

    def _follow_pause(self) -> None:
        """Follow a pause or resume another process recorded for the home (the CLI)."""
        tell = _nothing
        with self._pause_mutex:
            recorded = read_pause(self._state_dir)
            if (recorded is not None) == self._pause_recorded:
                return
            self._pause_recorded = recorded is not None
            if recorded is not None and not self._paused:
                log.info("sync paused for this home by another process (%s)", PAUSED_DETAIL)
                tell = self._set_paused(True, _since(recorded))
            elif recorded is None and self._paused:
                log.info("sync resumed for this home by another process")
                tell = self._set_paused(False, None)
        tell()

    def _set_paused(self, pause: bool, since: float | None) -> Callable[[], None]:
        """Pause or resume the engine; returns what tells its status listeners, for the caller
        to call once it has let go of ``_pause_mutex``.

        Told under it, a listener that waited for the app's UI thread while that thread called
        pause() (the CLI paused the home: the listener ran on the follower thread) waited for
        ever, each thread for the other.
        """
        with self._mutex:
            self._paused, self.paused_since = pause, since
            engine = self.engine
        changed = engine._mark_paused(pause)
        if not pause:
            engine._request_sync()  # (unchecked, as _mark_paused: the follower's too)
        return engine._notify_status if changed else _nothing

    # -- the app's side -------------------------------------------------------------------------------

    def _check_store_open(self) -> None:
        """Raise StoreClosedError once the store is closed: a pause or resume then wrote the
        home's pause file for a sync that no longer runs (the daemon and the app's next start
        paused), and a status listener was kept that nothing would call. In a child forked from
        the store's process, the store's refusal: the sync and its threads are the parent's."""
        self.store.index.check_process()
        if self.store.closed:
            raise StoreClosedError(
                "the store is closed, and its sync with it",
                hint="open the store again and start_sync() there; `localstore daemon --pause` "
                "or `--resume` change the home's pause without one",
            )

    @property
    def paused(self) -> bool:
        """True while this home's sync is paused (by ``pause()``, or recorded for the home)."""
        return self._paused

    def pause(self) -> None:
        """Pause syncing (the current step finishes) until ``resume()``, for the home.

        Recorded in ``state/sync-paused.json``, so the pause outlives this app and holds for the
        daemon too (docs/daemon.md, "Pause"). A state/ that cannot be written pauses this sync
        anyway, with a warning that the pause ends with it. Local saves go on and sync after.
        Raises StoreClosedError once the store is closed (nothing recorded).
        """
        self._check_store_open()
        with self._pause_mutex:
            try:
                since: float | None = write_pause(self._state_dir)
                self._pause_recorded = True
            except OSError as exc:
                log.warning(
                    "could not record the pause in %s (%s); it holds until this sync stops",
                    self._state_dir,
                    exc.strerror or exc,
                )
                since = self.paused_since or time.time()
            tell = self._set_paused(True, since)
        tell()  # (on this thread, as engine.pause() does, and under no lock)

    def resume(self) -> None:
        """Sync again, starting now, and remove the home's recorded pause.

        Raises StoreClosedError once the store is closed (the pause stays recorded).
        """
        self._check_store_open()
        with self._pause_mutex:
            try:
                clear_pause(self._state_dir)
                self._pause_recorded = False
            except OSError as exc:
                # Still recorded: this sync resumes, a later one (or a daemon) starts paused.
                log.warning(
                    "could not remove the pause in %s (%s); the next start is paused again",
                    self._state_dir,
                    exc.strerror or exc,
                )
            tell = self._set_paused(False, None)
        tell()

    def status(self) -> dict[str, Any]:
        """Sync status as the daemon's ``status`` op shows it (``sync``): the engine's
        ``SyncStatus`` fields plus ``logged_in``, ``detail`` (why nothing syncs, with what to do),
        ``hint`` (what the person should do, as `localstore status` says it: log in, resolve
        the conflicts, fix the quarantined changes...; None when nothing), ``paused_since``
        while paused, ``running``: False once this sync ended, by ``stop()`` or on its own
        (state ``error``: another process took the home's lock, or the engine's thread ended;
        the engine's own status keeps its last state), and ``realtime``: the realtime channel's
        health as the daemon's status has it (``state``, ``problem``, ``retry_in_s``,
        ``failures``, ``stats``; docs/daemon.md, "Realtime health"), None while sync is off or
        the remote has no realtime. Reads the index; once the store is closed, the counts are
        those last read (when the sync stopped) and ``detail`` says the store is closed."""
        with self._mutex:
            engine, offline, hint, paused, stopped = (
                self.engine,
                self.offline,
                self._offline_hint,
                self._paused,
                self._stopped,
            )
        details = [offline] if offline else []
        out = self._engine_status(engine, details, stopped=stopped)
        out["logged_in"] = offline is None
        ended = self._why_ended(engine, offline, stopped=stopped)
        out["running"] = not stopped and ended is None
        self._show_state(out, details, offline, ended, paused=paused)
        out["detail"] = "; ".join(details) or None
        # The hint channel as the daemon's status has it (docs/daemon.md, "Realtime health"):
        # None while sync is off (stopped, ended, logged out), as the daemon's null without an
        # engine. The engine's remote, not self._remote: an app's own remote is not ours to
        # close but is the one whose channel runs.
        out["realtime"] = realtime_health(engine.remote) if out["running"] and not offline else None
        # (An app showed the counts with nothing to tell the person what to do about them.)
        out["hint"] = status_hint(
            out,
            UPGRADED_FIX
            if self.upgraded is not None
            else hint
            if offline
            else out.get("hint"),  # (the engine's: the blueprints folder away)
        )
        return out

    def _engine_status(
        self, engine: SyncEngine, details: list[str], *, stopped: bool
    ) -> dict[str, Any]:
        """The engine's status as a dict; once the store is closed (and this sync stopped), as
        last read, with a note appended to ``details``."""
        try:
            return self._read_status(engine).to_dict()
        except StoreClosedError:
            if not stopped:
                raise
            # A UI timer polling while the app shuts down: the closed store stopped this sync
            # first (its close hook), and the counts no longer change. It raised here before.
            out = self._status_when_closed(engine).to_dict()
            details.append("the store is closed, and its sync with it")
            return out

    def _why_ended(self, engine: SyncEngine, offline: str | None, *, stopped: bool) -> str | None:
        """Why this sync ended on its own (with what to do), or None."""
        from sync.engine import WorkerState

        if self.upgraded is not None:
            return UPGRADED_DETAIL
        if self.home_gone:
            return (
                "the home was deleted or moved away, so this app no longer syncs it: "
                "open the store where the home is now and start sync there"
            )
        if self.lost_lock:
            return (
                "another process took this home's lock, so this app no longer syncs: "
                "leave sync to it, or stop it and start sync again"
            )
        if not stopped and offline is None and engine.worker_state is not WorkerState.RUNNING:
            return "the sync thread stopped (see the log): stop this sync and start it again"
        return None

    def _show_state(
        self,
        out: dict[str, Any],
        details: list[str],
        offline: str | None,
        ended: str | None,
        *,
        paused: bool,
    ) -> None:
        """Set ``out["state"]`` (and ``paused_since``) for being offline, paused or ended, each
        overriding the one before, and append their details."""
        if offline:
            out["state"] = "offline"
        if paused:
            out["state"] = "paused"
            out["paused_since"] = self.paused_since
            details.append(PAUSED_DETAIL)
        if ended is not None:  # (a sync that ended is not merely paused or offline)
            out["state"] = "error"
            details.append(ended)

    def _read_status(self, engine: SyncEngine) -> SyncStatus:
        self._last_status = status = engine.status()
        return status

    def _status_when_closed(self, engine: SyncEngine) -> SyncStatus:
        """The engine's status as last read, with its state now (the counts are the index's)."""
        from sync.engine import SyncStatus

        last = self._last_status
        if last is None:  # (never read: stop() found the index unreadable) nothing is known
            last = SyncStatus(
                state="idle",
                pending=0,
                conflicts=0,
                quarantined=0,
                last_synced_at=None,
                last_error=None,
            )
        state, error = engine._state, engine._last_error
        return dataclasses.replace(
            last, state=state, progress=None, last_error=error or last.last_error
        )

    def _remember_status(self, engine: SyncEngine) -> None:
        """Read the engine's status for status() after the store closes (stop() runs before)."""
        try:
            self._read_status(engine)
        except LocalStoreError as exc:  # (closed already, or unreadable: the last read stays)
            log.debug("could not read the status as sync stopped: %s", exc)

    def subscribe_status(self, callback: Callable[[SyncStatus], None]) -> Callable[[], None]:
        """``engine.subscribe_status`` that follows the engine across a new login; an unsubscribe.

        Listeners run on the syncing thread, and on the thread that paused or resumed: the
        caller of pause()/resume(), the follower thread for a pause another process recorded;
        never under a lock of this object's. Raises StoreClosedError once the store is closed
        (nothing would call the listener).
        """
        if not callable(callback):
            # (Checked before it is kept: one the engine refused stayed listed, for every new
            # engine after a login.)
            raise wrong_type(
                "callback", callback, "callable", hint="pass a function taking a SyncStatus"
            )
        self._check_store_open()
        with self._mutex:
            # The engine's first: it raises StoreClosedError for a store closed since the check
            # above, and the listener must not be kept for the next engine then.
            unsub = self.engine.subscribe_status(callback)
            token = self._listener_seq
            self._listener_seq += 1
            self._status_listeners[token] = callback
            self._status_unsubs[token] = unsub

        def unsubscribe() -> None:
            with self._mutex:
                self._status_listeners.pop(token, None)
                unsub = self._status_unsubs.pop(token, None)
            if unsub is not None:
                unsub()

        return unsubscribe

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the engine and watcher, close the remote it opened and release the lock. Idempotent.

        Called on the engine's own thread (a store-event subscriber or status listener closing
        the store), it cannot wait for that thread: the loop ends after its current cycle, and a
        short-lived thread finishes the rest (remote, watcher, lock) once it has. In a child
        forked from the app it does nothing: the sync is the parent's, and goes on there.
        """
        from sync._engine_core import _seconds_arg

        _seconds_arg("timeout", timeout)  # (a str failed half way: stopped, lock still held)
        if self.store.index.forked:
            # A forked child's copy (an atexit handler or a ``with`` block of the app's, run in
            # a multiprocessing worker): the threads, watcher, remote and lock are the parent's.
            # Closing the remote here waited out realtime's shutdown timeout (10 s) on an event
            # loop whose thread only the parent has; and this object's mutex, held by a parent
            # thread at the fork, would never be released here. The child holds nothing.
            log.debug("stop() in a forked child: the sync is the parent's, left running")
            return
        with self._mutex:
            if self._stopped:
                return
            self._stopped = True
            engine = self.engine
        self._done.set()
        self._unhook_close()  # a stopped handle is not kept by the store until it closes
        self._unsub_claims()
        engine.stop()
        if self._own_watcher and self.watcher is not None:
            self.watcher.stop()
        if _runs_on_this_thread(engine):
            # (_finish may read it only after the store closed the index.)
            self._remember_status(engine)
            threading.Thread(
                target=self._finish, args=(timeout,), name="localstore-sync-stop", daemon=True
            ).start()
            return
        self._finish(timeout)

    def _finish(self, timeout: float) -> None:
        if self._ticker is not threading.current_thread():
            self._ticker.join(timeout)  # a replacement engine it was starting is self.engine now
        try:
            engine = self.engine
            engine.stop()
            engine.join(timeout)
            self._remember_status(engine)  # (the last cycle's counts)
            if self._own_watcher and self.watcher is not None:
                self.watcher.stop()
                self.watcher.join(timeout)
            close_remote(self._remote)
        finally:
            self._lock.release()

    def __enter__(self) -> EmbeddedSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _nothing() -> None:
    """Tell nobody (a pause that changed nothing)."""


def _since(recorded: dict[str, Any]) -> float | None:
    since = recorded.get("since")
    return float(since) if isinstance(since, int | float) else None


def _runs_on_this_thread(engine: SyncEngine) -> bool:
    """Whether the calling thread is ``engine``'s loop (which cannot join itself)."""
    thread = engine._thread  # (the engine has no public handle on its thread)
    return thread is not None and thread is threading.current_thread()


def _locked_error(settings: Settings) -> SyncLockedError:
    """Why this home's lock is taken, with what the app can do about it."""
    pid = lock_holder(settings.paths.state)
    daemon = daemon_running(settings)
    if daemon is not None:
        return SyncLockedError(
            f"the daemon (process {daemon.get('pid') or pid or '?'}) already syncs this home",
            hint="leave sync to it and follow its events with sync.control.ControlClient",
        )
    if pid == os.getpid():
        return SyncLockedError(
            "another store in this process already syncs this home",
            hint="use the EmbeddedSync its start_sync() returned (one per home), or stop that "
            "sync (or close that store) first",
        )
    return SyncLockedError(
        f"process {pid or '?'} already syncs this home (an app syncing in-process, or "
        "`localstore sync`)",
        hint="try again once it has finished, or leave sync to it",
    )


def _start_args(
    store: Any, remote: Any, watch: Any, keychain_prompt: Any, engine_kwargs: dict[str, Any]
) -> None:
    """start_sync's own arguments, checked before the lock is taken or a remote opened (an
    unknown keyword was a raw TypeError after the home's Supabase session was opened, and
    watch="no" started a watcher)."""
    import inspect

    from localstore.store import _flag_arg
    from sync._local import store_arg
    from sync.engine import SyncEngine, check_engine_args, remote_arg

    store_arg(store)
    if remote is not None:
        remote_arg(remote)
    _flag_arg("watch", watch)
    _flag_arg("keychain_prompt", keychain_prompt)
    known = set(inspect.signature(SyncEngine.__init__).parameters) - {"self", "store", "remote"}
    unknown = sorted(set(engine_kwargs) - known)
    if unknown:
        raise InvalidInputError(
            f"start_sync() got unknown keyword(s) {', '.join(unknown)}",
            hint=f"SyncEngine takes {', '.join(sorted(known))}",
        )
    check_engine_args(store, engine_kwargs)


def start_sync(
    store: BlueprintStore,
    *,
    remote: Remote | None = None,
    watch: bool = True,
    keychain_prompt: bool = False,
    **engine_kwargs: Any,
) -> EmbeddedSync:
    """Run the sync engine inside this process for ``store``'s home, holding the home lock.

    ``remote`` defaults to the home's Supabase session (``localstore login``); a remote opened here
    is closed by ``stop()``, and replaced after a ``localstore logout``/``login``. ``watch``
    (default True) starts a Watcher on ``store`` so that edits made in an editor are synced, unless
    the app already runs one on this store; pass False for an app that starts its own later. The
    watcher started here stops with the sync. The home's session is read from sync's threads, so
    a locked keychain stops sync until it is unlocked (sync then goes on within seconds) instead
    of asking the user to unlock it; ``keychain_prompt=True`` lets keyring ask (an app whose user
    expects that prompt: it comes at each read that finds the keychain locked). Raises SyncLockedError when a daemon (or another
    app, or another store of this process) syncs this home, NotLoggedInError without a session,
    WatcherError when the folder cannot be watched (its hint says how to fix that),
    StoreClosedError when the store is closed (also by another thread while sync starts).
    """
    _start_args(store, remote, watch, keychain_prompt, engine_kwargs)
    lock = HomeLock.for_settings(store.settings)
    if not lock.acquire(blocking=False):
        raise _locked_error(store.settings)
    handle, engine = _new_handle(store, lock, remote, watch, keychain_prompt, engine_kwargs)
    _start_handle(store, handle, engine)
    return handle


def _new_handle(
    store: BlueprintStore,
    lock: HomeLock,
    remote: Remote | None,
    watch: bool,
    keychain_prompt: bool,
    engine_kwargs: dict[str, Any],
) -> tuple[EmbeddedSync, SyncEngine]:
    """start_sync's handle and its engine (not started), holding ``lock``; on failure, what
    was made here is stopped and closed and the lock released."""
    from localstore.watcher import Watcher, running_watcher
    from sync.engine import SyncEngine

    opened: Remote | None = None
    watcher: Watcher | None = None
    own_watcher = False
    engine: SyncEngine | None = None
    factory: RemoteFactory | None = None
    try:
        if remote is None:
            factory = _home_remote_factory(keychain_prompt)
            remote = opened = factory(store.settings)
        engine = SyncEngine(store, remote, **engine_kwargs)
        if watch:
            watcher = running_watcher(store)
            if watcher is None:
                watcher, own_watcher = Watcher(store), True
                watcher.start()
        handle = EmbeddedSync(
            engine,
            lock,
            opened,
            watcher=watcher,
            own_watcher=own_watcher,
            remote_factory=factory,
            engine_kwargs=engine_kwargs,
        )
    except BaseException:
        if engine is not None:
            engine.stop()
            engine.join(REPLACE_JOIN_S)
        if own_watcher and watcher is not None:
            watcher.stop()
            watcher.join(REPLACE_JOIN_S)
        close_remote(opened)
        lock.release()
        raise
    return handle, engine


def _home_remote_factory(keychain_prompt: bool) -> RemoteFactory:
    """What opens the home's Supabase session (``localstore login``) for start_sync."""
    from sync.supabase_remote import remote_from_settings

    if keychain_prompt:
        return functools.partial(remote_from_settings, keychain_prompt=True)
    return remote_from_settings  # (its default: no prompt)


def _start_handle(store: BlueprintStore, handle: EmbeddedSync, engine: SyncEngine) -> None:
    """Hook ``handle`` to the store's close, then start ``engine``; on failure, stop it."""
    # The engine starts last, once the handle follows the store: its first cycle runs store
    # events, and a subscriber may close the store at once (the close then stops the handle).
    try:
        handle._unhook_close = store.on_close(handle.stop)
        engine.start()
    except BaseException as exc:
        handle.stop()
        if isinstance(exc, EngineStateError) and store.closed:
            # Another thread closed the store in between: its hook stopped the new engine,
            # which then refused to start ("create a new SyncEngine": the app never made one).
            handle._check_store_open()
        raise
