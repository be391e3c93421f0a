"""The sync engine's state in the index: outbox, bases, cursor, quarantine and conflict records.

Nothing here is written into user files (DESIGN.md §2). Every table lives in ``index.db`` next to
the blueprints table, so one index transaction covers a file change and its sync bookkeeping.

The outbox is not a queue table: an item is *dirty* when ``blueprints.op_id`` (bumped by every
local change, in the same transaction as the change) is greater than ``sync_items.synced_op_id``
(set, in the same transaction, whenever the engine records that the local copy matches the
server). A crash can therefore never lose a queued change: the queue is a query over committed
rows. A separate queue table was rejected because it can disagree with the files after a kill
between the file write and the queue insert.

Tables (component ``sync``):

* ``sync_items(id, base_rev, base_seq, base_hash, base_path, base_deleted, synced_op_id,
  push_op_id)``: what this device knows of the server row (``base_rev`` NULL = never on the
  server). ``base_seq`` says which server write that was: a pulled row with ``seq <= base_seq``
  is already known (our own push coming back). Revs cannot say it: a row re-created after its
  tombstone was purged started again at rev 1 (above the owner's horizon since migration
  20261122001400, but not on an older project or for rows re-created before it).

Push op ids: a change is pushed with op id ``max(blueprints.op_id, sync_items.push_op_id)``. The
server deduplicates by (device, op id), so a retry after a lost response or a kill replays the
stored result. When the item stays dirty on a *new* base (after a conflict, a "missing" row, a
quarantine retry), the same op id would replay the old answer, so a fresh ``push_op_id`` is drawn
from the index's op counter in the same transaction.
* ``sync_bases(id, rev, path, content, meta, hash)``: the content at ``base_rev`` (the last live
  one for a tombstone), the "base" of 3-way merges. When the base is a version this device itself
  holds in history (every clean take and every accepted push: the usual case), only its content
  ``hash`` is kept (content and meta empty) and :func:`get_base` reads the text from
  ``revisions``: a second copy of every blueprint's text doubled what a sync wrote to the index.
  If that revision were ever gone, the merge runs without a base (a conflict copy, never a loss).
* ``sync_state(key, value)``: ``identity``, ``accepted_identity``, ``cursor``, ``horizon``,
  ``last_synced_at``, ``last_error``, ``settled_op_id``, ``base_record`` (identity and cursor of
  the last append to ``state/sync-bases.jsonl``, ``sync.base_record``), ``conflicts_from`` (the
  first conflict number this index gave: :func:`add_conflict`).

The settled watermark: ``settled_op_id`` = W promises that no blueprint with ``op_id <= W`` is
dirty (the outbox condition below). The outbox, ``pending_count`` and ``held_count`` therefore
only look at ``op_id > W`` through the ``blueprints_op`` index, so an idle poll of a fully synced
10,000-blueprint home reads no rows instead of scanning them all. The promise holds because a
row's dirtiness can change only two ways: the store gives it a new op id (always above every op
id handed out so far, so above W), or this module changes its sync rows; every such change here
ends with :func:`_unsettle`, which lowers W below the row if it is dirty now. :func:`settle`
advances W (a range scan above it) at the end of a cycle; the engine recomputes it from 0 once
per engine. A counter maintained by triggers on ``blueprints`` was rejected: it would tie sync
state to the store's table definition and cost every save. A held item (invalid, dirty) keeps W
below it until it becomes valid, so the scans then cover the changes made since.
* ``sync_quarantine``: changes the server refused permanently (``direction`` push) and remote
  rows this device cannot store (``direction`` pull); parked until changed or retried.
* ``sync_conflicts``: conflict records (base, local and remote text) for the API and the CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from localstore._revisions import revision_text
from localstore.blueprint import utc_now
from localstore.files import MAX_PATH_CHARS
from sync._shown import MAX_CODE, MAX_SHOWN, escaped, shown
from sync.remote import server_path_key

SYNC_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sync_items (
        id TEXT PRIMARY KEY,
        base_rev INTEGER,
        base_seq INTEGER NOT NULL DEFAULT 0,
        base_hash TEXT NOT NULL DEFAULT '',
        base_path TEXT NOT NULL DEFAULT '',
        base_deleted INTEGER NOT NULL DEFAULT 0,
        synced_op_id INTEGER NOT NULL DEFAULT 0,
        push_op_id INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE sync_bases (
        id TEXT PRIMARY KEY,
        rev INTEGER NOT NULL,
        path TEXT NOT NULL,
        content TEXT NOT NULL,
        meta TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE sync_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE sync_quarantine (
        id TEXT PRIMARY KEY,
        op_id INTEGER NOT NULL,
        path TEXT NOT NULL,
        direction TEXT NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        ts TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE sync_conflicts (
        cid INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        path TEXT NOT NULL,
        copy_id TEXT,
        copy_path TEXT,
        reason TEXT NOT NULL,
        base TEXT,
        local TEXT NOT NULL,
        remote TEXT NOT NULL,
        base_rev INTEGER,
        remote_rev INTEGER,
        created TEXT NOT NULL,
        resolved TEXT,
        resolution TEXT
    );
    CREATE INDEX sync_conflicts_open ON sync_conflicts(resolved, cid);
    """,
    # v2: a base this device holds in history is kept as its content hash only.
    "ALTER TABLE sync_bases ADD COLUMN hash TEXT NOT NULL DEFAULT ''",
    # v3: a path_taken record whose moved blueprint already had its own server row (no copy).
    "ALTER TABLE sync_conflicts ADD COLUMN copy_synced INTEGER NOT NULL DEFAULT 0",
)

# Dirty = changed since the last recorded match with the server, and not parked in quarantine
# at this very op id (a later edit un-parks it: that is how a fixed item retries by itself).
_DIRTY_WHERE = (
    "b.op_id > coalesce(s.synced_op_id, 0) "
    "AND NOT EXISTS (SELECT 1 FROM sync_quarantine q WHERE q.id = b.id AND q.op_id = b.op_id)"
)

# Valid for sync: the row passed its validator, and that validator is the home's. With a
# validator recorded for the home (settings key ``validator``: the app opened the store with
# one), a row judged by none (the daemon's watcher or the CLI recorded it: they have no
# validator) or by another is held like an invalid one until the app judges it (at its next
# open, in its own sync's push, or with revalidate()). Before, such an edit went up as valid
# although the app would refuse it (docs/architecture.md, "The app's validator").
_HOME_VALIDATOR = "(SELECT value FROM settings WHERE key = 'validator')"
_VALID = f"(b.valid = 1 AND ({_HOME_VALIDATOR} IS NULL OR b.judged_by IS {_HOME_VALIDATOR}))"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One dirty blueprint as it should be pushed (content and meta of its current revision)."""

    id: str
    path: str
    content_hash: str
    rev: int
    op_id: int
    push_op_id: int
    deleted: bool
    valid: bool
    base_rev: int | None
    base_deleted: bool
    content: str
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ItemState:
    """What this device recorded about one server row."""

    id: str
    base_rev: int | None
    base_seq: int
    base_hash: str
    base_path: str
    base_deleted: bool
    synced_op_id: int


@dataclass(frozen=True, slots=True)
class Base:
    """The content of a blueprint at its base revision."""

    rev: int
    path: str
    content: str
    meta: dict[str, Any]
    # The local revision holding this content when the base is kept as a hash into history
    # (the newest one with that hash); None for a base kept as text (e.g. from a merge).
    local_rev: int | None = None


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A change parked after a permanent refusal, with the server's (or local) error."""

    id: str
    op_id: int
    path: str
    direction: str
    code: str
    message: str
    ts: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (with the command that retries it)."""
        return {
            "id": self.id,
            "op_id": self.op_id,
            "path": self.path,
            "direction": self.direction,
            "code": self.code,
            "message": self.message,
            "ts": self.ts,
            "retry": "localstore sync --retry-quarantined",
        }


# The end sync._local.resolve_conflict appends to a resolution that replaced a newer change
# (its _REPLACED): the revision history keeps that change as.
_REPLACED_REV = re.compile(r"; replaced rev (\d+), changed since the conflict\Z")


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    """A conflict kept for the user: base, local and remote text of one blueprint.

    ``id``/``path`` is the blueprint that holds the server's version; ``copy_id``/``copy_path`` is
    the conflict copy holding the local version (None when no copy was made). ``copy_synced``
    (path collisions only): the blueprint moved off the path already had a server row of its own,
    so it is no copy and resolving the record never deletes it.
    """

    cid: int
    id: str
    path: str
    copy_id: str | None
    copy_path: str | None
    reason: str
    base: str | None
    local: str
    remote: str
    base_rev: int | None
    remote_rev: int | None
    created: str
    resolved: str | None
    resolution: str | None
    copy_synced: bool = False

    @property
    def open(self) -> bool:
        """True until the conflict is resolved."""
        return self.resolved is None

    @property
    def replaced_rev(self) -> int | None:
        """The local revision of the blueprint this resolve wrote over although it had changed
        since the conflict (a newer edit; ``localstore restore ID REV`` brings it back)."""
        found = _REPLACED_REV.search(self.resolution or "")
        return int(found.group(1)) if found else None

    def to_dict(self, *, texts: bool = False) -> dict[str, Any]:
        """A JSON-friendly view; ``texts`` adds base, local and remote."""
        rev = self.replaced_rev
        out: dict[str, Any] = {
            "cid": self.cid,
            "id": self.id,
            "path": self.path,
            "copy_id": self.copy_id,
            "copy_path": self.copy_path,
            "reason": self.reason,
            "base_rev": self.base_rev,
            "remote_rev": self.remote_rev,
            "created": self.created,
            "resolved": self.resolved,
            "resolution": self.resolution,
            "copy_synced": self.copy_synced,
            "replaced": None if rev is None else {"id": self.id, "rev": rev},
        }
        if texts:
            out.update(base=self.base, local=self.local, remote=self.remote)
        return out


_CONFLICT_COLUMNS = (
    "cid, id, path, copy_id, copy_path, reason, base, local, remote, base_rev, remote_rev, "
    "created, resolved, resolution, copy_synced"
)


# -- sync_state ---------------------------------------------------------------------------------


def get_state(cur: Any, key: str, default: str | None = None) -> str | None:
    """One value of sync_state."""
    rows = cur.execute("SELECT value FROM sync_state WHERE key = ?", (key,)).fetchall()
    return str(rows[0][0]) if rows else default


def set_state(cur: Any, key: str, value: str) -> None:
    """Set one value of sync_state."""
    cur.execute(
        "INSERT INTO sync_state VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def del_state(cur: Any, key: str) -> None:
    """Remove one value of sync_state."""
    cur.execute("DELETE FROM sync_state WHERE key = ?", (key,))


def get_cursor(cur: Any) -> int:
    """The pull cursor (0 = from the beginning)."""
    return int(get_state(cur, "cursor", "0") or 0)


# -- the account a home belongs to --------------------------------------------------------------
#
# ``identity`` is the remote's ``<kind>:<server>:<user>`` this home last synced with. A home's
# synced data belongs to that account: another user of the same server (project) must not get it
# uploaded by logging in on the home (docs/sync-engine.md, "Identity"). ``accepted_identity`` is
# the one other user a person allowed to take the home over (``localstore login --switch-user``);
# the engine consumes it when it resets for that user.

ACCEPTED_KEY = "accepted_identity"
EMAIL_PREFIX = "email:"


def identity_project(identity: str) -> str:
    """The server part of an identity (everything before the user: urls contain colons)."""
    return identity.rpartition(":")[0]


def identity_user(identity: str) -> str:
    """The user part of an identity."""
    return identity.rpartition(":")[2]


def foreign_identity(cur: Any, identity: str) -> str | None:
    """The identity this home synced with when it is another user of the same project, else None.

    None also when that user was accepted (:func:`accept_identity`), when the home never synced,
    or when the project differs (a new project gets the home's blueprints, see the docs).
    """
    known = get_state(cur, "identity")
    if known is None or known == identity:
        return None
    if identity_project(known) != identity_project(identity):
        return None
    if get_state(cur, ACCEPTED_KEY) == identity:
        return None
    return known


def remember_email(cur: Any, identity: str, email: str) -> None:
    """Note the e-mail a login used for ``identity`` (only to name the account in messages)."""
    set_state(cur, EMAIL_PREFIX + identity, email)


def describe_account(cur: Any, identity: str) -> str:
    """``alice@example.com (user 8c1f...)``, or ``user 8c1f...`` when no login noted an e-mail."""
    email = get_state(cur, EMAIL_PREFIX + identity)
    user = f"user {identity_user(identity)}"
    return f"{email} ({user})" if email else user


def accept_identity(cur: Any, identity: str | None) -> None:
    """Allow ``identity`` to take this home over at its next sync (None withdraws it)."""
    if identity is None:
        del_state(cur, ACCEPTED_KEY)
    else:
        set_state(cur, ACCEPTED_KEY, identity)


def restore_identity(cur: Any, identity: str | None, email: str | None = None) -> bool:
    """Take the home's account back into an index that has none; True if it did.

    After ``check --fix`` rebuilt the index, the account record kept besides it
    (``sync.account_record``) is the only trace of whom the home's blueprints belong to. An index
    that has an account keeps it (it is the authority); a home that never synced has no record.
    """
    if identity is None or get_state(cur, "identity") is not None:
        return False
    set_state(cur, "identity", identity)
    if email and get_state(cur, EMAIL_PREFIX + identity) is None:
        remember_email(cur, identity, email)
    return True


def reset_for_identity(cur: Any, identity: str) -> bool:
    """Forget server knowledge when the remote (server or user) changed; True if it did.

    Local files are untouched; every live blueprint becomes a create for the new account. The
    caller refuses another user of the same project first (:func:`foreign_identity`).
    """
    known = get_state(cur, "identity")
    if known == identity:
        return False
    if known is not None:
        for table in ("sync_items", "sync_bases", "sync_quarantine"):
            cur.execute(f"DELETE FROM {table}")
        for key in ("cursor", "horizon", "last_synced_at", "last_error", SETTLED_KEY):
            del_state(cur, key)
    del_state(cur, ACCEPTED_KEY)  # consumed (or stale: the home now belongs to this identity)
    set_state(cur, "identity", identity)
    return known is not None


# -- outbox -------------------------------------------------------------------------------------


def leading_fit(sizes: Sequence[int], max_count: int, max_bytes: int) -> int:
    """How many of ``sizes``, from the first, make one push: at most ``max_count`` items and
    ``max_bytes`` together, but at least one (a change over the budget still goes, alone)."""
    total, count = 0, 0
    for size in sizes[:max_count]:
        total += size
        if count and total > max_bytes:
            break
        count += 1
    return count


def outbox_batch(
    cur: Any, after_op_id: int, limit: int, *, max_bytes: int | None = None
) -> list[OutboxItem]:
    """Dirty items with op_id > ``after_op_id``, oldest change first (none at or below W).

    At most ``limit`` items and, with ``max_bytes``, at most that many bytes of content and meta
    (``push_bytes``) together, but always at least one item: a blueprint larger than the budget
    still goes, alone. The sizes are read first without the texts (``octet_length`` reads a
    record's header, not its string), so a queue of large blueprints is never loaded whole.
    """
    after_op_id = max(after_op_id, settled_op_id(cur))
    upto: int | None = None
    if max_bytes is not None:
        sizes = cur.execute(
            f"SELECT b.op_id, CASE WHEN b.deleted = 0 AND {_VALID} "
            "THEN coalesce(octet_length(r.content), 0) ELSE 0 END "
            "+ coalesce(octet_length(r.meta), 0) "
            "FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
            "LEFT JOIN revisions r ON r.id = b.id AND r.rev = b.rev "
            f"WHERE b.op_id > ? AND {_DIRTY_WHERE} ORDER BY b.op_id LIMIT ?",
            (after_op_id, limit),
        ).fetchall()
        count = leading_fit([int(size) for _, size in sizes], len(sizes), max_bytes)
        if not count:
            return []
        upto = int(sizes[count - 1][0])
        # Bounded by op id too: an item edited between the two reads moves past ``upto`` (every
        # edit takes a new op id), so the texts read below are the ones just measured or fewer.
        limit = count
    rows = cur.execute(
        "SELECT b.id, b.path, b.content_hash, b.rev, b.op_id, "
        f"max(b.op_id, coalesce(s.push_op_id, 0)), b.deleted, {_VALID}, "
        "s.base_rev, coalesce(s.base_deleted, 0), r.content, r.meta "
        "FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        "LEFT JOIN revisions r ON r.id = b.id AND r.rev = b.rev "
        f"WHERE b.op_id > ? AND b.op_id <= ? AND {_DIRTY_WHERE} ORDER BY b.op_id LIMIT ?",
        (after_op_id, upto if upto is not None else 2**63 - 1, limit),
    ).fetchall()
    return [
        OutboxItem(
            id=str(r[0]),
            path=str(r[1]),
            content_hash=str(r[2]),
            rev=int(r[3]),
            op_id=int(r[4]),
            push_op_id=int(r[5]),
            deleted=bool(r[6]),
            valid=bool(r[7]),
            base_rev=None if r[8] is None else int(r[8]),
            base_deleted=bool(r[9]),
            content="" if r[10] is None else str(r[10]),
            meta=json.loads(r[11]) if r[11] else {},
        )
        for r in rows
    ]


def dirty_ids(cur: Any) -> set[str]:
    """The ids ``outbox_batch`` would return, all of them, without reading any text (verify
    reports them as pending; reading the whole outbox's texts for that held them all in memory)."""
    rows = cur.execute(
        "SELECT b.id FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        f"WHERE b.op_id > ? AND {_DIRTY_WHERE}",
        (settled_op_id(cur),),
    ).fetchall()
    return {str(r[0]) for r in rows}


def pending_count(cur: Any, *, scan_all: bool = False) -> int:
    """Number of dirty items that are not parked in quarantine and have something to push.

    Reads only rows above the settled watermark; ``scan_all`` ignores it (tests compare both).
    """
    row = cur.execute(
        "SELECT count(*) FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        f"WHERE b.op_id > ? AND {_DIRTY_WHERE} "
        "AND NOT (b.deleted = 1 AND (s.base_rev IS NULL OR s.base_deleted = 1))",
        (0 if scan_all else settled_op_id(cur),),
    ).fetchall()
    return int(row[0][0])


def pushable(cur: Any, blueprint_id: str) -> bool:
    """True when the next push pass will send this blueprint (dirty, not parked, valid or a delete
    the server needs)."""
    row = cur.execute(
        "SELECT 1 FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        f"WHERE b.id = ? AND {_DIRTY_WHERE} AND (b.deleted = 0 AND {_VALID} "
        "OR b.deleted = 1 AND s.base_rev IS NOT NULL AND s.base_deleted = 0)",
        (blueprint_id,),
    ).fetchall()
    return bool(row)


def held_count(cur: Any, *, scan_all: bool = False) -> int:
    """Dirty live items that fail the app's validator, or that it has not judged yet (held
    back until they are valid)."""
    row = cur.execute(
        "SELECT count(*) FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        f"WHERE b.op_id > ? AND {_DIRTY_WHERE} AND b.deleted = 0 AND NOT {_VALID}",
        (0 if scan_all else settled_op_id(cur),),
    ).fetchall()
    return int(row[0][0])


def never_synced_counts(cur: Any) -> tuple[int, int]:
    """(pending, held) of a home without sync tables (it never synced): every live blueprint
    is to push; the ones its validator does not pass are held. For a read-only store, which
    cannot create the tables that pending_count and held_count read."""
    row = cur.execute(
        f"SELECT count(*), coalesce(sum(NOT {_VALID}), 0) FROM blueprints b WHERE b.deleted = 0"
    ).fetchall()
    return int(row[0][0]), int(row[0][1])


def max_op_id(cur: Any) -> int:
    """The highest op id handed out so far."""
    row = cur.execute("SELECT value FROM counters WHERE name = 'op_id'").fetchall()
    return int(row[0][0]) if row else 0


# -- the settled watermark (see the module docstring) -------------------------------------------

SETTLED_KEY = "settled_op_id"


def settled_op_id(cur: Any) -> int:
    """The watermark W: no blueprint with ``op_id <= W`` is dirty (0 = unknown, scan all)."""
    raw = get_state(cur, SETTLED_KEY)
    if raw is None:
        return 0
    settled = int(raw)
    # An op counter below W (an index restored from an older copy) cannot vouch for anything.
    return settled if 0 <= settled <= max_op_id(cur) else 0


def settle(cur: Any, *, rescan: bool = False) -> int:
    """Advance W past every row that is not dirty (inside a write transaction); returns W.

    Only rows above the current W are read, unless ``rescan`` recomputes it from 0.
    """
    start = 0 if rescan else settled_op_id(cur)
    highest = max_op_id(cur)
    row = cur.execute(
        "SELECT min(b.op_id) FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        f"WHERE b.op_id > ? AND {_DIRTY_WHERE}",
        (start,),
    ).fetchall()
    first = row[0][0]
    settled = highest if first is None else int(first) - 1
    set_state(cur, SETTLED_KEY, str(settled))
    return settled


def _unsettle(cur: Any, blueprint_id: str) -> None:
    """Keep W's promise after a change to one blueprint's sync rows (call after every change).

    Lowers W below the blueprint if it is dirty now. Three primary-key reads: one statement
    joining them measured several times slower per call in apsw.
    """
    op = _one(cur, "SELECT op_id FROM blueprints WHERE id = ?", blueprint_id)
    if op is None or op <= (_one(cur, _SYNCED_SQL, blueprint_id) or 0):
        return  # no index row (nothing to push), or not dirty
    if _one(cur, "SELECT op_id FROM sync_quarantine WHERE id = ?", blueprint_id) == op:
        return  # parked at this very op
    if settled_op_id(cur) >= op:
        set_state(cur, SETTLED_KEY, str(op - 1))


_SYNCED_SQL = "SELECT synced_op_id FROM sync_items WHERE id = ?"


def _one(cur: Any, sql: str, arg: str) -> int | None:
    rows = cur.execute(sql, (arg,)).fetchall()
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def unsettled_below_watermark(cur: Any) -> list[str]:
    """Dirty blueprints at or below W (always empty unless W's promise is broken; for tests)."""
    return [
        str(r[0])
        for r in cur.execute(
            "SELECT b.id FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
            f"WHERE b.op_id <= ? AND {_DIRTY_WHERE}",
            (settled_op_id(cur),),
        )
    ]


# -- items and bases ----------------------------------------------------------------------------


_ITEM_COLUMNS = "id, base_rev, base_seq, base_hash, base_path, base_deleted, synced_op_id"


def _item_state(r: Sequence[Any]) -> ItemState:
    """An ItemState from a row of _ITEM_COLUMNS."""
    return ItemState(
        str(r[0]),
        None if r[1] is None else int(r[1]),
        int(r[2]),
        str(r[3]),
        str(r[4]),
        bool(r[5]),
        int(r[6]),
    )


def get_item(cur: Any, blueprint_id: str) -> ItemState | None:
    """The recorded server knowledge of one blueprint."""
    rows = cur.execute(
        f"SELECT {_ITEM_COLUMNS} FROM sync_items WHERE id = ?", (blueprint_id,)
    ).fetchall()
    return _item_state(rows[0]) if rows else None


# Ids per IN (...) query: well under SQLite's variable limit, and a pulled page is at most 1000.
IN_CHUNK = 500


def items_for(cur: Any, ids: Sequence[str]) -> dict[str, ItemState]:
    """:func:`get_item` for many ids: one query per ``IN_CHUNK`` ids instead of one per id.

    Ids without a row are absent from the result (keys are the ids as given).
    """
    out: dict[str, ItemState] = {}
    for i in range(0, len(ids), IN_CHUNK):
        part = ids[i : i + IN_CHUNK]
        for r in cur.execute(
            f"SELECT {_ITEM_COLUMNS} FROM sync_items WHERE id IN ({','.join('?' * len(part))})",
            tuple(part),
        ):
            out[r[0]] = _item_state(r)
    return out


def current_op_id(cur: Any, blueprint_id: str) -> int:
    """The blueprint's current op id (0 when the index has no row)."""
    rows = cur.execute("SELECT op_id FROM blueprints WHERE id = ?", (blueprint_id,)).fetchall()
    return int(rows[0][0]) if rows else 0


_BASE_UPSERT = (
    "INSERT INTO sync_bases (id, rev, path, content, meta, hash) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET rev = excluded.rev, path = excluded.path, "
    "content = excluded.content, meta = excluded.meta, hash = excluded.hash"
)


def record_base(
    cur: Any,
    blueprint_id: str,
    *,
    rev: int,
    seq: int,
    content_hash: str,
    path: str,
    deleted: bool,
    content: str | None,
    meta: dict[str, Any] | None,
    synced_op_id: int | None,
    held_hash: str | None = None,
) -> None:
    """Remember the server row this device now builds on.

    ``synced_op_id`` None keeps the recorded one (the local copy stays dirty); ``content`` None
    keeps the stored base content (a tombstone keeps the last live content as merge base).
    ``held_hash`` is the content hash of a local revision that holds exactly this content (the
    local hash, in case the server's differs): only that hash is stored.
    """
    cur.execute(
        "INSERT INTO sync_items (id, base_rev, base_seq, base_hash, base_path, base_deleted, "
        "synced_op_id) VALUES (?, ?, ?, ?, ?, ?, coalesce(?, 0)) ON CONFLICT(id) DO UPDATE SET "
        "base_rev = excluded.base_rev, base_seq = excluded.base_seq, "
        "base_hash = excluded.base_hash, base_path = excluded.base_path, "
        "base_deleted = excluded.base_deleted, "
        "synced_op_id = coalesce(?, sync_items.synced_op_id)",
        (blueprint_id, rev, seq, content_hash, path, int(deleted), synced_op_id, synced_op_id),
    )
    if content is not None and held_hash:
        cur.execute(_BASE_UPSERT, (blueprint_id, rev, path, "", "", held_hash))
    elif content is not None:
        meta_json = json.dumps(meta or {}, ensure_ascii=False)
        cur.execute(_BASE_UPSERT, (blueprint_id, rev, path, content, meta_json, ""))
    # A newer server row is now the base: an older one parked as unstorable is history (it
    # stayed listed, and counted as needing attention, after its successor was applied).
    cur.execute(_DROP_PULL_PARKED, (blueprint_id,))
    if synced_op_id is not None:
        cur.execute(_DROP_PUSH_SETTLED, (blueprint_id,))
    _unsettle(cur, blueprint_id)


_DROP_PULL_PARKED = "DELETE FROM sync_quarantine WHERE id = ? AND direction = 'pull'"

# A refused push whose blueprint has nothing left to push (synced at its current op id): the
# change stopped being one without a push (a never-synced blueprint deleted, its delete settled
# unsent; a pulled row taken over the local copy, or the copy's edit moved to a keep-both copy
# with an id of its own). Left, the entry stayed listed as needing attention for good, with
# nothing a retry could send. Only the accepted push (record_accepted) dropped entries before.
_DROP_PUSH_SETTLED = (
    "DELETE FROM sync_quarantine WHERE id = ?1 AND direction = 'push' "
    "AND coalesce((SELECT op_id FROM blueprints WHERE id = ?1), 0) "
    "<= coalesce((SELECT synced_op_id FROM sync_items WHERE id = ?1), 0)"
)


def drop_pull_parked(cur: Any, blueprint_id: str) -> None:
    """Drop a parked server row of ``blueprint_id`` (a later row of the id settled it)."""
    cur.execute(_DROP_PULL_PARKED, (blueprint_id,))
    _unsettle(cur, blueprint_id)


def record_synced_bases(cur: Any, saved: Sequence[tuple[Any, str]]) -> None:
    """:func:`record_base` for many live server rows just stored as they are (clean takes).

    ``saved`` pairs each ServerRow-like row with the content hash of the local revision now
    holding it. Each row is recorded synced at the blueprint's current op id, so none is dirty
    afterwards and W needs no lowering. Two statements for the run instead of three per row.
    """
    rows = [r for r, _ in saved]
    cur.executemany(
        "INSERT INTO sync_items (id, base_rev, base_seq, base_hash, base_path, base_deleted, "
        "synced_op_id) VALUES (?1, ?2, ?3, ?4, ?5, 0, "
        "coalesce((SELECT op_id FROM blueprints WHERE id = ?1), 0)) ON CONFLICT(id) DO UPDATE SET "
        "base_rev = excluded.base_rev, base_seq = excluded.base_seq, "
        "base_hash = excluded.base_hash, base_path = excluded.base_path, base_deleted = 0, "
        "synced_op_id = excluded.synced_op_id",
        [(r.id, r.rev, r.seq, r.content_hash, r.path) for r in rows],
    )
    cur.executemany(_BASE_UPSERT, [(r.id, r.rev, r.path, "", "", h) for r, h in saved])
    # As in record_base; one read first, so a download with nothing parked pays no deletes.
    if cur.execute("SELECT 1 FROM sync_quarantine LIMIT 1").fetchall():
        cur.executemany(_DROP_PULL_PARKED, [(r.id,) for r in rows])
        cur.executemany(_DROP_PUSH_SETTLED, [(r.id,) for r in rows])


@dataclass(frozen=True, slots=True)
class Accepted:
    """A pushed change the server applied (what :func:`record_accepted` records)."""

    id: str
    rev: int
    seq: int
    content_hash: str
    path: str
    deleted: bool
    op_id: int


def record_accepted(cur: Any, accepted: Sequence[Accepted]) -> None:
    """Record many applied pushes: new base (a hash into history), synced at the pushed op id.

    Also drops their quarantine entries. No :func:`_unsettle`: each blueprint ends synced at
    the op id it pushed, or was edited since, which gave it an op id above any watermark.
    """
    cur.executemany(
        "INSERT INTO sync_items (id, base_rev, base_seq, base_hash, base_path, base_deleted, "
        "synced_op_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "base_rev = excluded.base_rev, base_seq = excluded.base_seq, "
        "base_hash = excluded.base_hash, base_path = excluded.base_path, "
        "base_deleted = excluded.base_deleted, "
        "synced_op_id = max(sync_items.synced_op_id, excluded.synced_op_id)",
        [(a.id, a.rev, a.seq, a.content_hash, a.path, int(a.deleted), a.op_id) for a in accepted],
    )
    # A tombstone keeps the last live base (the merge base if an edit revives it elsewhere).
    cur.executemany(
        _BASE_UPSERT,
        [(a.id, a.rev, a.path, "", "", a.content_hash) for a in accepted if not a.deleted],
    )
    cur.executemany("DELETE FROM sync_quarantine WHERE id = ?", [(a.id,) for a in accepted])


def renew_push_op(cur: Any, blueprint_id: str, op_id: int) -> None:
    """Push this item next time under a fresh op id (its base changed while it stayed dirty)."""
    cur.execute(
        "INSERT INTO sync_items (id, push_op_id) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET "
        "push_op_id = excluded.push_op_id",
        (blueprint_id, op_id),
    )
    _unsettle(cur, blueprint_id)


def server_holder(cur: Any, path: str) -> str | None:
    """The id this device last synced as live at ``path`` on the server, or None: paths compared
    as the server compares them (``sync.remote.server_path_key``, its ``lower(path)``). A scan:
    asked only for rename cycles.

    SQLite's NOCASE folds ASCII letters only: a swap of 'É' and 'Ö' to 'ö' and 'é' was no cycle
    here while the server refused both renames as ``path_taken``, so neither ever went up.
    """
    rows = cur.execute(
        "SELECT id FROM sync_items WHERE base_rev IS NOT NULL AND base_deleted = 0 "
        "AND base_path = ? COLLATE NOCASE LIMIT 1",
        (path,),
    ).fetchall()
    if rows:  # (equal but for ASCII case: one key on the server too)
        return str(rows[0][0])
    # Otherwise only a base path with a character beyond ASCII can have the key (the Kelvin
    # sign's is 'k', for one): those few are keyed in Python.
    key = server_path_key(path)
    for rid, base_path in cur.execute(
        "SELECT id, base_path FROM sync_items WHERE base_rev IS NOT NULL AND base_deleted = 0 "
        "AND base_path GLOB '*[^ -~]*'"
    ):
        if server_path_key(str(base_path)) == key:
            return str(rid)
    return None


def mark_synced(cur: Any, blueprint_id: str, op_id: int) -> None:
    """Record that the local copy at ``op_id`` needs no push (keeps any base)."""
    cur.execute(
        "INSERT INTO sync_items (id, synced_op_id) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET "
        "synced_op_id = max(sync_items.synced_op_id, excluded.synced_op_id)",
        (blueprint_id, op_id),
    )
    cur.execute(_DROP_PUSH_SETTLED, (blueprint_id,))  # (kept if edited since ``op_id``)


def mark_unsynced(cur: Any, blueprint_id: str) -> None:
    """Make the item dirty again (it is uploaded on the next push)."""
    cur.execute("UPDATE sync_items SET synced_op_id = 0 WHERE id = ?", (blueprint_id,))
    _unsettle(cur, blueprint_id)


def forget_server_row(cur: Any, blueprint_id: str) -> None:
    """The server has no row for this id any more: the next push is a create."""
    cur.execute(
        "UPDATE sync_items SET base_rev = NULL, base_hash = '', base_deleted = 0 WHERE id = ?",
        (blueprint_id,),
    )
    _unsettle(cur, blueprint_id)


def get_base(cur: Any, blueprint_id: str) -> Base | None:
    """The stored merge base of one blueprint (None if unknown)."""
    rows = cur.execute(
        "SELECT rev, path, content, meta, hash FROM sync_bases WHERE id = ?", (blueprint_id,)
    ).fetchall()
    if not rows:
        return None
    r = rows[0]
    if not r[4]:
        return Base(int(r[0]), str(r[1]), str(r[2]), json.loads(r[3]))
    held = local_revision_with_hash(cur, blueprint_id, str(r[4]))
    # 'modified' may differ from the server's copy; the meta merge never uses the base's.
    if held is None:
        return None
    return Base(int(r[0]), str(r[1]), held.content, held.meta, local_rev=held.rev)


def local_revision_with_hash(cur: Any, blueprint_id: str, digest: str) -> Base | None:
    """A past local revision of this blueprint with that content hash (newest), if any."""
    rows = cur.execute(
        "SELECT rev, path, content, meta FROM revisions WHERE id = ? AND content_hash = ? "
        "AND deleted = 0 ORDER BY rev DESC LIMIT 1",
        (blueprint_id, digest),
    ).fetchall()
    if not rows:
        return None
    r = rows[0]
    return Base(int(r[0]), str(r[1]), revision_text(r[2]), json.loads(revision_text(r[3])))


BASE_RECORD_KEY = "base_record"


def base_record_mark(cur: Any) -> tuple[str, int] | None:
    """(identity, seq) of the last append to ``state/sync-bases.jsonl`` (``sync.base_record``):
    every base with ``base_seq`` above that seq may be missing from the file. None: never
    written from this index (a new home, an older version's index, or one `check --fix` rebuilt).
    """
    raw = get_state(cur, BASE_RECORD_KEY)
    if raw is None:
        return None
    try:
        mark = json.loads(raw)
        return str(mark["identity"]), int(mark["seq"])
    except (ValueError, KeyError, TypeError):
        return None


def set_base_record_mark(cur: Any, identity: str, seq: int) -> None:
    set_state(cur, BASE_RECORD_KEY, json.dumps({"identity": identity, "seq": seq}))


def lower_base_record_mark(cur: Any, seq: int) -> None:
    """Make the next append reach bases recorded from rows at ``seq + 1`` and above (rows below
    the cursor applied again by a quarantine retry)."""
    mark = base_record_mark(cur)
    if mark is not None and mark[1] > seq:
        set_base_record_mark(cur, mark[0], max(seq, 0))


def bases_since(cur: Any, seq: int) -> list[tuple[str, int, int, str, str, bool]]:
    """(id, rev, seq, hash, path, deleted) of every server base recorded with ``base_seq > seq``."""
    return [
        (str(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4]), bool(r[5]))
        for r in cur.execute(
            "SELECT id, base_rev, base_seq, base_hash, base_path, base_deleted FROM sync_items "
            "WHERE base_rev IS NOT NULL AND base_seq > ?",
            (seq,),
        )
    ]


def bases_of(cur: Any, ids: Sequence[str]) -> list[tuple[str, int, int, str, str, bool]]:
    """:func:`bases_since` for the server bases of ``ids`` (those that have one)."""
    out: list[tuple[str, int, int, str, str, bool]] = []
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), IN_CHUNK):
        part = unique[i : i + IN_CHUNK]
        out.extend(
            (str(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4]), bool(r[5]))
            for r in cur.execute(
                "SELECT id, base_rev, base_seq, base_hash, base_path, base_deleted FROM "
                f"sync_items WHERE base_rev IS NOT NULL AND id IN ({','.join('?' * len(part))})",
                tuple(part),
            )
        )
    return out


def base_count(cur: Any) -> int:
    """How many blueprints have a server base."""
    return int(
        cur.execute("SELECT count(*) FROM sync_items WHERE base_rev IS NOT NULL").fetchall()[0][0]
    )


def knows_no_server(cur: Any) -> bool:
    """True for an index with no sync knowledge at all: no cursor and no server base."""
    if get_cursor(cur) != 0:
        return False
    return not cur.execute("SELECT 1 FROM sync_items WHERE base_rev IS NOT NULL LIMIT 1").fetchall()


def restore_base(
    cur: Any,
    blueprint_id: str,
    *,
    rev: int,
    seq: int,
    content_hash: str,
    path: str,
    deleted: bool,
    synced_op_id: int,
    held: bool,
) -> None:
    """Take a base from the record kept besides the index into an item that has none.

    ``held``: the local copy has the base's content, so the base text is that local revision
    (a ``sync_bases`` row with its hash, as for any synced base). Otherwise the text at that rev
    is not held here: no ``sync_bases`` row, and the merge runs without a content base (but with
    the base's path). An item that already has a base keeps it.
    """
    cur.execute(
        "INSERT INTO sync_items (id, base_rev, base_seq, base_hash, base_path, base_deleted, "
        "synced_op_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "base_rev = excluded.base_rev, base_seq = excluded.base_seq, "
        "base_hash = excluded.base_hash, base_path = excluded.base_path, "
        "base_deleted = excluded.base_deleted, "
        "synced_op_id = max(sync_items.synced_op_id, excluded.synced_op_id) "
        "WHERE sync_items.base_rev IS NULL",
        (blueprint_id, rev, seq, content_hash, path, int(deleted), synced_op_id),
    )
    if held:
        cur.execute(
            "INSERT INTO sync_bases (id, rev, path, content, meta, hash) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
            (blueprint_id, rev, path, "", "", content_hash),
        )
    _unsettle(cur, blueprint_id)


def known_server_ids(cur: Any) -> set[str]:
    """Ids this device believes exist on the server (base recorded)."""
    return {str(r[0]) for r in cur.execute("SELECT id FROM sync_items WHERE base_rev IS NOT NULL")}


def local_fingerprints(cur: Any) -> dict[str, tuple[str, bool]]:
    """Every blueprint id with (content_hash, deleted), tombstones included."""
    return {
        str(r[0]): (str(r[1]), bool(r[2]))
        for r in cur.execute("SELECT id, content_hash, deleted FROM blueprints")
    }


@dataclass(frozen=True, slots=True)
class BaseMark:
    """The server row a blueprint builds on, and the local revision that held it (verify)."""

    rev: int
    server_hash: str
    held_rev: int | None
    held_hash: str | None


def held_hash(cur: Any, blueprint_id: str, rev: int | None) -> str | None:
    """The local content hash of the revision that stored server rev ``rev`` (None: unknown,
    or the base is kept as text)."""
    rows = cur.execute(
        "SELECT hash FROM sync_bases WHERE id = ? AND rev = ?", (blueprint_id, rev)
    ).fetchall()
    return str(rows[0][0]) if rows and rows[0][0] else None


def base_marks(cur: Any) -> dict[str, BaseMark]:
    """:class:`BaseMark` of each blueprint that has a base."""
    return {
        str(r[0]): BaseMark(
            int(r[1]),
            str(r[2] or ""),
            None if r[3] is None else int(r[3]),
            str(r[4]) if r[4] else None,
        )
        for r in cur.execute(
            "SELECT i.id, i.base_rev, i.base_hash, b.rev, b.hash FROM sync_items i "
            "LEFT JOIN sync_bases b ON b.id = i.id WHERE i.base_rev IS NOT NULL"
        )
    }


# -- apply journal ------------------------------------------------------------------------------
#
# A kill between writing a remote row's files and committing the index leaves files that
# reconcile-on-open records as a *local* edit. Without help the next cycle would push it against
# an older base and could report a conflict between two server versions. So before a chunk is
# applied, the (id, seq, rev, path, hash, deleted) of its rows are committed here; the chunk's own
# transaction clears them. Entries found at the next cycle name exactly the rows whose apply was
# cut short; a dirty blueprint whose content matches its entry is the server's version.
#
# A row whose local copy has edits not yet pushed may be kept both ways (sync._apply._keep_both):
# its entry also holds that copy's content hash ("local"), from which the conflict copy's id
# follows (sync._apply.copy_id_for). A kill after the copy's files were written and before the
# commit left the copy as an ordinary blueprint (reconcile adopts it) with no conflict record;
# recovery finds the copy by that id and records the conflict again.

JOURNAL_KEY = "apply_journal"


def journal_write(
    cur: Any, rows: Iterable[Any], local_hashes: Mapping[str, str] | None = None
) -> None:
    """Record the server rows about to be applied (ServerRow-like objects), with the content
    hash of each one's local copy that has unpushed edits (``local_hashes``, by id)."""
    entries = []
    for r in rows:
        entry = {
            "id": r.id,
            "seq": r.seq,
            "rev": r.rev,
            "path": r.path,
            "hash": r.content_hash,
            "deleted": r.deleted,
        }
        if local_hashes and r.id in local_hashes:
            entry["local"] = local_hashes[r.id]
        entries.append(entry)
    set_state(cur, JOURNAL_KEY, json.dumps(entries))


def dirty_hashes(cur: Any, ids: Sequence[str]) -> dict[str, str]:
    """Content hash of each live, parsed blueprint of ``ids`` with edits not pushed yet (the
    ones an apply may keep both ways), by id; one query per ``IN_CHUNK`` ids."""
    found: dict[str, str] = {}
    for i in range(0, len(ids), IN_CHUNK):
        part = list(ids[i : i + IN_CHUNK])
        found.update(
            (str(r[0]), str(r[1]))
            for r in cur.execute(
                "SELECT b.id, b.content_hash FROM blueprints b "
                "LEFT JOIN sync_items i ON i.id = b.id WHERE b.deleted = 0 AND b.flagged IS NULL "
                f"AND b.op_id > coalesce(i.synced_op_id, 0) AND b.id IN ({','.join('?' * len(part))})",
                part,
            )
        )
    return found


def journal_read(cur: Any) -> list[dict[str, Any]]:
    """Entries of an apply that did not commit (empty normally)."""
    raw = get_state(cur, JOURNAL_KEY)
    return list(json.loads(raw)) if raw else []


def journal_clear(cur: Any) -> None:
    """Drop the journal (inside the transaction that applied its rows)."""
    del_state(cur, JOURNAL_KEY)


# -- quarantine ---------------------------------------------------------------------------------


def quarantine(
    cur: Any, blueprint_id: str, op_id: int, path: str, direction: str, code: str, message: str
) -> None:
    """Park one change with its error.

    The path (a pulled row's is the server's), code and message are stored escaped and cut
    (sync._shown): every `localstore status` prints them. The limits leave room for any path
    the store takes and for this project's own longest messages (their hint is at the end); a
    server's rejection text was cut shorter when it was parsed (PushResult)."""
    path = shown(path, MAX_PATH_CHARS)
    code, message = shown(code, MAX_CODE), shown(message, 4 * MAX_SHOWN)
    cur.execute(
        "INSERT INTO sync_quarantine VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "op_id = excluded.op_id, path = excluded.path, direction = excluded.direction, "
        "code = excluded.code, message = excluded.message, ts = excluded.ts",
        (blueprint_id, op_id, path, direction, code, message, utc_now()),
    )
    _unsettle(cur, blueprint_id)  # a different op id un-parks the current one


def unquarantine(cur: Any, blueprint_id: str) -> None:
    """Drop a parked entry (the change went through)."""
    cur.execute("DELETE FROM sync_quarantine WHERE id = ?", (blueprint_id,))
    _unsettle(cur, blueprint_id)


def parked_unblocked(cur: Any, path_free: Callable[[str], bool]) -> list[str]:
    """Ids of server rows parked for a reason on this device that is gone, oldest first.

    ``unparsable_local``: the blueprint's own file parses now (or this device no longer holds
    it), read from the index. ``path_blocked``: a file the index cannot record (its YAML or meta
    does not parse, a link) held the row's path; ``path_free(path)`` says whether it still does
    (sync._apply.path_unblocked: a few lstats, the file was never indexed, so its fix, move or
    removal leaves no trace in the index to query)."""
    return [
        str(r[0])
        for r in cur.execute(
            "SELECT q.id, q.code, q.path FROM sync_quarantine q "
            "LEFT JOIN blueprints b ON b.id = q.id WHERE q.direction = 'pull' AND ("
            "(q.code = 'unparsable_local' AND (b.id IS NULL OR b.deleted OR b.flagged IS NULL)) "
            "OR q.code = 'path_blocked') ORDER BY q.ts"
        )
        if r[1] != "path_blocked" or path_free(str(r[2]))
    ]


def parsed_push_parks(cur: Any) -> list[str]:
    """Ids of pushes parked as ``unparsable_local`` (their path was taken on the server and their
    file did not parse, so it could not move aside: sync.engine's ``_path_taken``) whose file
    parses now, or that this device no longer holds live; read from the index."""
    return [
        str(r[0])
        for r in cur.execute(
            "SELECT q.id FROM sync_quarantine q LEFT JOIN blueprints b ON b.id = q.id "
            "WHERE q.direction = 'push' AND q.code = 'unparsable_local' "
            "AND (b.id IS NULL OR b.deleted OR b.flagged IS NULL) ORDER BY q.ts"
        )
    ]


def quarantined(cur: Any) -> list[QuarantineEntry]:
    """Every parked entry, oldest first."""
    # Escaped again on the way out: a record an older version stored holds the server's text as
    # it came (escaping what is already escaped changes nothing).
    return [
        QuarantineEntry(
            str(r[0]),
            int(r[1]),
            escaped(str(r[2])),
            str(r[3]),
            escaped(str(r[4])),
            escaped(str(r[5])),
            str(r[6]),
        )
        for r in cur.execute(
            "SELECT id, op_id, path, direction, code, message, ts FROM sync_quarantine ORDER BY ts"
        )
    ]


def quarantine_count(cur: Any) -> int:
    """Number of parked entries."""
    return int(cur.execute("SELECT count(*) FROM sync_quarantine").fetchall()[0][0])


def clear_quarantine(cur: Any, direction: str | None = None) -> list[QuarantineEntry]:
    """Remove parked entries (all, or of one direction) and return them."""
    entries = [e for e in quarantined(cur) if direction is None or e.direction == direction]
    cur.executemany("DELETE FROM sync_quarantine WHERE id = ?", [(e.id,) for e in entries])
    for e in entries:
        _unsettle(cur, e.id)
    return entries


# -- conflicts ----------------------------------------------------------------------------------

# sync_state key: the first conflict number this index gave (add_conflict, conflicts_from).
CONFLICTS_FROM_KEY = "conflicts_from"


def add_conflict(
    cur: Any,
    *,
    blueprint_id: str,
    path: str,
    copy_id: str | None,
    copy_path: str | None,
    reason: str,
    base: str | None,
    local: str,
    remote: str,
    base_rev: int | None,
    remote_rev: int | None,
    copy_synced: bool = False,
    above: int = 0,
) -> int:
    """Store a conflict record; returns its number, the next after this index's last and after
    ``above`` (the highest number a file kept for a conflict bears: sync._kept_merges).

    The reason is stored escaped and cut (sync._shown), as a quarantine message is: `localstore
    conflicts` prints it, and it quotes what nobody here wrote (the app's validator, a YAML error
    naming a synced file's text, a server path)."""
    reason = shown(reason, 4 * MAX_SHOWN)
    last = cur.execute("SELECT max(cid) FROM sync_conflicts").fetchall()[0][0]
    # A rebuilt index numbers from 1 again, and a merge kept in STATE/merges/ for the lost
    # index's conflict N would be taken for the new conflict N's (and replaced by its merge).
    cid = max(int(last or 0), above) + 1
    if last is None:
        # This index's first conflict: a kept merge numbered below it, and without a record,
        # belongs to a conflict of an index lost before (sync._kept_merges keeps it).
        set_state(cur, CONFLICTS_FROM_KEY, str(cid))
    cur.execute(
        "INSERT INTO sync_conflicts (cid, id, path, copy_id, copy_path, reason, base, local, "
        "remote, base_rev, remote_rev, created, copy_synced) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            cid,
            blueprint_id,
            path,
            copy_id,
            copy_path,
            reason,
            base,
            local,
            remote,
            base_rev,
            remote_rev,
            utc_now(),
            int(copy_synced),
        ),
    )
    return cid


def has_conflict_for_copy(cur: Any, copy_id: str) -> bool:
    """Whether a conflict record (open or resolved) names ``copy_id`` as its copy."""
    return bool(
        cur.execute("SELECT 1 FROM sync_conflicts WHERE copy_id = ? LIMIT 1", (copy_id,)).fetchall()
    )


def conflicts_from(cur: Any) -> int | None:
    """The first conflict number this index gave, None when it gave none yet (a conflict record
    is never dropped while it is the highest, so a table with none never had one) or gave them
    before it recorded the first (an index older than this record: 0)."""
    first = get_state(cur, CONFLICTS_FROM_KEY)
    if first is not None:
        return int(first)
    has_any = cur.execute("SELECT 1 FROM sync_conflicts LIMIT 1").fetchall()
    return 0 if has_any else None


def _conflict_from(r: Iterable[Any]) -> ConflictRecord:
    t = list(r)
    return ConflictRecord(
        cid=int(t[0]),
        id=str(t[1]),
        path=str(t[2]),
        copy_id=None if t[3] is None else str(t[3]),
        copy_path=None if t[4] is None else str(t[4]),
        reason=shown(str(t[5]), 4 * MAX_SHOWN),  # (records stored before were raw)
        base=None if t[6] is None else str(t[6]),
        local=str(t[7]),
        remote=str(t[8]),
        base_rev=None if t[9] is None else int(t[9]),
        remote_rev=None if t[10] is None else int(t[10]),
        created=str(t[11]),
        resolved=None if t[12] is None else str(t[12]),
        resolution=None if t[13] is None else str(t[13]),
        copy_synced=bool(t[14]),
    )


def conflicts(cur: Any, *, include_resolved: bool = False) -> list[ConflictRecord]:
    """Conflict records, oldest first (open ones only unless ``include_resolved``)."""
    where = "" if include_resolved else " WHERE resolved IS NULL"
    return [
        _conflict_from(r)
        for r in cur.execute(f"SELECT {_CONFLICT_COLUMNS} FROM sync_conflicts{where} ORDER BY cid")
    ]


def get_conflict(cur: Any, cid: int) -> ConflictRecord | None:
    """One conflict record by number."""
    rows = cur.execute(
        f"SELECT {_CONFLICT_COLUMNS} FROM sync_conflicts WHERE cid = ?", (cid,)
    ).fetchall()
    return _conflict_from(rows[0]) if rows else None


def open_conflict_count(cur: Any) -> int:
    """Number of unresolved conflict records."""
    return int(
        cur.execute("SELECT count(*) FROM sync_conflicts WHERE resolved IS NULL").fetchall()[0][0]
    )


def conflicts_with_deleted_copy(cur: Any) -> list[int]:
    """Open conflict records whose conflict copy is deleted: a person settled them by deleting
    the copy (or another device did, and the delete synced here). One indexed look at the open
    records; nothing in the usual case of none."""
    return [
        int(r[0])
        for r in cur.execute(
            "SELECT c.cid FROM sync_conflicts c JOIN blueprints b ON b.id = c.copy_id "
            "WHERE c.resolved IS NULL AND b.deleted = 1"
        )
    ]


# How long resolved conflict records are kept, and the most kept (docs/sync-engine.md,
# "Conflict records"). Each keeps three texts of its blueprint, and a person who resolves a
# conflict a day on two devices had thousands after some years, for ever. An open record is
# never dropped; a resolved one holds nothing history lacks (every side was a revision here).
RESOLVED_CONFLICT_DAYS = 90
RESOLVED_CONFLICTS_KEPT = 200


def resolve_conflict(cur: Any, cid: int, resolution: str) -> None:
    """Mark a conflict record resolved, then drop the resolved records past the retention."""
    now = utc_now()
    cur.execute(
        "UPDATE sync_conflicts SET resolved = ?, resolution = ? WHERE cid = ?",
        (now, resolution, cid),
    )
    prune_resolved_conflicts(cur, now=now)


def prune_resolved_conflicts(cur: Any, *, now: str | None = None) -> int:
    """Drop resolved conflict records resolved more than RESOLVED_CONFLICT_DAYS before ``now``
    and those past the newest RESOLVED_CONFLICTS_KEPT; returns how many went.

    Run whenever a record is resolved, the only way resolved ones are added: so they stay
    bounded without a timer. Open records are never touched. What a resolved record held stays
    in history: the local side as the conflict copy's revisions (the copy is deleted, not
    purged), the remote and base sides as revisions of the blueprint itself.
    """
    stamp = now or utc_now()
    cutoff = _days_before(stamp, RESOLVED_CONFLICT_DAYS)
    # The highest cid always stays: cid has no AUTOINCREMENT, so dropping it would hand its
    # number, which the person may have noted, to the next conflict.
    cur.execute(
        "DELETE FROM sync_conflicts WHERE resolved IS NOT NULL "
        "AND cid < (SELECT max(cid) FROM sync_conflicts) AND (resolved < ? OR cid NOT IN "
        "(SELECT cid FROM sync_conflicts WHERE resolved IS NOT NULL "
        "ORDER BY resolved DESC, cid DESC LIMIT ?))",
        (cutoff, max(RESOLVED_CONFLICTS_KEPT, 1)),
    )
    return int(cur.execute("SELECT changes()").fetchall()[0][0])


def _days_before(stamp: str, days: int) -> str:
    """``stamp`` (utc_now's format) minus ``days``, in the same format (compares as text)."""
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ") - timedelta(days=days)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
