"""Export and import of blueprints as ``.lsbundle`` files (the format is in docs/bundle-format.md).

A bundle is a zip holding ``manifest.json`` and each blueprint's two files under ``blueprints/``;
an encrypted bundle is a short magic followed by that zip sealed with :func:`crypto.encrypt_stream`
(scrypt + AES-256-GCM in authenticated chunks, so neither side needs the bundle in memory).

Import treats the file as hostile until proven otherwise, in three phases:

1. **Verify** (:func:`open_bundle`, in ``_bundle_read``): names, types, byte ranges, sizes and
   every hash are checked while streaming into a private staging folder under our own caps.
2. **Plan** (:func:`plan_import`): each blueprint is matched by id, then by path, and given an action
   under the conflict policy; every YAML the plan would write is checked within the store's bounds
   (syntax, alias bombs, nesting, a mapping at the top) and one bad document refuses the whole
   bundle. Nothing is written, so ``--dry-run`` is exactly this plan.
3. **Apply**: the planned blueprints go through :meth:`BlueprintStore.save_many` (history, events,
   the sync outbox) with ``origin="import"``, a batch per transaction: an interrupted import leaves
   every blueprint either as it was or fully imported. What a keep-both or merge produced is
   recorded in the same transaction, so importing the same bundle again changes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore import crypto
from localstore import files as fs
from localstore._as_if_new import as_if_new
from localstore._bundle_read import (
    ANCESTORS_WRITTEN,
    ENCRYPTED_MAGIC,
    ENTRY_PREFIX,
    EXPORT_TEMP_PREFIX,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    READ_ONLY_EXPORT_PREFIX,
    BundleEntry,
    BundleLimits,
    ProgressCallback,
    VerifiedBundle,
    _CountingReader,
    callable_arg,
    is_encrypted,
    open_bundle,
    options_arg,
    path_arg,
    private_cache,
    scrypt_within_limits,
    sweep_stale_temps,
)
from localstore._durable import WIN_IN_USE_ERRORS
from localstore._held_temps import HeldFolder, make_held_folder, remove_if_dead
from localstore._listing import filter_words
from localstore._reconcile import Reconciler, orphan_home
from localstore.blueprint import (
    MAX_META_BYTES,
    Blueprint,
    BlueprintInfo,
    BlueprintMeta,
    content_hash,
    encode_meta,
    parse_yaml,
    utc_now,
)
from localstore.errors import (
    AlreadyExistsError,
    BundleFormatError,
    BundleLimitError,
    DiskFullError,
    InvalidInputError,
    InvalidYAMLError,
    LimitExceededError,
    LocalStoreError,
    NotFoundError,
    RevisionConflictError,
    StorageError,
    UnsafePathError,
    wrong_type,
)
from localstore.store import BlueprintStore as _Store
from localstore.store import SaveRequest, _count_arg, _flag_arg

if TYPE_CHECKING:
    from localstore.store import BlueprintStore, Revision, Row


__all__ = [
    "CONFLICT_POLICIES",
    "ENCRYPTED_MAGIC",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SKIP_CAUSES",
    "BundleEntry",
    "BundleLimits",
    "ExportResult",
    "ImportItem",
    "ImportResult",
    "Merger",
    "ProgressCallback",
    "VerifiedBundle",
    "check_export",
    "export_bundle",
    "export_yaml",
    "import_bundle",
    "is_encrypted",
    "open_bundle",
    "plan_import",
    "select_blueprints",
]


CONFLICT_POLICIES = ("skip", "overwrite", "keep-both", "merge")
# Why an item is skipped, which says what lets the next import take it. A conflict: another
# --on-conflict policy. A file here that does not parse, or a rename onto a path another blueprint
# holds here: no policy; fixing the file, or moving one of the two, does.
SKIP_CAUSES = ("conflict", "unparsable", "path-held")
ORIGIN = "import"

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
    # The path the bundle had the blueprint at: a blueprint keep-both put aside with its own id
    # (another one held that path here) is known by it, so a later import does not take that path
    # for a rename at the source.
    "ALTER TABLE archive_imports ADD COLUMN src_path TEXT NOT NULL DEFAULT ''",
)


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
    # Blueprints whose files here do not parse (flagged): exported as last indexed, which is not
    # what their files now hold.
    flagged: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "path": str(self.path),
            "count": self.count,
            "size": self.size,
            "encrypted": self.encrypted,
            "ids": list(self.ids),
            "flagged": list(self.flagged),
        }


@dataclass(slots=True)
class ImportItem:
    """One blueprint of a bundle and what import does (or did) with it."""

    id: str
    path: str
    # create | unchanged | move | skip | overwrite | restore | keep-both | merge | refused
    action: str
    reason: str = ""
    target_id: str = ""
    target_path: str = ""
    status: str = "planned"  # planned | done | failed
    error: str = ""
    rev: int = 0
    skip_cause: str = ""  # one of SKIP_CAUSES for a skip, else empty
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
            "skip_cause": self.skip_cause,
        }


@dataclass(slots=True)
class ImportResult:
    """The plan (dry run) or the outcome of an import."""

    bundle: dict[str, Any]
    policy: str
    dry_run: bool
    items: list[ImportItem]
    # Unlisted files under blueprints/ a file manager left (.DS_Store, Thumbs.db, desktop.ini,
    # ``._*``) and a Mac zip's __MACOSX/ entries (VerifiedBundle.ignored_entries): passed by
    # unread, named so that nothing is passed by without a word.
    ignored_entries: list[str] = field(default_factory=list)

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
        """Blueprints left as they were (skipped, for any cause): they need a person's attention."""
        return sum(1 for it in self.items if it.action == "skip")

    def skipped(self) -> dict[str, int]:
        """Number of skipped items per cause (SKIP_CAUSES), causes with none left out."""
        out: dict[str, int] = {}
        for it in self.items:
            if it.action == "skip":
                out[it.skip_cause] = out.get(it.skip_cause, 0) + 1
        return out

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
            "ignored_entries": list(self.ignored_entries),
        }


# ---------------------------------------------------------------------------------------------------
# Export


def select_blueprints(
    store: BlueprintStore,
    refs: Sequence[fs.StrPath] = (),
    *,
    folder: fs.StrPath | None = None,
    tag: str | None = None,
) -> list[BlueprintInfo]:
    """Blueprints named by ``refs`` plus those matching folder and tag; all when nothing is given.

    Raises NotFoundError, AmbiguousRefError for a bad ref; NotFoundError too for a folder or tag
    that matches no blueprint (a typo gave a bundle of nothing, exported without a word);
    InvalidInputError for an empty folder or tag.
    """
    if isinstance(refs, str | bytes | Mapping) or not isinstance(refs, Iterable):
        # (A str was iterated: refs="team/a" exported the blueprints named "t", "e", ...)
        raise wrong_type(
            "refs",
            refs,
            "a list of references",
            hint="pass refs=['team/deploy', ...] (ids, id prefixes or paths)",
        )
    chosen: dict[str, BlueprintInfo] = {}
    for ref in refs:
        info = store.resolve(ref)
        chosen[info.id] = info
    filtered = folder is not None or tag is not None
    if filtered or not refs:
        matched = store.list(folder=folder, tag=tag)
        if filtered and not matched:
            raise NotFoundError(
                f"no blueprint {filter_words(folder, tag)}",
                hint="check the spelling; 'localstore ls' lists the blueprints with their "
                "folders and tags",
            )
        for info in matched:
            chosen.setdefault(info.id, info)
    return sorted(chosen.values(), key=lambda i: i.path)


def check_export(
    store: BlueprintStore,
    dest: str | os.PathLike[str],
    *,
    refs: Sequence[fs.StrPath] = (),
    folder: fs.StrPath | None = None,
    tag: str | None = None,
    limits: BundleLimits | None = None,
) -> list[BlueprintInfo]:
    """What :func:`export_bundle` refuses before it writes anything, checked alone; returns the
    blueprints it would export.

    For a caller that asks for a passphrase first (the CLI's ``export --encrypt``): a mistyped
    ref, filter or destination folder is refused before someone types a passphrase twice for
    nothing. Raises as :func:`export_bundle` does for those (NotFoundError, InvalidInputError,
    BundleLimitError).
    """
    _store_arg(store)
    dest_path = path_arg("dest", dest)
    options_arg(None, limits)
    infos = select_blueprints(store, refs, folder=folder, tag=tag)
    _check_export_count(len(infos), limits or BundleLimits.for_store(store))
    _check_one_name_pairs(infos)
    _check_dest_folder(dest_path)
    return infos


def _check_one_name_pairs(infos: Sequence[BlueprintInfo]) -> None:
    """Refuse a selection holding two blueprints whose paths are one name on macOS and Windows:
    a pair core v11 kept whole (index._v11_path_keys) until one is renamed. A bundle import
    refuses such a bundle whole (_bundle_read._check_listing), and _write_zip's own check took
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


def export_bundle(
    store: BlueprintStore,
    dest: str | os.PathLike[str],
    *,
    refs: Sequence[fs.StrPath] = (),
    folder: fs.StrPath | None = None,
    tag: str | None = None,
    passphrase: str | None = None,
    scrypt_params: crypto.ScryptParams | None = None,
    progress: ProgressCallback | None = None,
    limits: BundleLimits | None = None,
) -> ExportResult:
    """Write the selected blueprints to ``dest`` as a bundle, atomically; encrypt with a passphrase.

    ``limits`` are the reader's (default: what an import into this store allows): a bundle an
    import would refuse whole is refused here instead, before anything is written.

    Raises NotFoundError (a ref, or a folder or tag that matches nothing: no file is written),
    StorageError (writing), InvalidInputError (empty passphrase, folder or tag),
    BundleLimitError (too many blueprints or bytes for one bundle).
    """
    _store_arg(store)
    dest_path = path_arg("dest", dest)
    options_arg(passphrase, limits)
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
    limits = limits or BundleLimits.for_store(store)
    if passphrase is not None and scrypt_params is not None:
        _check_scrypt_params(scrypt_params, limits)
    infos = check_export(store, dest_path, refs=refs, folder=folder, tag=tag, limits=limits)
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
    size = dest_path.stat().st_size
    flagged = tuple(i.id for i in infos if not i.valid and _is_flagged(store, i.id))
    return ExportResult(dest_path, len(ids), size, passphrase is not None, tuple(ids), flagged)


def _is_flagged(store: BlueprintStore, bp_id: str) -> bool:
    row = _row(store, bp_id, include_deleted=True)
    return row is not None and bool(row.flagged)


def export_yaml(
    store: BlueprintStore, ref: fs.StrPath, dest: str | os.PathLike[str] | None
) -> bytes:
    """Return one blueprint's YAML verbatim, and write it to ``dest`` atomically when given."""
    _store_arg(store)
    path = None if dest is None else path_arg("dest", dest)
    data = store.load(ref).content.encode("utf-8")
    if path is not None:
        _check_dest_folder(path)
        fs.atomic_write(path, data)
    return data


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


def _private_temp(store: BlueprintStore) -> HeldFolder:
    """The folder for the plaintext zip of an encrypted export, held until it is removed.

    Never next to the destination (a USB stick, a shared folder): in the home's cache, readable
    by the user only, and removed after the export. What a killed export left there is removed
    by the next export or import (and this export removes what a killed import of an encrypted
    bundle left): each folder is held by its maker (localstore._held_temps).
    """
    if store.read_only_reason is not None:
        return _read_only_export_temp()
    cache = store.paths.cache
    private_cache(cache)
    sweep_stale_temps(cache)
    try:
        return make_held_folder(cache, EXPORT_TEMP_PREFIX)
    except OSError as exc:  # (a raw PermissionError reached the CLI as "unexpected")
        raise fs.map_os_error(exc, "cannot write the export's temporary file in", cache) from exc


def _read_only_export_temp() -> HeldFolder:
    """The plaintext zip's place for a read-only home, whose cache may not be written: a folder
    of its own (0700, a random name: mkdtemp) in the user's temp folder (TMPDIR).

    Not the temp folder itself: a name there another user may have taken first, or may swap in
    a folder they own (/tmp is sticky, but a folder's owner may rename what is in it). Not the
    destination's folder (a USB stick, a shared folder). Refusing the export (as once) left a
    backup snapshot's blueprints no way out but in plaintext. The next such export removes what
    a killed one left (``_sweep_read_only_temps``).
    """
    root = Path(tempfile.gettempdir())
    _sweep_read_only_temps(root)
    try:
        return make_held_folder(root, READ_ONLY_EXPORT_PREFIX)
    except OSError as exc:
        raise fs.map_os_error(exc, "cannot write the export's temporary file in", root) from exc


def _sweep_read_only_temps(root: Path) -> None:
    """Remove this user's folders of killed read-only encrypted exports. Their lock, not their
    pid, tells them from live ones: the temp folder may be shared with another pid namespace (a
    container), where a live export's pid is no process here, or another one."""
    for leftover in root.glob(f"{READ_ONLY_EXPORT_PREFIX}*"):
        try:
            st = leftover.lstat()
        except OSError:  # removed by another export meanwhile
            continue
        mine = sys.platform == "win32" or st.st_uid == os.getuid()
        if mine and stat.S_ISDIR(st.st_mode):
            remove_if_dead(leftover, READ_ONLY_EXPORT_PREFIX)


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
    ids: list[str] = []
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
            key = fs.path_key(bp.path)
            if key in paths:  # selected by refs and by a listing read at another moment
                raise StorageError(
                    f"{bp.path} and {paths[key]} were selected at one path: the store changed "
                    "during the export",
                    hint="export again",
                )
            paths[key] = bp.path
            meta_bytes = encode_meta(bp.meta)
            total += len(yaml_bytes) + len(meta_bytes)
            if total > limits.max_total_bytes:
                raise BundleLimitError(
                    f"the selection holds over {limits.max_total_bytes} bytes, more than an "
                    "import reads from one bundle",
                    hint=_SPLIT_HINT,
                )
            for name, data in (
                (ENTRY_PREFIX + bp.path, yaml_bytes),
                (ENTRY_PREFIX + fs.meta_path_for(bp.path), meta_bytes),
            ):
                method = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
                zf.writestr(_zip_info(name, when, method), data, compresslevel=6)
            entry = _manifest_entry(bp.id, bp.path, yaml_bytes, meta_bytes)
            entry["ancestors"] = _ancestors(store, bp.id, bp.rev, bp.content_hash)
            placed, aside_from = put_aside.get(bp.id, ("", ""))
            if placed == bp.path:
                # Still where an import put it aside: that path is no name anyone gave it, and
                # the source (which has it at aside_from) must not take it for a rename. Moved
                # since, it is a rename here, and the bundle says nothing more.
                entry["put_aside_from"] = aside_from
            entries.append(entry)
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
        if len(body) > limits.max_manifest_bytes:
            raise BundleLimitError(
                f"the manifest would be {len(body)} bytes, over the {limits.max_manifest_bytes} "
                "an import reads",
                hint=_SPLIT_HINT,
            )
        method = zipfile.ZIP_STORED if MANIFEST_NAME in stored else zipfile.ZIP_DEFLATED
        zf.writestr(_zip_info(MANIFEST_NAME, when, method), body, compresslevel=6)
        # Import refuses an entry (and a bundle) inflating more than max_ratio times as a zip
        # bomb, and real blueprints can be that repetitive (a 1 MiB description of one letter
        # deflates 1000 times): such entries must be stored instead. Which ones is known only
        # once deflated, so the rare export holding one is written again (the same revisions).
        over = {
            i.filename
            for i in zf.infolist()
            if i.compress_type == zipfile.ZIP_DEFLATED
            and i.file_size > limits.max_ratio * max(i.compress_size, 1)
        }
    if over:
        return _write_zip(store, infos, target, progress, limits, stored=frozenset(over))
    _fsync_file(target)
    return ids


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


def _put_aside_here(store: BlueprintStore) -> dict[str, tuple[str, str]]:
    """For each blueprint an import here put aside (keep-both kept its own id but another
    blueprint held its path): the path that import saved it at, and the path it was put aside
    from. The import created the blueprint (its id was not here), so the first revision here is
    that import's and holds the path it was put at; the record holds the other."""
    with store.index.read() as cur:
        columns = {str(r[1]) for r in cur.execute("PRAGMA table_info(archive_imports)")}
        if "src_path" not in columns:  # no import here yet (or only before it kept the path)
            return {}
        rows = cur.execute(
            "SELECT a.src_id, r.path, a.src_path, r.origin FROM archive_imports a "
            "JOIN revisions r ON r.id = a.src_id "
            "AND r.rev = (SELECT MIN(rev) FROM revisions WHERE id = a.src_id) "
            "WHERE a.result_id = a.src_id AND a.action = 'keep-both' AND a.src_path != '' "
            "ORDER BY a.ts"
        ).fetchall()
    return {str(i): (str(placed), str(src)) for i, placed, src, origin in rows if origin == ORIGIN}


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


# ---------------------------------------------------------------------------------------------------
# Planning


def _check_yaml(items: Sequence[ImportItem], store: BlueprintStore) -> None:
    """Check, within the store's bounds, every YAML the plan will write; refuse the whole bundle
    (before anything is written) if one would not parse, is no mapping, or is an alias bomb.

    ``check_yaml`` gives ``parse_yaml``'s verdicts without building the document (building it
    here and again in the store was half of an import's CPU time). Entries planned as unchanged
    hold bytes this store already accepted, and skipped ones are never used, so they are not
    checked: a repeated import reads no YAML at all.
    """
    for item in items:
        if item._entry is None or item._content is not None:
            continue
        _check_entry_yaml(store, item._entry)  # the save then skips its own check


def _check_entry_yaml(store: BlueprintStore, entry: BundleEntry) -> bytes:
    """The entry's YAML once the store's own check passed it; refuses the bundle otherwise."""
    raw = entry.read_yaml()
    try:
        store.check_yaml(raw)
    except LimitExceededError as exc:
        raise BundleLimitError(f"{entry.path[:100]!r}: {exc.message}", hint=exc.hint) from exc
    except InvalidYAMLError as exc:
        raise BundleFormatError(f"{entry.path[:100]!r}: {exc.message}") from exc
    return raw


def _ensure_schema(store: BlueprintStore) -> None:
    store.index.register_schema("archive", _ARCHIVE_MIGRATIONS)


def _records_version(store: BlueprintStore) -> int:
    """The version of the import records here, without creating them (0: no import ran here).

    A plan only reads them: creating the table (and its version row) there made a dry run, the
    one promise of which is to change nothing, write to the index, and fail on a home this user
    may read but not write. Raises NewerIndexError when a newer version wrote them."""
    return store.index.schema_version("archive", _ARCHIVE_MIGRATIONS)


def _row(store: BlueprintStore, bp_id: str, *, include_deleted: bool = False) -> Row | None:
    """The index row of the blueprint with this id (a deleted one only when asked), else None.

    One indexed lookup, not ``store.row()``: that resolves a reference, so an id not here was
    next tried as a path (a blueprint at ``<that id>.blueprint.yaml`` answered for it) and then
    looked for among deleted blueprints at that path, a scan of the whole table for a message
    no plan shows. Planned for every copy, import was quadratic: 20,000 keep-both copies into a
    home of 20,000 blueprints took minutes of planning."""
    row = store.row_by_id(bp_id)
    if row is None or (row.deleted and not include_deleted):
        return None
    return row


def _live_at(store: BlueprintStore, path: str) -> Row | None:
    """The live blueprint at ``path`` here (or at a path one name with it), else None: the
    indexed lookups of ``store.row(path)`` without its scan of deleted blueprints for an error
    message (see :func:`_row`), which every free-path probe of a plan paid."""
    try:
        rel = fs.normalize_path(path)
    except UnsafePathError:
        return None
    with store.index.read() as cur:
        return store._live_at(cur, rel)


# SQLite's default limit on bound parameters is 999 (older builds) or 32766; stay under the lower.
_IN_CHUNK = 500


def _present(
    store: BlueprintStore, entries: Sequence[BundleEntry]
) -> tuple[set[str], dict[str, str]]:
    """Which of the bundle's ids have a row here (live or deleted), and which live blueprint holds
    each of its paths (by case-folded key): a few queries per 500 entries instead of up to five
    lookups per entry, so planning an import into an empty or unrelated home costs almost nothing.
    """
    ids = [e.id for e in entries]
    keys = [fs.path_key(e.path) for e in entries]
    known: set[str] = set()
    taken: dict[str, str] = {}
    with store.index.read() as cur:
        for start in range(0, len(entries), _IN_CHUNK):
            some_ids = ids[start : start + _IN_CHUNK]
            some_keys = keys[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(some_ids))
            sql = f"SELECT id FROM blueprints WHERE id IN ({marks})"
            known.update(str(r[0]) for r in cur.execute(sql, some_ids))
            sql = f"SELECT path_key, id FROM blueprints WHERE deleted = 0 AND path_key IN ({marks})"
            taken.update((str(r[0]), str(r[1])) for r in cur.execute(sql, some_keys))
    return known, taken


def _already_imported(
    store: BlueprintStore, src_id: str, src_hash: str, records: int
) -> str | None:
    if records == 0:  # no import here yet, so no record (nor its table)
        return None
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


def _renamed_at_source(entry: BundleEntry, row: Row, history: Sequence[Revision]) -> bool:
    """True when the bundle has the blueprint at a path it never had here: the source renamed it
    (case-only renames included), rather than holding a path it was moved away from here."""
    return entry.path != row.path and all(r.path != entry.path for r in history)


def _hash_as_saved(entry: BundleEntry, row: Row) -> str:
    """The content hash the entry has once saved over ``row``: a meta without ``created`` gets
    the blueprint's own (the store fills it in), so importing such a bundle again is recognised
    as identical instead of as a conflict."""
    if entry.meta.created or not row.created:
        return entry.content_hash
    return content_hash(entry.read_yaml(), entry.meta.replace(created=row.created))


def _meta_too_big(meta: BlueprintMeta) -> bool:
    """True when the store would refuse this meta (its file would pass MAX_META_BYTES)."""
    return len(encode_meta(meta)) > MAX_META_BYTES


def _holder_name(row: Row) -> str:
    """How a reason names the blueprint at a path: its id, or (not recorded yet, so it has no
    id until the import records it) what it is."""
    return row.id or f"a file not recorded yet ({row.path})"


# Keep-both copies get a name-based UUID (RFC 4122 version 5) in this namespace.
_COPY_NAMESPACE = uuid.UUID("5b1f0a0e-2c4d-4f43-9a57-6c6f63616c73")


def _copy_id(entry: BundleEntry) -> str:
    """The id of the keep-both copy of this bundle version: the same in every import of it, so
    a copy that exists already (left by a killed import, adopted by reconcile) is found again
    instead of made twice."""
    return str(uuid.uuid5(_COPY_NAMESPACE, f"{entry.id}:{entry.content_hash}"))


class _Planner:
    """Decide one action per bundle entry against the store as it is now."""

    def __init__(
        self,
        store: BlueprintStore,
        policy: str,
        merger: Merger | None,
        stamp: str,
        entries: Sequence[BundleEntry],
        bundle_path: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        # The bundle's own path of each entry planned at its put_aside_from path instead.
        self.bundle_path: Mapping[str, str] = bundle_path or {}
        self.policy = policy
        self.merger = merger
        self.stamp = stamp
        self.claimed: set[str] = set()
        self.known_ids, self.holders = _present(store, entries)
        # Where the bundle puts each of its blueprints, which have been planned, which ids an
        # actionable item already writes, and the paths planned moves leave (by path key).
        self.bundle_paths = {e.id: fs.path_key(e.path) for e in entries}
        self.bundle_keys = set(self.bundle_paths.values())
        self.entries = {e.id: e for e in entries}
        self.planned: set[str] = set()
        self.targets: set[str] = set()
        self.released: set[str] = set()
        self.rules = fs.IgnoreRules.for_root(store.root)  # read once for the whole plan
        self.records = _records_version(store)
        # The YAML text of each blueprint planned as its files hold it (None: it does not parse).
        self.disk_text: dict[str, str | None] = {}
        # Files at the bundle's paths no blueprint is recorded for yet, as recording them would
        # make them (by path key; None: no such file), and the folders listed for new paths.
        self.unrecorded: dict[str, Row | None] = {}
        self.may_create = store._new_path_check()
        self.folders: dict[str, dict[str, str]] = {}
        self._reconciler: Reconciler | None = None

    def plan(self, entry: BundleEntry) -> ImportItem:
        bundle_path = self.bundle_path.get(entry.id, entry.path)
        item = ImportItem(
            id=entry.id, path=bundle_path, action="create", _src_hash=entry.content_hash
        )
        item._meta = entry.meta
        row = other = None
        if entry.id in self.known_ids:
            row = self._as_files_hold(_row(self.store, entry.id, include_deleted=True))
        else:
            other = self._holder(entry)
            if other is not None and other.id == entry.id:
                row, other = other, None  # a pair put here by hand, with this blueprint's meta
        if row is not None:
            self._plan_same_id(item, entry, row)
        else:
            other = other or self._holder(entry)
            if other is not None:
                self._plan_path_conflict(item, entry, other)
            else:
                # Revision 0: "nothing here yet". Another writer saving this id (or path) between
                # plan and apply then fails this item instead of being overwritten unseen.
                self._set(item, "create", entry.id, entry.path, entry, 0)
        current = next((r for r in (row, other) if r is not None and r.id == item.target_id), None)
        if (
            current is not None
            and not current.deleted
            and current.flagged
            and item.action not in ("unchanged", "skip", "refused")
        ):
            self._wait_for_parse(item, current)
        acts = item.action not in ("unchanged", "skip")
        if acts and (current is None or current.deleted or current.path != item.target_path):
            self._check_target(item)
            if item.action != "refused" and (
                current is None
                or current.deleted
                or fs.path_key(current.path) != fs.path_key(item.target_path)  # (a move there)
            ):
                self._note_orphan_meta(item)
        if item.action not in ("unchanged", "skip", "refused") and item.target_id:
            # (No target id: a file not recorded yet, whose id its recording makes up.)
            if item.target_id in self.targets:
                # Two writes planned against one blueprint and one revision: the second would
                # fail at best, or pour one blueprint's content into another's identity.
                item.action, item.status, item._entry = "refused", "failed", None
                item.error = f"the bundle already updates {item.target_id} (its own entry)"
            else:
                self.targets.add(item.target_id)
                if current is not None and not current.deleted:
                    moved_from = fs.path_key(current.path)
                    if moved_from != fs.path_key(item.target_path):
                        self.released.add(moved_from)
        if item.target_path and item.action != "refused":
            self.claimed.add(fs.path_key(item.target_path))
        self.planned.add(entry.id)
        if bundle_path != entry.path:
            why = f"put aside at {bundle_path} by an import there ({entry.path} was taken)"
            item.reason = f"{item.reason}; {why}" if item.reason else why
        return item

    def _wait_for_parse(self, item: ImportItem, current: Row) -> None:
        """Skip a write over a blueprint whose file here does not parse (an edit in progress).

        The index holds its last good revision, not the file: writing the bundle's version (an
        update, an overwrite, a merge with the last good text, a move) replaced the person's
        bytes, kept nowhere, even under skip for a bundle made from the version here. As sync
        parks such a row, the file is left as it is under every policy, and the reason says
        how to go on."""
        flag = str(current.flagged)
        why = flag if len(flag) <= 160 else flag[:160] + "..."
        reason = (
            f"{current.path} does not parse here ({why}); left as it is: fix the file or "
            "delete it, then import again"
        )
        self._set(item, "skip", current.id, current.path, None, None, reason, cause="unparsable")
        item._content = None
        item._meta = None

    def _holder(self, entry: BundleEntry) -> Row | None:
        """The live blueprint holding the entry's path here, unless a planned move vacates it."""
        key = fs.path_key(entry.path)
        if key in self.released:
            return None
        if key not in self.holders:
            return self._unrecorded_at(entry.path)
        return self._as_files_hold(_live_at(self.store, entry.path))

    def _unrecorded_at(self, path: str) -> Row | None:
        """The blueprint a file at the bundle path ``path``, where none is recorded, would be
        once recorded; None when there is none, or recording leaves it out.

        An import records such a file before it plans (_record_edits_first), and it then holds
        the path; a dry run records nothing, and planned a "create" there, which the import
        then found taken and decided by the policy. Other paths are not recorded first; the
        save does, and refuses to write there (see _check_on_disk)."""
        key = fs.path_key(path)
        if key not in self.unrecorded:
            found = None
            if key in self.bundle_keys and key not in self.holders and self.may_create(path):
                with contextlib.suppress(LocalStoreError):  # (the plan refuses it: _check_target)
                    found = as_if_new(self._reconcile(), path)
            self.unrecorded[key] = found
        return self.unrecorded[key]

    def _reconcile(self) -> Reconciler:
        if self._reconciler is None:
            self._reconciler = Reconciler(self.store)
        return self._reconciler

    def _as_files_hold(self, row: Row | None) -> Row | None:
        """``row`` with what its files hold that the index has not recorded yet (an edit while no
        watcher ran). An import records such edits before it plans (_record_edits_first); a dry
        run may not, and compared the bundle with the index alone: a bundle of the indexed
        version was "identical" to a blueprint edited since, and overwrite was not shown."""
        if row is None:
            return None
        seen = self.store._as_if_recorded(row)
        if seen is None:
            return row
        self.disk_text[row.id] = seen[1]
        return seen[0]

    def waits_for(self, entry: BundleEntry) -> str | None:
        """The id of the blueprint to plan before this one: the holder of its path here, when the
        bundle moves that blueprint elsewhere (the source renamed it, then made a new blueprint at
        its old path or moved another one there). Its move is then planned, and applied, first,
        and frees the path."""
        key = fs.path_key(entry.path)
        holder = self.holders.get(key)
        if holder is None or holder == entry.id or holder in self.planned or key in self.released:
            return None
        moved_to = self.bundle_paths.get(holder)
        if moved_to is None or moved_to == key:
            return None
        return holder

    def _check_target(self, item: ImportItem) -> None:
        """Refuse, in the plan, a new path the store would refuse at save time (too long, under a
        hidden folder, matching this store's ignore rules): the dry run shows it, and it is not
        found out item by item after others were written."""
        try:
            target = fs.normalize_path(item.target_path)
            self.store.check_scanned(target, self.rules)
            fs.check_new_name(target)
            self._check_on_disk(target)
        except (UnsafePathError, AlreadyExistsError) as exc:
            item.action, item.status, item._entry = "refused", "failed", None
            item.error = f"{exc.message} ({exc.hint})" if exc.hint else exc.message

    def _note_orphan_meta(self, item: ImportItem) -> None:
        """Say in the reason of an item that creates or moves its pair where a meta file sits
        without its YAML that the save keeps that file in data/recovered/ first (see
        BlueprintStore._keep_orphan_meta), as reconcile would: the dry run tells it too."""
        meta_rel = fs.meta_path_for(item.target_path)
        try:
            raw = fs.read_regular(self.store.abspath(meta_rel))
            if os.path.lexists(self.store.abspath(item.target_path)):
                return  # (a pair: the plan decided over it)
        except (OSError, LocalStoreError):
            return  # (none; or one the save refuses, and says why)
        with self.store.index.read() as cur:
            if orphan_home(cur, meta_rel, raw)[1]:
                return  # (the leftover of an interrupted move: replaced, as reconcile removes it)
        why = (
            f"the meta file without its YAML at {fs.printable(meta_rel)} is kept in "
            "data/recovered/ first ('localstore check' lists it until it is deleted)"
        )
        item.reason = f"{item.reason}; {why}" if item.reason else why

    def _check_on_disk(self, target: str) -> None:
        """Refuse, as the save would, a new path where a file or folder here has the name in
        another case, or where a file the index does not hold cannot be recorded (does not
        parse) or is no bundle path (the save records it, then finds the path taken).

        Checked by the save alone, these were "create" in a dry run and failed in the import.
        A path held in the index, or left by a planned move, is the plan's own to decide."""
        key = fs.path_key(target)
        if key in self.claimed or key in self.released:
            return
        with self.store.index.read() as cur:
            held = self.store._live_at(cur, target) is not None
            if not held:
                self._check_file_case(target)
            self.store._check_folders_case(cur, target, self.folders)
        if held or key in self.holders or self._unrecorded_at(target) is not None:
            return
        found = as_if_new(self._reconcile(), target)
        if found is not None:
            raise AlreadyExistsError(
                f"{target} is taken by a file here that is not recorded yet",
                hint="move that file away, or import again once it is recorded "
                "('localstore check' records it)",
            )

    def _check_file_case(self, target: str) -> None:
        """The save's refusal of a name that differs only by case from a file here not recorded
        yet, with an import's ways on: recorded, that file is a blueprint at the bundle's path
        (one name on macOS and Windows), and the policy decides, as the plan does for it then."""
        try:
            self.store._check_file_case(target, self.folders)
        except UnsafePathError as exc:
            raise UnsafePathError(
                exc.message,
                hint="move or rename that file; or import again once it is recorded "
                "('localstore check --fix' records it): it then holds the path, and "
                "--on-conflict decides, as for a blueprint here at the bundle's path",
            ) from exc

    def _set(
        self,
        item: ImportItem,
        action: str,
        target_id: str,
        target_path: str,
        entry: BundleEntry | None,
        expected_rev: int | None,
        reason: str = "",
        *,
        cause: str = "",
    ) -> None:
        assert (action == "skip") == (cause in SKIP_CAUSES), (action, cause)
        item.action, item.target_id, item.target_path = action, target_id, target_path
        item.reason, item.skip_cause = reason, cause
        item._expected_rev = expected_rev
        item._entry = entry

    def _path_free(self, path: str, owner: str) -> bool:
        key = fs.path_key(path)
        if key in self.claimed:
            return False
        if key in self.released:  # a move planned (and applied) earlier leaves it
            return True
        other = _live_at(self.store, path) or self._unrecorded_at(path)
        return other is None or other.id == owner

    def _not_at(self, entry: BundleEntry, target: str) -> str:
        """The reason a blueprint is saved at ``target`` rather than at its path in the bundle
        (held here by another blueprint); empty when it goes where the bundle has it."""
        if fs.path_key(target) == fs.path_key(entry.path):
            return ""
        return f"not at {entry.path}: {self._path_holder(entry.path)} holds it here"

    def _move_cycle(self, start: str, key: str) -> int:
        """The number of blueprints in a cycle of renames (X to Y's path, Y to X's, or longer)
        that blueprint ``start``'s move to path ``key`` begins; 0 when it is no cycle."""
        seen = {start}
        while True:
            holder = self.holders.get(key)
            if holder == start:
                return len(seen)
            if holder is None or holder in seen or not self._pure_move(holder):
                return 0
            seen.add(holder)
            key = self.bundle_paths[holder]

    def _pure_move(self, bp_id: str) -> bool:
        """True when the bundle only renamed blueprint ``bp_id`` (same content, a path it never
        had here): the move import would make once its new path is free. A cycle of such moves
        is finished by moving one of them aside; any other member would stay where it is."""
        entry = self.entries.get(bp_id)
        row = self._as_files_hold(_row(self.store, bp_id)) if entry is not None else None
        if entry is None or row is None or row.content_hash != _hash_as_saved(entry, row):
            return False
        return self._renamed(entry, row, self.store.history(bp_id))

    def _put_aside_from(self, bp_id: str) -> set[str]:
        """The bundle paths an earlier import put blueprint ``bp_id`` aside from: keep-both saved
        it, with its own id, at a free path because another blueprint held that one here."""
        if self.records < 2:  # no import here kept its paths yet (src_path came with v2)
            return set()
        with self.store.index.read() as cur:
            rows = cur.execute(
                "SELECT src_path FROM archive_imports WHERE src_id = ? AND result_id = src_id "
                "AND action = 'keep-both'",
                (bp_id,),
            ).fetchall()
        return {str(r[0]) for r in rows if r[0]}

    def _renamed(self, entry: BundleEntry, row: Row, history: Sequence[Revision]) -> bool:
        """True when the bundle's path for this blueprint is a rename at the source: a path it
        never had here, and not the one an import put it aside from (that path is still the
        source's, not a new one)."""
        return _renamed_at_source(entry, row, history) and (
            entry.path not in self._put_aside_from(row.id)
        )

    def _path_holder(self, path: str) -> str:
        """Who keeps ``path`` from being free: a blueprint here, or this bundle's own plan."""
        other = _live_at(self.store, path) or self._unrecorded_at(path)
        if other is None:
            return "another blueprint of this bundle"
        return _holder_name(other)

    def _plan_same_id(self, item: ImportItem, entry: BundleEntry, row: Row) -> None:
        incoming = _hash_as_saved(entry, row)
        if not row.deleted and row.content_hash == incoming:
            if row.path == entry.path:
                self._set(item, "unchanged", row.id, row.path, None, None, "identical")
            else:
                self._plan_move(item, entry, row)
            return
        history = self.store.history(row.id)
        # (With the row's own: in history once recorded, not yet when planned as the files hold it.)
        known = {r.content_hash for r in history} | {row.content_hash}
        stale = incoming in known
        if not row.deleted and not stale and row.content_hash in entry.ancestors:
            # The bundle's version was made from the one here (the exporter's history holds it)
            # and this one was not edited since: no conflict, under every policy.
            self._plan_update(item, entry, row, history)
            return
        if self.policy == "overwrite":
            target = entry.path if self._path_free(entry.path, row.id) else row.path
            if row.deleted and not self._path_free(target, row.id):
                target = self._free_variant(entry.path)
            action = "restore" if row.deleted else "overwrite"
            self._set(item, action, row.id, target, entry, row.rev, self._not_at(entry, target))
            return
        if stale:
            reason = "deleted here" if row.deleted else "this version is already in history"
            if not row.deleted and self._renamed(entry, row, history):
                # The source only renamed it, but it was edited here since: the local version
                # stays where it is (the content decides), and the report says the move waits.
                reason += f"; edited here since, so its move to {entry.path} is not applied"
            self._set(item, "unchanged", row.id, row.path, None, None, reason)
            return
        if row.deleted:
            # A newer version than the one deleted here: an edit beats a delete (as in sync).
            if self.policy == "skip":
                self._set(
                    item, "skip", row.id, row.path, None, None, "deleted here", cause="conflict"
                )
                return
            back = entry.path if self._path_free(entry.path, row.id) else None
            target = back or self._free_variant(entry.path)
            self._set(item, "restore", row.id, target, entry, row.rev, self._not_at(entry, target))
            return
        self._plan_conflict(item, entry, row, "changed on both sides")

    def _plan_update(
        self, item: ImportItem, entry: BundleEntry, row: Row, history: Sequence[Revision]
    ) -> None:
        """A fast-forward: the bundle's content and fields replace the version it was made from.
        Its path is taken as a merge takes it: a rename at the source when that path is free;
        otherwise (moved here since, put aside by an import, or held) it stays where it is."""
        renamed = entry.path != row.path and self._renamed(entry, row, history)
        target = entry.path if renamed and self._path_free(entry.path, row.id) else row.path
        reason = "made from the version here"
        if renamed and target != entry.path:
            reason += f"; {self._not_at(entry, target)}"
        self._set(item, "update", row.id, target, entry, row.rev, reason)

    def _plan_move(self, item: ImportItem, entry: BundleEntry, row: Row) -> None:
        """Same id and content, another path: the source renamed it. No conflict under any
        policy: the blueprint moves here too, keeping its id, with a revision as a move gets."""
        history = self.store.history(row.id)
        if entry.path in self._put_aside_from(row.id) and (
            self.policy != "overwrite" or not self._path_free(entry.path, row.id)
        ):
            # An earlier import put it here because another blueprint held the bundle's path:
            # that is no rename (neither here nor at the source), so nothing is to be done, and
            # moving it back onto the path (overwrite, once free) is overwrite's alone.
            reason = f"put aside here by an earlier import ({entry.path} was taken)"
            self._set(item, "unchanged", row.id, row.path, None, None, reason)
            return
        if self.policy != "overwrite" and not _renamed_at_source(entry, row, history):
            # The bundle has a path this blueprint had here before: it was moved here since,
            # and the bundle is older (overwrite alone takes the bundle's side, moving it back).
            reason = f"moved here since (the bundle has it at {entry.path})"
            self._set(item, "unchanged", row.id, row.path, None, None, reason)
            return
        if not self._path_free(entry.path, row.id):
            # Another blueprint holds the new path and stays: moving it aside or giving it this
            # one's content would change a blueprint the bundle says nothing about.
            holder = self._path_holder(entry.path)
            reason = f"renamed to {entry.path} in the bundle, a path {holder} holds here"
            cycle = self._move_cycle(row.id, fs.path_key(entry.path))
            if cycle:
                # Carrying a swap out takes a third path for a while, and a kill in between
                # would leave a blueprint there: the person chooses it, and the next import
                # finishes the rest (the move aside frees the first path of the cycle).
                what = "swaps it with" if cycle == 2 else f"moves {cycle} blueprints round with"
                reason += (
                    f"; the bundle {what} {holder}, which import does not carry out: move one "
                    "of them to another path here ('localstore mv'), then import again"
                )
            self._set(item, "skip", row.id, row.path, None, None, reason, cause="path-held")
            return
        # Only the path changes: the current YAML is kept (content None), the bundle's meta
        # brings its fields, modified included, as any import does.
        self._set(item, "move", row.id, entry.path, None, row.rev, f"renamed from {row.path}")

    def _plan_path_conflict(self, item: ImportItem, entry: BundleEntry, other: Row) -> None:
        reason = f"path taken by {_holder_name(other)}"
        if _same_ignoring_identity(other, entry):
            self._set(item, "unchanged", other.id, other.path, None, None, "same content at path")
            return
        if self.policy == "overwrite" and other.id not in self.bundle_paths:
            # (A holder the bundle has its own version of is never given another's content.)
            item._meta = entry.meta.replace(
                id=other.id, created=other.created or entry.meta.created
            )
            self._set(item, "overwrite", other.id, other.path, entry, other.rev, reason)
            return
        self._plan_conflict(item, entry, other, reason)

    def _plan_conflict(self, item: ImportItem, entry: BundleEntry, row: Row, reason: str) -> None:
        if self.policy == "skip":
            self._set(item, "skip", row.id, row.path, None, None, reason, cause="conflict")
            return
        done = _already_imported(self.store, entry.id, entry.content_hash, self.records)
        if done is None:
            # The import record is written with the copy, in one transaction; a copy whose files
            # a kill left behind is adopted by reconcile without it, and recognised by its id.
            copy = _row(self.store, _copy_id(entry), include_deleted=True)
            done = copy.id if copy is not None else None
        if done is not None:
            self._set(item, "unchanged", done, "", None, None, f"already imported as {done}")
            return
        if self.policy == "merge" and self.merger is not None and row.id == entry.id:
            if self._plan_merge(item, entry, row, reason):
                return
            reason += "; merge not clean"
        elif self.policy == "merge":
            reason += "; no merger available" if self.merger is None else "; different ids"
        if row.id != entry.id:
            # Its path is taken here by another blueprint, and its id by none: it is put aside
            # at a free path with its own id and fields. A copy under a new id instead made every
            # later version of it one more copy, and came back to the source as new blueprints.
            target = self._free_variant(entry.path)
            self._set(item, "keep-both", entry.id, target, entry, 0, reason)
            return
        self._plan_keep_both(item, entry, reason)

    def _plan_merge(self, item: ImportItem, entry: BundleEntry, row: Row, reason: str) -> bool:
        assert self.merger is not None
        local_text, local_meta = self._local(row)
        # Checked before the merger sees it, not after the plan as the rest: a merge's text is
        # what gets saved, so the bundle's own was never checked, and its bytes went into
        # decode() (a non-UTF-8 YAML raised UnicodeDecodeError out of the import) and into a
        # caller's merger as they came.
        incoming = _check_entry_yaml(self.store, entry).decode("utf-8")
        merged = self.merger(None, local_text, incoming)
        if merged is None:
            return False
        try:
            parse_yaml(merged, self.store.limits)
        except (InvalidYAMLError, LimitExceededError):
            return False
        tags = tuple(dict.fromkeys((*local_meta.tags, *entry.meta.tags)))
        if _meta_too_big(local_meta.replace(tags=tags)):
            return False  # the united tags do not fit in a meta file: no clean merge
        item._meta = local_meta.replace(tags=tags)
        item._content = merged.encode("utf-8")
        # Paths merge apart from content, as in sync: a rename at the source (a path this
        # blueprint never had here) is taken along when that path is free.
        target = row.path
        if (
            entry.path != row.path
            and self._renamed(entry, row, self.store.history(row.id))
            and self._path_free(entry.path, row.id)
        ):
            target = entry.path
        self._set(item, "merge", row.id, target, None, row.rev, reason)
        return True

    def _local(self, row: Row) -> tuple[str, BlueprintMeta]:
        """The text and meta a merge starts from: the files' when planned as they hold them (a
        dry run reads them; load() would record them), else load()'s."""
        if row.id not in self.disk_text:
            local = self.store.load(row.id)
            return local.content, local.meta
        text = self.disk_text[row.id]
        if text is None:  # it does not parse: the last good revision, as load() gives
            text = self.store.load_revision(row.id, row.rev).content
        return text, row.meta

    def _plan_keep_both(self, item: ImportItem, entry: BundleEntry, reason: str) -> None:
        copy_id = _copy_id(entry)
        name = entry.meta.name or fs.display_name(entry.path)
        item._meta = entry.meta.replace(id=copy_id, name=f"{name} (import {self.stamp})")
        self._set(item, "keep-both", copy_id, self._free_variant(entry.path), entry, 0, reason)
        if _meta_too_big(item._meta):
            # A meta at its limit has no room for the copy's longer name: the store would refuse
            # the save, so the plan (and a dry run) says so rather than promising a copy.
            item.action, item.status, item._entry = "refused", "failed", None
            item.error = (
                f"the copy's meta file would be over the {MAX_META_BYTES:,}-byte limit "
                "(its name grows by the import stamp); shorten its description or fields, "
                "or import with --on-conflict overwrite"
            )

    def _free_variant(self, path: str) -> str:
        """A free path for a copy put aside beside ``path``: in its folder as spelled here (a
        bundle's ``Team/`` beside ``team/`` would be a new folder the save refuses)."""
        stem = path[: -len(fs.YAML_SUFFIX)]
        folder, _, base = stem.rpartition("/")
        folder = self.store._folder_as_here(folder, self.folders)
        compact = self.stamp.replace("-", "").replace(":", "")
        for n in range(1, 10_000):
            suffix = f" (import {compact})" + (f" {n}" if n > 1 else "")
            room = fs.MAX_SEGMENT_BYTES - len((suffix + fs.YAML_SUFFIX).encode("utf-8"))
            short = base.encode("utf-8")[:room].decode("utf-8", "ignore")
            # The whole path must stay within the store's limit too (a long path's copy would
            # be refused at save time); a folder too long to leave room is refused by the plan.
            chars = fs.MAX_PATH_CHARS - len(folder) - 1 - len(suffix + fs.YAML_SUFFIX)
            short = short[: max(chars, 1)].rstrip(" .") or "_"
            candidate = (f"{folder}/" if folder else "") + short + suffix + fs.YAML_SUFFIX
            if self._path_free(candidate, ""):
                return candidate
        raise AlreadyExistsError(f"no free path near {path}", hint="move some imports away")


def _store_arg(store: Any) -> None:
    if not isinstance(store, _Store):
        raise wrong_type(
            "store",
            store,
            "an open BlueprintStore",
            hint="pass the store localstore.open(...) returned",
        )


def _policy_arg(on_conflict: Any) -> None:
    if not isinstance(on_conflict, str) or on_conflict not in CONFLICT_POLICIES:
        raise InvalidInputError(
            f"unknown conflict policy {on_conflict!r}", hint=f"use {', '.join(CONFLICT_POLICIES)}"
        )


def plan_import(
    store: BlueprintStore,
    bundle: VerifiedBundle,
    *,
    on_conflict: str = "skip",
    merger: Merger | None = None,
) -> list[ImportItem]:
    """Decide what importing ``bundle`` would do to each blueprint; changes nothing.

    Nothing in the index either: the import records are read where they exist, never created.
    Raises InvalidInputError for an unknown policy, NewerIndexError for a newer version's records.
    """
    _policy_arg(on_conflict)
    callable_arg("merger", merger)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries, bundle_path = _at_put_aside_paths(store, bundle.entries)
    planner = _Planner(store, on_conflict, merger, stamp, entries, bundle_path)
    # Items are applied in this order: an entry waiting for the holder of its path comes right
    # after the holder's own item, whose move frees the path.
    items: list[ImportItem] = []
    waiting: dict[str, list[BundleEntry]] = {}
    for entry in entries:
        holder = planner.waits_for(entry)
        if holder is not None:
            waiting.setdefault(holder, []).append(entry)
            continue
        items.append(planner.plan(entry))
        items.extend(planner.plan(e) for e in waiting.pop(entry.id, ()))
    items.extend(planner.plan(e) for rest in waiting.values() for e in rest)
    return items


def _at_put_aside_paths(
    store: BlueprintStore, entries: Sequence[BundleEntry]
) -> tuple[list[BundleEntry], dict[str, str]]:
    """The entries as the plan takes them, and the bundle's path of each one changed.

    An entry put aside at the exporter (``put_aside_from``, format 1.2) whose blueprint is here at
    that path, or was before, is planned at that path: the exporter's path is one its import made
    up because another blueprint held this one there, and nobody renamed it. So the plan sees no
    rename (the blueprint stays, or its move here since stands), and the rest of the bundle sees
    the path as this blueprint's (the exporter's own blueprint at that path is a path conflict
    here, as this one was there). A blueprint never at that path here keeps the bundle's path."""
    out: list[BundleEntry] = []
    bundle_path: dict[str, str] = {}
    for entry in entries:
        aside = entry.put_aside_from
        if aside and aside != entry.path:
            row = _row(store, entry.id, include_deleted=True)
            if row is not None and (
                row.path == aside or any(r.path == aside for r in store.history(row.id))
            ):
                bundle_path[entry.id] = entry.path
                entry = replace(entry, path=aside)
        out.append(entry)
    return out, bundle_path


# ---------------------------------------------------------------------------------------------------
# Applying


def _record_edits_first(store: BlueprintStore, entries: Sequence[BundleEntry]) -> None:
    """Commit what the files of the blueprints the bundle names (by id or path) hold that the
    index has not recorded, before the plan compares the bundle with the index, as a save
    does before it writes (BlueprintStore._record_edits_first).

    Left to the saves, an edit made while no watcher ran was planned against as if absent: a
    bundle of the indexed version was "unchanged (identical)" under every policy (overwrite
    applied nothing), and one made from it an "update" whose save recorded the edit first and
    then failed, blaming the import ("it changed here during the import")."""
    rels = [e.path for e in entries] + [e.put_aside_from for e in entries if e.put_aside_from]
    known, _ = _present(store, entries)
    rels += [row.path for row in map(store.row_by_id, known) if row and not row.deleted]
    store._record_edits_first(rels, ORIGIN, store._new_path_check())


def _recorder(
    store: BlueprintStore, item: ImportItem, committed: list[ImportItem]
) -> Callable[[Any, Any], None]:
    """The save's hook of ``item``: records where it went, and adds it to ``committed`` once
    its batch's COMMIT is done (never if that rolls back: the callback is dropped with it)."""

    def record(cur: Any, bp: Any) -> None:
        cur.execute(
            "INSERT OR REPLACE INTO archive_imports "
            "(src_id, src_hash, result_id, action, ts, src_path) VALUES (?, ?, ?, ?, ?, ?)",
            (item.id, item._src_hash, bp.id, item.action, utc_now(), item.path),
        )
        store.index.after_commit(lambda: committed.append(item))

    return record


# Blueprints saved per transaction: one flush per chunk instead of three fsyncs per blueprint,
# while a chunk's content (read from staging) stays small in memory.
APPLY_CHUNK = 256


def _apply_items(
    store: BlueprintStore, items: list[ImportItem], committed: list[ImportItem]
) -> None:
    """Save the actionable items through the store's batch path; per-item errors stay per item.
    ``committed``: gets the items saved once their COMMIT is done (see _recorder), also when an
    interrupt comes after it and the save raises that instead of returning."""
    todo: list[tuple[ImportItem, SaveRequest]] = []
    for item in items:
        if item.action in ("unchanged", "skip"):
            item.status = "done"
            continue
        if item.action == "refused":  # failed in the plan: never attempted
            continue
        content = item._content
        if content is None and item.action != "move":  # a move keeps the YAML it has here
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
                    tx_hook=_recorder(store, item, committed),
                ),
            )
        )
    if not todo:
        return
    results = store.save_many([req for _, req in todo], origin=ORIGIN)
    for (item, req), result in zip(todo, results, strict=True):
        if isinstance(result, RevisionConflictError):
            # The store changed between plan and apply (another writer): this one is left as it
            # is. When that writer already saved what this item would (another import of the
            # same bundle, a sync pull of the same version), the item is done, not failed.
            landed = _landed_meanwhile(store, item, req)
            if landed:
                item.action, item.status, item.reason = "unchanged", "done", landed
            else:
                item.status = "failed"
                item.error = f"{result.message} (it changed here during the import; import again)"
        elif isinstance(result, LocalStoreError):
            item.status, item.error = "failed", str(result)
        else:
            item.status, item.rev, item.target_path = "done", result.rev, result.path


def _landed_meanwhile(store: BlueprintStore, item: ImportItem, req: SaveRequest) -> str:
    """Why an item whose save lost a race is nonetheless done: the blueprint it targets now holds
    what it would have saved. Empty when it does not (the item then failed)."""
    row = _row(store, item.target_id, include_deleted=True)
    if row is None:
        return ""
    if item.action == "keep-both" and item.target_id != item.id:
        # The copy's id names this bundle version (_copy_id): another import made it.
        return f"already imported as {row.id}"
    if row.deleted or not isinstance(req.content, bytes) or not isinstance(req.meta, BlueprintMeta):
        return ""
    if row.content_hash != content_hash(req.content, req.meta):
        return ""
    return "saved meanwhile by another writer, as the bundle has it"


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
    require_encrypted: bool = False,
) -> ImportResult:
    """Verify a bundle, plan, and (unless ``dry_run``) save each blueprint with origin "import".

    Blueprints are saved ``batch_size`` per transaction (progress is reported per batch, also
    for one whose transaction committed when an interrupt came); an interruption between
    batches leaves every blueprint either absent or complete.

    Conflict policies: skip (leave the local one), overwrite (the bundle's content replaces it; the
    old stays in history), keep-both (the bundle's version becomes a new blueprint), merge (the
    ``merger`` callable; keep-both when it cannot merge). A blueprint the source only renamed is
    no conflict: it moves here under every policy. ``require_encrypted``: refuse a plain bundle
    (UnsafeBundleError): only an encrypted one proves its writer knew the passphrase. Raises the
    Bundle* errors and DecryptionError before anything is written; StorageError stops an import
    between blueprints.
    """
    _store_arg(store)
    path = path_arg("path", path)
    _policy_arg(on_conflict)
    _flag_arg("dry_run", dry_run)
    _flag_arg("require_encrypted", require_encrypted)
    callable_arg("merger", merger)
    options_arg(passphrase, limits)
    if _count_arg("batch_size", batch_size) < 1:  # (0 was taken as 1)
        raise InvalidInputError(
            f"batch_size must be 1 or more, not {batch_size}",
            hint="leave batch_size out for the default",
        )
    limits = limits or BundleLimits.for_store(store)
    with open_bundle(
        path,
        staging_root=store.paths.cache,
        passphrase=passphrase,
        limits=limits,
        progress=progress,
        require_encrypted=require_encrypted,
    ) as bundle:
        if not dry_run:
            # Before the plan, which then reads the records the import writes with each save.
            _ensure_schema(store)
            _record_edits_first(store, bundle.entries)
        items = plan_import(store, bundle, on_conflict=on_conflict, merger=merger)
        _check_yaml(items, store)
        result = ImportResult(
            bundle.summary(), on_conflict, dry_run, items, list(bundle.ignored_entries)
        )
        if dry_run:
            return result
        step = batch_size
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            committed: list[ImportItem] = []
            try:
                _apply_items(store, chunk, committed)
            except BaseException:
                # Ctrl-C once the batch's COMMIT was done: the batch is in (the store keeps
                # its files), so it is counted before the interrupt goes on. Left out, the
                # CLI said it had imported fewer than it had.
                if committed and progress is not None:
                    progress("import", start + len(chunk), len(items))
                raise
            if progress is not None:
                progress("import", start + len(chunk), len(items))
    return result
