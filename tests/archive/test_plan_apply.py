"""What happens between an import's plan and its apply, and what the plan must already know:
another writer's save is never overwritten unseen, and paths the store refuses are refused in the
plan (so a dry run shows them and nothing is half imported)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from localstore import archive
from localstore import files as fs
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


@pytest.mark.parametrize(("saves", "want"), [(1, ("v: 2\n", "name 2")), (99, ("v: 1\n", "name 1"))])
def test_export_never_pairs_one_revision_yaml_with_another_meta(
    stores: StoreFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    saves: int,
    want: tuple[str, str],
) -> None:
    store = stores("h")
    bp = store.save("p/x", "v: 1\n", name="name 1")
    orig = fs.read_bytes
    done: list[int] = []

    def read_bytes(path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> bytes:
        # Another writer saves between the index read (meta) and the YAML read: once, or on every
        # read (the blueprint keeps changing; export then takes the revision it first saw).
        if str(path).endswith("x.blueprint.yaml") and len(done) < saves:
            done.append(1)
            with monkeypatch.context() as m:
                m.setattr(fs, "read_bytes", orig)
                n = len(done) + 1
                store.save("p/x", f"v: {n}\n", name=f"name {n}")
        return orig(path, *args, **kwargs)

    monkeypatch.setattr(fs, "read_bytes", read_bytes)
    archive.export_bundle(store, tmp_path / "b.lsbundle")
    monkeypatch.setattr(fs, "read_bytes", orig)
    with zipfile.ZipFile(tmp_path / "b.lsbundle") as zf:
        yaml_text = zf.read("blueprints/p/x.blueprint.yaml").decode()
        meta = json.loads(zf.read("blueprints/p/x.blueprint.meta.json"))
    assert (yaml_text, meta["name"]) == want and meta["id"] == bp.id
    # The bundle imports cleanly: its hashes and the pair agree.
    dst = stores("dst")
    (item,) = archive.import_bundle(dst, tmp_path / "b.lsbundle").items
    assert item.status == "done" and dst.load(bp.id).content == want[0]
