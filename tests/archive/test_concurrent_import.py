"""Two imports of one bundle at once: the one that loses the race reports what the other did,
not failures (the store ends up exactly as the bundle says)."""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from localstore import archive
from localstore.archive import ImportItem
from localstore.store import BlueprintStore
from tests.archive.conftest import StoreFactory, tree


def test_the_same_bundle_imported_twice_at_once_fails_nothing(
    stores: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = stores("src")
    ids = [src.save(f"p/x{i}", f"v: {i}\n").id for i in range(3)]
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    dst = stores("dst")
    dst.save("p/x0", "v: here\n", id=ids[0])  # a conflict: a keep-both copy
    orig = archive._check_yaml

    def other_import_first(items: list[ImportItem], store: BlueprintStore) -> None:
        # Another process imports the same bundle once this one has planned (forces the race).
        orig(items, store)
        monkeypatch.setattr(archive, "_check_yaml", orig)
        with localstore.open(home=tmp_path / "dst") as other:
            done = archive.import_bundle(other, bundle, on_conflict="keep-both")
        assert done.counts() == {"create": 2, "keep-both": 1}

    monkeypatch.setattr(archive, "_check_yaml", other_import_first)
    result = archive.import_bundle(dst, bundle, on_conflict="keep-both")
    # Before: all three "failed" ("is at revision 1, not 0 (load it again and reapply your
    # change)"), exit code 1, though the store held exactly what they would have saved.
    assert [(i.action, i.status) for i in result.items] == [("unchanged", "done")] * 3
    assert result.failed == 0 and result.changed == 0
    assert result.items[0].reason.startswith("already imported as ")
    assert dst.count() == 4
    mine, theirs = tree(dst), tree(src)
    for name in ("p/x1.blueprint.yaml", "p/x1.blueprint.meta.json", "p/x2.blueprint.yaml"):
        assert mine[name] == theirs[name]
