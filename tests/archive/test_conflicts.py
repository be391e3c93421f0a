"""Conflict policies on import, idempotence shown by history, dry runs, tombstones and events."""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore import archive
from localstore._cli_bundle import _sync_merger
from localstore.errors import BundleFormatError, BundleLimitError
from localstore.events import Event
from localstore.store import BlueprintStore

from . import zipcraft as z
from .conftest import StoreFactory, tree

BASE = "# shared\nname: demo\nsteps:\n  - id: a\n    run: one\n"
LOCAL = BASE.replace("name: demo\n", "name: demo\nlocal: added here\n")
REMOTE = BASE.replace("run: one", "run: two")


def _histories(store: BlueprintStore) -> dict[str, list[int]]:
    return {i.id: [r.rev for r in store.history(i.id)] for i in store.list()}


@pytest.fixture
def diverged(stores: StoreFactory, tmp_path: Path) -> tuple[BlueprintStore, str, Path, Path]:
    """dst imported v1 of a blueprint and edited it; src edited it differently and exported v2."""
    src = stores("src")
    bp = src.save("team/flow", BASE, tags=["a"])
    v1 = tmp_path / "v1.lsbundle"
    archive.export_bundle(src, v1)
    dst = stores("dst")
    archive.import_bundle(dst, v1)
    dst.save("team/flow", LOCAL)
    src.save("team/flow", REMOTE, tags=["a", "b"])
    v2 = tmp_path / "v2.lsbundle"
    archive.export_bundle(src, v2)
    return dst, bp.id, v1, v2


def test_skip_leaves_the_local_version(diverged: tuple[BlueprintStore, str, Path, Path]) -> None:
    dst, bp_id, _, v2 = diverged
    before = _histories(dst)
    result = archive.import_bundle(dst, v2, on_conflict="skip")
    assert [(i.action, i.reason) for i in result.items] == [("skip", "changed on both sides")]
    assert result.conflicts_skipped == 1 and result.changed == 0
    assert dst.load(bp_id).content == LOCAL and _histories(dst) == before


def test_overwrite_replaces_and_history_keeps_the_old(
    diverged: tuple[BlueprintStore, str, Path, Path],
) -> None:
    dst, bp_id, _, v2 = diverged
    result = archive.import_bundle(dst, v2, on_conflict="overwrite")
    assert [i.action for i in result.items] == ["overwrite"]
    bp = dst.load(bp_id)
    assert bp.content == REMOTE and bp.meta.tags == ("a", "b") and bp.rev == 3
    assert [r.origin for r in dst.history(bp_id)] == ["import", "local", "import"]
    assert dst.load_revision(bp_id, 2).content == LOCAL
    again = archive.import_bundle(dst, v2, on_conflict="overwrite")
    assert [i.action for i in again.items] == ["unchanged"] and dst.load(bp_id).rev == 3


def test_keep_both_makes_a_named_copy_once(
    diverged: tuple[BlueprintStore, str, Path, Path],
) -> None:
    dst, bp_id, _, v2 = diverged
    result = archive.import_bundle(dst, v2, on_conflict="keep-both")
    (item,) = result.items
    assert item.action == "keep-both" and item.target_id != bp_id
    copy = dst.load(item.target_id)
    assert copy.content == REMOTE
    assert copy.name.startswith("flow (import ") and copy.name.endswith("Z)")
    assert copy.path.startswith("team/flow (import ") and copy.path != "team/flow.blueprint.yaml"
    assert dst.load(bp_id).content == LOCAL
    before, files = _histories(dst), tree(dst)
    again = archive.import_bundle(dst, v2, on_conflict="keep-both")
    assert [(i.action, i.target_id) for i in again.items] == [("unchanged", item.target_id)]
    assert _histories(dst) == before and tree(dst) == files and dst.count() == 2


def test_merge_uses_the_given_merger(diverged: tuple[BlueprintStore, str, Path, Path]) -> None:
    dst, bp_id, _, v2 = diverged
    merger = _sync_merger()
    assert merger is not None, "the sync package ships with localstore's distribution"

    def with_base(base: str | None, local: str, incoming: str) -> str | None:
        # Give the ladder the common ancestor this test knows, as sync would.
        return merger(BASE, local, incoming)

    result = archive.import_bundle(dst, v2, on_conflict="merge", merger=with_base)
    assert [i.action for i in result.items] == ["merge"]
    merged = dst.load(bp_id)
    assert "run: two" in merged.content and "local: added here" in merged.content
    assert merged.content.startswith("# shared\n")  # the line merge keeps comments
    assert set(merged.meta.tags) == {"a", "b"}
    assert dst.history(bp_id)[0].origin == "import"
    before = _histories(dst)
    again = archive.import_bundle(dst, v2, on_conflict="merge", merger=with_base)
    assert [i.action for i in again.items] == ["unchanged"] and _histories(dst) == before


def test_merge_falls_back_to_keep_both(diverged: tuple[BlueprintStore, str, Path, Path]) -> None:
    dst, _, _, v2 = diverged
    refused = archive.import_bundle(
        dst, v2, on_conflict="merge", merger=lambda base, mine, theirs: None, dry_run=True
    )
    assert [(i.action, i.reason) for i in refused.items] == [
        ("keep-both", "changed on both sides; merge not clean")
    ]
    result = archive.import_bundle(dst, v2, on_conflict="merge")
    assert [(i.action, i.reason) for i in result.items] == [
        ("keep-both", "changed on both sides; no merger available")
    ]
    assert dst.count() == 2


def test_an_older_version_from_a_bundle_changes_nothing(
    diverged: tuple[BlueprintStore, str, Path, Path],
) -> None:
    dst, bp_id, v1, _ = diverged
    before = _histories(dst)
    for policy in ("skip", "keep-both", "merge"):
        result = archive.import_bundle(dst, v1, on_conflict=policy)
        assert [(i.action, i.reason) for i in result.items] == [
            ("unchanged", "this version is already in history")
        ]
    assert _histories(dst) == before and dst.load(bp_id).content == LOCAL


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_repeated_import_is_a_no_op(stores: StoreFactory, tmp_path: Path, policy: str) -> None:
    src = stores("src")
    for i in range(6):
        src.save(f"f/bp-{i}", f"n: {i}\n")
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    dst = stores("dst")
    dst.save("f/bp-0", "n: other\n")  # a path conflict with another id
    archive.import_bundle(dst, bundle, on_conflict=policy)
    before, files = _histories(dst), tree(dst)
    events: list[Event] = []
    dst.subscribe(events.append)
    again = archive.import_bundle(dst, bundle, on_conflict=policy)
    assert again.changed == 0
    assert _histories(dst) == before and tree(dst) == files and events == []


def test_path_conflict_policies(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    incoming = src.save("f/same", "from: bundle\n")
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)

    def fresh(name: str) -> tuple[BlueprintStore, str]:
        s = stores(name)
        return s, s.save("f/same", "from: here\n").id

    dst, mine = fresh("skip")
    (it,) = archive.import_bundle(dst, bundle, on_conflict="skip").items
    assert (it.action, it.reason) == ("skip", f"path taken by {mine}")

    dst, mine = fresh("over")
    (it,) = archive.import_bundle(dst, bundle, on_conflict="overwrite").items
    assert it.action == "overwrite" and it.target_id == mine
    assert dst.load(mine).content == "from: bundle\n" and not dst.exists(incoming.id)

    dst, mine = fresh("both")
    (it,) = archive.import_bundle(dst, bundle, on_conflict="keep-both").items
    assert it.action == "keep-both" and dst.load(mine).content == "from: here\n"
    assert dst.load(it.target_id).content == "from: bundle\n"


def test_tombstones(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    bp = src.save("f/x", "v: 1\n")
    v1 = tmp_path / "v1.lsbundle"
    archive.export_bundle(src, v1)
    src.save("f/x", "v: 2\n")
    v2 = tmp_path / "v2.lsbundle"
    archive.export_bundle(src, v2)
    dst = stores("dst")
    archive.import_bundle(dst, v1)
    dst.delete(bp.id)
    # The version deleted here comes back only when asked to overwrite.
    assert [i.reason for i in archive.import_bundle(dst, v1).items] == ["deleted here"]
    assert not dst.exists(bp.id)
    # A newer version than the deleted one: an edit beats a delete, except under skip.
    assert [i.action for i in archive.import_bundle(dst, v2, on_conflict="skip").items] == ["skip"]
    (it,) = archive.import_bundle(dst, v2, on_conflict="keep-both").items
    assert it.action == "restore" and dst.load(bp.id).content == "v: 2\n"
    dst.delete(bp.id)
    (it,) = archive.import_bundle(dst, v1, on_conflict="overwrite").items
    assert it.action == "restore" and dst.load(bp.id).content == "v: 1\n"


def test_dry_run_prints_the_plan_and_changes_nothing(
    diverged: tuple[BlueprintStore, str, Path, Path], stores: StoreFactory
) -> None:
    dst, _, _, v2 = diverged
    before, files = _histories(dst), tree(dst)
    plan = archive.import_bundle(dst, v2, on_conflict="keep-both", dry_run=True)
    assert plan.dry_run and [(i.action, i.status) for i in plan.items] == [("keep-both", "planned")]
    assert _histories(dst) == before and tree(dst) == files
    doc = plan.to_dict()
    assert doc["counts"] == {"keep-both": 1} and doc["bundle"]["count"] == 1


def test_import_goes_through_the_save_path(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    src.save("f/a", "a: 1\n")
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    dst = stores("dst")
    events: list[Event] = []
    dst.subscribe(events.append)
    archive.import_bundle(dst, bundle)
    assert [(e.kind, e.origin) for e in events] == [("created", "import")]
    row = dst.row("f/a")
    assert row.op_id > 0 and row.rev == 1  # the sync outbox follows op ids


def test_unknown_policy_is_refused(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    src.save("f/a", "a: 1\n")
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    from localstore.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        archive.import_bundle(stores("dst"), bundle, on_conflict="prefer-mine")


_ALIAS_BOMB = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'x'] * 10)}]\n" for i in range(10)
).encode()


@pytest.mark.parametrize(
    ("yaml", "error"),
    [
        (b"name: demo\nrun: \xff\xfe\n", BundleFormatError),  # raised UnicodeDecodeError
        (b"- a list\n- not a mapping\n", BundleFormatError),
        (_ALIAS_BOMB, BundleLimitError),  # ten levels of ten: 10**10 nodes if expanded
    ],
)
def test_merge_checks_the_bundle_yaml_before_the_merger_sees_it(
    stores: StoreFactory, tmp_path: Path, yaml: bytes, error: type[Exception]
) -> None:
    # A crafted bundle with a blueprint in conflict here: under merge its YAML went to the
    # merger unchecked (the plan's check covers only what is saved as the bundle has it).
    dst = stores("dst")
    bp = dst.save("team/flow", LOCAL)
    crafted = z.Blueprint("team/flow.blueprint.yaml", yaml=yaml, id=bp.id)
    bundle = tmp_path / "crafted.lsbundle"
    bundle.write_bytes(z.build(z.bundle_entries([crafted])))
    seen: list[str] = []

    def merger(base: str | None, local: str, incoming: str) -> str | None:
        seen.append(incoming)
        return None

    before = tree(dst)
    with pytest.raises(error, match="team/flow"):
        archive.import_bundle(dst, bundle, on_conflict="merge", merger=merger)
    assert seen == [] and tree(dst) == before
