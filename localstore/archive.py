"""Export and import of blueprints as ``.lsbundle`` files (the format is in docs/bundle-format.md).

A bundle is a zip holding ``manifest.json`` and each blueprint's two files under ``blueprints/``;
an encrypted bundle is a short magic followed by that zip sealed with :func:`crypto.encrypt_stream`
(scrypt + AES-256-GCM in authenticated chunks, so neither side needs the bundle in memory).

Import treats the file as hostile until proven otherwise, in three phases:

1. **Verify** (:func:`open_bundle`, in ``_bundle_read`` and the checks it runs): names, types,
   byte ranges, sizes and every hash are checked while streaming into a private staging folder
   under our own caps.
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

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from localstore import crypto
from localstore import files as fs
from localstore._bundle_apply import (
    APPLY_CHUNK,
    _apply_in_batches,
    _record_edits_first,
)
from localstore._bundle_format import (
    ENCRYPTED_MAGIC,
    FORMAT_NAME,
    FORMAT_VERSION,
    BundleLimits,
    ProgressCallback,
    callable_arg,
    is_encrypted,
    options_arg,
    path_arg,
)
from localstore._bundle_plan import _at_put_aside_paths, _check_entry_yaml, _Planner
from localstore._bundle_read import BundleEntry, VerifiedBundle, open_bundle
from localstore._bundle_records import _ensure_schema
from localstore._bundle_results import (
    CONFLICT_POLICIES,
    SKIP_CAUSES,
    ExportResult,
    ImportItem,
    ImportResult,
    Merger,
)
from localstore._bundle_write import (
    _check_dest_folder,
    _check_export_count,
    _check_one_name_pairs,
    _check_scrypt_params,
    _export_options,
    _is_flagged,
    _write_bundle,
)
from localstore._listing import filter_words
from localstore.blueprint import BlueprintInfo
from localstore.errors import InvalidInputError, NotFoundError, wrong_type
from localstore.store import BlueprintStore as _Store
from localstore.store import _count_arg, _flag_arg

if TYPE_CHECKING:
    from localstore.store import BlueprintStore


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
    _export_options(passphrase, progress, scrypt_params)
    limits = limits or BundleLimits.for_store(store)
    if passphrase is not None and scrypt_params is not None:
        _check_scrypt_params(scrypt_params, limits)
    infos = check_export(store, dest_path, refs=refs, folder=folder, tag=tag, limits=limits)
    ids = _write_bundle(store, infos, dest_path, passphrase, scrypt_params, progress, limits)
    size = dest_path.stat().st_size
    flagged = tuple(i.id for i in infos if not i.valid and _is_flagged(store, i.id))
    return ExportResult(dest_path, len(ids), size, passphrase is not None, tuple(ids), flagged)


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


# ---------------------------------------------------------------------------------------------------
# Applying


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
    _batch_size_arg(batch_size)
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
        _apply_in_batches(store, items, batch_size, progress)
    return result


def _batch_size_arg(batch_size: Any) -> None:
    if _count_arg("batch_size", batch_size) < 1:  # (0 was taken as 1)
        raise InvalidInputError(
            f"batch_size must be 1 or more, not {batch_size}",
            hint="leave batch_size out for the default",
        )
