"""A bundle unpacked and zipped again by another tool keeps its non-ASCII names readable.

Info-ZIP's ``zip`` on Linux and macOS's Archive Utility write UTF-8 names without setting the
zip's UTF-8 flag (general purpose bit 11), and macOS writes them decomposed (NFD, as HFS+ named
the files). zipfile reads a name without the flag as CP437, so ``café`` came out as ``caf├⌐``, and
an NFD name is another string than the manifest's canonical (NFC) path: either way the import was
refused with "the bundle lacks 'blueprints/…café…', listed in its manifest", naming an entry that
was right there. The zips are built byte by byte (zipfile sets the flag itself for such names).
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest

from localstore import archive
from localstore.errors import UnsafeBundleError

from . import zipcraft as z
from .conftest import StoreFactory

PATH = "personal/café über.blueprint.yaml"


def _bundle(tmp_path: Path, *, flag: bool, form: Literal["NFC", "NFD"]) -> tuple[Path, z.Blueprint]:
    bp = z.Blueprint(PATH, yaml="name: café\n".encode())
    entries = [
        replace(
            e,
            name=unicodedata.normalize(form, e.name.decode()).encode(),
            flags=0x800 if flag else 0,
        )
        for e in z.bundle_entries([bp])
    ]
    out = tmp_path / f"{form}-{flag}.lsbundle"
    out.write_bytes(z.build(entries))
    return out, bp


@pytest.mark.parametrize(
    ("flag", "form"),
    [
        (False, "NFC"),  # Info-ZIP zip 3.0 on Linux: UTF-8 bytes, no flag
        (False, "NFD"),  # macOS Archive Utility: decomposed UTF-8, no flag
        (True, "NFD"),  # a flag-setting tool run on files an HFS+ volume named (decomposed)
    ],
)
def test_utf8_names_without_the_flag_or_decomposed_are_imported(
    stores: StoreFactory, tmp_path: Path, flag: bool, form: Literal["NFC", "NFD"]
) -> None:
    bundle, bp = _bundle(tmp_path, flag=flag, form=form)
    store = stores("home")
    result = archive.import_bundle(store, bundle)
    assert [(it.action, it.path) for it in result.items] == [("create", PATH)]
    got = store.load(bp.id)
    assert got.path == PATH
    assert (store.root / PATH).read_bytes() == bp.yaml


def test_cp437_names_without_the_flag_are_still_read_as_cp437(
    stores: StoreFactory, tmp_path: Path
) -> None:
    """Bytes that are no UTF-8 are CP437 as before (Windows Explorer on a US system: ``é`` is
    0x82), so such a bundle still imports."""
    bp = z.Blueprint("personal/café.blueprint.yaml")
    entries = [
        replace(e, name=e.name.decode().encode("cp437"), flags=0) for e in z.bundle_entries([bp])
    ]
    assert b"caf\x82" in entries[1].name
    bundle = tmp_path / "cp437.lsbundle"
    bundle.write_bytes(z.build(entries))
    store = stores("home")
    result = archive.import_bundle(store, bundle)
    assert [(it.action, it.path) for it in result.items] == [("create", bp.path)]
    assert store.load(bp.id).path == bp.path


def test_a_name_and_its_decomposed_twin_still_collide(stores: StoreFactory, tmp_path: Path) -> None:
    bp = z.Blueprint("personal/a.blueprint.yaml")
    # Outside blueprints/ (ignored by a reader), so only the collision check can refuse it.
    composed = "notes/caf\u00e9.txt"
    entries = [
        *z.bundle_entries([bp]),
        z.RawEntry(composed.encode(), b"a", flags=0),
        z.RawEntry(unicodedata.normalize("NFD", composed).encode(), b"b"),
    ]
    bundle = tmp_path / "twins.lsbundle"
    bundle.write_bytes(z.build(entries))
    with pytest.raises(UnsafeBundleError, match="appears"):
        archive.import_bundle(stores("home"), bundle)


def _windows_entries(bps: list[z.Blueprint], system: int) -> list[z.RawEntry]:
    """A bundle's entries as PowerShell's Compress-Archive (Windows PowerShell 5.1, .NET
    Framework's ZipFile) writes them: made on system 0 (MS-DOS/FAT), no Unix mode, '\\' between
    folders."""
    return [
        replace(e, name=e.name.replace(b"/", b"\\"), system=system, mode=0, flags=0)
        for e in z.bundle_entries(bps)
    ]


def test_backslash_separators_of_a_windows_zip_tool_are_read_as_folders(
    stores: StoreFactory, tmp_path: Path
) -> None:
    bp = z.Blueprint("team/ops/deploy.blueprint.yaml")
    entries = _windows_entries([bp], system=0)
    assert entries[1].name == b"blueprints\\team\\ops\\deploy.blueprint.yaml"
    # An empty folder's entry: ZipFile writes one, with a trailing '\'.
    entries.append(z.RawEntry(b"blueprints\\empty\\", b"", method=0, mode=0, flags=0, system=0))
    bundle = tmp_path / "compress-archive.lsbundle"
    bundle.write_bytes(z.build(entries))
    store = stores("home")
    result = archive.import_bundle(store, bundle)
    assert [(it.action, it.path) for it in result.items] == [("create", bp.path)]
    assert (store.root / bp.path).read_bytes() == bp.yaml


@pytest.mark.parametrize(
    ("system", "name", "match"),
    [
        # Made on Unix, where '\' is a character of a file name, not a separator: as before.
        (3, b"blueprints\\team\\ops\\deploy.blueprint.yaml", "contains a backslash"),
        # Read as '/', a DOS name is checked as any other.
        (0, b"blueprints\\..\\..\\deploy.blueprint.yaml", r"'\.\.' part"),
        (0, b"\\blueprints\\team\\ops\\deploy.blueprint.yaml", "absolute"),
        (0, b"C:\\blueprints\\deploy.blueprint.yaml", "absolute"),
    ],
)
def test_backslash_names_that_stay_refused(
    stores: StoreFactory, tmp_path: Path, system: int, name: bytes, match: str
) -> None:
    bp = z.Blueprint("team/ops/deploy.blueprint.yaml")
    entries = z.with_entry(_windows_entries([bp], system=system), 1, name=name)
    bundle = tmp_path / "refused.lsbundle"
    bundle.write_bytes(z.build(entries))
    store = stores("home")
    with pytest.raises(UnsafeBundleError, match=match):
        archive.import_bundle(store, bundle)
    assert store.count() == 0
