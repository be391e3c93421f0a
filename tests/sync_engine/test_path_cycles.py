"""Renames that trade paths (a swap, a rotation) go up although no order of them is valid alone.

The server answers a batch's changes one after another and keeps paths unique at each step, so
x p -> q with y q -> p is refused whichever goes first: each finds the other still at its target.
Each was retried round after round as "the holder is leaving" and neither ever went up: the
renames, and every later edit of those blueprints on this device, stayed pending for good.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from localstore.errors import DiskFullError
from sync.engine import SyncEngine
from sync.errors import TransientError
from sync.memory_remote import MemoryServer
from sync.remote import Change, PushResult

from .conftest import Device, assert_converged, converge, server_snapshot


def test_a_swap_of_two_paths_is_pushed(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    x = a.store.save("s/p", "x: 0\n").id
    y = a.store.save("s/q", "y: 0\n").id
    converge(a, b)
    a.store.move(x, "s/tmp")
    a.store.move(y, "s/p")
    a.store.move(x, "s/q")
    report = a.sync()
    assert report.pushed >= 2 and report.conflicts == 0 and not report.errors
    assert a.engine.status().pending == 0
    assert server_snapshot(server) == {
        x: ("s/q.blueprint.yaml", "x: 0\n"),
        y: ("s/p.blueprint.yaml", "y: 0\n"),
    }
    converge(a, b)
    assert_converged(server, a, b)
    assert a.engine.conflicts() == [] and b.engine.conflicts() == []


def test_a_rotation_of_three_paths_is_pushed(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    ids = [a.store.save(f"r/{n}", f"v: {n}\n").id for n in "abc"]
    converge(a, b)
    a.store.move(ids[0], "r/tmp")
    a.store.move(ids[2], "r/a")
    a.store.move(ids[1], "r/c")
    a.store.move(ids[0], "r/b")
    a.sync()
    assert a.engine.status().pending == 0
    assert server_snapshot(server) == {
        ids[0]: ("r/b.blueprint.yaml", "v: a\n"),
        ids[1]: ("r/c.blueprint.yaml", "v: b\n"),
        ids[2]: ("r/a.blueprint.yaml", "v: c\n"),
    }
    converge(a, b)
    assert_converged(server, a, b)


@pytest.mark.parametrize(
    ("first", "second", "x_to", "y_to"),
    [
        ("s/É", "s/Ö", "s/ö", "s/é"),
        # 'İ' (U+0130) is a plain 'i' to the server: a key in ASCII from a path beyond it.
        ("s/İ", "s/É", "s/é", "s/i"),
    ],
    ids=["accents", "dotted-capital-i"],
)
def test_a_swap_of_paths_that_differ_beyond_ascii_case_is_pushed(
    make_device: Callable[..., Device],
    server: MemoryServer,
    first: str,
    second: str,
    x_to: str,
    y_to: str,
) -> None:
    """x 'É' -> 'ö' with y 'Ö' -> 'é': each target is the other's path to the server, which
    compares lower(path); the cycle was looked up with SQLite's NOCASE (ASCII letters only), so
    it was never found and both renames stayed pending for good, every pass pushing nothing."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save(first, "x: 0\n").id
    y = a.store.save(second, "y: 0\n").id
    converge(a, b)
    a.store.move(x, "s/tmp")
    a.store.move(y, y_to)
    a.store.move(x, x_to)
    report = a.sync()
    assert report.pushed >= 2 and report.conflicts == 0 and not report.errors
    assert a.engine.status().pending == 0
    assert server_snapshot(server) == {
        x: (f"{x_to}.blueprint.yaml", "x: 0\n"),
        y: (f"{y_to}.blueprint.yaml", "y: 0\n"),
    }
    converge(a, b)
    assert_converged(server, a, b)
    assert a.engine.conflicts() == [] and b.engine.conflicts() == []


def test_a_swap_meets_an_edit_made_elsewhere(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """b edits x while a swaps x and y: the edit and the swap both end on every device."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save("s/p", "x: 0\nk: 0\n").id
    y = a.store.save("s/q", "y: 0\n").id
    converge(a, b)
    a.store.move(x, "s/tmp")
    a.store.move(y, "s/p")
    a.store.move(x, "s/q")
    b.store.save("s/p", "x: 0\nk: 9\n")
    b.sync()
    a.sync()
    converge(a, b)
    assert_converged(server, a, b)
    assert server_snapshot(server) == {
        x: ("s/q.blueprint.yaml", "x: 0\nk: 9\n"),
        y: ("s/p.blueprint.yaml", "y: 0\n"),
    }
    assert a.engine.conflicts() == [] and b.engine.conflicts() == []


@pytest.mark.parametrize("then", ["retry", "restart"])
def test_a_lost_answer_to_the_passing_push_keeps_the_swap(
    make_device: Callable[..., Device],
    server: MemoryServer,
    monkeypatch: pytest.MonkeyPatch,
    then: str,
) -> None:
    """The push to the passing path is applied but its answer lost: the retry (same engine) or
    a new engine (a kill: the passing path was only in memory) still ends at the swapped
    paths, with no conflict and the same device id."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save("s/p", "x: 0\n").id
    y = a.store.save("s/q", "y: 0\n").id
    converge(a, b)
    device = a.store.device_id
    a.store.move(x, "s/tmp")
    a.store.move(y, "s/p")
    a.store.move(x, "s/q")
    real = a.remote.push
    calls: list[list[str]] = []

    def push(changes: list[Change], *, device: str) -> list[PushResult]:
        calls.append([c.path for c in changes])
        if any("(moving a " in c.path for c in changes):
            a.remote.drop_response_next()
        return real(changes, device=device)

    monkeypatch.setattr(a.remote, "push", push)
    with pytest.raises(TransientError):
        a.sync()
    assert any("(moving a " in p for p in calls[-1])
    monkeypatch.undo()
    if then == "restart":
        a.engine = SyncEngine(a.store, a.remote)
    a.sync()
    assert a.engine.status().pending == 0
    assert server_snapshot(server) == {
        x: ("s/q.blueprint.yaml", "x: 0\n"),
        y: ("s/p.blueprint.yaml", "y: 0\n"),
    }
    converge(a, b)
    assert_converged(server, a, b)
    assert a.engine.conflicts() == [] and a.store.device_id == device


def test_a_batch_rolled_back_after_a_detour_draws_no_op_id_twice(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage error on a later row of the batch that gave a swap its passing path rolls the
    batch back, the op counter with it. The passing path's op id, kept in memory, was then drawn
    again by the next change of this device: one of the two pushes met ``op_id_reused`` (a new
    device id for nothing, and one more round)."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save("s/p", "x: 0\n").id
    y = a.store.save("s/q", "y: 0\n").id
    z = a.store.save("s/z", "z: 0\nk: 0\nm: 0\n").id
    converge(a, b)
    device = a.store.device_id
    b.store.save("s/z", "z: 0\nk: 1\nm: 0\n")
    b.sync()
    a.store.move(x, "s/tmp")
    a.store.move(y, "s/p")
    a.store.move(x, "s/q")
    a.store.save("s/z", "z: 0\nk: 0\nm: 1\n")  # z's push, after the swap's, meets b's edit
    real = a.engine._push_conflict
    failed: list[str] = []

    def push_conflict(cur: Any, applier: Any, change: Change, *args: Any) -> None:
        if change.id == z and not failed:
            failed.append(change.id)
            raise DiskFullError("injected: no space left for z's merge")
        real(cur, applier, change, *args)

    monkeypatch.setattr(a.engine, "_push_conflict", push_conflict)
    reused: list[PushResult] = []
    real_push = a.remote.push

    def push(changes: list[Change], *, device: str) -> list[PushResult]:
        results = real_push(changes, device=device)
        reused.extend(r for r in results if r.code == "op_id_reused")
        return results

    monkeypatch.setattr(a.remote, "push", push)
    with pytest.raises(DiskFullError):
        a.sync()
    assert failed == [z]
    a.sync()
    assert reused == []
    assert a.store.device_id == device
    assert a.engine.status().pending == 0
    converge(a, b)
    assert_converged(server, a, b)
    assert server_snapshot(server) == {
        x: ("s/q.blueprint.yaml", "x: 0\n"),
        y: ("s/p.blueprint.yaml", "y: 0\n"),
        z: ("s/z.blueprint.yaml", "z: 0\nk: 1\nm: 1\n"),
    }
