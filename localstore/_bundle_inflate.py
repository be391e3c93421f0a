"""Reading a bundle's zip entries under our own caps: the zip-bomb guards.

Entries are inflated straight from the bundle file in bounded pieces; every byte is counted as it
comes out (headers' sizes are not trusted), per entry and for the whole bundle, against the
size caps and the inflation ratio of :class:`BundleLimits`.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from localstore._bundle_format import BundleLimits
from localstore.errors import BundleFormatError, BundleIntegrityError, BundleLimitError

_CHUNK = 64 * 1024


@dataclass(slots=True)
class _Stats:
    total_out: int = 0
    total_in: int = 0


class _EntryReader:
    """Inflate entries straight from the bundle file, at the offsets the range check found.

    ``zipfile`` would re-read and re-check each local header and build a file object per entry
    (about 35 us each, most of the cost of reading a 2 KB blueprint); the checks it makes are
    done once in :func:`_check_ranges`. Output comes in pieces of at most ``_CHUNK`` bytes
    whatever the compression ratio, so the caller's caps hold before anything large exists.
    """

    def __init__(self, fh: IO[bytes], data_at: dict[str, int]) -> None:
        self._fh = fh
        self._data_at = data_at

    def head(self, info: zipfile.ZipInfo, n: int) -> bytes:
        """Up to the entry's first ``n`` bytes (a few: read from its first 1 KiB, unchecked, so
        the cost of a hostile entry's inflation stays that of 1 KiB). Raises zlib.error."""
        self._fh.seek(self._data_at[info.orig_filename])
        raw = self._fh.read(min(info.compress_size, 1024))
        if info.compress_type != zipfile.ZIP_DEFLATED:
            return raw[:n]
        return zlib.decompressobj(-15).decompress(raw, n)

    def pieces(self, info: zipfile.ZipInfo) -> Iterator[bytes]:
        """The entry's content, piece by piece; raises BundleFormatError when it is corrupt or
        its header lies about its size (zipfile would stop there and fail the CRC)."""
        self._fh.seek(self._data_at[info.orig_filename])
        left = info.compress_size
        inflater = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        crc = out = 0
        while left > 0 and not (inflater is not None and inflater.eof):
            raw = self._fh.read(min(_CHUNK, left))
            if not raw:
                raise _corrupt(info, "it is truncated")
            left -= len(raw)
            while raw:
                piece = raw if inflater is None else inflater.decompress(raw, _CHUNK)
                raw = b"" if inflater is None else inflater.unconsumed_tail
                out += len(piece)
                if out > info.file_size:
                    raise _corrupt(info, f"it is larger than its header says ({info.file_size})")
                crc = zlib.crc32(piece, crc)
                yield piece
        if inflater is not None and not inflater.eof:
            # As zipfile: what a cut-off stream still holds (a few bytes: the loop above left no
            # input unconsumed); the size and CRC then tell whether anything is missing.
            tail = inflater.flush()
            out += len(tail)
            if out > info.file_size:
                raise _corrupt(info, f"it is larger than its header says ({info.file_size})")
            crc = zlib.crc32(tail, crc)
            yield tail
        if out != info.file_size:
            raise _corrupt(info, f"it is {out} bytes, its header says {info.file_size}")
        if crc != info.CRC:
            raise _corrupt(info, "bad CRC-32")


def _corrupt(info: zipfile.ZipInfo, why: str) -> BundleFormatError:
    return BundleFormatError(f"entry {info.orig_filename[:80]!r} is corrupt: {why}")


def _stream_entry(
    reader: _EntryReader,
    info: zipfile.ZipInfo,
    sink: IO[bytes] | None,
    cap: int,
    limits: BundleLimits,
    stats: _Stats,
    *,
    declared: int | None = None,
) -> tuple[int, str]:
    """Inflate one entry into ``sink`` counting bytes; return (size, sha256). Never trusts headers.

    ``cap`` is the limit (BundleLimitError past it); ``declared`` the manifest's size, which the
    entry may not exceed either (BundleIntegrityError), so a lying manifest costs nothing extra.
    """
    name = info.orig_filename[:80]
    if info.file_size > cap:
        raise BundleLimitError(f"entry {name!r} says it is {info.file_size} bytes, over {cap}")
    digest = hashlib.sha256()
    n = 0
    stats.total_in += info.compress_size
    try:
        for chunk in reader.pieces(info):
            n += len(chunk)
            stats.total_out += len(chunk)
            _check_counts(name, n, cap, info.compress_size, limits, stats)
            if declared is not None and n > declared:
                raise BundleIntegrityError(
                    f"entry {name!r} is larger than the manifest says ({declared} bytes)",
                    hint="the bundle was modified or damaged; export it again",
                )
            digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
    except zlib.error as exc:
        raise BundleFormatError(f"entry {name!r} is corrupt: {exc}") from exc
    return n, digest.hexdigest()


def _check_counts(
    name: str, n: int, cap: int, compressed: int, limits: BundleLimits, stats: _Stats
) -> None:
    if n > cap:
        raise BundleLimitError(f"entry {name!r} inflates past {cap} bytes")
    if n > limits.ratio_floor_bytes and n > limits.max_ratio * max(compressed, 1):
        raise BundleLimitError(
            f"entry {name!r} inflates more than {limits.max_ratio} times (a zip bomb?)"
        )
    if stats.total_out > limits.max_total_bytes:
        raise BundleLimitError(f"bundle inflates past {limits.max_total_bytes} bytes in total")
    if stats.total_out > limits.ratio_floor_bytes and stats.total_out > limits.max_ratio * max(
        stats.total_in, 1
    ):
        raise BundleLimitError(f"bundle inflates more than {limits.max_ratio} times (a zip bomb?)")
