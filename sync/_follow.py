"""What the daemon and an app's in-process sync (:mod:`sync.embed`) both follow besides the engine.

Extracted from the daemon so that both run the same code:

* :class:`ForeignChanges`: saves other processes (the CLI, an app's own ``localstore.open()``)
  commit to the home's index raise no event in this process's store, and the watcher rightly
  treats their file events as echoes. They are found as index rows with a newer ``op_id`` than
  seen, minus the ``(id, rev)`` this process's own store announced (docs/daemon.md, "Changes made
  by other processes"). :func:`foreign_events` makes the events of such a row, the same for the
  daemon's control clients and an app's store subscribers.
* :class:`WatcherKeeper`: replaces a watcher whose worker thread died, with a back-off
  (docs/daemon.md, "Watcher health").
* :func:`session_lost`: ``localstore logout`` / ``login`` made by another process under a
  running remote (docs/sync-engine.md, "Identity").
* :func:`close_remote`: closing a remote whose failure must not stop a shutdown.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from localstore.errors import LocalStoreError
from localstore.events import Event
from sync.errors import SyncError

if TYPE_CHECKING:
    from localstore.store import BlueprintStore
    from localstore.watcher import Watcher
    from sync.remote import Remote

__all__ = [
    "FOLLOW_WINDOW_S",
    "WATCHER_RESTART_MAX_S",
    "WATCHER_RESTART_S",
    "ForeignChanges",
    "ForeignRow",
    "WatcherKeeper",
    "close_remote",
    "foreign_events",
    "session_lost",
    "watcher_health",
]

log = logging.getLogger("sync.follow")

FOLLOW_WINDOW_S = 3.0

# (id, path, deleted, rev, op_id, content_hash) of one index row.
Row = tuple[Any, ...]

# A dead watcher is replaced at once; if the new one cannot start, or dies too, the next try
# waits this long, doubling up to WATCHER_RESTART_MAX_S (each try is a full rescan of the folder).
WATCHER_RESTART_S = 5.0
WATCHER_RESTART_MAX_S = 300.0
# How long a restart waits for the dead watcher's observer thread to end.
WATCHER_JOIN_S = 4.0


class ForeignRow(NamedTuple):
    """One index row another process committed, as :meth:`ForeignChanges.poll` returns it.

    Besides the row: ``known_rev``, the revision of the blueprint this process had published
    (its own event, or an earlier foreign one) when the row was claimed, and ``seen_op``, the
    ``op_id`` every earlier look had covered. Together they say which state of the blueprint
    this process last heard of (:func:`foreign_events` describes the change from there).
    """

    id: str
    path: str
    deleted: int
    rev: int
    op_id: int
    content_hash: str
    valid: int = 1
    problems: str = "[]"  # (JSON, as the index keeps them)
    known_rev: int | None = None
    seen_op: int | None = None


class ForeignChanges:
    """Finds the index rows other processes committed, each once.

    Call :meth:`claim` for every event of this process's store (its own changes), and
    :meth:`poll` once per tick. A row found by one poll is returned by the next one unless its
    ``(id, rev)`` was claimed meanwhile: the store announces its own changes just after their
    commit, so a row waits one tick for that event to win the race.

    A claim is kept until a look that started after it has had its rows checked: that look saw
    the claimed commit, so no later look can find it. (They were kept for the last 50,000
    blueprints instead: an app whose sync pulled more before its follower looked again had the
    rest announced as another process's changes.) Between two looks they are at most one per
    blueprint of the home.
    """

    def __init__(self, store: BlueprintStore) -> None:
        self.store = store
        # id -> (rev, the number of looks started when it was claimed).
        self._published: dict[str, tuple[int, int]] = {}
        self._published_lock = threading.Lock()
        self._looks = 0
        self._candidates: list[ForeignRow] = []
        self._candidates_look: int | None = None  # the look that found them
        self._raw_seen = 0
        self._follow_until = 0.0
        self._data_version: int | None = None
        # True while the last look raised: the next poll looks even when not ``active``.
        self._look_failed = False
        # The baseline of index_changed() before the highest op_id: a commit between the two
        # reads then moves data_version, and the first look finds it. Read the other way round,
        # it was in neither, and no look came until another process's next commit.
        self.index_changed()
        self._last_op = self._max_op_id()

    def _max_op_id(self) -> int:
        with self.store.index.read() as cur:
            rows = cur.execute("SELECT coalesce(max(op_id), 0) FROM blueprints").fetchall()
        return int(rows[0][0])

    def claim(self, blueprint_id: str, rev: int) -> bool:
        """Record that (id, rev) is known here; False if it already was."""
        return self._claim(blueprint_id, rev)[0]

    def _claim(self, blueprint_id: str, rev: int) -> tuple[bool, int | None]:
        """:meth:`claim`, and the rev known before (None: none since this object was made)."""
        with self._published_lock:
            entry = self._published.get(blueprint_id)
            known = entry[0] if entry is not None else None
            if known is not None and known >= rev:
                return False, known
            self._published[blueprint_id] = (rev, self._looks)
            return True, known

    def _forget_claims_before(self, look: int) -> None:
        """Drop the claims made before ``look`` started: it saw their commits, its rows are
        checked, and the later looks find only rows committed after it (a row's state up to
        there is known by op_id: :func:`foreign_events`)."""
        with self._published_lock:
            old = [k for k, (_, seen) in self._published.items() if seen < look]
            for k in old:
                del self._published[k]

    def poll(self, active: bool) -> list[ForeignRow]:
        """The foreign rows the last look found; then, if ``active``, look again.

        ``active`` says whether another process may have committed since the last tick
        (:meth:`files_were_active`, :meth:`index_changed`): while it is False this costs nothing.
        Raises the index's LocalStoreError.
        """
        found: list[ForeignRow] = []
        look, looked = 0, False
        if active or self._look_failed:
            # Looked before anything is claimed: a look that fails (the index locked or
            # damaged) then leaves this tick's candidates for the next one, where claiming
            # them first lost them with the exception. And the next tick looks again whatever
            # ``active`` says: the trigger (a data_version that moved) was used up by this one.
            self._look_failed = True
            with self._published_lock:
                self._looks += 1  # (before the read: a claim from now on belongs to this look)
                look = self._looks
            with self.store.index.read() as cur:
                rows = cur.execute(
                    "SELECT id, path, deleted, rev, op_id, content_hash, valid, problems "
                    "FROM blueprints WHERE op_id > ? ORDER BY op_id",
                    (self._last_op,),
                ).fetchall()
            self._look_failed = False
            looked = True
            # What the looks before this one covered: the state this process knew of a row's
            # blueprint is its last revision up to there (or one it published since).
            found = [
                ForeignRow(
                    str(r[0]),
                    str(r[1]),
                    int(r[2]),
                    int(r[3]),
                    int(r[4]),
                    str(r[5] or ""),
                    int(r[6]),
                    str(r[7] or "[]"),
                    seen_op=self._last_op,
                )
                for r in rows
            ]
        foreign = []
        for c in self._candidates:
            new, known = self._claim(c.id, c.rev)
            if new:
                foreign.append(c._replace(known_rev=known))
        if self._candidates_look is not None:
            self._forget_claims_before(self._candidates_look)
        self._candidates = found
        self._candidates_look = look if looked else None
        if found:
            self._last_op = max(c.op_id for c in found)
        return foreign

    def files_were_active(self, watcher: Watcher) -> bool:
        """Whether file events arrived within the last ``FOLLOW_WINDOW_S`` (then look at the index).

        The other process holds the index write lock from before it touches the files until its
        commit, so its rows become visible shortly after the file events; looking for a short
        window after the last event covers that without querying while nothing happens.
        """
        now = time.monotonic()
        if watcher.stats.raw_events != self._raw_seen:
            self._raw_seen = watcher.stats.raw_events
            self._follow_until = now + FOLLOW_WINDOW_S
        return now <= self._follow_until

    def index_changed(self) -> bool:
        """Whether another connection committed to the index since the last call.

        ``PRAGMA data_version`` of the store's connection (no file I/O in WAL mode): for an app
        that runs no watcher of its own, where file activity cannot tell. It also moves for the
        index maintainer's commits, which costs one needless indexed query, never a missed row.
        """
        with self.store.index.read() as cur:
            version = int(cur.execute("PRAGMA data_version").fetchall()[0][0])
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed


def foreign_events(store: BlueprintStore, row: Row | ForeignRow) -> list[Event]:
    """The events of an index row another process committed (one :meth:`ForeignChanges.poll` row).

    They describe the change from the state of the blueprint this process last heard of (see
    :class:`ForeignRow`; for a bare row, the revision before it) to the row, as this store
    would have published it: ``deleted``; ``created`` when that state is none or a delete;
    ``moved`` (with ``old_path``) when it had another path, followed by ``modified`` when it had
    other content too; ``modified`` otherwise. So revisions committed between two looks come as
    one change (coalesced: the rev, path and content hash of the row as found), and an app that
    relabels on ``moved`` and re-reads on ``modified`` is never left with a stale view. A row
    the writing store's validator refused is followed by ``invalid`` (its problems in
    ``detail``), as that store announced it. The origin and time are the row's revision's; ``process`` is ``"other"``. When the history
    cannot be read, one event is made from the row alone (``created`` or ``modified`` by its
    rev, no ``old_path``).
    """
    blueprint_id, path, deleted, rev = str(row[0]), str(row[1]), bool(row[2]), int(row[3])
    content_hash = str(row[5] or "")
    known: int | None = None
    seen_op = int(row[4]) - 1  # a bare row: the revision committed before it
    if isinstance(row, ForeignRow):
        known = row.known_rev
        seen_op = row.seen_op if row.seen_op is not None else seen_op
    top: tuple[Any, ...] | None = None
    base: tuple[Any, ...] | None = None
    lowest = rev
    try:
        with store.index.read() as cur:
            # Newest first, from the row's rev (a later commit, not yet polled, gets its own
            # event next time) down to the first revision this process knew: between two looks
            # only a few, whatever the length of the history.
            for r in cur.execute(
                "SELECT rev, op_id, path, deleted, content_hash, origin, ts FROM revisions "
                "WHERE id = ? AND rev <= ? ORDER BY rev DESC",
                (blueprint_id, rev),
            ):
                if top is None:
                    top = tuple(r)
                    continue
                lowest = int(r[0])
                if int(r[1]) <= seen_op or (known is not None and lowest <= known):
                    base = tuple(r)
                    break
    except LocalStoreError as exc:
        # The row is claimed already (poll): an event from the row alone, not none at all.
        log.warning("reading the history of %s for its event: %s", path, exc)
        top = None
    extra: dict[str, Any] = {"ts": str(top[6])} if top is not None else {}
    origin = str(top[5]) if top is not None else "local"

    def event(kind: str, old_path: str | None = None) -> Event:
        return Event(
            kind, blueprint_id, path, origin, rev, old_path, content_hash, process="other", **extra
        )

    if deleted:
        return [event("deleted")]
    events = []
    if top is None or (base is None and lowest > 1):
        # No history to tell (unreadable, or older than the index: a rebuilt one has none).
        events.append(event("created" if rev <= 1 else "modified"))
    elif base is None or bool(base[3]):
        events.append(event("created"))  # new since the last look, or restored after a delete
    else:
        if str(base[2]) != path:
            events.append(event("moved", str(base[2])))
        if str(base[2]) == path or str(base[4]) != content_hash:
            events.append(event("modified"))
    if isinstance(row, ForeignRow) and not row.valid:
        # As the writing store announced it: its validator's problems, after the change.
        events.append(
            Event(
                "invalid",
                blueprint_id,
                path,
                origin,
                rev,
                content_hash=content_hash,
                detail="; ".join(_problems(row.problems)),
                process="other",
                **extra,
            )
        )
    return events


def _problems(text: str) -> list[str]:
    """The problems of an index row (a JSON list of strings); unreadable, one saying so."""
    try:
        problems = json.loads(text)
    except ValueError:
        return ["the index holds problems it cannot read"]
    return [str(p) for p in problems] if isinstance(problems, list) else [str(problems)]


class WatcherKeeper:
    """Replaces a watcher whose worker thread died: otherwise every later edit would go unseen.

    Call :meth:`check` with the current watcher every tick (the daemon's, and an app's in-process
    sync for the watcher it started). A FAILED watcher is stopped (its observer would queue
    events nobody reads, and holds inotify watches the new one may need) and a new one started,
    which rescans the folder first, so nothing edited while the old one was dead is missed. When
    the new one cannot start (the folder is gone, say) the dead one stays the current watcher,
    reported ``failed`` by :func:`watcher_health` with the reason, and the next try waits
    ``WATCHER_RESTART_S``, doubling up to ``WATCHER_RESTART_MAX_S`` while tries fail or the
    replacements die again; a watcher that stays up for the whole current delay brings it back
    to an immediate restart. Each death is logged once (ERROR), the failed tries once per outage
    (ERROR, then DEBUG), the recovery at INFO. ``restarts`` counts the replacements.
    """

    def __init__(self, store: BlueprintStore) -> None:
        self.store = store
        self.restarts = 0
        self._delay = 0.0
        self._next_try = 0.0
        # The dead watcher not replaced yet (stopped, so its own state says "stopped"), and why
        # the last try to replace it failed.
        self._dead: Watcher | None = None
        self._error: str | None = None

    def check(self, watcher: Watcher | None) -> Watcher | None:
        """The running watcher that replaces ``watcher`` if it died and a try is due, else None."""
        from localstore.watcher import Watcher, WatcherState

        if watcher is None:
            return None
        now = time.monotonic()
        if watcher is not self._dead:
            if watcher.state is not WatcherState.FAILED:
                if self._delay and now >= self._next_try:
                    self._delay = 0.0
                return None
            self._dead, self._error = watcher, None
            log.error("the watcher stopped working (%s); restarting it", watcher.failure)
            watcher.stop()
            watcher.join(WATCHER_JOIN_S)
        if now < self._next_try:
            return None
        # The module's delays are read at each try (a test may shorten them).
        self._delay = min(self._delay * 2 or WATCHER_RESTART_S, WATCHER_RESTART_MAX_S)
        self._next_try = now + self._delay
        new = Watcher(self.store)
        try:
            new.start()
        except LocalStoreError as exc:
            new.stop()
            level = logging.ERROR if self._error is None else logging.DEBUG
            self._error = exc.message
            log.log(
                level, "cannot restart the watcher: %s; trying again in %.1f s", exc, self._delay
            )
            return None
        if self._error is not None:
            log.info("the watcher was restarted; it watches the folder again")
        self._dead, self._error = None, None
        self.restarts += 1
        return new

    def failed(self, watcher: Watcher) -> str | None:
        """Why ``watcher`` is the dead one not replaced yet, or None (it is not)."""
        dead, error = self._dead, self._error
        if watcher is not dead:
            return None
        problem = watcher.problem or "the watcher stopped working"
        return problem if error is None else f"{problem}; cannot restart it: {error}"


def watcher_health(
    watcher: Watcher | None, keeper: WatcherKeeper | None = None
) -> tuple[str, str | None]:
    """``(state, problem)`` of ``watcher`` for status pages (``stopped`` without one).

    A dead watcher its ``keeper`` has not replaced yet was stopped (its own state says so) but
    is reported ``failed``, with why it could not be restarted yet.
    """
    if watcher is None:
        return "stopped", None
    failed = keeper.failed(watcher) if keeper is not None else None
    if failed is not None:
        return "failed", failed
    return watcher.state.value, watcher.problem


def session_lost(remote: Remote | None) -> SyncError | None:
    """The error of ``remote`` if the home's session changed under it (logout, another login).

    Call it when the session marker (:class:`sync.session_marker.SessionMarker`) changed: the
    remote then reads the keychain. None when the same user logged in again (the remote carries
    on), or when the remote cannot tell (it has no ``check_session``).
    """
    check = getattr(remote, "check_session", None)
    if not callable(check):
        return None
    try:
        check()
    except SyncError as exc:
        return exc
    return None


def close_remote(remote: Remote | None) -> None:
    """Close ``remote`` if it can be closed; a failure is logged (a shutdown must go on)."""
    close = getattr(remote, "close", None)
    if callable(close):
        try:
            close()
        except SyncError as exc:
            log.warning("closing the cloud session failed: %s", exc)
