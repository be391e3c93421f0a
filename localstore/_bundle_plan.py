"""Planning an import: one action per bundle entry, decided against the store as it is now.

:class:`_Planner` matches each entry by id, then by path, and applies the conflict policy
(skip, overwrite, keep-both, merge); renames at the source are moves under every policy, and a
version made from the one here (its ancestors) is an update. Nothing is written: a dry run is
exactly this plan.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from localstore import files as fs
from localstore._as_if_new import as_if_new
from localstore._bundle_read import BundleEntry
from localstore._bundle_records import _already_imported, _live_at, _present, _records_version, _row
from localstore._bundle_results import SKIP_CAUSES, ImportItem, Merger
from localstore._reconcile import Reconciler, orphan_home
from localstore.blueprint import (
    MAX_META_BYTES,
    BlueprintMeta,
    content_hash,
    encode_meta,
    parse_yaml,
)
from localstore.errors import (
    AlreadyExistsError,
    BundleFormatError,
    BundleLimitError,
    InvalidYAMLError,
    LimitExceededError,
    LocalStoreError,
    UnsafePathError,
)

if TYPE_CHECKING:
    from localstore.store import BlueprintStore, Revision, Row


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
