"""A bundle unzipped and zipped again on a desktop holds the files its file manager left in the
folders (Finder's ``.DS_Store``, ``._*`` AppleDouble files on disks that keep no Mac metadata,
Windows' ``Thumbs.db`` and ``desktop.ini``). Import refused it whole ("entry
'blueprints/personal/.DS_Store' is not listed in the manifest", exit 1); it now passes those
names by, says so, and still refuses any other unlisted file under ``blueprints/``, one that
could be a blueprint's above all."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from localstore import archive
from localstore.errors import BundleFormatError, BundleIntegrityError
from localstore.store import BlueprintStore
from tests.conftest import run_cli

from .conftest import StoreFactory

OS_FILES = {
    "blueprints/personal/.DS_Store": b"\x00\x00\x00\x01Bud1" + b"\x00" * 40,
    "blueprints/.DS_Store": b"\x00\x00\x00\x01Bud1",
    "blueprints/personal/Thumbs.db": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    "blueprints/personal/desktop.ini": b"[.ShellClassInfo]\r\nIconResource=x\r\n",
    "blueprints/Desktop.ini": b"[.ShellClassInfo]\r\n",
    "blueprints/personal/._plan": b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X",
}


def _exported(store: BlueprintStore, tmp_path: Path) -> dict[str, bytes]:
    store.save("personal/plan", "name: plan\n")
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(store, bundle)
    with zipfile.ZipFile(bundle) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _rezipped(tmp_path: Path, files: dict[str, bytes], extra: dict[str, bytes]) -> Path:
    """The bundle's files zipped again with ``extra`` among them (as a desktop zip tool does:
    deflated, in folder order, the metadata files beside the blueprints')."""
    out = tmp_path / "rezipped.lsbundle"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted({**files, **extra}.items()):
            zf.writestr(name, data)
    return out


def test_os_metadata_files_in_the_blueprint_folders_are_passed_by(
    stores: StoreFactory, tmp_path: Path
) -> None:
    files = _exported(stores("source"), tmp_path)
    bundle = _rezipped(tmp_path, files, OS_FILES)
    here = stores("here")
    result = archive.import_bundle(here, bundle)
    assert [(it.action, it.path) for it in result.items] == [
        ("create", "personal/plan.blueprint.yaml")
    ]
    assert here.load("personal/plan").content == "name: plan\n"
    assert result.ignored_entries == sorted(OS_FILES)
    assert result.to_dict()["ignored_entries"] == sorted(OS_FILES)
    # Nothing of them reaches the home.
    assert not list(here.paths.blueprints.rglob(".DS_Store"))
    assert not list(here.paths.blueprints.rglob("._*"))


@pytest.mark.parametrize(
    "name",
    [
        # An AppleDouble name that is a blueprint's file name too: the blueprint "._plan" could
        # be in it, so it is not passed by unseen.
        "blueprints/personal/._plan.blueprint.yaml",
        "blueprints/personal/._plan.blueprint.meta.json",
        "blueprints/personal/.DS_Store.blueprint.yaml",
        "blueprints/personal/other.blueprint.yaml",
        "blueprints/personal/x.DS_Store",
        "blueprints/personal/Thumbs.db.bak",
        "blueprints/personal/notes.txt",
    ],
)
def test_other_unlisted_files_are_refused_as_before(
    stores: StoreFactory, tmp_path: Path, name: str
) -> None:
    files = _exported(stores("source"), tmp_path)
    bundle = _rezipped(tmp_path, files, {name: b"name: slipped in\n"})
    with pytest.raises(BundleFormatError, match="is not listed in the manifest"):
        archive.import_bundle(stores("here"), bundle)


def test_a_listed_file_is_verified_whatever_else_is_passed_by(
    stores: StoreFactory, tmp_path: Path
) -> None:
    files = _exported(stores("source"), tmp_path)
    # Same size: only the hash tells.
    files["blueprints/personal/plan.blueprint.yaml"] = b"name: PLAN\n"
    bundle = _rezipped(tmp_path, files, OS_FILES)
    with pytest.raises(BundleIntegrityError, match=r"plan\.blueprint\.yaml' does not match"):
        archive.import_bundle(stores("here"), bundle)


def test_the_import_report_notes_the_files_passed_by(stores: StoreFactory, tmp_path: Path) -> None:
    files = _exported(stores("source"), tmp_path)
    bundle = _rezipped(tmp_path, files, OS_FILES)
    home = tmp_path / "cli-home"
    done = run_cli(home, "import", str(bundle))
    assert done.returncode == 0, done.stderr
    assert "create     personal/plan.blueprint.yaml" in done.stdout
    assert (
        f"note: {len(OS_FILES)} file(s) a file manager leaves in folders were passed by: "
        "blueprints/.DS_Store, " in done.stderr
    )
    dry = run_cli(home, "--json", "import", "--dry-run", str(bundle))
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["ignored_entries"] == sorted(OS_FILES)
    assert any("file manager" in note for note in report["notes"])
