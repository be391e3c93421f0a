"""The sync engine's state and what every part of it uses: construction and its arguments, the
status and its listeners, the cycle and single-instance locks, and calls to the remote.

The lowest of the engine's layers (``sync.engine`` names them all): each later module's class
builds on the one before, so a step calls only what is defined below it. ``SyncEngine`` is the
last of them; its docstring describes the arguments ``__init__`` here takes.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

from localstore.errors import InvalidInputError, StoreClosedError, methods_arg, wrong_type
from localstore.store import BlueprintStore, _count_arg
from sync import _state as st
from sync import account_record, base_record
from sync._engine_conditions import _LocalCondition
from sync._local import SyncStateName, SyncStatus, ensure_schema, read_status, store_arg
from sync.errors import (
    AuthExpiredError,
    EngineStateError,
    MergeError,
    ProtocolError,
    RemoteConfigError,
    SyncLockedError,
)
from sync.merge import POLICIES, ConflictPolicy
from sync.remote import DEFAULT_PULL_LIMIT, MAX_BATCH, PROTOCOL_VERSION, Change, PushResult, Remote

log = logging.getLogger("sync.engine")

DEFAULT_DEBOUNCE_S = 0.15
DEFAULT_BACKOFF_BASE_S = 0.5
DEFAULT_BACKOFF_CAP_S = 60.0
# Pulled rows applied per index transaction. Each commit writes every index page its chunk
# touched, and rows land on random pages (uuid keys), so small chunks rewrite the same pages
# over and over: 200 -> 500 rows cut a 3,000-blueprint download's WAL from 53 to 31 MiB and its
# time per blueprint by a quarter (docs/sync-engine.md). 500 is one default pull page; the
# write lock is held for one chunk (about a quarter second), and the content cap bounds it
# (and the memory of the chunk's staged files) when blueprints are large.
DEFAULT_APPLY_BATCH = 500
# Content and meta bytes per push call (at least one change goes, however large). The server
# parses a call's whole JSON before it answers and runs under a statement timeout (8 s on
# Supabase, 57014); a count alone let 200 blueprints of up to 10 MiB each go as one call, past
# that timeout, jsonb's 256 MiB (54000) or a gateway's request limit (413), on every retry.
# A few MiB keeps a call well under a second on the server and under the client's timeout on a
# slow uplink, and pushes of small blueprints are still bounded by the count (sync_batch).
DEFAULT_PUSH_BATCH_BYTES = 4 * 2**20

_T = TypeVar("_T")


class EngineLock(Protocol):
    """A single-instance guard (e.g. the daemon's lock file): ``acquire(blocking=False)``."""

    def acquire(self, blocking: bool = ...) -> bool: ...

    def release(self) -> None: ...


class WorkerState(enum.Enum):
    """Lifecycle of the background loop; each transition happens once."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class _EngineCore:
    """The engine's state, status, locks and remote calls (see ``sync.engine.SyncEngine``)."""

    def __init__(
        self,
        store: BlueprintStore,
        remote: Remote,
        *,
        policy: ConflictPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        lock: EngineLock | None = None,
        now: Callable[[], datetime] | None = None,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S,
        poll_interval_s: float | None = None,
        batch_size: int | None = None,
        batch_bytes: int | None = None,
        pull_limit: int = DEFAULT_PULL_LIMIT,
        apply_batch: int | None = None,
    ) -> None:
        store_arg(store)
        remote_arg(remote)
        _engine_args(
            {"clock": clock, "now": now},
            {"debounce_s": debounce_s, "backoff_base_s": backoff_base_s},
            {"backoff_cap_s": backoff_cap_s, "poll_interval_s": poll_interval_s},
            {"batch_size": batch_size, "batch_bytes": batch_bytes, "apply_batch": apply_batch},
            pull_limit,
            rng,
        )
        chosen = _policy_arg(store, policy)
        self.store = store
        self.remote = remote
        self.policy: ConflictPolicy = chosen
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.lock = lock
        self.now = now or (lambda: datetime.now(UTC))
        self.debounce_s = debounce_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.poll_interval_s = (
            poll_interval_s if poll_interval_s is not None else store.settings.poll_interval_s
        )
        self._init_batches(batch_size, batch_bytes, pull_limit, apply_batch)
        if store.read_only:
            # Before any table is made or any cycle starts: a read-only store's first write
            # would fail in the middle of a pull, as one more retryable error, for ever.
            raise store.index.read_only_error("sync")
        ensure_schema(store)
        self._init_loop_state()
        self._init_cycle_memory()

    def _init_batches(
        self,
        batch_size: int | None,
        batch_bytes: int | None,
        pull_limit: int,
        apply_batch: int | None,
    ) -> None:
        """Set the push, pull and apply sizes from the arguments (checked) and the settings."""
        # What the caller asked for; batch_size and batch_bytes are these capped by what the
        # server announces now (_check_server), so a limit the server raises again is used again.
        self._wanted_batch = max(1, min(batch_size or self.store.settings.sync_batch, MAX_BATCH))
        self._wanted_bytes = max(1, batch_bytes or DEFAULT_PUSH_BATCH_BYTES)
        self.batch_size = self._wanted_batch
        self.batch_bytes = self._wanted_bytes
        # This cycle's push limits: batch_size and batch_bytes, halved for the rest of a cycle
        # after a push was split (see _push).
        self._push_count = self.batch_size
        self._push_bytes = self.batch_bytes
        self.pull_limit = pull_limit
        # An explicit batch_size also sizes the apply chunks (tests use tiny ones to get many).
        self.apply_batch = max(1, apply_batch or batch_size or DEFAULT_APPLY_BATCH)

    def _init_loop_state(self) -> None:
        """Set up the background loop's locks, lifecycle, wake-ups and status."""
        self._cycle_lock = threading.Lock()
        self._cycle_thread: int | None = None  # the thread holding _cycle_lock (see _cycle_held)
        self._cond = threading.Condition()
        self._worker = WorkerState.NEW
        self._thread: threading.Thread | None = None
        self._paused = False
        self._wake_at: float | None = None
        # The loop is in a cycle: set with _wake_at's clearing, under _cond, so that a reader
        # of the two (in that order) never finds the loop between them looking settled.
        self.cycle_running = False
        self._urgent = False
        self._next_at = 0.0
        self._failures = 0
        # When the loop's cycles began failing with a TransientError (None: the cloud answers),
        # on span_clock: an outage is mostly a laptop asleep, which self.clock leaves out.
        self._offline_since: float | None = None
        # The reason the loop last stopped for a person (None since a cycle worked): the same
        # one again is not news (a locked keychain failed two cycles 0.7 s apart: two warnings).
        self._stopped_for: str | None = None
        self._state: SyncStateName = "idle"
        self._progress: tuple[int, int] | None = None
        self._last_error: str | None = None
        self._last_hint: str | None = None  # what a person must do about _last_error, if any
        self._keychain_failed = False
        self._listeners: dict[int, Callable[[SyncStatus], None]] = {}
        self._listener_seq = 0
        self._unsubs: list[Callable[[], None]] = []
        # The local condition the loop is retrying, and when it last warned about it.
        self._condition: _LocalCondition | None = None
        self._condition_warned_at = 0.0

    def _init_cycle_memory(self) -> None:
        """Set up what cycles remember from one to the next: push detours and timeouts, the
        server's limits, the account and base records, the revision lookup."""
        # id -> (push op id, cycles in a row in which that change timed out alone). Keyed by id
        # alone: keyed by (id, op id), a change edited again before it was parked left its old
        # count behind for the life of the engine, one entry per such edit.
        self._lone_timeouts: dict[str, tuple[int, int]] = {}
        # id -> (passing path, op id) of its next push, instead of its own path and push op id:
        # one rename of a cycle (a swap) that no order of a batch can apply (see _path_taken).
        self._detours: dict[str, tuple[str, int]] = {}
        # Whether server_info was asked since the server last may have changed (see
        # _check_server), and the remote's server_epoch then (None: the remote has none).
        self._checked_server = False
        self._server_epoch: int | None = None
        # Whether this cycle already asked server_info again for a push refused whole (22023):
        # once a cycle, so a server refusing the batches of its own new limit fails the cycle.
        self._reasked_for_refusal = False
        # The account record kept besides the index (sync.account_record), once read.
        self._account: account_record.AccountRecord | None = None
        # Bases appended to the record (sync.base_record) above its mark, so that the end of the
        # cycle does not append again what each step of it already did.
        self._recorded: dict[str, base_record.BaseEntry] = {}
        self._held_recorded = False
        # False until this engine appended what a killed process's steps left out (_open_step).
        self._steps_closed = False
        # A step opened in the record and not yet closed by an append.
        self._step_open = False
        # Blueprints a rebuilt index held when it had no record to recover from (see
        # _recover_bases), until the end of that cycle names what the server added.
        self._unrecorded: set[str] | None = None
        # Whether this home had synced before this engine (its account recorded besides the
        # index): read now, since the first cycle writes the record for any home.
        self._synced_before = account_record.record_path(self.store.settings.paths.state).exists()
        # False once the server said it has no revision lookup (an older schema): not asked again.
        self._ancestry = True
        self._settled = False
        self._refreshed = False
        self._lock_held = False

    # -- status ----------------------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        """This device's id (stable per home)."""
        return self.store.device_id

    @property
    def device_name(self) -> str:
        """This device's human name (``settings.device_name``)."""
        return self.store.device_name

    @property
    def worker_state(self) -> WorkerState:
        """The background loop's lifecycle state."""
        return self._worker

    @property
    def waits_on_keychain(self) -> bool:
        """Whether the last cycle failed on the OS keychain (locked, its service gone) and no
        cycle has worked since, or the remote keeps a session the keychain refused (the next
        cycle stores it); read from memory: cheap enough for every daemon tick."""
        return self._keychain_failed or self._keychain_note() is not None

    def _keychain_note(self) -> str | None:
        """The remote's hint while it keeps its session in memory only (SupabaseRemote's
        ``unsaved_session_hint``: the keychain refused the refreshed session), else None."""
        note = getattr(self.remote, "unsaved_session_hint", None)
        return note if isinstance(note, str) else None

    def status(self) -> SyncStatus:
        """The current status (counts read from the index)."""
        base = read_status(self.store, state=self._state)
        return SyncStatus(
            state=self._state,
            pending=base.pending,
            conflicts=base.conflicts,
            quarantined=base.quarantined,
            last_synced_at=base.last_synced_at,
            last_error=self._last_error if self._last_error is not None else base.last_error,
            hint=self._last_hint if self._last_error is not None else self._keychain_note(),
            progress=self._progress,
            held=base.held,
            cursor=base.cursor,
            flagged=base.flagged,
        )

    def subscribe_status(self, callback: Callable[[SyncStatus], None]) -> Callable[[], None]:
        """Call ``callback(status)`` on every state or progress change; returns an unsubscribe.

        Listeners run on the syncing thread, inside its cycle: sync_once(), verify() or
        retry_quarantined() called from one raises EngineStateError (use request_sync()). The
        change pause() and resume() make is told on the thread that called them (for an
        EmbeddedSync also its follower thread, when another process pauses the home); no lock
        of the engine's (or EmbeddedSync's) is held while a listener runs. Raises
        StoreClosedError once the store is closed (nothing would call the listener).
        """
        if not callable(callback):
            # (It failed later, on the syncing thread, inside a cycle.)
            raise wrong_type(
                "callback", callback, "callable", hint="pass a function taking a SyncStatus"
            )
        self._check_store_open()
        with self._cond:
            token = self._listener_seq
            self._listener_seq += 1
            self._listeners[token] = callback

        def unsubscribe() -> None:
            with self._cond:
                self._listeners.pop(token, None)

        return unsubscribe

    def _set_state(
        self,
        state: SyncStateName,
        *,
        progress: tuple[int, int] | bool | None = False,
        notify: bool = True,
    ) -> bool:
        """Set the state (and progress); whether that changed the status (listeners told then,
        unless ``notify`` is False: the caller tells them once it holds no lock)."""
        if self._paused:
            state = "paused"  # a cycle still finishing after pause() does not un-pause the status
        changed = state != self._state
        self._state = state
        if progress is not False:
            changed = changed or progress != self._progress
            self._progress = progress if isinstance(progress, tuple) else None
        if changed and notify:
            self._notify_status()
        return changed

    def _notify_status(self) -> None:
        with self._cond:
            listeners = list(self._listeners.values())
        if not listeners:
            return
        status = self.status()
        for cb in listeners:
            try:
                cb(status)
            except Exception:  # a UI callback's bug must not stop sync
                log.exception("status listener %r failed", cb)

    def _check_store_open(self) -> None:
        """Raise StoreClosedError once the store is closed: what pause(), resume(),
        request_sync() and subscribe_status() would do then is for a sync that never runs again
        (a pause kept, a listener nothing calls), as every store call after close() raises; in
        a child forked from the store's process, the store's refusal (the sync is the parent's)."""
        self.store.index.check_process()
        if self.store.closed:
            raise StoreClosedError(
                "the store is closed, and its sync with it",
                hint="open the store again and sync with a new engine (or start_sync()) there",
            )

    @contextmanager
    def _cycle_held(self, what: str) -> Iterator[None]:
        """Hold the (non-reentrant) cycle lock; refuse a call from the thread already holding it.

        Status listeners and store-event subscribers run on the syncing thread inside its cycle:
        one calling sync_once() or verify() would wait for itself forever.
        """
        # (Before the lock: in a forked child, one the parent's sync thread held stays taken.)
        self.store.index.check_process()
        me = threading.get_ident()
        if self._cycle_thread == me:  # (only this thread ever sets it to its own id)
            raise EngineStateError(
                f"{what}() was called from inside a sync cycle on the same thread (a status "
                "listener or store-event subscriber runs there), which would wait for itself",
                hint="call engine.request_sync() instead, or hand the call to another thread",
            )
        with self._cycle_lock:
            self._cycle_thread = me
            try:
                yield
            finally:
                self._cycle_thread = None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        if self.lock is None or self._lock_held:
            yield
            return
        if not self.lock.acquire(blocking=False):
            raise SyncLockedError("another process is syncing this home")
        try:
            yield
        finally:
            self.lock.release()

    def _check_server(self, *, force: bool = False) -> None:
        """Ask ``server_info`` (protocol, limits) when the server may have changed; else nothing.

        Once per engine, then again after a cycle that failed on the cloud (an outage, a timeout,
        a refused push: what answers next may have been upgraded or restored with other limits)
        and whenever the remote's ``server_epoch`` moved (SupabaseRemote: after a failed call
        and each new session, about hourly). Never on every push: one RPC per such event. A
        daemon that asked once ran for months on the limits of the server it first met; a
        smaller ``max_batch`` after a restore failed every push (22023) until it restarted.
        ``force`` asks in any case (a push refused whole, see ``_refused_for_limits``).
        Raises RemoteConfigError for another protocol (nothing is pushed or quarantined; the
        next cycle asks again), or what the RPC raises.
        """
        epoch = self._remote_epoch()
        if not force and self._checked_server and epoch == self._server_epoch:
            return
        info = self._call(self.remote.server_info)
        if info.protocol != PROTOCOL_VERSION:
            raise RemoteConfigError(
                f"the server speaks sync protocol {info.protocol}, this client {PROTOCOL_VERSION}",
                hint="deploy the matching sync/supabase/migrations or upgrade localstore",
            )
        self.batch_size = max(1, min(self._wanted_batch, info.max_batch))
        self.batch_bytes = self._wanted_bytes
        announced = info.extra.get("max_batch_bytes")
        if isinstance(announced, int) and not isinstance(announced, bool) and announced > 0:
            self.batch_bytes = min(self.batch_bytes, announced)
        self._push_count, self._push_bytes = self.batch_size, self.batch_bytes
        # The epoch read before the call: a failure during it moves the epoch and asks again.
        self._checked_server, self._server_epoch = True, epoch

    def _remote_epoch(self) -> int | None:
        """The remote's ``server_epoch`` (an optional capability; None when it has none)."""
        epoch = getattr(self.remote, "server_epoch", None)
        return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None

    def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Call the remote; on expired auth refresh once per cycle and retry."""
        try:
            return fn(*args, **kwargs)
        except AuthExpiredError:
            refresh = getattr(self.remote, "refresh_auth", None)
            if refresh is None or self._refreshed:
                raise
            self._refreshed = True
            log.info("sync: access token expired; refreshing the session")
            refresh()
            return fn(*args, **kwargs)

    def _pushable(self) -> int:
        with self.store.index.read() as cur:
            return st.pending_count(cur) - st.held_count(cur)

    def _store_gone(self, exc: BaseException) -> bool:
        """Whether ``exc`` comes from the store being closed (an app quitting), not a failure.

        Also an index lock wait that close() cut short (it raises IndexStoreError).
        """
        return isinstance(exc, StoreClosedError) or self.store.closed

    def _renew(self, cur: Any, blueprint_id: str) -> None:
        st.renew_push_op(cur, blueprint_id, self.store.index.next_op_id(cur))


def _seconds_arg(name: str, value: Any) -> float:
    """A duration argument: a finite number of seconds >= 0 (a str failed inside the engine's
    lock with a raw TypeError; NaN or infinity never woke the loop)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(
            f"{name} must be a finite number of seconds, not {type(value).__name__} {value!r}",
            hint=f"pass {name} as an int or float >= 0",
        )
    if value < 0:
        raise InvalidInputError(
            f"{name} must be 0 or more seconds, not {value}", hint=f"pass {name} >= 0"
        )
    return float(value)


def remote_arg(remote: Any) -> None:
    """A Remote: something with its methods (a str failed on the syncing thread)."""
    methods_arg(
        "remote",
        remote,
        ("push", "pull", "subscribe"),
        "a sync Remote",
        hint="pass a SupabaseRemote (or leave remote out of start_sync for the home's "
        "login), or a MemoryRemote in tests",
    )


def _policy_arg(store: BlueprintStore, policy: Any) -> ConflictPolicy:
    chosen = policy if policy is not None else store.settings.conflict_policy
    if not callable(chosen) and chosen not in POLICIES:
        raise MergeError(f"unknown conflict policy {chosen!r}", hint=f"use one of {POLICIES}")
    return cast(ConflictPolicy, chosen)


def _engine_args(
    callables: dict[str, Any],
    durations: dict[str, Any],
    optional_durations: dict[str, Any],
    sizes: dict[str, Any],
    pull_limit: Any,
    rng: Any,
) -> None:
    """SyncEngine's arguments: a wrong one failed later, on the syncing thread (a str delay),
    or was quietly replaced (batch_size=0 meant the setting, -5 meant 1)."""
    if rng is not None and not isinstance(rng, random.Random):
        raise wrong_type(
            "rng", rng, "a random.Random", hint="leave rng out (tests pass random.Random(seed))"
        )
    for name, value in callables.items():
        if value is not None and not callable(value):
            raise wrong_type(f"{name}", value, "callable", hint=f"leave {name} out for the default")
    for name, value in durations.items():
        _seconds_arg(name, value)
    for name, value in optional_durations.items():
        if value is not None:
            _seconds_arg(name, value)
    for name, value in {**sizes, "pull_limit": pull_limit}.items():
        if value is not None and _count_arg(name, value) < 1:
            raise InvalidInputError(
                f"{name} must be 1 or more, not {value}",
                hint=f"leave {name} out for the default",
            )


def _check_results(changes: Sequence[Change], results: Sequence[PushResult]) -> None:
    if len(results) != len(changes):
        raise ProtocolError(f"push returned {len(results)} results for {len(changes)} changes")
    for change, result in zip(changes, results, strict=True):
        if result.op_id != change.op_id or result.id.lower() != change.id.lower():
            raise ProtocolError(f"push result for op {result.op_id} answers op {change.op_id}")
