"""Writing a bundle: the export's checks, the zip and its manifest, encryption, and the atomic
replace of the destination.

The zip is written to a temp file (beside the destination, or for an encrypted export in a
private folder: :mod:`localstore._bundle_temps`), fsynced, encrypted when asked, and renamed over
the destination with the mode of the file it replaces.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore import crypto
from localstore import files as fs
from localstore._bundle_format import (
    ANCESTORS_WRITTEN,
    ENCRYPTED_MAGIC,
    ENTRY_PREFIX,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    BundleLimits,
    ProgressCallback,
    _CountingReader,
    callable_arg,
    scrypt_within_limits,
)
from localstore._bundle_records import _put_aside_here, _row
from localstore._bundle_temps import _private_temp
from localstore._durable import WIN_IN_USE_ERRORS
from localstore._held_temps import HeldFolder
from localstore.blueprint import Blueprint, BlueprintInfo, content_hash, encode_meta, utc_now
from localstore.errors import (
    BundleLimitError,
    DiskFullError,
    InvalidInputError,
    NotFoundError,
    StorageError,
    UnsafePathError,
    wrong_type,
)

if TYPE_CHECKING:
    from localstore.store import BlueprintStore


def _check_one_name_pairs(infos: Sequence[BlueprintInfo]) -> None:
    """Refuse a selection holding two blueprints whose paths are one name on macOS and Windows:
    a pair core v11 kept whole (index._v11_path_keys) until one is renamed. A bundle import
    refuses such a bundle whole (_bundle_listing._check_listing), and _write_zip's own check took
    the pair for a store changing under the export ("export again", which never helped)."""
    seen: dict[str, str] = {}
    for info in infos:
        other = seen.setdefault(fs.path_key(info.path), info.path)
        if other != info.path:
            raise UnsafePathError(
                f"{info.path} and {other} are one name on macOS and Windows: a bundle cannot "
                "hold both (an import would refuse it whole)",
                hint="rename one of them ('localstore check' reports such pairs), or leave one "
                "out of the export",
            )


def _is_flagged(store: BlueprintStore, bp_id: str) -> bool:
    row = _row(store, bp_id, include_deleted=True)
    return row is not None and bool(row.flagged)


def _export_options(
    passphrase: str | None, progress: ProgressCallback | None, scrypt_params: Any
) -> None:
    """Refuse an empty passphrase, a progress that is no callable, or scrypt_params of another
    type (the types of passphrase and limits are checked by options_arg)."""
    if passphrase == "":
        raise InvalidInputError(
            "the passphrase is empty",
            hint="give a passphrase to encrypt the bundle, or leave it out (None) for none",
        )
    callable_arg("progress", progress)
    if scrypt_params is not None and not isinstance(scrypt_params, crypto.ScryptParams):
        raise wrong_type(
            "scrypt_params",
            scrypt_params,
            "a crypto.ScryptParams",
            hint="leave scrypt_params out for the default strength",
        )


def _write_bundle(
    store: BlueprintStore,
    infos: Sequence[BlueprintInfo],
    dest_path: Path,
    passphrase: str | None,
    scrypt_params: crypto.ScryptParams | None,
    progress: ProgressCallback | None,
    limits: BundleLimits,
) -> list[str]:
    """Write the bundle to a temp file (encrypted through a private plaintext zip when there is a
    passphrase) and put it at ``dest_path`` atomically; return the ids written. Nothing is left
    behind when it fails."""
    private_folder: HeldFolder | None = None
    if passphrase is None:
        tmp_zip: Path | None = _temp_beside(dest_path)
    else:
        private_folder = _private_temp(store)
        tmp_zip = private_folder.path / f"plaintext{fs.TEMP_SUFFIX}"
    final_tmp: Path | None = None
    try:
        assert tmp_zip is not None
        try:
            ids = _write_zip(store, infos, tmp_zip, progress, limits)
        except OSError as exc:
            if private_folder is None:
                raise
            # The plaintext zip, in the home's cache (or the temp folder): the error named the
            # destination, whose disk may have plenty of room, and not the one that was full.
            raise _private_temp_error(exc, private_folder.path.parent) from exc
        if passphrase is not None:
            final_tmp = _temp_beside(dest_path)
            _encrypt_file(tmp_zip, final_tmp, passphrase, scrypt_params, progress)
        else:
            final_tmp, tmp_zip = tmp_zip, None
        _keep_mode(final_tmp, dest_path)
        _replace_durably(final_tmp, dest_path)
        final_tmp = None
    except OSError as exc:  # the temp file beside the destination: an unwritable place
        raise _dest_error(exc, dest_path) from exc
    finally:
        for leftover in (tmp_zip, final_tmp):
            if leftover is not None:
                try:
                    # (Retried on Windows: the plaintext zip of an encrypted export among them.)
                    fs.unlink_file(leftover)
                except OSError:  # never created there (the error above says why); nothing to undo
                    pass
        if private_folder is not None:
            private_folder.remove()
    return ids


def _check_dest_folder(dest: Path) -> None:
    """Refuse a destination whose folder is missing or not a folder (a mistyped path is more
    likely than a wish to create folders)."""
    folder = dest.parent
    if not folder.exists():
        raise InvalidInputError(
            f"cannot write {dest}: the folder {folder} does not exist",
            hint="check the path, or create the folder first",
        )
    if not folder.is_dir():
        raise InvalidInputError(
            f"cannot write {dest}: {folder} is not a folder", hint="check the path"
        )
    try:
        mode = dest.stat().st_mode
    except OSError:  # nothing there yet (or unreadable: writing says why)
        return
    if not stat.S_ISREG(mode):
        # The file is written beside dest and renamed over it: a pipe or a device there
        # (`-o /dev/stdout`, or `/dev/full` as root) was replaced by a regular file.
        what = "a folder" if stat.S_ISDIR(mode) else "a pipe, device or socket"
        raise InvalidInputError(
            f"cannot write {dest}: it is not a regular file ({what})",
            hint="give the path of a file to write (--yaml -o - writes to stdout)",
        )


def _dest_error(exc: OSError, dest: Path) -> StorageError:
    err = fs.map_os_error(exc, "cannot write", dest)
    if type(err) is StorageError:  # not a full disk nor a permission: a place files cannot go
        err.hint = "choose a folder on a writable disk"
    return err


def _private_temp_error(exc: OSError, folder: Path) -> StorageError:
    err = fs.map_os_error(exc, "cannot write the encrypted export's temporary file in", folder)
    if isinstance(err, DiskFullError):
        err.hint = (
            "free some disk space there and try again: an encrypted export writes the plain "
            "bundle there first (about the bundle's size), then encrypts it to the destination"
        )
    return err


_SPLIT_HINT = "export in parts (by --folder or --tag)"


def _check_scrypt_params(params: crypto.ScryptParams, limits: BundleLimits) -> None:
    # Before anything is written or derived: past crypto's bounds, deriving failed only after the
    # plaintext zip was written, as a DecryptionError about corrupt data; past the reader's
    # limits, the bundle was written and no import under those limits would read it.
    if not params.within_bounds():
        raise InvalidInputError(
            f"scrypt_params {params!r} are outside what a reader accepts ({crypto.SCRYPT_BOUNDS})",
            hint="leave scrypt_params out for the default strength",
        )
    if not scrypt_within_limits(params.log2_n, params.r, params.p, limits):
        raise BundleLimitError(
            f"scrypt parameters {params!r} cost 128*r*N*p = "
            f"{128 * params.r * 2**params.log2_n * params.p >> 20} MiB, more than an import "
            f"allows ({limits.max_scrypt_bytes >> 20} MiB)",
            hint="lower r, N or p (the default, N=2**17, r=8, p=1, costs 128 MiB)",
        )


def _check_export_count(count: int, limits: BundleLimits) -> None:
    # Two files per blueprint and the manifest: the reader's entry cap, as open_bundle counts it.
    if 2 * count + 1 > limits.max_entries:
        raise BundleLimitError(
            f"{count} blueprints are more than an import reads from one bundle "
            f"({(limits.max_entries - 1) // 2})",
            hint=_SPLIT_HINT,
        )


def _temp_beside(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{fs.TEMP_SUFFIX}")


def _zip_info(
    name: str, when: tuple[int, int, int, int, int, int], compress_type: int
) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when)
    info.compress_type = compress_type
    info.create_system = 3  # unix, so the mode below is meaningful to readers
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


# What a zip entry's DOS date can hold (two-second steps, years 1980-2107).
_ZIP_EARLIEST = (1980, 1, 1, 0, 0, 0)
_ZIP_LATEST = (2107, 12, 31, 23, 59, 58)


def _zip_time(now: datetime) -> tuple[int, int, int, int, int, int]:
    """``now`` as a zip entry's date, held to the range a zip can store.

    A clock outside it failed the export with zipfile's bare ValueError ("ZIP does not support
    timestamps before 1980"): a board without a battery-backed clock starts at 1970 until NTP
    answers, a dead CMOS battery resets a PC's clock to its firmware's year. The manifest's
    ``created`` keeps the exact time; the entries' dates are only shown by zip tools.
    """
    when = (now.year, now.month, now.day, now.hour, now.minute, now.second)
    return min(max(when, _ZIP_EARLIEST), _ZIP_LATEST)


def _write_zip(
    store: BlueprintStore,
    infos: Sequence[BlueprintInfo],
    target: Path,
    progress: ProgressCallback | None,
    limits: BundleLimits,
    *,
    stored: frozenset[str] = frozenset(),
) -> list[str]:
    when = _zip_time(datetime.now(UTC))
    entries: list[dict[str, Any]] = []
    put_aside = _put_aside_here(store)
    paths: dict[str, str] = {}
    total = 0
    with (
        open(target, "wb", opener=_document_opener) as raw,
        zipfile.ZipFile(raw, "w", allowZip64=True) as zf,
    ):
        # The manifest goes last because its hashes are known only once the files are written;
        # readers find it through the central directory, so its position does not matter.
        for i, info in enumerate(infos):
            bp, yaml_bytes = _load_pair(store, info)
            _claim_path(paths, bp.path)
            meta_bytes = encode_meta(bp.meta)
            total += len(yaml_bytes) + len(meta_bytes)
            _check_total(total, limits)
            _write_entry(zf, ENTRY_PREFIX + bp.path, yaml_bytes, when, stored)
            _write_entry(zf, ENTRY_PREFIX + fs.meta_path_for(bp.path), meta_bytes, when, stored)
            entries.append(_bundle_entry(store, bp, yaml_bytes, meta_bytes, put_aside))
            if progress is not None:
                progress("export", i + 1, len(infos))
        _write_entry(zf, MANIFEST_NAME, _manifest_body(store, entries, limits), when, stored)
        over = _over_ratio(zf, limits)
    if over:
        return _write_zip(store, infos, target, progress, limits, stored=frozenset(over))
    _fsync_file(target)
    return [entry["id"] for entry in entries]


def _claim_path(paths: dict[str, str], path: str) -> None:
    """Note ``path`` (by path key) as written; refuse a second blueprint at one path."""
    key = fs.path_key(path)
    if key in paths:  # selected by refs and by a listing read at another moment
        raise StorageError(
            f"{path} and {paths[key]} were selected at one path: the store changed "
            "during the export",
            hint="export again",
        )
    paths[key] = path


def _check_total(total: int, limits: BundleLimits) -> None:
    if total > limits.max_total_bytes:
        raise BundleLimitError(
            f"the selection holds over {limits.max_total_bytes} bytes, more than an "
            "import reads from one bundle",
            hint=_SPLIT_HINT,
        )


def _write_entry(
    zf: zipfile.ZipFile,
    name: str,
    data: bytes,
    when: tuple[int, int, int, int, int, int],
    stored: frozenset[str],
) -> None:
    method = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
    zf.writestr(_zip_info(name, when, method), data, compresslevel=6)


def _bundle_entry(
    store: BlueprintStore,
    bp: Blueprint,
    yaml_bytes: bytes,
    meta_bytes: bytes,
    put_aside: dict[str, tuple[str, str]],
) -> dict[str, Any]:
    """The manifest's entry of one blueprint written to the bundle."""
    entry = _manifest_entry(bp.id, bp.path, yaml_bytes, meta_bytes)
    entry["ancestors"] = _ancestors(store, bp.id, bp.rev, bp.content_hash)
    placed, aside_from = put_aside.get(bp.id, ("", ""))
    if placed == bp.path:
        # Still where an import put it aside: that path is no name anyone gave it, and
        # the source (which has it at aside_from) must not take it for a rename. Moved
        # since, it is a rename here, and the bundle says nothing more.
        entry["put_aside_from"] = aside_from
    return entry


def _manifest_body(
    store: BlueprintStore, entries: list[dict[str, Any]], limits: BundleLimits
) -> bytes:
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "created": utc_now(),
        "source_device": {"id": store.device_id, "name": store.device_name},
        "generator": f"localstore {_package_version()}",
        "blueprints": entries,
    }
    body = json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8")
    if len(body) > limits.max_manifest_bytes:
        raise BundleLimitError(
            f"the manifest would be {len(body)} bytes, over the {limits.max_manifest_bytes} "
            "an import reads",
            hint=_SPLIT_HINT,
        )
    return body


def _over_ratio(zf: zipfile.ZipFile, limits: BundleLimits) -> set[str]:
    """The deflated entries an import would refuse for their ratio.

    Import refuses an entry (and a bundle) inflating more than max_ratio times as a zip bomb,
    and real blueprints can be that repetitive (a 1 MiB description of one letter deflates 1000
    times): such entries must be stored instead. Which ones is known only once deflated, so the
    rare export holding one is written again (the same revisions)."""
    return {
        i.filename
        for i in zf.infolist()
        if i.compress_type == zipfile.ZIP_DEFLATED
        and i.file_size > limits.max_ratio * max(i.compress_size, 1)
    }


def _load_pair(store: BlueprintStore, info: BlueprintInfo) -> tuple[Blueprint, bytes]:
    """The blueprint as the selection saw it (revision ``info.rev``), and its YAML's bytes.

    The export is a snapshot of the store when it was selected: another process saving, moving or
    deleting blueprints while the bundle is written must not make it pair one revision's YAML with
    another's meta (``store.load`` reads the meta from the index, then the file), put two
    blueprints at one path (one moved onto the other's old path: a bundle import refuses whole),
    or fail the export (one deleted since). The current files are read when they still are that
    revision; otherwise the revision comes from history, which holds every one.
    """
    try:
        bp = store.load(info.id)
    except NotFoundError:  # deleted since it was selected: history still has it
        bp = None
    if bp is not None and bp.rev == info.rev:
        yaml_bytes = bp.content.encode("utf-8")
        if content_hash(yaml_bytes, bp.meta) == bp.content_hash:
            return bp, yaml_bytes
    old = store.load_revision(info.id, info.rev)
    return old, old.content.encode("utf-8")


def _manifest_entry(bp_id: str, path: str, yaml_bytes: bytes, meta_bytes: bytes) -> dict[str, Any]:
    return {
        "id": bp_id,
        "path": path,
        "yaml": {"size": len(yaml_bytes), "sha256": hashlib.sha256(yaml_bytes).hexdigest()},
        "meta": {"size": len(meta_bytes), "sha256": hashlib.sha256(meta_bytes).hexdigest()},
    }


def _ancestors(store: BlueprintStore, bp_id: str, rev: int, current: str) -> list[str]:
    """The content hashes of this blueprint's versions before revision ``rev`` here, newest first,
    each once, at most ANCESTORS_WRITTEN: an importer whose version is among them holds one this
    version was made from, and takes it without a conflict. (Moves and deletions add no content
    state; the exported version's own hash is left out, as the entry's files give it.)"""
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT content_hash FROM revisions WHERE id = ? AND rev < ? AND deleted = 0 "
            "ORDER BY rev DESC",
            (bp_id, rev),
        )
        out: list[str] = []
        for (digest,) in rows:
            if digest != current and digest not in out:
                out.append(str(digest))
                if len(out) == ANCESTORS_WRITTEN:
                    break
    return out


def _package_version() -> str:
    from localstore import __version__

    return __version__


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _document_opener(path: str, flags: int) -> int:
    """open()'s opener for a bundle's temps: 0644 less the umask, as a blueprint file. open()'s
    own 0666 made a new bundle writable by every local user under umask 000 (a service
    manager's): anyone could put their own entries in the bundle the user was about to send."""
    return os.open(path, flags, 0o644)


def _keep_mode(tmp: Path, dest: Path) -> None:
    """Give the new bundle the permissions of the file it replaces, as a blueprint save does.

    Without this a bundle its owner made private (chmod 600) was readable by every local user
    after the next export to the same name: the plaintext of a plain bundle, the ciphertext of an
    encrypted one to guess its passphrase against. A new bundle keeps the umask's mode.
    """
    if os.name == "nt":  # pragma: no cover - no POSIX modes
        return
    try:
        st = os.lstat(dest)
    except OSError:  # nothing there yet (or unreadable: the rename says why)
        return
    if not stat.S_ISREG(st.st_mode):  # a symlink's 0777 is no choice: the link is replaced
        return
    try:
        os.chmod(tmp, st.st_mode & 0o777)  # permission bits only, never setuid/setgid/sticky
    except OSError:  # a file system without modes (FAT, some shares): nothing to keep there
        pass


def _replace_durably(tmp: Path, dest: Path) -> None:
    try:
        # (Retried on Windows while the previous bundle is open in a previewer or scanned.)
        fs.replace_file(tmp, dest)
    except OSError as exc:
        if getattr(exc, "winerror", None) in WIN_IN_USE_ERRORS:
            raise fs.map_os_error(exc, "cannot write", dest) from exc
        raise StorageError(
            f"cannot write {dest}: {exc.strerror or exc}", hint="check the folder and free space"
        ) from exc
    fs.fsync_dir(dest.parent.resolve())


def _encrypt_file(
    src: Path,
    dst: Path,
    passphrase: str,
    params: crypto.ScryptParams | None,
    progress: ProgressCallback | None,
) -> None:
    total = src.stat().st_size
    with open(src, "rb") as fin, open(dst, "xb", opener=_document_opener) as fout:
        fout.write(ENCRYPTED_MAGIC)
        reader: Any = fin if progress is None else _CountingReader(fin, total, "encrypt", progress)
        crypto.encrypt_stream(reader, fout, passphrase, aad=ENCRYPTED_MAGIC, params=params)
        fout.flush()
        os.fsync(fout.fileno())
