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
