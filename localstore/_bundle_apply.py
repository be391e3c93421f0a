"""Applying an import plan: the planned blueprints saved through the store's batch path, each with
its import record in the same transaction, so an interrupted import leaves every blueprint either
as it was or fully imported."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from localstore._bundle_format import ProgressCallback
from localstore._bundle_read import BundleEntry
from localstore._bundle_records import _present, _row
from localstore._bundle_results import ORIGIN, ImportItem
from localstore.blueprint import BlueprintMeta, content_hash, utc_now
from localstore.errors import LocalStoreError, RevisionConflictError
from localstore.store import SaveRequest

if TYPE_CHECKING:
    from localstore.store import BlueprintStore


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


def _apply_in_batches(
    store: BlueprintStore,
    items: list[ImportItem],
    batch_size: int,
    progress: ProgressCallback | None,
) -> None:
    """Apply the plan ``batch_size`` items per transaction, reporting progress per batch."""
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
