"""What an app hears of several revisions another process commits between two of the follower's
looks (session 8). The follower sees index rows, not each commit: the revisions in between come
as the events of one change, from the state this process last heard of to the row as found, so
the app's view is never left stale (docs/daemon.md, "Changes made by other processes").

The follower is driven tick by tick here (``poll``), on a real store with a second real
connection (``other``) standing for another process: which commits fall between two looks is
then certain, where the follower thread's half-second ticks would make it a race.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import localstore
from localstore.events import Event
from localstore.store import BlueprintStore, SaveRequest
from sync._follow import ForeignChanges, foreign_events


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[BlueprintStore, BlueprintStore]]:
    """This process's store, and another connection to the same home."""
    home = tmp_path / "home"
    with localstore.open(home=home) as here, localstore.open(home=home) as other:
        yield here, other


def tick(follower: ForeignChanges, here: BlueprintStore) -> list[Event]:
    """One look, and the next one that publishes what it found (a row waits one tick)."""
    follower.poll(True)
    return [e for row in follower.poll(False) for e in foreign_events(here, row)]


def kinds(events: list[Event]) -> list[tuple[str, str, str | None, int]]:
    return [(e.kind, e.path, e.old_path, e.rev) for e in events]


def claim_all(follower: ForeignChanges, events: Sequence[Event]) -> None:
    """An observer that claims every event it hears (observers return nothing)."""
    for e in events:
        follower.claim(e.id, e.rev)


def test_a_move_then_an_edit_in_one_tick_is_heard_as_both(
    two: tuple[BlueprintStore, BlueprintStore],
) -> None:
    """Before: one ``modified`` event at the new path, with no old_path, of the edit alone: an
    app that relabels on ``moved`` still listed the blueprint under its old path."""
    here, other = two
    follower = ForeignChanges(here)
    bp = other.save("a/one", "v: 1\n")
    assert kinds(tick(follower, here)) == [("created", "a/one.blueprint.yaml", None, 1)]

    other.move("a/one", "a/two")
    edited = other.save("a/two", "v: 2\n")
    events = tick(follower, here)
    assert kinds(events) == [
        ("moved", "a/two.blueprint.yaml", "a/one.blueprint.yaml", 3),
        ("modified", "a/two.blueprint.yaml", None, 3),
    ]
    assert {e.content_hash for e in events} == {edited.content_hash}
    assert all(e.id == bp.id and e.process == "other" for e in events)


def test_an_edit_then_a_move_in_one_tick_is_heard_as_both(
    two: tuple[BlueprintStore, BlueprintStore],
) -> None:
    """Before: only ``moved`` (the move's revision had the edit's content already): an app that
    re-reads on ``modified`` and only relabels on ``moved`` kept the old content."""
    here, other = two
    follower = ForeignChanges(here)
    other.save("a/one", "v: 1\n")
    tick(follower, here)

    other.save("a/one", "v: 2\n")
    moved = other.move("a/one", "a/two")
    events = tick(follower, here)
    assert kinds(events) == [
        ("moved", "a/two.blueprint.yaml", "a/one.blueprint.yaml", 3),
        ("modified", "a/two.blueprint.yaml", None, 3),
    ]
    assert here.load("a/two").content == "v: 2\n"
    assert {e.content_hash for e in events} == {moved.content_hash}


def test_a_move_with_new_content_in_one_commit_is_heard_as_the_store_says_it(
    two: tuple[BlueprintStore, BlueprintStore],
) -> None:
    """A save by id at a new path is ``moved`` and ``modified`` in the store that makes it;
    another process's was ``moved`` alone."""
    here, other = two
    follower = ForeignChanges(here)
    bp = other.save("a/one", "v: 1\n")
    tick(follower, here)
    own: list[Event] = []
    other.subscribe(own.append)
    other.save("a/three", "v: 3\n", id=bp.id)
    heard = tick(follower, here)
    assert (
        kinds(heard)
        == kinds(own)
        == [
            ("moved", "a/three.blueprint.yaml", "a/one.blueprint.yaml", 2),
            ("modified", "a/three.blueprint.yaml", None, 2),
        ]
    )


def test_a_create_then_a_move_in_one_tick_is_heard_as_created_where_it_is(
    two: tuple[BlueprintStore, BlueprintStore],
) -> None:
    """Before: ``moved`` from a path the app never heard of, and no ``created``: an app that
    relabels the entry at old_path had none, and never listed the blueprint."""
    here, other = two
    follower = ForeignChanges(here)
    other.save("a/one", "v: 1\n")
    other.move("a/one", "a/two")
    assert kinds(tick(follower, here)) == [("created", "a/two.blueprint.yaml", None, 2)]


def test_a_delete_and_restore_in_one_tick_of_a_known_blueprint_is_modified(
    two: tuple[BlueprintStore, BlueprintStore],
) -> None:
    """The app listed it all along: ``created`` for it (the restore's own kind) would add a
    second entry for the same id; what changed, for the app, is its content."""
    here, other = two
    follower = ForeignChanges(here)
    bp = other.save("a/one", "v: 1\n")
    other.save("a/one", "v: 2\n")
    tick(follower, here)
    other.delete("a/one")
    other.restore(bp.id, 1)
    assert kinds(tick(follower, here)) == [("modified", "a/one.blueprint.yaml", None, 4)]
    assert here.load("a/one").content == "v: 1\n"


def test_edits_in_one_tick_coalesce_into_one_event_of_the_latest_state(
    two: tuple[BlueprintStore, BlueprintStore],
) -> None:
    """The contract: several revisions between two looks are one change, to the state found
    (its rev and content hash); the ones in between stay in the history."""
    here, other = two
    follower = ForeignChanges(here)
    bp = other.save("a/one", "v: 1\n")
    tick(follower, here)
    for n in range(2, 6):
        last = other.save("a/one", f"v: {n}\n")
    (event,) = tick(follower, here)
    assert (event.kind, event.rev, event.content_hash) == ("modified", 5, last.content_hash)
    assert here.load(event.path).content_hash == event.content_hash
    assert sorted(r.rev for r in here.history(bp.id)) == [1, 2, 3, 4, 5]


def test_the_apps_own_save_between_is_the_state_it_heard(
    two: tuple[BlueprintStore, BlueprintStore],
) -> None:
    """The app's own save is claimed (it heard it as its own event): another process's move
    right after it, in the same tick, is a move from there (no ``modified``: the content is the
    one the app saved), not from the state of the last look."""
    here, other = two
    follower = ForeignChanges(here)
    here.events.observe(lambda events: claim_all(follower, events))
    bp = other.save("a/one", "v: 1\n")
    tick(follower, here)
    here.save("a/one", "v: 2\n")  # this process's own: heard as its own, claimed
    other.move("a/one", "a/two")  # within the same tick
    assert kinds(tick(follower, here)) == [
        ("moved", "a/two.blueprint.yaml", "a/one.blueprint.yaml", 3)
    ]
    assert here.load(bp.id).content == "v: 2\n"


def test_an_invalid_save_by_another_process_is_heard_as_invalid_too(tmp_path: Path) -> None:
    """The store that makes a save its validator refuses publishes ``invalid`` (with the
    problems) after the change; the follower's events of the same row said nothing of it, so an
    app that marks held-back blueprints on ``invalid`` showed another process's as fine."""
    home = tmp_path / "home"

    def validator(data: object) -> list[str]:
        return ["steps are missing"] if isinstance(data, dict) and "steps" not in data else []

    with (
        localstore.open(home=home) as here,
        localstore.open(home=home, validator=validator) as other,
    ):
        follower = ForeignChanges(here)
        own: list[Event] = []
        other.subscribe(own.append)
        other.save("a/one", "name: x\n")
        heard = tick(follower, here)
        assert (
            [(e.kind, e.detail) for e in heard]
            == [(e.kind, e.detail) for e in own]
            == [
                ("created", ""),
                ("invalid", "steps are missing"),
            ]
        )
        assert [(e.rev, e.content_hash) for e in heard] == [(e.rev, e.content_hash) for e in own]
        own.clear()
        other.save("a/one", "name: x\nsteps: [1]\n")  # fixed: no invalid event any more
        heard = tick(follower, here)
        assert [e.kind for e in heard] == [e.kind for e in own] == ["modified"]


def test_many_own_changes_before_a_look_are_never_taken_for_another_processs(
    two: tuple[BlueprintStore, BlueprintStore],
) -> None:
    """The claims of this process's own changes were kept for the last 50,000 blueprints: an app
    whose first sync pulled more (own events, no look: its follower looks only after another
    connection commits) had the rest announced as another process's changes at the next look
    (and its engine woken for them). There is no count bound now: a claim is let go once a
    look has covered it, which is what this checks (20 claims, all let go at one look)."""
    here, other = two
    follower = ForeignChanges(here)
    here.events.observe(lambda events: claim_all(follower, events))
    here.save_many([SaveRequest(f"mine/b{n:02}", f"n: {n}\n") for n in range(20)])
    theirs = other.save("theirs/one", "v: 1\n")
    assert kinds(tick(follower, here)) == [("created", "theirs/one.blueprint.yaml", None, 1)]
    assert all(e.id == theirs.id for e in tick(follower, here))
    assert len(follower._published) <= 1  # the 20 claims were let go (theirs may stay)

    # The claims are let go once a look has covered them: the next changes are told apart all
    # the same, and an own change made then stays this process's.
    here.save("mine/b00", "n: 100\n")
    other.save("theirs/one", "v: 2\n")
    assert kinds(tick(follower, here)) == [("modified", "theirs/one.blueprint.yaml", None, 2)]
