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
* :func:`realtime_health`: the remote's realtime channel for status pages (docs/daemon.md,
  "Realtime health").
* :func:`session_lost`: ``localstore logout`` / ``login`` made by another process under a
  running remote (docs/sync-engine.md, "Identity").
* :func:`close_remote`: closing a remote whose failure must not stop a shutdown.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from localstore._kept_edits import kept_by_writes
from localstore.errors import LocalStoreError
from localstore.events import Event
from sync.errors import SyncError

if TYPE_CHECKING:
    from localstore.store import BlueprintStore
    from localstore.watcher import Watcher
    from sync.remote import Remote

__all__ = [
    "LOOK_ROWS",
    "WATCHER_RESTART_MAX_S",
    "WATCHER_RESTART_S",
    "ForeignChanges",
    "ForeignRow",
    "WatcherKeeper",
    "close_remote",
    "foreign_events",
    "realtime_health",
    "session_lost",
    "watcher_health",
]

log = logging.getLogger("sync.follow")

# At most this many index rows a look: it holds the store's lock while it reads their history,
# so another process's import of 100,000 blueprints must not hold every thread of the app for
# seconds. The rows after them are read by the next tick's look.
LOOK_ROWS = 1000

# (id, path, deleted, rev, op_id, content_hash) of one index row.
Row = tuple[Any, ...]

# A dead watcher is replaced at once; if the new one cannot start, or dies too, the next try
# waits this long, doubling up to WATCHER_RESTART_MAX_S (each try is a full rescan of the folder).
WATCHER_RESTART_S = 5.0
WATCHER_RESTART_MAX_S = 300.0
# How long a restart waits for the dead watcher's observer thread to end.
WATCHER_JOIN_S = 4.0


class ForeignRow(NamedTuple):
    """One change another process committed, as :meth:`ForeignChanges.poll` returns it.

    The state of the blueprint at the end of the change (its revision ``rev``: the index row's
    when that is the latest, with its validity), ``known_rev``, the revision this process last
    heard of (the one before the change: its own event, an earlier foreign change, or the state
    before the follower's previous look), and ``seen_op``, the ``op_id`` every earlier look had
    covered. :func:`foreign_events` describes the change from ``known_rev`` to ``rev``.
    ``after_own`` is this process's own revision the change follows, when it does: the change
    is published once that revision's event was heard (claimed), so an app hears them in order.
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
    after_own: int | None = None


class _Pending(NamedTuple):
    row: ForeignRow
    found: int  # the number of polls begun when a look found it


class ForeignChanges:
    """Finds the changes other processes committed to the home's index, each once, in order.

    Every look reads the index rows with an ``op_id`` above the last look's, and each such row's
    revisions since then, in one read transaction, together with the op_ids this store's own
    connection committed meanwhile (:meth:`Index.own_ops`, noted under the index lock at each
    COMMIT). So whose each revision is is known exactly, whenever its events come: a run of
    other processes' revisions between two of this process's own (or before the first, after
    the last) is one change, from the revision before it. Before session 9 the rows alone were
    read and this process's own were told apart by the ``(id, rev)`` of its events, which came
    after the commit: a foreign revision behind an own one of the same blueprint was never
    heard (a move hidden by the app's save right after it), and an own revision whose event
    came late was published as another process's.

    Call :meth:`poll` once per tick: it returns what earlier looks found (a change waits one
    tick, and one more while the own revision it follows is not claimed yet), then looks again.
    Call :meth:`claim` for every event of this process's store, and :meth:`before_own` with a
    commit's own events before any subscriber hears them: it returns the changes of other
    processes to publish first, those that came before the own revisions in the events (an
    app then never hears of its own save of a blueprint another process moved before it had
    heard of the move).

    A claim is kept until a look that started after it has had its rows checked, or while a
    change found waits for it (otherwise it is needed only by a change found later, which
    waits one tick more without it). A blueprint's later changes wait for its earlier ones.
    While claims are kept, each poll looks whatever ``active`` says (two looks after a run of
    this store's own saves): with no other connection committing (an app syncing in-process
    with ``maintenance=False``, whose maintainer's commits had moved ``data_version``), no look
    came, every id the app saved stayed claimed for the life of the store, and the looks that
    another process's next commit started read this store's own rows LOOK_ROWS a tick before
    they reached its change.
    """

    def __init__(self, store: BlueprintStore) -> None:
        self.store = store
        # id -> (rev, the number of looks started when it was claimed).
        self._published: dict[str, tuple[int, int]] = {}
        self._published_lock = threading.Lock()
        # Guards everything below; always taken after the index's lock (see _locked).
        self._state = threading.RLock()
        self._looks = 0
        self._last_look = 0  # the last look that succeeded
        self._polls = 0
        self._candidates: list[_Pending] = []
        self._data_version: int | None = None
        # The data_version at the last look: before_own looks again only when it moved.
        self._look_version: int | None = None
        # True while the last look raised: the next poll looks even when not ``active``.
        self._look_again = False
        # This connection's own op_ids not yet below _last_op (ranges; Index.own_ops).
        self._own: list[tuple[int, int]] = []
        # The baseline of index_changed() before the highest op_id: a commit between the two
        # reads then moves data_version, and the first look finds it. Read the other way round,
        # it was in neither, and no look came until another process's next commit.
        self.index_changed()
        with self.store.index.read() as cur:
            self._look_version = _data_version(cur)
            store.index.own_ops()  # (starts the noting; nothing before the baseline matters)
        self._last_op = self._max_op_id()
        # The op_id up to which every revision was looked at: _last_op, but while a burst
        # takes several looks (LOOK_ROWS), where it began; the rows read by its looks so far
        # (id -> rev).
        self._covered = self._last_op
        self._burst_seen: dict[str, int] = {}

    def _max_op_id(self) -> int:
        with self.store.index.read() as cur:
            rows = cur.execute("SELECT coalesce(max(op_id), 0) FROM blueprints").fetchall()
        return int(rows[0][0])

    def claim(self, blueprint_id: str, rev: int) -> bool:
        """Record that (id, rev) was heard here; False if it (or a later rev) already was."""
        with self._published_lock:
            entry = self._published.get(blueprint_id)
            if entry is not None and entry[0] >= rev:
                return False
            self._published[blueprint_id] = (rev, self._looks)
            return True

    def _claimed(self, blueprint_id: str) -> int:
        with self._published_lock:
            entry = self._published.get(blueprint_id)
        return entry[0] if entry is not None else 0

    def _forget_claims_before(self, look: int) -> None:
        """Drop the claims made before ``look`` started (see the class), but those a change
        found waits for."""
        waiting = {c.row.id for c in self._candidates if c.row.after_own is not None}
        with self._published_lock:
            old = [
                k for k, (_, seen) in self._published.items() if seen < look and k not in waiting
            ]
            for k in old:
                del self._published[k]

    def poll(self, active: bool) -> list[ForeignRow]:
        """The changes earlier looks found; then, if ``active``, look again.

        ``active`` says whether another process may have committed since the last tick
        (:meth:`index_changed`): while it is False and nothing
        waits, this costs nothing. Raises the index's LocalStoreError (what was found stays
        for the next poll, and the next poll looks whatever ``active`` says).
        """
        if active:
            self._look_again = True  # (until a look succeeds: the trigger is used up now)
        with self._published_lock:
            # Own changes since the looks before the last (see the class): looked past now,
            # so their claims go and the next look starts above their rows.
            claimed = bool(self._published)
        with self.store.index.read() as cur, self._state:
            self._polls += 1
            out: list[ForeignRow] = []
            keep: list[_Pending] = []
            held: set[str] = set()
            for p in sorted(self._candidates, key=lambda p: p.row.op_id):
                row = p.row
                waited = self._polls - p.found
                # An own revision's event comes just after its commit; one more tick at most.
                heard = row.after_own is None or self._claimed(row.id) >= row.after_own
                if row.id not in held and (waited >= 2 or (waited >= 1 and heard)):
                    out.append(row)
                else:
                    held.add(row.id)  # (a blueprint's later changes wait for this one)
                    keep.append(p)
            self._candidates = keep
            if self._look_again or claimed:
                try:
                    self._look(cur)
                except BaseException:
                    # A look that fails (the index locked or damaged) loses nothing: what was
                    # due waits for the next poll, which looks again.
                    self._candidates = [_Pending(row, self._polls - 2) for row in out] + keep
                    raise
        return _in_order(out)

    def before_own(self, events: Sequence[Event]) -> list[ForeignRow]:
        """The changes of other processes to publish before this store's own ``events``.

        Call it with a commit's events before any subscriber hears them (``EventBus.observe``),
        then :meth:`claim` them. For each blueprint of the events, the changes another process
        committed before the revision in the event (found by an earlier look, or by a look made
        now when another connection committed since the last one). Raises nothing: a look that
        fails is logged and left to the next poll.
        """
        own: dict[str, int] = {}
        for e in events:
            if e.process == "this":
                own[e.id] = min(e.rev, own.get(e.id, e.rev))
        if not own:
            return []
        index = self.store.index
        out: list[ForeignRow] = []
        try:
            with index.read() as cur, self._state:
                if index.write_open:
                    return []  # (never: events are delivered after the commit)
                if self._look_again or _data_version(cur) != self._look_version:
                    self._look(cur)
                if self._look_again:
                    # A burst the looks have not read to its end: these blueprints' rows may
                    # be among the rest, and their changes before these events with them.
                    self._catch_up(cur, sorted(own))
                keep = []
                for p in self._candidates:
                    rev = own.get(p.row.id)
                    if rev is not None and p.row.rev < rev:
                        out.append(p.row)
                    else:
                        keep.append(p)
                self._candidates = keep
        except LocalStoreError as exc:
            log.warning("looking for changes of other processes: %s", exc)
        return _in_order(out)

    def _look(self, cur: Any) -> None:
        """Find the changes other connections committed since the last look (see the class).

        Under the index lock (no commit of this connection lands during it) and the state lock.
        """
        self._look_again = True
        with self._published_lock:
            self._looks += 1  # (before the read: a claim from now on belongs to this look)
        version = _data_version(cur)
        conn = cur.connection
        own_snapshot = conn.getautocommit()
        if own_snapshot:
            cur.execute("BEGIN")
        try:
            rows = cur.execute(
                "SELECT id, path, deleted, rev, op_id, content_hash, valid, problems "
                "FROM blueprints WHERE op_id > ? ORDER BY op_id LIMIT ?",
                (self._last_op, LOOK_ROWS),
            ).fetchall()
            found = self._read_changes(conn, rows)
        finally:
            if own_snapshot and not conn.getautocommit():
                cur.execute("COMMIT")  # (a read: nothing to write, cannot lose anything)
        # More than one look's rows (another process's import): the next poll goes on, and
        # the rows after these are read by it (their op_ids are above these).
        self._look_again = len(rows) >= LOOK_ROWS
        self._look_version = version
        self._candidates.extend(_Pending(row, self._polls) for row in found)
        # A claim made before the look before this one started is of a revision both saw: a
        # change after it found from now on is found with it as covered, not as "after own".
        self._forget_claims_before(self._last_look)
        self._last_look = self._looks
        if rows:
            self._last_op = max(int(r[4]) for r in rows)
        if self._look_again:
            # Rows are read in op_id order, a row by its latest: a revision of a row the next
            # look reads may be older than these rows' (so the history is read down to where
            # the burst began), and a row read again must not give its revisions twice.
            for r in rows:
                self._burst_seen[str(r[0])] = int(r[3])
        else:
            self._covered = self._last_op
            self._burst_seen.clear()
        self._own = [(a, b) for a, b in self._own if b > self._covered]

    def _read_changes(self, conn: Any, rows: list[Any]) -> list[ForeignRow]:
        """The foreign changes of ``rows`` (in a read transaction, under both locks)."""
        self._own.extend(self.store.index.own_ops())
        history = conn.cursor()
        found: list[ForeignRow] = []
        for r in rows:
            revisions: list[tuple[int, int, str, int, str]] = []
            done = self._burst_seen.get(str(r[0]), 0)
            # Newest first, down to what the earlier looks covered: a few, whatever the
            # length of the history.
            for h in history.execute(
                "SELECT rev, op_id, path, deleted, content_hash FROM revisions "
                "WHERE id = ? ORDER BY rev DESC",
                (r[0],),
            ):
                if int(h[1]) <= self._covered or int(h[0]) <= done:
                    break
                revisions.append((int(h[0]), int(h[1]), str(h[2]), int(h[3]), str(h[4] or "")))
            if revisions or not done:
                found.extend(self._changes(r, revisions[::-1]))
        return found

    def _catch_up(self, cur: Any, ids: list[str]) -> None:
        """Read the changes of these blueprints now, while a burst is read look by look.

        Their rows are then noted as read (``_burst_seen``): the look that reaches them gives
        only what was committed after this.
        """
        conn = cur.connection
        own_snapshot = conn.getautocommit()
        if own_snapshot:
            cur.execute("BEGIN")
        try:
            rows = []
            for blueprint_id in ids:
                rows.extend(
                    cur.execute(
                        "SELECT id, path, deleted, rev, op_id, content_hash, valid, problems "
                        "FROM blueprints WHERE id = ? AND op_id > ?",
                        (blueprint_id, self._last_op),
                    ).fetchall()
                )
            found = self._read_changes(conn, rows)
        finally:
            if own_snapshot and not conn.getautocommit():
                cur.execute("COMMIT")
        self._candidates.extend(_Pending(row, self._polls) for row in found)
        for r in rows:
            self._burst_seen[str(r[0])] = int(r[3])

    def _is_own(self, op_id: int) -> bool:
        return any(a <= op_id <= b for a, b in self._own)

    def _changes(
        self, row: tuple[Any, ...], revisions: list[tuple[int, int, str, int, str]]
    ) -> list[ForeignRow]:
        """The foreign changes of one row: each run of other connections' revisions."""
        blueprint_id, rev = str(row[0]), int(row[3])
        if not revisions:
            if self._is_own(int(row[4])):
                return []
            # No revision for it (the op_id moved without one, or an index rebuilt without
            # history): the row alone, as before.
            return [_row(row, known=None, seen_op=self._covered, after_own=None)]
        out: list[ForeignRow] = []
        start: int | None = None  # the first revision of the run being read
        for i, (r_rev, r_op, path, deleted, chash) in enumerate(revisions):
            if self._is_own(r_op):
                continue
            if start is None:
                start = i
            if i + 1 < len(revisions) and not self._is_own(revisions[i + 1][1]):
                continue  # the run goes on
            first = revisions[start][0]
            before = revisions[start - 1] if start > 0 else None
            latest = r_rev == rev
            out.append(
                ForeignRow(
                    blueprint_id,
                    path,
                    deleted,
                    r_rev,
                    r_op,
                    chash,
                    int(row[6]) if latest else 1,
                    str(row[7] or "[]") if latest else "[]",
                    known_rev=first - 1,
                    seen_op=self._covered,
                    after_own=before[0] if before is not None else None,
                )
            )
            start = None
        return out

    def index_changed(self) -> bool:
        """Whether another connection committed to the index since the last call.

        ``PRAGMA data_version`` of the store's connection (no file I/O in WAL mode): the
        trigger of both the daemon and an app's in-process sync. Not the watcher's file events
        (the daemon's trigger before session 16): a rescan-only watcher reports none, and a
        commit can come long after the writer's last file event. It also moves for the index
        maintainer's commits, which costs one needless indexed query, never a missed row.
        """
        with self.store.index.read() as cur:
            version = _data_version(cur)
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed


def _data_version(cur: Any) -> int:
    return int(cur.execute("PRAGMA data_version").fetchall()[0][0])


def _row(
    r: tuple[Any, ...], *, known: int | None, seen_op: int, after_own: int | None
) -> ForeignRow:
    return ForeignRow(
        str(r[0]),
        str(r[1]),
        int(r[2]),
        int(r[3]),
        int(r[4]),
        str(r[5] or ""),
        int(r[6]),
        str(r[7] or "[]"),
        known_rev=known,
        seen_op=seen_op,
        after_own=after_own,
    )


def _in_order(rows: list[ForeignRow]) -> list[ForeignRow]:
    """In the order they were committed (each blueprint's changes in rev order)."""
    return sorted(rows, key=lambda r: r.op_id)


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
    ``detail``), as that store announced it; a write that kept an unparsable edit in
    <data>/recovered/ says where in ``detail``, as that store's event did. The origin and time
    are the row's revision's; ``process`` is ``"other"``. When the history
    cannot be read, one event is made from the row alone (``created`` or ``modified`` by its
    rev, no ``old_path``).
    """
    blueprint_id, path, deleted, rev = str(row[0]), str(row[1]), bool(row[2]), int(row[3])
    content_hash = str(row[5] or "")
    history = _read_history(store, row)
    top = history.top
    extra: dict[str, Any] = {"ts": str(top[6])} if top is not None else {}
    origin = str(top[5]) if top is not None else "local"

    def event(kind: str, old_path: str | None = None, detail: str = history.kept) -> Event:
        return Event(
            kind,
            blueprint_id,
            path,
            origin,
            rev,
            old_path,
            content_hash,
            detail=detail,
            process="other",
            **extra,
        )

    if deleted:
        return [event("deleted")]
    events = [event(kind, old) for kind, old in _change_kinds(history, rev, path, content_hash)]
    if isinstance(row, ForeignRow) and not row.valid:
        # As the writing store announced it: its validator's problems, after the change.
        events.append(event("invalid", detail="; ".join(_problems(row.problems))))
    return events


class _History(NamedTuple):
    """What :func:`foreign_events` read of a row's revisions."""

    top: tuple[Any, ...] | None  # the row's own revision (None: the history was unreadable)
    base: tuple[Any, ...] | None  # the revision this process last heard of, if read
    lowest: int  # the lowest rev read
    kept: str  # where a write of the change kept an unparsable edit ('' none)


def _read_history(store: BlueprintStore, row: Row | ForeignRow) -> _History:
    """The revisions of ``row``'s change, from the row's down to the one last heard of."""
    blueprint_id, path, rev = str(row[0]), str(row[1]), int(row[3])
    known, seen_op = _last_heard(row)
    top: tuple[Any, ...] | None = None
    base: tuple[Any, ...] | None = None
    lowest = rev
    kept = ""
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
            if top is not None:
                # An unparsable edit a write of this change moved to <data>/recovered/: its
                # writer's own event said where, and an app hearing of it here must learn it too.
                since = lowest if base is not None else lowest - 1
                kept = kept_by_writes(cur, blueprint_id, since=since, upto=rev)
    except LocalStoreError as exc:
        # The row is claimed already (poll): an event from the row alone, not none at all.
        log.warning("reading the history of %s for its event: %s", path, exc)
        top = None
    return _History(top, base, lowest, kept)


def _last_heard(row: Row | ForeignRow) -> tuple[int | None, int]:
    """The rev this process last heard of for ``row`` (None: not known) and the op_id it saw."""
    known: int | None = None
    seen_op = int(row[4]) - 1  # a bare row: the revision committed before it
    if isinstance(row, ForeignRow):
        known = row.known_rev
        seen_op = row.seen_op if row.seen_op is not None else seen_op
    return known, seen_op


def _change_kinds(
    history: _History, rev: int, path: str, content_hash: str
) -> list[tuple[str, str | None]]:
    """The (kind, old_path) of the events of a change not a delete, from its history."""
    top, base, lowest = history.top, history.base, history.lowest
    if top is None or (base is None and lowest > 1):
        # No history to tell (unreadable, or older than the index: a rebuilt one has none).
        return [("created" if rev <= 1 else "modified", None)]
    if base is None or bool(base[3]):
        return [("created", None)]  # new since the last look, or restored after a delete
    kinds: list[tuple[str, str | None]] = []
    if str(base[2]) != path:
        kinds.append(("moved", str(base[2])))
    if str(base[2]) == path or str(base[4]) != content_hash:
        kinds.append(("modified", None))
    return kinds


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


def realtime_health(remote: Remote | None) -> dict[str, Any] | None:
    """The realtime channel of ``remote`` for status pages; None when it has none (sync off, a
    remote without realtime, or one that never subscribed).

    ``state`` is ``subscribed``, ``connecting`` (the first join not answered yet) or ``down``
    (``problem`` says why: the last error; ``retry_in_s`` is the length of the wait before the
    next try, 0 while a try runs). Sync polls meanwhile, so a channel that is down is no error; before, it
    showed only as a WARNING in the log.
    """
    raw = getattr(remote, "realtime_state", None)
    if not isinstance(raw, dict) or not raw:
        return None
    subscribed = bool(raw.get("subscribed"))
    failures = int(raw.get("failures") or 0)
    error = str(raw.get("last_error") or "") or None
    if subscribed:
        state = "subscribed"
    elif failures or raw.get("rebuilds") or error:
        state = "down"
    else:
        state = "connecting"
    return {
        "state": state,
        "problem": None if subscribed else error,
        "retry_in_s": round(float(raw.get("retry_in_s") or 0.0), 3),
        "failures": failures,
        "stats": {k: int(raw.get(k) or 0) for k in ("subscribes", "rebuilds", "events")},
    }


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
