"""What import says of a bundle another zip tool rewrote in a way it cannot read: which method,
which folder, and what to do (the messages were "uses compression method 12" and "the bundle has
no manifest.json (is it a .lsbundle?)")."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from localstore import archive
from localstore.errors import BundleFormatError
from localstore.store import BlueprintStore

from .conftest import StoreFactory


def _exported(store: BlueprintStore, tmp_path: Path) -> dict[str, bytes]:
    store.save("personal/plan", "name: plan\n")
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(store, bundle)
    with zipfile.ZipFile(bundle) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


@pytest.mark.parametrize(("method", "name"), [(zipfile.ZIP_BZIP2, "bzip2"), (14, "LZMA")])
def test_another_compression_method_is_named_with_the_way_out(
    stores: StoreFactory, tmp_path: Path, method: int, name: str
) -> None:
    files = _exported(stores("source"), tmp_path)
    rezipped = tmp_path / "rezipped.lsbundle"
    with zipfile.ZipFile(rezipped, "w", method) as zf:
        for entry, data in files.items():
            zf.writestr(entry, data)
    with pytest.raises(BundleFormatError, match=f"compressed with {name}") as caught:
        archive.import_bundle(stores("here"), rezipped)
    assert "Deflate" in caught.value.hint


def test_a_bundle_zipped_as_its_folder_says_so(stores: StoreFactory, tmp_path: Path) -> None:
    files = _exported(stores("source"), tmp_path)
    rezipped = tmp_path / "b.zip"
    with zipfile.ZipFile(rezipped, "w", zipfile.ZIP_DEFLATED) as zf:
        for entry, data in files.items():
            zf.writestr("b/" + entry, data)
    with pytest.raises(BundleFormatError, match="its folder 'b' holds one") as caught:
        archive.import_bundle(stores("here"), rezipped)
    assert "not the folder" in caught.value.hint
