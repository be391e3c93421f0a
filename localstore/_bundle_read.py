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

import hashlib
import io
import json
import logging
import os
import re
import stat
import struct
import sys
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from localstore import crypto
from localstore import files as fs
from localstore._held_temps import HeldFolder, make_held_folder, process_alive, remove_if_dead
from localstore.blueprint import (
    BlueprintMeta,
    content_hash,
    decode_meta,
    is_uuid,
)
from localstore.errors import (
    BundleFormatError,
    BundleIntegrityError,
    BundleLimitError,
    DecryptionError,
    DiskFullError,
    InvalidInputError,
    InvalidMetaError,
    NotFoundError,
    StorageError,
    UnsafeBundleError,
    UnsafePathError,
    wrong_type,
)

if TYPE_CHECKING:
    from localstore.store import BlueprintStore

FORMAT_NAME = "localstore-bundle"
FORMAT_MAJOR = 1
# 1.1 added each blueprint's optional "ancestors", 1.2 its optional "put_aside_from"
# (docs/bundle-format.md, section 2).
FORMAT_MINOR = 2
FORMAT_VERSION = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"
MANIFEST_NAME = "manifest.json"
ENTRY_PREFIX = "blueprints/"
# What file managers leave in the folders they show: Finder's .DS_Store, Windows' Thumbs.db and
# desktop.ini (Desktop.ini too: compared caseless), and the AppleDouble "._<name>" file a Mac
# writes beside each file it copies to a disk that keeps no Mac metadata (FAT, SMB shares). A
# bundle unzipped and zipped again on a desktop holds them under blueprints/, where an unlisted
# file refused the whole bundle. Readers pass them by unread (_match_listing). Also KDE's
# ".directory" (a folder's icon and view settings) and Finder's "Icon\r" (a folder given a custom
# icon: the icon is in its resource fork), the one name with a control character a file manager
# writes (_check_name lets that one through).
_FINDER_ICON = "Icon\r"
_OS_METADATA_NAMES = frozenset(
    {".ds_store", "thumbs.db", "desktop.ini", ".directory", _FINDER_ICON.casefold()}
)
# The first bytes of every AppleDouble file: no YAML or JSON text starts with a NUL, so a ``._``
# entry holding them is a Mac's, whatever its name says (_is_apple_double).
_APPLE_DOUBLE_MAGIC = b"\x00\x05\x16\x07"
# Where macOS's Archive Utility puts the AppleDouble files of what it zips.
_MAC_FORKS_FOLDER = "__MACOSX/"
# Encrypted container: this magic (name + container version) then a crypto stream whose associated
# data is the magic, so the container header cannot be swapped without failing authentication.
ENCRYPTED_MAGIC = b"LSBUNDLE\x01"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
log = logging.getLogger(__name__)

STAGING_PREFIX = "import-staging-"
# The plaintext zip of an encrypted export, in the cache: export-<pid>-XXXX/plaintext.lstmp (an
# older version's: the file export-<pid>-XXXX.lstmp).
EXPORT_TEMP_PREFIX = "export-"
# A read-only home's encrypted export: its plaintext zip in a folder of its own in the user's temp
# folder, localstore-export-<pid>-XXXX/ (archive._read_only_export_temp). Each of these folders,
# and the import's staging folder, is held by its maker (localstore._held_temps).
READ_ONLY_EXPORT_PREFIX = "localstore-export-"
MAX_META_BYTES = 1024 * 1024
MAX_ENTRY_NAME_CHARS = (
    len(ENTRY_PREFIX) + fs.MAX_PATH_CHARS + len(fs.META_SUFFIX) - len(fs.YAML_SUFFIX)
)
_CHUNK = 64 * 1024
# Earlier content hashes a writer lists per blueprint ("ancestors"), and the most a reader takes.
# The manifest's value budget (_too_many_values counts commas) is 16 per blueprint in every reader
# since 1.0; an entry's own fields take 6 and each hash one more, so 10 is what keeps a bundle of
# the most blueprints readable by a 1.0 reader, and the writer stays 2 under it. (An entry's
# "put_aside_from", 1.2, takes one of those 2: 15 values, still within every reader's budget.)
ANCESTORS_WRITTEN = 8
MAX_ANCESTORS = 10
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^(\d{1,6})\.(\d{1,6})$")
# As in blueprint paths (files.py): ':' would also name an NTFS alternate stream.
_FORBIDDEN_IN_NAMES = frozenset('<>:"|?*')
_BAD_NAME_CHAR = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')

ProgressCallback = Callable[[str, int, int], None]
"""``progress(phase, done, total)``; phases: export, encrypt, decrypt, verify, import."""


@dataclass(frozen=True, slots=True)
class BundleLimits:
    """Caps applied while reading a bundle; every one is checked on counted bytes, not headers."""

    max_bundle_bytes: int = 8 * 1024**3
    max_entries: int = 100_001
    max_directory_bytes: int = 64 * 1024 * 1024
    max_manifest_bytes: int = 64 * 1024 * 1024
    max_file_bytes: int = 8 * 1024 * 1024
    max_total_bytes: int = 4 * 1024**3
    max_ratio: int = 200
    ratio_floor_bytes: int = 1024 * 1024
    # The longest entry name a store path can give (its meta file under ``blueprints/``), so every
    # bundle an export can write is readable; the store has no depth limit, and neither has this
    # (the name length bounds the parts, and no entry name ever becomes a file or folder here).
    max_path_chars: int = MAX_ENTRY_NAME_CHARS
    max_scrypt_bytes: int = 256 * 1024 * 1024

    @classmethod
    def for_store(cls, store: BlueprintStore, **changes: Any) -> BundleLimits:
        """Limits matching a store's YAML size limit."""
        return cls(**{"max_file_bytes": store.limits.max_bytes, **changes})


class _CountingReader:
    """Wrap a file to report how many bytes were read (progress while encrypting/decrypting)."""

    def __init__(self, fh: IO[bytes], total: int, phase: str, progress: ProgressCallback) -> None:
        self._fh = fh
        self._total = total
        self._done = 0
        self._phase = phase
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        """Read like the wrapped file and report the running total."""
        data = self._fh.read(n)
        self._done += len(data)
        self._progress(self._phase, self._done, self._total)
        return data


def path_arg(name: str, value: Any) -> Path:
    """A file path argument of the bundle API: str or os.PathLike, no NUL (an int or None
    failed inside pathlib with a raw TypeError, a NUL with a raw ValueError)."""
    if not isinstance(value, str | os.PathLike):
        raise wrong_type(
            f"{name}",
            value,
            "a file path (str or os.PathLike)",
            hint=f"pass {name} as a str or pathlib.Path",
        )
    path = Path(value)
    if "\x00" in str(path) or not str(value):
        raise InvalidInputError(
            f"{name} {str(value)!r} is not a usable file path (empty, or holds a NUL)",
            hint=f"pass the bundle file's real path as {name}",
        )
    return path


def callable_arg(name: str, value: Any) -> None:
    """An optional callback (progress, merger): None or callable (else a raw TypeError came
    from deep inside, mid-export or mid-import)."""
    if value is not None and not callable(value):
        raise wrong_type(
            f"{name}", value, "callable", hint=f"pass a function as {name}, or leave it out"
        )


def options_arg(passphrase: Any, limits: Any) -> None:
    """The passphrase and limits of an export or import."""
    if passphrase is not None and not isinstance(passphrase, str):
        raise wrong_type(
            "passphrase",
            passphrase,
            "a string",
            hint="pass the passphrase as text, or leave it out for an unencrypted bundle",
        )
    if limits is not None and not isinstance(limits, BundleLimits):
        raise wrong_type(
            "limits",
            limits,
            "a BundleLimits",
            hint="pass localstore.archive.BundleLimits(...), or leave it out for the defaults",
        )


def is_encrypted(path: str | os.PathLike[str]) -> bool:
    """True if the file is an encrypted bundle.

    Raises NotFoundError (no such file), BundleFormatError (no bundle, or not a regular file),
    StorageError (unreadable), InvalidInputError (not a path).
    """
    src = path_arg("path", path)
    try:
        # Non-blocking, and the type checked on the open file: opening a FIFO for reading would
        # otherwise wait for a writer forever, and a stat before the open could be raced.
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise NotFoundError(f"no such bundle: {src}", hint="check the file name") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {src}: {exc.strerror or exc}") from exc
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleFormatError(f"{src} is not a regular file", hint="give a .lsbundle file")
        head = fh.read(len(ENCRYPTED_MAGIC))
    if head == ENCRYPTED_MAGIC:
        return True
    if head[:4] in _ZIP_MAGICS:
        return False
    if not head:
        # (A download cut short, or `> x.lsbundle` by mistake: "not a .lsbundle" sent people
        # looking for what else the file might be.)
        raise BundleFormatError(
            f"{os.fspath(path)} is empty (0 bytes)",
            hint="export the bundle again, or copy it again if the copy was cut short",
        )
    raise BundleFormatError(f"{os.fspath(path)} is not a .lsbundle", hint=_NOT_A_BUNDLE_HINT)


# A person with a plain YAML file (or a zip of them) tries import first: point at save.
_NOT_A_BUNDLE_HINT = (
    "export one with 'localstore export'; a YAML file is added with "
    "'localstore save PATH -f FILE' (store.save() from Python)"
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


def private_cache(root: Path) -> None:
    """Make the cache folder (0700 when made here) and take write access off group and others.

    It holds what the user meant to keep encrypted: the decrypted zip of an import, the plaintext
    zip of an encrypted export. Their files are 0600 in a 0700 staging folder, but in a folder
    others may write, another user can rename that staging folder (or the export's temp file)
    away between its creation and its use and put one of their own in its place, which we would
    then fill with plaintext. A folder made under umask 000 (Paths.ensure follows the umask for
    the cache) or opened up since is such a folder. A sticky folder (like /tmp) is safe: others
    cannot rename what they do not own there.
    """
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "nt":  # pragma: no cover - no POSIX modes
        return
    try:
        st = root.stat()
    except OSError:  # pragma: no cover - gone since mkdir; its first use will say
        return
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o022 or mode & stat.S_ISVTX:
        return
    try:
        root.chmod(mode & ~0o022)
    except OSError as exc:
        raise StorageError(
            f"the cache folder {root} can be written by other users (mode {mode:o}) and cannot "
            f"be made private: {exc.strerror or exc}",
            hint=f"run `chmod go-w '{root}'`: decrypted bundles are staged there",
        ) from exc
    log.warning(
        "cache folder %s had mode %o (others could swap the files that hold decrypted bundles); "
        "made it %o",
        root,
        mode,
        mode & ~0o022,
    )


def sweep_stale_temps(root: Path) -> None:
    """Remove staging folders left by imports, and plaintext zips left by encrypted exports, that
    were killed: both may hold what the user meant to keep encrypted.

    A ``finally`` cannot run after SIGKILL or power loss; each folder's lock (_held_temps) tells
    a leftover from a concurrent import or export that is still running, in any pid namespace.
    """
    for prefix in (STAGING_PREFIX, EXPORT_TEMP_PREFIX):
        for leftover in root.glob(f"{prefix}*"):
            if leftover.is_dir():
                remove_if_dead(leftover, prefix)
            elif prefix == EXPORT_TEMP_PREFIX and leftover.name.endswith(fs.TEMP_SUFFIX):
                _remove_old_export_temp(leftover)


def _remove_old_export_temp(leftover: Path) -> None:
    """An older version's plaintext zip, a file ``export-<pid>-XXXX.lstmp`` with no lock: its pid
    decides, as it did."""
    pid_text = leftover.name[len(EXPORT_TEMP_PREFIX) :].split("-", 1)[0]
    if pid_text.isdigit() and not process_alive(int(pid_text)):
        try:
            leftover.unlink()
        except OSError:  # removed by another export or import meanwhile
            pass


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


def scrypt_within_limits(log2n: int, r: int, p: int, limits: BundleLimits) -> bool:
    """Whether an import under ``limits`` derives a key with these scrypt parameters.

    Counted as 128 * r * N * p bytes: scrypt's memory is 128 * r * N, and p multiplies its work,
    so counting it bounds both. Export checks the same, so it never writes a bundle import refuses.
    """
    return log2n <= 40 and 128 * r * (2**log2n) * max(p, 1) <= limits.max_scrypt_bytes


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


@dataclass(slots=True)
class _Stats:
    total_out: int = 0
    total_in: int = 0


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


def _no_manifest(files: dict[str, zipfile.ZipInfo]) -> BundleFormatError:
    """The error for a zip without ``manifest.json``: a bundle unpacked and zipped again as its
    folder (what Finder's Compress and Explorer's Send to do) holds it one level down, and "is
    it a .lsbundle?" did not say so."""
    inner = sorted(n for n in files if n.count("/") == 1 and n.endswith("/" + MANIFEST_NAME))
    if len(inner) == 1:
        folder = inner[0].split("/", 1)[0]
        return BundleFormatError(
            f"the bundle has no manifest.json at its top, but its folder {folder[:80]!r} holds "
            "one: it was zipped as a folder",
            hint="zip what the folder holds (manifest.json and blueprints/), not the folder, "
            "or export the bundle again",
        )
    # A zip of loose YAML files, most likely: "is it a .lsbundle?" gave no way on.
    return BundleFormatError(
        "the bundle has no manifest.json: it is a zip, not a .lsbundle", hint=_NOT_A_BUNDLE_HINT
    )


# -- the zip directory ------------------------------------------------------------------------------

_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


def _precheck_directory(fh: IO[bytes], limits: BundleLimits, name: str) -> int:
    """Bound the central directory before zipfile reads it whole; return where it starts.

    zipfile trusts the end record's directory size and reads that many bytes, then builds one
    object per record: a forged size or count must be refused first.
    """
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    tail_len = min(size, _EOCD.size + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + _EOCD.size > len(tail):
        # It starts as a bundle (is_encrypted saw the zip magic) but has no end: almost always a
        # download or copy cut short. zipfile's words for it named no file and no way out.
        raise BundleFormatError(
            f"{name} is damaged or truncated: it starts as a .lsbundle but its end is missing",
            hint="an interrupted download or copy leaves this: copy (or export) it again",
        )
    fields = _EOCD.unpack(tail[pos : pos + _EOCD.size])
    count, cd_size, record_at = fields[4], fields[5], size - tail_len + pos
    locator_at = pos - _EOCD64_LOCATOR.size
    if locator_at >= 0 and tail[locator_at : locator_at + 4] == b"PK\x06\x07":
        # As zipfile does: a zip64 locator right before the end record means zip64 values.
        count, cd_size, record_at = _zip64_directory(fh, tail, pos, size - tail_len)
    if count > limits.max_entries:
        raise BundleLimitError(
            f"bundle lists {count} entries, over the limit of {limits.max_entries}"
        )
    if cd_size > limits.max_directory_bytes:
        raise BundleLimitError(
            f"bundle directory is {cd_size} bytes, over the limit of {limits.max_directory_bytes}"
        )
    cd_start = record_at - cd_size
    if cd_start < 0:
        raise BundleFormatError("zip directory size points before the start of the file")
    _count_directory_records(fh, cd_start, cd_size, limits)
    return cd_start


_CD_RECORD = 46  # a central directory record's fixed part
_CD_LENGTHS = struct.Struct("<3H")  # its name, extra and comment lengths, at offset 28


def _count_directory_records(
    fh: IO[bytes], cd_start: int, cd_size: int, limits: BundleLimits
) -> None:
    """Refuse a directory holding more records than the entry cap, before zipfile parses it.

    zipfile reads records until it has consumed the directory's size, whatever the end record's
    count says: a count forged to 1 over 64 MiB of 47-byte records made it build 1.4 million
    ZipInfo objects (700 MB, 20 s) before the cap on their number could be checked. Walking the
    records' lengths costs a struct read each and stops at the cap.
    """
    fh.seek(cd_start)
    directory = fh.read(cd_size)
    pos = records = 0
    while pos < len(directory):
        records += 1
        if records > limits.max_entries:
            raise BundleLimitError(
                f"bundle directory holds more than {limits.max_entries} entries",
                hint="split the export into several bundles",
            )
        if directory[pos : pos + 4] != b"PK\x01\x02" or pos + _CD_RECORD > len(directory):
            raise BundleFormatError("not a readable zip file: its directory is corrupt")
        name_len, extra_len, comment_len = _CD_LENGTHS.unpack_from(directory, pos + 28)
        pos += _CD_RECORD + name_len + extra_len + comment_len


def _zip64_directory(fh: IO[bytes], tail: bytes, pos: int, tail_at: int) -> tuple[int, int, int]:
    # zipfile locates the zip64 record just before the locator, not at the recorded offset.
    at = tail_at + pos - _EOCD64_LOCATOR.size - _EOCD64.size
    if at < 0:
        raise BundleFormatError("zip64 end record is truncated")
    fh.seek(at)
    raw = fh.read(_EOCD64.size)
    if len(raw) != _EOCD64.size or raw[:4] != b"PK\x06\x06":
        raise BundleFormatError("zip64 end record is corrupt")
    rec = _EOCD64.unpack(raw)
    return int(rec[7]), int(rec[8]), at


def _open_zipfile(fh: IO[bytes], name: str) -> zipfile.ZipFile:
    fh.seek(0)
    damaged = "it may be damaged: copy (or export) it again"
    try:
        return zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, struct.error) as exc:
        raise BundleFormatError(f"{name} is not a readable zip file: {exc}", hint=damaged) from exc
    except (ValueError, OverflowError, NotImplementedError) as exc:
        # zipfile raises these for malformed names (bad UTF-8) and impossible field values.
        raise BundleFormatError(
            f"{name} is not a readable zip file: {type(exc).__name__}: {exc}", hint=damaged
        ) from exc


def _check_name(name: str, limits: BundleLimits) -> str:
    """Return the entry's name without a trailing '/', or raise for an unsafe or over-long name."""
    shown = repr(name[:80])
    if "\x00" in name:
        raise UnsafeBundleError(f"entry name {shown} contains a NUL byte")
    if "\\" in name:
        raise UnsafeBundleError(f"entry name {shown} contains a backslash")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafeBundleError(f"entry name {shown} is an absolute path")
    if len(name) > limits.max_path_chars and not _may_be_mac_metadata(name):
        raise _too_long(limits)
    bare = name[:-1] if name.endswith("/") else name
    parts = bare.split("/")
    if any(seg in ("", ".", "..") for seg in parts):
        raise UnsafeBundleError(f"entry name {shown} has an empty, '.' or '..' part")
    # One scan of the name, not a generator per character; Finder's "Icon\r" (or its AppleDouble
    # "._Icon\r") is scanned without its final '\r'.
    bad = _BAD_NAME_CHAR.search(bare[:-1] if _is_finder_icon(bare) else bare)
    if bad is not None:
        if bad.group() in _FORBIDDEN_IN_NAMES:
            raise UnsafeBundleError(
                f"entry name {shown} contains a character not allowed on every OS"
            )
        raise UnsafeBundleError(f"entry name {shown} contains a control character")
    return bare


def _too_long(limits: BundleLimits) -> BundleLimitError:
    return BundleLimitError(f"entry name is longer than {limits.max_path_chars} characters")


def _may_be_mac_metadata(name: str) -> bool:
    """Whether an over-long name may be a Mac's AppleDouble file, to be proven once the entries
    can be read (_check_long_names). Such a file's name is its file's and 2 characters more
    (``._``), 11 under ``__MACOSX/``: a blueprint path near the limit fits, its AppleDouble
    files did not, and the whole bundle was refused for what is passed by unread."""
    return name.startswith(_MAC_FORKS_FOLDER) or (
        name.startswith(ENTRY_PREFIX) and name.rsplit("/", 1)[-1].startswith("._")
    )


def _check_long_names(
    long: Sequence[zipfile.ZipInfo], reader: _EntryReader, limits: BundleLimits
) -> None:
    """Refuse an over-long name unless it is a Mac's: any under ``__MACOSX/`` (never read, as
    there at any length), a ``._`` file beside the blueprints only if it starts with AppleDouble's
    magic (its 4 first bytes; a name alone could hide a blueprint's file)."""
    for info in long:
        name = info.orig_filename
        if name.startswith(_MAC_FORKS_FOLDER):
            continue
        if _is_folder(info) or not _is_apple_double(info, reader):
            raise _too_long(limits)


def _is_finder_icon(bare: str) -> bool:
    """Whether the entry's base name is Finder's custom-icon file or its AppleDouble file."""
    return bare.endswith(_FINDER_ICON) and bare.rsplit("/", 1)[-1] in (
        _FINDER_ICON,
        "._" + _FINDER_ICON,
    )


_METHOD_NAMES = {9: "Deflate64", 12: "bzip2", 14: "LZMA", 93: "Zstandard", 95: "XZ", 98: "PPMd"}
_UTF8_FLAG = 0x800  # general purpose bit 11: the name is UTF-8
_MS_DOS = 0  # "version made by" system: MS-DOS and FAT, what Windows zip tools write


def _decode_name(raw: bytes, flags: int) -> str:
    """An entry name from its bytes: UTF-8 when flagged so, and also when not flagged but valid
    UTF-8, else CP437 (the zip default); composed (NFC), as the manifest's paths are.

    Info-ZIP's ``zip`` on Unix and macOS's Archive Utility write UTF-8 names without the flag, and
    macOS writes them decomposed: zipfile read ``café`` from such a zip as ``caf├⌐`` and an NFD
    name as another string than the manifest's, so a bundle unpacked and zipped again was
    refused as lacking a file it held. Bytes that are valid UTF-8 are almost never meant as
    CP437 (as CP437 they read as a box-drawing, Greek or math sign followed by accented
    letters), so other readers take them as UTF-8 too. Composing cannot merge two entries unnoticed: names
    equal once composed already collide in the duplicate check (files.path_key)."""
    if flags & _UTF8_FLAG:
        name = raw.decode("utf-8")
    else:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            name = raw.decode("cp437")
    return unicodedata.normalize("NFC", name)


def _dos_separators(name: str, system: int) -> str:
    """A name made on MS-DOS/FAT with '\\' read as '/' between folders, as Info-ZIP's unzip and
    libarchive read it: PowerShell's Compress-Archive (Windows PowerShell 5.1) writes
    ``blueprints\\team\\x.blueprint.yaml``, and such a bundle was refused for its backslashes.
    Only there: on Unix a backslash is a character of a file name, refused as before. The name
    is then checked as any other ('..', absolute, ...)."""
    return name.replace("\\", "/") if system == _MS_DOS else name


def _read_name_as_written(info: zipfile.ZipInfo) -> None:
    """Give ``info`` the name :func:`_decode_name` reads (its local header is checked against the
    same reading), in place of zipfile's, with a DOS name's separators as '/'."""
    if info.flag_bits & _UTF8_FLAG:
        raw = info.orig_filename.encode("utf-8")
    else:
        raw = info.orig_filename.encode("cp437")  # (zipfile decoded it so: a bijection)
    try:
        name = _decode_name(raw, info.flag_bits)
    except UnicodeDecodeError:  # (zipfile decoded it; the same bytes decode the same way)
        name = info.orig_filename
    name = _dos_separators(name, info.create_system)
    if name != info.orig_filename:
        info.orig_filename = info.filename = name


def _check_type(info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    shown = repr(info.orig_filename[:80])
    if kind == stat.S_IFLNK:
        raise UnsafeBundleError(f"entry {shown} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeBundleError(f"entry {shown} is a device, pipe or socket")
    if info.flag_bits & 0x1:
        raise BundleFormatError(f"entry {shown} uses zip encryption, which bundles never do")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # A bundle zipped again by a tool set to another method: "uses compression method 12"
        # named neither the method nor the way out.
        method = _METHOD_NAMES.get(info.compress_type, "an unknown method")
        raise BundleFormatError(
            f"entry {shown} is compressed with {method} (zip method {info.compress_type}); "
            "bundles hold stored or deflated entries only",
            hint="zip the files again with the Deflate method (7-Zip: -mm=Deflate), or "
            "export the bundle again",
        )


def _check_listing(
    zf: zipfile.ZipFile, fh: IO[bytes], cd_start: int, limits: BundleLimits
) -> tuple[dict[str, zipfile.ZipInfo], _EntryReader]:
    """Check every entry's name, type and byte range; return the file entries by name and a
    reader of their contents."""
    listing = zf.infolist()
    if len(listing) > limits.max_entries:
        raise BundleLimitError(f"bundle has more than {limits.max_entries} entries")
    files: dict[str, zipfile.ZipInfo] = {}
    seen: dict[str, tuple[str, bool]] = {}  # by path key: the first name, and if a folder's
    long = []  # over-long names that may be a Mac's, checked once the entries can be read
    for info in listing:
        _read_name_as_written(info)
        bare = _check_name(info.orig_filename, limits)
        if len(info.orig_filename) > limits.max_path_chars:
            long.append(info)
        _check_type(info)
        is_dir = _is_folder(info)
        _check_unique_name(seen, bare, is_dir)
        if is_dir:
            if info.file_size or info.compress_size > 2:
                raise UnsafeBundleError(f"folder entry {bare[:80]!r} has content")
            continue
        files[bare] = info
    reader = _EntryReader(fh, _check_ranges(listing, fh, cd_start))
    _check_long_names(long, reader, limits)
    return files, reader


# The MS-DOS attributes' folder bit, in the low byte of an entry's external attributes.
_DOS_FOLDER = 0x10


def _is_folder(info: zipfile.ZipInfo) -> bool:
    """Whether the entry is a folder: a name ending in '/', a unix folder mode, or, for an entry
    with no unix mode, the MS-DOS folder attribute. Some Windows tools write a folder so, with no
    '/' (zipfile's ``is_dir`` looks at the name alone): it was read as an unlisted file and the
    bundle refused. A unix mode, when there is one, decides (the DOS byte of a file is no folder's).
    """
    mode = info.external_attr >> 16
    if info.orig_filename.endswith("/") or stat.S_ISDIR(mode):
        return True
    return stat.S_IFMT(mode) == 0 and bool(info.external_attr & _DOS_FOLDER)


def _check_unique_name(seen: dict[str, tuple[str, bool]], bare: str, is_dir: bool) -> None:
    """Refuse an entry whose name another one has (also caseless, as macOS and Windows compare).

    Two folder entries pass: no folder entry ever becomes a folder here, so two naming one folder
    say nothing a reader uses, and ``zip -r`` of a Linux tree holding ``Team/`` and an empty
    ``team/`` writes two (the whole bundle was refused for them). A file stays refused beside
    anything of its name: which one would be read is the question a collision leaves open."""
    key = fs.path_key(bare)
    earlier = seen.get(key)
    if earlier is None:
        seen[key] = (bare, is_dir)
        return
    if is_dir and earlier[1]:
        return
    name = earlier[0]
    what = "twice" if name == bare else f"as {name!r} too (names differ by case)"
    raise UnsafeBundleError(f"entry {bare[:80]!r} appears {what}")


def _check_ranges(
    listing: Sequence[zipfile.ZipInfo], fh: IO[bytes], cd_start: int
) -> dict[str, int]:
    """Refuse entries whose bytes overlap each other or the directory (CVE-2024-0450), or whose
    local header does not match the directory; return where each entry's data starts."""
    prev_end, prev_name = 0, ""
    data_at: dict[str, int] = {}
    for info in sorted(listing, key=lambda i: i.header_offset):
        shown = repr(info.orig_filename[:80])
        start = info.header_offset
        if start < 0:
            raise BundleFormatError(f"entry {shown} starts before the file")
        if start < prev_end:
            raise UnsafeBundleError(
                f"entries {prev_name[:80]!r} and {shown} overlap (a zip bomb or a forged archive)"
            )
        fh.seek(start)
        raw = fh.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
            raise BundleFormatError(f"entry {shown} has no local header")
        header = _LOCAL_HEADER.unpack(raw)
        _check_local_name(info, fh.read(header[10]), header[3])
        data_at[info.orig_filename] = start + _LOCAL_HEADER.size + header[10] + header[11]
        end = data_at[info.orig_filename] + info.compress_size
        if end > cd_start:
            raise UnsafeBundleError(f"entry {shown} overlaps the zip directory or the file end")
        prev_end, prev_name = end, info.orig_filename
    return data_at


def _check_local_name(info: zipfile.ZipInfo, raw: bytes, flags: int) -> None:
    # As zipfile does: the name is judged from the directory, so the local copy must agree
    # (read by the same rule, so a tool leaving the UTF-8 flag off in both agrees).
    try:
        name = _dos_separators(_decode_name(raw, flags), info.create_system)
    except UnicodeDecodeError as exc:
        raise BundleFormatError(f"entry {info.orig_filename[:80]!r} is corrupt: {exc}") from exc
    if name != info.orig_filename:
        raise BundleFormatError(
            f"entry {info.orig_filename[:80]!r} has another name in its local header"
        )


# -- streaming reads --------------------------------------------------------------------------------


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


# JSON values a manifest may hold per blueprint it can list (an entry is 8 with its two file
# objects: room for fields a later minor version adds), and for its header.
_VALUES_PER_BLUEPRINT = 16
_HEADER_VALUES = 1024
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _too_many_values(raw: bytes, budget: int) -> bool:
    """True if ``raw`` holds more than ``budget`` JSON values (commas outside strings, plus one).

    Checked before parsing: json.loads costs up to ~25 bytes of memory per input byte
    (``[{},{},...]``: 64 MiB of manifest took 1.6 GB) and has no hook for every kind of value.
    Commas are counted at C speed; only when there are too many are those inside strings (a path
    may hold commas) found and taken off, one string at a time so nothing large is built."""
    commas = raw.count(b",")
    if commas < budget:
        return False
    outside = end = 0
    for m in _JSON_STRING.finditer(raw):
        commas -= raw.count(b",", m.start(), m.end())
        outside += raw.count(b",", end, m.start())
        end = m.end()
        if commas < budget:
            return False
        if outside >= budget:  # already too many, whatever the rest holds
            return True
    return True


def _read_manifest(
    reader: _EntryReader, info: zipfile.ZipInfo, limits: BundleLimits, stats: _Stats
) -> Any:
    buf = io.BytesIO()
    _stream_entry(reader, info, buf, limits.max_manifest_bytes, limits, stats)
    raw = buf.getvalue()
    budget = _HEADER_VALUES + _VALUES_PER_BLUEPRINT * (limits.max_entries // 2)
    if _too_many_values(raw, budget):
        raise BundleLimitError(
            f"manifest.json holds more than {budget} values, more than "
            f"{limits.max_entries // 2} blueprints need"
        )
    del buf
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleFormatError(f"manifest.json is not valid JSON: {str(exc)[:200]}") from exc


# -- the manifest -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Wanted:
    id: str
    path: str
    yaml_name: str
    meta_name: str
    yaml_size: int
    yaml_sha256: str
    meta_size: int
    meta_sha256: str
    ancestors: tuple[str, ...] = ()
    put_aside_from: str = ""


def _parse_manifest(data: Any, limits: BundleLimits) -> tuple[dict[str, Any], list[_Wanted]]:
    if not isinstance(data, dict):
        raise BundleFormatError("manifest.json must be a JSON object")
    if data.get("format") != FORMAT_NAME:
        raise BundleFormatError(
            f"manifest format is {str(data.get('format'))[:60]!r}, not {FORMAT_NAME!r}",
            hint="is it a .lsbundle?",
        )
    version = _check_version(data.get("version"))
    created = data.get("created", "")
    device = data.get("source_device", {})
    generator = data.get("generator", "")
    if not isinstance(created, str) or not isinstance(generator, str):
        raise BundleFormatError("manifest 'created' and 'generator' must be strings")
    if not isinstance(device, dict) or not all(
        isinstance(device.get(k, ""), str) for k in ("id", "name")
    ):
        raise BundleFormatError("manifest 'source_device' must be an object of strings")
    for what, text in (
        ("created", created),
        ("generator", generator),
        ("source_device.id", device.get("id", "")),
        ("source_device.name", device.get("name", "")),
    ):
        _check_text(what, text)
    raw_entries = data.get("blueprints")
    if not isinstance(raw_entries, list):
        raise BundleFormatError("manifest 'blueprints' must be a list")
    if 2 * len(raw_entries) + 1 > limits.max_entries:
        raise BundleLimitError(f"manifest lists more than {limits.max_entries} files")
    wanted = [_parse_entry(e, i) for i, e in enumerate(raw_entries)]
    _check_unique(wanted)
    total = sum(w.yaml_size + w.meta_size for w in wanted)
    if total > limits.max_total_bytes:
        raise BundleLimitError(f"manifest lists {total} bytes, over {limits.max_total_bytes}")
    header = {
        "format_version": version,
        "created": created,
        "source_device": {"id": str(device.get("id", "")), "name": str(device.get("name", ""))},
        "generator": generator,
    }
    return header, wanted


def _check_text(what: str, text: str) -> None:
    """Refuse a header string holding a lone surrogate (a ``\\uD800`` escape): these strings go
    out with the plan, and no UTF-8 writer takes one (``import --json`` failed with an error to
    report). Paths are refused for it by their own check; ids and hashes are ASCII."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BundleFormatError(
            f"manifest {what!r} holds a lone UTF-16 surrogate escape, which is no character",
            hint="the bundle was not written by localstore, or was modified; export it again",
        ) from exc


def _check_version(version: Any) -> str:
    match = _VERSION_RE.match(version) if isinstance(version, str) else None
    if match is None:
        raise BundleFormatError(f"manifest version {str(version)[:40]!r} is not 'MAJOR.MINOR'")
    major = int(match.group(1))
    if major > FORMAT_MAJOR:
        raise BundleFormatError(
            f"bundle format version {version} is newer than this localstore reads "
            f"({FORMAT_MAJOR}.x)",
            hint="upgrade localstore to import it",
        )
    if major < FORMAT_MAJOR:
        raise BundleFormatError(f"bundle format version {version} is not supported")
    return str(version)


def _parse_file(entry: dict[str, Any], key: str, where: str) -> tuple[int, str]:
    spec = entry.get(key)
    if not isinstance(spec, dict):
        raise BundleFormatError(f"{where}: {key!r} must be an object with size and sha256")
    size, digest = spec.get("size"), spec.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BundleFormatError(f"{where}: {key}.size must be a non-negative integer")
    if not isinstance(digest, str) or not _SHA256_RE.match(digest):
        raise BundleFormatError(f"{where}: {key}.sha256 must be 64 lowercase hex digits")
    return size, digest


def _parse_entry(entry: Any, index: int) -> _Wanted:
    where = f"manifest blueprint #{index}"
    if not isinstance(entry, dict):
        raise BundleFormatError(f"{where} must be an object")
    bp_id, path = entry.get("id"), entry.get("path")
    if not isinstance(bp_id, str) or not is_uuid(bp_id) or bp_id != bp_id.lower():
        raise BundleFormatError(f"{where}: 'id' must be a lowercase UUID")
    if not isinstance(path, str):
        raise BundleFormatError(f"{where}: 'path' must be a string")
    _check_canonical(path, where, "path")
    yaml_size, yaml_sha = _parse_file(entry, "yaml", where)
    meta_size, meta_sha = _parse_file(entry, "meta", where)
    ancestors = _parse_ancestors(entry.get("ancestors", []), where)
    aside = entry.get("put_aside_from", "")
    if "put_aside_from" in entry:
        # Checked as the entry's own path is: it may decide where a blueprint stays, and an
        # importer compares it with paths here, so a malformed one refuses the bundle.
        if not isinstance(aside, str):
            raise BundleFormatError(f"{where}: 'put_aside_from' must be a string (a path)")
        _check_canonical(aside, where, "put_aside_from")
    return _Wanted(
        id=bp_id,
        path=path,
        yaml_name=ENTRY_PREFIX + path,
        meta_name=ENTRY_PREFIX + fs.meta_path_for(path),
        yaml_size=yaml_size,
        yaml_sha256=yaml_sha,
        meta_size=meta_size,
        meta_sha256=meta_sha,
        ancestors=ancestors,
        put_aside_from=aside,
    )


def _check_canonical(path: str, where: str, key: str) -> None:
    """Refuse a manifest path that is unsafe or not in the canonical form a writer gives it."""
    try:
        canonical = fs.normalize_path(path)
    except UnsafePathError as exc:
        what = "unsafe path" if key == "path" else f"{key!r} is unsafe"
        raise UnsafeBundleError(f"{where}: {what}: {exc.message}") from exc
    if canonical != path:
        what = "path" if key == "path" else f"{key!r} path"
        raise UnsafeBundleError(f"{where}: {what} {path[:80]!r} is not a canonical blueprint path")


def _parse_ancestors(value: Any, where: str) -> tuple[str, ...]:
    """The entry's "ancestors" (format 1.1), checked like the hashes next to them: a malformed list
    refuses the bundle rather than being half-believed, as it decides whether import overwrites."""
    if not isinstance(value, list):
        raise BundleFormatError(f"{where}: 'ancestors' must be a list of content hashes")
    if len(value) > MAX_ANCESTORS:
        raise BundleFormatError(
            f"{where}: 'ancestors' lists {len(value)} hashes, more than {MAX_ANCESTORS}"
        )
    for digest in value:
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            raise BundleFormatError(f"{where}: 'ancestors' must hold 64 lowercase hex digits each")
    return tuple(value)


def _check_unique(wanted: Sequence[_Wanted]) -> None:
    ids: set[str] = set()
    keys: dict[str, str] = {}
    for w in wanted:
        if w.id in ids:
            raise BundleFormatError(f"manifest lists blueprint {w.id} twice")
        ids.add(w.id)
        key = fs.path_key(w.path)
        if key in keys:
            raise UnsafeBundleError(
                f"manifest paths {keys[key][:80]!r} and {w.path[:80]!r} collide"
            )
        keys[key] = w.path


def _is_os_metadata(name: str, info: zipfile.ZipInfo, reader: _EntryReader) -> bool:
    """True for an entry a file manager leaves in a folder (_OS_METADATA_NAMES, ``._*``).

    ``._plan.blueprint.yaml`` is a Mac's AppleDouble file and the YAML of a blueprint named
    ``._plan`` alike: a name with a blueprint file's suffix is passed by only when its content
    starts as an AppleDouble file's, which no blueprint file does. (Refused on its name alone,
    a bundle zipped on a Mac from a FAT stick or an SMB share, which has one for every file,
    could not be imported at all.)"""
    base = name.rsplit("/", 1)[-1]
    folded = base.casefold()
    if not folded.endswith((fs.YAML_SUFFIX, fs.META_SUFFIX)):
        return folded in _OS_METADATA_NAMES or base.startswith("._")
    return base.startswith("._") and _is_apple_double(info, reader)


def _is_apple_double(info: zipfile.ZipInfo, reader: _EntryReader) -> bool:
    """Whether the entry's first bytes are AppleDouble's magic (a corrupt entry is not)."""
    try:
        return reader.head(info, len(_APPLE_DOUBLE_MAGIC)) == _APPLE_DOUBLE_MAGIC
    except zlib.error:
        return False


def _match_listing(
    files: dict[str, zipfile.ZipInfo], wanted: Sequence[_Wanted], reader: _EntryReader
) -> tuple[str, ...]:
    """Check that the listing and the manifest agree; return the unlisted entries passed by as a
    file manager's, under blueprints/ and in a Mac zip's __MACOSX/ folder (sorted)."""
    names = {MANIFEST_NAME}
    for w in wanted:
        for name in (w.yaml_name, w.meta_name):
            if name not in files:
                raise BundleFormatError(f"the bundle lacks {name[:100]!r}, listed in its manifest")
            names.add(name)
    ignored = []
    for name in files:
        # Files outside blueprints/ are ignored (room for later minor versions; a Mac zip's
        # __MACOSX/ folder); inside, every file must be accounted for, so nothing slips past the
        # hash checks: listed, or a file manager's, which is never read and holds no blueprint.
        if name.startswith(ENTRY_PREFIX) and name not in names:
            if not _is_os_metadata(name, files[name], reader):
                raise BundleFormatError(f"entry {name[:100]!r} is not listed in the manifest")
            ignored.append(name)
        elif name.startswith(_MAC_FORKS_FOLDER):
            ignored.append(name)  # (never read either; named, as the ones beside the files are)
    return tuple(sorted(ignored))


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
