"""A blueprint saved somewhere else than its path in the bundle says why."""

from __future__ import annotations

from pathlib import Path

from localstore import archive
from tests.archive.conftest import StoreFactory


def test_an_overwrite_or_restore_away_from_the_bundle_path_names_the_holder(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    x = src.save("p/old", "v: 1\n").id
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    dst = stores("dst")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    dst.save("p/old", "v: 1, edited here\n", id=x)  # (unedited, v2 would be an update)
    src.move(x, "p/new")
    src.save("p/new", "v: 2\n", id=x)  # renamed and edited at the source
    archive.export_bundle(src, tmp_path / "v2.lsbundle")
    holder = dst.save("p/new", "other: 1\n").id  # its new path is taken here
    why = f"not at p/new.blueprint.yaml: {holder} holds it here"
    # Before: no reason, though the bundle's rename was not carried out.
    (item,) = archive.import_bundle(dst, tmp_path / "v2.lsbundle", on_conflict="overwrite").items
    assert (item.action, item.target_path, item.reason) == (
        "overwrite",
        "p/old.blueprint.yaml",
        why,
    )
    src.save("p/new", "v: 3\n", id=x)
    archive.export_bundle(src, tmp_path / "v3.lsbundle")
    src.save("p/new", "v: 4\n", id=x)
    archive.export_bundle(src, tmp_path / "v4.lsbundle")
    # Made from the version here (v3 imported above, not edited since): an update under every
    # policy, which names the holder too.
    archive.import_bundle(dst, tmp_path / "v3.lsbundle", on_conflict="overwrite")
    (item,) = archive.import_bundle(dst, tmp_path / "v4.lsbundle").items
    assert (item.action, item.target_path, item.reason) == (
        "update",
        "p/old.blueprint.yaml",
        f"made from the version here; {why}",
    )
    src.save("p/new", "v: 5\n", id=x)
    archive.export_bundle(src, tmp_path / "v5.lsbundle")
    dst.delete(x)
    (item,) = archive.import_bundle(dst, tmp_path / "v5.lsbundle", on_conflict="keep-both").items
    assert (item.action, item.reason) == ("restore", why)
    assert item.target_path.startswith("p/new (import ")
