"""Sync state that needs no remote: status, reports, conflict records and quarantine.

The CLI's ``status`` and ``conflicts`` commands, UIs and the daemon read these straight from the
index, whether or not an engine is running. ``sync.engine`` re-exports every public name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from localstore import files as fs
from localstore.errors import (
    InvalidInputError,
    NotFoundError,
    UnsafePathError,
    wrong_type,
)
from localstore.store import BlueprintStore, _count_arg, _flag_arg
from sync import _state as st
from sync._state import ConflictRecord, QuarantineEntry
from sync.errors import ConflictError, ConflictNotFoundError, NotLoggedInError

SyncStateName = Literal["offline", "connecting", "idle", "pushing", "pulling", "paused", "error"]
# sync_state key: the state a failed cycle left ("offline" or "error"), beside "last_error".
LAST_ERROR_STATE_KEY = "last_error_state"
SYNC_STATES: tuple[str, ...] = (
    "offline",
    "connecting",
    "idle",
    "pushing",
    "pulling",
    "paused",
    "error",
)


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """What a UI shows: state, what is waiting, what needs attention, progress."""

    state: SyncStateName
    pending: int
    conflicts: int
    quarantined: int
    last_synced_at: str | None
    last_error: str | None
    progress: tuple[int, int] | None = None  # (done, total) of a push or pull; total 0 = unknown
    held: int = 0
    cursor: int = 0
    # Blueprints whose file on disk cannot be taken (YAML that does not parse or is over
    # max_yaml_bytes, an invalid meta file): the index keeps the last good revision, which is
    # what sync has, so the edit in the file never leaves this device until it is fixed.
    flagged: int = 0
    # What a person must do about last_error when sync cannot go on until they do (the
    # blueprints folder away); with no error, what they should know (the keychain locked while
    # it kept the refreshed sign-in in memory); None otherwise, and when read from the index.
    hint: str | None = None

    @property
    def needs_attention(self) -> bool:
        """True when a person should look: open conflicts, quarantined changes, or local edits
        that cannot sync until fixed (held by the validator, or flagged files)."""
        return self.conflicts > 0 or self.quarantined > 0 or self.held > 0 or self.flagged > 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        out = asdict(self)
        out["progress"] = list(self.progress) if self.progress else None
        return out


@dataclass(slots=True)
class SyncReport:
    """What one ``sync_once()`` did."""

    pushed: int = 0
    pulled: int = 0
    conflicts: int = 0
    quarantined: int = 0
    merged: int = 0
    held: int = 0
    reset: bool = False
    rounds: int = 0
    errors: list[str] = field(default_factory=list)
    # The ids counted in ``quarantined`` (not part of the dict view). One cycle can refuse the
    # same server row twice: when a push conflicts, the server's current row is applied at once,
    # and the pull of the same cycle brings that row again. It is one parked change, so it is
    # counted (and its error listed) once; it was counted twice.
    _parked: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def count_quarantined(self, blueprint_id: str, error: str | None = None) -> None:
        """Count one parked change, once per blueprint per report, with its error line."""
        key = blueprint_id.lower()
        if key in self._parked:
            return
        self._parked.add(key)
        self.quarantined += 1
        if error:
            self.errors.append(error)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        out = asdict(self)
        out.pop("_parked", None)
        return out


@dataclass(slots=True)
class VerifyReport:
    """Local (id, content_hash, deleted, base rev) against the server's verify pages."""

    local: int = 0
    remote: int = 0
    differences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when every live blueprint matches the server."""
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "clean": self.clean,
            "local": self.local,
            "remote": self.remote,
            "differences": self.differences,
        }


@dataclass(frozen=True, slots=True)
class FlaggedFile:
    """A blueprint whose current file is not accepted, so its edit cannot sync until fixed."""

    id: str
    path: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return asdict(self)


# Live rows whose file was not accepted (reconcile's _flag). A flag does not bump the op id,
# so the outbox and the settled watermark never see these: they need their own query, and a
# partial index keeps it from scanning every row (a scan of 10,000 rows cost 2-3 ms per
# status(), which reads nothing else on an idle home). It holds only flagged rows, so saves
# (flagged NULL) add no entry to it. Its own component: sync's tables stay as they are.
_FLAGGED_WHERE = "deleted = 0 AND flagged IS NOT NULL"
STATUS_MIGRATIONS: tuple[str, ...] = (
    f"CREATE INDEX IF NOT EXISTS sync_flagged ON blueprints(flagged, deleted) WHERE {_FLAGGED_WHERE}",
)


def _flagged_count(cur: Any) -> int:
    return int(
        cur.execute(f"SELECT count(*) FROM blueprints WHERE {_FLAGGED_WHERE}").fetchall()[0][0]
    )


def list_flagged(store: BlueprintStore) -> list[FlaggedFile]:
    """Blueprints whose file cannot be taken (does not parse, too large, bad meta), by path.

    Their index row keeps the last good revision, which is what sync pushes and compares; the
    file's current text stays on this device until the file is fixed (``localstore check``).
    """
    store_arg(store)
    with store.index.read() as cur:
        return flagged_files(cur)


def flagged_files(cur: Any) -> list[FlaggedFile]:
    """:func:`list_flagged` inside the caller's index transaction."""
    rows = cur.execute(
        f"SELECT id, path, flagged FROM blueprints WHERE {_FLAGGED_WHERE} ORDER BY path"
    ).fetchall()
    return [FlaggedFile(str(i), str(p), str(r)) for i, p, r in rows]


def unaccepted_files(store: BlueprintStore) -> list[FlaggedFile]:
    """Blueprint files the index does not hold at all, because they cannot be taken, by path.

    A file dropped into the folder that never parsed (or with a broken meta, a case twin of a
    recorded path, or a name the store does not take) gets no row, so :func:`list_flagged` never saw it: ``status`` said all was
    well while only ``localstore check`` showed it. Their ``id`` is ``""`` (none was given yet).
    Costs a stat of every blueprint file (the index has no trace of these files); reads only
    the files without a row.
    """
    from localstore._reconcile import Reconciler, reason_of

    with store.index.read() as cur:
        live = {str(p) for (p,) in cur.execute("SELECT path FROM blueprints WHERE deleted = 0")}
    reconciler = Reconciler(store)
    scan = reconciler.scan(live)
    out = [
        FlaggedFile("", fs.printable(rel), f"not a usable blueprint name: {why}")
        for rel, why in scan.unsupported.items()
    ]
    keys = {fs.path_key(p): p for p in live}
    for rel in scan.yamls:
        # (check's own judgement of the pair: one reason for one file in status, check and the
        # watcher's event, with what to do.)
        problem = None if rel in live else reconciler.refused_new_pair(scan, keys, rel)
        if problem is not None:
            out.append(FlaggedFile("", rel, reason_of(problem)))
    return sorted(out, key=lambda f: f.path)


def attention_hints(status: Mapping[str, Any]) -> dict[str, str]:
    """What a person should do about each thing in ``status`` (a SyncStatus dict) that needs
    attention, by its count's key (held, flagged, conflicts, quarantined), one line each: the
    lines `localstore sync` prints under its summary, and the ``hint`` of `localstore status`
    and ``EmbeddedSync.status()`` (one wording for all three)."""
    lines = {
        "held": (
            f"{status.get('held')} blueprint(s) fail the app's validation, or await it (edited "
            "while the app was closed), and are held back until fixed or judged"
        ),
        "flagged": f"{status.get('flagged')} file(s) cannot be read as blueprints; their edits "
        "stay here until fixed: see `localstore status`",
        "conflicts": f"{status.get('conflicts')} open conflict(s): see `localstore conflicts`, "
        "then `localstore conflicts resolve ID --take local|remote|FILE`",
        "quarantined": f"{status.get('quarantined')} change(s) quarantined: see `localstore "
        "status`; fix them, or retry with `localstore sync --retry-quarantined`",
    }
    return {key: line for key, line in lines.items() if status.get(key)}


def status_hint(status: Mapping[str, Any], first: str | None = None) -> str | None:
    """The ``hint`` of a status: ``first`` (why nothing syncs, what to do: a login), then the
    attention hints; None when there is nothing to do. A line ``first`` holds already (a
    daemon's status that carries them) is not repeated."""
    parts = [first] if first else []
    parts += [line for line in attention_hints(status).values() if not first or line not in first]
    return "; ".join(parts) or None


def first_hint(status: Mapping[str, Any]) -> str | None:
    """The ``first`` that :func:`status_hint` put before the attention lines of ``status``'s
    ``hint`` (what to do so that sync runs at all: log in), or None; all of a hint without those
    lines (an older daemon's, which carried only that).

    For a client that counts again (`localstore status` lists the unreadable files itself) and
    builds the hint from its own counts: the daemon's lines would say the daemon's counts."""
    hint = status.get("hint")
    if not isinstance(hint, str) or not hint:
        return None
    lines = "; ".join(attention_hints(status).values())
    if lines and hint.endswith(lines):  # (status_hint: first + "; " + lines, or lines alone)
        hint = hint[: -len(lines)].removesuffix("; ")
    return hint or None


def offline_hint(reason: str, exc: BaseException) -> str:
    """What to do when sync went offline for ``reason`` (the daemon's and an app's sync).

    Not logged in is always the login hint: a logout that stopped the engine raised
    SessionChangedError, whose hint ("starts again from the new login") is for the remote's
    caller."""
    return NotLoggedInError.hint if reason == "not logged in" else getattr(exc, "hint", "")


def store_arg(store: Any) -> None:
    """The store argument of the sync API (anything else failed deep inside)."""
    if not isinstance(store, BlueprintStore):
        raise wrong_type(
            "store",
            store,
            "an open BlueprintStore",
            hint="pass the store localstore.open(...) returned",
        )


def _cid_arg(cid: Any) -> int:
    """A conflict number: an int (True was conflict #1; one past 64 bits a raw OverflowError)."""
    return _count_arg("cid", cid)


def ensure_schema(store: BlueprintStore) -> None:
    """Create or migrate the sync tables in this store's index.

    A read-only store cannot: ReadOnlyStoreError when they are missing, IndexStoreError when an
    older localstore made them. (Only an index, not the sync tables, is left out for it: the
    index is for speed, and a read-only store reads the same rows without it.)
    """
    store.index.register_schema("sync", st.SYNC_MIGRATIONS)
    if not store.read_only:
        store.index.register_schema("sync_status", STATUS_MIGRATIONS)


def _never_synced_read_only(store: BlueprintStore) -> bool:
    """A read-only store of a home that never synced: no sync tables, and none can be made
    there; what its status and quarantine read is then known without them."""
    return store.read_only and store.index.schema_version("sync", st.SYNC_MIGRATIONS) == 0


def local_status(store: BlueprintStore, *, state: SyncStateName | None = None) -> SyncStatus:
    """Status from the index alone (no engine running): pending, conflicts, quarantine, cursor."""
    store_arg(store)
    if state is not None and state not in SYNC_STATES:
        # (Any value was reported back as the state.)
        raise InvalidInputError(
            f"unknown sync state {state!r}",
            hint=f"use one of {', '.join(SYNC_STATES)}, or leave state out",
        )
    if _never_synced_read_only(store):
        with store.index.read() as cur:
            pending, held = st.never_synced_counts(cur)
            flagged = _flagged_count(cur)
        return SyncStatus(
            state=state or "idle",
            pending=pending,
            conflicts=0,
            quarantined=0,
            last_synced_at=None,
            last_error=None,
            held=held,
            flagged=flagged,
        )
    ensure_schema(store)
    return read_status(store, state=state)


def read_status(store: BlueprintStore, *, state: SyncStateName | None = None) -> SyncStatus:
    """Like :func:`local_status` for a store whose sync schema is known to exist (no write)."""
    with store.index.read() as cur:
        last_error = st.get_state(cur, "last_error")
        if state is None and last_error:
            # The engine records which state the failure left (offline for a network error):
            # without it (older index) any recorded error reads as "error".
            failed = st.get_state(cur, LAST_ERROR_STATE_KEY)
            state = "offline" if failed == "offline" else "error"
        return SyncStatus(
            state=state or "idle",
            pending=st.pending_count(cur),
            conflicts=st.open_conflict_count(cur),
            quarantined=st.quarantine_count(cur),
            last_synced_at=st.get_state(cur, "last_synced_at"),
            last_error=last_error,
            held=st.held_count(cur),
            cursor=st.get_cursor(cur),
            flagged=_flagged_count(cur),
        )


def list_conflicts(
    store: BlueprintStore, *, include_resolved: bool = False
) -> list[ConflictRecord]:
    """Conflict records, oldest first."""
    store_arg(store)
    _flag_arg("include_resolved", include_resolved)
    if _never_synced_read_only(store):
        return []  # (ensure_schema cannot make the tables there: ReadOnlyStoreError)
    ensure_schema(store)
    with store.index.read() as cur:
        return st.conflicts(cur, include_resolved=include_resolved)


def get_conflict(store: BlueprintStore, cid: int) -> ConflictRecord:
    """One conflict record. Raises ConflictNotFoundError when there is none with that number."""
    store_arg(store)
    # (The number as asked in the error: one past 64 bits is looked up as the largest, and
    # "no conflict #9223372036854775807" named a number nobody typed.)
    number = _cid_arg(cid)
    if _never_synced_read_only(store):
        record = None
    else:
        ensure_schema(store)
        with store.index.read() as cur:
            record = st.get_conflict(cur, number)
    if record is None:
        raise ConflictNotFoundError(f"there is no conflict #{cid}")
    return record


def conflict_diff(record: ConflictRecord) -> str:
    """Unified diffs: local vs remote, then base vs local and base vs remote when a base exists."""
    if not isinstance(record, ConflictRecord):
        raise wrong_type(
            "record", record, "a ConflictRecord", hint="pass what get_conflict(store, cid) returns"
        )
    parts = [_udiff(record.local, record.remote, "local", "remote")]
    if record.base is not None:
        parts.append(_udiff(record.base, record.local, "base", "local"))
        parts.append(_udiff(record.base, record.remote, "base", "remote"))
    return "".join(parts)


def _udiff(a: str, b: str, a_name: str, b_name: str) -> str:
    lines = difflib.unified_diff(
        a.splitlines(True), b.splitlines(True), fromfile=a_name, tofile=b_name
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return text or f"--- {a_name}\n+++ {b_name}\n(identical)\n"


def list_quarantine(store: BlueprintStore) -> list[QuarantineEntry]:
    """Changes parked after a permanent refusal, oldest first."""
    store_arg(store)
    if _never_synced_read_only(store):
        return []
    ensure_schema(store)
    with store.index.read() as cur:
        return st.quarantined(cur)


def resolve_conflict(
    store: BlueprintStore,
    cid: int,
    *,
    take: Literal["local", "remote"] | None = None,
    content: str | None = None,
    how: str = "",
    merged_with: str | None = None,
) -> ConflictRecord:
    """Settle a conflict record: keep the remote version, the local one, or given content.

    The blueprint that holds the server's version gets the chosen text (a normal local save that
    syncs); the conflict copy, if any, is deleted (it stays in history). A path collision whose
    moved blueprint has a server row of its own made no copy: that blueprint is kept as it is
    (``take="local"`` keeps it and writes nothing). When the blueprint's YAML changed since the
    conflict (another device edited it again and that arrived, or it was edited here), what is
    written replaces that change: the resolution says so, with the revision history keeps it
    as (``ConflictRecord.replaced_rev``). ``merged_with`` is the blueprint text ``content``
    was merged against (a merge tool's %REMOTE): replacing exactly that replaces nothing
    unseen. Raises ConflictError (unknown or already resolved), InvalidInputError (take not
    "local"/"remote", cid not an int, content, how or merged_with not a str), and the store's
    errors for invalid content.
    """
    _resolve_args(take, content, how, merged_with)
    record = get_conflict(store, cid)
    if not record.open:
        raise ConflictError(f"conflict #{cid} is already resolved ({record.resolution})")
    # An editor's edit of the blueprint or of its copy that no watcher has recorded: committed
    # now, judged before its own write, as a save or a delete does (_record_edits_first).
    # Found inside the write below (reading what the resolve replaces, deleting the copy),
    # it was recorded there, and the app's validator judged it holding the write lock.
    store._record_edits_first(_live_paths(store, (record.id, record.copy_id)), "local")
    text = content if content is not None else conflict_local_text(store, record)
    if text is not None and take != "remote":
        # Its save runs inside the write lock below: judged before it, the save takes the
        # verdict for these very bytes (BlueprintStore._judge_ahead).
        store._judge_texts_ahead([text])
    with store.index.write() as cur:
        # Checked again where no other process can write (BEGIN IMMEDIATE): another terminal (or
        # the daemon settling a deleted copy) may have resolved it since the check above, and
        # going on overwrote that choice while both said "resolved".
        _check_still_open(cur, cid)
        own = _moved_not_copied(cur, record)
        replaced = _write_chosen(store, cur, record, take, text, merged_with, own=own)
        if record.copy_id and not own and store.exists(record.copy_id):
            store.delete(record.copy_id, origin="local")
        how = how or (f"take {take}" if take else "content")
        if replaced is not None:
            how += _REPLACED.format(rev=replaced)
        st.resolve_conflict(cur, cid, how)
        resolved = st.get_conflict(cur, cid)
    assert resolved is not None
    return resolved


def _resolve_args(take: object, content: object, how: object, merged_with: object) -> None:
    """resolve_conflict's own arguments, checked before anything is read or written."""
    if (take is None) == (content is None):
        raise ConflictError("give exactly one of take= or content=", hint="see --help")
    if take is not None and take not in ("local", "remote"):
        # (Any other value wrote the local text without the local meta.)
        raise InvalidInputError(
            f"take must be 'local' or 'remote', not {take!r}",
            hint="or give the merged text as content=",
        )
    if content is not None and not isinstance(content, str):
        raise wrong_type("content", content, "YAML text", hint="pass the merged blueprint as a str")
    if not isinstance(how, str):
        raise wrong_type(
            "how", how, "a string", hint="a short note of how it was resolved, or leave it out"
        )
    if merged_with is not None and not isinstance(merged_with, str):
        raise wrong_type(
            "merged_with", merged_with, "YAML text", hint="the text content was merged against"
        )


def _check_still_open(cur: Any, cid: int) -> None:
    """Raise ConflictError when conflict ``cid`` is resolved (or gone) in the index now."""
    now = st.get_conflict(cur, cid)
    if now is None or not now.open:
        how_now = now.resolution if now is not None else "and dropped"
        raise ConflictError(f"conflict #{cid} is already resolved ({how_now})")


def _write_chosen(
    store: BlueprintStore,
    cur: Any,
    record: ConflictRecord,
    take: str | None,
    text: str | None,
    merged_with: str | None,
    *,
    own: bool,
) -> int | None:
    """Write the chosen side over the conflict's blueprint (inside the write lock); return the
    revision that replaced a change made since the conflict, if one did."""
    if take == "local" and not own:
        # Here, where no other process writes: a copy deleted after the text was read
        # must not be taken either.
        refuse_deleted_copy(store, record)
    replaced: int | None = None
    if take != "remote" and not (own and take == "local"):
        assert text is not None
        # Written over the blueprint as it is NOW, which is not always the "remote" side
        # the person saw in `conflicts show`: another device may have edited it again since
        # (pulled here before this resolve). `--take local` replaced that newer edit with
        # nothing said; history keeps it, and the resolution names its revision.
        replaced = _changed_since(store, cur, record, merged_with)
        # "Local" is the whole local version: a conflict can be in the meta alone (both
        # sides changed the description), and writing only the copy's YAML kept the
        # server's meta while the copy, holding the local one, was deleted.
        meta = _copy_meta(store, record) if take == "local" else None
        _write_main(store, record, text, meta)
    return replaced


def _live_paths(store: BlueprintStore, ids: Sequence[str | None]) -> list[str]:
    """The paths of the live blueprints among ``ids`` (None and unknown ids skipped)."""
    paths = []
    for blueprint_id in ids:
        row = store.row_by_id(blueprint_id) if blueprint_id is not None else None
        if row is not None and not row.deleted:
            paths.append(row.path)
    return paths


# Appended to a resolution that replaced a change made since the conflict (parsed back by
# ConflictRecord.replaced_rev; keep the two in step).
_REPLACED = "; replaced rev {rev}, changed since the conflict"


def _changed_since(
    store: BlueprintStore, cur: Any, record: ConflictRecord, merged_with: str | None
) -> int | None:
    """The local revision of the blueprint a resolve is about to replace, when its YAML is no
    longer the record's remote side (nor ``merged_with``, what a merge was made against);
    None when it is, or when the blueprint is not live here (nothing is replaced)."""
    row = store.row_by_id(record.id, cur)
    if row is None or row.deleted:
        return None
    now = store.load(record.id).content
    if now == record.remote or (merged_with is not None and now == merged_with):
        return None
    return row.rev


def conflict_remote_text(store: BlueprintStore, record: ConflictRecord) -> str:
    """The remote side of a conflict as it is now: the blueprint's current text if it is live.

    What ``resolve --take remote`` keeps, which is not ``record.remote`` once another device
    edited the blueprint again (or it was edited here) since the conflict. The merge tool's
    %REMOTE starts from it, so a merge cannot drop that newer edit unseen.
    """
    try:
        row = store.row(record.id)
    except NotFoundError:
        return record.remote
    return store.load(row.id).content


def _moved_not_copied(cur: Any, record: ConflictRecord) -> bool:
    """True when the record's "copy" is a blueprint in its own right, synced on its own.

    Deleting it would delete a healthy blueprint on every device. Records made before
    ``copy_synced`` existed: a copy the server holds at another path than where the collision
    put it was moved there by the server (or by a person since): also kept.
    """
    if record.copy_id is None:
        return False
    if record.copy_synced:
        return True
    item = st.get_item(cur, record.copy_id)
    return (
        record.reason == "path_taken"
        and item is not None
        and item.base_rev is not None
        and not item.base_deleted
        and fs.path_key(item.base_path) != fs.path_key(record.copy_path or "")
    )


def refuse_deleted_copy(store: BlueprintStore, record: ConflictRecord) -> None:
    """Raise ConflictError when the conflict copy, the local side, was deleted.

    ``record.local`` is the copy's text when the conflict happened: taking it wrote that stale
    text back, dropping the edits made to the copy before it was deleted, with nothing said.
    A deleted copy means "keep the other version" (the next sync settles the record so), but
    it may have been deleted by mistake, so the person chooses: the remote version, the copy
    brought back from history, or a file. (A record without a copy, where the local side is
    the recorded text alone, and one whose "copy" is a blueprint of its own are not refused.)
    """
    if not record.copy_id or record.copy_synced:
        return
    row = store.row_by_id(record.copy_id)
    if row is not None and not row.deleted:
        return
    back = ""
    if row is not None:
        last = next((r for r in store.history(row.id) if not r.deleted), None)
        if last is not None:
            back = f"bring the copy back with `localstore restore {row.id} {last.rev}`, then "
    raise ConflictError(
        f"the conflict copy {record.copy_path} was deleted, so there is no local side to take "
        f"(deleting it keeps the remote version: the next sync settles conflict #{record.cid} "
        "so)",
        hint=f"keep the remote version with `localstore conflicts resolve {record.cid} --take "
        f"remote`; or {back or 'give the text you want with '}"
        + ("--take local" if back else "--take FILE"),
    )


def conflict_local_text(store: BlueprintStore, record: ConflictRecord) -> str:
    """The local side of a conflict as it is now: the conflict copy's current text if it exists.

    The copy may have been edited since the conflict (the user started merging by hand), so
    ``record.local`` (the text when the conflict happened) can be stale. ``resolve --take local``
    and the merge tool's %LOCAL/%MERGED both start from this text, so neither drops those edits.
    """
    if record.copy_id and store.exists(record.copy_id):
        try:
            return store.load(record.copy_id).content
        except NotFoundError:
            pass  # (its file went since the index saw it; the load recorded the delete)
    return record.local


# The suffix keep-both gives a conflict copy's name (sync._apply.Applier._save_copy).
_COPY_NAME_SUFFIX = re.compile(r" \(conflict .* \d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ\)")


def _strip_copy_suffix(name: str) -> str:
    """``name`` without the last conflict suffix (a copy of a copy keeps the first one)."""
    at = name.rfind(" (conflict ")
    if at > 0 and _COPY_NAME_SUFFIX.fullmatch(name[at:]):
        return name[:at]
    return name


def _copy_meta(store: BlueprintStore, record: ConflictRecord) -> dict[str, Any] | None:
    """The local side's meta as the conflict copy holds it now, for the main blueprint.

    Its own identity is dropped (id, created), and its name loses the conflict suffix keep-both
    gave it; a name the person changed since (no suffix) is taken as it is. None when there is
    no copy (the main blueprint's meta is kept).
    """
    if not record.copy_id or not store.exists(record.copy_id):
        return None
    meta = store.load(record.copy_id).meta.to_dict()
    for key in ("id", "created", "modified"):
        meta.pop(key, None)
    meta["name"] = _strip_copy_suffix(str(meta.get("name", "")))
    return meta


def _write_main(
    store: BlueprintStore, record: ConflictRecord, text: str, meta: dict[str, Any] | None = None
) -> None:
    try:
        row = store.row(record.id, include_deleted=True)
    except NotFoundError:
        row = None
    path = row.path if row is not None and not row.deleted else record.path
    if row is not None and row.deleted and path != row.path:
        try:
            store.check_scanned(path)
        except UnsafePathError:
            # The server keeps it where this home never looks (a hidden folder, an ignored
            # name): sync took it out of view here. Back at its last path here, it is pushed
            # from there, which moves it out on every device.
            path = row.path
    if meta is not None and row is not None:
        meta = {**row.meta.to_dict(), **meta, "id": record.id}
    elif meta is not None:
        meta = {**meta, "id": record.id}
    store.save(path, text, meta=meta, id=record.id, origin="local")
