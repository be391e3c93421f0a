"""The conflict matrix: devices change one blueprint concurrently; every case ends with no edit lost.

Each case starts from one blueprint synced to every device, lets device A and device B change it
without seeing each other's change, syncs A, then B, then everyone until quiet, and checks that
all replicas equal the server byte for byte, that each side's edit survives (in place or in a
conflict copy) and the outcome the case documents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from sync.engine import SyncReport
from sync.memory_remote import MemoryServer
from sync.merge import ConflictCase, Resolution

from .conftest import Device, assert_converged, converge, server_snapshot

PATH = "team/flow.blueprint.yaml"
MID = "# keep this comment\nkind: pipeline\nretries: 2\n"
BASE = f"# shared flow\nname: flow\nsteps: 3\n{MID}owner: ann\n"
A_EDIT = f"# shared flow\nname: flow\nsteps: 4\n{MID}owner: ann\n"  # changes steps
B_EDIT_OTHER = f"# shared flow\nname: flow\nsteps: 3\n{MID}owner: bob\n"  # changes owner
B_EDIT_SAME = f"# shared flow\nname: flow\nsteps: 5\n{MID}owner: ann\n"  # changes steps too
C_EDIT_SAME = f"# shared flow\nname: flow\nsteps: 6\n{MID}owner: ann\n"
BOTH_OTHER = f"# shared flow\nname: flow\nsteps: 4\n{MID}owner: bob\n"
COMBINED = f"# shared flow\nname: flow\nsteps: [4, 5]\n{MID}owner: ann\n"


@dataclass
class Case:
    """One row of the matrix."""

    name: str
    a: Callable[[Device, str], None]
    b: Callable[[Device, str], None]
    # path -> text expected on every device (the main one, by path); None = must not exist
    expect: dict[str, str | None]
    copies: list[str] = field(default_factory=list)  # texts expected in conflict copies
    policy: Any = None
    b_conflict_records: int = 0
    survivors: list[str] = field(default_factory=list)  # edits that must not be lost


def edit(text: str) -> Callable[[Device, str], None]:
    def run(dev: Device, ident: str) -> None:
        dev.store.save(PATH, text)

    return run


def move(path: str) -> Callable[[Device, str], None]:
    def run(dev: Device, ident: str) -> None:
        dev.store.move(ident, path)

    return run


def delete(dev: Device, ident: str) -> None:
    dev.store.delete(ident)


def edit_by_id(text: str) -> Callable[[Device, str], None]:
    def run(dev: Device, ident: str) -> None:
        dev.store.save(dev.store.resolve(ident).path, text)

    return run


def combine(case: ConflictCase) -> Resolution:
    """A callable policy: keep both values of the conflicting key as a list."""
    return Resolution.take_merged(COMBINED, case.remote.meta)


CASES = [
    Case(
        "edit-edit-different-keys",
        edit(A_EDIT),
        edit(B_EDIT_OTHER),
        {PATH: BOTH_OTHER},
        survivors=[A_EDIT, B_EDIT_OTHER],
    ),
    Case(
        "edit-edit-same-key",
        edit(A_EDIT),
        edit(B_EDIT_SAME),
        {PATH: A_EDIT},
        copies=[B_EDIT_SAME],
        b_conflict_records=1,
        survivors=[A_EDIT, B_EDIT_SAME],
    ),
    Case("edit-vs-delete", edit(A_EDIT), delete, {PATH: A_EDIT}, survivors=[A_EDIT]),
    Case("delete-vs-edit", delete, edit(B_EDIT_SAME), {PATH: B_EDIT_SAME}, survivors=[B_EDIT_SAME]),
    Case("delete-delete", delete, delete, {PATH: None}),
    Case(
        "rename-vs-edit",
        move("moved/flow"),
        edit(B_EDIT_SAME),
        {PATH: None, "moved/flow.blueprint.yaml": B_EDIT_SAME},
        survivors=[B_EDIT_SAME],
    ),
    Case(
        "edit-vs-rename",
        edit(A_EDIT),
        move("moved/flow"),
        {PATH: None, "moved/flow.blueprint.yaml": A_EDIT},
        survivors=[A_EDIT],
    ),
    Case(
        "rename-rename",
        move("one/flow"),
        move("two/flow"),
        {PATH: None, "one/flow.blueprint.yaml": BASE, "two/flow.blueprint.yaml": None},
    ),
    Case(
        "case-only-rename-vs-edit",
        move("team/Flow"),
        edit_by_id(B_EDIT_OTHER),
        {PATH: None, "team/Flow.blueprint.yaml": B_EDIT_OTHER},
        survivors=[B_EDIT_OTHER],
    ),
    Case(
        "policy-merge",
        edit(A_EDIT),
        edit(B_EDIT_OTHER),
        {PATH: BOTH_OTHER},
        policy="merge",
        survivors=[A_EDIT, B_EDIT_OTHER],
    ),
    Case(
        "policy-keep-both",
        edit(A_EDIT),
        edit(B_EDIT_OTHER),
        {PATH: A_EDIT},
        copies=[B_EDIT_OTHER],
        policy="keep-both",
        b_conflict_records=1,
        survivors=[A_EDIT, B_EDIT_OTHER],
    ),
    Case(
        "policy-prefer-local",
        edit(A_EDIT),
        edit(B_EDIT_SAME),
        {PATH: B_EDIT_SAME},
        policy="prefer-local",
        survivors=[B_EDIT_SAME],
    ),
    Case(
        "policy-prefer-remote",
        edit(A_EDIT),
        edit(B_EDIT_SAME),
        {PATH: A_EDIT},
        policy="prefer-remote",
        survivors=[A_EDIT, B_EDIT_SAME],  # B's edit is overruled but kept in B's history
    ),
    Case(
        "policy-callable",
        edit(A_EDIT),
        edit(B_EDIT_SAME),
        {PATH: COMBINED},
        policy=combine,
        survivors=[A_EDIT, B_EDIT_SAME],  # both in history; the callable's merge is live
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conflict_case(
    case: Case, make_device: Callable[..., Device], server: MemoryServer
) -> None:
    kw = {} if case.policy is None else {"policy": case.policy}
    a, b, c = make_device("a", **kw), make_device("b", **kw), make_device("c", **kw)
    ident = a.store.save(PATH, BASE).id
    converge(a, b, c)

    case.a(a, ident)
    case.b(b, ident)
    a.sync()
    b.sync()
    converge(a, b, c)

    assert_converged(server, a, b, c)
    for dev in (a, b, c):
        by_path = {path: text for path, text in dev.snapshot().values()}
        for path, text in case.expect.items():
            assert by_path.get(path) == text, (dev.name, path)
        copies = [t for p, t in by_path.items() if "(conflict b " in p]
        assert sorted(copies) == sorted(case.copies), dev.name
    assert len(b.engine.conflicts()) == case.b_conflict_records
    assert a.engine.conflicts() == []
    _assert_no_edit_lost(case, a, b)


def _assert_no_edit_lost(case: Case, a: Device, b: Device) -> None:
    """Each side's edit is live somewhere (whole, or its changed lines in a merge) or, when a
    policy overruled it, still in the loser's history."""
    live = {text for _, text in a.snapshot().values()}
    history = {
        dev.store.load_revision(r.id, r.rev).content
        for dev in (a, b)
        for info in dev.store.list()
        for r in dev.store.history(info.id)
    }
    for text in case.survivors:
        if case.policy in ("prefer-remote", "prefer-local") or callable(case.policy):
            assert text in live or text in history, f"{text!r} lost"
        else:
            assert text in live or any(_contains_change(text, t) for t in live), f"{text!r} lost"


def _contains_change(edit_text: str, merged: str) -> bool:
    """The edit's changed lines (against BASE) all appear in the merged text."""
    changed = set(edit_text.splitlines()) - set(BASE.splitlines())
    return changed <= set(merged.splitlines())


def test_create_create_same_path(make_device: Callable[..., Device], server: MemoryServer) -> None:
    a, b = make_device("a"), make_device("b")
    a.store.save("new/thing", "v: a\n")
    b.store.save("new/thing", "v: b\n")
    a.sync()
    b.sync()
    converge(a, b)
    assert_converged(server, a, b)
    by_path = {p: t for p, t in b.snapshot().values()}
    assert by_path["new/thing.blueprint.yaml"] == "v: a\n"
    copies = [t for p, t in by_path.items() if p.startswith("new/thing (conflict b ")]
    assert copies == ["v: b\n"]
    (record,) = b.engine.conflicts()
    assert record.reason == "path_taken" and record.copy_path and record.local == "v: b\n"


def test_incoming_path_taken_locally_moves_local(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """A pulled row whose path a local, never-pushed blueprint holds: the server row keeps it."""
    a, b = make_device("a"), make_device("b")
    a.store.save("p/x", "v: a\n")
    a.sync()
    b.store.save("p/x", "v: b\n")
    b.engine._pull_all(SyncReport())  # pull before b ever pushes its own p/x
    assert b.store.load("p/x").content == "v: a\n"
    converge(a, b)
    assert_converged(server, a, b)
    texts = sorted(t for _, t in a.snapshot().values())
    assert texts == ["v: a\n", "v: b\n"]
    assert {p for p, _ in a.snapshot().values()} >= {"p/x.blueprint.yaml"}


def test_three_devices_keep_both_copy_everywhere(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    ident = a.store.save(PATH, BASE).id
    converge(a, b, c)
    a.store.save(PATH, A_EDIT)
    b.store.save(PATH, B_EDIT_SAME)
    c.store.save(PATH, C_EDIT_SAME)
    for dev in (a, b, c):
        dev.sync()
    converge(a, b, c)
    assert_converged(server, a, b, c)
    texts = sorted(t for _, t in a.snapshot().values())
    assert A_EDIT in texts and B_EDIT_SAME in texts
    assert C_EDIT_SAME in texts
    assert a.store.load(ident).content == A_EDIT


def test_remote_set_back_to_an_older_version_is_an_edit(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """A -> B -> A on the server: the old version this device once had is not the merge base.

    Taking it as the base read "remote unchanged": the other device's change back was dropped
    and local pushed over it, even when both changed the same key.
    """
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("aba/x", "a: 1\nb: 1\nc: 1\n").id
    converge(a, b)
    b.store.save("aba/x", "a: 2\nb: 1\nc: 1\n")
    converge(b, a)  # a is now clean at a: 2
    b.store.save("aba/x", "a: 1\nb: 1\nc: 1\n")  # b sets a back to 1: an edit
    b.sync()
    a.store.save("aba/x", "a: 2\nb: 1\nc: 3\n")  # a, not having seen it, changes c
    a.sync()
    converge(a, b)
    assert_converged(server, a, b)
    assert a.store.load(ident).content == "a: 1\nb: 1\nc: 3\n"  # both edits kept, merged
    assert a.engine.conflicts() == []


def test_remote_set_back_on_the_same_key_is_a_conflict(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("aba/y", "a: 1\n").id
    converge(a, b)
    b.store.save("aba/y", "a: 2\n")
    converge(b, a)
    b.store.save("aba/y", "a: 1\n")
    b.sync()
    a.store.save("aba/y", "a: 3\n")
    a.sync()
    converge(a, b)
    assert_converged(server, a, b)
    assert a.store.load(ident).content == "a: 1\n"  # the server's version keeps the id
    texts = sorted(t for _, t in a.snapshot().values())
    assert texts == ["a: 1\n", "a: 3\n"]  # and a's edit survives in a conflict copy
    (record,) = a.engine.conflicts()
    assert record.base == "a: 2\n" and record.local == "a: 3\n" and record.remote == "a: 1\n"


def test_path_the_server_moved_a_blueprint_off_is_no_collision(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """b renames x p -> q, creates y at p, then edits x: a pulls y before x's newer row.

    x was still at p on a (clean): it was moved to a conflict path with a path_taken record
    whose "copy" was x itself, and resolving that record deleted x everywhere.
    """
    a, b = make_device("a"), make_device("b")
    x = a.store.save("mv/p", "k: 1\n").id
    converge(a, b)
    b.store.move(x, "mv/q")
    y = b.store.save("mv/p", "new: 1\n").id
    b.sync()
    b.store.save("mv/q", "k: 2\n")  # x's row now comes after y's in a's pull
    b.sync()
    report = a.sync()
    assert report.conflicts == 0 and report.pushed == 0 and a.engine.conflicts() == []
    assert a.store.resolve(x).path == "mv/q.blueprint.yaml" and a.text(x) == "k: 2\n"
    assert a.store.resolve(y).path == "mv/p.blueprint.yaml"
    converge(a, b)
    assert_converged(server, a, b)


@pytest.mark.parametrize("take", ["remote", "local"])
def test_resolving_a_collision_keeps_a_moved_blueprint_with_its_own_server_row(
    make_device: Callable[..., Device], server: MemoryServer, take: Literal["local", "remote"]
) -> None:
    """a renames a synced x onto a path b just gave to y: x moves aside, and resolving keeps it.

    The record's "copy" is x itself: deleting it (take remote) deleted x everywhere, and writing
    it into y (take local) replaced y's text with x's.
    """
    a, b = make_device("a"), make_device("b")
    x = a.store.save("rn/old", "k: 1\n").id
    converge(a, b)
    y = b.store.save("rn/p", "new: 1\n").id
    b.sync()
    a.store.move(x, "rn/p")
    a.sync()  # the push of the rename meets y at rn/p
    (record,) = a.engine.conflicts()
    assert record.reason == "path_taken" and record.copy_id == x and record.copy_synced
    a.engine.resolve_conflict(record.cid, take=take)
    converge(a, b)
    assert_converged(server, a, b)
    assert server_snapshot(server)[x] == (record.copy_path, "k: 1\n")
    assert server_snapshot(server)[y] == ("rn/p.blueprint.yaml", "new: 1\n")


@pytest.mark.parametrize("remote_change", ["edit", "delete"])
def test_a_local_file_that_does_not_parse_is_never_overwritten(
    make_device: Callable[..., Device], server: MemoryServer, remote_change: str
) -> None:
    """An edit in progress (the file does not parse yet) meets a remote change of it.

    The remote version was written over the file (or the remote delete removed it): the
    person's bytes lived on only in a conflict record in the index (gone with `check --fix`),
    an editor holding the file saw it replaced under it, and `conflicts resolve --take local`
    refused the bytes as invalid YAML. The row now waits, parked, until the file parses again;
    the fixed file then merges with the remote change like any edit.
    """
    a, b = make_device("a"), make_device("b")
    x = a.store.save("n/x", "name: x\nk: 1\nm: 0\nn: 0\nj: 1\n").id
    converge(a, b)
    broken = "name: x\nk: 1\nm: 0\nn: 0\nj: [2, typing\n"
    path = b.store.abspath("n/x.blueprint.yaml")
    path.write_text(broken)
    b.store.reconcile()
    assert b.store.row(x).flagged
    if remote_change == "edit":
        a.store.save("n/x", "name: x\nk: 3\nm: 0\nn: 0\nj: 1\n")
    else:
        a.store.delete(x)
    a.sync()
    report = b.sync()
    assert path.read_text() == broken  # untouched
    assert report.quarantined == 1
    (entry,) = b.engine.quarantined()
    assert entry.id == x and entry.direction == "pull" and "does not parse" in entry.message
    assert b.engine.status().needs_attention
    # The person finishes the edit: it merges with the remote change.
    path.write_text("name: x\nk: 1\nm: 0\nn: 0\nj: [2, typed]\n")
    b.store.reconcile()
    converge(b, a)
    assert b.engine.quarantined() == []
    if remote_change == "edit":
        assert b.text(x) == "name: x\nk: 3\nm: 0\nn: 0\nj: [2, typed]\n"
    else:  # an edit beats a delete
        assert b.text(x) == "name: x\nk: 1\nm: 0\nn: 0\nj: [2, typed]\n"
    assert a.text(x) == b.text(x)
    assert_converged(server, a, b)


def test_an_edit_that_beats_a_delete_goes_up_under_a_fresh_op_id(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """b's push of an edit conflicts with a's tombstone; b keeps its edit on the new base and
    pushes it again in its next round. That push needs a new op id: the old one is the server's
    record of the refused change, so reusing it came back as ``op_id_reused``, which makes this
    home give up its device id as if it were a restored backup or a copy of another home."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save(PATH, BASE).id
    converge(a, b)
    device = b.store.device_id
    a.store.delete(ident)
    a.sync()
    b.store.save(PATH, B_EDIT_SAME)
    # The push conflicts with the tombstone; the edit is kept on top of it and goes up again as
    # a revival in the next round of the same cycle.
    report = b.sync()
    assert report.pushed == 1 and not report.errors
    assert b.store.device_id == device
    assert server_snapshot(server) == {ident: (PATH, B_EDIT_SAME)}
