"""``Index.own_ops()``: the op_ids a connection committed, exactly, for the follower that tells
this process's changes (and so its events) from other processes' (session 9; docs/daemon.md,
"Changes made by other processes"). Real stores on one home, real SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from sync._follow import ForeignChanges, foreign_events
from tests.daemon.test_follow_coalescing import claim_all
from tests.interrupts import AFTER_COMMIT, Interrupt


def _ops(store: localstore.BlueprintStore) -> set[int]:
    with store.index.read():
        ranges = store.index.own_ops()
    return {op for first, last in ranges for op in range(first, last + 1)}


def _op_of(store: localstore.BlueprintStore, blueprint_id: str, rev: int) -> int:
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT op_id FROM revisions WHERE id = ? AND rev = ?", (blueprint_id, rev)
        ).fetchall()
    return int(rows[0][0])


def test_own_ops_are_this_connections_committed_changes_and_no_others(tmp_path: Path) -> None:
    """A rolled-back savepoint gives its op_ids back (another connection then draws them):
    noted, they would make another process's change this one's, and its event was lost."""
    home = tmp_path / "home"
    with localstore.open(home=home) as here, localstore.open(home=home) as other:
        _ops(here)  # starts the noting
        a = here.save("a/one", "v: 1\n")
        with here.index.write():
            b = here.save("a/two", "v: 1\n")
            with pytest.raises(RuntimeError), here.index.write():
                here.save("a/gone", "v: 1\n")
                raise RuntimeError("rolled back")
            c = here.save("a/three", "v: 1\n")
        theirs = other.save("b/one", "v: 1\n")  # draws the op_id after c's
        d = here.save("a/one", "v: 2\n")
        with pytest.raises(RuntimeError), here.index.write():
            here.save("a/four", "v: 1\n")
            raise RuntimeError("rolled back")
        with here.index.write():  # the last draw rolled back: the commit ends before it
            e = here.save("a/five", "v: 1\n")
            with pytest.raises(RuntimeError), here.index.write():
                here.save("a/six", "v: 1\n")
                raise RuntimeError("rolled back")
        theirs_next = other.save("b/two", "v: 1\n")  # draws the op_id a/six had
        mine = {_op_of(here, x.id, x.rev) for x in (a, b, c, d, e)}
        assert _ops(here) == mine
        assert _op_of(here, theirs.id, 1) not in mine
        assert _op_of(here, theirs_next.id, 1) == max(mine) + 1
        assert _ops(here) == set()  # taken once


def test_a_store_that_never_asks_notes_nothing(tmp_path: Path) -> None:
    with localstore.open(home=tmp_path / "home") as here:
        here.save("a/one", "v: 1\n")
        assert here.index._own_ops is None
        assert _ops(here) == set()


@pytest.mark.parametrize("where", AFTER_COMMIT)
def test_a_write_interrupted_after_its_commit_is_still_this_connections(
    tmp_path: Path, where: str
) -> None:
    """The range was noted after the COMMIT from a local of the committing code: an interrupt
    right after the statement lost it (and one noted before the interrupt is noted once)."""
    with localstore.open(home=tmp_path / "home") as here:
        _ops(here)  # starts the noting
        mine = here.save("a/one", "v: 1\n")
        with Interrupt(here, where, KeyboardInterrupt), pytest.raises(KeyboardInterrupt):
            here.save("a/one", "v: 2\n")
        with here.index.read():
            ranges = here.index.own_ops()
        assert ranges == [(_op_of(here, mine.id, 1), _op_of(here, mine.id, 2))]


@pytest.mark.parametrize("where", AFTER_COMMIT)
def test_the_follower_never_takes_an_interrupted_own_save_for_another_processs(
    tmp_path: Path, where: str
) -> None:
    """With the range lost, the in-process sync's follower published this process's own save
    as another process's change (``process="other"``: an app took its own edit for a foreign
    one, and the engine was woken for it)."""
    home = tmp_path / "home"
    with localstore.open(home=home) as here, localstore.open(home=home) as other:
        follower = ForeignChanges(here)
        here.events.observe(lambda events: claim_all(follower, events))
        here.save("a/one", "v: 1\n")
        with Interrupt(here, where, KeyboardInterrupt), pytest.raises(KeyboardInterrupt):
            here.save("a/one", "v: 2\n")
        theirs = other.save("b/one", "v: 1\n")
        follower.poll(True)
        heard = [e for row in follower.poll(False) for e in foreign_events(here, row)]
        assert [(e.id, e.kind, e.process) for e in heard] == [(theirs.id, "created", "other")]
