"""Export then import: byte-identical files, the same ids, encryption that refuses any tampering."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localstore import archive
from localstore.crypto import ScryptParams
from localstore.errors import (
    BundleFormatError,
    BundleIntegrityError,
    BundleLimitError,
    DecryptionError,
    NotFoundError,
)

from .conftest import FAST_SCRYPT, StoreFactory, populate, tree


def test_round_trip_into_an_empty_home_is_byte_identical(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    ids = populate(src, 12)
    out = tmp_path / "all.lsbundle"
    result = archive.export_bundle(src, out)
    assert result.count == 12 and sorted(result.ids) == sorted(ids)

    dst = stores("dst")
    imported = archive.import_bundle(dst, out)
    assert imported.counts() == {"create": 12}
    assert tree(dst) == tree(src)
    assert sorted(i.id for i in dst.list()) == sorted(ids)
    for bp_id in ids:
        assert dst.load(bp_id).content == src.load(bp_id).content
        assert [r.origin for r in dst.history(bp_id)] == ["import"]


def test_encrypted_round_trip_and_wrong_passphrase(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    populate(src, 5)
    out = tmp_path / "sealed.lsbundle"
    archive.export_bundle(src, out, passphrase="correct horse", scrypt_params=FAST_SCRYPT)
    raw = out.read_bytes()
    assert raw.startswith(archive.ENCRYPTED_MAGIC) and b"sample-1" not in raw
    assert archive.is_encrypted(out)

    dst = stores("dst")
    with pytest.raises(DecryptionError):
        archive.import_bundle(dst, out, passphrase="wrong horse")
    with pytest.raises(DecryptionError):
        archive.import_bundle(dst, out)  # no passphrase at all
    assert dst.count() == 0
    archive.import_bundle(dst, out, passphrase="correct horse")
    assert tree(dst) == tree(src)


def test_default_scrypt_cost_round_trip(stores: StoreFactory, tmp_path: Path) -> None:
    """One export/import at the real default cost (the path users take)."""
    src = stores("src")
    populate(src, 2)
    out = tmp_path / "sealed.lsbundle"
    archive.export_bundle(src, out, passphrase="pw")
    dst = stores("dst")
    archive.import_bundle(dst, out, passphrase="pw")
    assert tree(dst) == tree(src)


@pytest.fixture
def sealed(stores: StoreFactory, tmp_path: Path) -> tuple[bytes, Path]:
    src = stores("src")
    populate(src, 3)
    out = tmp_path / "sealed.lsbundle"
    archive.export_bundle(src, out, passphrase="pw", scrypt_params=FAST_SCRYPT)
    return out.read_bytes(), tmp_path


def test_every_header_byte_and_sampled_body_bytes_are_authenticated(
    sealed: tuple[bytes, Path], stores: StoreFactory
) -> None:
    raw, tmp = sealed
    dst = stores("dst")
    target = tmp / "tampered.lsbundle"
    positions = list(range(0, 64)) + list(range(64, len(raw), max(1, len(raw) // 80)))
    positions.append(len(raw) - 1)
    for pos in positions:
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        target.write_bytes(bytes(bad))
        with pytest.raises((DecryptionError, BundleFormatError)):
            archive.import_bundle(dst, target, passphrase="pw")
    for cut in (len(raw) - 1, len(raw) - 17, len(raw) // 2, 20):
        target.write_bytes(raw[:cut])
        with pytest.raises(DecryptionError):
            archive.import_bundle(dst, target, passphrase="pw")
    target.write_bytes(raw + b"\x00")
    with pytest.raises(DecryptionError):
        archive.import_bundle(dst, target, passphrase="pw")
    assert dst.count() == 0
    assert not list(dst.paths.cache.glob("import-staging-*"))


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_tampered_byte_is_refused(sealed: tuple[bytes, Path], data: st.DataObject) -> None:
    raw, tmp = sealed
    pos = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(raw)
    bad[pos] ^= flip
    target = tmp / "fuzzed.lsbundle"
    target.write_bytes(bytes(bad))
    # A flipped byte in the scrypt parameters can make them too costly: that is refused before any
    # key is derived (BundleLimitError), a typed refusal like the others.
    with (
        pytest.raises((DecryptionError, BundleFormatError, BundleLimitError)) as info,
        archive.open_bundle(target, staging_root=tmp / "staging", passphrase="pw"),
    ):
        pass
    assert str(info.value)
    staging = tmp / "staging"
    assert not staging.exists() or not list(staging.iterdir())


def test_costly_scrypt_header_is_refused_before_deriving(sealed: tuple[bytes, Path]) -> None:
    raw, tmp = sealed
    # The crypto stream header follows the magic: LSST, version, log2n, r, p, salt length.
    at = len(archive.ENCRYPTED_MAGIC) + 5
    bad = bytearray(raw)
    bad[at], bad[at + 1] = 20, 32  # N=2**20, r=32: 4 GiB of scrypt memory
    target = tmp / "costly.lsbundle"
    target.write_bytes(bytes(bad))
    with (
        pytest.raises(BundleLimitError),
        archive.open_bundle(target, staging_root=tmp / "st", passphrase="pw"),
    ):
        pass


def test_plain_bundle_layout_and_manifest(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    ids = populate(src, 3)
    out = tmp_path / "plain.lsbundle"
    archive.export_bundle(src, out)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["format"] == "localstore-bundle" and manifest["version"] == "1.2"
    assert manifest["source_device"]["id"] == src.device_id
    assert {e["id"] for e in manifest["blueprints"]} == set(ids)
    for e in manifest["blueprints"]:
        assert "blueprints/" + e["path"] in names
        assert set(e["yaml"]) == {"size", "sha256"} and set(e["meta"]) == {"size", "sha256"}


def test_tampered_plain_content_fails_its_hash(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    populate(src, 2)
    out = tmp_path / "plain.lsbundle"
    archive.export_bundle(src, out)
    buf = io.BytesIO()
    with zipfile.ZipFile(out) as zin, zipfile.ZipFile(buf, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(".blueprint.yaml"):
                data = data.replace(b"sample", b"SAMPLE")
            zout.writestr(info, data)
    out.write_bytes(buf.getvalue())
    dst = stores("dst")
    with pytest.raises(BundleIntegrityError):
        archive.import_bundle(dst, out)
    assert dst.count() == 0


def test_selection_by_refs_folder_and_tag(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    ids = populate(src, 9)
    by_folder = archive.export_bundle(src, tmp_path / "f.lsbundle", folder="team")
    assert {src.resolve(i).path.split("/")[0] for i in by_folder.ids} == {"team"}
    by_tag = archive.export_bundle(src, tmp_path / "t.lsbundle", tag="odd")
    assert len(by_tag.ids) == 4
    both = archive.export_bundle(src, tmp_path / "ft.lsbundle", folder="personal", tag="even")
    assert all("even" in src.resolve(i).tags for i in both.ids)
    refs = archive.export_bundle(src, tmp_path / "r.lsbundle", refs=[ids[0], "shared/bp-2"])
    assert set(refs.ids) == {ids[0], ids[2]}
    with pytest.raises(NotFoundError):
        archive.export_bundle(src, tmp_path / "x.lsbundle", refs=["nope/missing"])
    assert not (tmp_path / "x.lsbundle").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".lstmp")]


def test_export_single_blueprint_as_plain_yaml(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    ids = populate(src, 1)
    data = archive.export_yaml(src, ids[0], tmp_path / "one.yaml")
    assert (tmp_path / "one.yaml").read_bytes() == data == src.load(ids[0]).content.encode()


def test_export_is_atomic_over_an_existing_file(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    populate(src, 2)
    out = tmp_path / "b.lsbundle"
    out.write_bytes(b"old")
    archive.export_bundle(src, out, passphrase="pw", scrypt_params=ScryptParams(log2_n=10))
    assert archive.is_encrypted(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.lsbundle", "src"]
    assert not list(src.paths.cache.iterdir())  # the plaintext temp zip is gone


def test_zip64_end_records_are_read(
    stores: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bundles of more than 65,535 entries use zip64 end records; read them like zipfile does."""
    src = stores("src")
    populate(src, 3)
    out = tmp_path / "z64.lsbundle"
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)  # force the zip64 end record
    archive.export_bundle(src, out)
    monkeypatch.undo()
    assert b"PK\x06\x06" in out.read_bytes()[-200:]
    dst = stores("dst")
    assert archive.import_bundle(dst, out).counts() == {"create": 3}
    tight = archive.BundleLimits(max_entries=5)
    with pytest.raises(BundleLimitError):
        archive.import_bundle(stores("other"), out, limits=tight)
