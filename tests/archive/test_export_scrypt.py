"""An encrypted export refuses scrypt parameters an import would refuse, before writing anything.

Import bounds a bundle's scrypt cost (BundleLimits.max_scrypt_bytes, and crypto's own bounds)
because a hostile header must not make it allocate gigabytes. An export given ``scrypt_params``
past those bounds used to derive the key (seconds, hundreds of MiB) and write a bundle that no
import reads, or fail after writing the plaintext zip with a DecryptionError saying the data
"is corrupt or not ours", which is about a bundle read, not the caller's argument.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore import archive
from localstore.crypto import ScryptParams
from localstore.errors import BundleLimitError, InvalidInputError

from .conftest import FAST_SCRYPT, StoreFactory, populate


def _leftovers(tmp_path: Path, store_cache: Path) -> list[str]:
    beside = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.lsbundle.")]
    cached = [p.name for p in store_cache.glob("export-*")] if store_cache.exists() else []
    return beside + cached


def test_export_refuses_scrypt_cost_that_import_refuses(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    populate(src, 2)
    out = tmp_path / "out.lsbundle"
    # Within crypto's bounds (128 MiB of memory, 2**22 work), but import counts 128·r·N·p =
    # 512 MiB, over its default 256 MiB: before the fix, this bundle was written and unreadable.
    costly = ScryptParams(log2_n=17, r=8, p=4)
    costly.check()
    with pytest.raises(BundleLimitError) as info:
        archive.export_bundle(src, out, passphrase="pw", scrypt_params=costly)
    assert "scrypt" in info.value.message
    assert not out.exists()
    assert _leftovers(tmp_path, src.paths.cache) == []


def test_export_refuses_scrypt_cost_over_the_given_reader_limits(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    populate(src, 2)
    out = tmp_path / "out.lsbundle"
    # 128 · 8 · 2**10 · 2 = 2 MiB, over a reader allowing 1 MiB.
    limits = archive.BundleLimits.for_store(src, max_scrypt_bytes=1024 * 1024)
    with pytest.raises(BundleLimitError):
        archive.export_bundle(
            src, out, passphrase="pw", scrypt_params=ScryptParams(10, 8, 2), limits=limits
        )
    assert not out.exists()
    # Within the limits it is written, and an import with the same limits reads it.
    archive.export_bundle(src, out, passphrase="pw", scrypt_params=FAST_SCRYPT, limits=limits)
    dst = stores("dst")
    assert archive.import_bundle(dst, out, passphrase="pw", limits=limits).counts() == {"create": 2}


@pytest.mark.parametrize(
    "params",
    [ScryptParams(log2_n=21), ScryptParams(log2_n=9), ScryptParams(r=0), ScryptParams(p=17)],
    ids=repr,
)
def test_export_refuses_scrypt_params_out_of_bounds_as_bad_input(
    stores: StoreFactory, tmp_path: Path, params: ScryptParams
) -> None:
    src = stores("src")
    populate(src, 2)
    out = tmp_path / "out.lsbundle"
    with pytest.raises(InvalidInputError) as info:
        archive.export_bundle(src, out, passphrase="pw", scrypt_params=params)
    assert "scrypt_params" in info.value.message
    assert not out.exists()
    assert _leftovers(tmp_path, src.paths.cache) == []
