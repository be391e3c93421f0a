"""The import's staging spool read Windows' way (seek, read, seek back) here on Linux.

Windows' Python has no ``os.pread``; there ``_Spool.read`` seeks to the offset and back to the
end for the next append. No Windows machine runs the suite, so these tests run that path on a
real file here (``seek_reads=True``), and a real import through it, and hold them to what the
pread path gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore import _bundle_read, archive
from localstore._bundle_read import _Spool
from localstore.errors import StorageError

from .conftest import StoreFactory, populate, tree

# Pieces of differing sizes (one empty, one past a typical 8 KiB buffer) so offsets vary.
PIECES = [b"version: 1\n", b"", b"x" * 9000, b"steps: [a, b]\n", bytes(range(256)) * 3]


def _interleaved(spool: _Spool) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Append the pieces, reading every one so far back after each append, newest first (so the
    last read ends short of the end, where the next append must still go)."""
    reads: list[bytes] = []
    placed: list[tuple[int, int]] = []
    for piece in PIECES:
        placed.append((spool.append(piece), len(piece)))
        spool.seal()
        reads.extend(spool.read(offset, size) for offset, size in reversed(placed))
    return reads, placed


def test_seek_reads_equal_pread_reads(tmp_path: Path) -> None:
    spools = [_Spool(tmp_path / "pread.spool"), _Spool(tmp_path / "seek.spool", seek_reads=True)]
    try:
        (pread_reads, pread_placed), (seek_reads, seek_placed) = map(_interleaved, spools)
        assert seek_reads == pread_reads
        assert seek_placed == pread_placed
    finally:
        for spool in spools:
            spool.close()
    # A read between appends left the next append at the end, not over what was read.
    expected = b"".join(PIECES)
    assert (tmp_path / "pread.spool").read_bytes() == expected
    assert (tmp_path / "seek.spool").read_bytes() == expected


@pytest.mark.parametrize("seek_reads", [False, True])
def test_read_past_the_end_says_truncated(tmp_path: Path, seek_reads: bool) -> None:
    spool = _Spool(tmp_path / "yaml.spool", seek_reads=seek_reads)
    try:
        at = spool.append(b"abc")
        spool.seal()
        with pytest.raises(StorageError, match="truncated"):
            spool.read(at, 4)
        assert spool.append(b"def") == 3  # (the failed read left appends at the end)
        spool.seal()
        assert spool.read(0, 6) == b"abcdef"
    finally:
        spool.close()


class _SeekingSpool(_Spool):
    """A spool that reads Windows' way and counts those reads (so the test knows it ran)."""

    seeks: list[int] = []

    def __init__(self, path: Path) -> None:
        super().__init__(path, seek_reads=True)

    def _read_seeking(self, offset: int, size: int) -> bytes:
        self.seeks.append(offset)
        return super()._read_seeking(offset, size)


def test_an_import_reading_its_spool_by_seeking_equals_one_by_pread(
    stores: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = stores("src")
    ids = populate(src, 12)
    src.save("big/one", "notes: |\n" + "  line\n" * 3000)
    bundle = tmp_path / "all.lsbundle"
    archive.export_bundle(src, bundle)
    by_pread = archive.import_bundle(stores("pread"), bundle)
    monkeypatch.setattr(_bundle_read, "_Spool", _SeekingSpool)
    monkeypatch.setattr(_SeekingSpool, "seeks", [])
    dst = stores("seek")
    by_seek = archive.import_bundle(dst, bundle)
    assert len(_SeekingSpool.seeks) >= len(ids) + 1
    assert by_seek.counts() == by_pread.counts() == {"create": 13}
    assert tree(dst) == tree(src)
