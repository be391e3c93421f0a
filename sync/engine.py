"""SyncEngine: outbox -> push -> merge -> pull -> apply, as one step (``sync_once``) or a loop.

``sync_once()`` pushes dirty blueprints in bounded batches (oldest change first), handles each
result (applied: record the new base; conflict: merge through ``sync.merge``; rejected: park in
quarantine and go on, except ``not_owner`` for a blueprint never synced, which gets a new id and is
pushed as new), pulls pages after the persisted cursor, applies them in large index
transactions and persists the cursor with the last chunk of each page. Changes made by merges
(conflict copies, merged texts, paths moved off a collision) are pushed in the same call.

Every step is resumable after a kill: the outbox is a query over committed index rows (see
``sync._state``); a push is retried with the same op ids, which the server deduplicates; a page
whose apply did not commit is pulled again, and rows already applied are skipped by rev.

``start()`` runs ``run()`` on a thread: a sync on a local change (debounced), on a remote hint,
and every ``poll_interval_s``; failures back off exponentially with jitter on a timer, so a
failed push is retried without waiting for the next write. Expired auth is refreshed once per
cycle and retried; errors that need a person put the engine in ``error`` and are retried slowly.
Local conditions of this machine (an index another process keeps locked, a full disk) are retried
with backoff too, with one short warning and the status saying what to do; a store closed under
the loop ends it. Only an exception nobody expected is logged with its traceback.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar, cast

import apsw

from localstore import _late_meta as late_meta
from localstore import files as fs
from localstore._identity import replace_device_id
from localstore._reconcile import CONFIRM_EMPTY_NAME
from localstore._revisions import revision_text
from localstore.blueprint import (
    BlueprintMeta,
    decode_meta,
    encode_meta,
    new_id,
    sha256_hex,
    utc_now,
)
from localstore.errors import (
    AlreadyExistsError,
    ChangedOnDiskError,
    DiskFullError,
    FolderAwayError,
    IndexStoreError,
    InvalidInputError,
    LocalStoreError,
    NewerIndexError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
    StoreClosedError,
    UnsafePathError,
    wrong_type,
)
from localstore.events import Event
from localstore.index import WriteOutcome, index_damaged, map_apsw_error
from localstore.store import BlueprintStore, _count_arg
from sync import _state as st
from sync import account_record, base_record
from sync._apply import (
    Applier,
    ApplyStats,
    Prefetched,
    UnparsedInTheWay,
    ancestor_probes,
    conflict_path,
    copy_id_for,
    drop_known,
    is_known,
    is_path_shape_error,
    path_unblocked,
    utc_stamp,
)
from sync._kept_merges import highest_kept, sweep_kept_merges
from sync._keychain_watch import keychain_failure
from sync._local import (
    LAST_ERROR_STATE_KEY,
    SYNC_STATES,
    FlaggedFile,
    SyncReport,
    SyncStateName,
    SyncStatus,
    VerifyReport,
    conflict_diff,
    ensure_schema,
    flagged_files,
    get_conflict,
    list_conflicts,
    list_flagged,
    list_quarantine,
    local_status,
    read_status,
    resolve_conflict,
    store_arg,
)
from sync._shown import MAX_SHOWN, shown
from sync._state import ConflictRecord, QuarantineEntry
from sync._timefmt import span, span_clock
from sync.errors import (
    AccountMismatchError,
    AuthError,
    AuthExpiredError,
    EngineStateError,
    MergeError,
    OfflineError,
    ProtocolError,
    RateLimitedError,
    RemoteConfigError,
    SyncError,
    SyncLockedError,
    TransientError,
)
from sync.merge import POLICIES, ConflictPolicy
from sync.remote import (
    DEFAULT_PULL_LIMIT,
    MAX_BATCH,
    MAX_MATCH_PROBES,
    PROTOCOL_VERSION,
    SPLIT_CODES,
    Change,
    PagedFetchRemote,
    PushResult,
    Remote,
    RevisionMatch,
    ServerRow,
    VerifyRow,
)

# The remote-free helpers live in sync._local and are re-exported here (one import for callers).
__all__ = [
    "SYNC_STATES",
    "EngineLock",
    "FlaggedFile",
    "SyncEngine",
    "SyncReport",
    "SyncStateName",
    "SyncStatus",
    "VerifyReport",
    "WorkerState",
    "conflict_diff",
    "ensure_schema",
    "get_conflict",
    "list_conflicts",
    "list_flagged",
    "list_quarantine",
    "local_status",
    "resolve_conflict",
]

log = logging.getLogger("sync.engine")

DEFAULT_DEBOUNCE_S = 0.15
DEFAULT_BACKOFF_BASE_S = 0.5
DEFAULT_BACKOFF_CAP_S = 60.0
# After an error only a person can fix (logged out, wrong project), retry this seldom.
ATTENTION_RETRY_S = 60.0
# A local condition that lasts (a full disk) is warned about again at most this often; the
# retries in between log at DEBUG (a retry a minute would otherwise fill the daemon's log).
CONDITION_LOG_EVERY_S = 600.0
MAX_ROUNDS = 4
FETCH_CHUNK = 200
# Pulled rows applied per index transaction. Each commit writes every index page its chunk
# touched, and rows land on random pages (uuid keys), so small chunks rewrite the same pages
# over and over: 200 -> 500 rows cut a 3,000-blueprint download's WAL from 53 to 31 MiB and its
# time per blueprint by a quarter (docs/sync-engine.md). 500 is one default pull page; the
# write lock is held for one chunk (about a quarter second), and the content cap bounds it
# (and the memory of the chunk's staged files) when blueprints are large.
DEFAULT_APPLY_BATCH = 500
APPLY_BATCH_CHARS = 8 * 2**20
# Pulled rows whose local state is read together (see _apply_batched).
PREFETCH_WINDOW = 64
# Content and meta bytes per push call (at least one change goes, however large). The server
# parses a call's whole JSON before it answers and runs under a statement timeout (8 s on
# Supabase, 57014); a count alone let 200 blueprints of up to 10 MiB each go as one call, past
# that timeout, jsonb's 256 MiB (54000) or a gateway's request limit (413), on every retry.
# A few MiB keeps a call well under a second on the server and under the client's timeout on a
# slow uplink, and pushes of small blueprints are still bounded by the count (sync_batch).
DEFAULT_PUSH_BATCH_BYTES = 4 * 2**20
# The SQLSTATE of a push refused whole for a bad argument, among them more changes than the
# server's max_batch ("too many changes"). Which of them it was is told by server_info asked again
# (see _refused_for_limits), never by the message's text.
REFUSED_CALL_CODE = "22023"
# A change that times out (57014) alone this many cycles in a row is parked as too large; one
# timeout alone can be a busy server (another device's push holding the owner lock).
LONE_TIMEOUTS = 3
# What the user can do about a change refused alone for a limit other than size or time
# (SQLSTATE class 54 but 54000; 54001: nested past the server's stack depth): the same text is
# refused the same way every time, so only another text (or the server's limit) helps.
_TOO_COMPLEX_FIX = (
    "simplify it (a less deeply nested meta) and save it again, or ask the project's owner to "
    "raise that server limit"
)
# A change smaller than this that times out alone is never counted towards parking: the server
# parses and writes far more than that per second, so the timeout was the server (busy, slow,
# its lock held), not the change; it would park any small edit as "too large" after three busy
# cycles. Such a cycle fails and is retried with backoff, as any transient error.
LONE_TIMEOUT_MIN_BYTES = 256 * 1024
# The record of synced bases (sync.base_record) is rewritten whole once it is larger than this
# and than four times what its live entries take (an estimated line each).
BASE_RECORD_COMPACT_MIN = 256 * 1024
BASE_RECORD_LINE = 140
# Set (True) on an error that ended the sync loop once the engine has logged it with its
# traceback: a threading.excepthook that logs (the daemon's) then logs no second copy.
LOGGED_ATTR = "_localstore_logged"
# How many blueprints the warning after a recovery without a record names (the rest counted).
RETURNED_NAMED = 20

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


@dataclass(frozen=True, slots=True)
class _LocalCondition:
    """A failure of this machine that the loop expects and retries (CONVENTIONS practice 4).

    Not a bug, so no traceback: one short warning, and the status says what it is and what to
    do. ``record``: whether writing it to the index can work (not while another process holds
    the index's write lock: that write would wait out the same timeout again).
    """

    summary: str
    hint: str
    cleared: str
    record: bool
    # Whether the status's ``hint`` says ``hint`` too: nothing changes until a person acts
    # (a full disk or a locked index pass by themselves, the others said in last_error only).
    needs_person: bool = False

    def describe(self, exc: BaseException) -> str:
        """The status line: what, what to do, then the store's own words."""
        detail = exc.message if isinstance(exc, LocalStoreError) else str(exc)
        return f"{self.summary}; {self.hint} ({detail})"


_INDEX_LOCKED = _LocalCondition(
    summary="the index is locked by another process",
    hint="sync retries by itself; if this lasts, close the other program using this home",
    cleared="the index is free again",
    record=False,
)
_DISK_FULL = _LocalCondition(
    summary="disk full: free space on the disk holding this home's files",
    hint="sync retries by itself once there is room",
    cleared="there is disk space again",
    record=True,
)

# Neither is a bug: both were logged as "unexpected failure" with a traceback, and the status
# showed the store's message without saying that sync goes on trying. Not recorded in the index:
# a write to a damaged or unwritable index fails as the cycle did.
_INDEX_DAMAGED = _LocalCondition(
    summary="the index is damaged",
    hint="stop the daemon (or the app using this home) and run `localstore check --fix`, which "
    "rebuilds it from the files; sync retries by itself meanwhile",
    cleared="the index works again",
    record=False,
)
_PERMISSION_DENIED = _LocalCondition(
    summary="permission denied on this home's files",
    hint="give this user back read and write access to the home (its blueprints and data "
    "folders); sync retries by itself",
    cleared="the home's files can be written again",
    record=False,
)

# A pull refused because the blueprints folder is away (localstore._reconcile
# refuse_a_vanished_root): logged as an unexpected failure with its traceback at every retry,
# and the status's hint was None, what to do only inside last_error's text.
_FOLDER_AWAY = _LocalCondition(
    summary="the blueprints folder is away (moved, deleted, or on a drive not mounted), so "
    "nothing is written into it",
    hint="put it back (or mount its drive); if its blueprints were deleted on purpose, create "
    f"an empty file {CONFIRM_EMPTY_NAME} in it (make the folder first): they are then recorded "
    "deleted; sync retries by itself",
    cleared="the blueprints folder is back",
    record=True,
    needs_person=True,
)


def _local_condition(exc: BaseException) -> _LocalCondition | None:
    """The expected local condition ``exc`` is, or None (then it is a bug or not local)."""
    if isinstance(exc, FolderAwayError):
        return _FOLDER_AWAY
    if isinstance(exc, DiskFullError):
        return _DISK_FULL
    if isinstance(exc, PermissionDeniedError):
        return _PERMISSION_DENIED
    if index_damaged(exc):
        return _INDEX_DAMAGED
    if isinstance(exc, IndexStoreError) and isinstance(
        exc.__cause__, apsw.BusyError | apsw.LockedError
    ):
        # The write lock wait of localstore.index ran out (or close() cut it short).
        return _INDEX_LOCKED
    return None


def newer_index_detail(exc: NewerIndexError) -> str:
    """What a process that a newer localstore's upgrade of its index stopped says, with the
    fix: only a process running the newer version can write to the home now."""
    return (
        f"a newer localstore upgraded this home's index while this process ran, so this "
        f"version can no longer write to it ({exc.message}); edits stay in the files until "
        f"the newer version records them: restart this program (or the daemon) with the "
        f"newer localstore"
    )


# ---------------------------------------------------------------------------------------------------
# The engine


class SyncEngine:
    """Replicates one store through one Remote. ``sync_once()`` is the step; ``start()`` loops.

    ``policy`` is a policy name (``merge``, ``keep-both``, ``prefer-local``, ``prefer-remote``) or a
    callable taking a ``sync.merge.ConflictCase`` and returning a ``Resolution``; None uses the
    store's ``conflict_policy`` setting. ``clock`` drives debounce, polling and backoff; ``rng``
    the jitter; ``now`` the wall clock of conflict names. ``lock`` is an optional single-instance
    guard held while syncing (for the whole loop once started). ``batch_size`` is the changes per
    push (``settings.sync_batch``); ``batch_bytes`` the content and meta bytes per push (default
    ``DEFAULT_PUSH_BATCH_BYTES``; a larger change goes alone); both are capped by what the server
    announces (``max_batch``, ``max_batch_bytes``). ``apply_batch`` is the pulled rows per index
    transaction (default ``DEFAULT_APPLY_BATCH``, or ``batch_size`` when that is given). Raises
    MergeError for a bad policy, InvalidInputError for any other wrong argument (durations are
    finite seconds >= 0, the sizes ints >= 1).
    """

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
        # When the loop's cycles began failing with a TransientError (None: the cloud answers),
        # on span_clock: an outage is mostly a laptop asleep, which self.clock leaves out.
        self._offline_since: float | None = None
        # The reason the loop last stopped for a person (None since a cycle worked): the same
        # one again is not news (a locked keychain failed two cycles 0.7 s apart: two warnings).
        self._stopped_for: str | None = None
        self.rng = rng if rng is not None else random.Random()
        self.lock = lock
        self.now = now or (lambda: datetime.now(UTC))
        self.debounce_s = debounce_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.poll_interval_s = (
            poll_interval_s if poll_interval_s is not None else store.settings.poll_interval_s
        )
        # What the caller asked for; batch_size and batch_bytes are these capped by what the
        # server announces now (_check_server), so a limit the server raises again is used again.
        self._wanted_batch = max(1, min(batch_size or store.settings.sync_batch, MAX_BATCH))
        self._wanted_bytes = max(1, batch_bytes or DEFAULT_PUSH_BATCH_BYTES)
        self.batch_size = self._wanted_batch
        self.batch_bytes = self._wanted_bytes
        # This cycle's push limits: batch_size and batch_bytes, halved for the rest of a cycle
        # after a push was split (see _push).
        self._push_count = self.batch_size
        self._push_bytes = self.batch_bytes
        # id -> (push op id, cycles in a row in which that change timed out alone). Keyed by id
        # alone: keyed by (id, op id), a change edited again before it was parked left its old
        # count behind for the life of the engine, one entry per such edit.
        self._lone_timeouts: dict[str, tuple[int, int]] = {}
        # id -> (passing path, op id) of its next push, instead of its own path and push op id:
        # one rename of a cycle (a swap) that no order of a batch can apply (see _path_taken).
        self._detours: dict[str, tuple[str, int]] = {}
        self.pull_limit = pull_limit
        # An explicit batch_size also sizes the apply chunks (tests use tiny ones to get many).
        self.apply_batch = max(1, apply_batch or batch_size or DEFAULT_APPLY_BATCH)
        if store.read_only:
            # Before any table is made or any cycle starts: a read-only store's first write
            # would fail in the middle of a pull, as one more retryable error, for ever.
            raise store.index.read_only_error("sync")
        ensure_schema(store)
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
        self._state: SyncStateName = "idle"
        self._progress: tuple[int, int] | None = None
        self._last_error: str | None = None
        self._last_hint: str | None = None  # what a person must do about _last_error, if any
        self._keychain_failed = False
        self._listeners: dict[int, Callable[[SyncStatus], None]] = {}
        self._listener_seq = 0
        self._unsubs: list[Callable[[], None]] = []
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
        self._synced_before = account_record.record_path(store.settings.paths.state).exists()
        # False once the server said it has no revision lookup (an older schema): not asked again.
        self._ancestry = True
        self._settled = False
        self._refreshed = False
        self._lock_held = False
        # The local condition the loop is retrying, and when it last warned about it.
        self._condition: _LocalCondition | None = None
        self._condition_warned_at = 0.0

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

    # -- conflicts and quarantine (delegates to the module functions) -----------------------------

    def conflicts(self, *, include_resolved: bool = False) -> list[ConflictRecord]:
        """Conflict records, oldest first."""
        return list_conflicts(self.store, include_resolved=include_resolved)

    def conflict(self, cid: int) -> ConflictRecord:
        """One conflict record. Raises ConflictError."""
        return get_conflict(self.store, cid)

    def resolve_conflict(
        self,
        cid: int,
        *,
        take: Literal["local", "remote"] | None = None,
        content: str | None = None,
    ) -> ConflictRecord:
        """Settle a conflict record (see :func:`resolve_conflict`); wakes the loop to push it."""
        record = resolve_conflict(self.store, cid, take=take, content=content)
        self.request_sync()
        return record

    def quarantined(self) -> list[QuarantineEntry]:
        """Parked changes with the server's error."""
        return list_quarantine(self.store)

    # -- one cycle -------------------------------------------------------------------------------

    def sync_once(self) -> SyncReport:
        """Push, pull and apply until nothing is left (bounded rounds); return what happened.

        Raises SyncError subclasses (each with an ``action``) and the store's errors; nothing is
        lost or skipped when it raises, and calling again resumes.
        """
        with self._cycle_held("sync_once"), self._guard():
            self._refreshed = False
            report = SyncReport()
            try:
                with _index_errors():
                    self._cycle(report)
                    # (Inside: a full or locked index can fail this write too, and is then
                    # recorded and classified like any failure of the cycle.)
                    self._record_success()
                self._record_bases(report)
            except BaseException as exc:
                if isinstance(exc, SyncError):
                    # The cloud failed or refused: the server that answers next may not be the
                    # one server_info described (see _check_server).
                    self._checked_server = False
                self._record_error(exc)
                raise
            return report

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

    def _cycle(self, report: SyncReport) -> None:
        newer = self.store.index.newer_version()
        if newer is not None:
            # Refused before anything goes to the server or into state/: the steps before the
            # first write only read (an idle poll takes no write lock until its end), and this
            # version must not push from tables a newer localstore upgraded. (One pragma when no
            # other connection committed; the writes check again, for an upgrade mid-cycle.)
            raise newer
        self._push_count, self._push_bytes = self.batch_size, self.batch_bytes
        self._reasked_for_refusal = False
        self._record_held_bases()  # before anything can fail on the network
        # Local upkeep, here so that a daemon offline for weeks does it too: old merges kept
        # for conflicts resolved since (an empty listing in the usual case).
        sweep_kept_merges(self.store, now=self.now())
        self._set_state("connecting")
        self._check_session()
        self._check_server()
        self._check_identity()
        self._recover_journal()
        self._recover_bases()
        # Before the check below asks whether there is anything to push: an edit another process
        # recorded unjudged is held until judged, and uncounted there it skipped the check and
        # went up in the push pass (which judges it too, for the later rounds' passes).
        self._judge_dirty()
        self._reconcile_before_push(report)
        self._push_pass(report)
        self._rerun_unblocked(report)
        self._pull_all(report)
        report.rounds = 1
        # Merges above made new local changes (merged texts, conflict copies, moved paths):
        # push them now rather than on the next poll; bounded, since other devices keep writing.
        while report.rounds < MAX_ROUNDS and self._pushable() > 0:
            if self._push_pass(report):
                self._pull_all(report)
            report.rounds += 1
        with self.store.index.read() as cur:
            report.held = st.held_count(cur)
            settled = st.conflicts_with_deleted_copy(cur)
        if settled:
            # Deleting the conflict copy (an editor, `localstore rm`, another device) is the
            # person's decision to keep the other version; left open, status counted the
            # record for good. The copy's text stays in history.
            with self.store.index.write() as cur:
                for cid in settled:
                    st.resolve_conflict(cur, cid, "copy deleted")
            log.info("sync: %d conflict(s) settled by deleting their copies", len(settled))

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

    def _check_session(self) -> None:
        """Before anything goes to the server: the remote's session must still be the stored one.

        A remote that can tell (``check_session``, SupabaseRemote: one stat of the session marker)
        raises SessionChangedError after a logout, or another user's login, since it was opened.
        """
        check = getattr(self.remote, "check_session", None)
        if callable(check):
            check()

    def _check_identity(self) -> None:
        """Sync only as the account this home belongs to (docs/sync-engine.md, "Identity").

        A home that synced with another user of the same project is refused
        (AccountMismatchError) unless that switch was accepted at login: its blueprints are not
        the new user's to upload. A new project (or an accepted switch) resets the server
        knowledge and uploads the home. The account is also kept besides the index
        (``sync.account_record``), so a rebuilt index (`check --fix`) keeps refusing.
        """
        identity = self.remote.identity
        state_dir = self.store.settings.paths.state
        if self._account is None:
            # Once per engine: afterwards this engine is the one that writes it.
            self._account = account_record.read(state_dir)
        recorded = self._account
        with self.store.index.read() as cur:
            # The usual poll: the index already names this account and the watermark was
            # recomputed, so the steps below would only read. Read without the write lock, which
            # every other process's writer waits for (the email as the write below reads it).
            same = self._settled and st.get_state(cur, "identity") == identity
            email = st.get_state(cur, st.EMAIL_PREFIX + identity) if same else None
        if not same:
            email = self._take_identity(identity, recorded)
        current = account_record.AccountRecord(identity, email)
        if current != recorded and account_record.write_quietly(state_dir, current):
            self._account = current

    def _take_identity(
        self, identity: str, recorded: account_record.AccountRecord | None
    ) -> str | None:
        """The writes of ``_check_identity`` (restore, refuse, reset, settle); the e-mail noted
        for ``identity``. Raises AccountMismatchError for another user of the project."""
        with self.store.index.write() as cur:
            if recorded is not None and st.restore_identity(cur, recorded.identity, recorded.email):
                # The index was rebuilt (`check --fix`): the account survives it.
                log.info("sync: this home's account taken from %s", account_record.RECORD_FILE)
            known = st.foreign_identity(cur, identity)
            if known is not None:
                raise AccountMismatchError(
                    f"this home's blueprints synced with {st.describe_account(cur, known)}; "
                    f"they are not uploaded to {st.describe_account(cur, identity)}, the other "
                    "account of this project logged in now",
                    code="account_mismatch",
                )
            if st.reset_for_identity(cur, identity):
                log.warning("sync: new remote %s; local blueprints will be uploaded", identity)
            email = st.get_state(cur, st.EMAIL_PREFIX + identity)
            if not self._settled:
                # Once per engine the watermark is recomputed from nothing: an index written by
                # an older version (no watermark) or copied around is never trusted blindly.
                st.settle(cur, rescan=True)
                self._settled = True
        return email

    # -- the record of synced bases kept besides the index (sync.base_record) -------------------

    def _record_bases(self, report: SyncReport | None) -> None:
        """Append the bases not in ``state/sync-bases.jsonl`` yet and move its mark; never raises.

        At the end of a cycle (``report``), and by the first step of a cycle that finds no
        record to append to (``None``: the file is then written whole). Every base change comes
        with a server seq above the cursor the last append saw (a pulled row is above the
        cursor it was pulled from; a push gets a new seq), so the rows to append are those with
        ``base_seq`` above that cursor: one range read, and none at all in an idle poll (cursor
        unchanged, nothing pushed). The steps of the cycle appended most of them already
        (``_record_step``); those are not written twice. The mark moves only after the file is
        written.
        """
        if report is not None and self._unrecorded is not None:
            self._name_returned(self._unrecorded)
            self._unrecorded = None
        identity = self.remote.identity
        state_dir = self.store.settings.paths.state
        try:
            with self.store.index.read() as cur:
                mark = st.base_record_mark(cur)
                cursor = st.get_cursor(cur)
                whole = (
                    mark is None
                    or mark[0] != identity
                    or not base_record.record_path(state_dir).exists()
                )
                since = 0 if whole or mark is None else mark[1]
                if report is not None and not whole and since >= cursor and not report.pushed:
                    return
                rows = st.bases_since(cur, since)
                count = st.base_count(cur) if not whole else len(rows)
            entries = [base_record.BaseEntry(*r) for r in rows]
            if whole:
                base_record.rewrite(state_dir, identity, entries)
                self._recorded.clear()
                self._step_open = False  # (a file written whole has no open step)
            else:
                fresh = [e for e in entries if self._recorded.get(e.id) != e]
                if not fresh and not self._step_open:
                    # The steps appended all of it: only the mark moves.
                    size = 0
                else:
                    size = base_record.append(state_dir, fresh, done=True)
                    self._step_open = False
                if size > max(BASE_RECORD_COMPACT_MIN, 4 * BASE_RECORD_LINE * count):
                    with self.store.index.read() as cur:
                        everything = [base_record.BaseEntry(*r) for r in st.bases_since(cur, 0)]
                    base_record.rewrite(state_dir, identity, everything)
            with self.store.index.write() as cur:
                st.set_base_record_mark(cur, identity, cursor)
            # Above the mark, only what a later read of the range could bring again is kept.
            self._recorded = {
                e.id: e for e in [*self._recorded.values(), *entries] if e.seq > cursor
            }
        except (LocalStoreError, OSError) as exc:
            # The index still holds the bases; the next cycle appends them (the mark stayed).
            _record_failed(exc)

    def _rebuilt(self) -> bool:
        """True when this home synced before: its account is recorded, or `check --fix` set a
        damaged index aside. (A new home with files of its own, or one that imported a bundle,
        downloads the server's blueprints as a matter of course: nothing to warn about.)"""
        if self._synced_before:
            return True
        index = self.store.settings.paths.index_db
        return any(index.parent.glob(f"{index.name}.damaged-*"))

    def _name_returned(self, held: set[str]) -> None:
        """Warn of the blueprints the server brought to a home recovered without a record.

        Nothing outside the lost index says whether this device had deleted them (the record
        did not exist yet) or never had them: they are kept, the safe side, and named, so a
        person who deleted one deletes it again (every version stays in its history). Conflict
        copies made by this cycle are this home's own texts, not downloads.
        """
        try:
            copies = {c.copy_id for c in list_conflicts(self.store) if c.copy_id}
            with self.store.index.read() as cur:
                rows = cur.execute("SELECT id, path FROM blueprints WHERE deleted = 0").fetchall()
        except LocalStoreError as exc:
            log.warning("sync: could not list the blueprints the server brought back: %s", exc)
            return
        came = sorted(str(p) for i, p in rows if i not in held and i not in copies)
        if not came:
            return
        shown = ", ".join(came[:RETURNED_NAMED])
        more = f" and {len(came) - RETURNED_NAMED} more" if len(came) > RETURNED_NAMED else ""
        log.warning(
            "sync: this home's index was rebuilt with no record of what it had synced (%s), so "
            "%d blueprint(s) it did not hold came from the server: %s%s. Any of them deleted "
            "here before the index was lost came back; delete it again if so (`localstore rm`).",
            base_record.RECORD_FILE,
            len(came),
            shown,
            more,
        )

    def _record_held_bases(self) -> None:
        """Write the record whole from an index that holds bases but never wrote it; never raises.

        An index of a version before the record (``tests/upgrade/fixtures``) has its bases and
        no mark. The record was first written by a cycle's first commit, so a home offline since
        the upgrade (every cycle failing on the network), or killed in that first cycle, still
        had none when its index was lost, and ``check --fix`` then recovered it without bases:
        its changes waiting for upload came back as conflict copies and its deletes came back.
        Written under the account of the index (the remote's is not checked yet: the bases are
        that account's). Once per engine; one read of the mark when there is nothing to do.
        """
        if self._held_recorded:
            return
        state_dir = self.store.settings.paths.state
        try:
            with self.store.index.read() as cur:
                identity = st.get_state(cur, "identity")
                if identity is None or st.base_record_mark(cur) is not None:
                    self._held_recorded = True
                    return
                rows = st.bases_since(cur, 0)
                cursor = st.get_cursor(cur)
            if not rows:
                # A rebuilt index (no bases yet): the record is what `_recover_bases` reads.
                self._held_recorded = True
                return
            base_record.rewrite(state_dir, identity, [base_record.BaseEntry(*r) for r in rows])
            self._step_open = False
            with self.store.index.write() as cur:
                st.set_base_record_mark(cur, identity, cursor)
            self._recorded.clear()
            self._held_recorded = True
        except (LocalStoreError, OSError) as exc:
            log.warning("sync: could not write the record of synced bases: %s", exc)

    def _open_step(self, ids: Sequence[str]) -> None:
        """Before a step commits bases for ``ids``: say so in the record (``open_step``).

        What keeps the one window ``_record_step`` leaves (a kill after the step's commit,
        before its append) from misleading a recovery: the step is then still open in the file,
        and the recovery does not trust the older bases it has for those ids. The record is so
        ahead of the index (a step that never committed is open too, which only makes the
        recovery careful), never silently behind. The first step of an engine first appends
        what a killed process's steps committed and never recorded (the index has them), which
        closes its open steps. Never raises: without it the recovery is as before.
        """
        if not ids:
            return
        state_dir = self.store.settings.paths.state
        try:
            with self.store.index.read() as cur:
                kept = self._record_kept(cur)
            if not kept:
                return  # the step's own append writes the record whole
            if not self._steps_closed or self._step_open:
                # A step a killed process left open, or one of ours that raised after its
                # commit: append what the index has and the file lacks, which closes it (closing
                # it with only this step's bases would leave the record silently behind).
                self._step_open = True
                self._record_bases(None)
                self._steps_closed = True
            base_record.open_step(state_dir, ids)
            self._step_open = True
        except (LocalStoreError, OSError) as exc:
            _record_failed(exc)

    def _record_kept(self, cur: Any) -> bool:
        """Whether this account's record of synced bases exists and the index says it is this
        account's (the mark): then a step appends to it; otherwise it is written whole."""
        mark = st.base_record_mark(cur)
        return (
            mark is not None
            and mark[0] == self.remote.identity
            and base_record.record_path(self.store.settings.paths.state).exists()
        )

    def _open_pull_step(self, rows: Sequence[ServerRow]) -> None:
        """``_open_step`` for the rows of a page this device does not build on already (its own
        pushes coming back change no base: no fsync for them)."""
        if not rows:
            return
        try:
            with self.store.index.read() as cur:
                ids = [r.id for r in drop_known(cur, rows)]
        except LocalStoreError as exc:
            _record_failed(exc)
            return
        self._open_step(ids)

    def _record_step(self, ids: Sequence[str]) -> None:
        """Append the bases of ``ids`` that one step of the cycle just committed; never raises.

        Called right after each commit that takes server rows as bases (a push batch's results,
        a pulled page), not once after the cycle: a process killed after a step's commit left
        the record a whole cycle behind, and a recovery from it (the index lost too) took the
        older bases for that cycle's items, so a delete, a rename with an edit or an edit back
        made after it were misread (see ``_recover_bases``). Now only a kill between a step's
        commit and this append (one fsync) leaves it behind. One read of those ids, one append.
        """
        if not ids:
            return
        state_dir = self.store.settings.paths.state
        try:
            with self.store.index.read() as cur:
                rows = st.bases_of(cur, ids) if self._record_kept(cur) else None
            if rows is None:
                self._record_bases(None)  # no record to append to: write it whole now
                return
            fresh = [
                e
                for e in (base_record.BaseEntry(*r) for r in rows)
                if self._recorded.get(e.id) != e
            ]
            if fresh or self._step_open:
                base_record.append(state_dir, fresh, done=True)  # (closes the step)
                self._step_open = False
            self._recorded.update((e.id, e) for e in fresh)
        except (LocalStoreError, OSError) as exc:
            # The end of the cycle appends them (the mark did not move).
            _record_failed(exc)

    def _recover_bases(self) -> None:
        """Take the bases back from ``state/sync-bases.jsonl`` into an index that has none.

        Only for an index that never wrote the record and knows nothing of the server (one
        ``check --fix`` rebuilt; a new home has no record of this account). What the files are
        now, compared with what this device last synced, tells the intent the index held:

        * a live copy equal to its base (content and path) is clean: nothing to push, and the
          server's rows up to the base's seq are not downloaded again;
        * any other live copy is an edit (a rename, an edit back to an older text: none is
          taken for an old copy) and is pushed on that base, merged like any other edit;
        * a base with no copy left anywhere is a delete made here: it is pushed on that base.
          If another device changed the blueprint since, the push conflicts and the server's
          version comes down (an edit beats a delete), as it did before.

        The base of an id in a step the record says is still open (``base_record.unsettled``: a
        kill between that step's commit and its append) may be older than the lost index's: the
        copy is then taken as an edit with no base text, pushed on that base, and meets the
        server's newer revision: identical (settled) or not (both kept). A record a failed write
        left behind (no open step) is read as it is.

        With no record at all, a home that synced before still cannot tell a delete of its own
        from a blueprint it never had: the end of the cycle names what the server brought
        (``_name_returned``).
        """
        identity = self.remote.identity
        with self.store.index.read() as cur:
            if st.base_record_mark(cur) is not None or not st.knows_no_server(cur):
                return
        state_dir = self.store.settings.paths.state
        entries = base_record.read(state_dir, identity)
        # Bases a kill left open (see _open_step): the index may have had newer ones.
        unsure = base_record.unsettled(state_dir) if entries else set()
        if not entries:
            if self._rebuilt():
                with self.store.index.read() as cur:
                    holding = {str(r[0]) for r in cur.execute("SELECT id FROM blueprints")}
                # A rebuilt index with no record (lost before this version wrote one, or lost
                # with the state folder): a delete made here cannot be told from a blueprint
                # never downloaded, so the server's copy comes back. The end of the cycle names
                # what came (``_name_returned``), so that it does not come silently.
                self._unrecorded = holding or None
            return
        with self.store.index.read() as cur:
            local = {
                str(r[0]): (str(r[1]), str(r[2]), int(r[3]), bool(r[4]))
                for r in cur.execute(
                    "SELECT id, path, content_hash, op_id, deleted FROM blueprints"
                )
            }
        deletes = [e for e in entries.values() if not e.deleted and e.id not in local]
        if deletes:
            deletes = self._vanished_here(deletes)
        results = self._push_recovered_deletes(deletes) if deletes else {}
        restored = 0
        with self.store.index.write() as cur:
            for e in entries.values():
                here = local.get(e.id)
                if here is None and not e.deleted:
                    result = results.get(e.id)
                    if result is None or result.status != "applied":
                        continue  # the server's version comes down with the pull, as before
                    assert result.rev is not None and result.seq is not None
                    # The delete pushed just now is the base: a tombstone, nothing held here.
                    e = replace(e, rev=result.rev, seq=result.seq, deleted=True)
                # The local copy holds the base's text (only moved, or not changed at all).
                # Not for a base a kill left open: the copy may be an edit back to it made
                # on the newer base the index had. With no base text and no clean mark, it is
                # pushed on the recorded base and meets the server's newer row: settled when
                # equal, else both kept (a conflict copy), never overwritten.
                held = (
                    here is not None
                    and not here[3]
                    and here[1] == e.content_hash
                    and e.id not in unsure
                )
                clean = held and here is not None and not e.deleted and here[0] == e.path
                st.restore_base(
                    cur,
                    e.id,
                    rev=e.rev,
                    seq=e.seq,
                    content_hash=e.content_hash,
                    path=e.path,
                    deleted=e.deleted,
                    synced_op_id=here[2] if clean and here is not None else 0,
                    held=held and not e.deleted,
                )
                restored += 1
        log.info(
            "sync: %d synced bases taken from %s into a rebuilt index (%d deletes pushed)",
            restored,
            base_record.RECORD_FILE,
            sum(1 for r in results.values() if r.status == "applied"),
        )

    def _vanished_here(self, entries: list[base_record.BaseEntry]) -> list[base_record.BaseEntry]:
        """The recorded blueprints with no file left anywhere in the home: deleted here.

        A blueprint the index does not hold can still have files: a YAML that does not parse
        gets no row in a rebuilt index, nor does a pair in a folder this home does not scan
        (another client moved it into a hidden folder: that is not this device's delete). Any
        meta file naming the id, anywhere under the blueprints folder, keeps it off the list (a
        plain search of its bytes: a meta file too broken to parse still counts). Reads every
        meta file, once, and only when a recovery finds candidates.
        """
        wanted = {e.id.lower() for e in entries}
        root = self.store.settings.paths.blueprints
        for folder, _dirs, names in os.walk(root):
            for name in names:
                if not wanted:
                    break
                if not name.endswith(fs.META_SUFFIX):
                    continue
                try:
                    with open(os.path.join(folder, name), "rb") as fh:
                        text = fh.read().decode("utf-8", "replace").lower()
                except OSError:
                    continue
                wanted -= {w for w in wanted if w in text}
        return [e for e in entries if e.id.lower() in wanted]

    def _push_recovered_deletes(
        self, entries: list[base_record.BaseEntry]
    ) -> dict[str, PushResult]:
        """Push the deletes a rebuilt index lost, each on its recorded base; results by id."""
        with self.store.index.write() as cur:
            ops = [self.store.index.next_op_id(cur) for _ in entries]
        changes = [
            Change(
                op_id=op,
                id=e.id,
                base_rev=e.rev,
                path=e.path,
                content="",
                meta={},
                content_hash=e.content_hash,
                deleted=True,
            )
            for op, e in zip(ops, entries, strict=True)
        ]
        out: dict[str, PushResult] = {}
        for i in range(0, len(changes), self.batch_size):
            part = changes[i : i + self.batch_size]
            results = self._call(self.remote.push, part, device=self.store.device_id)
            _check_results(part, results)
            for change, result in zip(part, results, strict=True):
                out[change.id] = result
                if result.status == "rejected":
                    log.warning(
                        "sync: the delete of %s made before the index was rebuilt was refused "
                        "(%s); the server's copy comes back",
                        change.path,
                        result.message or result.code,
                    )
        return out

    def _pushable(self) -> int:
        with self.store.index.read() as cur:
            return st.pending_count(cur) - st.held_count(cur)

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

    def _fetch_pages(self, ids: Sequence[str]) -> Iterator[list[ServerRow]]:
        """The user's rows for ``ids``, one server answer at a time, for the caller to apply
        each before the next is asked for.

        A remote with ``fetch_page`` (PagedFetchRemote) answers at most its byte budget (16 MiB
        and one row) and names the ids left, which are asked for next: all the rows of a chunk
        at once were up to 200 large blueprints in memory here, and on the server one jsonb
        over its 256 MiB (54000) or the statement timeout (57014). A call still refused so
        (``SPLIT_CODES``: a server without fetch_rows_page, whose fetch_rows refuses an answer
        over the budget, or a slow one) is asked again in halves; one id alone is at most one
        row (18 MiB), which the server answers, so a lone refusal is a real failure and raised.
        """
        paged = self.remote if isinstance(self.remote, PagedFetchRemote) else None
        asked: Sequence[str] = ids
        while asked:
            try:
                if paged is None:
                    rows, rest = self._call(self.remote.fetch, asked), []
                else:
                    page = self._call(paged.fetch_page, asked)
                    rows, rest = page.rows, page.rest
            except TransientError as exc:
                if exc.code not in SPLIT_CODES or len(asked) < 2:
                    raise
                log.info(
                    "sync: the server refused a fetch of %d rows (%s); fetching it in halves",
                    len(asked),
                    exc,
                )
                half = len(asked) // 2
                yield from self._fetch_pages(asked[:half])
                yield from self._fetch_pages(asked[half:])
                return
            yield rows
            asked = rest

    def _record_success(self) -> None:
        self._last_error = self._last_hint = None
        self._keychain_failed = False
        with self.store.index.write() as cur:
            st.set_state(cur, "last_synced_at", utc_now())
            st.del_state(cur, "last_error")
            st.del_state(cur, LAST_ERROR_STATE_KEY)
            st.settle(cur)  # idle polls and status reads then look at no row
        self._set_state("idle", progress=None)

    def _record_error(self, exc: BaseException) -> None:
        if not isinstance(exc, Exception) or self._store_gone(exc):
            return  # KeyboardInterrupt / SystemExit, or a closed store: nothing to record
        condition = _local_condition(exc)
        self._last_hint = condition.hint if condition and condition.needs_person else None
        if isinstance(exc, NewerIndexError):
            # Not written to the index: the write would be refused too.
            self._last_error = newer_index_detail(exc)
            self._set_state("error", progress=None)
            return
        self._keychain_failed = keychain_failure(exc)
        if self._keychain_failed and condition is None and isinstance(exc, SyncError):
            # A locked keychain waits for a person, as a local condition does: the status's
            # hint says what to do ("unlock the login keychain"), not only last_error's text.
            self._last_hint = exc.hint or None
        if condition is not None:
            self._last_error = condition.describe(exc)
        else:
            # (A cloud error quotes the server: sync.supabase_remote escapes and cuts it; this
            # holds for any remote.)
            self._last_error = shown(str(exc) or type(exc).__name__, 4 * MAX_SHOWN)
        state: SyncStateName = "offline" if isinstance(exc, OfflineError) else "error"
        if condition is None or condition.record:
            try:
                with _index_errors(), self.store.index.write() as cur:
                    st.set_state(cur, "last_error", self._last_error)
                    st.set_state(cur, LAST_ERROR_STATE_KEY, state)  # `status` without an engine
            except LocalStoreError as err:  # the index failed too; the status still shows it
                if condition is None:
                    log.warning("sync: could not record the error in the index: %s", err)
                else:  # (a full disk: expected to fail as the cycle did)
                    log.debug("sync: could not record the error in the index: %s", err)
        self._set_state(state, progress=None)

    def _store_gone(self, exc: BaseException) -> bool:
        """Whether ``exc`` comes from the store being closed (an app quitting), not a failure.

        Also an index lock wait that close() cut short (it raises IndexStoreError).
        """
        return isinstance(exc, StoreClosedError) or self.store.closed

    # -- push --------------------------------------------------------------------------------------

    def _push_pass(self, report: SyncReport) -> int:
        """Push every item dirty at the start of the pass; returns how many conflicted."""
        self._judge_dirty()
        with self.store.index.read() as cur:
            limit = st.max_op_id(cur)
            total = st.pending_count(cur)
        after, done, conflicts = 0, 0, 0
        while True:
            with self.store.index.read() as cur:
                batch = [
                    i
                    for i in st.outbox_batch(
                        cur, after, self._push_count, max_bytes=self._push_bytes
                    )
                    if i.op_id <= limit
                ]
            if not batch:
                break
            after = batch[-1].op_id
            pairs = self._changes_for(batch)
            done += len(batch)
            if pairs:
                self._set_state("pushing", progress=(min(done, total), max(total, done)))
                conflicts += self._push(pairs, report)
        self._forget_lone_timeouts()
        return conflicts

    def _forget_lone_timeouts(self) -> None:
        """Drop the timeout counts of changes there is nothing left to push for.

        A count goes when its change is pushed, but a change can stop being one without a push:
        a new blueprint deleted before it reached the server (its delete settles without a
        call), an edit that became invalid, a pull that left nothing to send. Each such count
        stayed for the life of the engine (months in a daemon). Run after a pass that pushed
        everything it had: any change timing out alone raised before here. The dict holds only
        large changes that timed out, so a lookup each is cheap.
        """
        if not self._lone_timeouts:
            return
        with self.store.index.read() as cur:
            gone = [i for i in self._lone_timeouts if not st.pushable(cur, i)]
        for blueprint_id in gone:
            del self._lone_timeouts[blueprint_id]

    def _judge_dirty(self) -> None:
        """Judge with this store's validator the dirty rows it has not judged (the daemon's
        watcher or the CLI recorded them while the app was open), if it is the home's: they
        are held otherwise (st._VALID). Outside any transaction, so the validator runs before
        the write lock (BlueprintStore._rejudge); the daemon, with no validator, leaves them."""
        store = self.store
        if store.validator is None or store.home_validator() != store.validator_name:
            return  # none, or another app's rules are the home's now: not ours to judge by
        with store.index.read() as cur:
            after = st.settled_op_id(cur)
        store._rejudge("b.op_id > ? AND b.judged_by IS NOT ?", (after, store.validator_name))

    def _push(self, pairs: Sequence[tuple[Change, st.OutboxItem]], report: SyncReport) -> int:
        """Push one batch and handle its results; returns how many conflicted.

        A call the server refuses as too large or too slow (``SPLIT_CODES``) is never sent again
        as it was (it would fail the same way forever): this cycle's push limits drop to half of
        it (count and bytes) and its changes go again in pieces that size, in order, each
        answered before the next goes; a piece refused again is split again. The batches read
        after it are that small too. Safe after any failure: the server applies a call whole or
        not at all, and a piece it did apply (a lost answer) is replayed by op id. One change
        refused so on its own is handled by ``_lone_refusal``.
        """
        changes = [c for c, _ in pairs]
        try:
            results = self._call(self.remote.push, changes, device=self.store.device_id)
        except TransientError as exc:
            if exc.code not in SPLIT_CODES:
                raise
            if len(pairs) == 1:
                return self._lone_refusal(pairs[0], exc, report)
            sizes = [_push_bytes(c) for c in changes]
            self._push_count = max(1, min(self._push_count, len(pairs) // 2))
            self._push_bytes = max(1, min(self._push_bytes, sum(sizes) // 2))
            log.info(
                "sync: the server refused a push of %d changes (%d bytes) as too large or too "
                "slow (%s); pushing it in halves",
                len(pairs),
                sum(sizes),
                exc,
            )
            return self._push_pieces(pairs, sizes, report)
        except ProtocolError as exc:
            sizes = [_push_bytes(c) for c in changes]
            if not self._refused_for_limits(exc, sizes):
                raise
            log.info(
                "sync: the server refused a push of %d changes (%d bytes) (%s); it now takes at "
                "most %d changes and %d bytes per push: pushing them in batches that size",
                len(pairs),
                sum(sizes),
                exc,
                self.batch_size,
                self.batch_bytes,
            )
            return self._push_pieces(pairs, sizes, report)
        _check_results(changes, results)
        for change in changes:
            self._lone_timeouts.pop(change.id, None)
        self._open_step([c.id for c in changes])
        conflicts = self._handle_results(pairs, results, report)
        self._record_step([c.id for c in changes])
        return conflicts

    def _push_pieces(
        self, pairs: Sequence[tuple[Change, st.OutboxItem]], sizes: list[int], report: SyncReport
    ) -> int:
        """Push a refused call's changes again in order, in pieces of this cycle's push limits."""
        conflicts, start = 0, 0
        while start < len(pairs):
            # Cut by the limits as they are now: a refused piece lowers them further.
            end = start + st.leading_fit(sizes[start:], self._push_count, self._push_bytes)
            conflicts += self._push(pairs[start:end], report)
            start = end
        return conflicts

    def _refused_for_limits(self, exc: ProtocolError, sizes: Sequence[int]) -> bool:
        """Whether a push refused whole (22023) was too large for limits lowered since asked.

        An operator can lower the server's ``max_batch`` under a running engine with nothing
        failing between (no new epoch): its next full push is refused whole as "too many
        changes". That cost a failed cycle shown as an error (about a minute) before the next
        asked again. Now ``server_info`` is asked again at once, and when the refused call is
        over the limits it announces now, this cycle's limits drop to them and the caller pushes
        the changes again in pieces that size (safe: the server applied nothing of the call).
        The same code means a bad argument too (the device name): the limits then still take the
        call and it is not sent again. Asked once a cycle: a server that refuses the batches of
        its own new limit too fails the cycle as before (the next asks again). Raises what
        ``_check_server`` raises (another protocol: RemoteConfigError).
        """
        if exc.code != REFUSED_CALL_CODE or self._reasked_for_refusal or len(sizes) < 2:
            return False  # (one change cannot be cut smaller: it would go again as it was)
        self._reasked_for_refusal = True
        count, size = self._push_count, self._push_bytes
        self._check_server(force=True)
        # The new limits, kept as small as a split earlier in this cycle made them.
        self._push_count = min(count, self.batch_size)
        self._push_bytes = min(size, self.batch_bytes)
        return len(sizes) > self._push_count or sum(sizes) > self._push_bytes

    def _lone_refusal(
        self, pair: tuple[Change, st.OutboxItem], exc: TransientError, report: SyncReport
    ) -> int:
        """One change the server refuses as too large or too slow even alone: park it, or raise.

        Too large (54000, 413) is final for that text: it is parked as ``too_large`` at once and
        the queue goes on (a poison pill must not stall every upload); too complex (the rest of
        class 54: 54001 is JSON nested past the server's stack depth) as ``too_complex``, with
        what to do about it, as sending it again cannot succeed. A timeout (57014) alone
        can be a busy server, so it is raised (the cycle fails and is retried with backoff) until
        it happened ``LONE_TIMEOUTS`` cycles in a row; then it is parked too. A change under
        ``LONE_TIMEOUT_MIN_BYTES`` is never parked for timeouts: its size cannot be the cause.
        A later edit or ``--retry-quarantined`` un-parks it, as for any rejection.
        """
        change, item = pair
        if exc.code == "57014":
            if _push_bytes(change) < LONE_TIMEOUT_MIN_BYTES:
                raise exc
            op, seen = self._lone_timeouts.get(change.id, (change.op_id, 0))
            # Another op id is another text: its count starts again (and replaces the old one).
            seen = seen + 1 if op == change.op_id else 1
            if seen < LONE_TIMEOUTS:
                self._lone_timeouts[change.id] = (change.op_id, seen)
                raise exc
            why = f"the server timed out on this change alone {seen} times in a row"
        elif exc.code in ("54000", "413"):
            why = "the server refuses this change as too large even alone"
        else:
            why = "the server refuses this change as too complex even alone"
        too_complex = exc.code not in ("57014", "54000", "413")
        self._lone_timeouts.pop(change.id, None)
        with self.store.index.write() as cur:
            self._quarantine_push(
                cur,
                change,
                item,
                "too_complex" if too_complex else "too_large",
                # The server's words without the error's hint ("sync retries by itself"),
                # which is no longer true of a parked change.
                f"{why} ({_push_bytes(change)} bytes): {exc.message}"
                + (f"; {_TOO_COMPLEX_FIX}" if too_complex else ""),
                report,
            )
        return 0

    def _changes_for(self, batch: Sequence[st.OutboxItem]) -> list[tuple[Change, st.OutboxItem]]:
        changes: list[tuple[Change, st.OutboxItem]] = []
        settled: list[st.OutboxItem] = []
        for item in batch:
            if item.deleted and (item.base_rev is None or item.base_deleted):
                settled.append(item)  # never on the server, or already deleted there
            elif not item.deleted and not item.valid:
                continue  # fails the app's validator: held back, never pushed as if valid
            else:
                path, op_id = item.path, item.push_op_id
                if not item.deleted and item.id in self._detours:
                    path, op_id = self._detours[item.id]
                changes.append(
                    (
                        Change(
                            op_id=op_id,
                            id=item.id,
                            base_rev=item.base_rev,
                            path=path,
                            content="" if item.deleted else item.content,
                            meta=item.meta,
                            content_hash=item.content_hash,
                            deleted=item.deleted,
                        ),
                        item,
                    )
                )
        if settled:
            with self.store.index.write() as cur:
                for item in settled:
                    st.mark_synced(cur, item.id, item.op_id)
        return changes

    def _handle_results(
        self,
        pairs: Sequence[tuple[Change, st.OutboxItem]],
        results: Sequence[PushResult],
        report: SyncReport,
    ) -> int:
        stats = ApplyStats()
        # One lookup for the batch: conflicts of creates this device holds without a base.
        ancestors = self._ancestors(
            [
                r.current
                for r in results
                if r.status == "conflict" and r.reason != "path_taken" and r.current is not None
            ]
        )
        applier = Applier(self.store, self.policy, now=self.now, stats=stats, ancestors=ancestors)
        conflicts = 0
        foreign: list[tuple[Change, st.OutboxItem]] = []
        reused = False
        current = [r.current for r in results if r.current is not None]
        # The app's validator on the conflicts' rows and merges, before the write lock.
        applier.judge_ahead(current)
        self._journal(current)
        with self._detours_kept() as outcome, self.store.index.write(outcome) as cur:
            st.journal_clear(cur)
            # Accepted changes first, in three statements for the batch: they touch only their
            # own sync rows, so the order against the conflicts below does not matter.
            accepted = [
                _accepted(change, item, result)
                for (change, item), result in zip(pairs, results, strict=True)
                if result.status == "applied"
            ]
            st.record_accepted(cur, accepted)
            report.pushed += len(accepted)
            for (change, item), result in zip(pairs, results, strict=True):
                detoured = self._detours.pop(change.id, None) is not None
                if detoured and result.status == "applied" and change.path != item.path:
                    # The detour is used up either way. Applied, the blueprint is at its
                    # passing path on the server: still dirty, its own path goes up in the next
                    # round under its own push op id (the detour had one of its own, so a kill
                    # before this commit leaves that one unused: the push of the own path then
                    # meets the detour's row, this device's write, and keeps its path).
                    st.mark_unsynced(cur, change.id)
            for (change, item), result in zip(pairs, results, strict=True):
                if result.status == "applied":
                    continue
                if result.code == "not_owner" and item.base_rev is None and not change.deleted:
                    foreign.append((change, item))  # never synced under this id: _take_new_id
                elif result.status == "rejected" and result.code == "op_id_reused":
                    self._reused_op(cur, change, result)
                    reused = True
                elif result.status == "rejected":
                    self._quarantine_push(
                        cur, change, item, result.code or "rejected", result.message or "", report
                    )
                else:
                    conflicts += 1
                    self._push_conflict(cur, applier, change, item, result, report)
            # In the transaction that raised the op counter: committed after it, a kill in
            # between left the counter above the server's highest op and the id as it was, and
            # no later push met a used op id again (a home sharing the id kept it for good).
            given_up = self._new_device_id() if reused else None
        self._finish_apply(stats, report)
        if given_up is not None:
            log.warning(
                "sync: the server holds other changes under this home's device id %s (a home "
                "restored from a backup, or a copy of another home); it pushes as %s from now on",
                given_up,
                self.store.device_id,
            )
        for change, item in foreign:
            self._take_new_id(change, item, report)
        return conflicts

    @contextmanager
    def _detours_kept(self) -> Iterator[WriteOutcome]:
        """Put the detours back as they were when the transaction (given the outcome yielded)
        rolls back.

        They follow the transaction: one added in it holds an op id drawn in it, which the
        rollback hands out again (the next change of this device drew it too, and one of the
        two pushes met ``op_id_reused``: a new device id for nothing, and one more round); one
        used up in it is still to be pushed.
        """
        kept = dict(self._detours)
        outcome = WriteOutcome()
        try:
            yield outcome
        except BaseException:
            if not outcome.done:  # (done: an interrupt after the COMMIT; they are as committed)
                self._detours = kept
            raise

    def _take_new_id(self, change: Change, item: st.OutboxItem, report: SyncReport) -> None:
        """Give a blueprint the server refused as another user's (``not_owner``) an id of its own.

        Only for one this device never synced (no server base): its id came from elsewhere, most
        likely a bundle another user of the same project exported (an import keeps ids, and ids
        are unique across the project, not per user). Quarantining it, as before, refused every
        later edit too: it never synced. It is done the way reconcile treats a copied pair: the
        meta file gets a new id and reconcile records that, the old id as deleted (its history
        stays under that id; never on the server, its delete is not pushed) and the new one as
        created, which the next push sends as new. A kill between the two leaves a meta file the
        next reconcile records the same way. If the files no longer hold that blueprint (moved,
        deleted, being edited), the change is quarantined as any rejection.
        """
        local = self.store.row_by_id(change.id)
        fresh: str | None = None
        if local is not None and not local.deleted and not local.flagged:
            meta_path = self.store.abspath(fs.meta_path_for(local.path))
            try:
                raw, seen = fs.read_regular_seen(meta_path)
                meta = decode_meta(raw, source=str(meta_path))
            except (FileNotFoundError, InvalidInputError):
                meta = None
            if meta is not None and meta.id == change.id:
                fresh = new_id()
                try:
                    # Only over the meta file read: an edit saved since (a name typed in) was
                    # replaced unrecorded by the plain rename. Being edited: quarantined below.
                    fs.write_checked(meta_path, encode_meta(meta.replace(id=fresh)), seen)
                except fs.TargetChangedError as changed:
                    self.store._keep_set_aside(changed.set_aside, str(meta_path))
                    fresh = None
                from localstore._reconcile import Reconciler

                Reconciler(self.store, origin="merge").ingest_path(local.path)
        if fresh is None or self.store.row_by_id(fresh) is None:
            with self.store.index.write() as cur:
                self._quarantine_push(
                    cur, change, item, "not_owner", "id belongs to another user", report
                )
            return
        message = (
            f"{change.path}: its id {change.id} belongs to another user of this project (an "
            f"imported bundle keeps ids); it now has the new id {fresh} and is pushed as new"
        )
        report.errors.append(message)
        log.warning("sync: %s", message)

    @staticmethod
    def _quarantine_push(
        cur: Any, change: Change, item: st.OutboxItem, code: str, message: str, report: SyncReport
    ) -> None:
        """Park a change the server refused (the outbox skips it until a new edit or a retry)."""
        st.quarantine(cur, change.id, item.op_id, change.path, "push", code, message)
        report.count_quarantined(change.id)
        log.warning("sync: %s quarantined: %s", change.path, message)

    def _push_conflict(
        self,
        cur: Any,
        applier: Applier,
        change: Change,
        item: st.OutboxItem,
        result: PushResult,
        report: SyncReport,
    ) -> None:
        if result.reason == "missing":
            # The server has no such row (purged, or a fresh project): push it as a create.
            if change.deleted:
                st.mark_synced(cur, change.id, item.op_id)
            st.forget_server_row(cur, change.id)
            self._renew(cur, change.id)
            return
        current = result.current
        if current is None:
            raise ProtocolError(f"push conflict {result.reason!r} without the current row")
        if result.reason == "path_taken":
            self._path_taken(cur, applier, change, current, report)
            return
        self._apply_one(cur, applier, current, report)

    def _path_taken(
        self,
        cur: Any,
        applier: Applier,
        change: Change,
        winner: ServerRow,
        report: SyncReport,
    ) -> None:
        # If the holder is one of ours that is leaving that path (a later op of this push, or
        # the next pass), the collision is an ordering artefact: retry next round instead of
        # moving anything. Only if its move will really go up: one held back (it fails the
        # validator) or parked in quarantine keeps the path taken on the server, and retrying
        # would refuse this change every round of every cycle with nothing to show for it.
        holder = _row_or_none(self.store, winner.id)
        leaving = holder is not None and (
            holder.deleted or fs.path_key(holder.path) != fs.path_key(change.path)
        )
        local = _row_or_none(self.store, change.id)
        if local is not None and not local.deleted and change.path != local.path:
            # A passing path (below) someone else took first: try again without it, nothing
            # is moved (the blueprint is not at that path here).
            self._renew(cur, change.id)
            return
        if leaving and st.pushable(cur, winner.id):
            if winner.id not in self._detours and self._rename_cycle(cur, change.id, winner.id):
                # Each rename of the cycle waits for the next to leave its path: none ever
                # goes up. This one passes through a free path first; the others then follow
                # in order, and it goes to its own path last. (The op id is drawn in the
                # batch's transaction: a rollback drops the detour too, _detours_kept.)
                passing = self._passing_path(change.path)
                self._detours[change.id] = (passing, self.store.index.next_op_id(cur))
            self._renew(cur, change.id)
            return
        # (Not when the holder is live here at another path, its move held back: the server's
        # meta put beside this YAML would be that blueprint's, live elsewhere; reconcile gave
        # the YAML its own id back, and the push met the same path every round of every cycle.)
        live_here = holder is not None and not holder.deleted
        if not live_here and self._arrived_early(cur, applier, change, winner):
            return
        try:
            applier.move_for_path_conflict(cur, change.id, winner)
        except UnparsedInTheWay as exc:
            # Its file does not parse here (an edit in progress): the store will not move it,
            # and raising stopped every cycle here, nothing else synced. Parked at its current
            # op id (a flag bumps none): an edit un-parks it, and so does the file parsing again
            # as it was or its delete (_rerun_unblocked). It is then moved aside as usual, and
            # the pulled row that wants its path (parked as path_blocked meanwhile) is stored.
            op_id = st.current_op_id(cur, change.id)
            st.quarantine(cur, change.id, op_id, change.path, "push", "unparsable_local", str(exc))
            report.count_quarantined(change.id, _row_error(change.path, str(exc)))
            log.warning("sync: %s quarantined: %s", shown(change.path), exc)

    def _rename_cycle(self, cur: Any, start: str, holder: str) -> bool:
        """True when the renames of this device lead from ``holder`` back to ``start``.

        ``start`` wants the path the server gives ``holder``; ``holder`` wants the path the
        server gives the next one (as this device last synced it), and so on. A chain that ends
        at a free path or at a blueprint staying where it is resolves by itself, in order.
        """
        seen = {start}
        current = holder
        while current not in seen:
            seen.add(current)
            row = self.store.row_by_id(current, cur)
            if row is None or row.deleted or not st.pushable(cur, current):
                return False
            nxt = st.server_holder(cur, row.path)
            if nxt is None or nxt == current:
                return False
            current = nxt
        return current == start

    def _passing_path(self, path: str) -> str:
        """A free path next to ``path`` for one push: ``stem (moving <device> <stamp>)``."""
        return conflict_path(
            path,
            self.store.device_name,
            utc_stamp(self.now()),
            lambda p: self.store.exists(p) or p in {d[0] for d in self._detours.values()},
            word="moving",
        )

    def _arrived_early(self, cur: Any, applier: Applier, change: Change, winner: ServerRow) -> bool:
        """Give the server's identity to a blueprint that is the server's own, come early.

        A YAML that a file sync tool (or a piecewise copy) brought here before its meta got a
        meta made up by reconcile (localstore/_late_meta.py); pushed under that id before the
        real meta came, it meets the server's row at its path. Never synced, exactly the
        server's content at exactly that path, and a meta nobody described: it is that row.
        Moving it to a conflict copy, as any other, made a copy of identical content with a
        conflict record on every device. The server's meta is written in the made-up one's
        place and reconcile retires the made-up id (never pushed: its delete is settled
        unsent) and records the server's, which the pull of this pass then finds equal. The
        YAML is not touched (a file sync tool would otherwise see a delete or a change). A
        pass that rolls back leaves that meta file: the next reconcile records the same, or the
        next pass's collision move does (its ingest retires the id; nothing is moved). The
        caller rules out a server row live here elsewhere; files changed since they were
        recorded (an edit the watcher has yet to see) are not replaced either.
        """
        local = _row_or_none(self.store, change.id)
        if (
            local is None
            or local.deleted
            or change.base_rev is not None
            or local.path != winner.path
            # (The YAML's bytes: the content hash covers the meta, whose id differs.)
            or local.yaml_sha256 != sha256_hex(winner.content.encode("utf-8"))
        ):
            return False
        found = late_meta.made_up(cur, local)
        if found is None or found.described or not applier.as_indexed(local):
            # (Files changed since they were recorded: a name or tags typed into the meta file
            # that the watcher has yet to see were replaced by the server's meta unrecorded.
            # The path collision's move records them first.)
            return False
        try:
            meta = BlueprintMeta.from_dict(winner.meta, source=f"the server's meta of {winner.id}")
        except InvalidInputError:
            return False
        if meta.id != winner.id:
            return False
        from localstore._reconcile import Reconciler

        meta_abs = self.store.abspath(fs.meta_path_for(local.path))
        recorded = (local.meta_size, local.meta_mtime_ns, local.meta_ctime_ns, local.meta_ino)
        try:
            # Only over the meta file as_indexed found: a name typed in after that look was
            # replaced unrecorded by the plain rename. The collision's move records it first.
            fs.write_checked(meta_abs, encode_meta(meta), recorded)
        except fs.TargetChangedError as changed:
            self.store._keep_set_aside(changed.set_aside, str(meta_abs))
            return False
        rec = Reconciler(self.store)
        rec.ingest_locked(cur, local.path, trust_stat=False)
        self.store.events.publish(rec.events)
        after = self.store.row_by_id(local.id, cur)
        if after is not None and not after.deleted:
            # Reconcile did not retire the made-up id (the files changed again in between):
            # taken as done, it stayed live beside the meta written here. The collision's
            # move records the files first and moves what is still this blueprint aside.
            log.warning(
                "sync: %s: the server's meta of %s written in place of the one made up for it "
                "was not adopted; it is treated as a path collision",
                local.path,
                winner.id,
            )
            return False
        log.info(
            "sync: %s is the server's %s brought here before its meta; the id %s made up for it "
            "is retired",
            local.path,
            winner.id,
            local.id,
        )
        return True

    def _reused_op(self, cur: Any, change: Change, result: PushResult) -> None:
        """Push again a change whose op id this device had already used for another change.

        The op counter went back (the index was restored from a backup) or another home pushes
        under this device id (a copy made before copies took ids of their own): the server
        answers ``op_id_reused`` with the highest op id it holds for this device instead of
        replaying the other change's answer. The counter jumps above it and the change gets a
        fresh op id; it stays dirty and goes up in the next round. Quarantining it would wait
        for a person for nothing; taking the replayed answer, as before, lost the change.
        """
        high = result.max_op_id if result.max_op_id is not None else change.op_id
        self.store.index.raise_op_counter(cur, max(high, change.op_id))
        self._renew(cur, change.id)
        log.info(
            "sync: op id %d of this device was already used for another change on the server "
            "(a home restored from a backup?); %s goes again above op id %d",
            change.op_id,
            change.path,
            high,
        )

    def _new_device_id(self) -> str:
        """Push under a new device id from now on: another home may share this one.

        An ``op_id_reused`` answer means another change was pushed under this device id and op
        id: this home went back in time (a restore) or is a copy of another live home that
        shares its id (copied before copies took ids of their own, localstore._identity). In
        the second case the merge would also take the other home's writes for this one's own
        (its own-device checks), so the id is replaced, as a copy's would be at open; after a
        restore that is harmless. In the batch's own transaction, after its rows: the raised op
        counter and the new id commit together, so a rolled-back batch leaves the id as it was,
        and a kill cannot keep the one without the other (afterwards the counter is above the
        server's ops and no later push meets a used op id: the shared id stayed for good).
        Returns the id given up.
        """
        old = self.store.device_id
        replace_device_id(self.store.index, new_id)  # (store.device_id reads it from the index)
        return old

    def _renew(self, cur: Any, blueprint_id: str) -> None:
        st.renew_push_op(cur, blueprint_id, self.store.index.next_op_id(cur))

    def _reconcile_before_push(self, report: SyncReport) -> None:
        """Pull first (full reconcile, then the delta) when the cursor is below the horizon and
        there is something to push.

        A push's compare-and-swap is by rev, and a row re-created after its tombstone was purged
        started again at rev 1: an edit based on the old row's rev N, pushed before this device
        learnt of the purge, was applied over the new row's rev N, whose content was lost (left
        only in the server's history). Pulled first, the new row meets the edit in a merge and
        the push builds on it. One pull of one row per cycle that has changes to push; nothing
        when the cursor is above the horizon. Since migration 20261122001400 the server answers
        such a push rev_mismatch (a create starts above the horizon); this check still guards
        older projects and rows re-created before that migration.
        """
        if self._pushable() == 0:
            return
        with self.store.index.read() as cur:
            cursor = st.get_cursor(cur)
        try:
            probe = self._call(self.remote.pull, cursor, limit=1)
        except (AuthError, TransientError):
            raise  # the push would fail the same way (offline, logged out): say so now
        except SyncError as exc:
            # A pull the server refuses must not keep the edits from going up, as they did
            # before this check (push, then pull): the push goes ahead, and the pull after it
            # fails and says why. Below the horizon that push may still meet the race above.
            log.debug("sync: the check before the push failed (%s); pushing anyway", exc)
            return
        if probe.reset_required:
            self._pull_all(report)

    # -- pull --------------------------------------------------------------------------------------

    def _pull_all(self, report: SyncReport) -> None:
        with self.store.index.read() as cur:
            cursor = st.get_cursor(cur)
        resets = 0
        while True:
            # The total of a pull is unknown until the last page: 0 says "unknown".
            self._set_state("pulling", progress=(report.pulled, 0))
            page = self._call(self.remote.pull, cursor, limit=self.pull_limit)
            if page.reset_required:
                if resets:
                    raise ProtocolError("the server asked for a reset twice in one pull")
                resets += 1
                report.reset = True
                self._full_reconcile(page.horizon, report)
                cursor = page.horizon
                continue
            self._open_pull_step(page.changes)
            self._apply_page(page.changes, page.next, page.horizon, report)
            self._record_step([r.id for r in page.changes])
            report.pulled += len(page.changes)
            cursor = page.next
            if not page.more:
                break

    def _apply_page(
        self, rows: Sequence[ServerRow], nxt: int, horizon: int, report: SyncReport
    ) -> None:
        """Apply rows in transactions of ``apply_batch`` rows (or ``APPLY_BATCH_CHARS`` of
        content); the cursor commits with the last one.

        Rows this device already builds on (its own pushes coming back after an upload) are
        dropped first, so they cost neither a journal entry nor a transaction.
        """
        with self.store.index.read() as cur:
            rows = drop_known(cur, rows)
        ancestors = self._ancestors(rows)  # one lookup for the page, not one per chunk or row
        chunks = self._chunks(rows)
        for n, chunk in enumerate(chunks or [()]):
            last = n == len(chunks) - 1 or not chunks
            self._apply_rows(
                chunk, report, cursor=(nxt, horizon) if last else None, ancestors=ancestors
            )

    def _chunks(self, rows: Sequence[ServerRow]) -> list[Sequence[ServerRow]]:
        chunks: list[Sequence[ServerRow]] = []
        start, chars = 0, 0
        for i, row in enumerate(rows):
            if i > start and (
                i - start >= self.apply_batch or chars + len(row.content) > APPLY_BATCH_CHARS
            ):
                chunks.append(rows[start:i])
                start, chars = i, 0
            chars += len(row.content)
        if start < len(rows):
            chunks.append(rows[start:])
        return chunks

    def _apply_rows(
        self,
        rows: Sequence[ServerRow],
        report: SyncReport,
        *,
        cursor: tuple[int, int] | None = None,
        unpark: Sequence[str] = (),
        ancestors: dict[str, RevisionMatch] | None = None,
    ) -> None:
        if not rows and not unpark and self._cursor_kept(cursor):
            # An empty page (an idle poll) leaves the cursor where it is: nothing to commit,
            # so no write lock, which every other process's writer waits for.
            return
        stats = ApplyStats()
        if ancestors is None:
            ancestors = self._ancestors(rows)
        applier = Applier(self.store, self.policy, now=self.now, stats=stats, ancestors=ancestors)
        # The app's validator on what the rows save (their texts, merges' results) runs here,
        # before the write lock: inside, a slow one held every other process's writes up.
        applier.judge_ahead(rows)
        self._journal(rows)
        with self.store.index.write() as cur:
            for blueprint_id in unpark:
                st.unquarantine(cur, blueprint_id)  # a row that fails again is parked again
            if unpark:
                # A retry: each row on its own, and a row this device knows but does not hold
                # (a path it does not scan) is applied again: the path may be scanned by now.
                for row in rows:
                    self._apply_one(cur, applier, row, report, force=True)
            else:
                self._apply_batched(cur, applier, rows, report)
            st.journal_clear(cur)
            if cursor is not None:
                st.set_state(cur, "cursor", str(cursor[0]))
                st.set_state(cur, "horizon", str(cursor[1]))
        self._finish_apply(stats, report)

    def _cursor_kept(self, cursor: tuple[int, int] | None) -> bool:
        """Whether the index holds ``cursor`` (next, horizon) already (or it is None) and no
        apply journal: then an apply of no rows would write nothing."""
        with self.store.index.read() as cur:
            if st.journal_read(cur):
                return False
            return cursor is None or (
                st.get_state(cur, "cursor") == str(cursor[0])
                and st.get_state(cur, "horizon") == str(cursor[1])
            )

    def _apply_batched(
        self, cur: Any, applier: Applier, rows: Sequence[ServerRow], report: SyncReport
    ) -> None:
        """Apply rows in order; runs of clean takes go through ``store.save_many`` together.

        A clean take needs no decision, so saving a run of them in one call lets the store flush
        the disk a few times per run instead of a few times per blueprint. Any row that needs a
        decision first flushes the run, so the order of the page is kept.
        """
        save_many = getattr(self.store, "save_many", None)
        run: list[tuple[ServerRow, Any]] = []
        ids: set[str] = set()
        keys: set[str] = set()
        known: Prefetched | None = None
        for pos, row in enumerate(rows):
            if known is None or pos >= known.end:
                # The local state of the next rows in three queries (not four per row). Small
                # windows, so a page full of merges does not read the rest of it after each one.
                known = Prefetched(self.store, cur, rows[pos : pos + PREFETCH_WINDOW])
                known.end = pos + PREFETCH_WINDOW
            if is_known(known.items.get(row.id), row):
                continue  # our own push coming back, or a replayed page: nothing to do
            planned = None
            if save_many is not None:
                planned = applier.plan_clean_save(row, known, ids, keys)
            if planned is not None:
                request, key = planned
                run.append((row, request))
                ids.add(row.id)
                keys.add(key)
                continue
            self._flush_run(cur, applier, run, report)
            ids.clear()
            keys.clear()
            self._apply_one(cur, applier, row, report)
            known = None  # the apply may have changed any row or path: read them again
        self._flush_run(cur, applier, run, report)

    def _flush_run(
        self, cur: Any, applier: Applier, run: list[tuple[ServerRow, Any]], report: SyncReport
    ) -> None:
        """Save a run; if one row's path cannot exist here, apply its rows one by one instead.

        ``save_many`` raises for a storage failure of any item and restores the whole run, so
        one row (a file where the server has a folder) would fail every pull, and the cursor
        could never pass it. Row by row, that row alone is quarantined.
        """
        try:
            rows = self._save_run(cur, applier, run, report)
        except StorageError as exc:
            if not is_path_shape_error(exc):
                raise
            rows = [row for row, _ in run]
            run.clear()
        for row in rows:  # (a run's rows have distinct ids and paths: order does not matter)
            applier.stats.applied -= 1  # counted when planned; apply_row counts what it does
            self._apply_one(cur, applier, row, report)

    def _save_run(
        self, cur: Any, applier: Applier, run: list[tuple[ServerRow, Any]], report: SyncReport
    ) -> list[ServerRow]:
        """Save a run of clean takes; returns the rows that need :meth:`_apply_one` instead."""
        if not run:
            return []
        # Looked up, not called as a method: stores without batched saves take the slow path.
        save_many: Callable[..., list[Any]] = getattr(self.store, "save_many")  # noqa: B009
        results = save_many([request for _, request in run], origin="remote")
        saved: list[tuple[ServerRow, str]] = []
        again: list[ServerRow] = []
        for (row, _), result in zip(run, results, strict=True):
            if not isinstance(result, LocalStoreError):
                saved.append((row, result.content_hash))
                continue
            if isinstance(result, (AlreadyExistsError, ChangedOnDiskError)) or (
                isinstance(result, UnsafePathError) and applier.unscanned(row.path)
            ):
                # AlreadyExistsError: a file at the path the index has not seen (an editor was
                # faster than the watcher), not a bad row: apply_row indexes it and moves it
                # aside. ChangedOnDiskError: an editor saved this blueprint after the run was
                # planned; the store recorded the edit and wrote nothing, and apply_row merges.
                # A path this home never scans (a hidden folder, an ignored name): apply_row
                # records the row and takes the local copy out of view (Applier._out_of_view).
                again.append(row)
                continue
            op_id = st.current_op_id(cur, row.id)
            message = getattr(result, "message", str(result))
            st.quarantine(cur, row.id, op_id, row.path, "pull", "invalid_remote", message)
            report.count_quarantined(row.id, _row_error(row.path, message))
        # Same transaction as the saves (the caller's): files, index rows and bases commit
        # together, exactly as a per-row tx_hook would, with two statements for the run.
        st.record_synced_bases(cur, saved)
        run.clear()
        return again

    def _apply_one(
        self,
        cur: Any,
        applier: Applier,
        row: ServerRow,
        report: SyncReport,
        *,
        force: bool = False,
    ) -> None:
        """Apply one row in its own savepoint; a row this device cannot store is parked."""
        try:
            try:
                with self.store.index.write() as inner:
                    applier.apply_row(inner, row, force=force)
            except ChangedOnDiskError:
                # An editor saved between the applier's look at the files and the store's write:
                # the store recorded the edit, but this savepoint rolled that back. Once more:
                # the applier now records the edit itself and merges. A second refusal stops
                # the pass like any store error (the next cycle looks again).
                with self.store.index.write() as inner:
                    applier.apply_row(inner, row, force=force)
        except (InvalidInputError, StorageError, AlreadyExistsError) as exc:
            if isinstance(exc, StorageError) and not is_path_shape_error(exc):
                raise  # the disk or the index: the pass stops, nothing is skipped
            # AlreadyExistsError here: a file at the path that the store cannot record (its YAML
            # or meta does not parse) and so will not overwrite. Parked until the person fixes,
            # moves or removes it (the next cycle then applies it: _rerun_unblocked); raising
            # would stop every pull.
            code = (
                "invalid_remote"
                if isinstance(exc, InvalidInputError)
                else "path_blocked"
                if isinstance(exc, AlreadyExistsError)
                else "unwritable_path"
            )
            op_id = st.current_op_id(cur, row.id)
            st.quarantine(cur, row.id, op_id, row.path, "pull", code, exc.message)
            report.count_quarantined(row.id, _row_error(row.path, exc.message))
            log.warning("sync: cannot store server row %s (%s): %s", row.id, shown(row.path), exc)

    def _ancestors(self, rows: Sequence[ServerRow]) -> dict[str, RevisionMatch]:
        """Ask the server which local copies without a base are revisions it had (by id).

        See ``sync._apply.ancestor_probes``: after `check --fix` rebuilt the index, or on a
        device that imported an old bundle, a copy with no base is merged without one, and an
        older, unedited copy became a conflict copy of an ancestor. One request for all of
        ``rows`` (a push batch, a pull page), none when every row has a base. A remote without
        the lookup, or a server whose schema predates it, leaves the old behaviour (a merge
        without a base: nothing is lost, a conflict copy at worst).
        """
        ask = getattr(self.remote, "match_revisions", None)
        if not rows or not self._ancestry or not callable(ask):
            return {}
        with self.store.index.read() as cur:
            probes = ancestor_probes(cur, rows)
        found: dict[str, RevisionMatch] = {}
        for i in range(0, len(probes), MAX_MATCH_PROBES):
            try:
                matches = self._call(ask, probes[i : i + MAX_MATCH_PROBES])
            except (RemoteConfigError, ProtocolError) as exc:
                # Only a way to spare conflict copies, never needed to sync correctly: a server
                # that refuses it (grants, a broken reply) must not stop every cycle.
                matches, why = None, str(exc)
            else:
                why = "the function is not deployed"
            if matches is None:
                self._ancestry = False
                log.warning(
                    "sync: the server's revision history cannot be asked (%s; deploy the latest "
                    "sync/supabase/migrations); copies this device holds without a sync base "
                    "are merged without one",
                    why,
                )
                return found
            found.update((m.id, m) for m in matches)
        return found

    def _journal(self, rows: Sequence[ServerRow]) -> None:
        if rows:
            with self.store.index.write() as cur:
                # The local hashes of rows with unpushed edits: a keep-both's copy id follows
                # from one (see _recover_copy). One query per chunk; none found on a download.
                dirty = st.dirty_hashes(cur, [r.id for r in rows if not r.deleted])
                st.journal_write(cur, rows, dirty)

    def _recover_journal(self) -> None:
        """Settle the rows of an apply that a kill cut short (see ``sync._state`` journal)."""
        with self.store.index.read() as cur:
            # Empty but after a kill: no write lock for nothing (only a sync of this home,
            # which holds its lock, writes the journal, so none appears after this read).
            if not st.journal_read(cur):
                return
        events: list[Event] = []
        with self.store.index.write() as cur:
            for entry in st.journal_read(cur):
                self._recover_entry(cur, entry, events)
            st.journal_clear(cur)
        if events:
            self.store.events.publish(events)

    def _recover_entry(self, cur: Any, entry: dict[str, Any], events: list[Event]) -> None:
        row = _row_or_none(self.store, entry["id"])
        item = st.get_item(cur, entry["id"])
        if row is None or (item is not None and item.base_seq >= entry["seq"]):
            return
        if row.op_id <= (item.synced_op_id if item is not None else 0):
            return
        if entry["deleted"] != row.deleted:
            return
        if not row.deleted and (row.content_hash != entry["hash"] or row.path != entry["path"]):
            return  # a real local change (or a half-written pair): the normal merge handles it
        text = cur.execute(
            "SELECT content, meta FROM revisions WHERE id = ? AND rev = ?", (row.id, row.rev)
        ).fetchall()
        if not row.deleted and text and entry.get("local"):
            # Before record_base: the record's base is the one the apply merged against.
            self._recover_copy(cur, entry, item, revision_text(text[0][0]), events)
        st.record_base(
            cur,
            row.id,
            rev=entry["rev"],
            seq=entry["seq"],
            content_hash=entry["hash"],
            path=entry["path"],
            deleted=entry["deleted"],
            content=None if row.deleted or not text else revision_text(text[0][0]),
            meta=None if row.deleted or not text else json.loads(revision_text(text[0][1])),
            synced_op_id=row.op_id,
            held_hash=row.content_hash,
        )

    def _recover_copy(
        self,
        cur: Any,
        entry: dict[str, Any],
        item: st.ItemState | None,
        remote: str,
        events: list[Event],
    ) -> None:
        """Record again the conflict of a keep-both apply that a kill cut short.

        The blueprint holds the server's version (the caller checked), so the apply got past
        the copy: if a blueprint with the copy's id (derived from the local hash the journal
        kept, ``copy_id_for``) is live here and no record names it, the kill came after its
        files and before the commit, and reconcile adopted it as an ordinary blueprint: nobody
        was told there was a conflict. Its text is the local version; the record's reason
        cannot say what the merge found (that was decided inside, not journaled).
        """
        copy_id = copy_id_for(entry["id"], entry["local"], entry["rev"], self.store.device_id)
        copy = self.store.row_by_id(copy_id, cur)
        if copy is None or copy.deleted or st.has_conflict_for_copy(cur, copy_id):
            return
        local = cur.execute(
            "SELECT content FROM revisions WHERE id = ? AND rev = ?", (copy.id, copy.rev)
        ).fetchall()
        known = item is not None and item.base_rev is not None
        base = st.get_base(cur, entry["id"]) if known else None
        cid = st.add_conflict(
            cur,
            blueprint_id=entry["id"],
            path=entry["path"],
            copy_id=copy_id,
            copy_path=copy.path,
            reason="content (recorded again after a sync was cut short)",
            base=base.content if base is not None else None,
            local=revision_text(local[0][0]) if local else "",
            remote=remote,
            base_rev=item.base_rev if item is not None else None,
            remote_rev=entry["rev"],
            above=highest_kept(self.store.paths.state),
        )
        detail = f"conflict #{cid}: local version kept at {copy.path}"
        events.append(Event("conflict", entry["id"], entry["path"], "remote", detail=detail))
        log.warning("sync: %s (recorded again after an interrupted sync)", detail)

    def _finish_apply(self, stats: ApplyStats, report: SyncReport) -> None:
        report.conflicts += stats.conflicts
        report.merged += stats.merged
        report.errors.extend(stats.errors)
        for blueprint_id, message in stats.parked:
            report.count_quarantined(blueprint_id, message)
        if stats.events:
            self.store.events.publish(stats.events)

    # -- full reconcile (below the tombstone horizon) ----------------------------------------------

    def _server_rows(self) -> dict[str, VerifyRow]:
        rows: dict[str, VerifyRow] = {}
        after: str | None = None
        while True:
            page = self._call(self.remote.verify, after)
            for row in page.rows:
                rows[row.id] = row
            if not page.more or page.next is None:
                return rows
            after = page.next

    def _full_reconcile(self, horizon: int, report: SyncReport) -> None:
        """Rebuild server knowledge from ids and hashes instead of an unsafe delta.

        Rows at or below the horizon come by verify + fetch; rows above it come by the delta pull
        that follows (from cursor = horizon). Known ids the server no longer has were deleted
        there and their tombstones purged: deleted here too unless edited here (edit beats
        delete), in which case they are pushed again as creates.
        """
        log.warning("sync: cursor is below the tombstone horizon %d; full reconcile", horizon)
        server = self._server_rows()
        with self.store.index.read() as cur:
            known = st.known_server_ids(cur)
            seen = {i: item.base_seq for i in known if (item := st.get_item(cur, i)) is not None}
        self._vanished(sorted(known - server.keys()), report)
        self._drop_parked_gone(server.keys())
        stale = sorted(
            v.id for v in server.values() if v.seq <= horizon and seen.get(v.id) != v.seq
        )
        for i in range(0, len(stale), FETCH_CHUNK):
            for rows in self._fetch_pages(stale[i : i + FETCH_CHUNK]):
                self._apply_rows(rows, report)
                report.pulled += len(rows)
        with self.store.index.write() as cur:
            st.set_state(cur, "cursor", str(horizon))
            st.set_state(cur, "horizon", str(horizon))

    def _drop_parked_gone(self, on_server: Collection[str]) -> None:
        """Drop parked server rows (direction ``pull``) that the server no longer has and this
        device does not hold: deleted there, their tombstones purged, so nothing is left to
        store or retry. A parked row has no base, so ``_vanished`` never sees it, and its
        tombstone, which drops it in a delta pull, will not come: it stayed listed for good."""
        with self.store.index.read() as cur:
            parked = [
                e.id for e in st.quarantined(cur) if e.direction == "pull" and e.id not in on_server
            ]
        gone = [i for i in parked if (row := _row_or_none(self.store, i)) is None or row.deleted]
        if gone:
            with self.store.index.write() as cur:
                for blueprint_id in gone:
                    st.drop_pull_parked(cur, blueprint_id)

    def _vanished(self, ids: Sequence[str], report: SyncReport) -> None:
        # An edit of one of them that no watcher recorded beats the delete: committed first,
        # judged before its own write (BlueprintStore._record_edits_first), its row is dirty
        # below and pushed again as a create. Met by the delete inside this transaction, it was
        # judged holding the write lock, and the delete's refusal (ChangedOnDiskError) undid
        # the whole transaction, the edit's recording with it: every later pass failed so.
        rows = [_row_or_none(self.store, blueprint_id) for blueprint_id in ids]
        self.store._record_edits_first(
            [row.path for row in rows if row is not None and not row.deleted], "external"
        )
        with self.store.index.write() as cur:
            known = len(st.known_server_ids(cur))
            # Safety valve: a server that lost most rows at once (restored, wiped) must not
            # delete this device's data; re-upload instead and say so.
            wipe = len(ids) > 10 and len(ids) * 2 > known
            for blueprint_id in ids:
                item = st.get_item(cur, blueprint_id)
                row = _row_or_none(self.store, blueprint_id)
                synced = item.synced_op_id if item else 0
                if row is not None and not row.deleted and row.flagged and not wipe:
                    # Its file does not parse: an edit in progress (a flag bumps no op id, so
                    # it looks clean). A delta pull parks such a delete and leaves the file
                    # alone (Applier._wait_for_parse); deleting it here took the half-typed edit
                    # from under the person's editor. Kept: once it parses it is an edit, and
                    # with the server row forgotten below it goes up as new (edit beats delete).
                    report.errors.append(
                        _row_error(
                            row.path,
                            f"does not parse here ({row.flagged}) and was deleted on the "
                            "server meanwhile; the file is kept: fix it (it then goes up again "
                            "as new) or delete it",
                        )
                    )
                elif row is not None and not row.deleted and row.op_id <= synced and not wipe:
                    self.store.delete(blueprint_id, origin="remote")
                    st.mark_synced(cur, blueprint_id, st.current_op_id(cur, blueprint_id))
                st.forget_server_row(cur, blueprint_id)
                if wipe and row is not None and not row.deleted:
                    st.mark_unsynced(cur, blueprint_id)
                # Pushed again as a create: under a fresh op id, never a replay of an old answer.
                self._renew(cur, blueprint_id)
            if wipe:
                report.errors.append(
                    f"the server no longer has {len(ids)} of {known} known blueprints; "
                    "they were kept here and will be uploaded again"
                )

    # -- verify and quarantine retry ---------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Compare local (id, content_hash, deleted, base rev) with the server's verify pages.

        The index holds the last good revision of a blueprint whose file is flagged (does not
        parse, too large, bad meta), and that can match the server while the file does not:
        each flagged file is a difference of its own (kind ``flagged``, with path and reason).
        """
        with self._cycle_held("verify"):
            self._refreshed = False
            server = self._server_rows()
            with self.store.index.read() as cur:
                local = st.local_fingerprints(cur)
                dirty = st.dirty_ids(cur)
                flagged = flagged_files(cur)
                bases = st.base_marks(cur)
        flagged_ids = {f.id for f in flagged}
        report = VerifyReport(
            local=sum(1 for _, d in local.values() if not d),
            remote=sum(1 for v in server.values() if not v.deleted),
        )
        for blueprint_id in sorted(server.keys() | local.keys()):
            server_row = server.get(blueprint_id)
            diff = _difference(blueprint_id, server_row, local.get(blueprint_id))
            if blueprint_id not in dirty and blueprint_id not in flagged_ids:
                # (A flagged file is a difference of its own, below.)
                base = bases.get(blueprint_id)
                if diff is None:
                    diff = _behind(blueprint_id, server_row, base)
                elif diff["kind"] == "content_differs" and _holds(server_row, base, local):
                    diff = None
            if diff is not None:
                diff["pending"] = blueprint_id in dirty
                report.differences.append(diff)
        for f in flagged:
            server_row = server.get(f.id)
            live = server_row is not None and not server_row.deleted
            fingerprint = local.get(f.id)
            report.differences.append(
                {
                    "id": f.id,
                    "kind": "flagged",
                    "path": f.path,
                    "detail": f.reason,
                    "local_hash": fingerprint[0] if fingerprint is not None else None,
                    "server_hash": server_row.content_hash if live and server_row else None,
                    "server_rev": server_row.rev if server_row is not None else None,
                    "pending": f.id in dirty,
                }
            )
        return report

    def retry_quarantined(self) -> int:
        """Un-park every quarantined change so the next cycle retries it; returns how many.

        Pushes are retried from the outbox; rows that could not be stored are fetched again and
        applied, each un-parked in the transaction that applies it (a row this device knows but
        does not hold, at a path it does not scan, is applied again too: the path may be scanned
        by now). A failed fetch raises and leaves those rows parked: the cursor is past them and
        nothing else would fetch them.
        """
        with self._cycle_held("retry_quarantined"), self._guard(), _index_errors():
            self._refreshed = False
            with self.store.index.write() as cur:
                entries = st.quarantined(cur)
                for entry in st.clear_quarantine(cur, direction="push"):
                    self._renew(cur, entry.id)  # a replay would return the old rejection
            self._refetch_parked([e.id for e in entries if e.direction == "pull"], SyncReport())
        self.request_sync()
        return len(entries)

    def _refetch_parked(self, ids: Sequence[str], report: SyncReport) -> None:
        """Fetch the server rows of parked pulled rows ``ids`` again and apply them.

        Each answer's rows are un-parked as they are applied (one that fails again is parked
        again); a failed fetch raises and leaves the rest parked: the cursor is past them and
        nothing else would fetch them. Ids the server no longer has are un-parked too.
        """
        for i in range(0, len(ids), FETCH_CHUNK):
            part = ids[i : i + FETCH_CHUNK]
            left = set(part)
            for rows in self._fetch_pages(part):
                if not rows:
                    continue
                self._apply_rows(rows, report, unpark=[r.id for r in rows])
                left.difference_update(r.id for r in rows)
                # Below the cursor: the next record append must reach them.
                with self.store.index.write() as cur:
                    st.lower_base_record_mark(cur, min(r.seq for r in rows) - 1)
            if left:
                # There is nothing to apply.
                self._apply_rows([], report, unpark=sorted(left))

    def _rerun_unblocked(self, report: SyncReport) -> None:
        """Apply again the server rows parked for a reason on this device once it is gone: the
        blueprint's own file did not parse (``unparsable_local``, see
        ``Applier._wait_for_parse``) and parses again, or a file that cannot be indexed held the
        row's path (``path_blocked``) and was fixed, moved or removed (``path_unblocked``).

        An edit made meanwhile raises the op id and its push meets the server's row (the entry
        goes with that newer base). A file fixed back to exactly its last synced text raises
        none: nothing is pushed, so the parked row (a delete, a newer revision) never ran again
        and the replicas stayed apart until someone ran ``--retry-quarantined``. Re-applying it
        here takes it as a delta pull would: the delete applies to an unedited copy, an edit
        still beats it. A blocked path's row had nothing else to bring it back either (the
        cursor is past it). One read of the quarantine per cycle (and a few lstats per
        ``path_blocked`` row); a fetch only for such rows whose reason is gone.
        """
        with self.store.index.read() as cur:
            ids = st.parked_unblocked(cur, lambda path: path_unblocked(self.store, cur, path))
            pushes = st.parsed_push_parks(cur)
        if pushes:
            # A push parked because its file did not parse where the server's blueprint wants
            # the path (_path_taken): a file fixed back to exactly its recorded text raises no
            # op id. The row parked for that path (below) usually moves it aside (a new op id),
            # but not when no row is parked (the server's blueprint is held here at another
            # path), and a file deleted instead left the entry listed for good. Un-parked, it
            # goes up in this cycle's next push round.
            with self.store.index.write() as cur:
                for blueprint_id in st.parsed_push_parks(cur):
                    st.unquarantine(cur, blueprint_id)
        if ids:
            self._refetch_parked(ids, report)

    # -- the background loop -----------------------------------------------------------------------

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
        """Ask the loop to finish its current step and exit. Idempotent."""
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


# ---------------------------------------------------------------------------------------------------
# Helpers


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
    if not all(callable(getattr(remote, m, None)) for m in ("push", "pull", "subscribe")):
        raise wrong_type(
            "remote",
            remote,
            "a sync Remote",
            hint="pass a SupabaseRemote (or leave remote out of start_sync for the home's "
            "login), or a MemoryRemote in tests",
        )


def check_engine_args(store: BlueprintStore, engine_kwargs: dict[str, Any]) -> None:
    """Check SyncEngine's keyword arguments without building one (nor its remote).

    start_sync runs this before it takes the home's lock or opens the home's cloud session: a
    wrong argument was refused only after the lock file was made, and with no remote given,
    after the session was opened (NotLoggedInError hid the real mistake). Raises
    InvalidInputError (MergeError for an unknown conflict policy), as SyncEngine() does.
    """
    params = inspect.signature(SyncEngine.__init__).parameters
    args = {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    args.update(engine_kwargs)
    _engine_args(
        {"clock": args["clock"], "now": args["now"]},
        {"debounce_s": args["debounce_s"], "backoff_base_s": args["backoff_base_s"]},
        {"backoff_cap_s": args["backoff_cap_s"], "poll_interval_s": args["poll_interval_s"]},
        {k: args[k] for k in ("batch_size", "batch_bytes", "apply_batch")},
        args["pull_limit"],
        args["rng"],
    )
    _policy_arg(store, args["policy"])


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


def _record_failed(exc: BaseException) -> None:
    """Log a failed update of the base record (never raised: the index still holds the bases,
    and a later step or cycle appends them). A store closed under the cycle is no failure: the
    loop stops quietly on its next step; nor is an index a newer localstore upgraded meanwhile:
    the cycle's next write is refused too, and the loop stops on it with its own line."""
    if not isinstance(exc, StoreClosedError | NewerIndexError):
        log.warning("sync: could not update the record of synced bases: %s", exc)


@contextmanager
def _index_errors() -> Iterator[None]:
    """Translate apsw errors of sync's own statements (on index cursors) into the store's tree.

    localstore's Index maps the errors of BEGIN and COMMIT, not of the statements run inside a
    write (some callers catch apsw's there on purpose): a full index raised apsw.FullError out of
    sync_once(), where no caller could tell it was a full disk.
    """
    try:
        yield
    except apsw.Error as exc:
        raise map_apsw_error(exc, "write sync state to the index") from exc


def _push_bytes(change: Change) -> int:
    """The content and meta bytes of a change (what ``outbox_batch`` counts, as pushed)."""
    return len(change.content.encode("utf-8", "surrogatepass")) + len(
        json.dumps(change.meta, ensure_ascii=False).encode("utf-8", "surrogatepass")
    )


def _check_results(changes: Sequence[Change], results: Sequence[PushResult]) -> None:
    if len(results) != len(changes):
        raise ProtocolError(f"push returned {len(results)} results for {len(changes)} changes")
    for change, result in zip(changes, results, strict=True):
        if result.op_id != change.op_id or result.id.lower() != change.id.lower():
            raise ProtocolError(f"push result for op {result.op_id} answers op {change.op_id}")


def _accepted(change: Change, item: st.OutboxItem, result: PushResult) -> st.Accepted:
    if result.rev is None or result.seq is None:
        raise ProtocolError(f"push result for op {result.op_id} is applied without rev and seq")
    # The pushed text is the local revision with this hash: the base is kept as that hash.
    return st.Accepted(
        change.id,
        result.rev,
        result.seq,
        item.content_hash,
        change.path,
        change.deleted,
        item.op_id,
    )


def _row_error(path: str, message: str) -> str:
    """One report line for a server row that could not be stored (its path said once)."""
    # The path is the server's: escaped and cut, as in the quarantine record.
    return shown(message if message.startswith(path) else f"{path}: {message}", 4 * MAX_SHOWN)


def _row_or_none(store: BlueprintStore, blueprint_id: str) -> Any:
    try:
        return store.row(blueprint_id, include_deleted=True)
    except NotFoundError:
        return None


def _holds(
    server: VerifyRow | None, base: st.BaseMark | None, local: dict[str, tuple[str, bool]]
) -> bool:
    """Whether a clean blueprint holds, unchanged, what this device stored of the server's row.

    Another client's hash is its own (the server recomputes nothing), and a row's meta is
    stored with what it lacks filled in (``sync._apply.stored_meta``): the local hash then
    never equals the server's, and verify reported every such row as differing, for good. Like
    is compared with like instead: the server row (rev and hash) with the one this device
    built on, and the local hash with the revision that stored it.
    """
    if server is None or base is None or base.held_hash is None:
        return False
    here = local.get(server.id)
    return (
        here is not None
        and base.rev == server.rev == base.held_rev
        and base.server_hash == server.content_hash
        and here[0] == base.held_hash
    )


def _behind(
    blueprint_id: str, server: VerifyRow | None, base: st.BaseMark | None
) -> dict[str, Any] | None:
    """A clean blueprint whose hash matches the server's but whose base is another revision.

    The hash leaves out the path (and the volatile ``modified``): a rename this device never
    applied (a row it missed) matched, and verify reported a copy at the old path clean. A clean
    copy builds on the server's current revision once it holds it, so a base at any other rev
    means a row of it was not applied here (or the server was restored to an older state).
    """
    if server is None or server.deleted or base is None or base.rev == server.rev:
        return None
    return {
        "id": blueprint_id,
        "kind": "rev_differs",
        "local_hash": server.content_hash,
        "server_hash": server.content_hash,
        "server_rev": server.rev,
        "base_rev": base.rev,
    }


def _difference(
    blueprint_id: str, server: VerifyRow | None, local: tuple[str, bool] | None
) -> dict[str, Any] | None:
    server_live = server is not None and not server.deleted
    local_live = local is not None and not local[1]
    if not server_live and not local_live:
        return None
    if server_live and local_live and server is not None and local is not None:
        if server.content_hash == local[0]:
            return None
        kind = "content_differs"
    elif server_live:
        kind = "missing_locally"
    else:
        kind = "missing_on_server"
    return {
        "id": blueprint_id,
        "kind": kind,
        "local_hash": local[0] if local_live and local is not None else None,
        "server_hash": server.content_hash if server_live and server is not None else None,
        "server_rev": server.rev if server is not None else None,
    }
