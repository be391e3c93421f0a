"""A bundle unzipped and zipped again on a desktop holds the files its file manager left in the
folders (Finder's ``.DS_Store``, ``._*`` AppleDouble files on disks that keep no Mac metadata,
Windows' ``Thumbs.db`` and ``desktop.ini``). Import refused it whole ("entry
'blueprints/personal/.DS_Store' is not listed in the manifest", exit 1); it now passes those
names by, says so, and still refuses any other unlisted file under ``blueprints/``, one that
could be a blueprint's above all."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest

from localstore import archive
from localstore import files as fs
from localstore.errors import (
    BundleFormatError,
    BundleIntegrityError,
    BundleLimitError,
    UnsafeBundleError,
)
from localstore.store import BlueprintStore
from tests.conftest import run_cli

from . import zipcraft as z
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


# The AppleDouble file a Mac writes for a file's extended attributes (quarantine, Finder info):
# magic 0x00051607, version 2, filler, then its entries (here one Finder info entry, empty).
APPLE_DOUBLE = (
    b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x01"
    b"\x00\x00\x00\x09\x00\x00\x00\x32\x00\x00\x00\x20" + b"\x00" * 32
)


def _finder_zip(files: dict[str, bytes], *, apple_double_in: str) -> bytes:
    """The bundle's files zipped as macOS's Archive Utility does: folder entries, sizes in data
    descriptors, UTF-8 names without the flag, and an AppleDouble ``._`` file for every file and
    folder, under ``__MACOSX/`` or (a bundle unpacked onto a FAT stick or an SMB share and zipped
    from there) beside it."""
    names = set(files)
    for name in files:
        parts = name.split("/")[:-1]
        names.update("/".join(parts[: i + 1]) + "/" for i in range(len(parts)))
    entries = []
    for name in sorted(names):
        folder = name.endswith("/")
        mode = (stat.S_IFDIR | 0o755) if folder else (stat.S_IFREG | 0o644)
        data = b"" if folder else files[name]
        entries.append(z.RawEntry(name.encode(), data, mode=mode, flags=0, descriptor=True))
        parent, _, base = name.rstrip("/").rpartition("/")
        double = f"{parent}/._{base}" if parent else f"._{base}"
        prefix = "__MACOSX/" if apple_double_in == "__MACOSX" else ""
        entries.append(
            z.RawEntry(f"{prefix}{double}".encode(), APPLE_DOUBLE, flags=0, descriptor=True)
        )
    return z.build(entries)


@pytest.mark.parametrize("apple_double_in", ["beside", "__MACOSX"])
def test_a_bundle_zipped_on_a_mac_imports_past_its_apple_double_files(
    stores: StoreFactory, tmp_path: Path, apple_double_in: str
) -> None:
    files = _exported(stores("source"), tmp_path)
    bundle = tmp_path / "mac.lsbundle"
    bundle.write_bytes(_finder_zip(files, apple_double_in=apple_double_in))
    here = stores("here")
    result = archive.import_bundle(here, bundle)
    assert [(it.action, it.path) for it in result.items] == [
        ("create", "personal/plan.blueprint.yaml")
    ]
    assert here.load("personal/plan").content == "name: plan\n"
    prefix = "__MACOSX/" if apple_double_in == "__MACOSX" else ""
    assert result.ignored_entries == sorted(
        f"{prefix}{n}"
        for n in (
            "._blueprints",
            "._manifest.json",
            "blueprints/._personal",
            "blueprints/personal/._plan.blueprint.meta.json",
            "blueprints/personal/._plan.blueprint.yaml",
        )
        if prefix or n.startswith("blueprints/")
    )
    assert not list(here.paths.blueprints.rglob("._*"))
    assert here.count() == 1


def test_the_cli_imports_a_mac_zip_and_notes_its_apple_double_files(
    stores: StoreFactory, tmp_path: Path
) -> None:
    files = _exported(stores("source"), tmp_path)
    bundle = tmp_path / "mac.lsbundle"
    bundle.write_bytes(_finder_zip(files, apple_double_in="beside"))
    done = run_cli(tmp_path / "cli-home", "import", str(bundle))
    assert done.returncode == 0, done.stderr
    assert "create     personal/plan.blueprint.yaml" in done.stdout
    assert "blueprints/personal/._plan.blueprint.meta.json" in done.stderr
    assert "file manager leaves in folders were passed by" in done.stderr


# A folder with a custom icon holds Finder's "Icon\r" file (the icon in its resource fork, zero
# bytes of data) and, on a disk without Mac metadata, its AppleDouble "._Icon\r"; KDE's Dolphin
# keeps a folder's view settings and icon in ".directory".
DESKTOP_FILES = {
    "blueprints/personal/Icon\r": b"",
    "blueprints/personal/._Icon\r": APPLE_DOUBLE,
    "blueprints/Icon\r": b"",
    "blueprints/personal/.directory": b"[Desktop Entry]\nIcon=folder-blue\n",
    "blueprints/.Directory": b"[Dolphin]\nViewMode=1\n",
}


def test_finder_icon_and_kde_directory_files_are_passed_by(
    stores: StoreFactory, tmp_path: Path
) -> None:
    """Finder's ``Icon\\r`` was refused as a control character in a name, KDE's ``.directory``
    as an unlisted file: a bundle unzipped into a folder given a custom icon, or browsed with
    Dolphin, and zipped again could not be imported."""
    files = _exported(stores("source"), tmp_path)
    # At the top too (the unpacked bundle's own folder had the icon): outside blueprints/, where
    # every entry is ignored, but each name is checked all the same.
    bundle = _rezipped(tmp_path, files, {**DESKTOP_FILES, "Icon\r": b"", "__MACOSX/._Icon\r": b""})
    here = stores("here")
    result = archive.import_bundle(here, bundle)
    assert [(it.action, it.path) for it in result.items] == [
        ("create", "personal/plan.blueprint.yaml")
    ]
    assert result.ignored_entries == sorted([*DESKTOP_FILES, "__MACOSX/._Icon\r"])
    assert sorted(p.name for p in here.paths.blueprints.rglob("*") if p.is_file()) == [
        ".localstore-folder",
        "plan.blueprint.meta.json",
        "plan.blueprint.yaml",
    ]


@pytest.mark.parametrize(
    "name",
    [
        "blueprints/personal/Icon\r.blueprint.yaml",  # a blueprint's file: never passed by so
        "blueprints/personal/Icon\rx",
        "blueprints/personal/My Icon\r",
        "blueprints/personal/Icon\n",
        "blueprints/personal/Icon\r/plan",  # a folder of that name is no Finder file
    ],
)
def test_other_names_with_control_characters_are_refused_as_before(
    stores: StoreFactory, tmp_path: Path, name: str
) -> None:
    files = _exported(stores("source"), tmp_path)
    bundle = _rezipped(tmp_path, files, {name: b""})
    with pytest.raises(UnsafeBundleError, match="control character"):
        archive.import_bundle(stores("here"), bundle)


def test_the_note_shows_the_icon_file_name_escaped(stores: StoreFactory, tmp_path: Path) -> None:
    """A carriage return written as it is sends the terminal's cursor back to the line's start,
    and the rest of the note overwrote its beginning."""
    files = _exported(stores("source"), tmp_path)
    bundle = _rezipped(tmp_path, files, {"blueprints/personal/Icon\r": b""})
    done = run_cli(tmp_path / "cli-home", "import", str(bundle))
    assert done.returncode == 0, done.stderr
    assert "passed by: blueprints/personal/Icon\\r (the bundle" in done.stderr
    assert "\r" not in done.stderr
    listed = run_cli(tmp_path / "cli-home", "--json", "import", "--dry-run", str(bundle))
    assert json.loads(listed.stdout)["ignored_entries"] == ["blueprints/personal/Icon\r"]


# A blueprint path at the store's limit (files.MAX_PATH_CHARS, 1,024), in segments a file system
# takes (under 255 characters each): its entries fit the bundle's name limit, its AppleDouble
# files (2 characters more, 11 more under __MACOSX/) do not.
LONG_FOLDERS = "/".join(["d" * 200] * 4)
LONG_PATH = f"{LONG_FOLDERS}/{'p' * 205}.blueprint.yaml"
LONG_META = f"blueprints/{LONG_PATH.removesuffix('.blueprint.yaml')}.blueprint.meta.json"


def _long_bundle_files() -> dict[str, bytes]:
    assert len(LONG_PATH) == fs.MAX_PATH_CHARS
    entries = z.bundle_entries([z.Blueprint(LONG_PATH)])
    return {e.name.decode(): e.data for e in entries}


@pytest.mark.parametrize("apple_double_in", ["beside", "__MACOSX"])
def test_apple_double_files_of_a_path_at_the_limit_are_passed_by(
    stores: StoreFactory, tmp_path: Path, apple_double_in: str
) -> None:
    """Their names are longer than any entry's may be, and the whole bundle was refused ("entry
    name is longer than 1040 characters"), although the blueprint's own entries fit."""
    bundle = tmp_path / "mac.lsbundle"
    bundle.write_bytes(_finder_zip(_long_bundle_files(), apple_double_in=apple_double_in))
    here = stores("here")
    result = archive.import_bundle(here, bundle)
    assert [(it.action, it.path) for it in result.items] == [("create", LONG_PATH)]
    prefix = "__MACOSX/" if apple_double_in == "__MACOSX" else ""
    folder, _, base = LONG_META.rpartition("/")
    over_long = f"{prefix}{folder}/._{base}"
    assert len(over_long) > archive.BundleLimits().max_path_chars
    assert over_long in result.ignored_entries
    assert here.count() == 1


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        # Not a Mac's: no AppleDouble magic, a blueprint's suffix.
        (LONG_META.replace("/pp", "/._pp"), b"name: slipped in\n", BundleLimitError),
        (LONG_META + "x" * 3, APPLE_DOUBLE, BundleLimitError),
        # AppleDouble content, but outside blueprints/ and __MACOSX/, where nothing is listed.
        ("x/" + LONG_META.replace("/pp", "/._pp"), APPLE_DOUBLE, BundleLimitError),
        # Under __MACOSX/, but hostile all the same.
        ("__MACOSX/../" + LONG_META.replace("/pp", "/._pp"), APPLE_DOUBLE, UnsafeBundleError),
        ("__MACOSX/" + LONG_META.replace("/pp", "/._p\x01"), APPLE_DOUBLE, UnsafeBundleError),
        ("/__MACOSX/" + LONG_META.replace("/pp", "/._pp"), APPLE_DOUBLE, UnsafeBundleError),
    ],
    ids=["not-apple-double", "no-dot-underscore", "outside", "dotdot", "control", "absolute"],
)
def test_other_over_long_names_are_refused_as_before(
    stores: StoreFactory, tmp_path: Path, name: str, data: bytes, error: type[Exception]
) -> None:
    assert len(name) > archive.BundleLimits().max_path_chars
    files = {**_long_bundle_files(), name: data}
    bundle = tmp_path / "long.lsbundle"
    bundle.write_bytes(z.build([z.RawEntry(n.encode(), d) for n, d in files.items()]))
    with pytest.raises(error, match="entry"):
        archive.import_bundle(stores("here"), bundle)
