"""Reading and verifying ``.lsbundle`` files: the hostile-input half of :mod:`localstore.archive`.

:func:`open_bundle` treats the file as hostile until proven otherwise: the zip's directory is bounded
before ``zipfile`` parses it; every entry name, type and byte range is checked (absolute, ``..``,
backslash, NUL, links, devices, duplicates, case collisions, overlapping entries, CVE-2024-0450);
each listed file is inflated under our own caps (bytes are counted while inflating; header sizes are
not trusted) and checked against the manifest's size and SHA-256; meta files are parsed.

Verified YAML goes to one spool file in a private staging folder (appended at offsets, never named
after an entry, so nothing can be written outside staging whatever the names say). One file rather
than a file per entry: creating, flushing and unlinking thousands of small files cost more than the
rest of the verification together. The staging folder is removed on exit, and a later import sweeps
the folder of one that was killed.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from localstore import crypto
from localstore import files as fs
from localstore._bundle_format import (
    ENCRYPTED_MAGIC,
    FORMAT_NAME,
    MANIFEST_NAME,
    MAX_META_BYTES,
    BundleLimits,
    ProgressCallback,
    _CountingReader,
    callable_arg,
    is_encrypted,
    options_arg,
    path_arg,
    scrypt_within_limits,
)
from localstore._bundle_inflate import _EntryReader, _Stats, _stream_entry
from localstore._bundle_listing import (
    _check_listing,
    _match_listing,
    _open_zipfile,
    _precheck_directory,
)
from localstore._bundle_manifest import _no_manifest, _parse_manifest, _read_manifest, _Wanted
from localstore._bundle_temps import STAGING_PREFIX, private_cache, sweep_stale_temps
from localstore._held_temps import HeldFolder, make_held_folder
from localstore.blueprint import BlueprintMeta, content_hash, decode_meta
from localstore.errors import (
    BundleFormatError,
    BundleIntegrityError,
    BundleLimitError,
    DecryptionError,
    DiskFullError,
    InvalidMetaError,
    NotFoundError,
    StorageError,
    UnsafeBundleError,
)


def _staging_error(exc: OSError, folder: Path) -> StorageError:
    """What a failed write to an import's staging folder (in the home's cache) raises: the cache's
    disk, not the bundle's nor the home's blueprints, is the one to free space on. (A raw OSError
    reached the command line as "unexpected OSError ... report it".)"""
    err = fs.map_os_error(exc, "cannot stage the bundle in", folder)
    if isinstance(err, DiskFullError):
        err.hint = (
            "free some disk space there and try again: an import stages the bundle's blueprints "
            "(and an encrypted bundle, decrypted) in the home's cache folder"
        )
    return err


class _Spool:
    """Verified YAML bytes, appended to one file in staging and read back by offset."""

    def __init__(self, path: Path, *, seek_reads: bool = False) -> None:
        """``seek_reads`` reads as on Windows (always there) so a test can run that way here."""
        self._folder = path.parent
        try:
            self._fh: IO[bytes] = open(path, "xb+")  # noqa: SIM115 - closed by close(), on exit
        except OSError as exc:
            raise _staging_error(exc, self._folder) from exc
        self._end = 0
        self._seek_reads = seek_reads

    def append(self, data: bytes) -> int:
        """Write ``data`` at the end; return its offset. Raises StorageError (DiskFullError)."""
        at = self._end
        try:
            self._fh.write(data)
        except OSError as exc:
            raise _staging_error(exc, self._folder) from exc
        self._end += len(data)
        return at

    def seal(self) -> None:
        """Make everything appended visible to :meth:`read` (no fsync: staging is scratch)."""
        try:
            self._fh.flush()
        except OSError as exc:
            raise _staging_error(exc, self._folder) from exc

    def read(self, offset: int, size: int) -> bytes:
        """The ``size`` bytes stored at ``offset``."""
        if sys.platform == "win32" or self._seek_reads:  # (no pread on Windows)
            data = self._read_seeking(offset, size)
        else:
            data = os.pread(self._fh.fileno(), size, offset)
        if len(data) != size:
            raise StorageError("the import staging file was truncated", hint="import again")
        return data

    def _read_seeking(self, offset: int, size: int) -> bytes:
        self._fh.seek(offset)
        data = self._fh.read(size)
        self._fh.seek(self._end)  # (where the next append writes)
        return data

    def close(self) -> None:
        self._fh.close()


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One verified blueprint of a bundle; its YAML waits in the staging spool."""

    id: str
    path: str
    meta: BlueprintMeta
    yaml_size: int
    yaml_sha256: str
    content_hash: str
    _spool: _Spool = field(repr=False, compare=False)
    _offset: int = field(repr=False, compare=False)
    # Content hashes of earlier versions of this blueprint at the exporter (newest first; empty
    # in a format 1.0 bundle): a version here among them is one the bundle's version was made from.
    ancestors: tuple[str, ...] = ()
    # The path an import at the exporter put this blueprint aside from (another blueprint held it
    # there), when it is still where that import put it; empty when not (and before format 1.2).
    # An importer that has it at that path takes the bundle's path for no rename.
    put_aside_from: str = ""

    def read_yaml(self) -> bytes:
        """The YAML bytes exactly as in the bundle (only inside :func:`open_bundle`)."""
        return self._spool.read(self._offset, self.yaml_size)


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle whose every byte matched its manifest; valid only inside :func:`open_bundle`."""

    format_version: str
    created: str
    source_device: dict[str, str]
    generator: str
    encrypted: bool
    entries: tuple[BundleEntry, ...]
    # Unlisted entries passed by as a file manager's (_match_listing), sorted.
    ignored_entries: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """The manifest's header fields (for plans and --json)."""
        return {
            "format": FORMAT_NAME,
            "version": self.format_version,
            "created": self.created,
            "source_device": self.source_device,
            "generator": self.generator,
            "encrypted": self.encrypted,
            "count": len(self.entries),
        }


@contextmanager
def open_bundle(
    path: str | os.PathLike[str],
    *,
    staging_root: Path,
    passphrase: str | None = None,
    limits: BundleLimits | None = None,
    progress: ProgressCallback | None = None,
    require_encrypted: bool = False,
) -> Iterator[VerifiedBundle]:
    """Verify a bundle completely and yield it; its staging folder is removed on exit.

    ``require_encrypted``: refuse a plain bundle (UnsafeBundleError). Only an encrypted bundle
    proves it was written by someone who knows the passphrase: whoever can replace the file
    can put a plain one, with any content, in its place, and a passphrase alone did not stop it
    (a plain bundle needs none, so it was not asked for).

    Raises BundleFormatError, BundleIntegrityError, BundleLimitError, UnsafeBundleError,
    DecryptionError (wrong passphrase or tampered encrypted bundle).
    """
    src = path_arg("path", path)
    options_arg(passphrase, limits)
    callable_arg("progress", progress)
    limits = limits or BundleLimits()
    size = _bundle_size(src)
    if size > limits.max_bundle_bytes:
        raise BundleLimitError(
            f"bundle is {size} bytes, over the limit of {limits.max_bundle_bytes}",
            hint="split the export into several bundles",
        )
    staging = _Staging(staging_root)
    try:
        encrypted = is_encrypted(src)
        if require_encrypted and not encrypted:
            raise UnsafeBundleError(
                f"{os.fspath(src)} is not encrypted, and an encrypted bundle was required",
                hint="anyone who can write a file can make a plain bundle: ask for an encrypted "
                "one, or import without requiring encryption if you trust where it came from",
            )
        zip_path = src
        if encrypted:
            zip_path = staging.path() / "bundle.zip"
            _decrypt_file(src, zip_path, passphrase, limits, progress)
        with open(zip_path, "rb") as fh:
            yield _verify_zip(fh, staging, limits, encrypted, progress, name=os.fspath(src))
    finally:
        staging.remove()


class _Staging:
    """A private folder under the cache, made on first use: most hostile bundles are refused
    before anything needs extracting, and creating a folder costs more than checking them."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._path: Path | None = None
        self._held: HeldFolder | None = None
        self._spool: _Spool | None = None

    def path(self) -> Path:
        """The folder, created on the first call."""
        if self._path is None:
            private_cache(self._root)
            sweep_stale_temps(self._root)
            try:
                self._held = make_held_folder(self._root, STAGING_PREFIX)
            except OSError as exc:
                raise _staging_error(exc, self._root) from exc
            self._path = self._held.path
        return self._path

    def spool(self) -> _Spool:
        """The one file verified YAML is appended to, created on the first call."""
        if self._spool is None:
            self._spool = _Spool(self.path() / "yaml.spool")
        return self._spool

    def remove(self) -> None:
        """Remove the folder (the spool, and an encrypted bundle's decrypted zip, with it)."""
        try:
            if self._spool is not None:
                self._spool.close()
        except OSError:
            # Closing flushes what the spool still buffers, and fails as its last write did on
            # a full disk. The bytes are scratch; raised here, the folder holding them (a
            # decrypted bundle's plaintext too) was never removed, and the error hid the import's.
            pass
        finally:
            if self._held is not None:
                self._held.remove()


def _bundle_size(src: Path) -> int:
    try:
        st = src.stat()
    except FileNotFoundError as exc:
        raise NotFoundError(f"no such bundle: {src}", hint="check the file name") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {src}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise BundleFormatError(f"{src} is not a regular file")
    return st.st_size


def _decrypt_file(
    src: Path,
    dst: Path,
    passphrase: str | None,
    limits: BundleLimits,
    progress: ProgressCallback | None,
) -> None:
    if not passphrase:
        raise DecryptionError(
            "the bundle is encrypted and no passphrase was given",
            hint="set LOCALSTORE_PASSPHRASE or type it when asked",
        )
    total = src.stat().st_size
    with open(src, "rb") as fin, _StagingWriter(dst) as fout:
        fin.seek(len(ENCRYPTED_MAGIC))
        _check_stream_cost(fin, limits)
        reader: Any = fin if progress is None else _CountingReader(fin, total, "decrypt", progress)
        sink: Any = fout  # (decrypt_stream only writes to it)
        crypto.decrypt_stream(reader, sink, passphrase, aad=ENCRYPTED_MAGIC)


class _StagingWriter:
    """A new file in staging, written unbuffered: each write's failure (a full disk) is raised
    there, typed, and closing has nothing left to write (a buffered file's close raised its own
    OSError then, over the error already on its way). The bundle's decrypted zip."""

    def __init__(self, path: Path) -> None:
        self._folder = path.parent
        try:
            # (O_BINARY: Windows would otherwise translate newlines in the zip.)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            self._fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise _staging_error(exc, self._folder) from exc

    def __enter__(self) -> _StagingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def write(self, data: bytes) -> int:
        """Write all of ``data``. Raises StorageError (DiskFullError)."""
        try:
            fs.write_all(self._fd, data)
        except OSError as exc:
            raise _staging_error(exc, self._folder) from exc
        return len(data)


_STREAM_FIXED = struct.Struct(
    ">4sBBBBB"
)  # crypto's stream header: magic, version, log2n, r, p, salt


def _check_stream_cost(fin: IO[bytes], limits: BundleLimits) -> None:
    """Refuse scrypt parameters that would cost more memory than we allow, before deriving.

    crypto's own bounds (up to N=2**20, r=32) exist for data the user made; a bundle comes from
    anyone, and a forged header must not make an import allocate gigabytes before the tag fails.
    """
    pos = fin.tell()
    fixed = fin.read(_STREAM_FIXED.size)
    fin.seek(pos)
    if len(fixed) != _STREAM_FIXED.size:
        raise DecryptionError("encrypted bundle is truncated", hint="the file is incomplete")
    _magic, _version, log2n, r, p, _salt = _STREAM_FIXED.unpack(fixed)
    if not scrypt_within_limits(log2n, r, p, limits):
        raise BundleLimitError(
            "the bundle's key derivation parameters are too costly",
            hint="re-export it with default settings",
        )


def _verify_zip(
    fh: IO[bytes],
    staging: _Staging,
    limits: BundleLimits,
    encrypted: bool,
    progress: ProgressCallback | None,
    *,
    name: str,
) -> VerifiedBundle:
    """``name``: the bundle's file as the user gave it, for errors that are about the whole file."""
    cd_start = _precheck_directory(fh, limits, name)
    zf = _open_zipfile(fh, name)
    with zf:
        infos, reader = _check_listing(zf, fh, cd_start, limits)
        manifest_info = infos.get(MANIFEST_NAME)
        if manifest_info is None:
            raise _no_manifest(infos)
        stats = _Stats()
        manifest = _read_manifest(reader, manifest_info, limits, stats)
        header, wanted = _parse_manifest(manifest, limits)
        ignored = _match_listing(infos, wanted, reader)
        entries = _extract_all(reader, infos, wanted, staging, limits, stats, progress)
    return VerifiedBundle(
        encrypted=encrypted, entries=tuple(entries), ignored_entries=ignored, **header
    )


def _extract_all(
    reader: _EntryReader,
    files: dict[str, zipfile.ZipInfo],
    wanted: Sequence[_Wanted],
    staging: _Staging,
    limits: BundleLimits,
    stats: _Stats,
    progress: ProgressCallback | None,
) -> list[BundleEntry]:
    # Read in archive order so the file is scanned forward once.
    order = sorted(range(len(wanted)), key=lambda i: files[wanted[i].yaml_name].header_offset)
    entries: list[BundleEntry | None] = [None] * len(wanted)
    spool = staging.spool() if wanted else None
    step = max(1, len(wanted) // 100)  # progress about 100 times, not once per entry
    for done, i in enumerate(order, 1):
        assert spool is not None
        entries[i] = _extract_one(reader, files, wanted[i], spool, limits, stats)
        if progress is not None and (done % step == 0 or done == len(wanted)):
            progress("verify", done, len(wanted))
    if spool is not None:
        spool.seal()
    return [e for e in entries if e is not None]


def _extract_one(
    reader: _EntryReader,
    files: dict[str, zipfile.ZipInfo],
    w: _Wanted,
    spool: _Spool,
    limits: BundleLimits,
    stats: _Stats,
) -> BundleEntry:
    if w.yaml_size > limits.max_file_bytes:
        raise BundleLimitError(
            f"{w.path[:80]!r} is {w.yaml_size} bytes, over {limits.max_file_bytes}"
        )
    if w.meta_size > MAX_META_BYTES:
        raise BundleLimitError(f"meta of {w.path[:80]!r} is over {MAX_META_BYTES} bytes")
    # Both files are held in memory for a moment (bounded by the caps above): the YAML is hashed
    # for the plan from these bytes, then spooled, so nothing is read back from disk.
    yaml_buf = io.BytesIO()
    size, digest = _stream_entry(
        reader,
        files[w.yaml_name],
        yaml_buf,
        limits.max_file_bytes,
        limits,
        stats,
        declared=w.yaml_size,
    )
    _check_digest(w.yaml_name, size, digest, w.yaml_size, w.yaml_sha256)
    meta_buf = io.BytesIO()
    size, digest = _stream_entry(
        reader, files[w.meta_name], meta_buf, MAX_META_BYTES, limits, stats, declared=w.meta_size
    )
    _check_digest(w.meta_name, size, digest, w.meta_size, w.meta_sha256)
    meta = _parse_meta(meta_buf.getvalue(), w)
    yaml_bytes = yaml_buf.getvalue()
    return BundleEntry(
        id=w.id,
        path=w.path,
        meta=meta,
        yaml_size=len(yaml_bytes),
        yaml_sha256=w.yaml_sha256,
        content_hash=content_hash(yaml_bytes, meta),
        _spool=spool,
        _offset=spool.append(yaml_bytes),
        ancestors=w.ancestors,
        put_aside_from=w.put_aside_from,
    )


def _check_digest(name: str, size: int, digest: str, want_size: int, want_digest: str) -> None:
    if size != want_size:
        raise BundleIntegrityError(
            f"{name[:100]!r} is {size} bytes, the manifest says {want_size}",
            hint="the bundle was modified or damaged; export it again",
        )
    if digest != want_digest:
        raise BundleIntegrityError(
            f"{name[:100]!r} does not match its SHA-256 in the manifest",
            hint="the bundle was modified or damaged; export it again",
        )


def _parse_meta(raw: bytes, w: _Wanted) -> BlueprintMeta:
    try:
        meta = decode_meta(raw, source=w.meta_name[:100])
    except InvalidMetaError as exc:
        raise BundleFormatError(f"bad meta file: {exc.message}") from exc
    if meta.id != w.id:
        raise BundleFormatError(f"{w.meta_name[:100]!r} has id {meta.id}, the manifest {w.id}")
    return meta
