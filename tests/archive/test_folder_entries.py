"""Folder entries are ignored (docs/bundle-format.md, section 2), whatever else names the folder.

A bundle unpacked on Linux and zipped again with ``zip -r`` holds a folder entry for every folder
of the tree, an empty one too: two folders whose names differ by case (``Team/`` beside an empty
``team/``) gave two folder entries with one key, and the whole bundle was refused ("entry
'blueprints/team' appears as 'blueprints/Team' too"), as was a folder entry written twice. No
folder entry ever becomes a folder here, so two naming one folder say nothing a reader uses; a
file and a folder, or two files, with one key are refused as before.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from localstore import archive
from localstore.errors import BundleFormatError, UnsafeBundleError
from localstore.store import BlueprintStore

from . import zipcraft as z
from .conftest import StoreFactory

FOLDER = stat.S_IFDIR | 0o755


def _exported(store: BlueprintStore, tmp_path: Path) -> list[z.RawEntry]:
    store.save("Team/plan", "name: plan\n")
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(store, bundle)
    with zipfile.ZipFile(bundle) as zf:
        return [z.RawEntry(i.filename.encode(), zf.read(i)) for i in zf.infolist()]


def _folder(name: str) -> z.RawEntry:
    return z.RawEntry(name.encode(), b"", mode=FOLDER)


@pytest.mark.parametrize(
    "folders",
    [
        # zip -r of a tree holding an empty team/ beside Team/ (a Linux disk keeps both).
        ["blueprints/", "blueprints/Team/", "blueprints/team/"],
        # One folder entry written twice (a zip appended to, as zipfile's "a" mode does).
        ["blueprints/", "blueprints/Team/", "blueprints/Team/"],
    ],
)
def test_folder_entries_naming_one_folder_are_ignored(
    stores: StoreFactory, tmp_path: Path, folders: list[str]
) -> None:
    files = _exported(stores("source"), tmp_path)
    bundle = tmp_path / "rezipped.lsbundle"
    bundle.write_bytes(z.build([_folder(n) for n in folders] + files))
    here = stores("here")
    result = archive.import_bundle(here, bundle)
    assert [(it.action, it.path) for it in result.items] == [("create", "Team/plan.blueprint.yaml")]
    assert here.load("Team/plan").content == "name: plan\n"


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        # A file and a folder with one key (one name on macOS and Windows): refused as before.
        ([z.RawEntry(b"blueprints/team", b"x"), _folder("blueprints/Team/")], UnsafeBundleError),
        ([_folder("blueprints/Team/"), z.RawEntry(b"blueprints/TEAM", b"x")], UnsafeBundleError),
        # A folder entry named as a listed file does not stand in for it.
        ([_folder("blueprints/Team/plan.blueprint.yaml/")], UnsafeBundleError),
    ],
)
def test_a_folder_and_a_file_with_one_name_are_still_refused(
    stores: StoreFactory, tmp_path: Path, extra: list[z.RawEntry], error: type[Exception]
) -> None:
    files = _exported(stores("source"), tmp_path)
    bundle = tmp_path / "mixed.lsbundle"
    bundle.write_bytes(z.build([*extra, *files]))
    with pytest.raises(error, match="appears"):
        archive.import_bundle(stores("here"), bundle)


# The MS-DOS attributes in the low byte of a zip entry's external attributes: 0x10 is a folder.
DOS_FOLDER = 0x10


def test_a_folder_entry_marked_only_by_its_dos_attribute_is_ignored(
    stores: StoreFactory, tmp_path: Path
) -> None:
    """Some Windows zip tools write a folder as an entry with no trailing '/' and no unix mode,
    only the DOS directory attribute: it was read as a file ("entry 'blueprints/Team' is not
    listed in the manifest")."""
    files = _exported(stores("source"), tmp_path)
    folders = [
        z.RawEntry(name, b"", mode=0, system=0, dos_attr=DOS_FOLDER)
        for name in (b"blueprints", b"blueprints/Team")
    ]
    bundle = tmp_path / "windows.lsbundle"
    bundle.write_bytes(z.build(folders + files))
    here = stores("here")
    result = archive.import_bundle(here, bundle)
    assert [(it.action, it.path) for it in result.items] == [("create", "Team/plan.blueprint.yaml")]
    assert result.ignored_entries == []


def test_a_dos_folder_entry_with_content_or_a_file_name_is_refused(
    stores: StoreFactory, tmp_path: Path
) -> None:
    files = _exported(stores("source"), tmp_path)
    with_content = z.RawEntry(b"blueprints/Team", b"name: x\n", mode=0, system=0, dos_attr=0x10)
    bundle = tmp_path / "content.lsbundle"
    bundle.write_bytes(z.build([with_content, *files]))
    with pytest.raises(UnsafeBundleError, match="folder entry 'blueprints/Team' has content"):
        archive.import_bundle(stores("here"), bundle)
    # A listed file's entry marked as a folder is no file: the bundle lacks that file.
    marked = [
        z.RawEntry(e.name, b"", mode=0, system=0, dos_attr=0x10)
        if e.name.endswith(b".blueprint.yaml")
        else e
        for e in files
    ]
    bundle.write_bytes(z.build(marked))
    with pytest.raises(BundleFormatError, match="the bundle lacks"):
        archive.import_bundle(stores("there"), bundle)
