"""Export and import of blueprints as ``.lsbundle`` files (the format is in docs/bundle-format.md).

A bundle is a zip holding ``manifest.json`` and each blueprint's two files under ``blueprints/``;
an encrypted bundle is a short magic followed by that zip sealed with :func:`crypto.encrypt_stream`
(scrypt + AES-256-GCM in authenticated chunks, so neither side needs the bundle in memory).

Import treats the file as hostile until proven otherwise, in three phases:

1. **Verify** (:func:`open_bundle`): the zip's directory is bounded before ``zipfile`` parses it; every
   entry name, type and byte range is checked (absolute, ``..``, backslash, NUL, links, devices,
   duplicates, case collisions, overlapping entries, CVE-2024-0450); each listed file is streamed to
   a private staging folder under our own caps (bytes are counted while inflating; header sizes are
   not trusted) and checked against the manifest's size and SHA-256; meta files are parsed.
   Staging files are named by number, never by entry name, so nothing can be written outside
   staging whatever the names say. Staging is removed on exit.
2. **Plan** (:func:`plan_import`): each blueprint is matched by id, then by path, and given an action
   under the conflict policy; every YAML the plan would write is parsed within the store's bounds
   (alias bombs, nesting) and one bad document refuses the whole bundle. Nothing is written, so
   ``--dry-run`` is exactly this plan.
3. **Apply**: each planned blueprint goes through :meth:`BlueprintStore.save` (history, events, the
   sync outbox) with ``origin="import"``, one blueprint per transaction: an interrupted import leaves
   every blueprint either as it was or fully imported. What a keep-both or merge produced is recorded
   in the same transaction, so importing the same bundle again changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from localstore import crypto
from localstore import files as fs
from localstore.blueprint import (
    BlueprintInfo,
    BlueprintMeta,
    YamlLimits,
    content_hash,
    decode_meta,
    encode_meta,
    is_uuid,
    new_id,
    parse_yaml,
    utc_now,
)
from localstore.errors import (
    AlreadyExistsError,
    BundleFormatError,
    BundleIntegrityError,
    BundleLimitError,
    DecryptionError,
    InvalidInputError,
    InvalidMetaError,
    InvalidYAMLError,
    LimitExceededError,
    LocalStoreError,
    NotFoundError,
    StorageError,
    UnsafeBundleError,
    UnsafePathError,
)
from localstore.store import SaveRequest

if TYPE_CHECKING:
    from localstore.store import BlueprintStore, Row

__all__ = [
    "CONFLICT_POLICIES",
    "ENCRYPTED_MAGIC",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "BundleEntry",
    "BundleLimits",
    "ExportResult",
    "ImportItem",
    "ImportResult",
    "Merger",
    "ProgressCallback",
    "VerifiedBundle",
    "export_bundle",
    "export_yaml",
    "import_bundle",
    "is_encrypted",
    "open_bundle",
    "plan_import",
    "select_blueprints",
]

FORMAT_NAME = "localstore-bundle"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
FORMAT_VERSION = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"
MANIFEST_NAME = "manifest.json"
ENTRY_PREFIX = "blueprints/"
# Encrypted container: this magic (name + container version) then a crypto stream whose associated
# data is the magic, so the container header cannot be swapped without failing authentication.
ENCRYPTED_MAGIC = b"LSBUNDLE\x01"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
CONFLICT_POLICIES = ("skip", "overwrite", "keep-both", "merge")
STAGING_PREFIX = "import-staging-"
ORIGIN = "import"
MAX_META_BYTES = 1024 * 1024
_CHUNK = 64 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^(\d{1,6})\.(\d{1,6})$")
# As in blueprint paths (files.py): ':' would also name an NTFS alternate stream.
_FORBIDDEN_IN_NAMES = frozenset('<>:"|?*')

ProgressCallback = Callable[[str, int, int], None]
"""``progress(phase, done, total)``; phases: export, encrypt, decrypt, verify, import."""

Merger = Callable[[str | None, str, str], str | None]
"""``merger(base, local, incoming)`` -> merged YAML text, or None when it cannot merge cleanly.

The CLI passes the sync merge ladder when the ``sync`` package is installed; ``localstore`` itself
never imports ``sync``. ``base`` is None: a bundle carries no common ancestor.
"""

_ARCHIVE_MIGRATIONS = (
    """
    CREATE TABLE archive_imports (
        src_id TEXT NOT NULL,
        src_hash TEXT NOT NULL,
        result_id TEXT NOT NULL,
        action TEXT NOT NULL,
        ts TEXT NOT NULL,
        PRIMARY KEY (src_id, src_hash)
    ) WITHOUT ROWID;
    """,
)


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
    max_path_chars: int = 1024
    max_depth: int = 32
    max_scrypt_bytes: int = 256 * 1024 * 1024

    @classmethod
    def for_store(cls, store: BlueprintStore, **changes: Any) -> BundleLimits:
        """Limits matching a store's YAML size limit."""
        return cls(**{"max_file_bytes": store.limits.max_bytes, **changes})


# ---------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    count: int
    size: int
    encrypted: bool
    ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "path": str(self.path),
            "count": self.count,
            "size": self.size,
            "encrypted": self.encrypted,
            "ids": list(self.ids),
        }


@dataclass(slots=True)
class ImportItem:
    """One blueprint of a bundle and what import does (or did) with it."""

    id: str
    path: str
    action: str  # create | unchanged | skip | overwrite | restore | keep-both | merge
    reason: str = ""
    target_id: str = ""
    target_path: str = ""
    status: str = "planned"  # planned | done | failed
    error: str = ""
    rev: int = 0
    # Private to apply: where the content comes from and the revision the plan was made against.
    _entry: BundleEntry | None = field(default=None, repr=False)
    _content: bytes | None = field(default=None, repr=False)
    _meta: BlueprintMeta | None = field(default=None, repr=False)
    _expected_rev: int | None = field(default=None, repr=False)
    _src_hash: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "id": self.id,
            "path": self.path,
            "action": self.action,
            "reason": self.reason,
            "target_id": self.target_id,
            "target_path": self.target_path,
            "status": self.status,
            "error": self.error,
            "rev": self.rev,
        }


@dataclass(slots=True)
class ImportResult:
    """The plan (dry run) or the outcome of an import."""

    bundle: dict[str, Any]
    policy: str
    dry_run: bool
    items: list[ImportItem]

    def counts(self) -> dict[str, int]:
        """Number of items per action (failed items counted under 'failed')."""
        out: dict[str, int] = {}
        for it in self.items:
            key = "failed" if it.status == "failed" else it.action
            out[key] = out.get(key, 0) + 1
        return out

    @property
    def changed(self) -> int:
        """Number of blueprints this import changed (or would change)."""
        return sum(
            1
            for it in self.items
            if it.action not in ("unchanged", "skip") and it.status != "failed"
        )

    @property
    def conflicts_skipped(self) -> int:
        """Conflicts left as they were (policy skip): they need a person's attention."""
        return sum(1 for it in self.items if it.action == "skip")

    @property
    def failed(self) -> int:
        """Items that could not be applied (the store changed under the import)."""
        return sum(1 for it in self.items if it.status == "failed")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "bundle": self.bundle,
            "policy": self.policy,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "changed": self.changed,
            "items": [it.to_dict() for it in self.items],
        }


# ---------------------------------------------------------------------------------------------------
# Export


def select_blueprints(
    store: BlueprintStore,
    refs: Sequence[str] = (),
    *,
    folder: str | None = None,
    tag: str | None = None,
) -> list[BlueprintInfo]:
    """Blueprints named by ``refs`` plus those matching folder and tag; all when nothing is given.

    Raises NotFoundError, AmbiguousRefError for a bad ref.
    """
    chosen: dict[str, BlueprintInfo] = {}
    for ref in refs:
        info = store.resolve(ref)
        chosen[info.id] = info
    if folder or tag or not refs:
        for info in store.list(folder=folder, tag=tag):
            chosen.setdefault(info.id, info)
    return sorted(chosen.values(), key=lambda i: i.path)


def export_bundle(
    store: BlueprintStore,
    dest: str | os.PathLike[str],
    *,
    refs: Sequence[str] = (),
    folder: str | None = None,
    tag: str | None = None,
    passphrase: str | None = None,
    scrypt_params: crypto.ScryptParams | None = None,
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Write the selected blueprints to ``dest`` as a bundle, atomically; encrypt with a passphrase.

    Raises NotFoundError (a ref), StorageError (writing), InvalidInputError (empty passphrase).
    """
    dest_path = Path(dest)
    infos = select_blueprints(store, refs, folder=folder, tag=tag)
    fs.ensure_dir(dest_path.parent.resolve())
    tmp_zip: Path | None = _temp_beside(dest_path) if passphrase is None else _private_temp(store)
    final_tmp: Path | None = None
    try:
        assert tmp_zip is not None
        ids = _write_zip(store, infos, tmp_zip, progress)
        if passphrase is not None:
            final_tmp = _temp_beside(dest_path)
            _encrypt_file(tmp_zip, final_tmp, passphrase, scrypt_params, progress)
        else:
            final_tmp, tmp_zip = tmp_zip, None
        _replace_durably(final_tmp, dest_path)
        final_tmp = None
    finally:
        for leftover in (tmp_zip, final_tmp):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
    size = dest_path.stat().st_size
    return ExportResult(dest_path, len(ids), size, passphrase is not None, tuple(ids))


def export_yaml(store: BlueprintStore, ref: str, dest: str | os.PathLike[str] | None) -> bytes:
    """Return one blueprint's YAML verbatim, and write it to ``dest`` atomically when given."""
    data = store.load(ref).content.encode("utf-8")
    if dest is not None:
        path = Path(dest)
        fs.ensure_dir(path.parent.resolve())
        fs.atomic_write(path, data)
    return data


def _temp_beside(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{fs.TEMP_SUFFIX}")


def _private_temp(store: BlueprintStore) -> Path:
    # The plaintext zip of an encrypted export never goes next to the destination (a USB stick, a
    # shared folder): it lives in the home's cache, readable by the user only, and is deleted.
    store.paths.cache.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="export-", suffix=fs.TEMP_SUFFIX, dir=store.paths.cache)
    os.close(fd)
    return Path(name)


def _zip_info(name: str, when: tuple[int, int, int, int, int, int]) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, so the mode below is meaningful to readers
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def _write_zip(
    store: BlueprintStore,
    infos: Sequence[BlueprintInfo],
    target: Path,
    progress: ProgressCallback | None,
) -> list[str]:
    now = datetime.now(UTC)
    when = (now.year, now.month, now.day, now.hour, now.minute, now.second)
    entries: list[dict[str, Any]] = []
    ids: list[str] = []
    with open(target, "wb") as raw, zipfile.ZipFile(raw, "w", allowZip64=True) as zf:
        # The manifest goes last because its hashes are known only once the files are written;
        # readers find it through the central directory, so its position does not matter.
        for i, info in enumerate(infos):
            bp = store.load(info.id)
            yaml_bytes = bp.content.encode("utf-8")
            meta_bytes = encode_meta(bp.meta)
            zf.writestr(_zip_info(ENTRY_PREFIX + bp.path, when), yaml_bytes, compresslevel=6)
            zf.writestr(
                _zip_info(ENTRY_PREFIX + fs.meta_path_for(bp.path), when),
                meta_bytes,
                compresslevel=6,
            )
            entries.append(_manifest_entry(bp.id, bp.path, yaml_bytes, meta_bytes))
            ids.append(bp.id)
            if progress is not None:
                progress("export", i + 1, len(infos))
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "created": utc_now(),
            "source_device": {"id": store.device_id, "name": store.device_name},
            "generator": f"localstore {_package_version()}",
            "blueprints": entries,
        }
        body = json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8")
        zf.writestr(_zip_info(MANIFEST_NAME, when), body, compresslevel=6)
    _fsync_file(target)
    return ids


def _manifest_entry(bp_id: str, path: str, yaml_bytes: bytes, meta_bytes: bytes) -> dict[str, Any]:
    return {
        "id": bp_id,
        "path": path,
        "yaml": {"size": len(yaml_bytes), "sha256": hashlib.sha256(yaml_bytes).hexdigest()},
        "meta": {"size": len(meta_bytes), "sha256": hashlib.sha256(meta_bytes).hexdigest()},
    }


def _package_version() -> str:
    from localstore import __version__

    return __version__


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_durably(tmp: Path, dest: Path) -> None:
    try:
        os.replace(tmp, dest)
    except OSError as exc:
        raise StorageError(
            f"cannot write {dest}: {exc.strerror or exc}", hint="check the folder and free space"
        ) from exc
    fs.fsync_dir(dest.parent.resolve())


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


def _encrypt_file(
    src: Path,
    dst: Path,
    passphrase: str,
    params: crypto.ScryptParams | None,
    progress: ProgressCallback | None,
) -> None:
    total = src.stat().st_size
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        fout.write(ENCRYPTED_MAGIC)
        reader: Any = fin if progress is None else _CountingReader(fin, total, "encrypt", progress)
        crypto.encrypt_stream(reader, fout, passphrase, aad=ENCRYPTED_MAGIC, params=params)
        fout.flush()
        os.fsync(fout.fileno())


# ---------------------------------------------------------------------------------------------------
# Reading and verifying


def is_encrypted(path: str | os.PathLike[str]) -> bool:
    """True if the file is an encrypted bundle. Raises BundleFormatError if it is no bundle."""
    with open(path, "rb") as fh:
        head = fh.read(len(ENCRYPTED_MAGIC))
    if head == ENCRYPTED_MAGIC:
        return True
    if head[:4] in _ZIP_MAGICS:
        return False
    raise BundleFormatError(
        f"{os.fspath(path)} is not a .lsbundle", hint="export one with 'localstore export'"
    )


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One verified blueprint of a bundle; its YAML waits in the staging folder."""

    id: str
    path: str
    meta: BlueprintMeta
    yaml_file: Path
    yaml_sha256: str
    content_hash: str

    def read_yaml(self) -> bytes:
        """The YAML bytes exactly as in the bundle."""
        return self.yaml_file.read_bytes()


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle whose every byte matched its manifest; valid only inside :func:`open_bundle`."""

    format_version: str
    created: str
    source_device: dict[str, str]
    generator: str
    encrypted: bool
    entries: tuple[BundleEntry, ...]

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
) -> Iterator[VerifiedBundle]:
    """Verify a bundle completely and yield it; its staging folder is removed on exit.

    Raises BundleFormatError, BundleIntegrityError, BundleLimitError, UnsafeBundleError,
    DecryptionError (wrong passphrase or tampered encrypted bundle).
    """
    limits = limits or BundleLimits()
    src = Path(path)
    size = _bundle_size(src)
    if size > limits.max_bundle_bytes:
        raise BundleLimitError(
            f"bundle is {size} bytes, over the limit of {limits.max_bundle_bytes}",
            hint="split the export into several bundles",
        )
    staging = _Staging(staging_root)
    try:
        encrypted = is_encrypted(src)
        zip_path = src
        if encrypted:
            zip_path = staging.path() / "bundle.zip"
            _decrypt_file(src, zip_path, passphrase, limits, progress)
        with open(zip_path, "rb") as fh:
            yield _verify_zip(fh, staging, limits, encrypted, progress)
    finally:
        staging.remove()


class _Staging:
    """A private folder under the cache, made on first use: most hostile bundles are refused
    before anything needs extracting, and creating a folder costs more than checking them."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._path: Path | None = None

    def path(self) -> Path:
        """The folder, created on the first call."""
        if self._path is None:
            self._root.mkdir(parents=True, exist_ok=True)
            _sweep_stale_staging(self._root)
            prefix = f"{STAGING_PREFIX}{os.getpid()}-"
            self._path = Path(tempfile.mkdtemp(prefix=prefix, dir=self._root))
        return self._path

    def remove(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)


def _sweep_stale_staging(root: Path) -> None:
    """Remove staging folders left by imports that were killed (their process is gone).

    A ``finally`` cannot run after SIGKILL or power loss; the folder name carries the pid, so the
    next import can tell a leftover from a concurrent import that is still running.
    """
    for leftover in root.glob(f"{STAGING_PREFIX}*"):
        pid_text = leftover.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but not ours, or no signal support: keep it
        return True
    return True


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
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        fin.seek(len(ENCRYPTED_MAGIC))
        _check_stream_cost(fin, limits)
        reader: Any = fin if progress is None else _CountingReader(fin, total, "decrypt", progress)
        crypto.decrypt_stream(reader, fout, passphrase, aad=ENCRYPTED_MAGIC)


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
    if log2n > 40 or 128 * r * (2**log2n) * max(p, 1) > limits.max_scrypt_bytes:
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
) -> VerifiedBundle:
    cd_start = _precheck_directory(fh, limits)
    zf = _open_zipfile(fh)
    with zf:
        infos = _check_listing(zf, fh, cd_start, limits)
        manifest_info = infos.get(MANIFEST_NAME)
        if manifest_info is None:
            raise BundleFormatError("the bundle has no manifest.json", hint="is it a .lsbundle?")
        stats = _Stats()
        manifest = _read_manifest(zf, manifest_info, limits, stats)
        header, wanted = _parse_manifest(manifest, limits)
        _match_listing(infos, wanted)
        entries = _extract_all(zf, infos, wanted, staging, limits, stats, progress)
    return VerifiedBundle(encrypted=encrypted, entries=tuple(entries), **header)


# -- the zip directory ------------------------------------------------------------------------------

_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


def _precheck_directory(fh: IO[bytes], limits: BundleLimits) -> int:
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
        raise BundleFormatError("not a zip file (no end of central directory)")
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
    return cd_start


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


def _open_zipfile(fh: IO[bytes]) -> zipfile.ZipFile:
    fh.seek(0)
    try:
        return zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, struct.error) as exc:
        raise BundleFormatError(f"not a readable zip file: {exc}") from exc
    except (ValueError, OverflowError, NotImplementedError) as exc:
        # zipfile raises these for malformed names (bad UTF-8) and impossible field values.
        raise BundleFormatError(f"not a readable zip file: {type(exc).__name__}: {exc}") from exc


def _check_name(name: str, limits: BundleLimits) -> str:
    """Return the entry's name without a trailing '/', or raise for an unsafe or over-long name."""
    shown = repr(name[:80])
    if "\x00" in name:
        raise UnsafeBundleError(f"entry name {shown} contains a NUL byte")
    if "\\" in name:
        raise UnsafeBundleError(f"entry name {shown} contains a backslash")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafeBundleError(f"entry name {shown} is an absolute path")
    if len(name) > limits.max_path_chars:
        raise BundleLimitError(f"entry name is longer than {limits.max_path_chars} characters")
    bare = name[:-1] if name.endswith("/") else name
    parts = bare.split("/")
    if len(parts) > limits.max_depth:
        raise BundleLimitError(f"entry {shown} is nested deeper than {limits.max_depth} folders")
    for seg in parts:
        if seg in ("", ".", ".."):
            raise UnsafeBundleError(f"entry name {shown} has an empty, '.' or '..' part")
        if any(ord(c) < 32 or ord(c) == 127 for c in seg):
            raise UnsafeBundleError(f"entry name {shown} contains a control character")
        if _FORBIDDEN_IN_NAMES.intersection(seg):
            raise UnsafeBundleError(
                f"entry name {shown} contains a character not allowed on every OS"
            )
    return bare


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
        raise BundleFormatError(f"entry {shown} uses compression method {info.compress_type}")


def _check_listing(
    zf: zipfile.ZipFile, fh: IO[bytes], cd_start: int, limits: BundleLimits
) -> dict[str, zipfile.ZipInfo]:
    """Check every entry's name, type and byte range; return the file entries by name."""
    listing = zf.infolist()
    if len(listing) > limits.max_entries:
        raise BundleLimitError(f"bundle has more than {limits.max_entries} entries")
    files: dict[str, zipfile.ZipInfo] = {}
    seen: dict[str, str] = {}
    for info in listing:
        bare = _check_name(info.orig_filename, limits)
        _check_type(info)
        key = unicodedata.normalize("NFC", bare).casefold()
        if key in seen:
            what = "twice" if seen[key] == bare else f"as {seen[key]!r} too (names differ by case)"
            raise UnsafeBundleError(f"entry {bare[:80]!r} appears {what}")
        seen[key] = bare
        is_dir = info.orig_filename.endswith("/") or stat.S_ISDIR(info.external_attr >> 16)
        if is_dir:
            if info.file_size or info.compress_size > 2:
                raise UnsafeBundleError(f"folder entry {bare[:80]!r} has content")
            continue
        files[bare] = info
    _check_ranges(listing, fh, cd_start)
    return files


def _check_ranges(listing: Sequence[zipfile.ZipInfo], fh: IO[bytes], cd_start: int) -> None:
    """Refuse entries whose bytes overlap each other or the directory (CVE-2024-0450)."""
    prev_end, prev_name = 0, ""
    for info in sorted(listing, key=lambda i: i.header_offset):
        start = info.header_offset
        if start < 0:
            raise BundleFormatError(f"entry {info.orig_filename[:80]!r} starts before the file")
        if start < prev_end:
            raise UnsafeBundleError(
                f"entries {prev_name[:80]!r} and {info.orig_filename[:80]!r} overlap"
                " (a zip bomb or a forged archive)"
            )
        fh.seek(start)
        raw = fh.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
            raise BundleFormatError(f"entry {info.orig_filename[:80]!r} has no local header")
        header = _LOCAL_HEADER.unpack(raw)
        end = start + _LOCAL_HEADER.size + header[10] + header[11] + info.compress_size
        if end > cd_start:
            raise UnsafeBundleError(
                f"entry {info.orig_filename[:80]!r} overlaps the zip directory or the file end"
            )
        prev_end, prev_name = end, info.orig_filename


# -- streaming reads --------------------------------------------------------------------------------


def _stream_entry(
    zf: zipfile.ZipFile,
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
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
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
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
        raise BundleFormatError(f"entry {name!r} is corrupt: {exc}") from exc
    except ValueError as exc:  # bad UTF-8 in a local header name
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


def _read_manifest(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: BundleLimits, stats: _Stats
) -> Any:
    buf = io.BytesIO()
    _stream_entry(zf, info, buf, limits.max_manifest_bytes, limits, stats)
    try:
        return json.loads(buf.getvalue().decode("utf-8"))
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
    try:
        canonical = fs.normalize_path(path)
    except UnsafePathError as exc:
        raise UnsafeBundleError(f"{where}: unsafe path: {exc.message}") from exc
    if canonical != path:
        raise UnsafeBundleError(f"{where}: path {path[:80]!r} is not a canonical blueprint path")
    yaml_size, yaml_sha = _parse_file(entry, "yaml", where)
    meta_size, meta_sha = _parse_file(entry, "meta", where)
    return _Wanted(
        id=bp_id,
        path=path,
        yaml_name=ENTRY_PREFIX + path,
        meta_name=ENTRY_PREFIX + fs.meta_path_for(path),
        yaml_size=yaml_size,
        yaml_sha256=yaml_sha,
        meta_size=meta_size,
        meta_sha256=meta_sha,
    )


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


def _match_listing(files: dict[str, zipfile.ZipInfo], wanted: Sequence[_Wanted]) -> None:
    names = {MANIFEST_NAME}
    for w in wanted:
        for name in (w.yaml_name, w.meta_name):
            if name not in files:
                raise BundleFormatError(f"the bundle lacks {name[:100]!r}, listed in its manifest")
            names.add(name)
    for name in files:
        # Files outside blueprints/ are ignored (room for later minor versions); inside, every
        # file must be accounted for, so nothing slips past the hash checks.
        if name.startswith(ENTRY_PREFIX) and name not in names:
            raise BundleFormatError(f"entry {name[:100]!r} is not listed in the manifest")


def _extract_all(
    zf: zipfile.ZipFile,
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
    folder = staging.path() if wanted else None
    for done, i in enumerate(order):
        assert folder is not None
        entries[i] = _extract_one(zf, files, wanted[i], folder / f"{i:07d}", limits, stats)
        if progress is not None:
            progress("verify", done + 1, len(wanted))
    return [e for e in entries if e is not None]


def _extract_one(
    zf: zipfile.ZipFile,
    files: dict[str, zipfile.ZipInfo],
    w: _Wanted,
    stem: Path,
    limits: BundleLimits,
    stats: _Stats,
) -> BundleEntry:
    yaml_file = stem.with_suffix(".yaml")
    if w.yaml_size > limits.max_file_bytes:
        raise BundleLimitError(
            f"{w.path[:80]!r} is {w.yaml_size} bytes, over {limits.max_file_bytes}"
        )
    if w.meta_size > MAX_META_BYTES:
        raise BundleLimitError(f"meta of {w.path[:80]!r} is over {MAX_META_BYTES} bytes")
    with open(yaml_file, "xb") as sink:
        size, digest = _stream_entry(
            zf,
            files[w.yaml_name],
            sink,
            limits.max_file_bytes,
            limits,
            stats,
            declared=w.yaml_size,
        )
    _check_digest(w.yaml_name, size, digest, w.yaml_size, w.yaml_sha256)
    meta_buf = io.BytesIO()
    size, digest = _stream_entry(
        zf, files[w.meta_name], meta_buf, MAX_META_BYTES, limits, stats, declared=w.meta_size
    )
    _check_digest(w.meta_name, size, digest, w.meta_size, w.meta_sha256)
    meta = _parse_meta(meta_buf.getvalue(), w)
    yaml_bytes = yaml_file.read_bytes()
    return BundleEntry(
        id=w.id,
        path=w.path,
        meta=meta,
        yaml_file=yaml_file,
        yaml_sha256=w.yaml_sha256,
        content_hash=content_hash(yaml_bytes, meta),
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


def _check_yaml(items: Sequence[ImportItem], yaml_limits: YamlLimits) -> None:
    """Parse, within the store's bounds, every YAML the plan will write; refuse the whole bundle
    (before anything is written) if one does not parse or is an alias bomb.

    Entries planned as unchanged hold bytes this store already accepted, and skipped ones are
    never used, so parsing them would only double the cost of a repeated import.
    """
    for item in items:
        if item._entry is None or item._content is not None:
            continue
        try:
            parse_yaml(item._entry.read_yaml(), yaml_limits)
        except LimitExceededError as exc:
            raise BundleLimitError(f"{item.path[:100]!r}: {exc.message}", hint=exc.hint) from exc
        except InvalidYAMLError as exc:
            raise BundleFormatError(f"{item.path[:100]!r}: {exc.message}") from exc


# ---------------------------------------------------------------------------------------------------
# Planning


def _ensure_schema(store: BlueprintStore) -> None:
    store.index.register_schema("archive", _ARCHIVE_MIGRATIONS)


def _row(store: BlueprintStore, ref: str, *, include_deleted: bool = False) -> Row | None:
    try:
        return store.row(ref, include_deleted=include_deleted)
    except NotFoundError:
        return None


def _already_imported(store: BlueprintStore, src_id: str, src_hash: str) -> str | None:
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT result_id FROM archive_imports WHERE src_id = ? AND src_hash = ?",
            (src_id, src_hash),
        ).fetchall()
    if not rows:
        return None
    result = _row(store, str(rows[0][0]), include_deleted=True)
    return result.id if result is not None else None


def _same_ignoring_identity(row: Row, entry: BundleEntry) -> bool:
    """True when a blueprint with another id already holds exactly this YAML and these fields."""
    if row.yaml_sha256 != entry.yaml_sha256:
        return False
    mine = row.meta.to_dict()
    theirs = entry.meta.to_dict()
    for d in (mine, theirs):
        for k in ("id", "created", "modified"):
            d.pop(k, None)
    return mine == theirs


class _Planner:
    """Decide one action per bundle entry against the store as it is now."""

    def __init__(
        self, store: BlueprintStore, policy: str, merger: Merger | None, stamp: str
    ) -> None:
        self.store = store
        self.policy = policy
        self.merger = merger
        self.stamp = stamp
        self.claimed: set[str] = set()

    def plan(self, entry: BundleEntry) -> ImportItem:
        item = ImportItem(
            id=entry.id, path=entry.path, action="create", _src_hash=entry.content_hash
        )
        item._meta = entry.meta
        row = _row(self.store, entry.id, include_deleted=True)
        if row is not None:
            self._plan_same_id(item, entry, row)
        else:
            other = _row(self.store, entry.path)
            if other is not None:
                self._plan_path_conflict(item, entry, other)
            else:
                self._set(item, "create", entry.id, entry.path, entry, None)
        if item.target_path:
            self.claimed.add(fs.path_key(item.target_path))
        return item

    def _set(
        self,
        item: ImportItem,
        action: str,
        target_id: str,
        target_path: str,
        entry: BundleEntry | None,
        expected_rev: int | None,
        reason: str = "",
    ) -> None:
        item.action, item.target_id, item.target_path = action, target_id, target_path
        item.reason = reason
        item._expected_rev = expected_rev
        item._entry = entry

    def _path_free(self, path: str, owner: str) -> bool:
        if fs.path_key(path) in self.claimed:
            return False
        other = _row(self.store, path)
        return other is None or other.id == owner

    def _plan_same_id(self, item: ImportItem, entry: BundleEntry, row: Row) -> None:
        if not row.deleted and row.content_hash == entry.content_hash and row.path == entry.path:
            self._set(item, "unchanged", row.id, row.path, None, None, "identical")
            return
        known = {r.content_hash for r in self.store.history(row.id)}
        stale = entry.content_hash in known
        if self.policy == "overwrite":
            target = entry.path if self._path_free(entry.path, row.id) else row.path
            if row.deleted and not self._path_free(target, row.id):
                target = self._free_variant(entry.path)
            action = "restore" if row.deleted else "overwrite"
            self._set(item, action, row.id, target, entry, row.rev)
            return
        if stale:
            reason = "deleted here" if row.deleted else "this version is already in history"
            self._set(item, "unchanged", row.id, row.path, None, None, reason)
            return
        if row.deleted:
            # A newer version than the one deleted here: an edit beats a delete (as in sync).
            if self.policy == "skip":
                self._set(item, "skip", row.id, row.path, None, None, "deleted here")
                return
            back = entry.path if self._path_free(entry.path, row.id) else None
            self._set(
                item, "restore", row.id, back or self._free_variant(entry.path), entry, row.rev
            )
            return
        self._plan_conflict(item, entry, row, "changed on both sides")

    def _plan_path_conflict(self, item: ImportItem, entry: BundleEntry, other: Row) -> None:
        reason = f"path taken by {other.id}"
        if _same_ignoring_identity(other, entry):
            self._set(item, "unchanged", other.id, other.path, None, None, "same content at path")
            return
        if self.policy == "overwrite":
            item._meta = entry.meta.replace(
                id=other.id, created=other.created or entry.meta.created
            )
            self._set(item, "overwrite", other.id, other.path, entry, other.rev, reason)
            return
        self._plan_conflict(item, entry, other, reason)

    def _plan_conflict(self, item: ImportItem, entry: BundleEntry, row: Row, reason: str) -> None:
        if self.policy == "skip":
            self._set(item, "skip", row.id, row.path, None, None, reason)
            return
        done = _already_imported(self.store, entry.id, entry.content_hash)
        if done is not None:
            self._set(item, "unchanged", done, "", None, None, f"already imported as {done}")
            return
        if self.policy == "merge" and self.merger is not None and row.id == entry.id:
            if self._plan_merge(item, entry, row, reason):
                return
            reason += "; merge not clean"
        elif self.policy == "merge":
            reason += "; no merger available" if self.merger is None else "; different ids"
        self._plan_keep_both(item, entry, reason)

    def _plan_merge(self, item: ImportItem, entry: BundleEntry, row: Row, reason: str) -> bool:
        assert self.merger is not None
        local = self.store.load(row.id)
        incoming = entry.read_yaml().decode("utf-8")
        merged = self.merger(None, local.content, incoming)
        if merged is None:
            return False
        try:
            parse_yaml(merged, self.store.limits)
        except (InvalidYAMLError, LimitExceededError):
            return False
        tags = tuple(dict.fromkeys((*local.meta.tags, *entry.meta.tags)))
        item._meta = local.meta.replace(tags=tags)
        item._content = merged.encode("utf-8")
        self._set(item, "merge", row.id, row.path, None, row.rev, reason)
        return True

    def _plan_keep_both(self, item: ImportItem, entry: BundleEntry, reason: str) -> None:
        copy_id = new_id()
        name = entry.meta.name or fs.display_name(entry.path)
        item._meta = entry.meta.replace(id=copy_id, name=f"{name} (import {self.stamp})")
        self._set(item, "keep-both", copy_id, self._free_variant(entry.path), entry, None, reason)

    def _free_variant(self, path: str) -> str:
        stem = path[: -len(fs.YAML_SUFFIX)]
        folder, _, base = stem.rpartition("/")
        compact = self.stamp.replace("-", "").replace(":", "")
        for n in range(1, 10_000):
            suffix = f" (import {compact})" + (f" {n}" if n > 1 else "")
            room = fs.MAX_SEGMENT_BYTES - len((suffix + fs.YAML_SUFFIX).encode("utf-8"))
            short = base.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
            candidate = (f"{folder}/" if folder else "") + short + suffix + fs.YAML_SUFFIX
            if self._path_free(candidate, ""):
                return candidate
        raise AlreadyExistsError(f"no free path near {path}", hint="move some imports away")


def plan_import(
    store: BlueprintStore,
    bundle: VerifiedBundle,
    *,
    on_conflict: str = "skip",
    merger: Merger | None = None,
) -> list[ImportItem]:
    """Decide what importing ``bundle`` would do to each blueprint; changes nothing.

    Raises InvalidInputError for an unknown policy.
    """
    if on_conflict not in CONFLICT_POLICIES:
        raise InvalidInputError(
            f"unknown conflict policy {on_conflict!r}", hint=f"use {', '.join(CONFLICT_POLICIES)}"
        )
    _ensure_schema(store)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    planner = _Planner(store, on_conflict, merger, stamp)
    return [planner.plan(entry) for entry in bundle.entries]


# ---------------------------------------------------------------------------------------------------
# Applying


def _recorder(item: ImportItem) -> Callable[[Any, Any], None]:
    def record(cur: Any, bp: Any) -> None:
        cur.execute(
            "INSERT OR REPLACE INTO archive_imports VALUES (?, ?, ?, ?, ?)",
            (item.id, item._src_hash, bp.id, item.action, utc_now()),
        )

    return record


# Blueprints saved per transaction: one flush per chunk instead of three fsyncs per blueprint,
# while a chunk's content (read from staging) stays small in memory.
APPLY_CHUNK = 256


def _apply_items(store: BlueprintStore, items: list[ImportItem]) -> None:
    """Save the actionable items through the store's batch path; per-item errors stay per item."""
    todo: list[tuple[ImportItem, SaveRequest]] = []
    for item in items:
        if item.action in ("unchanged", "skip"):
            item.status = "done"
            continue
        content = item._content
        if content is None:
            assert item._entry is not None
            content = item._entry.read_yaml()  # read now: a plan does not hold every file in memory
        todo.append(
            (
                item,
                SaveRequest(
                    path=item.target_path,
                    content=content,
                    meta=item._meta,
                    id=item.target_id,
                    expected_rev=item._expected_rev,
                    tx_hook=_recorder(item),
                ),
            )
        )
    if not todo:
        return
    results = store.save_many([req for _, req in todo], origin=ORIGIN)
    for (item, _), result in zip(todo, results, strict=True):
        if isinstance(result, LocalStoreError):
            # The store changed between plan and apply (another writer): this one is left as it is.
            item.status, item.error = "failed", str(result)
        else:
            item.status, item.rev, item.target_path = "done", result.rev, result.path


def import_bundle(
    store: BlueprintStore,
    path: str | os.PathLike[str],
    *,
    on_conflict: str = "skip",
    dry_run: bool = False,
    passphrase: str | None = None,
    merger: Merger | None = None,
    limits: BundleLimits | None = None,
    progress: ProgressCallback | None = None,
    batch_size: int = APPLY_CHUNK,
) -> ImportResult:
    """Verify a bundle, plan, and (unless ``dry_run``) save each blueprint with origin "import".

    Blueprints are saved ``batch_size`` per transaction (progress is reported per batch); an
    interruption between batches leaves every blueprint either absent or complete.

    Conflict policies: skip (leave the local one), overwrite (the bundle's content replaces it; the
    old stays in history), keep-both (the bundle's version becomes a new blueprint), merge (the
    ``merger`` callable; keep-both when it cannot merge). Raises the Bundle* errors and
    DecryptionError before anything is written; StorageError stops an import between blueprints.
    """
    limits = limits or BundleLimits.for_store(store)
    with open_bundle(
        path,
        staging_root=store.paths.cache,
        passphrase=passphrase,
        limits=limits,
        progress=progress,
    ) as bundle:
        items = plan_import(store, bundle, on_conflict=on_conflict, merger=merger)
        _check_yaml(items, store.limits)
        result = ImportResult(bundle.summary(), on_conflict, dry_run, items)
        if dry_run:
            return result
        step = max(1, batch_size)
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            _apply_items(store, chunk)
            if progress is not None:
                progress("import", start + len(chunk), len(items))
    return result
