"""What happens between an import's plan and its apply, and what the plan must already know:
another writer's save is never overwritten unseen, and paths the store refuses are refused in the
plan (so a dry run shows them and nothing is half imported)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore import archive
from localstore.archive import ImportItem
from localstore.store import BlueprintStore

from .conftest import StoreFactory


def _between_plan_and_apply(monkeypatch: pytest.MonkeyPatch, action: object) -> None:
    """Run ``action`` after the plan is made and before anything is applied (forces the race)."""
    orig = archive._check_yaml

    def check_then_race(items: list[ImportItem], store: BlueprintStore) -> None:
        orig(items, store)
        action()  # type: ignore[operator]

    monkeypatch.setattr(archive, "_check_yaml", check_then_race)


@pytest.mark.parametrize("policy", ["skip", "overwrite", "keep-both"])
def test_a_create_does_not_overwrite_a_save_made_after_the_plan(
    stores: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    src = stores("src")
    bp = src.save("p/x", "v: bundle\n", name="x")
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    dst = stores("dst")
    # Another writer (a sync pull, say) saves the same blueprint once the plan said "create".
    _between_plan_and_apply(
        monkeypatch, lambda: dst.save("p/x", "v: newer\n", id=bp.id, origin="remote")
    )
    result = archive.import_bundle(dst, bundle, on_conflict=policy)
    (item,) = result.items
    assert (item.action, item.status) == ("create", "failed")
    assert "revision 1, not 0" in item.error and result.failed == 1
    assert dst.load(bp.id).content == "v: newer\n"
    assert [r.origin for r in dst.history(bp.id)] == ["remote"]
