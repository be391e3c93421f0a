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

The engine is built in layers, one private module each, every class building on the one before:
``_engine_core`` (state, status, locks, remote calls), ``_engine_bases`` (the record of synced
bases), ``_engine_apply`` (applying server rows), ``_engine_pull`` (pulls, fetches, the full
reconcile), ``_engine_results`` (a push batch's answers), ``_engine_push`` (the outbox),
``_engine_cycle`` (``sync_once``), ``_engine_loop`` (the background loop); the local conditions the
loop retries are in ``_engine_conditions``. This module holds ``SyncEngine`` itself (its public
conflict, verify and quarantine calls) and re-exports the names callers import from here.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from localstore.store import BlueprintStore
from sync import _state as st
from sync._engine_conditions import newer_index_detail as newer_index_detail
from sync._engine_core import DEFAULT_APPLY_BATCH as DEFAULT_APPLY_BATCH
from sync._engine_core import DEFAULT_BACKOFF_BASE_S as DEFAULT_BACKOFF_BASE_S
from sync._engine_core import DEFAULT_BACKOFF_CAP_S as DEFAULT_BACKOFF_CAP_S
from sync._engine_core import DEFAULT_DEBOUNCE_S as DEFAULT_DEBOUNCE_S
from sync._engine_core import DEFAULT_PUSH_BATCH_BYTES as DEFAULT_PUSH_BATCH_BYTES
from sync._engine_core import EngineLock, WorkerState, _engine_args, _policy_arg
from sync._engine_core import remote_arg as remote_arg
from sync._engine_cycle import _index_errors
from sync._engine_loop import ATTENTION_RETRY_S as ATTENTION_RETRY_S
from sync._engine_loop import LOGGED_ATTR as LOGGED_ATTR
from sync._engine_loop import _EngineLoop
from sync._engine_push import LONE_TIMEOUT_MIN_BYTES as LONE_TIMEOUT_MIN_BYTES
from sync._engine_push import LONE_TIMEOUTS as LONE_TIMEOUTS
from sync._engine_push import REFUSED_CALL_CODE as REFUSED_CALL_CODE
from sync._local import (
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
    resolve_conflict,
)
from sync._state import ConflictRecord, QuarantineEntry
from sync.remote import SPLIT_CODES as SPLIT_CODES
from sync.remote import VerifyRow

# The remote-free helpers live in sync._local and are re-exported here (one import for callers).
# The constants and helpers callers import from here are re-exported too (the `X as X` imports).
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


class SyncEngine(_EngineLoop):
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


# ---------------------------------------------------------------------------------------------------
# Helpers


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
