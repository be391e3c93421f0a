"""Apply server rows to the local store: clean takes, the merge ladder, keep-both, edit beats delete.

One ``Applier`` serves one sync pass. Every method runs inside the caller's index write
transaction (``store.index.write()`` is nestable), so a file change and the sync bookkeeping that
says "this device now builds on server rev N" commit together: a kill between them leaves files
newer than the index, which reconcile-on-open ingests as a local change, which the next pass
resolves against the same server row (local equals remote) without losing anything.

Decisions, by local state (dirty = changed since the last recorded match with the server):

* clean or absent: take the server row (write, move, delete) with ``origin="remote"``.
* dirty delete vs remote edit: the edit wins; the blueprint is revived with the remote content.
* dirty edit vs remote delete: the edit wins; the tombstone becomes the base and the next push
  (``base_rev`` = tombstone rev) revives it on the server.
* both live: ``sync.merge.resolve`` with base = the stored content at ``base_rev``; with no base
  (an index rebuilt by ``check --fix``, an imported bundle), a local copy the server's history
  holds (:func:`ancestor_probes`) is that revision, so the server's newer version is simply
  taken. Keep-both
  gives the server version the id and path and makes the local version a new blueprint at a
  conflict path, plus a conflict record.
* an incoming path held locally by another id: the server row keeps the path, the local one moves
  to a conflict path (and is pushed again).
* a live row at a path this home never scans (a hidden folder, an ignored name): recorded as the
  base but not held here; a local edit is kept as a conflict copy, the local copy removed, and
  the row parked as ``unscanned_path`` (see ``Applier._out_of_view``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import unicodedata
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import localstore.store as _store_module
from localstore import files as fs
from localstore._revisions import revision_text
from localstore.blueprint import BlueprintMeta, content_hash, parse_yaml
from localstore.errors import (
    AlreadyExistsError,
    DiskFullError,
    IndexStoreError,
    InvalidInputError,
    LocalStoreError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
    UnsafePathError,
)
from localstore.events import Event
from localstore.store import JUDGED_AHEAD, Row
from sync import _state as st
from sync._kept_merges import highest_kept
from sync.errors import MergeError
from sync.merge import (
    ConflictCase,
    ConflictPolicy,
    Judge,
    Resolution,
    Version,
    _checked,
    merge,
    resolve,
)
from sync.remote import RevisionMatch, RevisionProbe, ServerRow

if TYPE_CHECKING:
    from localstore.blueprint import Blueprint
    from localstore.store import BlueprintStore

log = logging.getLogger("sync.engine")

# Conflict copies get a deterministic id (same main id, local content, server rev and device):
# if a pass is killed after writing the copy but before the commit, the retry moves that same
# copy instead of making a second one.
_COPY_NAMESPACE = uuid.UUID("9c6d1f0e-3b7a-4e55-9a8e-5c2f4b1d7e21")
_MAX_DEVICE_CHARS = 40
# The most verdicts one merge remembers: the line step's result, the block merge's, the
# structural result (Applier.judge_ahead stops before one could push out another's).
_MERGE_VERDICTS = 3


class UnparsedInTheWay(AlreadyExistsError):
    """A local blueprint must leave a path (the server gives it to another), but its files do not
    parse here: an edit in progress (a half-typed YAML), or a meta that went bad.

    Moving it re-reads and re-checks its files (``store.move`` is a save at a new path), which
    refused them (InvalidYAMLError) and stopped every sync cycle at the same blueprint until the
    person fixed the file: nothing else synced meanwhile. Moving the pair as bytes would keep
    them but take the file away from under the editor that has it open (its next save then
    writes the finished text over the server's blueprint at the old path). So it is left
    exactly as it is, as an ``unparsable_local`` row leaves it (Applier._wait_for_parse): a
    pulled row that needs its path is parked (``path_blocked``, an AlreadyExistsError: it runs
    again once the file parses, see :func:`path_unblocked`), and a push that met the path taken
    is parked (``unparsable_local``, see the engine's ``_path_taken``). Once the file parses, it
    moves aside as any blueprint in the way does.
    """

    def __init__(self, local: Row, path: str, taker: str) -> None:
        super().__init__(
            f"{local.path} does not parse here ({local.flagged}) and {taker} needs its path "
            f"{path}: the file is left exactly as it is, and moves aside once it parses",
            hint="fix the file (or move it), then sync",
        )
        self.local = local


@dataclass
class ApplyStats:
    """What one pass did to the local store."""

    applied: int = 0
    conflicts: int = 0
    merged: int = 0
    errors: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # (id, report line) of rows the applier parked itself (see Applier._out_of_view): they are
    # parked in the row's own transaction, since they also wrote files (a conflict copy).
    parked: list[tuple[str, str]] = field(default_factory=list)


def utc_stamp(now: datetime) -> str:
    """A UTC timestamp that is safe in a file name on every OS (no colons)."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")


def _safe_device(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".- ")
    return (cleaned or "device")[:_MAX_DEVICE_CHARS]


def conflict_path(
    path: str, device: str, stamp: str, taken: Callable[[str], bool], *, word: str = "conflict"
) -> str:
    """A free sibling path: ``folder/stem (conflict <device> <stamp>).blueprint.yaml``.

    ``word`` replaces "conflict" (a rename cycle's passing path says "moving").
    """
    folder = fs.folder_of(path)
    stem = fs.display_name(path)
    dev = _safe_device(device)
    n = 1
    while True:
        tail = f" ({word} {dev} {stamp}{'' if n == 1 else f' {n}'})" + fs.YAML_SUFFIX
        where = folder
        # The name is cut to fit both a part's bytes and the whole path's characters (the
        # server's limit too): a path near 1,024 characters with its tail added was refused by
        # normalize_path, and that error ended every pass at the same collision.
        chars = fs.MAX_PATH_CHARS - len(tail) - (len(where) + 1 if where else 0)
        if chars < 1:
            # Its folders alone leave no room for the tail: the copy goes to the top folder
            # (the conflict record names where it is).
            where, chars = "", fs.MAX_PATH_CHARS - len(tail)
        room = fs.MAX_SEGMENT_BYTES - len(tail.encode("utf-8"))
        short = stem.encode("utf-8")[: max(room, 1)].decode("utf-8", "ignore")[:chars]
        name = short.rstrip(" .") + tail
        candidate = fs.normalize_path(f"{where}/{name}" if where else name)
        if not taken(candidate):
            return candidate
        n += 1


def merge_path(base_path: str | None, local_path: str, remote_path: str) -> str:
    """3-way merge of a path: a side that renamed wins; both renamed: the server's rename wins."""
    if local_path == remote_path:
        return local_path
    if base_path is not None and local_path == base_path:
        return remote_path
    if base_path is not None and remote_path == base_path:
        return local_path
    return remote_path


# OS errors that say a path's shape cannot exist here (a file where a folder must be, or the other
# way round; a name too long or not encodable for this file system): retrying never helps.
_PATH_SHAPE_ERRNOS = frozenset({errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EILSEQ})


def is_path_shape_error(exc: BaseException) -> bool:
    """True for a StorageError caused by the shape of the path written, not by the disk.

    Such a server row can never be written on this device (e.g. the server holds both
    ``d.blueprint.yaml`` and ``d.blueprint.yaml/e.blueprint.yaml``): it is quarantined like an
    invalid row. A full disk, missing permissions or a failing index are not: the cycle stops
    and retries, and nothing is skipped.
    """
    if not isinstance(exc, StorageError) or isinstance(
        exc, DiskFullError | PermissionDeniedError | IndexStoreError
    ):
        return False
    cause: BaseException | None = exc.__cause__
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _PATH_SHAPE_ERRNOS:
            return True
        cause = cause.__cause__
    return False


def copy_id_for(blueprint_id: str, local_hash: str, rev: int, device_id: str) -> str:
    """The id of the conflict copy of ``blueprint_id``'s local version ``local_hash`` kept against
    server rev ``rev`` on this device: derived, not random, so an apply run again after a kill
    writes the same copy (not a second one), and the apply journal's recovery finds it
    (``SyncEngine._recover_copy``)."""
    return str(uuid.uuid5(_COPY_NAMESPACE, f"{blueprint_id}:{local_hash}:{rev}:{device_id}"))


def path_unblocked(store: BlueprintStore, cur: Any, path: str) -> bool:
    """Whether a server row parked as ``path_blocked`` at ``path`` would be stored now.

    It was parked because the save found a file there that the index cannot record (its YAML or
    meta does not parse, so writing over it would lose it) or that is no regular file (a link,
    a special file), and refused the path (AlreadyExistsError). The same checks, read-only: the
    path is free once nothing is there, or once an indexed blueprint holds it (the file was
    fixed and recorded: it moves aside as any local blueprint in a pulled row's way). A link or
    special file at either name, or an unindexed file, still blocks it, and so does an indexed
    blueprint whose files do not parse now (flagged: :class:`UnparsedInTheWay`). A few lstats
    and one indexed lookup per parked row, so a cycle asks the server only when this changed (a fetch
    that is refused again parks the row again, and this says "blocked" again).

    A file fixed but not recorded yet (no watcher) waits for the reconcile that records it,
    as an ``unparsable_local`` row waits for its file's. A path that does not normalize (a
    stored path ``sync._shown`` escaped or cut names no file here) is left to a retry.
    """
    try:
        rel = fs.normalize_path(path)
    except LocalStoreError:
        return False
    for name in (rel, fs.meta_path_for(rel)):
        try:
            mode = os.lstat(store.root.joinpath(*name.split("/"))).st_mode
        except FileNotFoundError:
            continue
        except OSError:
            return False  # (unreadable, or a file where a folder of the path must be)
        if not stat.S_ISREG(mode):
            return False
    holder = store._live_at(cur, rel)
    if holder is not None:
        # An indexed blueprint whose files do not parse (flagged) is not moved aside either
        # (sync._apply.UnparsedInTheWay): the row waits until they parse.
        return holder.flagged is None
    return not os.path.lexists(store.root.joinpath(*rel.split("/")))


def _server_stamp(updated_at: str) -> str | None:
    """``updated_at`` (the server's timestamp of a row) as a meta time, or None if unreadable."""
    try:
        when = datetime.fromisoformat(updated_at)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # no zone: not the server's timestamptz; no time to make up
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stored_meta(r: ServerRow) -> dict[str, Any]:
    """The meta a server row is stored with here: as sent, a missing ``created`` or
    ``modified`` taken from the row's server timestamp (``updated_at``).

    Another client may write rows with a minimal meta. The store fills what is missing with
    its own clock, so each device stored other bytes (and another content hash, ``created``
    being part of it) for the same row: replicas differed from each other for good. Filled from
    the row alone, every device holding a revision holds the same bytes. A LocalStore device
    always sends both, so its rows are stored as sent.
    """
    meta = r.meta
    if meta.get("created") not in (None, "") and meta.get("modified") not in (None, ""):
        return meta
    stamp = _server_stamp(r.updated_at)
    if stamp is None:
        return meta
    filled = dict(meta)
    for key in ("created", "modified"):
        if filled.get(key) in (None, ""):
            filled[key] = stamp
    return filled


def refuse_unreadable(r: ServerRow) -> None:
    """Raise InvalidInputError (the engine parks the row as ``invalid_remote``) for a live row
    whose meta this client cannot hold (``ServerRow.unreadable``): what is wrong, and what to
    do, for the quarantine record and `localstore status`."""
    if r.unreadable is None or r.deleted:
        return
    raise InvalidInputError(
        f"server row {r.id} (rev {r.rev}) cannot be read here: {r.unreadable}. Correct the "
        "row's meta in the cloud's blueprints table, or delete the row there: the next sync "
        "takes the corrected row (any copy this device holds stays as it is until then)"
    )


def is_known(item: st.ItemState | None, r: ServerRow) -> bool:
    """True when this device already builds on this server write (or a later one)."""
    return item is not None and item.base_rev is not None and item.base_seq >= r.seq


def drop_known(cur: Any, rows: Sequence[ServerRow]) -> list[ServerRow]:
    """The rows this device does not already build on (see :func:`is_known`), in order."""
    items = st.items_for(cur, [r.id for r in rows])
    return [r for r in rows if not is_known(items.get(r.id), r)]


def ancestor_probes(cur: Any, rows: Sequence[ServerRow]) -> list[RevisionProbe]:
    """What to ask the server's history before applying ``rows`` (see ``Applier.ancestors``).

    A row meets a local copy this device has no base for (never synced here: an index that
    `check --fix` rebuilt, an imported bundle, a new account) and that differs from it (content,
    or path of a live row) and is dirty. Without a base the merge cannot tell an older, unedited
    copy from an edit; the server can, when the copy's hash is one of its accepted revisions of
    that id. Two ``IN (...)`` queries per 500 rows; nothing to ask in a normal sync (every row
    this device holds has a base).
    """
    items = st.items_for(cur, [r.id for r in rows])
    baseless: dict[str, ServerRow] = {}
    for r in rows:
        item = items.get(r.id)
        if item is None or item.base_rev is None:
            baseless[r.id.lower()] = r
    probes: dict[str, RevisionProbe] = {}
    ids = list(baseless)
    for i in range(0, len(ids), st.IN_CHUNK):
        part = ids[i : i + st.IN_CHUNK]
        for rid, digest, path, op_id in cur.execute(
            "SELECT id, content_hash, path, op_id FROM blueprints WHERE deleted = 0 "
            f"AND flagged IS NULL AND id IN ({','.join('?' * len(part))})",
            part,
        ):
            r = baseless[str(rid)]
            item = items.get(r.id)
            if int(op_id) <= (item.synced_op_id if item is not None else 0):
                continue  # clean: taken as it is, nothing to decide
            if digest == r.content_hash and (r.deleted or path == r.path):
                continue  # the same version: settled without asking
            probes[r.id] = RevisionProbe(r.id, str(digest), str(path))
    return list(probes.values())


def canonical_path(path: str) -> bool:
    """True when ``fs.normalize_path(path)`` can only return ``path`` itself or raise.

    normalize_path changes nothing else than the Unicode form (NFC) and the suffix; everything
    else it checks and refuses. A canonical remote path can therefore go to ``save_many``
    unnormalized: the store validates it there (once) and a bad one comes back as that item's
    error, which the engine quarantines. tests/sync_engine/test_apply_batch.py checks this
    against normalize_path itself.
    """
    return path.endswith(fs.YAML_SUFFIX) and unicodedata.is_normalized("NFC", path)


def _out_of_view_message(
    path: str,
    away: UnsafePathError,
    local: Row | None,
    copy: tuple[str, str, int] | None,
    linked: str | None = None,
) -> str:
    """The quarantine message of a row at a path this home never scans: why, and what to do.

    ``linked``: the folder of ``path`` that is a symbolic link here, if that is why."""
    hidden = any(part.startswith(".") for part in path.split("/")[:-1])
    parts = [f"{away.message}; it was put there elsewhere, so this device does not keep it"]
    if local is not None and not local.deleted:
        parts.append(f"; {local.path} was removed here (its history keeps it)")
    if copy is not None and local is not None:
        parts.append(
            f". Your edit is kept at {copy[1]} (conflict #{copy[2]}; `localstore conflicts "
            f"resolve {copy[2]} --take local` puts it back at {local.path} on every device)"
        )
    if hidden:
        parts.append(
            ". To have it here again, move it out of the hidden folder with the client that put "
            "it there: the next sync brings it back"
        )
    elif linked is not None:
        parts.append(
            f". To have it here, replace the link {linked!r} by a folder and run `localstore "
            "sync --retry-quarantined` (or move it elsewhere on another device)"
        )
    else:
        parts.append(
            f". To have it here, remove the pattern from this home's {fs.IGNORE_FILE_NAME} and "
            "run `localstore sync --retry-quarantined` (or move it elsewhere on another device)"
        )
    return "".join(parts)


class Prefetched:
    """The local state of a window of pulled rows, read with three ``IN (...)`` queries.

    Replaces four primary-key or index reads per row (sync item, local row, live holder of the
    path, and the item again for :func:`is_known`). Valid only until the store or the sync rows
    change: the engine reads a new window after every row that goes through ``apply_row``;
    saves planned into a run happen later, and ``plan_clean_save`` keeps their ids and paths
    apart itself, exactly as it did when it queried per row.
    """

    def __init__(self, store: BlueprintStore, cur: Any, rows: Sequence[ServerRow]) -> None:
        self.end = 0
        self.items = st.items_for(cur, [r.id for r in rows])
        lowered = [r.id.lower() for r in rows]
        keys = [fs.path_key(r.path) for r in rows]
        present: set[str] = set()
        self.live: dict[str, str] = {}
        for i in range(0, len(rows), st.IN_CHUNK):
            ids, part = lowered[i : i + st.IN_CHUNK], keys[i : i + st.IN_CHUNK]
            marks = ",".join("?" * len(ids))
            present.update(
                str(r[0])
                for r in cur.execute(f"SELECT id FROM blueprints WHERE id IN ({marks})", ids)
            )
            self.live.update(
                (str(r[0]), str(r[1]))
                for r in cur.execute(
                    f"SELECT path_key, id FROM blueprints WHERE path_key IN ({marks}) "
                    "AND deleted = 0",
                    part,
                )
            )
        # Only ids the index has are read in full (none in a first download).
        self._rows = {i: store.row_by_id(i, cur) for i in present}

    def local(self, blueprint_id: str) -> Row | None:
        """The index row with this id (deleted or not), as ``store.row_by_id`` gives it."""
        return self._rows.get(blueprint_id.lower())


def contained(policy: Callable[[ConflictCase], Resolution]) -> Callable[[ConflictCase], Resolution]:
    """An app's conflict policy whose failure keeps both versions instead of failing the cycle.

    A callable that raised (or returned no usable Resolution) on one blueprint failed every cycle
    at that row: nothing else was pulled again while the home kept that conflict. Keep-both is
    the default policy's own fallback and loses nothing; the error goes into the conflict
    record's reason (what ``localstore conflicts`` and the API show) and the log.
    """

    def call(case: ConflictCase) -> Resolution:
        try:
            return _saveable(case, _checked(policy(case)))
        except Exception as exc:  # the app's code: contained here, reported below
            log.error(
                "sync: the conflict policy %r failed on blueprint %s; kept both versions "
                "(see `localstore conflicts`); fix the policy",
                policy,
                case.remote.meta.get("id", "?"),
                exc_info=True,
            )
            why = f"the conflict policy failed ({type(exc).__name__}: {exc})"
            return Resolution.keep_both([why, *case.outcome.conflicts])

    return call


def _saveable(case: ConflictCase, resolution: Resolution) -> Resolution:
    """``resolution``, when a merge it carries is one the store can save under the case's id.

    Raises InvalidInputError (the YAML does not parse or is not a mapping, the meta is not
    valid) or MergeError (the meta names another blueprint). The save refused such a merge
    inside the pass, and the engine took that for the server's row being invalid: the row was
    parked as ``invalid_remote``, no conflict recorded, and the same merge refused every cycle.
    """
    if resolution.action != "take_merged":
        return resolution
    assert resolution.content is not None and resolution.meta is not None  # (_checked)
    parse_yaml(resolution.content)
    ident = str(case.remote.meta.get("id", ""))
    own = resolution.meta.get("id", ident)
    if not isinstance(own, str) or own.lower() != ident.lower():
        raise MergeError(f"the conflict policy returned the meta of blueprint {own}, not {ident}")
    BlueprintMeta.from_dict({**resolution.meta, "id": ident}, source="the merged meta")
    return resolution


class Applier:
    """Applies server rows to one store inside the caller's write transaction."""

    def __init__(
        self,
        store: BlueprintStore,
        policy: ConflictPolicy,
        *,
        now: Callable[[], datetime],
        stats: ApplyStats,
        ancestors: Mapping[str, RevisionMatch] | None = None,
    ) -> None:
        self.store = store
        self.policy = contained(policy) if callable(policy) else policy
        self.now = now
        self.stats = stats
        # The server's answers to ancestor_probes for these rows, by id: revisions of a row
        # with the content hash of a local copy this device holds without a base.
        self.ancestors: Mapping[str, RevisionMatch] = ancestors or {}
        # Looked up once: a store module without batched saves makes every row take apply_row.
        self._request_type = getattr(_store_module, "SaveRequest", None)
        # The home's ignore rules, read once per pass (one Applier per pass) when a new path
        # needs them, as a save batch does.
        self._ignore_rules: fs.IgnoreRules | None = None
        # The merges' verdicts, by the text's bytes, from the store's memo: those judge_ahead
        # reached before the write lock are found there instead of being reached again inside.
        self._judge: Judge | None = store._merge_verdict if store.validator is not None else None

    # -- entry points --------------------------------------------------------------------------

    def judge_ahead(self, rows: Sequence[ServerRow]) -> None:
        """Run the app's validator on what applying ``rows`` will save, before the caller takes
        the write lock: a slow validator inside the pass's transaction held every other
        process's writes to the home up (and past their busy timeout they failed).

        Judged: each live row's text (a clean take's save, the server's side of a merge), and
        for a row whose local copy has unpushed edits, the local text (kept by a merge or as a
        conflict copy) and what the merge ladder makes of the three versions, read here as
        ``_three_way`` will read them inside. The verdicts are remembered by the bytes judged
        (BlueprintStore._judge_ahead), so the saves and the merge inside use them only for the
        very same texts: anything changed in between is judged again inside, as before. A
        callable policy is not asked here (it is the app's code, asked once, inside); what it
        returns of its own is judged inside.
        """
        store = self.store
        if self._judge is None or not rows:
            return
        texts: list[str] = []
        merges: list[tuple[Version | None, Version, Version]] = []
        with store.index.read() as cur:
            items = st.items_for(cur, [r.id for r in rows])
            for r in rows:
                item = items.get(r.id)
                if is_known(item, r):
                    continue  # apply_row skips it
                if r.deleted:
                    # A delete meets an edit no watcher recorded: the edit is ingested (and
                    # kept) first; nothing else of the row is saved.
                    gone = self._unrecorded_text(self._local_row(r.id, cur))
                    texts.extend([gone] if gone is not None else [])
                    continue
                if r.unreadable is not None:
                    continue  # apply_row refuses it (refuse_unreadable): nothing is saved
                texts.append(r.content)
                local = self._local_row(r.id, cur)
                # An edit on disk no watcher has recorded yet: apply_row ingests it first (see
                # _fresh), and a blueprint in the row's way is moved aside with its edit.
                unrecorded = self._unrecorded_text(local)
                holder = self._live_row_at(cur, r.path)
                if holder is not None and (local is None or holder.id != local.id):
                    texts.extend(t for t in [self._unrecorded_text(holder)] if t is not None)
                elif holder is None:
                    # A file an editor put at the row's path that no row describes yet: the
                    # save records it first (BlueprintStore._ingest_first) and moves it aside.
                    texts.extend(t for t in [self._unindexed_text(r.path)] if t is not None)
                synced = item.synced_op_id if item is not None else 0
                if unrecorded is not None and local is not None:
                    texts.append(unrecorded)
                elif local is None or local.deleted or local.flagged or local.op_id <= synced:
                    continue  # a clean take: only the server's text is saved
                local_text = unrecorded if unrecorded is not None else self._text(cur, local)
                local_v = Version(local_text, json.loads(local.meta_json))
                texts.append(local_v.content)
                match = self._ancestor(local, item, r)
                base = (
                    st.Base(match.rev, match.path, local_v.content, dict(local_v.meta))
                    if match is not None
                    else self._find_base(cur, local.id, item, r)
                )
                base_v = Version(base.content, dict(base.meta)) if base is not None else None
                merges.append((base_v, local_v, Version(r.content, dict(r.meta))))
        room = JUDGED_AHEAD - store._judge_texts_ahead(texts)
        if not (callable(self.policy) or self.policy == "merge"):
            return  # the other policies never run the ladder past "one side changed"
        for base_v, local_v, remote_v in merges:
            if room < _MERGE_VERDICTS:
                break  # the memo keeps no more for certain: the rest are judged inside
            before = store._judged_count
            merge(base_v, local_v, remote_v, validator=store.validator, judge=self._judge)
            room -= store._judged_count - before

    def apply_row(self, cur: Any, r: ServerRow, *, force: bool = False) -> None:
        """Bring one server row into the store (a pulled row or a push conflict's current row).

        Raises InvalidInputError (and subclasses) when the row cannot be stored here; the caller
        parks it in quarantine (also a StorageError that :func:`is_path_shape_error` accepts).
        Other storage errors propagate: the pass stops, nothing is skipped. ``force`` (a
        quarantine retry) applies a live row this device knows but does not hold (one at a path
        it does not scan, see :meth:`_out_of_view`) again, in case that changed here.
        """
        item = st.get_item(cur, r.id)
        known = is_known(item, r)
        if known and not force:
            return  # already known: our own push coming back, or a replayed page
        local = self._local_row(r.id, cur)
        if known and (r.deleted or (local is not None and not local.deleted)):
            return  # held here as the server has it: nothing to retry
        away: UnsafePathError | None = None
        if not r.deleted:
            # Everything that can refuse the row, before anything is written (a path moved
            # aside, a conflict copy). A refused row's savepoint puts back the files the store
            # wrote for it too (Index.undo_on_rollback), but refusing first writes nothing, and
            # leaves nothing for a kill during the undo to strand (reconcile would adopt such
            # files as new blueprints).
            away = self._check_row(r, local)
        if away is not None and local is not None and not local.deleted and local.flagged:
            raise away  # an unparsable local file: parked, and the file left exactly as it is
        if local is not None and not local.deleted:
            local = self._fresh(local) or local
        synced = item.synced_op_id if item is not None else 0
        dirty = local is not None and local.op_id > synced
        if away is not None:
            self._out_of_view(cur, local, item, r, away, dirty=dirty)
            return
        if local is not None and local.deleted and not dirty and self._lost_own_push(item, r):
            # The delete was settled as "never on the server", yet the row is there: it pushes
            # now on this base (taking the row would bring back what this device deleted).
            self._record(cur, r, synced=False)
            st.mark_unsynced(cur, r.id)
            return
        if local is not None and not local.deleted and local.flagged:
            self._wait_for_parse(cur, local, r)
            return
        if local is None or not dirty:
            self._take_clean(cur, local, r)
        elif local.deleted:
            self._local_delete_vs(cur, local, item, r)
        elif r.deleted:
            self._local_edit_vs_delete(cur, local, item, r)
        else:
            self._three_way(cur, local, item, r)

    def plan_clean_save(
        self,
        r: ServerRow,
        known: Prefetched,
        taken_ids: set[str],
        taken_keys: set[str],
    ) -> tuple[Any, str] | None:
        """A ``SaveRequest`` and its path key for a row that needs no decision, or None.

        None sends the row through :meth:`apply_row`. Only rows whose local copy is absent or
        clean and unchanged on disk, whose path is canonical and free here and not used by
        another row of the same batch, qualify: the batch then saves them together with few disk
        flushes. ``known`` is the local state read for this row's window before the run's saves.
        The caller records their bases (:func:`sync._state.record_synced_bases`) in the same
        transaction once the batch is saved; a hook per row cost three statements per row.

        The meta is validated here (the store takes a ``BlueprintMeta`` as it is); the path is
        validated by the store (see :func:`canonical_path`). Either way a bad row is quarantined,
        never written.
        """
        if self._request_type is None or r.deleted or r.id in taken_ids or r.unreadable:
            return None  # (an unreadable row: apply_row parks it, see refuse_unreadable)
        item = known.items.get(r.id)
        if is_known(item, r):
            return None  # already known: apply_row skips it at once
        local = known.local(r.id)
        if local is not None and not self._clean_and_settled(local, item):
            return None
        if local is not None and local.deleted and self._lost_own_push(item, r):
            return None  # apply_row pushes the local delete instead (see there)
        if not canonical_path(r.path):
            return None  # apply_row normalizes it (and records the server's path as the base)
        key = fs.path_key(r.path)
        holder = known.live.get(key)
        if key in taken_keys or (holder is not None and holder != r.id):
            return None
        try:
            meta = BlueprintMeta.from_dict(stored_meta(r), source=f"server row {r.id}")
        except InvalidInputError:
            return None  # apply_row reports it
        if meta.id != r.id:
            return None
        self.stats.applied += 1
        return self._request_type(r.path, r.content, meta=meta, id=r.id), key

    def _lost_own_push(self, item: st.ItemState | None, r: ServerRow) -> bool:
        """True when live row ``r`` is this device's own write that it never heard back about.

        A push whose response was lost (a kill, a dropped connection) leaves no base: the engine
        then settles a later local delete without pushing it (nothing to delete on the server,
        as far as it knows), and the row comes back in the next pull.
        """
        return (
            not r.deleted
            and r.device == self.store.device_id
            and (item is None or item.base_rev is None)
        )

    def _clean_and_settled(self, local: Row, item: st.ItemState | None) -> bool:
        if local.flagged or local.op_id > (item.synced_op_id if item is not None else 0):
            return False
        return local.deleted or self._fresh(local, ingest=False) is local

    def as_indexed(self, local: Row) -> bool:
        """Whether ``local``'s files are as the index recorded them (no edit unrecorded yet)."""
        return self._fresh(local, ingest=False) is local

    def move_for_path_conflict(
        self, cur: Any, blueprint_id: str, winner: ServerRow, *, reason: str = "path_taken"
    ) -> str | None:
        """Move a local blueprint off a path the server gave to ``winner``; returns its new path."""
        local = self._local_row(blueprint_id)
        if local is None or local.deleted:
            return None
        local = self._fresh(local) or local  # the record keeps the text on disk, edit included
        if local.deleted:
            # Recording the files retired it: the unrecorded change was its own meta come late
            # (localstore/_late_meta.py; the arriving id holds this path now, and its own push or
            # this pass's pull meets the server's row), or another pair's meta put over it.
            # Nothing is left to move: moving it anyway failed this pass, and every pass after
            # it, on a deleted id.
            return None
        if local.flagged:
            raise UnparsedInTheWay(local, winner.path, f"the server's blueprint {winner.id}")
        text = self._text(cur, local)
        item = st.get_item(cur, local.id)
        # A blueprint the server already has is moved, not copied: resolving must keep it.
        synced = item is not None and item.base_rev is not None and not item.base_deleted
        new_path = self._conflict_path_for(local.path)
        self.store.move(local.id, new_path, origin="merge")
        st.add_conflict(
            cur,
            blueprint_id=winner.id,
            path=winner.path,
            copy_id=local.id,
            copy_path=new_path,
            reason=reason,
            base=None,
            local=text,
            remote=winner.content,
            base_rev=None,
            remote_rev=winner.rev,
            copy_synced=synced,
            above=highest_kept(self.store.paths.state),
        )
        self._conflict_event(
            local.id, new_path, f"{local.path} is taken on the server by {winner.id}; moved here"
        )
        return new_path

    # -- the cases -----------------------------------------------------------------------------

    def _take_clean(self, cur: Any, local: Row | None, r: ServerRow) -> None:
        if r.deleted:
            if local is not None and not local.deleted:
                self.store.delete(local.id, origin="remote", tx_hook=self._hook(r))
                self.stats.applied += 1
            elif local is not None:
                self._record(cur, r, synced=True)
            else:
                # Never held here: nothing to delete or record. An earlier row of it that could
                # not be stored (parked, direction "pull") is history now, as a newer live row
                # makes it (record_base); left, it stayed listed as needing attention for good.
                st.drop_pull_parked(cur, r.id)
            return
        self._save_remote(cur, r)

    def _local_delete_vs(
        self, cur: Any, local: Row, item: st.ItemState | None, r: ServerRow
    ) -> None:
        if r.deleted:
            self._record(cur, r, synced=True)  # deleted on both sides
            return
        if item is not None and item.base_rev is not None and r.content_hash == item.base_hash:
            # The server only moved it (no edit): the local delete still applies to this rev.
            self._record(cur, r, synced=False)
            return
        if r.device == self.store.device_id:
            # The server's edit is this device's own (a push whose response was lost), made
            # before the delete: nobody else's edit to keep, the delete applies to this rev.
            self._record(cur, r, synced=False)
            return
        self._save_remote(cur, r)  # an edit beats a delete: revive with the remote edit
        self._conflict_event(local.id, r.path, "a remote edit revived a locally deleted blueprint")

    def _local_edit_vs_delete(
        self, cur: Any, local: Row, item: st.ItemState | None, r: ServerRow
    ) -> None:
        known = item is not None and item.base_rev is not None
        # A tombstone carries the content hash the deleting device last had. With no base here
        # (an index rebuilt by `check --fix`, a new account), a local copy with exactly that
        # hash is the version that was deleted, not an edit: reviving it undid the delete on
        # every device.
        deleted_hash = item.base_hash if known and item is not None else r.content_hash
        # The base's hash is the server's, which another client computes its own way (and
        # whose minimal meta is stored filled in, see stored_meta): the local revision that
        # stored the base has its own hash. Only compared with the server's, a mere move of
        # such a row was an edit, and it revived the row the other client had deleted.
        held = st.held_hash(cur, r.id, item.base_rev) if known and item is not None else None
        if local.content_hash in (deleted_hash, held) or self._ancestor(local, item, r) is not None:
            # (Or, with no base, a version the server had before the deleted one: no edit.)
            # Local only moved it (no edit): the remote delete applies.
            self.store.delete(local.id, origin="remote", tx_hook=self._hook(r))
            self.stats.applied += 1
            return
        # An edit beats a delete: build on the tombstone; the next push revives the row.
        self._record(cur, r, synced=False)
        self._conflict_event(local.id, local.path, "a local edit revives a remotely deleted one")

    def _three_way(self, cur: Any, local: Row, item: st.ItemState | None, r: ServerRow) -> None:
        local_v = Version(self._text(cur, local), json.loads(local.meta_json))
        remote_v = Version(r.content, dict(r.meta))
        base = self._ancestor_base(local, local_v, item, r) or self._find_base(
            cur, local.id, item, r
        )
        base_v = Version(base.content, dict(base.meta)) if base is not None else None
        resolution = resolve(
            self.policy,
            base_v,
            local_v,
            remote_v,
            validator=self.store.validator,
            judge=self._judge,
        )
        if resolution.action == "keep_both":
            base_rev = item.base_rev if item is not None else None
            self._keep_both(cur, local, local_v, base_v, base_rev, r, resolution)
            return
        content, meta = self._chosen(resolution, local_v, remote_v)
        path = merge_path(self._base_path(base, item), local.path, r.path)
        if path == r.path and self._hash(content, meta, r.id) == r.content_hash:
            self._save_remote(cur, r)
            return
        self._ensure_path_free(cur, path, local.id, r)
        self.store.save(path, content, meta=meta, id=local.id, origin="merge")
        self._record(cur, r, synced=False)
        self.stats.merged += 1

    def _keep_both(
        self,
        cur: Any,
        local: Row,
        local_v: Version,
        base_v: Version | None,
        base_rev: int | None,
        r: ServerRow,
        resolution: Resolution,
    ) -> None:
        copy_id, copy_path = self._save_copy(cur, local, local_v, r)
        self._save_remote(cur, r)
        cid = st.add_conflict(
            cur,
            blueprint_id=r.id,
            path=r.path,
            copy_id=copy_id,
            copy_path=copy_path,
            reason="; ".join(resolution.conflicts) or "content",
            base=base_v.content if base_v else None,
            local=local_v.content,
            remote=r.content,
            base_rev=base_rev,
            remote_rev=r.rev,
            above=highest_kept(self.store.paths.state),
        )
        self._conflict_event(r.id, r.path, f"conflict #{cid}: local version kept at {copy_path}")

    def _save_copy(self, cur: Any, local: Row, local_v: Version, r: ServerRow) -> tuple[str, str]:
        """Write the local version as a new blueprint next to ``local``; returns (id, path)."""
        copy_id = copy_id_for(local.id, local.content_hash, r.rev, self.store.device_id)
        kept = self.store.row_by_id(copy_id, cur)
        if kept is not None and not kept.deleted:
            # An apply run again after a kill that came after the copy's files (reconcile
            # adopted them): that is the copy. A name made again from this clock moved it to
            # another second's name and wrote it again, over any edit of it since.
            return copy_id, kept.path
        stamp = utc_stamp(self.now())
        copy_path = self._conflict_path_for(local.path, stamp=stamp, owner=copy_id)
        name = f"{local.name} (conflict {self.store.device_name} {stamp})"
        now = self.now().astimezone(UTC).isoformat().replace("+00:00", "Z")
        meta = {**local_v.meta, "id": copy_id, "name": name, "created": now, "modified": now}
        self.store.save(copy_path, local_v.content, meta=meta, id=copy_id, origin="merge")
        return copy_id, copy_path

    def _out_of_view(
        self,
        cur: Any,
        local: Row | None,
        item: st.ItemState | None,
        r: ServerRow,
        away: UnsafePathError,
        *,
        dirty: bool,
    ) -> None:
        """A live server row at a path this home never scans: a hidden folder or an ignored name.

        Another client (an older version, another app) or another device with other ignore
        rules put the blueprint there. Its files cannot live here: reconcile would record them
        as deleted at the next open. Parking the row, as before, also parked this device's own
        edit of it, for good: every push met the same row, every retry refused it again.

        So: the row is recorded as this device's base (it builds on it, it just does not hold
        it), and the local copy leaves this device's view as it left the server's: removed
        here (history keeps it). A local edit is kept first as a conflict copy next to it,
        which syncs like any new blueprint, with a conflict record. The row is parked as
        ``unscanned_path`` with what to do: when it comes out of that folder (a later row) it
        is applied as usual and the entry goes; a retry applies it again (``force``), which
        stores it if this home scans that path by then (an ignore pattern removed).
        """
        # A local delete is not pushed over it: a kill after this removed the local copy and
        # before the commit leaves a delete that reconcile records, and pushing that deleted a
        # blueprint the other client only meant to move. Out of this device's view it stays.
        copy: tuple[str, str, int] | None = None
        if local is not None and not local.deleted:
            base_hash = item.base_hash if item is not None and item.base_rev is not None else ""
            if (
                dirty
                and local.content_hash not in (base_hash, r.content_hash)
                and self._ancestor(local, item, r) is None
            ):
                copy = self._keep_edit_out_of_view(cur, local, item, r)
            self.store.delete(local.id, origin="remote")
        self._record(cur, r, synced=True)
        linked = fs.linked_folder(str(self.store.root), r.path)
        message = _out_of_view_message(r.path, away, local, copy, linked)
        st.quarantine(
            cur, r.id, st.current_op_id(cur, r.id), r.path, "pull", "unscanned_path", message
        )
        self.stats.parked.append((r.id, message))
        log.warning("sync: %s", message)

    def _keep_edit_out_of_view(
        self, cur: Any, local: Row, item: st.ItemState | None, r: ServerRow
    ) -> tuple[str, str, int]:
        """Keep a local edit of a blueprint that moved out of view as a conflict copy."""
        local_v = Version(self._text(cur, local), json.loads(local.meta_json))
        base = self._find_base(cur, local.id, item, r)
        copy_id, copy_path = self._save_copy(cur, local, local_v, r)
        cid = st.add_conflict(
            cur,
            blueprint_id=r.id,
            path=r.path,
            copy_id=copy_id,
            copy_path=copy_path,
            reason=f"moved to {r.path}, which this device does not look inside",
            base=base.content if base is not None else None,
            local=local_v.content,
            remote=r.content,
            base_rev=item.base_rev if item is not None else None,
            remote_rev=r.rev,
            above=highest_kept(self.store.paths.state),
        )
        self._conflict_event(r.id, copy_path, f"conflict #{cid}: local edit kept at {copy_path}")
        return copy_id, copy_path, cid

    def _wait_for_parse(self, cur: Any, local: Row, r: ServerRow) -> None:
        """The blueprint's file does not parse (an edit in progress): park the row, write nothing.

        Writing the server's version over it (or deleting it for a tombstone) kept the person's
        bytes only in a conflict record in the index, which `check --fix` loses, replaced the
        file under an editor that still had it open, and left `--take local` refusing the bytes
        as invalid YAML. So the file is never touched, as a file blocking another blueprint's
        path is not (``path_blocked``). The row waits, parked as ``unparsable_local``: once
        the file parses again it is an edit, whose push meets the server's row and merges with
        it (or revives it: an edit beats a delete), and the entry goes with that newer base.
        """
        message = (
            f"{local.path} does not parse here ({local.flagged}); the server's change of it "
            f"(rev {r.rev}{', a delete' if r.deleted else ''}) waits, the file is left as it "
            "is: fix the file (its edit then merges with the server's) or delete it, then sync"
        )
        st.quarantine(
            cur, r.id, st.current_op_id(cur, r.id), local.path, "pull", "unparsable_local", message
        )
        self.stats.parked.append((r.id, message))
        log.warning("sync: %s", message)

    # -- writing -------------------------------------------------------------------------------

    def _save_remote(self, cur: Any, r: ServerRow) -> Blueprint:
        """Write the server version (content, meta, path) under its id, with the base recorded."""
        meta = BlueprintMeta.from_dict(stored_meta(r), source=f"server row {r.id}")
        if meta.id != r.id:
            raise InvalidInputError(f"server row {r.id} carries meta id {meta.id}")
        path = fs.normalize_path(r.path)
        self._ensure_path_free(cur, path, r.id, r)
        bp = self.store.save(
            path, r.content, meta=meta, id=r.id, origin="remote", tx_hook=self._hook(r)
        )
        self.stats.applied += 1
        return bp

    def _check_row(self, r: ServerRow, local: Row | None) -> UnsafePathError | None:
        """Raise what :meth:`_save_remote` would raise for this live row (InvalidInputError).

        A path this home never scans is returned, not raised: the row is valid, it just cannot
        be held here (:meth:`_out_of_view`).
        """
        refuse_unreadable(r)
        meta = BlueprintMeta.from_dict(r.meta, source=f"server row {r.id}")
        if meta.id != r.id:
            raise InvalidInputError(f"server row {r.id} carries meta id {meta.id}")
        path = fs.normalize_path(r.path)
        away = None
        if local is None or local.deleted or local.path != path:
            # The store refuses a hidden or ignored new path (an older client's row, or another
            # device's .localstoreignore) only in the save, after a conflict copy is written.
            away = self._unscanned(path)
            if away is None:
                # A name new here that Windows reserves (an older client made it): refused,
                # so the row is quarantined and any copy this device holds stays as it is.
                fs.check_new_name(path)
        if away is None:
            self._check_path_shape(path)
        self.store.check_yaml(r.content.encode("utf-8"))  # remembered: the save skips it
        return away

    def _unscanned(self, path: str) -> UnsafePathError | None:
        """Why reconcile and the watcher never look at this normalized path, or None."""
        if self._ignore_rules is None:
            self._ignore_rules = fs.IgnoreRules.for_root(self.store.root)
        try:
            self.store.check_scanned(path, self._ignore_rules)
        except UnsafePathError as exc:
            return exc
        return None

    def unscanned(self, path: str) -> bool:
        """True when a server path is valid but lies where this home never looks (see
        :meth:`_out_of_view`); such a row refused by ``save_many`` goes through apply_row."""
        try:
            normalized = fs.normalize_path(path)
        except InvalidInputError:
            return False
        return self._unscanned(normalized) is not None

    def _check_path_shape(self, path: str) -> None:
        """Raise UnsafePathError when this home cannot hold ``path``'s files as they are named.

        A folder on the way that is a file here, or a file name that is a folder here (another
        server row, or a person's folder, uses the name the other way round).
        """
        parts = path.split("/")
        here = self.store.root
        for segment in parts[:-1]:
            here = here / segment
            if os.path.lexists(here) and not os.path.isdir(here):
                raise UnsafePathError(
                    f"{path} needs a folder where this device has a file: {here}",
                    hint="rename one of them on the device that has both",
                )
        for rel in (path, fs.meta_path_for(path)):
            target = self.store.root.joinpath(*rel.split("/"))
            if os.path.isdir(target) and not os.path.islink(target):
                raise UnsafePathError(
                    f"{rel} is a folder on this device, not a file",
                    hint="rename the folder or the blueprint",
                )

    def _ensure_path_free(self, cur: Any, path: str, owner: str, r: ServerRow) -> None:
        other = self._live_at(cur, path)
        if other is None and os.path.lexists(self.store.root.joinpath(*path.split("/"))):
            # A file an editor wrote that the watcher has not indexed yet: index it now, so it
            # moves aside like any local blueprint (the save would refuse the path otherwise).
            from localstore._reconcile import Reconciler

            Reconciler(self.store, origin="external").ingest_path(path)
            other = self._live_at(cur, path)
        if other is None or other == owner:
            return
        if self._left_on_server(cur, other, path, r):
            self._move_aside(cur, other, r)
            return
        self.move_for_path_conflict(cur, other, r)

    @staticmethod
    def _left_on_server(cur: Any, holder: str, path: str, r: ServerRow) -> bool:
        """True when the server itself moved ``holder`` off ``path`` (or deleted it) since.

        The server last had ``holder`` at ``path`` and now gives ``path`` to row ``r``; paths are
        unique there, so ``holder`` has a newer row of its own that this pull has not reached
        yet (rows come in seq order). Its local copy is not in anyone's way: no collision.
        """
        if r.deleted or fs.path_key(r.path) != fs.path_key(path):
            return False
        item = st.get_item(cur, holder)
        # The server's own uniqueness key (lower(path)), not path_key: two server paths that
        # differ only in Unicode form or case folding (NFD/NFC, 'ß'/'ss') can both be live
        # there and collide only here; that is a real collision (it never moves by itself).
        return (
            item is not None
            and item.base_rev is not None
            and not item.base_deleted
            and item.base_path.lower() == r.path.lower()
        )

    def _move_aside(self, cur: Any, holder: str, r: ServerRow) -> None:
        """Park a blueprint the server moved away at a free path until its own row arrives.

        No conflict record (it is nobody's copy: resolving one deleted the blueprint everywhere)
        and no push: a clean one stays clean, so its row puts it where the server has it.
        """
        local = self._local_row(holder)
        if local is None or local.deleted:
            return
        # An unrecorded edit is recorded first (it makes the blueprint dirty: pushed, not parked
        # as clean); the store refuses a remote move over it (ChangedOnDiskError), which stopped
        # every cycle and rolled the recorded edit back with the row's savepoint.
        local = self._fresh(local) or local
        if local.flagged:
            # Its own row (which moves it away) waits for the file to parse, parked as
            # unparsable_local; the store refused to move its files (see UnparsedInTheWay).
            raise UnparsedInTheWay(local, r.path, f"the server's blueprint {r.id}")
        item = st.get_item(cur, holder)
        clean = local.op_id <= (item.synced_op_id if item is not None else 0)
        self.store.move(holder, self._conflict_path_for(local.path), origin="remote")
        if clean:
            st.mark_synced(cur, holder, st.current_op_id(cur, holder))

    def _hook(self, r: ServerRow) -> Callable[[Any, Blueprint], None]:
        def hook(cur: Any, bp: Blueprint) -> None:
            # A delete's Blueprint is the tombstone: its base keeps the last live content.
            self._record(cur, r, synced=True, held_hash=None if r.deleted else bp.content_hash)

        return hook

    def _record(
        self, cur: Any, r: ServerRow, *, synced: bool, held_hash: str | None = None
    ) -> None:
        if not synced:
            # Still dirty, on a new base: the next push must not replay an earlier op's answer.
            st.renew_push_op(cur, r.id, self.store.index.next_op_id(cur))
        st.record_base(
            cur,
            r.id,
            rev=r.rev,
            seq=r.seq,
            content_hash=r.content_hash,
            path=r.path,
            deleted=r.deleted,
            content=None if r.deleted else r.content,
            meta=None if r.deleted else dict(r.meta),
            synced_op_id=st.current_op_id(cur, r.id) if synced else None,
            held_hash=held_hash,
        )

    # -- reading -------------------------------------------------------------------------------

    def _local_row(self, blueprint_id: str, cur: Any = None) -> Row | None:
        if cur is not None:
            # By id only, on the caller's cursor: store.row() resolves any reference (id, path,
            # prefix) and so runs four queries for an id it does not have (every row of a first
            # download).
            return self.store.row_by_id(blueprint_id, cur)
        try:
            return self.store.row(blueprint_id, include_deleted=True)
        except NotFoundError:
            return None

    def _fresh(self, local: Row, *, ingest: bool = True) -> Row | None:
        """Ingest an edit the watcher has not recorded yet, so it is never overwritten unseen.

        Returns ``local`` itself when the files match the index; with ``ingest=False`` returns
        None instead of ingesting when they do not.
        """
        try:
            y = os.stat(self.store.abspath(local.path))
        except FileNotFoundError:
            return local  # a vanished YAML is the watcher's call (editors delete briefly)
        try:
            m = os.stat(self.store.abspath(fs.meta_path_for(local.path)))
            meta_same = fs.stat_unchanged(
                m, local.meta_size, local.meta_mtime_ns, local.meta_ctime_ns, local.meta_ino
            )
        except FileNotFoundError:
            # Not "unchanged" (as the store's own check): a YAML edited while its meta went
            # missing was taken as clean, and a remote delete then deleted the edit.
            meta_same = local.meta_size == -1  # (-1: indexed without a meta, a flagged row)
        if meta_same and fs.stat_unchanged(
            y, local.yaml_size, local.yaml_mtime_ns, local.yaml_ctime_ns, local.yaml_ino
        ):
            return local
        if not ingest:
            return None
        from localstore._reconcile import Reconciler

        reconciler = Reconciler(self.store, origin="external")
        reconciler.ingest_path(local.path)
        return self._local_row(local.id) or local

    def _unrecorded_text(self, local: Row | None) -> str | None:
        """The YAML on disk of a live, parsed ``local`` whose files the index has not recorded
        (what _fresh would ingest), read for judging ahead; None when they are as recorded or
        it cannot be read (the ingest inside reports that)."""
        if local is None or local.deleted or local.flagged:
            return None
        try:
            if self._fresh(local, ingest=False) is local:
                return None
            raw = fs.read_regular(self.store.abspath(local.path), self.store.limits.max_bytes)
            return raw.decode("utf-8")
        except (LocalStoreError, OSError, UnicodeDecodeError):
            return None

    def _unindexed_text(self, path: str) -> str | None:
        """The YAML of a file at ``path`` where no live row is, read for judging ahead; None
        when there is none or it cannot be read (the save inside reports that).

        One lstat a pulled row, only with a validator: a first download of ten thousand rows
        pays some milliseconds, beside the parse and the app's rules it runs on every row's
        text ahead anyway. Left inside (as it was), one such file held every other writer of
        the home for as long as the validator ran on it."""
        try:
            rel = fs.normalize_path(path)
            if not os.path.lexists(self.store.root.joinpath(*rel.split("/"))):
                return None
            raw = fs.read_regular(self.store.abspath(rel), self.store.limits.max_bytes)
            return raw.decode("utf-8")
        except (LocalStoreError, OSError, UnicodeDecodeError):
            return None

    def _live_row_at(self, cur: Any, path: str) -> Row | None:
        """The live row at ``path`` (read ahead of the lock: apply_row looks again inside)."""
        try:
            return self.store._live_at(cur, fs.normalize_path(path))
        except LocalStoreError:
            return None

    def _text(self, cur: Any, local: Row) -> str:
        rows = cur.execute(
            "SELECT content FROM revisions WHERE id = ? AND rev = ?", (local.id, local.rev)
        ).fetchall()
        return revision_text(rows[0][0]) if rows else ""

    def _ancestor(
        self, local: Row, item: st.ItemState | None, r: ServerRow
    ) -> RevisionMatch | None:
        """The server revision a local copy without a base is, when the server had it.

        Only without a base (a base says what this device last synced; the server's history
        adds nothing) and only while the local copy still has the hash that was asked about.
        """
        if item is not None and item.base_rev is not None:
            return None
        match = self.ancestors.get(r.id)
        if match is None or match.content_hash != local.content_hash:
            return None
        return match

    def _ancestor_base(
        self, local: Row, local_v: Version, item: st.ItemState | None, r: ServerRow
    ) -> st.Base | None:
        """A local copy without a base that the server's history holds is its own base.

        It is that server revision, unedited: the merge then sees only the server's side change
        (content and path) and takes it, instead of a keep-both of an ancestor. Its path is the
        revision's: the server prefers one at the local path, so a rename made here since (no
        revision at the local path) is kept and one made on the server is taken.
        """
        match = self._ancestor(local, item, r)
        if match is None:
            return None
        log.debug(
            "sync: %s is rev %d of the server's history; taking the server's rev %d",
            local.path,
            match.rev,
            r.rev,
        )
        return st.Base(match.rev, match.path, local_v.content, dict(local_v.meta))

    @staticmethod
    def _base_path(base: st.Base | None, item: st.ItemState | None) -> str | None:
        """The path to merge paths against: the content base's, else the recorded base path.

        A base taken back from the record kept besides the index (after `check --fix`) whose
        text this device no longer holds still says where the blueprint was: without it a
        rename made here lost against the server's unchanged path.
        """
        if base is not None:
            return base.path
        if item is not None and item.base_rev is not None and item.base_path:
            return item.base_path
        return None

    def _find_base(
        self, cur: Any, blueprint_id: str, item: st.ItemState | None, r: ServerRow
    ) -> st.Base | None:
        # The path keeps its own base: the recorded one (renames merge separately from content).
        known = item is not None and item.base_rev is not None
        stored = st.get_base(cur, blueprint_id) if known else None
        seen = st.local_revision_with_hash(cur, blueprint_id, r.content_hash)
        if seen is not None and self._descends_from_base(stored, seen, r):
            if r.device == self.store.device_id:
                # Our own write (a push whose response was lost): the server holds exactly what
                # this device had, path included. Pure moves keep the content hash, so ``seen``
                # (the newest revision with it) may be a later local move: as the base's path it
                # made that move look unchanged, and the server's older path won.
                path = r.path
            else:
                path = item.base_path if item is not None and item.base_path else seen.path
            return st.Base(seen.rev, path, r.content, dict(r.meta))
        if item is not None and item.base_rev is not None:
            return stored
        return None

    def _descends_from_base(self, stored: st.Base | None, seen: st.Base, r: ServerRow) -> bool:
        """True when the server's version, found at local revision ``seen``, is a better base.

        It is when the server row is one of this device's own writes (a push whose response was
        lost, then a further edit), or this device had that version after the stored base: then
        it is an ancestor of the local version and base = remote takes local without a spurious
        conflict. A version this device had *before* the base is not: another device set the
        blueprint back to it (A -> B -> A) and that is an edit; taking it as the base would read
        "remote unchanged" and drop that edit without a conflict.
        """
        if stored is None or r.device == self.store.device_id:
            return True  # no base to lose (a new account, a history that is gone), or our write
        return stored.local_rev is not None and seen.rev > stored.local_rev

    def _live_at(self, cur: Any, path: str) -> str | None:
        """The blueprint at exactly ``path``, else the one holding its key (another case); the
        store's own lookup, so that a blueprint core v11 kept under a key of its own beside one
        that is the same name on macOS and Windows (index._v11_path_keys) is updated where it is."""
        row = self.store._live_at(cur, path)
        return None if row is None else row.id

    def _taken(self, path: str, owner: str | None = None) -> bool:
        with self.store.index.read() as cur:
            holder = self._live_at(cur, path)
        if holder is not None and holder != owner:
            return True
        return holder is None and self.store.abspath(path).exists()

    def _conflict_path_for(
        self, path: str, *, stamp: str | None = None, owner: str | None = None
    ) -> str:
        return conflict_path(
            path,
            self.store.device_name,
            stamp or utc_stamp(self.now()),
            lambda p: self._taken(p, owner),
        )

    @staticmethod
    def _chosen(
        resolution: Resolution, local_v: Version, remote_v: Version
    ) -> tuple[str, dict[str, Any]]:
        if resolution.action == "take_local":
            return local_v.content, dict(local_v.meta)
        if resolution.action == "take_remote":
            return remote_v.content, dict(remote_v.meta)
        assert resolution.content is not None and resolution.meta is not None
        return resolution.content, dict(resolution.meta)

    def _hash(self, content: str, meta: dict[str, Any], blueprint_id: str) -> str:
        try:
            m = BlueprintMeta.from_dict({**meta, "id": blueprint_id})
        except InvalidInputError:
            return ""
        return content_hash(content.encode("utf-8"), m)

    def _conflict_event(self, blueprint_id: str, path: str, detail: str) -> None:
        self.stats.conflicts += 1
        self.stats.events.append(Event("conflict", blueprint_id, path, "remote", detail=detail))
