"""A blueprint the source only renamed: its move is applied on import, whatever the policy.

Identical content at a new path is no conflict: the blueprint keeps its id here and moves, with a
revision (origin "import") and a ``moved`` event, as a local move gets. What stays a conflict: the
new path held here by another blueprint that stays, a local edit since (the content differs), and
both sides changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore import archive
from localstore.cli import cli
from localstore.events import Event
from localstore.store import BlueprintStore

from .conftest import StoreFactory, tree

OLD = "a/old.blueprint.yaml"
NEW = "b/new.blueprint.yaml"
DOC = "# kept byte for byte\nname: x\nsteps: [one]\n"


@dataclass
class Renamed:
    """dst imported X at a/old from v1; the source then moved X to b/new and exported v2."""

    src: BlueprintStore
    dst: BlueprintStore
    x: str
    v1: Path
    v2: Path


@pytest.fixture
def renamed(stores: StoreFactory, tmp_path: Path) -> Renamed:
    src = stores("src")
    x = src.save("a/old", DOC, name="X", tags=["t"]).id
    v1 = tmp_path / "v1.lsbundle"
    archive.export_bundle(src, v1)
    dst = stores("dst")
    archive.import_bundle(dst, v1)
    src.move(x, "b/new")
    v2 = tmp_path / "v2.lsbundle"
    archive.export_bundle(src, v2)
    return Renamed(src, dst, x, v1, v2)


def _histories(store: BlueprintStore) -> dict[str, list[tuple[int, str, str]]]:
    return {i.id: [(r.rev, r.path, r.origin) for r in store.history(i.id)] for i in store.list()}


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_pure_rename_is_applied_under_every_policy(renamed: Renamed, policy: str) -> None:
    dst, x = renamed.dst, renamed.x
    before, files = _histories(dst), tree(dst)
    plan = archive.import_bundle(dst, renamed.v2, on_conflict=policy, dry_run=True)
    assert [(i.action, i.target_id, i.target_path, i.reason) for i in plan.items] == [
        ("move", x, NEW, f"renamed from {OLD}")
    ]
    assert plan.counts() == {"move": 1} and plan.changed == 1 and plan.conflicts_skipped == 0
    assert _histories(dst) == before and tree(dst) == files  # a dry run changes nothing

    events: list[Event] = []
    dst.subscribe(events.append)
    result = archive.import_bundle(dst, renamed.v2, on_conflict=policy)
    (item,) = result.items
    assert (item.action, item.status, item.rev) == ("move", "done", 2)
    assert result.counts() == {"move": 1} and result.changed == 1
    assert [(e.kind, e.origin, e.path, e.old_path) for e in events] == [
        ("moved", "import", NEW, OLD)
    ]
    bp = dst.load(x)
    assert (bp.path, bp.content, bp.name, bp.meta.tags) == (NEW, DOC, "X", ("t",))
    assert [(r.rev, r.path, r.origin) for r in dst.history(x)] == [
        (2, NEW, "import"),
        (1, OLD, "import"),
    ]
    assert dst.count() == 1 and set(tree(dst)) == {NEW, "b/new.blueprint.meta.json"}
    # The same pair as the source's, byte for byte (the meta's modified comes with the bundle).
    assert tree(dst) == tree(renamed.src)

    # Again: nothing to do. And the older bundle (X at a/old, a path X had here before) is old
    # news, not a move back, except under overwrite, where the bundle always wins.
    after = _histories(dst)
    again = archive.import_bundle(dst, renamed.v2, on_conflict=policy)
    assert [(i.action, i.reason) for i in again.items] == [("unchanged", "identical")]
    old = archive.import_bundle(dst, renamed.v1, on_conflict=policy)
    if policy == "overwrite":
        assert [(i.action, i.target_path) for i in old.items] == [("move", OLD)]
    else:
        assert [(i.action, i.reason) for i in old.items] == [
            ("unchanged", f"moved here since (the bundle has it at {OLD})")
        ]
        assert _histories(dst) == after and dst.load(x).path == NEW


def test_a_case_only_rename_is_applied(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    x = src.save("a/readme", "a: 1\n").id
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    dst = stores("dst")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    src.move(x, "a/README")
    archive.export_bundle(src, tmp_path / "v2.lsbundle")
    result = archive.import_bundle(dst, tmp_path / "v2.lsbundle")
    assert [(i.action, i.status) for i in result.items] == [("move", "done")]
    assert dst.load(x).path == "a/README.blueprint.yaml"
    assert set(tree(dst)) == {"a/README.blueprint.yaml", "a/README.blueprint.meta.json"}


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_rename_onto_a_path_taken_here_is_a_conflict(renamed: Renamed, policy: str) -> None:
    dst, x = renamed.dst, renamed.x
    y = dst.save("b/new", "mine: here\n").id
    before, files = _histories(dst), tree(dst)
    result = archive.import_bundle(dst, renamed.v2, on_conflict=policy)
    # Nothing lost, nothing merged into another identity: both stay, the import says why.
    assert [(i.action, i.target_id, i.target_path, i.reason) for i in result.items] == [
        ("skip", x, OLD, f"renamed to {NEW} in the bundle, a path {y} holds here")
    ]
    assert result.conflicts_skipped == 1 and result.changed == 0
    assert _histories(dst) == before and tree(dst) == files


@pytest.mark.parametrize("policy", ["skip", "keep-both"])
def test_a_rename_onto_a_path_the_bundle_frees_is_applied(
    stores: StoreFactory, tmp_path: Path, policy: str
) -> None:
    # The source moved Y out of b/new and then X into it; the bundle lists X (b/new) first.
    src = stores("src")
    x = src.save("a/old", "who: X\n").id
    y = src.save("b/new", "who: Y\n").id
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    dst = stores("dst")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    src.move(y, "c/y")
    src.move(x, "b/new")
    bundle = tmp_path / "v2.lsbundle"
    archive.export_bundle(src, bundle)
    result = archive.import_bundle(dst, bundle, on_conflict=policy, batch_size=1)
    # Y's move is planned, and applied, first: it frees the path X moves to.
    assert [(i.id, i.action, i.target_path, i.status) for i in result.items] == [
        (y, "move", "c/y.blueprint.yaml", "done"),
        (x, "move", NEW, "done"),
    ]
    assert tree(dst) == tree(src)


def test_a_swap_of_two_paths_moves_neither_and_says_how_to_finish_it(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    x = src.save("p/one", "who: X\n").id
    y = src.save("p/two", "who: Y\n").id
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    dst = stores("dst")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    src.move(x, "p/tmp")
    src.move(y, "p/one")
    src.move(x, "p/two")
    archive.export_bundle(src, tmp_path / "v2.lsbundle")
    before = tree(dst)
    result = archive.import_bundle(dst, tmp_path / "v2.lsbundle")
    advice = "which import does not carry out: move one of them to another path here"
    assert sorted((i.id, i.action, i.reason) for i in result.items) == sorted(
        [
            (
                x,
                "skip",
                f"renamed to p/two.blueprint.yaml in the bundle, a path {y} holds here; "
                f"the bundle swaps it with {y}, {advice} ('localstore mv'), then import again",
            ),
            (
                y,
                "skip",
                f"renamed to p/one.blueprint.yaml in the bundle, a path {x} holds here; "
                f"the bundle swaps it with {x}, {advice} ('localstore mv'), then import again",
            ),
        ]
    )
    assert tree(dst) == before
    # Following the advice finishes the swap: each move then has a free path, in order.
    dst.move(x, "p/aside")
    again = archive.import_bundle(dst, tmp_path / "v2.lsbundle")
    assert sorted((i.id, i.action, i.status) for i in again.items) == sorted(
        [(x, "move", "done"), (y, "move", "done")]
    )
    assert (dst.load(x).path, dst.load(y).path) == ("p/two.blueprint.yaml", "p/one.blueprint.yaml")


@pytest.mark.parametrize("policy", ["skip", "keep-both", "merge"])
def test_a_local_edit_since_keeps_the_local_version_and_says_the_move_was_not_applied(
    renamed: Renamed, policy: str
) -> None:
    dst, x = renamed.dst, renamed.x
    dst.save("a/old", DOC + "local: edit\n", id=x)
    before = _histories(dst)
    result = archive.import_bundle(dst, renamed.v2, on_conflict=policy)
    assert [(i.action, i.reason) for i in result.items] == [
        (
            "unchanged",
            f"this version is already in history; edited here since, so its move to {NEW} "
            "is not applied",
        )
    ]
    assert _histories(dst) == before
    assert (dst.load(x).path, dst.load(x).content) == (OLD, DOC + "local: edit\n")


def test_a_rename_with_an_edit_follows_the_policy_and_merge_takes_the_rename(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    x = src.save("a/old", "steps:\n  - one\n").id
    archive.export_bundle(src, tmp_path / "v1.lsbundle")

    def fresh(name: str, edit: bool = True) -> BlueprintStore:
        s = stores(name)
        archive.import_bundle(s, tmp_path / "v1.lsbundle")
        if edit:  # changed on both sides (unedited, the bundle's version is an update)
            s.save(OLD, "steps:\n  - one\n  - here\n", id=x)
        return s

    src.move(x, "b/new")
    src.save("b/new", "steps:\n  - one\n  - two\n")
    bundle = tmp_path / "v2.lsbundle"
    archive.export_bundle(src, bundle)

    dst = fresh("skip")
    (it,) = archive.import_bundle(dst, bundle, on_conflict="skip").items
    assert (it.action, it.reason) == ("skip", "changed on both sides")
    assert dst.load(x).path == OLD

    dst = fresh("keep-both")
    (it,) = archive.import_bundle(dst, bundle, on_conflict="keep-both").items
    assert it.action == "keep-both" and it.target_path.startswith("b/new (import ")
    assert dst.load(x).path == OLD and dst.load(it.target_id).content.endswith("- two\n")

    dst = fresh("overwrite")
    (it,) = archive.import_bundle(dst, bundle, on_conflict="overwrite").items
    assert (it.action, dst.load(x).path) == ("overwrite", NEW)

    # Merge combines both sides: the merged text, at the path the source renamed it to (a path
    # this blueprint never had here), as sync does ("a side that renamed wins").
    dst = fresh("merge")
    (it,) = archive.import_bundle(
        dst, bundle, on_conflict="merge", merger=lambda base, mine, theirs: theirs
    ).items
    assert (it.action, it.target_path, it.status) == ("merge", NEW, "done")
    assert (dst.load(x).path, dst.load(x).content) == (NEW, "steps:\n  - one\n  - two\n")
    assert [r.path for r in dst.history(x)] == [NEW, OLD, OLD]

    # Not edited here: the bundle's version was made from this one, so it is taken, rename and all.
    dst = fresh("untouched", edit=False)
    (it,) = archive.import_bundle(dst, bundle).items
    assert (it.action, it.target_path, it.status) == ("update", NEW, "done")
    assert (dst.load(x).path, dst.load(x).content) == (NEW, "steps:\n  - one\n  - two\n")


def test_the_cli_plan_shows_the_move_and_a_blocked_move_needs_attention(
    renamed: Renamed, tmp_path: Path
) -> None:
    home = tmp_path / "dst"  # the fixture's home
    renamed.dst.close()

    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        r = CliRunner().invoke(cli, ["--home", str(home), *args], env={}, input=stdin)
        return r.exit_code, r.stdout, r.stderr

    code, out, err = run("import", str(renamed.v2), "--on-conflict", "keep-both", "--dry-run")
    assert code == 0, err
    assert out.split() == ["move", NEW, "(renamed", "from", f"{OLD})"]
    assert "would: 1 move" in err
    code, out, _ = run("--json", "import", str(renamed.v2), "--on-conflict", "keep-both")
    doc = json.loads(out)
    assert code == 0 and doc["counts"] == {"move": 1} and doc["changed"] == 1
    assert doc["items"][0]["target_path"] == NEW and doc["items"][0]["status"] == "done"

    # Another home, where a blueprint of its own holds b/new: the move cannot be applied.
    home = tmp_path / "other"
    assert run("import", str(renamed.v1))[0] == 0
    code, _, err = run("save", "b/new", "-f", "-", stdin="mine: here\n")
    assert code == 0, err
    code, out, err = run("import", str(renamed.v2))
    assert code == 3, (out, err)
    # (Not "{NEW} -> {OLD}": the blueprint stays where it is.)
    assert out.startswith(f"skip       {NEW}  (stays at {OLD} here; renamed to {NEW} in the bundle")
    assert "did: 1 skip" in err and "'localstore mv'" in err
    assert "import with --on-conflict" not in err  # no policy moves it


def test_a_move_does_not_overwrite_an_edit_made_after_the_plan(
    renamed: Renamed, monkeypatch: pytest.MonkeyPatch
) -> None:
    dst, x = renamed.dst, renamed.x
    orig = archive._check_yaml

    def check_then_edit(items: list[archive.ImportItem], store: BlueprintStore) -> None:
        orig(items, store)
        dst.save("a/old", "edited: after the plan\n", id=x)  # another writer, between the phases

    monkeypatch.setattr(archive, "_check_yaml", check_then_edit)
    result = archive.import_bundle(dst, renamed.v2)
    (item,) = result.items
    assert (item.action, item.status) == ("move", "failed") and result.failed == 1
    assert "revision 2, not 1" in item.error
    assert (dst.load(x).path, dst.load(x).content) == (OLD, "edited: after the plan\n")


def test_a_cycle_of_three_renames_is_named_and_finished_by_moving_one_aside(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    x = src.save("p/a", "who: X\n").id
    y = src.save("p/b", "who: Y\n").id
    z = src.save("p/c", "who: Z\n").id
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    dst = stores("dst")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    src.move(x, "p/t")
    src.move(z, "p/a")
    src.move(y, "p/c")
    src.move(x, "p/b")  # X -> b, Y -> c, Z -> a: each path is held here by the next
    archive.export_bundle(src, tmp_path / "v2.lsbundle")
    result = archive.import_bundle(dst, tmp_path / "v2.lsbundle")
    assert [i.action for i in result.items] == ["skip"] * 3
    assert all("the bundle moves 3 blueprints round with" in i.reason for i in result.items)
    dst.move(y, "p/aside")
    again = archive.import_bundle(dst, tmp_path / "v2.lsbundle")
    assert sorted(i.action for i in again.items) == ["move"] * 3
    assert [dst.load(i).path for i in (x, y, z)] == [f"p/{c}.blueprint.yaml" for c in "bca"]


def test_a_cycle_whose_member_stays_is_not_called_a_swap(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    x = src.save("p/one", "who: X\n").id
    y = src.save("p/two", "who: Y\n").id
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    dst = stores("dst")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    src.move(x, "p/tmp")
    src.move(y, "p/one")
    src.move(x, "p/two")
    archive.export_bundle(src, tmp_path / "v2.lsbundle")
    dst.save("p/two", "who: Y edited here\n", id=y)  # Y's content differs: no pure move
    result = archive.import_bundle(dst, tmp_path / "v2.lsbundle")
    reasons = {i.id: i.reason for i in result.items}
    # Moving X aside would not let Y move (Y is a content conflict, skipped): no such advice.
    assert reasons[x] == f"renamed to p/two.blueprint.yaml in the bundle, a path {y} holds here"
