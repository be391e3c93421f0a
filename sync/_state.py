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

This module keeps the migrations and the names the engine reads as ``st.NAME``; the code lives in
one module per concern: ``_state_keys`` (sync_state, the account), ``_state_watermark`` (W and the
dirty condition), ``_state_outbox``, ``_state_items`` (sync_items and sync_bases, row by row),
``_state_bases`` (bases in bulk: the base record, verify), ``_state_journal``,
``_state_quarantine`` and ``_state_conflicts``. A test that patches a constant patches it where
the code reading it lives (``_state_items.IN_CHUNK``, ``_state_conflicts.RESOLVED_CONFLICTS_KEPT``);
a function the engine calls as ``st.NAME`` is patched here.
"""

from __future__ import annotations

from sync._state_bases import (  # noqa: F401  (re-exported: the engine reads them as ``st.NAME``)
    BASE_RECORD_KEY,
    BaseMark,
    base_count,
    base_marks,
    base_record_mark,
    bases_of,
    bases_since,
    held_hash,
    known_server_ids,
    knows_no_server,
    local_fingerprints,
    lower_base_record_mark,
    restore_base,
    set_base_record_mark,
)
from sync._state_conflicts import (  # noqa: F401  (re-exported: the engine reads them as ``st.NAME``)
    CONFLICTS_FROM_KEY,
    RESOLVED_CONFLICT_DAYS,
    RESOLVED_CONFLICTS_KEPT,
    ConflictRecord,
    add_conflict,
    conflicts,
    conflicts_from,
    conflicts_with_deleted_copy,
    get_conflict,
    has_conflict_for_copy,
    open_conflict_count,
    prune_resolved_conflicts,
    resolve_conflict,
)
from sync._state_items import (  # noqa: F401  (re-exported: the engine reads them as ``st.NAME``)
    IN_CHUNK,
    Accepted,
    Base,
    ItemState,
    current_op_id,
    drop_pull_parked,
    forget_server_row,
    get_base,
    get_item,
    items_for,
    local_revision_with_hash,
    mark_synced,
    mark_unsynced,
    record_accepted,
    record_base,
    record_synced_bases,
    renew_push_op,
    server_holder,
)
from sync._state_journal import (  # noqa: F401  (re-exported: the engine reads them as ``st.NAME``)
    JOURNAL_KEY,
    dirty_hashes,
    journal_clear,
    journal_read,
    journal_write,
)
from sync._state_keys import (  # noqa: F401  (re-exported: the engine reads them as ``st.NAME``)
    ACCEPTED_KEY,
    EMAIL_PREFIX,
    SETTLED_KEY,
    accept_identity,
    del_state,
    describe_account,
    foreign_identity,
    get_cursor,
    get_state,
    identity_project,
    identity_user,
    remember_email,
    reset_for_identity,
    restore_identity,
    set_state,
)
from sync._state_outbox import (  # noqa: F401  (re-exported: the engine reads them as ``st.NAME``)
    _VALID,
    OutboxItem,
    dirty_ids,
    held_count,
    leading_fit,
    never_synced_counts,
    outbox_batch,
    pending_count,
    pushable,
)
from sync._state_quarantine import (  # noqa: F401  (re-exported: the engine reads them as ``st.NAME``)
    QuarantineEntry,
    clear_quarantine,
    parked_unblocked,
    parsed_push_parks,
    quarantine,
    quarantine_count,
    quarantined,
    unquarantine,
)
from sync._state_watermark import (  # noqa: F401  (re-exported: the engine reads them as ``st.NAME``)
    max_op_id,
    settle,
    settled_op_id,
    unsettled_below_watermark,
)

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
