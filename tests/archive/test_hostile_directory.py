"""A zip directory holding far more records than its end record says, crafted byte by byte."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest

from localstore import archive
from localstore.errors import BundleLimitError

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_EOCD = struct.Struct("<4s4H2LH")


def _many_records(n: int) -> bytes:
    """One one-byte-named empty entry, and ``n`` 47-byte directory records all pointing at it,
    under an end record claiming one entry (zipfile parses records until the size is used up)."""
    local = _LOCAL.pack(b"PK\x03\x04", 20, 0, 0, 0, 0, 0x21, 0, 0, 0, 1, 0) + b"a"
    record = (
        _CENTRAL.pack(
            b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0x21, 0, 0, 0, 1, 0, 0, 0, 0, 0o100644 << 16, 0
        )
        + b"a"
    )
    directory = record * n
    end = _EOCD.pack(b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(local), 0)
    return local + directory + end


def test_a_directory_forging_its_count_is_refused_before_zipfile_parses_it(tmp_path: Path) -> None:
    limits = archive.BundleLimits(max_entries=100, max_directory_bytes=8 * 1024 * 1024)
    bundle = tmp_path / "b.lsbundle"
    bundle.write_bytes(_many_records(150_000))  # 7 MB of directory, within the size cap
    tracemalloc.start()
    try:
        with (
            pytest.raises(BundleLimitError, match="more than 100 entries"),
            archive.open_bundle(bundle, staging_root=tmp_path / "cache", limits=limits),
        ):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The directory's bytes are read once (7 MB); before, zipfile built 150,000 ZipInfo objects
    # (over 60 MB here; 700 MB and 20 s for the 64 MiB the default cap allows) and only then
    # was their number checked.
    assert peak < 20 * 1024 * 1024
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
