"""What must stay bounded in a home whose daemon (or an app's in-process sync) runs for months.

Each test drives many cycles through the real engine, files and index (a MemoryServer stands in
for the cloud) and checks that the structure it watches does not grow with them. The long
variants run under LOCALSTORE_STRESS=1.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sync import _state as st
from sync import _state_conflicts
from sync import engine as engine_mod
from sync.errors import TransientError
from sync.remote import Change, PushResult

from .conftest import STRESS, Device, converge

CYCLES = 400 if STRESS else 40


def _conflict(a: Device, b: Device, path: str, n: int) -> int:
    """Make one keep-both conflict on ``b`` (both devices edited ``path``); returns its cid."""
    with b.store.index.read() as cur:
        before = {r.cid for r in st.conflicts(cur)}
    a.store.save(path, f"name: flow\nsteps: {n}\nby: a\n")
    b.store.save(path, f"name: flow\nsteps: {n}\nby: b\n")
    a.sync()
    b.sync()
    with b.store.index.read() as cur:
        new = [r.cid for r in st.conflicts(cur) if r.cid not in before]
    assert len(new) == 1, new
    return new[0]


def _resolved_count(dev: Device) -> int:
    with dev.store.index.read() as cur:
        return int(
            cur.execute(
                "SELECT count(*) FROM sync_conflicts WHERE resolved IS NOT NULL"
            ).fetchall()[0][0]
        )


def test_resolved_conflict_records_are_capped(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every resolved conflict kept its three texts forever: a person on two devices who
    resolves a conflict a day had thousands of them in the index after some years. Only the
    newest RESOLVED_CONFLICTS_KEPT resolved records stay; every open one stays."""
    kept = 10
    monkeypatch.setattr(_state_conflicts, "RESOLVED_CONFLICTS_KEPT", kept)
    a, b = make_device("a", policy="keep-both"), make_device("b", policy="keep-both")
    a.store.save("c/flow", "name: flow\n")
    converge(a, b)
    copies: list[tuple[str, str]] = []
    for n in range(CYCLES):
        cid = _conflict(a, b, "c/flow", n)
        record = b.engine.conflict(cid)
        assert record.copy_id is not None
        copies.append((record.copy_id, record.local))
        b.engine.resolve_conflict(cid, take="remote" if n % 2 else "local")
        converge(a, b)
        assert _resolved_count(b) <= kept
    with b.store.index.read() as cur:
        records = st.conflicts(cur, include_resolved=True)
    # The newest ones, in order.
    assert [r.cid for r in records] == list(range(CYCLES - kept + 1, CYCLES + 1))
    # Nothing a person could need went with the older records: each conflict copy, holding the
    # local side, is still in history (deleted), with the text the record had.
    copy_id, local = copies[0]
    revs = b.store.history(copy_id)
    assert revs[0].deleted
    texts = {b.store.load_revision(copy_id, r.rev).content for r in revs if not r.deleted}
    assert local in texts


def test_old_resolved_conflicts_go_open_ones_stay(make_device: Callable[..., Device]) -> None:
    """A resolved record older than RESOLVED_CONFLICT_DAYS goes at the next resolution; an open
    one stays however old it is (it still needs the person)."""
    a, b = make_device("a", policy="keep-both"), make_device("b", policy="keep-both")
    a.store.save("c/one", "name: one\n")
    a.store.save("c/two", "name: two\n")
    converge(a, b)
    first = _conflict(a, b, "c/one", 1)
    b.engine.resolve_conflict(first, take="remote")
    converge(a, b)
    second = _conflict(a, b, "c/two", 2)
    with b.store.index.write() as cur:
        # A year ago (the record's own timestamps: nothing else in the index is aged).
        cur.execute(
            "UPDATE sync_conflicts SET created = '2000-01-01T00:00:00.000000Z', "
            "resolved = CASE WHEN resolved IS NULL THEN NULL "
            "ELSE '2000-01-02T00:00:00.000000Z' END"
        )
    third = _conflict(a, b, "c/one", 3)
    b.engine.resolve_conflict(third, take="local")
    with b.store.index.read() as cur:
        left = {r.cid: r.open for r in st.conflicts(cur, include_resolved=True)}
    assert left == {second: True, third: False}


def _time_out_pushes(dev: Device, monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Make every push of ``dev`` time out on the server (57014) while the returned switch's
    ``"on"`` is true (it starts on)."""
    real = dev.remote.push
    timing_out = {"on": True}

    def push(changes: list[Change], *, device: str) -> list[PushResult]:
        if timing_out["on"]:
            raise TransientError("canceling statement due to statement timeout", code="57014")
        return real(changes, device=device)

    monkeypatch.setattr(dev.remote, "push", push)
    return timing_out


def test_lone_timeout_counts_do_not_pile_up(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine counts, per (id, op id), how often a large change timed out alone. A change
    edited again before its count reached LONE_TIMEOUTS left its old count behind for the life
    of the engine: one entry per such edit, in a process that runs for months."""
    dev = make_device("a")
    timing_out = _time_out_pushes(dev, monkeypatch)
    big = "data: " + "x" * engine_mod.LONE_TIMEOUT_MIN_BYTES + "\n"
    for n in range(CYCLES):
        dev.store.save("big", big + f"n: {n}\n")
        with pytest.raises(TransientError):
            dev.sync()
        assert len(dev.engine._lone_timeouts) <= 1
    timing_out["on"] = False
    dev.sync()
    assert dev.engine._lone_timeouts == {}
    assert dev.engine.status().pending == 0


@pytest.mark.parametrize("where", ["here", "on the other device"])
def test_a_conflict_whose_copy_was_deleted_is_resolved(
    make_device: Callable[..., Device], where: str
) -> None:
    """A person who settles a conflict by deleting the conflict copy (in an editor, the file
    manager, or `localstore rm`) instead of `conflicts resolve` had the record open for good:
    status said "1 open conflict" forever. Deleting the copy is a decision (keep the other
    version); the copy's text stays in history. The copy syncs like any blueprint, so deleting
    it on another device settles the record here too."""
    a, b = make_device("a", policy="keep-both"), make_device("b", policy="keep-both")
    a.store.save("c/flow", "name: flow\n")
    converge(a, b)
    cid = _conflict(a, b, "c/flow", 1)
    with b.store.index.read() as cur:
        record = st.get_conflict(cur, cid)
    assert record is not None and record.copy_id and record.copy_path
    converge(a, b)  # the copy reaches a as well
    if where == "here":
        (b.store.root / record.copy_path).unlink()  # deleted in a file manager
        meta = str(record.copy_path).replace(".blueprint.yaml", ".blueprint.meta.json")
        (b.store.root / meta).unlink()
        b.store.check(fix=True)
    else:
        a.store.delete(record.copy_id)
    converge(a, b)
    with b.store.index.read() as cur:
        settled = st.get_conflict(cur, cid)
        assert st.open_conflict_count(cur) == 0
    assert settled is not None and settled.resolution == "copy deleted"
    assert b.store.load("c/flow").content  # the main one stays


def test_lone_timeout_counts_of_blueprints_deleted_before_they_reached_the_server_go(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new blueprint whose push timed out alone, then deleted before it reached the server,
    is never pushed again (its delete settles without a call): its count stayed for the life of
    the engine, one entry per such blueprint."""
    dev = make_device("a")
    timing_out = _time_out_pushes(dev, monkeypatch)
    big = "data: " + "x" * engine_mod.LONE_TIMEOUT_MIN_BYTES + "\n"
    for n in range(CYCLES):
        timing_out["on"] = True
        dev.store.save(f"big/{n}", big)
        with pytest.raises(TransientError):
            dev.sync()
        dev.store.delete(f"big/{n}")
        timing_out["on"] = False
        dev.sync()
        assert len(dev.engine._lone_timeouts) == 0, n
    assert dev.engine.status().pending == 0
