"""Due paths into the index: one part of ``Watcher`` (see ``_watch_state``).

A batch of due paths is ingested in one index write transaction, a savepoint per path, by the
Reconciler's per-path logic; its events are published after the commit. A path whose ingest
fails is retried with a back-off and given up after ``MAX_FAILURES`` tries (a rescan or a new
event tries it again); while any path cannot be indexed, ``problem`` says why. The app's
validator judges the due files before the batch takes the write lock.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import apsw

from localstore import files as fs
from localstore._reconcile import Reconciler
from localstore._watch_events import _EventIntake
from localstore._watch_state import _Failing, log
from localstore.blueprint import sha256_hex
from localstore.errors import LocalStoreError, NewerIndexError, StoreClosedError
from localstore.index import map_apsw_error

# Ingest failures of one path (a full disk, a locked or read-only index, an unreadable file): the
# retries wait RETRY_S[0] doubling up to RETRY_S[1]; after MAX_FAILURES tries the path is given
# up: it leaves the pending list and a rescan brought forward to GIVE_UP_RESCAN_S[0] (doubling per
# further give-up of the same path, up to GIVE_UP_RESCAN_S[1], never later than the timer rescan)
# tries it again, as does any new event on it. The edit is never dropped: the index still differs
# from the file, so every rescan and reconcile finds it.
MAX_FAILURES = 5
RETRY_S = (0.25, 30.0)
GIVE_UP_RESCAN_S = (30.0, 300.0)
# Ingest-failure log lines of one kind (retrying, giving up) at most this often; the others go to
# DEBUG and are counted in the next one. A full disk failed every path every 0.1 s, each one a
# WARNING into a log on that same full disk.
FAILURE_LOG_S = 60.0


class _BatchLost(Exception):
    """The batch's transaction is gone (SQLite rolled it back after ``cause``)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class _BatchOutcome:
    """What the ingest of one batch left to do once its transaction is over."""

    failed: list[tuple[str, BaseException]] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    # Failed paths that were taking a blueprint from another path (rel: its id), and the
    # deletes kept back for such a move (old path, the moved path that failed).
    moves: dict[str, str] = field(default_factory=dict)
    held: list[tuple[str, str]] = field(default_factory=list)


class _Ingest(_EventIntake):
    """Due paths into the index, failures retried (the layer above ``_EventIntake``)."""

    def _judge_ahead(self, items: Sequence[tuple[str, bool]]) -> None:
        """Run the app's validator on the due files before the batch takes the write lock (a
        slow validator held every other process's writes up). A file that changes before its
        ingest reads it is judged again there (the verdict is kept by the bytes judged); one
        that cannot be read or parsed here is left to the ingest, which reports it. A file
        whose bytes are the ones recorded (the echo of this store's own save, a touch) is not
        judged, when the row holds this validator's verdict on them: its ingest keeps that
        verdict. Only then: a touch or a hand edit of the meta file alone of a blueprint another
        process recorded (the CLI, a daemon without the validator: judged by none) was judged
        inside the batch's transaction, the YAML being the one recorded."""
        store = self.store
        if store.validator is None:
            return
        for rel, _ in items:
            try:
                raw = fs.read_regular(self.root / rel, store.limits.max_bytes)
                if sha256_hex(raw) != self._recorded_verdict_on(rel):
                    store._judge_ahead(raw)
            except (LocalStoreError, OSError):
                continue

    def _recorded_verdict_on(self, key: str) -> str | None:
        """The sha256 of the YAML the live row at ``key`` recorded when that row holds this
        store's validator's verdict on it (BlueprintStore._row_verdict_holds), else None."""
        with self.store.index.read() as cur:
            rows = cur.execute(
                "SELECT yaml_sha256 FROM blueprints WHERE path = ? AND deleted = 0 "
                "AND flagged IS NULL AND judged_by IS ?",
                (key, self.store.validator_name),
            ).fetchall()
        return str(rows[0][0]) if rows else None

    def _ingest_batch(self, items: Sequence[tuple[str, bool]]) -> None:
        rec = Reconciler(self.store)
        out = _BatchOutcome()
        self._judge_ahead(items)
        try:
            with self.store.index.write():
                for rel, may_delete in items:
                    self._ingest_path(rec, rel, may_delete, out)
        except StoreClosedError:
            raise
        except (OSError, LocalStoreError, apsw.Error, _BatchLost) as exc:
            # The batch's own transaction (begin or commit), or lost: every path in it failed.
            cause = exc.cause if isinstance(exc, _BatchLost) else exc
            out.failed = [(rel, cause) for rel, _ in items]
            rec.events.clear()
            out.vanished = []
            out.held = []
        self.stats.batches += 1
        self.stats.ingested += len(items) - len(out.failed)
        self._settle_batch(items, out)
        self._update_ingest_problem()
        failed_paths = {rel for rel, _ in out.failed}
        self._tell_once(rec, [rel for rel, _ in items if rel not in failed_paths])
        for ev in rec.events:
            self.stats.events[ev.kind] = self.stats.events.get(ev.kind, 0) + 1
        self.store.events.publish(rec.events)

    def _ingest_path(self, rec: Reconciler, rel: str, may_delete: bool, out: _BatchOutcome) -> None:
        """Ingest ``rel`` in a savepoint of the batch's transaction, noting in ``out`` what it
        left to do. Raises _BatchLost when SQLite rolled the batch back, StoreClosedError."""
        mark = len(rec.events)
        try:
            with self.store.index.write() as cur:
                if may_delete and (mover := self._held_for_move(cur, rel, out.moves)):
                    out.held.append((rel, mover))
                    return
                # An event (or a rescan) brought this path here: its stat alone
                # does not prove the content is what the index holds.
                if not rec.ingest_locked(cur, rel, may_delete=may_delete, trust_stat=False):
                    out.vanished.append(rel)
        except StoreClosedError:
            raise
        # (Anything else too: a bug for one path must not stop the others.)
        except Exception as exc:
            del rec.events[mark:]
            if rec.moving is not None:
                out.moves[rel] = rec.moving
            if self.store.index.conn.getautocommit():
                # SQLite rolled the whole batch back (it does on SQLITE_FULL): the
                # paths before this one are undone, and each one after it would
                # commit on its own, its event then never published.
                raise _BatchLost(exc) from exc
            if _not_found(exc) and not os.path.lexists(self.root / rel):
                # The file went away while it was read (a git checkout removing
                # what it had just written): a vanish, checked again after its
                # grace, not a failure (a WARNING and DEGRADED on every checkout).
                out.vanished.append(rel)
                return
            out.failed.append((rel, exc))

    def _settle_batch(self, items: Sequence[tuple[str, bool]], out: _BatchOutcome) -> None:
        """After the batch's transaction: forget the failures of the paths ingested, let the
        vanished ones go after their grace, retry the failed ones later, keep the held ones."""
        now = time.monotonic()
        failed_paths = {rel for rel, _ in out.failed}
        for rel, _ in items:
            if rel not in failed_paths:
                self._forget_failure(rel)
        for rel in out.vanished:
            self._vanish(rel, now)
        for rel, error in out.failed:
            self._retry_later(rel, now, error)
            if rel in out.moves:
                self._failing[rel].moving = out.moves[rel]
        for rel, mover in out.held:
            failing = self._failing.get(mover)
            if failing is None:  # (gone since: nothing holds the delete back any more)
                self._vanish(rel, now)
                continue
            failing.held.add(rel)
            log.info(
                "keeping %s: its blueprint moved to %s, which cannot be indexed yet",
                rel,
                mover,
            )

    def _tell_once(self, rec: Reconciler, done: Sequence[str]) -> None:
        """Drop the ``invalid`` events of new files told already with these stats and reason
        (``_told``, updated here; ``done``: the batch's paths ingested).

        Told again at every rescan, which took each such file (no row) for changed, an app
        re-notified its user every 600 s of a file nobody had touched."""
        told = self._told
        for rel in done:
            if rel not in rec.refused:
                told.pop(rel, None)  # (indexed, gone, or left alone: nothing told stands)
        kept = []
        for ev in rec.events:
            refused = rec.refused.get(ev.path) if ev.kind == "invalid" and not ev.id else None
            if refused is not None:
                if told.get(ev.path) == refused:
                    continue
                told[ev.path] = refused
            kept.append(ev)
        rec.events[:] = kept

    def _held_for_move(self, cur: Any, rel: str, moves: dict[str, str]) -> str | None:
        """The moved path whose failed ingest keeps the delete of ``rel`` back (its blueprint's
        files moved there; ``moves`` are this batch's), None if nothing does.

        Such a blueprint stays at its old path, its meta (perhaps with hand edits) with it,
        until the move is indexed or its file is gone (``_forget_failure``; a rescan finds the
        old path again meanwhile). Deleted after its grace, as before, its old meta was removed
        and its id lost: the moved YAML, indexed later, got a new one without those edits.
        """
        rows = cur.execute(
            "SELECT id FROM blueprints WHERE path = ? AND deleted = 0", (rel,)
        ).fetchall()
        if not rows:
            return None
        bp_id = str(rows[0][0])
        for path, moving in moves.items():
            if moving == bp_id:
                return path
        for path, failing in self._failing.items():
            if failing.moving == bp_id and path != rel:
                return path
        return None

    def _retry_later(self, rel: str, now: float, exc: BaseException) -> None:
        """Schedule the next try of a path whose ingest failed, backing off; give up after
        ``MAX_FAILURES`` tries (a rescan or a new event tries again; see ``GIVE_UP_RESCAN_S``).

        The count lives in ``_failing``: ``_PathState`` is dropped when a path is taken for
        ingest, so keeping it there made every retry the first (0.1 s, forever).
        """
        self.stats.failures += 1
        failing = self._failing.setdefault(rel, _Failing())
        failing.tries += 1
        failing.error = _describe(exc)
        if isinstance(exc, NewerIndexError):
            # A newer localstore upgraded the index under this process: no write of this code
            # will be taken again, so no retry (five tries per edit, then a rescan every 30 s
            # to 5 min, each logged, for as long as the process ran). The edit stays in the
            # file, and the newer version's reconcile records it; the owner of the store stops
            # on it (the daemon's tick: Index.newer_version()). A later change or rescan still
            # tries, at most one line a minute.
            failing.tries = max(failing.tries, MAX_FAILURES)
            self._log_failure(
                "newer",
                "cannot index %s: %s; it stays in the file for the newer version to record",
                rel,
                failing.error,
                exc=exc,
            )
            return
        if failing.tries < MAX_FAILURES:
            first, most = RETRY_S
            delay = _doubling(first, most, failing.tries - 1)
            self._state_for(rel, now).due = now + delay
            self._log_failure(
                "retry",
                "cannot index %s yet (try %d): %s; retrying in %.2g s",
                rel,
                failing.tries,
                failing.error,
                delay,
                exc=exc,
            )
            return
        # Given up: off the pending list (the worker sleeps; wait_idle answers), still failing.
        # The file still differs from the index, so the rescan brought forward here finds it.
        first, most = GIVE_UP_RESCAN_S
        delay = min(self._interval(), _doubling(first, most, failing.tries - MAX_FAILURES))
        self._next_rescan = min(self._next_rescan, now + delay)
        self._log_failure(
            "give-up",
            "giving up on %s for now after %d tries (%s); a rescan in %.0f s tries again, "
            "and so does its next change",
            rel,
            failing.tries,
            failing.error,
            delay,
            exc=exc,
        )

    def _forget_failure(self, rel: str) -> bool:
        """``rel`` needs no retry any more (indexed, or nothing to index); True if it failed."""
        failing = self._failing.pop(rel, None)
        if failing is None:
            return False
        # The move is resolved (indexed: its old path has nothing left to delete; or its file
        # is gone): the deletes it held back are looked at again, after their grace.
        now = time.monotonic()
        for old in failing.held:
            self._vanish(old, now)
        if not self._failing:
            log.info("indexing works again: every blueprint that failed is indexed")
        return True

    def _update_ingest_problem(self) -> None:
        """The DEGRADED reason while some path cannot be indexed (built here, read anywhere)."""
        if not self._failing:
            self._ingest_problem = None
            return
        rel, failing = next(iter(self._failing.items()))
        more = f" and {len(self._failing) - 1} more blueprint(s)" if len(self._failing) > 1 else ""
        when = (
            "retrying"
            if any(k in self._pending for k in self._failing)
            else "tried again at the next rescan or change"
        )
        self._ingest_problem = f"cannot index {rel}{more}: {failing.error} ({when})"

    def _log_failure(self, kind: str, msg: str, *args: object, exc: BaseException) -> None:
        """Log one ingest failure, at most once per ``FAILURE_LOG_S`` per kind (else DEBUG)."""
        now = time.monotonic()
        if now < self._log_next.get(kind, 0.0):
            self._log_skipped[kind] = self._log_skipped.get(kind, 0) + 1
            log.debug(msg, *args)
            return
        skipped = self._log_skipped.pop(kind, 0)
        if skipped:
            msg += f" ({skipped} more like this in the last {FAILURE_LOG_S:.0f} s)"
        self._log_next[kind] = now + FAILURE_LOG_S
        unexpected = not isinstance(exc, OSError | LocalStoreError | apsw.Error)
        # An unexpected exception is a bug: its traceback is what a report needs.
        log.log(
            logging.ERROR if kind == "give-up" or unexpected else logging.WARNING,
            msg,
            *args,
            exc_info=exc if unexpected else None,
        )


def _doubling(first: float, most: float, doublings: int) -> float:
    """``first`` doubled ``doublings`` times, at most ``most``: every back-off of the watcher.

    The exponent is bounded (as sync's ``backoff_delay``): ``2 ** 1024`` does not fit a float, and
    the OverflowError it raised after ~1,025 failures in a row (about 17 hours of a full disk at
    the 60 s step back-off) ended the worker thread.
    """
    return min(most, first * 2.0 ** min(max(0, doublings), 64))


def _describe(exc: BaseException) -> str:
    """An ingest error as a status page shows it: "the disk is full", not "FullError: ..."."""
    if isinstance(exc, apsw.Error):
        return str(map_apsw_error(exc, "cannot write the index"))
    if isinstance(exc, LocalStoreError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"


def _not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is (or was raised from) a file-not-found error."""
    seen: BaseException | None = exc
    for _ in range(5):  # a mapped error keeps the OSError as its cause
        if seen is None:
            return False
        if isinstance(seen, FileNotFoundError):
            return True
        seen = seen.__cause__
    return False
