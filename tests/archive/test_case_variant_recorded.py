"""A bundle path that differs only by case from a blueprint recorded here: save and import answer
it differently, by design (docs/bundle-format.md section 6, docs/cli.md). A save has no policy and
refuses; an import takes it for a path conflict its --on-conflict decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore import archive
from localstore.errors import UnsafePathError

from .conftest import StoreFactory

HERE = "personal/Plan"
THEIRS = "personal/plan"
MINE, BUNDLED = "steps: [mine]\n", "steps: [theirs]\n"


@pytest.fixture
def bundle(stores: StoreFactory, tmp_path: Path) -> Path:
    src = stores("src")
    src.save(THEIRS, BUNDLED)
    out = tmp_path / "b.lsbundle"
    archive.export_bundle(src, out)
    return out


def test_save_refuses_the_case_variant_of_a_recorded_path(stores: StoreFactory) -> None:
    here = stores("here")
    here.save(HERE, MINE)
    with pytest.raises(UnsafePathError, match="differs only by case from personal/Plan"):
        here.save(THEIRS, BUNDLED)
    assert [b.path for b in here.list()] == [f"{HERE}.blueprint.yaml"]


@pytest.mark.parametrize(
    ("policy", "action", "content"),
    [("skip", "skip", MINE), ("overwrite", "overwrite", BUNDLED)],
)
def test_import_takes_it_for_a_path_conflict_its_policy_decides(
    stores: StoreFactory, bundle: Path, policy: str, action: str, content: str
) -> None:
    here = stores("here")
    mine = here.save(HERE, MINE)
    [item] = archive.import_bundle(here, bundle, on_conflict=policy).items
    assert item.action == action and "path taken by " + mine.id in item.reason, item
    [bp] = here.list()
    assert (bp.id, bp.path) == (mine.id, f"{HERE}.blueprint.yaml")  # (its own path's case)
    assert here.load(bp.id).content == content


@pytest.mark.parametrize("policy", ["keep-both", "merge"])
def test_a_copy_put_aside_goes_into_the_recorded_folders_spelling(
    stores: StoreFactory, tmp_path: Path, policy: str
) -> None:
    """The copy's path took the bundle's folder case (``Team/Sub/flow (import ...)`` beside a
    recorded ``team/sub/``): refused as a new folder that differs only by case, the blueprint
    was not imported at all under the policy meant to keep both."""
    src = stores("src")
    src.save("Team/Sub/flow", BUNDLED)
    out = tmp_path / "folder-case.lsbundle"
    archive.export_bundle(src, out)
    here = stores("here")
    mine = here.save("team/sub/flow", MINE)
    [planned] = archive.import_bundle(here, out, on_conflict=policy, dry_run=True).items
    [item] = archive.import_bundle(here, out, on_conflict=policy).items
    for it in (planned, item):
        assert it.action == "keep-both" and it.status != "failed", it
        assert it.target_path.startswith("team/sub/flow (import "), it
    assert sorted(b.path.split(" ")[0] for b in here.list()) == [
        "team/sub/flow",
        "team/sub/flow.blueprint.yaml",
    ]
    assert here.load(mine.id).content == MINE
    assert here.load(item.target_id).content == BUNDLED
    assert [p.name for p in here.paths.blueprints.iterdir() if not p.name.startswith(".")] == [
        "team"
    ]
    assert here.reconcile().clean
