"""An interrupt that comes once the index committed a write leaves that write standing.

Ctrl-C (or SystemExit from a signal handler, or a commit listener's or after-commit callback's
BaseException) arriving after the outermost COMMIT used to make the store undo the files of the
committed write: the index held the new version, the disk the old one, and the next open
recorded the blueprint as deleted (or edited back), which sync then pushed. One arriving before
the COMMIT must still undo everything.

Real home, files and SQLite; the interrupt is the only thing injected: raised by a commit
listener, by an after-commit callback queued inside the write, right after the COMMIT statement
(the index's test hook), or by the COMMIT statement itself (before it runs).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import localstore
from localstore import _callbacks
from localstore import files as fs
from localstore.errors import IndexStoreError, NotFoundError
from localstore.store import SaveRequest
from tests.interrupts import AFTER_COMMIT, Interrupt, snapshot

Store = Any


@dataclass
class Op:
    """An operation, what it needs first, and whether its change is in the index."""

    setup: Callable[[Store], None]
    act: Callable[[Store], object]
    landed: Callable[[Store], bool]
    event: str


def _content(store: Store, ref: str) -> str | None:
    try:
        return str(store.load(ref).content)
    except NotFoundError:
        return None


def _save_v1(store: Store) -> None:
    store.save("a/x", "v: 1\n")


def _save_v1_v2(store: Store) -> None:
    store.save("a/x", "v: 1\n")
    store.save("a/x", "v: 2\n")


def _nothing(store: Store) -> None:
    pass


OPS = {
    "save-new": Op(
        _nothing,
        lambda s: s.save("a/x", "v: 1\n"),
        lambda s: _content(s, "a/x") == "v: 1\n",
        "created",
    ),
    "save-over": Op(
        _save_v1,
        lambda s: s.save("a/x", "v: 2\n"),
        lambda s: _content(s, "a/x") == "v: 2\n",
        "modified",
    ),
    "save-many": Op(
        _save_v1,
        lambda s: s.save_many([SaveRequest("a/x", "v: 2\n"), SaveRequest("b/y", "w: 1\n")]),
        lambda s: _content(s, "a/x") == "v: 2\n" and _content(s, "b/y") == "w: 1\n",
        "created",
    ),
    "delete": Op(
        _save_v1, lambda s: s.delete("a/x"), lambda s: _content(s, "a/x") is None, "deleted"
    ),
    "move": Op(
        _save_v1,
        lambda s: s.move("a/x", "b/y"),
        lambda s: _content(s, "a/x") is None and _content(s, "b/y") == "v: 1\n",
        "moved",
    ),
    "restore": Op(
        _save_v1_v2,
        lambda s: s.restore("a/x", 1),
        lambda s: _content(s, "a/x") == "v: 1\n",
        "modified",
    ),
}


@pytest.fixture
def opened(home: Path) -> Iterator[Callable[[], Store]]:
    stores: list[Store] = []

    def open_() -> Store:
        stores.append(localstore.open(home=home))
        return stores[-1]

    yield open_
    for s in stores:
        s.close()


def _interrupted(store: Store, op: Op, where: str, exc: type[BaseException]) -> list[Any]:
    events: list[Any] = []
    store.subscribe(events.append)
    with Interrupt(store, where, exc) as interrupt, pytest.raises(exc):
        op.act(store)
    assert interrupt.fired
    assert not store.index.write_open  # the index ended the transaction either way
    return events


@pytest.mark.parametrize("where", AFTER_COMMIT)
@pytest.mark.parametrize("name", sorted(OPS))
def test_an_interrupt_after_the_commit_leaves_the_write_standing(
    opened: Callable[[], Store], name: str, where: str
) -> None:
    op = OPS[name]
    store = opened()
    op.setup(store)
    events = _interrupted(store, op, where, KeyboardInterrupt)
    assert op.landed(store)
    assert op.event in {e.kind for e in events}  # (its events were still published)
    store.save("c/z", "after: 1\n")  # the index is usable: nothing left half-ended
    after = snapshot(store)
    store.close()
    again = opened()
    # Files and index agree: the next open's reconcile records nothing (it recorded the
    # committed change as deleted, or as an external edit back to the old version).
    assert again.check().clean
    assert snapshot(again) == after
    assert op.landed(again)


@pytest.mark.parametrize("name", sorted(OPS))
def test_an_interrupt_before_the_commit_still_undoes_everything(
    opened: Callable[[], Store], name: str
) -> None:
    op = OPS[name]
    store = opened()
    op.setup(store)
    before = snapshot(store)
    events = _interrupted(store, op, "before-commit", KeyboardInterrupt)
    assert not op.landed(store)
    assert events == []
    assert snapshot(store) == before
    store.close()
    again = opened()
    assert again.check().clean
    assert snapshot(again) == before


@pytest.mark.parametrize("exc", [SystemExit, GeneratorExit])
def test_any_base_exception_after_the_commit(
    opened: Callable[[], Store], exc: type[BaseException]
) -> None:
    store = opened()
    _interrupted(store, OPS["save-new"], "after-commit-statement", exc)
    store.close()
    again = opened()
    assert again.check().clean
    assert [(r.rev, r.origin, r.deleted) for r in again.history("a/x")] == [(1, "local", False)]


@pytest.mark.parametrize("where", AFTER_COMMIT)
@pytest.mark.parametrize("name", ["save-over", "restore"])
def test_kept_previous_files_go_once_the_save_committed(
    opened: Callable[[], Store], monkeypatch: pytest.MonkeyPatch, name: str, where: str
) -> None:
    """On a nearly full disk a save keeps the replaced files until its commit: an interrupt
    after it must not leave them in the folder (nor put them back). A restore's save is a
    savepoint: its kept files go after the restore's COMMIT, with the rest of that write's
    after-commit callbacks, which an interrupt right after the index lock's release skipped
    (the kept copy stayed in the folder, the restore's event never came)."""
    op = OPS[name]
    store = opened()
    op.setup(store)
    monkeypatch.setattr(fs, "space_is_low", lambda _root: True)
    events = _interrupted(store, op, where, KeyboardInterrupt)
    assert sorted(snapshot(store)[0]) == ["a/x.blueprint.meta.json", "a/x.blueprint.yaml"]
    assert op.landed(store)
    assert op.event in {e.kind for e in events}


def test_an_interrupt_at_an_inner_release_undoes_the_whole_write(
    opened: Callable[[], Store],
) -> None:
    """A restore's save is a savepoint of the restore's transaction: interrupted at its RELEASE,
    the index cannot tell whether the RELEASE was done, so the whole write rolls back, files
    too."""
    store = opened()
    OPS["restore"].setup(store)
    before = snapshot(store)
    events = _interrupted(store, OPS["restore"], "before-release", KeyboardInterrupt)
    assert events == []
    assert snapshot(store) == before
    store.close()
    assert snapshot(opened()) == before


def test_a_transaction_that_swallows_an_inner_interrupt_cannot_commit(
    opened: Callable[[], Store],
) -> None:
    """Caught and ignored by the caller's transaction, the interrupted level still takes the
    whole transaction down: the index cannot tell whether its RELEASE was done, and committed
    without it the index and the files would disagree."""
    store = opened()
    OPS["save-over"].setup(store)
    before = snapshot(store)
    with (
        Interrupt(store, "before-release", KeyboardInterrupt) as interrupt,
        pytest.raises(IndexStoreError),
        store.index.write(),
        contextlib.suppress(KeyboardInterrupt),
    ):
        store.save("a/x", "v: 2\n")
    assert interrupt.fired
    assert snapshot(store) == before
    store.save("b/y", "w: 1\n")  # and the index is usable
    store.close()
    again = opened()
    assert again.check().clean
    assert _content(again, "a/x") == "v: 1\n"


def test_an_interrupt_in_a_subscriber_lets_every_other_hear_the_change(
    opened: Callable[[], Store],
) -> None:
    """Ctrl-C while one subscriber ran (its KeyboardInterrupt) used to end the delivery there:
    the other subscribers and observers (an app's view, the daemon's clients, the in-process
    sync's follower) never heard of the committed change, nor of the batch's later events.
    Now they all do, then the interrupt goes on."""
    store = opened()
    heard: list[tuple[str, str]] = []
    observed: list[str] = []

    def interrupted(_event: Any) -> None:
        if not heard:
            raise KeyboardInterrupt

    store.subscribe(interrupted)
    store.subscribe(lambda e: heard.append((e.kind, e.path)))
    store.events.observe(lambda events: observed.extend(e.path for e in events))
    with pytest.raises(KeyboardInterrupt):
        store.save_many([SaveRequest("a/x", "v: 1\n"), SaveRequest("b/y", "w: 1\n")])
    paths = ["a/x.blueprint.yaml", "b/y.blueprint.yaml"]
    assert heard == [("created", p) for p in paths]
    assert observed == paths


@contextlib.contextmanager
def _interrupt_at_next_step(armed: Callable[[], bool]) -> Iterator[None]:
    """Raise KeyboardInterrupt at the first line ``call_each`` runs once ``armed()`` (a callback
    armed it as it returned): where a Ctrl-C that came during that callback's last steps lands,
    at the loop's next step. (A trace function that raises is removed, so it fires once.)"""
    code = _callbacks.call_each.__code__

    def in_call_each(frame: FrameType, event: str, _arg: Any) -> Any:
        if event == "line" and armed():
            raise KeyboardInterrupt("injected between two callbacks")
        return in_call_each

    def calls(frame: FrameType, _event: str, _arg: Any) -> Any:
        return in_call_each if frame.f_code is code else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        yield
    finally:
        sys.settrace(previous)


def _two_subscribers(store: Store, first: Callable[[Any], None]) -> list[str]:
    """``first`` then a subscriber that notes what it heard (returned)."""
    heard: list[str] = []
    store.subscribe(first)
    store.subscribe(lambda e: heard.append(e.path))
    return heard


def test_an_interrupt_between_two_subscribers_lets_the_rest_hear_the_change(
    opened: Callable[[], Store],
) -> None:
    """A Ctrl-C that came as one subscriber returned was raised at the delivery loop's next step,
    outside the try that keeps an interrupt for the end: the subscribers after it never heard of
    the committed change."""
    store = opened()
    ran: list[bool] = []
    heard = _two_subscribers(store, lambda _e: ran.append(True))
    with _interrupt_at_next_step(lambda: bool(ran)), pytest.raises(KeyboardInterrupt):
        store.save("a/x", "v: 1\n")
    assert heard == ["a/x.blueprint.yaml"]


def test_an_interrupt_while_a_failing_subscriber_is_logged_lets_the_rest_hear_the_change(
    opened: Callable[[], Store], caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C while the error of a failing subscriber was written to the log (a slow terminal)
    escaped the loop from its except clause: the rest never heard of the change."""
    store = opened()

    def failing(_event: Any) -> None:
        raise ValueError("a subscriber's bug")

    class InterruptedWrite(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise KeyboardInterrupt("injected while logging")

    heard = _two_subscribers(store, failing)
    events_log = logging.getLogger("localstore.events")
    handler = InterruptedWrite()
    events_log.addHandler(handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            store.save("a/x", "v: 1\n")
    finally:
        events_log.removeHandler(handler)
    assert heard == ["a/x.blueprint.yaml"]
