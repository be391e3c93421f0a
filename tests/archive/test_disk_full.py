"""Bundles on a genuinely full disk: an import whose staging runs out of space fails typed and
leaves no staging folder; an encrypted export whose temporary file runs out of space names the
folder that is full, not the destination.

The disk is real: the small tmpfs of tests/store/test_disk_full.py (root only; elsewhere the
tests skip saying so).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import localstore
from localstore import archive
from localstore.errors import DiskFullError
from localstore.store import BlueprintStore
from tests.archive.conftest import FAST_SCRYPT, StoreFactory
from tests.store.test_disk_full import LEAVE, DiskSpace, disk  # noqa: F401 (the fixture)


def _random_doc(i: int) -> str:
    # Hex of random bytes: deflates about twice, so the staged YAML outweighs the bundle.
    return f"name: bp{i}\nsteps:\n" + "".join(f"  - {os.urandom(40).hex()}\n" for _ in range(60))


@pytest.fixture
def bundles(stores: StoreFactory, tmp_path: Path) -> dict[str, Path]:
    """A plain and an encrypted bundle of 40 blueprints (about 200 KB of YAML), off the disk."""
    src = stores("src")
    for i in range(40):
        src.save(f"f/bp{i}", _random_doc(i))
    plain, sealed = tmp_path / "plain.lsbundle", tmp_path / "sealed.lsbundle"
    archive.export_bundle(src, plain)
    archive.export_bundle(src, sealed, passphrase="pw", scrypt_params=FAST_SCRYPT)
    return {"plain": plain, "encrypted": sealed}


def _staging_left(store: BlueprintStore) -> list[str]:
    cache = store.paths.cache
    return sorted(p.name for p in cache.glob("import-staging-*")) if cache.exists() else []


def _import_out_of_space(
    disk: DiskSpace,  # noqa: F811 (the fixture imported above)
    store: BlueprintStore,
    bundle: Path,
    leave: int,
) -> BaseException:
    """Import ``bundle`` with ``leave`` bytes free; return the error (it must fail)."""
    store.paths.cache.mkdir(parents=True, exist_ok=True)
    disk.fill(leave)
    with pytest.raises(Exception) as info:
        archive.import_bundle(store, bundle, passphrase="pw")
    return info.value


def _import_after_freeing(disk: DiskSpace, store: BlueprintStore, bundle: Path) -> None:  # noqa: F811
    disk.free()
    result = archive.import_bundle(store, bundle, passphrase="pw")
    assert result.counts() == {"create": 40}
    assert _staging_left(store) == []


@pytest.mark.parametrize("kind", ["plain", "encrypted"])
@pytest.mark.parametrize("leave", LEAVE)
def test_an_import_out_of_space_removes_its_staging_folder(
    disk: DiskSpace,  # noqa: F811
    bundles: dict[str, Path],
    kind: str,
    leave: int,
) -> None:
    store = localstore.open(home=disk.root / "home")
    try:
        _import_out_of_space(disk, store, bundles[kind], leave)
        # Gone at once, not left (a decrypted bundle's plaintext in it, and its lock's open
        # file) until this process ends and a later import's sweep finds it: closing the
        # staging file failed as its last write had, and the folder was never removed.
        assert _staging_left(store) == []
        _import_after_freeing(disk, store, bundles[kind])
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["plain", "encrypted"])
@pytest.mark.parametrize("leave", LEAVE)
def test_an_import_out_of_space_says_which_disk_is_full(
    disk: DiskSpace,  # noqa: F811
    bundles: dict[str, Path],
    kind: str,
    leave: int,
) -> None:
    store = localstore.open(home=disk.root / "home")
    try:
        error = _import_out_of_space(disk, store, bundles[kind], leave)
        # A DiskFullError naming the home's cache, where the import stages the bundle: a raw
        # OSError reached the command line as "unexpected OSError ... report it".
        assert isinstance(error, DiskFullError), repr(error)
        assert str(store.paths.cache) in error.message, error.message
        assert error.hint and "space" in error.hint
        _import_after_freeing(disk, store, bundles[kind])
    finally:
        store.close()


def test_an_encrypted_export_out_of_space_in_the_cache_names_the_cache_not_the_destination(
    disk: DiskSpace,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = localstore.open(home=disk.root / "home")
    try:
        for i in range(40):
            store.save(f"f/bp{i}", _random_doc(i))
        store.paths.cache.mkdir(parents=True, exist_ok=True)
        dest = tmp_path / "out.lsbundle"  # on another disk, with room to spare
        disk.fill()
        with pytest.raises(DiskFullError) as info:
            archive.export_bundle(store, dest, passphrase="pw", scrypt_params=FAST_SCRYPT)
        # The plaintext zip is written in the home's cache first: "cannot write out.lsbundle"
        # sent the person to free space on a disk that had plenty.
        message = info.value.message
        assert str(store.paths.cache) in message and str(dest) not in message, message
        assert not dest.exists()
        assert list(store.paths.cache.glob("export-*")) == []
        disk.free()
        assert (
            archive.export_bundle(store, dest, passphrase="pw", scrypt_params=FAST_SCRYPT).count
            == 40
        )
    finally:
        store.close()
