"""In-process change events.

Every change the store makes or notices (a save, an external edit, a remote change) is published after
its index commit: an event published while the publishing thread has an index transaction open (the
sync engine applies remote changes through ``store.save`` inside its own transaction) is held until
that outermost transaction commits, and dropped if it rolls back. Subscribers run synchronously on the
committing thread, after the index lock is released, so they may read the store (from any thread or
handle) and see the change; they must be quick. A subscriber that raises is logged and does not
affect the change or other subscribers; one interrupted (Ctrl-C while it ran) lets the others hear
of the change first, then the interrupt goes on. Once the store's ``close()`` returns, no subscriber is
called again (the rest of a batch under way included), as after each one's unsubscribe.

Order: each thread's events reach every subscriber in the order that thread made its changes (a
batch's in the batch's order), before the call that made the change returns (inside a
transaction of the caller's, when it commits), so one thread's changes to a blueprint come in
rev order. Events of different threads are not ordered
with each other: each thread delivers its own after releasing the index lock, so while one
thread is still delivering rev 2 of a blueprint (a slow subscriber) another can commit rev 3 and
deliver it first; with several threads of one app saving the same blueprint, or the app saving
one the sync engine's thread is applying a remote change to, a subscriber may hear a
blueprint's events out of rev order. An app that keeps state from events keeps each
blueprint's rev (a deleted one's too) and ignores an event whose rev is below the one it knows,
or equal to it (but for ``modified``: a move with new content is ``moved`` then ``modified``,
one rev); docs/daemon.md, "Changes made by other processes", has the whole rule. Reading the
blueprint (``store.resolve``, ``store.load``) gives the latest whatever the order.

Changes committed through another connection to the home's index (the CLI, another process's
``localstore.open()``, or another store object of this process) raise no event by themselves.
While sync runs in this process (``store.start_sync()``), it looks for them twice a second and
publishes each once, after its commit, as ordinary events with ``process="other"`` (kind
``created``/``modified``/``moved``/``deleted``, the revision's origin, rev and content hash; a
move with new content is ``moved`` then ``modified``, as this store's own). Revisions committed
between two looks come as one change, from the state last heard of to the latest. The
follower publishes a blueprint's changes in rev order on its own thread, once the events of this
store's own revisions they follow are being delivered, and another process's changes that came
before one of this store's own saves on the saving thread, ahead of that save's events. As above, that
orders what each thread delivers, not deliveries on different threads: a subscriber that holds
up the delivery of this store's own save can hear another process's later change of that
blueprint first. See docs/daemon.md, "Changes made by other processes" (which also says how an
app keeps a list from events). Without it, and for this store's own changes, ``process`` is
``"this"``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from localstore._callbacks import call_each
from localstore.blueprint import utc_now
from localstore.errors import InvalidInputError, StoreClosedError, wrong_type

log = logging.getLogger("localstore.events")

EVENT_KINDS = ("created", "modified", "deleted", "moved", "invalid", "conflict")
ORIGINS = ("local", "external", "remote", "merge", "import")
# Who committed the change: this store ("this"), or another connection to the home's index
# ("other": another process, or another store object), found by the in-process sync's follower.
PROCESSES = ("this", "other")


@dataclass(frozen=True, slots=True)
class Event:
    """One change: what happened, to which blueprint, from where.

    ``process`` is ``"other"`` for a change another process (or another store object) committed,
    found by the sync running in this process; ``"this"`` otherwise. ``to_dict()`` includes it
    only when ``"other"``, so the dicts of this store's own events are unchanged.

    An ``invalid`` event with ``id`` ``""`` (and ``rev`` 0) is about a file in the blueprints
    folder that is not a recorded blueprint (a new file that cannot be indexed): there is nothing
    to look up; ``path`` and ``detail`` say what is wrong and what to do. It carried the id of
    the file's meta (or one made up), never recorded, and a lookup was told "not found".
    """

    kind: str
    id: str
    path: str
    origin: str
    rev: int = 0
    old_path: str | None = None
    content_hash: str = ""
    detail: str = ""
    ts: str = field(default_factory=utc_now)
    process: str = "this"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        out: dict[str, Any] = {
            "event": self.kind,
            "id": self.id,
            "path": self.path,
            "origin": self.origin,
            "rev": self.rev,
            "content_hash": self.content_hash,
            "ts": self.ts,
        }
        if self.old_path is not None:
            out["old_path"] = self.old_path
        if self.detail:
            out["detail"] = self.detail
        if self.process != "this":
            out["process"] = self.process
        return out


Subscriber = Callable[[Event], None]


class EventBus:
    """Publish/subscribe for events; thread-safe.

    ``defer(deliver)`` decides when a publication is delivered (the store passes
    ``Index.after_commit``: at once, or after the publishing thread's open transaction commits).
    ``check_process()`` raises where the bus must not be used (the store passes
    ``Index.check_process``: a forked child gets the store's StoreClosedError).
    A publication is delivered on the publishing thread, event by event, each to every
    subscriber in turn: one thread's publications reach each subscriber in order, those of
    different threads in no order with each other (see the module).
    """

    def __init__(
        self,
        *,
        defer: Callable[[Callable[[], None]], None] | None = None,
        check_process: Callable[[], None] | None = None,
    ) -> None:
        # Raises in a child forked from the store's process (Index.check_process): there the
        # subscribers are the parent's and nothing would ever publish to a new one.
        self._check_process = check_process or (lambda: None)
        self._subs: dict[int, tuple[Subscriber, frozenset[str] | None]] = {}
        self._observers: dict[int, Callable[[Sequence[Event]], None]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._defer = defer
        self._closed = False

    def subscribe(
        self, callback: Subscriber, *, kinds: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Call ``callback(event)`` for every event (or only ``kinds``); returns an unsubscribe.

        Once the unsubscribe returns, the callback is not called again (a call under way on
        another thread may still finish); one subscribed while a batch is delivered hears the
        next. Raises InvalidInputError for a callback that is not callable or an unknown kind (a
        typo would otherwise subscribe to nothing, silently), StoreClosedError once the bus is
        closed (its store closed: the subscriber would never be called) or used in a child
        forked from the store's process.
        """
        if not callable(callback):
            raise wrong_type(
                "an event subscriber", callback, "callable", hint="pass a function taking one Event"
            )
        wanted = _kinds(kinds)
        self._check_process()  # (before the lock: a parent's thread may hold the child's copy)
        with self._lock:
            self._check_open()
            token = self._next
            self._next += 1
            self._subs[token] = (callback, wanted)

        def unsubscribe() -> None:
            with self._lock:
                self._subs.pop(token, None)

        return unsubscribe

    def observe(self, callback: Callable[[Sequence[Event]], None]) -> Callable[[], None]:
        """Call ``callback(events)`` with each delivered batch before any subscriber hears of it.

        For bookkeeping that must see a whole commit at once: subscribers hear a batch event by
        event, each of them for each, so a subscriber's reaction to an event's predecessors
        delays it (the in-process sync's follower claims this store's own rows so; claimed
        only as each event came, they were published again as another process's while a slow
        subscriber held up the rest). Returns an unsubscribe. Raises StoreClosedError once the
        bus is closed.
        """
        self._check_process()
        with self._lock:
            self._check_open()
            token = self._next
            self._next += 1
            self._observers[token] = callback

        def unobserve() -> None:
            with self._lock:
                self._observers.pop(token, None)

        return unobserve

    def close(self) -> None:
        """Forget every subscriber and observer (the store closes): none is called again.

        As after each one's unsubscribe: the rest of a batch under way reaches nobody (a call
        under way on another thread may still finish). An app closing its store in answer to an
        event tears down what its subscribers update.
        """
        with self._lock:
            self._closed = True
            self._subs.clear()
            self._observers.clear()

    def _check_open(self) -> None:
        # (Called under _lock: against close(), a subscriber is either forgotten by it or refused.)
        if self._closed:
            raise StoreClosedError(
                "the store is closed: no event will come", hint="open the store again"
            )

    def publish(self, events: Iterable[Event]) -> None:
        """Deliver events to every matching subscriber (when ``defer`` says: see the class)."""
        self._check_process()  # (a child would call the parent's subscribers)
        batch = list(events)  # (callers reuse their lists; a deferred delivery needs this one)
        if not batch:
            return
        if self._defer is None:
            self._deliver(batch)
        else:
            self._defer(lambda: self._deliver(batch))

    def _deliver(self, events: list[Event]) -> None:
        with self._lock:
            subs = list(self._subs.items())
            observers = list(self._observers.values())
        # One that raises is logged: a bug must not undo or block a committed change. One
        # interrupted (Ctrl-C while it ran) is raised once every other heard of the change:
        # raised at once, the rest never did (an app's view, the daemon's clients stale).
        calls = self._calls(events, subs, observers)
        interrupted = call_each(calls, logged=(log, "event subscriber or observer %r failed"))
        if interrupted is not None:
            raise interrupted

    def _calls(
        self,
        events: list[Event],
        subs: list[tuple[int, tuple[Subscriber, frozenset[str] | None]]],
        observers: list[Callable[[Sequence[Event]], None]],
    ) -> Iterator[Callable[[], None]]:
        """The calls that deliver ``events``: each observer's with the batch, then event by event
        each matching subscriber's (one made as its turn comes: see below)."""
        for observer in observers:
            yield functools.partial(observer, events)
        for event in events:
            for token, (callback, wanted) in subs:
                if wanted is not None and event.kind not in wanted:
                    continue
                # Unsubscribed since the batch began (by itself, or by another subscriber: a
                # view closed in answer to an event): it hears no more. (A dict lookup, atomic.)
                if token in self._subs:
                    yield functools.partial(callback, event)


def _kinds(kinds: Iterable[str] | None) -> frozenset[str] | None:
    """The event kinds asked for, checked (a bare string would be read letter by letter)."""
    if kinds is None:
        return None
    if isinstance(kinds, str | bytes):
        raise InvalidInputError(
            f"kinds must be a collection of event kinds, not the string {kinds!r}",
            hint=f"pass a list, e.g. kinds=[{kinds!r}]; kinds are {', '.join(EVENT_KINDS)}",
        )
    try:
        wanted = frozenset(kinds)
    except TypeError as exc:
        raise InvalidInputError(
            f"kinds must be a collection of event kinds, not {type(kinds).__name__}",
            hint=f"kinds are {', '.join(EVENT_KINDS)}",
        ) from exc
    unknown = sorted(str(k) for k in wanted if k not in EVENT_KINDS)
    if unknown:
        raise InvalidInputError(
            f"unknown event kind(s): {', '.join(unknown)}",
            hint=f"kinds are {', '.join(EVENT_KINDS)}",
        )
    return wanted
