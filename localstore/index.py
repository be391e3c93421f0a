"""The SQLite index (apsw): connection, schema migrations, transactions, maintenance.

The index is derived from the files and can be rebuilt from them; it also holds history, sync state
and app data. One :class:`Index` owns one apsw connection guarded by an RLock, so a desktop app may call
it from many threads. Several processes may open the same file: WAL mode, a busy timeout, and writes
that start with ``BEGIN IMMEDIATE`` (so a read never has to be upgraded to a write, which SQLite can
refuse at once with SQLITE_BUSY regardless of the timeout). A write waits for another process's
write lock with the RLock released, so the process's reads never wait for that lock, and the
writers take turns (localstore/_write_turn.py): one saving back to back leaves the lock to another
process that waits for it.

Checkpoints and FTS merges are kept off the save path: automatic checkpoints are off and a
:class:`Maintainer` thread with its own connection runs them in the background (a commit checkpoints
itself only past WAL_HARD_LIMIT, and an idle round truncates what a burst left in the WAL).

Each component (core, kv, credentials, sync) registers its own ordered list of migrations; versions are
tracked per component in ``component_versions`` and the core's version is mirrored in
``PRAGMA user_version``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn

import apsw

from localstore import files as fs
from localstore._callbacks import call_each
from localstore._durable import WIN_IN_USE_ERRORS
from localstore._failure_streak import FAILURE_LOG_EVERY_S, FailureStreak
from localstore._fts_text import indexed_text
from localstore._revisions import compact_superseded
from localstore._time_key import ODD_TIMES_INDEX, sql_time_key
from localstore._write_turn import WriteTurn
from localstore.errors import (
    DiskFullError,
    IndexStoreError,
    LocalStoreError,
    NewerIndexError,
    PermissionDeniedError,
    ReadOnlyStoreError,
    StorageError,
    StoreClosedError,
)

log = logging.getLogger("localstore.index")

# The text of the five indexed columns (tags: store.fts_tags() makes the same from the same JSON).
_INDEXED_COLUMNS = (
    ("name", "b.name"),
    ("description", "b.description"),
    ("tags", "replace(replace(replace(replace(b.tags, '[', ''), ']', ''), '\"', ''), ',', ' ')"),
    ("content", "r.content"),
    ("path", "b.path"),
)
# Live rows whose indexed text localstore_fts_text() gives back unchanged (see v6). ASCII text
# (as many bytes as characters) is decided without calling into Python.
_ALL_TEXT = " || ".join(expr for _, expr in _INDEXED_COLUMNS)
_PLAIN_ROWS = f"""
    SELECT b.rid FROM blueprints b JOIN revisions r ON r.id = b.id AND r.rev = b.rev
    WHERE b.deleted = 0 AND (octet_length({_ALL_TEXT}) = length({_ALL_TEXT})
        OR ({" AND ".join(f"localstore_fts_text({e}) = {e}" for _, e in _INDEXED_COLUMNS)}))
"""
_V6_TEXT_VIEW = f"""
    CREATE VIEW blueprints_text AS
        SELECT b.rid AS rid, {
    ", ".join(
        f"CASE WHEN p.rid IS NULL THEN localstore_fts_text({e}) ELSE {e} END AS {c}"
        for c, e in _INDEXED_COLUMNS
    )
}
        FROM blueprints b JOIN revisions r ON r.id = b.id AND r.rev = b.rev
            LEFT JOIN fts_plain p ON p.rid = b.rid
        WHERE b.deleted = 0;
"""

_V8_CTIME_COLUMNS = """
    ALTER TABLE blueprints ADD COLUMN yaml_ctime_ns INTEGER;
    ALTER TABLE blueprints ADD COLUMN meta_ctime_ns INTEGER;
"""
_V9_INODE_COLUMNS = """
    ALTER TABLE blueprints ADD COLUMN yaml_ino INTEGER;
    ALTER TABLE blueprints ADD COLUMN meta_ino INTEGER;
"""
_V10_JUDGED_BY = """
    ALTER TABLE blueprints ADD COLUMN judged_by TEXT;
"""
# The migrations that add columns, by the first column they add: ADD COLUMN has no IF NOT EXISTS,
# and an index set back by hand (tests do) already has them.
_ADDS_COLUMN = {
    _V8_CTIME_COLUMNS: "yaml_ctime_ns",
    _V9_INODE_COLUMNS: "yaml_ino",
    _V10_JUDGED_BY: "judged_by",
}


def _v11_path_keys(cur: Any) -> None:
    """Core v11: give every row the key files.path_key makes now (the D145 caseless form).

    A step in Python, not SQL: the key is Python's Unicode normalization and case folding (an
    SQL function for this one step was the alternative; it would have to be registered on every
    connection for a statement that runs once). Only non-ASCII paths can get another key (for
    ASCII both keys are lower()), so 10,000 ASCII paths cost one scan of the table and no write.

    Two live rows whose paths were two names to the old key and are one name now (``ΐ`` and
    ``Ϊ́``) were both indexed, with both files on disk: neither may be lost or renamed behind
    the user's back. The row that holds the key first keeps it (a row whose key did not change,
    else the older row); the other keeps its path and gets a key no real path has, NUL and its
    id, as Reconciler._park gives one. Lookups by path reach it by its exact path, and check
    reports the pair until one is renamed (Reconciler._parked_pairs gives it its key back then).
    """
    rows = cur.execute(
        "SELECT rid, path, path_key, deleted FROM blueprints "
        "WHERE octet_length(path) != length(path) ORDER BY rid"
    ).fetchall()
    moving = [
        (rid, path, key, deleted)
        for rid, path, old, deleted in rows
        if (key := fs.path_key(path)) != old
    ]
    # Every changing row steps off its old key first: the live-path index is checked row by
    # row, so a key passed on from one row to another would clash on the way.
    cur.executemany(
        "UPDATE blueprints SET path_key = char(0) || id WHERE rid = ?",
        [(rid,) for rid, *_ in moving],
    )
    for rid, path, key, deleted in moving:
        taken = (
            not deleted
            and cur.execute(
                "SELECT path FROM blueprints WHERE path_key = ? AND deleted = 0", (key,)
            ).fetchall()
        )
        if taken:
            log.warning(
                "%s and %s are one name on macOS and Windows; both are kept, and "
                "'localstore check' reports them until one is renamed",
                path,
                taken[0][0],
            )
            continue
        cur.execute("UPDATE blueprints SET path_key = ? WHERE rid = ?", (key, rid))


# One step of a component's schema: SQL, or a function of the migrating cursor (core v11).
Migration = str | Callable[[Any], None]

CORE_MIGRATIONS: tuple[Migration, ...] = (
    # v1: blueprints, revisions, full-text search, settings, counters.
    """
    CREATE TABLE blueprints (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        path_key TEXT NOT NULL,
        folder TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        author TEXT NOT NULL,
        version TEXT NOT NULL,
        tags TEXT NOT NULL,
        created TEXT NOT NULL,
        modified TEXT NOT NULL,
        yaml_sha256 TEXT NOT NULL,
        meta_sha256 TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        yaml_size INTEGER NOT NULL,
        yaml_mtime_ns INTEGER NOT NULL,
        meta_size INTEGER NOT NULL,
        meta_mtime_ns INTEGER NOT NULL,
        valid INTEGER NOT NULL,
        problems TEXT NOT NULL,
        meta_json TEXT NOT NULL,
        flagged TEXT,
        rev INTEGER NOT NULL,
        op_id INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX blueprints_live_path ON blueprints(path_key) WHERE deleted = 0;
    CREATE INDEX blueprints_folder ON blueprints(folder, path) WHERE deleted = 0;
    CREATE INDEX blueprints_modified ON blueprints(modified) WHERE deleted = 0;
    -- Covers the listing query (sorted by path): a full listing reads this index in order instead
    -- of looking up each of 10,000 table rows at random.
    CREATE INDEX blueprints_listing ON blueprints(
        path, id, name, description, tags, author, version, created, modified, rev, content_hash,
        valid, flagged, yaml_size, deleted
    ) WHERE deleted = 0;
    CREATE INDEX blueprints_name ON blueprints(name) WHERE deleted = 0;
    CREATE INDEX blueprints_created ON blueprints(created) WHERE deleted = 0;
    CREATE INDEX blueprints_yaml_sha ON blueprints(yaml_sha256) WHERE deleted = 0;
    CREATE INDEX blueprints_op ON blueprints(op_id);
    -- Keyed by rid first: a save replaces one blueprint's tags (keyed by tag, that DELETE scanned
    -- the whole table, 0.3 ms at 10,000 blueprints); the tag index serves listing by tag.
    CREATE TABLE blueprint_tags (
        rid INTEGER NOT NULL REFERENCES blueprints(rid) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (rid, tag)
    ) WITHOUT ROWID;
    CREATE INDEX blueprint_tags_tag ON blueprint_tags(tag);
    -- A rowid table: each revision's ~2 KB lands on the table's last pages, in order. Keyed by
    -- (id, rev) WITHOUT ROWID, every insert went into the middle of a uuid-ordered b-tree whose
    -- leaves hold one or two such rows (splits, random dirty pages); only the small index
    -- entry goes there now.
    CREATE TABLE revisions (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        rev INTEGER NOT NULL,
        op_id INTEGER NOT NULL,
        origin TEXT NOT NULL,
        device TEXT NOT NULL,
        ts TEXT NOT NULL,
        path TEXT NOT NULL,
        content TEXT NOT NULL,
        meta TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX revisions_id_rev ON revisions(id, rev);
    -- What search indexes, read back only for snippets: the live text is already in revisions, so
    -- the FTS table keeps no copy of its own (external content; a third fewer pages per save).
    CREATE VIEW blueprints_text AS
        SELECT b.rid AS rid, b.name AS name, b.description AS description,
               replace(replace(replace(replace(b.tags, '[', ''), ']', ''), '"', ''), ',', ' ')
                   AS tags, -- store.fts_tags() makes the same text from the same JSON
               r.content AS content, b.path AS path
        FROM blueprints b JOIN revisions r ON r.id = b.id AND r.rev = b.rev WHERE b.deleted = 0;
    CREATE VIRTUAL TABLE blueprints_fts USING fts5(
        name, description, tags, content, path,
        content = 'blueprints_text', content_rowid = 'rid',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    INSERT INTO blueprints_fts(blueprints_fts, rank) VALUES ('automerge', 0);
    INSERT INTO blueprints_fts(blueprints_fts, rank) VALUES ('rank', 'bm25(10.0, 4.0, 6.0, 1.0, 2.0)');
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO counters VALUES ('op_id', 0);
    """,
    # v2: the described columns (name, description, tags, path) in a second, small full-text
    # index. A search for a common word first asks which blueprints have it there; the full index
    # answers that only by decoding the position list of every blueprint holding the word
    # (0.4-1.7 ms at 10,000), this one from its own short doclist (0.03-0.13 ms).
    """
    CREATE VIRTUAL TABLE blueprints_described USING fts5(
        name, description, tags, path,
        content = 'blueprints_text', content_rowid = 'rid',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    INSERT INTO blueprints_described(blueprints_described, rank) VALUES ('automerge', 0);
    INSERT INTO blueprints_described(blueprints_described) VALUES ('rebuild');
    """,
    # v3: a counter of the commits that changed blueprint rows, bumped by Index.write() (never by
    # a trigger: see Index._on_row_change), so a process that caches the full listing
    # (localstore._listing) can tell whether another one changed blueprints. The index's
    # data_version also moves for commits that touch none (FTS merges, sync state). The version
    # bump also keeps out an older localstore, which would change rows without counting them.
    """
    INSERT OR IGNORE INTO counters VALUES ('blueprints_gen', 0);
    """,
    # v4: each character of a script written without spaces (Chinese, Japanese, Korean, Thai...)
    # is a token of its own (localstore._fts_text): the view gives the text as it is indexed,
    # through the SQL function every connection registers (_connect). Only the entries of rows
    # whose text that changes are taken out (as indexed before) and put back: for all other
    # text it is the identity, and a full 'rebuild' of 10,000 blueprints re-tokenized 20 MB.
    """
    CREATE TEMP TABLE fts_v4_split AS
        SELECT rid FROM blueprints_text
        -- ASCII text (as many bytes as characters) is left as it is: no call into Python.
        WHERE octet_length(name || description || tags || content || path)
                != length(name || description || tags || content || path)
            AND (localstore_fts_text(name) != name
                OR localstore_fts_text(description) != description
                OR localstore_fts_text(tags) != tags OR localstore_fts_text(content) != content
                OR localstore_fts_text(path) != path);
    INSERT INTO blueprints_fts(blueprints_fts, rowid, name, description, tags, content, path)
        SELECT 'delete', rid, name, description, tags, content, path FROM blueprints_text
        WHERE rid IN (SELECT rid FROM temp.fts_v4_split);
    INSERT INTO blueprints_described(blueprints_described, rowid, name, description, tags, path)
        SELECT 'delete', rid, name, description, tags, path FROM blueprints_text
        WHERE rid IN (SELECT rid FROM temp.fts_v4_split);
    DROP VIEW blueprints_text;
    CREATE VIEW blueprints_text AS
        SELECT b.rid AS rid, localstore_fts_text(b.name) AS name,
               localstore_fts_text(b.description) AS description,
               localstore_fts_text(replace(replace(replace(replace(
                   b.tags, '[', ''), ']', ''), '"', ''), ',', ' ')) AS tags, -- store.fts_tags()
               localstore_fts_text(r.content) AS content, localstore_fts_text(b.path) AS path
        FROM blueprints b JOIN revisions r ON r.id = b.id AND r.rev = b.rev WHERE b.deleted = 0;
    INSERT INTO blueprints_fts(rowid, name, description, tags, content, path)
        SELECT rid, name, description, tags, content, path FROM blueprints_text
        WHERE rid IN (SELECT rid FROM temp.fts_v4_split);
    INSERT INTO blueprints_described(rowid, name, description, tags, path)
        SELECT rid, name, description, tags, path FROM blueprints_text
        WHERE rid IN (SELECT rid FROM temp.fts_v4_split);
    DROP TABLE temp.fts_v4_split;
    """,
    # v5: superseded revisions may be stored compacted, their content and meta as zlib BLOBs
    # (localstore._revisions). Nothing else changes; the bump keeps out an older localstore,
    # which would read such a revision as the text of its bytes.
    """
    INSERT OR IGNORE INTO settings VALUES ('revisions_compacted_seq', '0');
    """,
    # v6: the rows whose text v4's function gives back unchanged (no script to split: nearly
    # all) are listed in fts_plain, and the view calls the function only for the others. FTS5
    # reads a hit's row through the view for each column it weighs for a snippet, and each read
    # called into Python five times, converting the 2 KB content to a Python string and back:
    # 57 calls a hit, 20 % of a search's time. Only Store._reindex_text() changes a row's
    # indexed text, and it keeps the list; a row missing from it only costs those calls (the
    # function is right for every text), so the list may lag, never lead. (IF NOT EXISTS and
    # DELETE: tests set an index back to an older version by hand and open it again.)
    f"""
    CREATE TABLE IF NOT EXISTS fts_plain (rid INTEGER PRIMARY KEY);
    DELETE FROM fts_plain;
    INSERT INTO fts_plain {_PLAIN_ROWS};
    DROP VIEW blueprints_text;
    {_V6_TEXT_VIEW}
    """,
    # v7: which blueprint rows each counted commit changed (blueprints_gen, v3), written by
    # Index.write() in the same transaction: a process that caches the full listing re-reads
    # only those rows after another process's commit instead of all 10,000 (60 ms; a desktop
    # app next to the daemon, whose watcher and sync write every change, paid it each time).
    # rid -1: the commit changed more rows than are worth listing. The maintainer keeps the
    # newest CHANGE_LOG_ROWS rows; a process further behind reads everything, as before.
    """
    CREATE TABLE IF NOT EXISTS blueprint_changes (
        gen INTEGER NOT NULL,
        rid INTEGER NOT NULL,
        PRIMARY KEY (gen, rid)
    ) WITHOUT ROWID;
    """,
    # v8: each file's change time (st_ctime_ns) beside its size and mtime (files.stat_unchanged):
    # size and mtime alone took a same-size version put down with the recorded mtime (sync tools
    # copy mtimes, FAT's clock has 2 s steps) as unchanged, and the next save overwrote it
    # unrecorded. NULL in the rows of an older index: such a row matches no stat, so its pair is
    # read once at the next open (an unchanged one only gets its times recorded). _migrate skips
    # this step for an index that has the columns (tests set an index back by hand).
    _V8_CTIME_COLUMNS,
    # v9: each file's inode (st_ino, as files.ino_key stores it) beside its change time: a
    # same-size version with the recorded mtime renamed in within the clock tick of our own save
    # (a jiffy before Linux 6.13, 2 s on FAT) had the recorded change time too, and was missed.
    # A rename always brings another inode. NULL in the rows of an older index means "not yet
    # stamped": the first open records the inodes the scan saw for the pairs whose size, mtime
    # and change time match, without reading them (Reconciler.run); 0 means "unknown here"
    # (Windows' scandir gives none) and matches any inode, as NULL does (files.stat_unchanged).
    _V9_INODE_COLUMNS,
    # v10: which validator gave each row its verdict (``valid``, ``problems``): the name of the
    # app's validator (BlueprintStore.validator_name), '' when the writing process had none (the
    # daemon, the CLI), NULL in the rows of an older index (unknown). With the home's validator
    # (settings key ``validator``), it tells a verdict that no longer applies: the app re-judges
    # those rows when it opens the store or calls revalidate(), and sync holds them back until
    # then (docs/architecture.md, "The app's validator").
    _V10_JUDGED_BY,
    # v11: the path key is the Unicode canonical caseless form, NFC(casefold(NFD(path))), which
    # APFS compares, instead of casefold(NFC(path)), which missed real collisions of Greek
    # names with stacked marks (docs/portability.md, "Case and Unicode form of names"). The
    # bump also keeps out an older localstore, which would look rows up by the old key.
    _v11_path_keys,
    # v12: the deleted rows by path key, newest change last. A reference that names no live
    # blueprint is looked for among the deleted ones at its path (Store._resolve: `show`,
    # `history`, restore by path, an import plan probing free paths); only live rows were
    # indexed by path, so each such miss walked the whole table in op_id order (a scan of
    # 10,000 rows for every `localstore show <missing>`). Partial, as the live-path index is
    # its mirror: a save, move or rename of a live blueprint does not touch it; a delete adds
    # one entry, a restore takes it out. (IF NOT EXISTS: tests set an index back by hand.)
    """
    CREATE INDEX IF NOT EXISTS blueprints_deleted_path ON blueprints(path_key, op_id)
        WHERE deleted = 1;
    """,
    # v13: the live rows whose created or modified stamp is not in the store's own form (a
    # meta file edited by hand or written by another tool: localstore._time_key). A listing
    # sorted by a stamp asks this index whether there is any such row (one lookup), and walks
    # the stamp's own index as before when there is none; only where there is does it sort by
    # the moment each stamp names, which costs a sort of every row. Partial, so in a store
    # that only the store wrote it is empty; SQLite keeps it on every write, an older
    # localstore's too. (IF NOT EXISTS: tests set an index back by hand.)
    ODD_TIMES_INDEX,
)
# Per core step: whether today's code reads, as it is, an index that never had the step. A
# read-only open cannot migrate: a backup made by an older localstore is read as it is, or refused
# with "open a copy once" (core v13 added only an index, and yesterday's backups were refused).
# True only for a step that adds indexes and nothing else: without one, SQLite answers every query
# the same, only slower (no query names an index to use), a question put to the index itself
# (v13's, in localstore._listing.sorts_by_moment) included: the table answers it. A step that adds
# a table, a column, a view or a row, or rewrites rows, is False: today's queries would fail on an
# index without it, or misread it. One entry per step: tests/upgrade/test_read_only_steps.py
# checks the count, and that each True step adds indexes only.
CORE_READ_WITHOUT: tuple[bool, ...] = (
    False,  # v1: the tables
    False,  # v2: a full-text table
    False,  # v3: a counter row the listing cache reads
    False,  # v4: the view's text, split per character
    False,  # v5: compacted revisions
    False,  # v6: a table the view reads
    False,  # v7: the change log table
    False,  # v8: columns
    False,  # v9: columns
    False,  # v10: a column
    False,  # v11: path keys rewritten
    True,  # v12: an index (deleted rows by path key)
    True,  # v13: an index (odd stamps)
)


def oldest_core_read_as_is() -> int:
    """The oldest core schema version a read-only open reads as it is (CORE_READ_WITHOUT)."""
    version = len(CORE_MIGRATIONS)
    while version > 0 and CORE_READ_WITHOUT[version - 1]:
        version -= 1
    return version


# Core schema v1 was edited in place seven times (commits 98605c6 to fab1650) instead of getting
# new versions: a home made by an earlier build has core v1 in an older shape, with the same
# columns and rows. v2 needs the `blueprints_text` view only the final shape has, so such an index
# could not be opened at all ("no such table: main.blueprints_text"); and a home made by a build
# from 45c282d to 1c6d740 (the view, but a WITHOUT ROWID `revisions` table) went on to v2 and v3
# in that shape. _reshape_core_v1() brings any of them to the final v1 shape, piece by piece,
# keeping every row; tests/upgrade opens homes made by those builds. These are the pieces, as the
# final v1 creates them. (A change to a schema goes into a new version, never into an old one.)
_V1_REVISIONS = """
    CREATE TABLE revisions (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        rev INTEGER NOT NULL,
        op_id INTEGER NOT NULL,
        origin TEXT NOT NULL,
        device TEXT NOT NULL,
        ts TEXT NOT NULL,
        path TEXT NOT NULL,
        content TEXT NOT NULL,
        meta TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX revisions_id_rev ON revisions(id, rev);
"""
_REVISION_COLUMNS = "id, rev, op_id, origin, device, ts, path, content, meta, content_hash, deleted"
_V1_TAGS = """
    CREATE TABLE blueprint_tags (
        rid INTEGER NOT NULL REFERENCES blueprints(rid) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (rid, tag)
    ) WITHOUT ROWID;
    CREATE INDEX blueprint_tags_tag ON blueprint_tags(tag);
"""
_V1_BLUEPRINT_INDEXES = """
    CREATE INDEX IF NOT EXISTS blueprints_listing ON blueprints(
        path, id, name, description, tags, author, version, created, modified, rev, content_hash,
        valid, flagged, yaml_size, deleted
    ) WHERE deleted = 0;
    CREATE INDEX IF NOT EXISTS blueprints_name ON blueprints(name) WHERE deleted = 0;
    CREATE INDEX IF NOT EXISTS blueprints_created ON blueprints(created) WHERE deleted = 0;
    CREATE INDEX IF NOT EXISTS blueprints_yaml_sha ON blueprints(yaml_sha256) WHERE deleted = 0;
    DROP INDEX IF EXISTS blueprints_path;
"""
_V1_TEXT_VIEW = """
    CREATE VIEW blueprints_text AS
        SELECT b.rid AS rid, b.name AS name, b.description AS description,
               replace(replace(replace(replace(b.tags, '[', ''), ']', ''), '"', ''), ',', ' ')
                   AS tags, -- store.fts_tags() makes the same text from the same JSON
               r.content AS content, b.path AS path
        FROM blueprints b JOIN revisions r ON r.id = b.id AND r.rev = b.rev WHERE b.deleted = 0;
"""
_V1_FTS = """
    CREATE VIRTUAL TABLE blueprints_fts USING fts5(
        name, description, tags, content, path,
        content = 'blueprints_text', content_rowid = 'rid',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    INSERT INTO blueprints_fts(blueprints_fts, rank) VALUES ('automerge', 0);
    INSERT INTO blueprints_fts(blueprints_fts, rank) VALUES ('rank', 'bm25(10.0, 4.0, 6.0, 1.0, 2.0)');
    INSERT INTO blueprints_fts(blueprints_fts) VALUES ('rebuild');
"""
# What tells an older v1 shape apart (read at every open: one small query of sqlite_schema).
_V1_SHAPE_QUERY = (
    "SELECT name, sql FROM sqlite_schema WHERE name IN "
    "('revisions', 'blueprint_tags', 'blueprints_fts', 'blueprints_text', 'blueprints_path', "
    "'blueprints_listing', 'blueprints_name', 'blueprints_created', 'blueprints_yaml_sha')"
)
_V1_INDEX_NAMES = (
    "blueprints_listing",
    "blueprints_name",
    "blueprints_created",
    "blueprints_yaml_sha",
)


def _old_v1_pieces(cur: Any) -> set[str]:
    """Which pieces of core v1 are in an older shape (empty for the final one)."""
    sql = {str(n): " ".join(str(s or "").split()) for n, s in cur.execute(_V1_SHAPE_QUERY)}
    if "revisions" not in sql:
        return set()  # (no core tables yet: v1 is about to be created)
    old = set()
    if "WITHOUT ROWID" in sql["revisions"]:
        old.add("revisions")
    if "PRIMARY KEY (tag, rid)" in sql.get("blueprint_tags", ""):
        old.add("tags")
    if "blueprints_path" in sql or any(name not in sql for name in _V1_INDEX_NAMES):
        old.add("indexes")
    if "blueprints_text" not in sql or "content = 'blueprints_text'" not in sql.get(
        "blueprints_fts", ""
    ):
        old.add("fts")
    return old


def _has_column(cur: Any, table: str, column: str) -> bool:
    return any(r[1] == column for r in cur.execute(f"PRAGMA table_info({table})"))


def _reshape_core_v1(cur: Any, old: set[str]) -> None:
    """Bring the older v1 pieces named in ``old`` to the final v1 shape, keeping every row."""
    if not old:
        return
    log.info("bringing an index made by an early localstore to the current shape: %s", old)
    # The view reads revisions; renaming a table while a view names a missing one fails.
    cur.execute("DROP VIEW IF EXISTS blueprints_text")
    if "revisions" in old:
        # Insertion order (what the rowid gives the new table) is the order of the changes.
        cur.execute("ALTER TABLE revisions RENAME TO revisions_v1_old")
        cur.execute(_V1_REVISIONS)
        cur.execute(
            f"INSERT INTO revisions ({_REVISION_COLUMNS}) SELECT {_REVISION_COLUMNS} "
            "FROM revisions_v1_old ORDER BY op_id, id, rev"
        )
        cur.execute("DROP TABLE revisions_v1_old")
    if "tags" in old:
        cur.execute("ALTER TABLE blueprint_tags RENAME TO blueprint_tags_v1_old")
        cur.execute(_V1_TAGS)
        cur.execute(
            "INSERT INTO blueprint_tags (rid, tag) SELECT rid, tag FROM blueprint_tags_v1_old"
        )
        cur.execute("DROP TABLE blueprint_tags_v1_old")
    if "indexes" in old:
        cur.execute(_V1_BLUEPRINT_INDEXES)
    cur.execute(_V1_TEXT_VIEW)
    if "fts" in old:
        # The old table kept its own copy of every text; the new one reads the view (rebuilt
        # from it: derived data, nothing to lose).
        cur.execute("DROP TABLE IF EXISTS blueprints_fts")
        cur.execute(_V1_FTS)
    # (v2's blueprints_described reads the view too; it was made again with the same columns.)


# The most changed blueprint rows an Index notes between two blueprint_changes() calls: past it,
# the listing cache reads everything again anyway (cheaper than patching that many rows).
CHANGED_ROWS_KEPT = 2000
# A write waiting for another process's lock polls at most this far apart when the home has a
# turn file (it announces itself at each poll, and the holder leaves it the lock: a short poll
# keeps the holder's pause short). Without one, 50 ms, as before turns.
TURN_POLL_S = 0.002
# The longest a writer leaves the lock to one waiter that does not take it (scheduling delays;
# a waiter stuck without polling is forgotten after _write_turn.FRESH_NS anyway).
GIVE_WAY_MAX_S = 0.1
# Run by Index.write() before the COMMIT of a transaction that changed blueprint rows.
_LAST_OP = "SELECT value FROM counters WHERE name = 'op_id'"
_COUNT_BLUEPRINT_COMMIT = "UPDATE counters SET value = value + 1 WHERE name = 'blueprints_gen'"
BLUEPRINTS_GEN = "SELECT value FROM counters WHERE name = 'blueprints_gen'"
# One row a statement, VALUES: an INSERT ... SELECT may insert many rows, so SQLite opens a
# statement transaction for it, and FTS5 answers that by flushing the save's pending terms to
# disk (a one-row segment per save, 10 % of a save's time; see Index._on_row_change).
_LOG_CHANGE = "INSERT INTO blueprint_changes VALUES (?, ?)"
# The newest rows the change log keeps (see core v7): a few thousand commits of one blueprint,
# or a few large batches; a listing cache further behind reads everything again.
CHANGE_LOG_ROWS = 8000
_TRIM_CHANGE_LOG = (
    "DELETE FROM blueprint_changes WHERE gen <= (SELECT gen FROM blueprint_changes "
    f"ORDER BY gen DESC LIMIT 1 OFFSET {CHANGE_LOG_ROWS})"
)
# The full-text tables (the maintainer merges both, the integrity check checks both).
FTS_TABLES = ("blueprints_fts", "blueprints_described")
# Pages of FTS merge work per table and maintainer round.
FTS_MERGE_PAGES = 64
# A positive 'merge' only merges a level that holds 4 segments, so the entries edits replaced and
# the delete marks of removed blueprints stay in the older, larger segments, which are seldom
# merged: on a 10,000-blueprint home edited daily (100 edits and 10 deletes or creates a day) the
# full-text data went from 6.3 MB to 12.3 MB in 12,600 edits, and kept growing. So once this many
# changes (op ids) have been made since the last time, a round starts an incremental optimize (a
# negative 'merge': every segment onto one level), which the next rounds' merges carry on
# FTS_MERGE_PAGES at a time (about 20 rounds at 10,000) down to one segment with no dead entries.
# Started only by an idle round (no commit since the last): a positive merge works on the level
# with the most segments, and under steady saving that is the newest level (a segment a commit),
# so an optimize started then got no share of the work and its half-merged level only added pages
# (measured: 10.1 MB against 9.3 MB after 6,300 edits with rounds every 256 saves and none idle).
# Rewriting the index once per 2,000 changes costs about 3 KB of writes a change, off the save path.
FTS_OPTIMIZE_EVERY_OPS = 2000
FTS_OPTIMIZED_KEY = "fts_optimized_op"

# What a checkpointed WAL is cut back to when a writer starts it over (PRAGMA journal_size_limit).
# Unset, the file kept its peak size (an import, a first sync's pull) for the life of the process.
# Above what one maintenance cycle writes in steady use (256 saves of ~21 pages, about 22 MB), so
# the file is not cut and grown again every cycle; a burst's excess is given back at its end.
WAL_SIZE_LIMIT = 32 * 1024 * 1024
# Past this size a commit checkpoints (PASSIVE) on the writer's own connection, then again only
# after each further WAL_FALLBACK_STEP. The maintainer's checkpoints run beside the writes, so
# under steady writing they never catch up with the WAL's end, and SQLite starts a WAL over only
# when it is wholly checkpointed: without this it grew by every save (240 MB after 3,000 saves in
# 35 s), and without bound when the maintainer failed or was not running. At most WAL_SIZE_LIMIT,
# so the started-over file is not cut: the commits after it write over blocks the file has, and
# one that appends pays in its flush for new blocks and the file's size (a save's commit: 331 us
# appending against 189 us writing over, on the benchmark VM). It was 64 MB: steady saves then
# appended for the first 32 MB of every 64. A save that checkpoints here pays 3-6 ms, about one
# save in 170 of ~20 pages (docs/benchmarks/store.md).
WAL_HARD_LIMIT = 16 * 1024 * 1024
WAL_FALLBACK_STEP = 16 * 1024 * 1024
# A maintainer round that finds no commit since the previous one (idle for MAINTENANCE_INTERVAL_S)
# truncates a WAL larger than this to nothing.
WAL_IDLE_TRUNCATE = 4 * 1024 * 1024
# How often a maintainer round runs when few commits wake it, and the most a failing one waits.
MAINTENANCE_INTERVAL_S = 30.0
# A maintainer whose rounds keep failing says so again at most this often (first failure: at once).
MAINTENANCE_LOG_EVERY_S = FAILURE_LOG_EVERY_S
# Free pages (deleted rows, compacted revisions, merged FTS segments) stay in index.db for reuse;
# SQLite gives none back without a vacuum. A new index is made with auto_vacuum=INCREMENTAL, and
# a maintainer round hands free pages back to the filesystem once they are more than
# FREE_PAGES_SHARE of the file and FREE_PAGES_FLOOR bytes, keeping FREE_PAGES_SHARE / 2 as slack
# for the next saves, at most FREE_PAGES_PER_ROUND bytes a round (each one a short write, like a
# compaction chunk). Below the bounds the free pages are what steady use reuses anyway (about
# 1,500 pages of a 10,000-blueprint home edited daily: compaction frees a page per revision).
FREE_PAGES_SHARE = 0.25
FREE_PAGES_FLOOR = 8 * 1024 * 1024
FREE_PAGES_PER_ROUND = 8 * 1024 * 1024
# Given back in steps of at most this many bytes, each its own write transaction: moving 8 MB
# of pages in one held the write lock 44 ms (a 10,000-blueprint-sized file after compacting a
# 1 MB blueprint's history), and a save waited as long; a 1 MB step holds it a few ms, and a
# waiting save gets the lock between two steps.
FREE_PAGES_PER_STEP = 1024 * 1024


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def note_os_error(conn: apsw.Connection, exc: BaseException) -> None:
    """Note on an apsw I/O error the OS error behind it (``os_errno``, for map_apsw_error).

    SQLite reports ENOSPC as SQLITE_FULL only where it writes a file; growing the WAL index
    (-shm) or opening the WAL on a full disk fails as a plain SQLITE_IOERR, which said "disk
    I/O error" (check the hardware) to a user whose disk was only full.
    """
    if isinstance(exc, apsw.IOError) and not hasattr(exc, "os_errno"):
        try:
            exc.os_errno = conn.system_errno  # type: ignore[attr-defined]
        except apsw.Error:
            pass


def map_apsw_error(exc: apsw.Error, action: str = "index operation") -> LocalStoreError:
    """Translate an apsw exception into the localstore tree."""
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return IndexStoreError(
            f"{action}: the index stayed locked by another process",
            hint="another localstore process is busy; try again",
        )
    if isinstance(exc, apsw.FullError) or getattr(exc, "os_errno", None) in _FULL_ERRNOS:
        return DiskFullError(f"{action}: the disk is full", hint="free some disk space")
    if isinstance(exc, apsw.ReadOnlyError | apsw.PermissionsError | apsw.CantOpenError):
        return PermissionDeniedError(
            f"{action}: cannot write the index ({exc})",
            hint="check that this user may write index.db, its -wal and -shm files and the data "
            "folder holding them",
        )
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return IndexStoreError(
            f"{action}: the index is damaged ({exc})",
            hint="run 'localstore check --fix': it moves the damaged index aside and rebuilds it "
            "from the files",
        )
    return IndexStoreError(f"{action}: {exc}", hint="run 'localstore check' for details")


# apsw errors that say nothing about the state of the data (access, locks, space).
_NOT_DAMAGE = (
    apsw.ReadOnlyError,
    apsw.PermissionsError,
    apsw.CantOpenError,
    apsw.BusyError,
    apsw.LockedError,
    apsw.FullError,
)


def index_damaged(exc: BaseException) -> bool:
    """True when ``exc`` (from opening or reading the index) says the file itself is damaged:
    not a database, or corrupted pages. Not for a lock, a full disk or a permission."""
    return isinstance(exc, IndexStoreError) and isinstance(
        exc.__cause__, apsw.CorruptError | apsw.NotADBError
    )


def set_aside(path: Path) -> Path:
    """Move a damaged index (and its -wal and -shm) aside to a timestamped name next to it.

    Never deleted: it holds the revision history, which the files do not, and may be salvageable.
    Returns the new path of the main file."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        # The -wal and -shm first: a main file moved alone would leave a WAL that SQLite might
        # replay into the fresh index.
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                fs.replace_file(side, target.with_name(target.name + suffix))
        fs.replace_file(path, target)
    except OSError as exc:
        if getattr(exc, "winerror", None) in WIN_IN_USE_ERRORS:  # (a backup tool, a scanner)
            raise fs.map_os_error(exc, "cannot move the damaged index aside", path) from exc
        raise PermissionDeniedError(
            f"cannot move the damaged index {path} aside: {exc.strerror or exc}",
            hint="check the permissions of the data folder, or move index.db aside by hand",
        ) from exc
    return target


def _durable_commits(conn: apsw.Connection) -> None:
    """The flush settings of every connection that commits or checkpoints (one pragma per call).

    The maintainer's connection needs them as much as the store's: it commits compacted history
    and FTS merges, and it runs the checkpoints that copy acknowledged commits into the database
    file (after which the WAL may be started over). Left to SQLite's defaults it ran without
    F_FULLFSYNC on macOS, so a checkpointed page could still sit in the drive's cache.
    """
    conn.execute("PRAGMA synchronous=FULL").fetchall()
    if sys.platform == "darwin":
        # macOS's fsync leaves the data in the drive's cache: without F_FULLFSYNC a power cut
        # can lose a commit that synchronous=FULL acknowledged (and a checkpointed page).
        conn.execute("PRAGMA fullfsync=ON").fetchall()
        conn.execute("PRAGMA checkpoint_fullfsync=ON").fetchall()


def _connect(path: Path, busy_timeout_ms: int) -> apsw.Connection:
    conn: apsw.Connection | None = None
    _create_private(path)
    try:
        conn = apsw.Connection(str(path))
        conn.setbusytimeout(busy_timeout_ms)
        # The query planner stability guarantee. Without it SQLite marks FTS5's own segment
        # lookup (SELECT pgno FROM <fts>_idx WHERE segid=? AND term<=? ...) expired at every
        # bind, because its plan may depend on the value, and prepares it again from scratch:
        # a sixth of a search's time. Nothing here needs value-dependent plans (no ANALYZE
        # statistics; the one LIKE, search's folder filter, cannot use an index anyway).
        conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)
        add_functions(conn)
        if int(str(conn.execute("PRAGMA page_count").fetchall()[0][0])) == 0:
            # A new file: auto_vacuum can be chosen only before the first table exists (an
            # existing index changes mode only through a VACUUM: Index.reclaim_free_pages()).
            # INCREMENTAL adds no work to a commit beyond keeping the pointer map (one page per
            # ~1,000 pages) current; the maintainer decides when to give space back.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL").fetchall()
        # One pragma per call, each read back: a multi-statement execute leaves later pragmas
        # unapplied until its cursor is consumed (field notes).
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()
        if not mode or str(mode[0][0]).lower() != "wal":
            raise IndexStoreError(f"cannot switch {path} to WAL mode (got {mode})")
        _durable_commits(conn)
        conn.execute("PRAGMA foreign_keys=ON").fetchall()
        conn.execute("PRAGMA wal_autocheckpoint=0").fetchall()
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}").fetchall()
        conn.execute("PRAGMA cache_size=-16000").fetchall()
        page_size = int(str(conn.execute("PRAGMA page_size").fetchall()[0][0]))
        # Replaces the automatic checkpoint (off above) with one that fires only past the hard
        # limit; a WAL hook runs after the commit has released the write lock.
        conn.setwalhook(_WalGuard(path, page_size))
    except apsw.Error as exc:
        if conn is not None:
            note_os_error(conn, exc)
            _close_quietly(conn)
        raise map_apsw_error(exc, f"open {path}") from exc
    return conn


def _create_private(path: Path) -> None:
    """Create a new index file 0600 whatever the umask (SQLite gives its -wal and -shm the
    database file's mode). LocalStore makes ``data/`` 0700, but a home pointed at an existing
    folder others can read had its history, sync state and app data readable by them."""
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600
        )
    except OSError:
        return  # it exists (the usual case), or SQLite says what is wrong when it opens it
    os.close(fd)


def add_functions(conn: apsw.Connection) -> None:
    """Register the SQL functions every index connection needs (read-only ones too)."""
    # The text search indexes (the blueprints_text view, schema v4): without it no search
    # can make a snippet, nor check or rebuild its index, on this connection.
    conn.create_scalar_function("localstore_fts_text", _sql_indexed_text, 1, deterministic=True)
    # A listing sorted by a stamp in a store holding one not in its own form (store.list).
    conn.create_scalar_function("localstore_time_key", sql_time_key, 1, deterministic=True)


def _sql_indexed_text(*values: Any) -> Any:
    """localstore_fts_text(text) in SQL: indexed_text() of a string, any other value as it is."""
    (value,) = values
    # isascii() here first: one Python frame less for most text. (Since v6 the view calls this
    # only for rows with text to split; a snippet read each hit's row about 11 times.)
    if type(value) is not str or value.isascii():
        return value
    return indexed_text(value)


class _WalGuard:
    """The WAL hook of a writing connection: the fallback checkpoint past WAL_HARD_LIMIT."""

    def __init__(self, path: Path, page_size: int) -> None:
        self._path = path
        self._hard = WAL_HARD_LIMIT // page_size
        self._step = WAL_FALLBACK_STEP // page_size
        self._next = self._hard
        self._page_size = page_size
        self._logged = float("-inf")

    def __call__(self, conn: apsw.Connection, dbname: str, pages: int) -> int:
        # Never raises: what the hook returns (or raises) becomes the result of a COMMIT that
        # has already happened.
        if pages < self._hard:
            self._next = self._hard  # the WAL was started over
            return apsw.SQLITE_OK
        if pages < self._next:
            return apsw.SQLITE_OK
        try:
            conn.wal_checkpoint(dbname, apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.BusyError:
            # Another connection was checkpointing (a maintainer, another process's commit):
            # nothing was copied, so the next commit tries again (busy costs nothing). Counted
            # as done, it put the next try a whole step later: twice in a row under load, the
            # WAL reached 51 MB.
            return apsw.SQLITE_OK
        except apsw.Error as exc:  # the commit stands; the maintainer or the next step retries
            outcome = f"failed ({exc})"
        else:
            outcome = "done"
        # Then only every WAL_FALLBACK_STEP: a WAL pinned by a reader in another process cannot
        # be started over, and a checkpoint per commit would then cost every save an fsync.
        self._next = pages + self._step
        now = time.monotonic()
        if now - self._logged >= MAINTENANCE_LOG_EVERY_S:
            self._logged = now
            # INFO: steady writing alone gets here (see WAL_HARD_LIMIT); a failing maintainer
            # says so itself, at WARNING.
            log.info(
                "the write-ahead log of %s reached %d MB; a save checkpointed it (%s)",
                self._path,
                pages * self._page_size // 1_000_000,
                outcome,
            )
        return apsw.SQLITE_OK


class _WriteLost(IndexStoreError):
    """SQLite rolled back the whole open write transaction by itself; nothing of it is saved.

    Raised by every level of that write still open but the outermost (which raises the error
    that lost it), by a new level, and by any statement that would write: an IndexStoreError,
    so the per-item handlers of batches (reconcile, sync, the watcher) stop instead of going on
    in autocommit mode, each later item committing alone.
    """

    def __init__(self, cause: BaseException | None) -> None:
        why = f" ({_describe_cause(cause)})" if cause is not None else ""
        super().__init__(
            f"SQLite rolled back the whole write after an error inside it{why}; nothing of "
            "it was saved",
            hint="free some disk space if the disk is full, then try again; 'localstore check' "
            "shows whether the index is healthy",
        )


def _describe_cause(cause: BaseException) -> str:
    if isinstance(cause, apsw.Error):
        return str(map_apsw_error(cause, "write"))
    return str(cause)


def forked_error(pid: int) -> StoreClosedError:
    """The refusal of a store (or index) used in a child forked from the process that opened it.

    SQLite forbids carrying a connection across fork(), the store's threads exist only in the
    parent, and a lock a parent thread held at the fork stays taken in the child: the child's
    save hung for ever.
    """
    return StoreClosedError(
        f"this store was opened by process {pid}; a child forked from it cannot use it",
        hint="open the home again in the child with localstore.open() (or start the child with "
        "the spawn method)",
    )


class WriteOutcome:
    """Whether a level of Index.write() stands, for a caller whose with-block an exception left.

    ``done`` is set once the outermost level's COMMIT is done, even when an exception came
    right after it (the caller must then not undo its files: the index holds them), or once
    an inner level is released into the enclosing transaction, whose rollback then runs the
    caller's undo_on_rollback callbacks. False: the level was rolled back."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class Index:
    """One apsw connection to index.db, safe to share between threads."""

    def __init__(
        self, path: Path, *, busy_timeout_ms: int = 30_000, read_only: str | None = None
    ) -> None:
        """Open the index at ``path``; ``read_only``: why it must not be written (a write then
        raises ReadOnlyStoreError saying so), None for the usual writable open."""
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.read_only = read_only
        # How a read-only index was opened (localstore._read_only: shared, private-wal,
        # immutable); None for a writable one.
        self.read_access: str | None = None
        self._lock = threading.RLock()
        # The process that opened the connection: a forked child must not use it (forked_error).
        self._pid = os.getpid()
        # Set by interrupt_lock_waits(): a write finding another process's write lock gives up.
        self._no_lock_waits = False
        self._depth = 0
        # The turn file shared with the other processes writing this index (_write_turn): set
        # once the index is accepted, None for a read-only one or where it cannot be made.
        self._turn: WriteTurn | None = None
        self._conn: apsw.Connection | None
        if read_only is None:
            self._conn = _connect(self.path, busy_timeout_ms)
        else:
            from localstore._read_only import connect_read_only

            self._conn, self.read_access = connect_read_only(self.path, busy_timeout_ms)
        self._commits = 0
        # Whether SQLite's rollback hook fired since the open write began (ours or its own):
        # with the connection back in autocommit mode, the sign that it did not commit.
        self._rolled_back = False
        # For tests only: called right after the outermost COMMIT returned, before anything
        # else, to deliver an interrupt exactly there.
        self._after_commit_statement: Callable[[], None] | None = None
        # Write transactions begun on this connection: what was read inside one holds until it
        # ends (no other writer commits meanwhile), so a value read once per transaction is
        # cached against this (BlueprintStore._revision_device).
        self.write_serial = 0
        self._commit_listeners: list[Any] = []
        self._rollback_listeners: list[Callable[[], None]] = []
        # Told once the connection is closed (see on_close).
        self._close_listeners: list[Callable[[], None]] = []
        # The thread whose transaction is open (set and cleared under the lock by that thread),
        # what after_commit() queued per open level (outermost first), and a close() asked for
        # from inside that transaction (done when it ends).
        self._owner: int | None = None
        self._deferred: list[list[Callable[[], None]]] = []
        # What undo_on_rollback() registered per open level (outermost first).
        self._undo: list[list[Callable[[], None]]] = []
        self._close_pending = False
        # The change numbers (op_id) this connection committed, as ranges (first, last), noted
        # under the lock right after each COMMIT once someone asked (own_ops): a follower of
        # other connections' commits tells its own rows from theirs by them, exactly, where the
        # events published after the commit come too late to (docs/daemon.md). The first op_id
        # drawn by the open transaction (all up to its last draw are its own: it holds the
        # write lock, and a rolled-back savepoint takes its draws back).
        self._own_ops: list[tuple[int, int]] | None = None
        self._first_op: int | None = None
        # The open transaction's own range, read right before its COMMIT (see _commit_statement).
        self._commit_ops: tuple[int, int] | None = None
        # Set when SQLite rolled the open write transaction back by itself (see _WriteLost);
        # the error that did it, once a level has seen it.
        self._lost = False
        self._lost_cause: BaseException | None = None
        # Blueprint rows this connection changed (rowids; some perhaps rolled back since), noted
        # only once someone asked (blueprint_changes) and None past CHANGED_ROWS_KEPT; whether
        # the open transaction changed any, and how many of its commits did.
        self._changed_rids: set[int] | None = set()
        self._track_rids = False
        self._blueprints_touched = False
        # The blueprint rows the open write transaction changed (None: more than
        # CHANGED_ROWS_KEPT), written to the change log at its commit (core v7).
        self._txn_rids: set[int] | None = set()
        self.blueprint_commits = 0
        # The schema version of each component this connection brought up to date (what its
        # code knows), for newer_version() and write(); and the refusal of a write because a
        # newer localstore upgraded one of them meanwhile, once one was refused (None until then).
        self._known_versions: dict[str, int] = {}
        self.newer: NewerIndexError | None = None
        # This connection's ``PRAGMA data_version`` when newer_version() or write() last read
        # the versions and found none newer (None: read them next time). Only another
        # connection's commit can upgrade the index, and every such commit moves data_version.
        self._versions_checked_at: int | None = None
        self.conn.set_rollback_hook(self._on_sqlite_rollback)
        self.conn.set_update_hook(self._on_row_change)
        try:
            if read_only is None:
                self.register_schema("core", CORE_MIGRATIONS)
                # (After the schema check: a refused newer index gets no file beside it.)
                self._turn = WriteTurn.open(self.path)
            else:
                self._check_schema_read_only()
        except BaseException:
            # An index this code refuses (a newer version's) must be left as it was: the open
            # connection kept the -wal and -shm files it had made until the process ended. No
            # checkpoint on the way out either: that would write into the refused file.
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            raise
        _track_for_fork(self)

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def conn(self) -> apsw.Connection:
        """The raw connection (only under :meth:`read` or :meth:`write`)."""
        if self._conn is None:
            raise StoreClosedError("the index is closed", hint="open the store again")
        return self._conn

    def close(self) -> None:
        """Checkpoint what is cheap to checkpoint, then close the connection.

        Called from inside a write transaction of the calling thread (a callback run by code
        that holds one), the close is deferred until that outermost transaction ends, by commit
        or rollback: closing the connection under it would roll it back behind its owner's back
        (its statements then fail on a closed index, half of its work done in memory). ``closed``
        is True from the call on. Another thread's close waits for the transaction, as before.
        """
        with self._lock:
            if self._conn is None:
                return
            if self._depth > 0:  # (the lock is reentrant: only the transaction's thread gets here)
                self._close_pending = True
                return
            self._close_now()
        self._tell_closed()  # (with the lock released: a listener may join a thread needing it)

    def _close_now(self) -> None:
        conn, self._conn = self._conn, None
        self._close_pending = False
        if conn is None:
            return
        if self._turn is not None:
            self._turn.close()
        if self.read_only is None:  # (a read-only connection may not checkpoint)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except apsw.Error:  # another process holds the WAL busy; its maintainer will do it
                pass
        conn.close()

    def check_process(self) -> None:
        """Raise StoreClosedError (forked_error) in a child forked from the process that opened
        the index: for what else uses the store's connection, locks or threads (its events, a
        sync engine), which the child must not touch either."""
        if os.getpid() != self._pid:
            raise forked_error(self._pid)

    @property
    def write_open(self) -> bool:
        """True if the calling thread has a write transaction open (what it reads is uncommitted)."""
        return self._owner == threading.get_ident() and self._depth > 0

    @property
    def lock_held(self) -> bool:
        """True if the calling thread holds this index's lock (it is inside read() or write()):
        it must not then wait for another thread that needs the index (a deadlock)."""
        # (What threading.Condition asks an RLock; write_open misses a read() held around.)
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    @property
    def closed(self) -> bool:
        """True after close() (also while a close waits for the open transaction to end)."""
        return self._conn is None or self._close_pending

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once what the calling thread has written is committed.

        With a write transaction open on this thread (at any depth), the callback is queued and
        runs on this thread after the outermost COMMIT, once the lock is released (unless the
        thread held it before the transaction); it is dropped if the transaction, or the
        savepoint it was queued in, rolls back. With none open it runs at once. For change
        events: a subscriber must never hear of a change other connections cannot see yet,
        or that is then rolled back, nor run while this thread holds the index lock.
        """
        # _owner is only ever set to this thread's id by this thread, so an unlocked read is
        # exact for the question asked (another thread's transaction does not hold this one).
        if self._owner == threading.get_ident() and self._deferred:
            self._deferred[-1].append(callback)
            return
        callback()

    def undo_on_rollback(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` if the calling thread's open write transaction rolls back.

        For a component that changed files in a write that has committed or released: with no
        enclosing transaction on this thread it committed, and the callback is dropped. Inside
        one (a save run by the sync engine's transaction is a savepoint), the callback is queued
        at the enclosing level and runs if that level, or one around it, rolls back; it is
        dropped when the outermost commits. Callbacks run newest first, on this thread, under
        the index lock and before the ROLLBACK itself: the files are put back while this
        process still holds the write lock (no other process sees them disagree with the
        index), and the undo can still read what the transaction wrote. So a callback may read
        the index and touch files, but must not write the index. One that raises is logged and
        the others still run (the rollback goes ahead: reconcile heals what is left).
        """
        if self._owner == threading.get_ident() and self._undo:
            self._undo[-1].append(callback)

    def on_commit(self, callback: Any) -> None:
        """Call ``callback()`` after every outermost write commit (used by the maintainer)."""
        self._commit_listeners.append(callback)

    def on_rollback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every rollback, of a transaction or of a savepoint.

        For a component that caches what it writes (the app-data hot tier): its write can be
        released into a caller's enclosing transaction that is then rolled back. The callback
        runs under the index lock, so it must only note the fact (no locks, no I/O).
        """
        self._rollback_listeners.append(callback)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, on the closing thread, after the connection is closed.

        For a component with a thread on this index (the app-data purger): without it, the
        thread slept on after the store closed until its next round found the index closed.
        Called with the index's lock released, except for a close deferred into a transaction
        of the closing thread (called when it ends, under the lock: a callback must then not
        wait for another thread that needs the index; ``lock_held`` tells). One that raises is
        logged and the others still run.
        """
        self._close_listeners.append(callback)

    def remove_close_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback`` (registered with :meth:`on_close`); absent is fine.
        Takes no lock, as :meth:`remove_rollback_listener`."""
        with contextlib.suppress(ValueError):
            self._close_listeners.remove(callback)

    def _tell_closed(self) -> None:
        listeners, self._close_listeners = self._close_listeners, []
        for cb in listeners:
            try:
                cb()
            except Exception:  # closing goes on; the component logs why
                log.exception("index close listener %r failed", cb)

    def remove_rollback_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback`` (registered with :meth:`on_rollback`); absent is fine.

        Takes no lock, so a weakref finalizer (run by the garbage collector in whatever thread,
        whatever locks it holds) may call it: list.remove is atomic, and a rollback walks a copy.
        """
        try:
            self._rollback_listeners.remove(callback)
        except ValueError:
            pass

    # -- transactions --------------------------------------------------------------------------------

    # Cursors are handed out as Any: apsw's stubs type every row value as a wide union, and every
    # caller converts the values it reads explicitly anyway.
    @contextmanager
    def read(self) -> Iterator[Any]:
        """A cursor for reads, under the lock."""
        self.check_process()  # (before the lock: a parent thread may hold the child's copy)
        with self._lock:
            cur = self.conn.cursor()
            try:
                yield cur
            except apsw.Error as exc:
                note_os_error(self.conn, exc)
                raise map_apsw_error(exc, "read the index") from exc
            finally:
                cur.close()

    @contextmanager
    def write(self, outcome: WriteOutcome | None = None) -> Iterator[Any]:
        """A write transaction: BEGIN IMMEDIATE at the outermost level, SAVEPOINTs inside.

        Rolls back on any exception from the body. One that comes after the body returned
        (KeyboardInterrupt, SystemExit, or one raised by a commit listener or an after-commit
        callback) may find the outermost COMMIT done: it still propagates, and ``outcome``
        tells whether the write stands (see WriteOutcome). Raises IndexStoreError (busy past
        the timeout, corrupt) and the mapped storage errors. When SQLite rolls the whole
        transaction back by itself (after SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM,
        SQLITE_INTERRUPT inside it), every level still open fails, whatever its body caught: an inner level and any write statement with an
        IndexStoreError (``_WriteLost``), the outermost with the error that did it (mapped, e.g.
        DiskFullError); nothing of the transaction is committed.
        """
        self.check_process()
        if self.read_only is not None:
            raise self.read_only_error()
        # (The after-commit callbacks of the outermost level's COMMIT and the interrupt that came
        # right after it, set once it is done.)
        ended: list[Any] = []
        try:
            with self._lock:
                conn = self.conn
                cur = conn.cursor()
                outer = self._depth == 0
                name = f"sp{self._depth}"
                level = self._open_level(conn, cur, outer, name)
                try:
                    yield cur
                except BaseException as exc:
                    self._depth -= 1
                    self._deferred.pop()  # what this level queued never happened
                    undo = self._undo.pop()
                    note_os_error(conn, exc)
                    lost = self._note_lost(conn, exc)
                    cause: BaseException | None = self._lost_cause or exc
                    self._rollback(cur, outer, name, undo)
                    self._end(outer)  # (the outermost forgets the loss: captured above)
                    if lost and isinstance(exc, Exception):  # (not KeyboardInterrupt and the like)
                        self._raise_lost(outer, cause)
                    raise
                if not outer:
                    self._release(conn, cur, name, level, outcome)
                    return
                ended[:] = self._commit(conn, cur, outcome)  # (one store: set or not at all)
        finally:
            # In a finally, not on the next line: an interrupt (a signal's KeyboardInterrupt)
            # right after the lock's release skipped them, and a committed write's kept files
            # stayed in the folder, its events never came.
            if ended:
                self._after_outer_commit(*ended)

    def _open_level(self, conn: apsw.Connection, cur: apsw.Cursor, outer: bool, name: str) -> int:
        """Begin the outermost level (BEGIN IMMEDIATE) or a SAVEPOINT (under the lock); return
        the level's place in _deferred and _undo."""
        if not outer and self._lost:
            raise _WriteLost(self._lost_cause) from self._lost_cause
        try:
            if outer:
                self._begin_immediate(cur)
                self.write_serial += 1
                # The versions are read only when another connection committed since they
                # were last found fine (an upgrade is such a commit): one pragma per write,
                # no page read, as the core check alone cost before.
                seen = int(str(cur.execute("PRAGMA data_version").fetchall()[0][0]))
                newer = None if seen == self._versions_checked_at else self._newer_in(cur)
            else:
                cur.execute(f"SAVEPOINT {name}")
        except apsw.Error as exc:
            note_os_error(conn, exc)
            if not outer and self._note_lost(conn, exc):
                self._raise_lost(outer, self._lost_cause)
            raise map_apsw_error(exc, "start a write") from exc
        if outer and newer is not None:
            # A newer localstore upgraded the index (the core, or the tables of a component
            # this connection uses: sync's, app data's) since this one opened it (the app
            # updated while the daemon ran): its rows may mean what this code does not
            # write (the bump is what keeps an older version out at open), so no write,
            # as at open.
            cur.execute("ROLLBACK")
            # Kept: a long-running owner (the daemon's tick) stops on it, whichever of its
            # threads met it first (docs/daemon.md, "A newer localstore upgraded the home").
            self.newer = newer
            raise self.newer
        if outer:
            self._versions_checked_at = seen
        self._depth += 1
        if outer:
            self._owner = threading.get_ident()
            self._rolled_back = False
        self._deferred.append([])
        self._undo.append([])
        return self._depth - 1

    def _commit(
        self, conn: apsw.Connection, cur: apsw.Cursor, outcome: WriteOutcome | None
    ) -> tuple[list[Callable[[], None]], BaseException | None]:
        """Commit the outermost level whose body returned (under the lock); return its
        after-commit callbacks and the interrupt that came once its COMMIT was done, if any.

        Raises (after the rollback) when it did not commit."""
        queued, undo = self._deferred[0], self._undo[0]
        counted = self._blueprints_touched
        try:
            self._depth = 0
            if self._note_lost(conn, None):
                # The body caught the error that rolled the transaction back and went on: what
                # it did since then was refused (see _mark_lost), so this level did not happen.
                cause = self._lost_cause
                self._rollback(cur, True, "sp0", undo)
                self._end(True)
                self._raise_lost(True, cause)
            self._commit_statement(conn, cur, counted, undo)
            if self._after_commit_statement is not None:
                self._after_commit_statement()
            self._note_commit(counted, outcome)
            self._end(True)
        except BaseException as exc:
            # Ended above (rolled back, or committed and noted) unless _owner is still set: then
            # it came between COMMIT and _end (a signal, a test hook), or before the COMMIT.
            if self._owner is None or not self._end_interrupted(conn, cur, counted, outcome):
                raise
            return queued, exc
        return queued, None

    def _commit_statement(
        self,
        conn: apsw.Connection,
        cur: apsw.Cursor,
        counted: bool,
        undo: Sequence[Callable[[], None]],
    ) -> None:
        """Log the change, note this commit's own op_id range (if asked for), then COMMIT."""
        try:
            if counted:
                cur.execute(_COUNT_BLUEPRINT_COMMIT)
                gen = int(str(cur.execute(BLUEPRINTS_GEN).fetchall()[0][0]))
                # (A rolled-back savepoint's rows are listed too: read again, unchanged.)
                cur.executemany(_LOG_CHANGE, [(gen, r) for r in self._txn_rids or (-1,)])
            if self._first_op is not None and self._own_ops is not None:
                last = cur.execute(_LAST_OP).fetchall()[0][0]
                # Kept where _end_interrupted finds it too: an interrupt right after the COMMIT
                # otherwise lost the range, and the follower published this connection's own
                # revisions as another process's (process="other").
                self._commit_ops = (self._first_op, int(str(last)))
            cur.execute("COMMIT")
        except apsw.Error as exc:
            note_os_error(conn, exc)
            self._rollback(cur, True, "sp0", undo)
            self._end(True)
            raise map_apsw_error(exc, "commit to the index") from exc

    def _note_commit(self, counted: bool, outcome: WriteOutcome | None) -> None:
        """Bookkeeping of a done COMMIT (under the lock). Done twice by an interrupt right after
        it (see _end_interrupted): a listing then reads again, never misses a change."""
        if outcome is not None:
            outcome.done = True
        if counted:
            self.blueprint_commits += 1
        own_ops = self._commit_ops
        if own_ops is not None and self._own_ops is not None and own_ops[0] <= own_ops[1]:
            ranges = self._own_ops
            if ranges and ranges[-1][1] >= own_ops[1]:
                return  # (noted already: this is the second time)
            if ranges and ranges[-1][1] + 1 == own_ops[0]:
                ranges[-1] = (ranges[-1][0], own_ops[1])  # (no other commit between)
            else:
                ranges.append(own_ops)

    def _end_interrupted(
        self,
        conn: apsw.Connection,
        cur: apsw.Cursor,
        counted: bool,
        outcome: WriteOutcome | None,
    ) -> bool:
        """End the outermost level an exception left before its _end; True if it committed.

        Asks the connection, not a flag set after the COMMIT (the exception may have come
        between the statement's return and any next line): back in autocommit mode with no
        rollback seen, the COMMIT was done. Then the write stands and its caller must not undo
        its files (they are what the index now holds). Otherwise it is rolled back here."""
        self._depth = 0
        try:
            if conn.getautocommit() and not self._rolled_back:
                self._note_commit(counted, outcome)
                return True
            self._rollback(cur, True, "sp0", self._undo[0] if self._undo else ())
            return False
        finally:
            self._end(True)

    def _release(
        self,
        conn: apsw.Connection,
        cur: apsw.Cursor,
        name: str,
        level: int,
        outcome: WriteOutcome | None,
    ) -> None:
        """Release an inner level whose body returned into the enclosing one (under the lock).

        Raises (after rolling it back) when SQLite had rolled the transaction back or the
        RELEASE failed. An exception that comes while the level is neither merged nor rolled
        back hands it to the enclosing level whole and makes that one unable to commit: it
        cannot tell whether the RELEASE was done, and its files must agree with the index."""
        queued, undo = self._deferred[level], self._undo[level]
        try:
            if self._note_lost(conn, None):
                self._drop_level(level)
                cause = self._lost_cause
                self._rollback(cur, False, name, undo)
                self._raise_lost(False, cause)
            try:
                cur.execute(f"RELEASE {name}")
            except apsw.Error as exc:
                self._drop_level(level)
                note_os_error(conn, exc)
                lost = self._note_lost(conn, exc)
                self._rollback(cur, False, name, undo)
                if lost:
                    self._raise_lost(False, self._lost_cause)
                raise map_apsw_error(exc, "commit to the index") from exc
            if outcome is not None:
                outcome.done = True
            # Released into the enclosing level: it commits or rolls back with it. Each list
            # merged by one assignment, undo last: an interrupt finds it merged or not at all.
            self._deferred[level - 1 :] = [self._deferred[level - 1] + queued]
            self._undo[level - 1 :] = [self._undo[level - 1] + undo]
            self._depth = level
        except BaseException as exc:
            if len(self._undo) > level:  # neither merged nor rolled back (see above)
                self._hand_over(level, exc, outcome)
            raise

    def _drop_level(self, level: int) -> None:
        """Forget an inner level that is rolled back (its callbacks are the caller's now)."""
        del self._deferred[level:]
        del self._undo[level:]
        self._depth = level

    def _hand_over(self, level: int, exc: BaseException, outcome: WriteOutcome | None) -> None:
        """Give an interrupted inner level to the enclosing one, which then rolls back whole."""
        self._undo[level - 1 :] = [self._undo[level - 1] + self._undo[level]]
        del self._deferred[level:]  # (never published: the enclosing level will roll back)
        self._depth = level
        if outcome is not None:
            outcome.done = True  # (its caller's undo then joins the enclosing level's)
        self._mark_lost()
        if self._lost_cause is None:
            self._lost_cause = exc

    def _after_outer_commit(
        self, queued: Sequence[Callable[[], None]], interrupted: BaseException | None
    ) -> None:
        """Tell the commit listeners, then run the after-commit callbacks (lock released).

        All of them run whatever one raises, even KeyboardInterrupt: the write is committed,
        and its events, its kept files' removal, the maintainer's nudge belong to it. The
        first BaseException (``interrupted`` first) is raised once they ran; an Exception of
        an after-commit callback is only logged (it must not make the write look failed)."""
        self._commits += 1
        told = call_each(tuple(self._commit_listeners), logged=None)
        ran = call_each(queued, logged=(log, "after-commit callback %r failed"))
        for exc in (interrupted, told, ran):
            if exc is not None:
                raise exc

    # -- a transaction SQLite rolled back by itself ----------------------------------------------

    def _on_row_change(self, _op: int, _db: str, table: str, rowid: int) -> None:
        """The connection's update hook: note a blueprint row this connection changed.

        Not a trigger: a statement that fires triggers runs in a statement transaction, and
        FTS5 answers each one by flushing its pending terms to disk (a save's INSERT into
        blueprints went from 21 to 179 us, and every save left a tiny segment to merge). A
        Python call per changed row of any table costs about 1 % of a save instead.
        """
        if table == "blueprints":
            self._blueprints_touched = True
            txn = self._txn_rids
            if txn is not None:
                txn.add(rowid)
                if len(txn) > CHANGED_ROWS_KEPT:
                    self._txn_rids = None
            changed = self._changed_rids
            if self._track_rids and changed is not None:
                changed.add(rowid)
                if len(changed) > CHANGED_ROWS_KEPT:
                    self._changed_rids = None

    def blueprint_changes(self) -> set[int] | None:
        """The rowids of the blueprint rows this connection changed since the last call (some
        perhaps rolled back: read them again), or None if more than CHANGED_ROWS_KEPT changed.

        The first call only starts the noting (a process that never asks keeps nothing). Under
        the lock, outside a write transaction.
        """
        changed, self._changed_rids = self._changed_rids, set()
        self._track_rids = True
        return changed

    def _on_sqlite_rollback(self) -> None:
        """The connection's rollback hook: SQLite ends a transaction with a rollback.

        Ours (the outermost level's ROLLBACK, a failed COMMIT) run with ``_depth`` 0. Inside an
        open write it is SQLite's own response to an error (lang_transaction.html, "Response To
        Errors Within A Transaction"): from here on the connection is in autocommit mode, so
        every statement the write's code runs next would commit on its own, and a SAVEPOINT
        would open a new transaction that its RELEASE commits. Refused at once, before any
        level sees the error, since a caller's per-item handler may catch it and go on.
        """
        self._rolled_back = True
        if self._depth > 0:
            self._mark_lost()

    def _note_lost(self, conn: apsw.Connection, exc: BaseException | None) -> bool:
        """True if the open transaction is gone; notes ``exc`` as its cause (the first seen)."""
        if not self._lost and not conn.getautocommit():
            return False
        self._mark_lost()
        if self._lost_cause is None and exc is not None and not isinstance(exc, _WriteLost):
            self._lost_cause = exc
        return True

    def _mark_lost(self) -> None:
        if not self._lost:
            self._lost = True
            # Checked per statement only from now until the outermost level ends: a hook on
            # every statement of every write would cost each one a Python call.
            self.conn.exec_trace = self._refuse_after_loss

    def _refuse_after_loss(self, cur: apsw.Cursor, sql: str, bindings: Any) -> bool:
        """Exec tracer while a lost write is still open: reads go on (an undo path reads the
        committed revision it puts back), anything that writes or opens a transaction fails."""
        if cur.is_readonly and not sql.lstrip()[:9].upper().startswith(("SAVEPOINT", "BEGIN")):
            return True
        raise _WriteLost(self._lost_cause)

    @staticmethod
    def _raise_lost(outer: bool, cause: BaseException | None) -> NoReturn:
        """Fail a level of a lost write: an inner one with _WriteLost, which no per-item handler
        takes for one item's failure; the outermost with the error that lost it, typed."""
        if isinstance(cause, _WriteLost):
            raise cause  # (a body that caught a level's _WriteLost and went on, then raised it)
        if not outer:
            raise _WriteLost(cause) from cause
        if isinstance(cause, apsw.Error):
            raise map_apsw_error(cause, "write to the index") from cause
        if isinstance(cause, StorageError) and not isinstance(cause, _WriteLost):
            raise cause  # (mapped where it happened; its own cause kept)
        raise _WriteLost(cause) from cause

    def _end(self, outer: bool) -> None:
        """Bookkeeping when a level ends (under the lock): the outermost frees the connection
        for a close() that came from inside it."""
        if not outer:
            return
        self._owner = None
        self._blueprints_touched = False
        self._txn_rids = set()
        self._first_op = None
        self._commit_ops = None
        self._deferred.clear()
        self._undo.clear()
        if self._lost:
            self._lost = False
            self._lost_cause = None
            if self._conn is not None:
                self._conn.exec_trace = None
        if self._close_pending:
            self._close_now()
            self._tell_closed()

    def _begin_immediate(self, cur: apsw.Cursor) -> None:
        # Waits for another process's write lock with this index's lock RELEASED: SQLite's busy
        # handler would sleep up to busy_timeout_ms holding it, and every read of this process
        # (a status request, the daemon's tick, close() at shutdown) queued behind a lock that
        # it does not need. So BEGIN IMMEDIATE runs with no busy timeout and the waiting is done
        # here, same overall timeout and same error when it expires. (Under an enclosing read()
        # of the same thread the release only lowers the count: that thread waits holding the
        # lock, as before.) Reads keep the busy timeout: they never wait for a writer in WAL.
        begin_taking_turns(
            cur,
            self._turn,
            self.busy_timeout_ms,
            wait=self._wait_unlocked,
            interrupted=lambda: self._no_lock_waits,
        )

    def _wait_unlocked(self, seconds: float) -> None:
        """Sleep with this index's lock released; raise if the index was closed meanwhile."""
        self._lock.release()
        try:
            time.sleep(seconds)
        finally:
            self._lock.acquire()
        # Any other thread's transaction ended before the lock came back (each holds it
        # throughout), so this is still the outermost level; but the index may be closed.
        if self._conn is None:
            raise StoreClosedError(
                "the index was closed while a write waited for it",
                hint="open the store again",
            )

    def interrupt_lock_waits(self) -> None:
        """Make writes give up at once on another process's write lock, from now on.

        For a shutdown: the threads it joins (watcher, sync) must not wait out the busy timeout
        (30 s) for a lock another process holds. Such a write fails as if the timeout had
        expired (IndexStoreError); one that finds the lock free goes ahead as usual.
        """
        self._no_lock_waits = True

    def _rollback(
        self, cur: apsw.Cursor, outer: bool, name: str, undo: Sequence[Callable[[], None]] = ()
    ) -> None:
        try:
            self._run_undo(undo)
        finally:  # (an interrupt in an undo: the rollback must still happen, and the others)
            self._rollback_statements(cur, outer, name)

    @staticmethod
    def _run_undo(undo: Sequence[Callable[[], None]]) -> None:
        """Run the undo callbacks, newest first (see undo_on_rollback: before the ROLLBACK)."""
        # (An Exception only logged: the rollback must happen; reconcile records what is left.)
        exc = call_each(reversed(undo), logged=(log, "undo callback %r failed during a rollback"))
        if exc is not None:
            raise exc

    def _rollback_statements(self, cur: apsw.Cursor, outer: bool, name: str) -> None:
        try:
            if outer:
                if not self.conn.getautocommit():
                    cur.execute("ROLLBACK")
            elif not self._lost:  # (lost: SQLite rolled it all back, its savepoints with it)
                cur.execute(f"ROLLBACK TO {name}")
                cur.execute(f"RELEASE {name}")
        except apsw.Error:  # the transaction is already gone (SQLite rolled it back itself)
            pass
        for cb in tuple(self._rollback_listeners):  # (see remove_rollback_listener)
            cb()

    # -- schema ------------------------------------------------------------------------------------

    def register_schema(self, component: str, migrations: Sequence[Migration]) -> None:
        """Bring one component's tables to the newest version (idempotent, multi-process safe).

        ``migrations[i]`` is the SQL (or the function of the cursor) that takes the component from
        version i to i+1.
        """
        version = self._schema_version(component)
        if version is not None and version > len(migrations):
            # Refused on a read, before any write lock: nothing of a newer version's index is
            # changed, and a newer process holding the lock does not make this a 30 s wait.
            raise self._newer_error(component, version, len(migrations))
        # (Only a component in use: a newer version's archive tables refused above leave the
        # rest of the home usable, as at open.)
        with self._lock:  # (newer_version() compares and notes under it)
            self._known_versions[component] = len(migrations)
            self._versions_checked_at = None  # (one more component to compare)
        if version == len(migrations) and not (component == "core" and self._core_v1_is_old()):
            # Up to date, the common case: no write transaction. Taking one cost every
            # `localstore status` a wait for the write lock while another process held it, and
            # failed on an index this user may read but not write.
            return
        if self.read_only is not None:
            raise self._read_only_schema_error(component, version or 0, len(migrations))
        try:
            self._migrate(component, migrations)
        except apsw.Error as exc:
            # Not inside write(), which leaves errors of its body to the caller: a read-only
            # index.db reached `localstore status` as a raw apsw.ReadOnlyError traceback.
            raise map_apsw_error(exc, f"update the {component} tables of {self.path}") from exc

    def read_only_error(self, action: str = "write to the index") -> ReadOnlyStoreError:
        """The refusal of a write to this read-only index, naming why it is read-only."""
        return ReadOnlyStoreError(
            f"cannot {action}: this store is open read-only ({self.read_only})",
            hint="open the home without read_only where it may be written (copy a snapshot "
            "to a writable folder first); 'localstore export' copies blueprints out",
        )

    def _read_only_schema_error(self, component: str, version: int, known: int) -> LocalStoreError:
        """Why a read-only index cannot be used for a component whose tables are missing or
        older than this version's (it cannot create or update them)."""
        if version == 0:
            return self.read_only_error(
                f"create the {component} tables (this home has never had them)"
            )
        return IndexStoreError(
            f"the {component} tables of {self.path} were made by an older localstore "
            f"(v{version}; this version reads v{known}) and a read-only open cannot update them",
            hint="copy the home to a folder you may write and open the copy once (that updates "
            "its index), or read it with the localstore version that made it",
        )

    def _check_schema_read_only(self) -> None:
        """Refuse an index whose core tables this version cannot read as they are.

        A read-only open cannot migrate: an older localstore's index (a backup made before an
        upgrade) is read as it is when every step it lacks only adds indexes (CORE_READ_WITHOUT),
        else refused with what to do, never read with queries its tables do not fit.
        """
        version = self._schema_version("core") or 0
        known = len(CORE_MIGRATIONS)
        if version > known:
            raise self._newer_error("core", version, known)
        oldest = oldest_core_read_as_is()
        if version < oldest or self._core_v1_is_old():
            read = f"v{known}" if oldest == known else f"v{oldest} to v{known}"
            raise IndexStoreError(
                f"the index {self.path} was made by an older localstore (core schema "
                f"v{version}; this version reads {read}) and a read-only open cannot update it",
                hint="copy the home to a folder you may write and open the copy once (that "
                "updates its index), or read it with the localstore version that made it",
            )

    def schema_version(self, component: str, migrations: Sequence[Migration]) -> int:
        """The component's schema version in this index (0: none of its tables yet), read only.

        For a caller that only reads the component's tables (a dry run) and must not create
        them: register_schema would. Raises NewerIndexError when a newer version wrote them.
        """
        version = self._schema_version(component)
        if version is not None and version > len(migrations):
            raise self._newer_error(component, version, len(migrations))
        return version or 0

    def newer_version(self) -> NewerIndexError | None:
        """The refusal a write would meet because a newer localstore upgraded the index since
        this connection opened it (any component it brought up to date), or None.

        For a process that runs for days (the daemon's tick, twice a second; an app's sync,
        every 2 s): it stops serving the home then, instead of having each write refused. The
        versions are read only after another connection committed (``PRAGMA data_version``
        moved: an upgrade is such a commit); otherwise this is that one pragma, no file I/O. An
        idle daemon read them at every tick: two statements more per tick, three times the
        SQL of its idle tick before it checked (bench/idle_daemon.py).
        """
        if self.newer is not None:
            return self.newer
        with self.read() as cur:  # (holds the lock throughout: see register_schema)
            # Read before the versions: a commit after this read moves it again, so the next
            # call reads them.
            seen = int(str(cur.execute("PRAGMA data_version").fetchall()[0][0]))
            if seen == self._versions_checked_at:
                return None
            newer = self._newer_in(cur)
            if newer is None:
                self._versions_checked_at = seen
        return newer

    def _newer_in(self, cur: Any) -> NewerIndexError | None:
        """The refusal for the core, or a component this connection brought up to date, whose
        version in the index is above what this code knows (read with ``cur``); else None."""
        core = int(str(cur.execute("PRAGMA user_version").fetchall()[0][0]))
        versions = {"core": core}
        if self._known_versions.keys() - {"core"}:
            # (The table is there: the core's registration made it, before any other's.)
            rows = cur.execute("SELECT component, version FROM component_versions").fetchall()
            versions.update((str(c), int(str(v))) for c, v in rows)
            versions["core"] = max(core, versions["core"])
        known = {"core": len(CORE_MIGRATIONS), **self._known_versions}
        for component in sorted(known, key=lambda c: (c != "core", c)):  # (the core first)
            if versions.get(component, 0) > known[component]:
                return self._newer_error(component, versions[component], known[component])
        return None

    def _newer_error(self, component: str, version: int, known: int) -> NewerIndexError:
        return NewerIndexError(
            f"the index {self.path} was written by a newer localstore ({component} schema "
            f"v{version}; this version knows up to v{known}); it was left unchanged",
            hint="upgrade localstore to open this home",
        )

    def _schema_version(self, component: str) -> int | None:
        """The component's recorded schema version, or None when none is recorded yet.

        For the core, the higher of that and ``PRAGMA user_version`` (which mirrors it): a newer
        version that raised only the pragma is still newer."""
        with self.read() as cur:
            if component == "core":
                pragma = int(cur.execute("PRAGMA user_version").fetchall()[0][0])
                if pragma > len(CORE_MIGRATIONS):
                    return pragma
            if not cur.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'component_versions'"
            ).fetchall():
                return None
            row = cur.execute(
                "SELECT version FROM component_versions WHERE component = ?", (component,)
            ).fetchall()
        return int(row[0][0]) if row else None

    def _core_v1_is_old(self) -> bool:
        with self.read() as cur:
            return bool(_old_v1_pieces(cur))

    def _migrate(self, component: str, migrations: Sequence[Migration]) -> None:
        with self.write() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS component_versions ("
                " component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"
            )
            row = cur.execute(
                "SELECT version FROM component_versions WHERE component = ?", (component,)
            ).fetchall()
            current = int(row[0][0]) if row else 0
            if current > len(migrations):  # (another process made it newer meanwhile)
                raise self._newer_error(component, current, len(migrations))
            if component == "core" and current >= 1:
                _reshape_core_v1(cur, _old_v1_pieces(cur))
            for version in range(current, len(migrations)):
                step = migrations[version]
                if not isinstance(step, str):
                    step(cur)
                    continue
                adds = _ADDS_COLUMN.get(step)
                if adds is not None and _has_column(cur, "blueprints", adds):
                    continue  # (ADD COLUMN has no IF NOT EXISTS)
                cur.execute(step)
            if current != len(migrations):
                cur.execute(
                    "INSERT INTO component_versions VALUES (?, ?) ON CONFLICT(component) "
                    "DO UPDATE SET version = excluded.version",
                    (component, len(migrations)),
                )
                if component == "core":
                    cur.execute(f"PRAGMA user_version = {len(migrations)}")

    # -- small helpers -----------------------------------------------------------------------------

    def next_op_id(self, cur: Any) -> int:
        """Draw the next change number (inside a write transaction)."""
        # Two statements, not UPDATE ... RETURNING: inside a transaction that already wrote,
        # RETURNING cost 20-100 us against 5 (it opens a statement journal).
        cur.execute("UPDATE counters SET value = value + 1 WHERE name = 'op_id'")
        row = cur.execute(_LAST_OP).fetchall()
        op = int(row[0][0])
        if self._first_op is None:
            self._first_op = op
        return op

    def own_ops(self) -> list[tuple[int, int]]:
        """The op_ids this connection committed since the last call, as ranges (first, last).

        The first call only starts the noting (a process that never asks keeps nothing). Call it
        under the lock (``read()``): no commit of this connection can land in between, so with
        a read transaction around it, the rows read and the ranges agree.
        """
        ranges = self._own_ops or []
        self._own_ops = []
        return ranges

    def raise_op_counter(self, cur: Any, at_least: int) -> None:
        """Make every later op id greater than ``at_least`` (inside a write transaction).

        The sync engine calls it when the server says this device already used op ids up to
        ``at_least`` (an index restored from a backup rolled the counter back).
        """
        cur.execute(
            "UPDATE counters SET value = max(value, ?) WHERE name = 'op_id'", (int(at_least),)
        )

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        """Read one value from the settings table."""
        with self.read() as cur:
            rows = cur.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchall()
        return str(rows[0][0]) if rows else default

    def set_setting(self, key: str, value: str) -> None:
        """Write one value to the settings table."""
        with self.write() as cur:
            cur.execute(
                "INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                "excluded.value",
                (key, value),
            )

    def quick_check(self) -> None:
        """Raise the damaged-index error when SQLite's quick check finds damaged pages."""
        try:
            problems = self.pragma_check("quick_check")
        except apsw.Error as exc:
            raise map_apsw_error(exc, f"check {self.path}") from exc
        if problems:
            cause = apsw.CorruptError("; ".join(problems[:3]))
            raise map_apsw_error(cause, f"check {self.path}") from cause

    def pragma_check(self, pragma: Literal["quick_check", "integrity_check"]) -> list[str]:
        """What SQLite's ``PRAGMA quick_check`` or ``integrity_check`` finds; [] when healthy.

        FTS5 keeps each full-text table's list of segments cached on the connection, and reads
        it again only when a statement opens a cursor on the table after another connection
        committed. The pragmas call FTS5's own check without that step (SQLite 3.54): on a
        connection that last read the search tables before another connection merged them (this
        process's maintainer, another process's), the check read segments the merge had deleted
        and reported "fts5: corruption found reading blob" on a healthy index; at open, that
        would have set a healthy index aside and lost its history. So a cursor is opened on each
        first, in the read transaction the pragma then runs in.
        """
        with self.read() as cur:
            cur.execute("SAVEPOINT pragma_check")
            try:
                for table in FTS_TABLES:
                    cur.execute(f"SELECT 1 FROM {table} WHERE rowid = 0").fetchall()
                rows = cur.execute(f"PRAGMA {pragma}").fetchall()
            finally:
                # (An I/O error may have rolled the transaction back already.)
                if cur.connection.in_transaction:
                    cur.execute("RELEASE pragma_check")
        return [str(r[0]) for r in rows if str(r[0]) != "ok"]

    def integrity_check(self) -> list[str]:
        """SQLite's integrity check; an empty list means healthy."""
        problems = self.pragma_check("integrity_check")
        if self.read_only is not None:
            # FTS5's full check is an INSERT, which a read-only connection refuses (check failed
            # with "cannot write the index" on a snapshot). The pragma above checks the search
            # tables' own structure, not their agreement with the text (docs/architecture.md,
            # "Read-only homes"); a writable copy's 'check' does that.
            return problems
        # The search indexes against the text they were built from (external content: a save
        # removes an entry by giving back the values it indexed, so drift would show here).
        problems += [f"search index ({t}): {why}" for t, why in self.search_index_problems()]
        return problems

    def search_index_problems(self) -> list[tuple[str, str]]:
        """(table, FTS5's complaint) for each full-text table that fails its integrity check."""
        out = []
        with self.read() as cur:
            for table in FTS_TABLES:
                try:
                    cur.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")
                except _NOT_DAMAGE as exc:
                    # The check is an INSERT: on an index this user cannot write (or that another
                    # process holds) it fails without saying anything about the table, and was
                    # reported as damage with 'check --fix' as the cure.
                    raise map_apsw_error(exc, f"check the search index {table}") from exc
                except apsw.Error as exc:
                    out.append((table, str(exc)))
        return out

    def page_usage(self) -> dict[str, int]:
        """The index file's pages, free pages, page size and auto_vacuum mode (page_usage())."""
        with self.read() as cur:
            return page_usage(cur.connection)

    def vacuum(self) -> int:
        """Rewrite the index in incremental auto_vacuum mode, giving every free page back to
        the filesystem; returns the bytes given back. For an index made before new ones got that
        mode (SQLite changes it only by a VACUUM): afterwards the maintainer gives free pages
        back as they accumulate. A whole rewrite: it holds the write lock for about a second per
        60 MB of index and needs that much free space again. Raises IndexStoreError (inside a
        transaction, busy past the timeout) and DiskFullError."""
        with self.read() as cur:
            if self._depth > 0:
                raise IndexStoreError(
                    "cannot vacuum the index inside a write transaction",
                    hint="call vacuum() after the transaction ends",
                )
            conn = cur.connection
            before = page_usage(conn)
            cur.execute("PRAGMA auto_vacuum=INCREMENTAL").fetchall()
            try:
                cur.execute("VACUUM").fetchall()
            except apsw.Error as exc:
                # Out of space half-way, the pages the rewrite had written stay in the WAL (a
                # rollback does not shorten it) and the disk stayed full, for this process's
                # next save and every other program, until some checkpoint reset the WAL.
                self._truncate_wal(cur)
                note_os_error(conn, exc)
                raise map_apsw_error(exc, "rewrite the index (VACUUM)") from exc
            # The rewrite went through the WAL: copy it back now, and cut the WAL, if nobody
            # reads (otherwise the maintainer's next idle round does).
            self._truncate_wal(cur)
            after = page_usage(conn)
        return max(0, before["pages"] - after["pages"]) * after["page_size"]

    def _truncate_wal(self, cur: apsw.Cursor) -> None:
        """Checkpoint and cut the WAL to nothing if no reader is in the way (never waits)."""
        truncate_wal_now(cur.connection, self.busy_timeout_ms)

    def rebuild_search_indexes(self) -> list[str]:
        """Rebuild every full-text table that fails its check from the text it indexes (derived
        data: nothing is lost); returns the tables rebuilt."""
        broken = [table for table, _ in self.search_index_problems()]
        if broken:
            with self.write() as cur:
                # What the view gives depends on the plain-rows list: made again from the text
                # first, so a list that had gone wrong is not rebuilt into the index.
                cur.execute("DELETE FROM fts_plain")
                cur.execute(f"INSERT INTO fts_plain {_PLAIN_ROWS}")
        for table in broken:
            with self.write() as cur:
                cur.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")
        return broken


def begin_taking_turns(
    cur: apsw.Cursor,
    turn: WriteTurn | None,
    busy_timeout_ms: int,
    *,
    wait: Callable[[float], None] = time.sleep,
    interrupted: Callable[[], bool] = lambda: False,
) -> None:
    """``BEGIN IMMEDIATE`` on ``cur``'s connection, taking turns with the other writers of the
    home (_write_turn): give way first to one that waits, and announce this one while waiting.

    ``wait(seconds)`` sleeps between polls (Index: with its lock released); ``interrupted()``
    makes a busy lock fail at once (a shutdown). Raises apsw.BusyError once ``busy_timeout_ms``
    has passed; the connection's busy timeout is ``busy_timeout_ms`` again afterwards.

    Without turns a process saving back to back took the lock again microseconds after each
    commit, and a waiter polling for it rarely found it free (seconds of waiting; past a short
    busy timeout, failures). Index.write() and the Maintainer's writes both begin here: the
    maintainer waited with SQLite's busy handler, never announcing, so a stream of saves kept
    its compaction and search-index merges out for as long as it lasted.
    """
    conn = cur.connection
    deadline = time.monotonic() + busy_timeout_ms / 1000
    if turn is not None and not interrupted() and turn.other_waiting():
        _give_way(turn, deadline, wait, interrupted)
    delay = 0.001 if turn is None else TURN_POLL_S / 4
    cap = 0.05 if turn is None else TURN_POLL_S
    announced = False
    try:
        while True:
            conn.setbusytimeout(0)
            try:
                cur.execute("BEGIN IMMEDIATE")
                return
            except apsw.BusyError:
                if interrupted() or time.monotonic() >= deadline:
                    raise
            finally:
                conn.setbusytimeout(busy_timeout_ms)
            if turn is not None:
                turn.announce()
                announced = True
            wait(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, cap)
    finally:
        if announced and turn is not None:
            turn.withdraw()  # (a no-op once the turn is closed)


def _give_way(
    turn: WriteTurn,
    deadline: float,
    wait: Callable[[float], None],
    interrupted: Callable[[], bool],
) -> None:
    """Leave the write lock to another connection that waits for it: wait until that one has
    it, stops polling, or GIVE_WAY_MAX_S have passed."""
    until = min(deadline, time.monotonic() + GIVE_WAY_MAX_S)
    while not interrupted() and turn.other_waiting():
        left = until - time.monotonic()
        if left <= 0:
            return
        wait(min(TURN_POLL_S / 8, left))


class Maintainer:
    """Background thread that checkpoints the WAL, merges FTS segments and compacts superseded
    revisions (localstore._revisions), all off the save path.

    Lifecycle: start(), stop(), join(); ``run_once()`` does one round synchronously (tests, close).
    A failing round (a full disk, an I/O error) is logged, retried with backoff on a fresh
    connection, and never ends the thread: with automatic checkpoints off it is the only
    checkpointer below WAL_HARD_LIMIT. Should the thread die anyway, the next commit starts a new
    one. ``health()`` says how it is doing.
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int = 5_000,
        every_commits: int = 256,
        interval_s: float = MAINTENANCE_INTERVAL_S,
    ) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._every = every_commits
        self._interval = interval_s
        self._pending = 0
        # The home's op counter at the last round: a round is idle only if no process changed
        # anything since (see _round).
        self._last_op: int | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._lock = threading.Lock()
        # Health (written by the thread only; read unlocked, each value on its own).
        self._rounds = 0
        self._streak = FailureStreak(every=MAINTENANCE_LOG_EVERY_S)  # consecutive failed rounds
        self._last_error: str | None = None
        self._last_ok: float | None = None  # wall-clock time of the last good round
        self._restarts = 0
        _track_for_fork(self)

    def notify_commit(self) -> None:
        """Count a commit; wake the thread when enough have accumulated (restart it if dead)."""
        self._pending += 1
        if self._pending >= self._every:
            self._wake.set()
        thread = self._thread
        if thread is not None and not thread.is_alive() and not self._stop.is_set():
            self._restart(thread)

    def start(self) -> None:
        """Start the thread."""
        with self._start_lock:
            if self._thread is not None:
                raise RuntimeError("maintainer already started")
            self._spawn()

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._run, name="localstore-maintainer", daemon=True)
        self._thread.start()

    def _restart(self, dead: threading.Thread) -> None:
        with self._start_lock:
            if self._thread is not dead or self._stop.is_set():
                return  # another commit restarted it first, or it is being stopped
            self._restarts += 1
            log.error("the index maintainer thread had stopped; started it again")
            self._spawn()

    def stop(self) -> None:
        """Ask the thread to finish its round and exit."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to exit."""
        with self._start_lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            with self._start_lock:
                if self._thread is thread:
                    self._thread = None

    def health(self) -> dict[str, Any]:
        """How maintenance is doing: ``running``, ``rounds``, ``failed_rounds`` (consecutive),
        ``last_error``, ``last_ok`` (Unix time) and ``restarts``."""
        thread = self._thread
        return {
            "running": thread is not None and thread.is_alive(),
            "rounds": self._rounds,
            "failed_rounds": self._streak.count,
            "last_error": self._last_error,
            "last_ok": self._last_ok,
            "restarts": self._restarts,
        }

    def _run(self) -> None:
        conn: apsw.Connection | None = None
        try:
            while not self._stop.is_set():
                # After a failure: 1, 2, 4 ... s up to the interval (space may be freed soon).
                # The exponent is bounded: 2.0 ** 1024 overflows, and the OverflowError ended
                # the thread at the 1,025th failed round in a row (8.5 hours of a full disk),
                # then each restart by a later commit at once, so nothing checkpointed any more.
                wait = self._interval
                if self._streak.count:
                    wait = min(wait, 2.0 ** min(self._streak.count - 1, 30))
                self._wake.wait(timeout=wait)
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    if conn is None:
                        with self._lock:  # (not while a fork copies SQLite's state: _fork_wait)
                            conn = self._open()
                    self._round(conn)
                # Broad on purpose: this thread is the checkpointer; whatever one round hits
                # (a full disk, an I/O error, a bug), ending the thread would let the WAL grow
                # for the life of the process. Logged (rate-limited) and retried.
                except Exception as exc:  # noqa: BLE001
                    self._failed(exc)
                    if conn is not None:  # it may be unusable after an I/O error: start afresh
                        with self._lock:
                            _close_quietly(conn)
                        conn = None
                else:
                    self._succeeded()
        finally:
            if conn is not None:
                with self._lock:
                    _close_quietly(conn)

    def _failed(self, exc: Exception) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._streak.failed():
            log.warning(
                "index maintenance failed (%s round(s) in a row: %s); the write-ahead log is not "
                "checkpointed and grows until a round succeeds (retrying)",
                self._streak.count,
                self._last_error,
                exc_info=not isinstance(exc, apsw.Error),
            )

    def _succeeded(self) -> None:
        self._rounds += 1
        self._last_ok = time.time()
        failed = self._streak.succeeded()
        if failed:
            log.warning("index maintenance works again after %d failed round(s)", failed)

    def _open(self) -> apsw.Connection:
        conn = apsw.Connection(str(self._path))
        try:
            conn.setbusytimeout(self._busy_timeout_ms)
            _durable_commits(conn)
            # Its FTS merges commit too: the first commit after a WAL restart may be this one's.
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}").fetchall()
        except BaseException:
            _close_quietly(conn)
            raise
        return conn

    def run_once(self) -> None:
        """One maintenance round on a fresh connection."""
        conn = self._open()
        try:
            self._round(conn)
        finally:
            conn.close()

    def _round(self, conn: apsw.Connection) -> None:
        # Its writes take turns with the home's other writers (begin_taking_turns): announced
        # while they wait, a process saving back to back gives way to them, where SQLite's busy
        # handler alone left them out for as long as the saves went on (a daemon pulling a
        # large download, an app importing); and they give way to a saver that waits, which
        # waited for every write of the round in a row. Mapped for the round only: a few
        # system calls a round, and nothing held between rounds.
        turn = WriteTurn.open(self._path)
        try:
            self._round_in_turn(conn, turn)
        finally:
            if turn is not None:
                turn.close()

    def _begin(self, turn: WriteTurn | None) -> Callable[[apsw.Connection], None]:
        """How the round's writes begin: in turn, given up at once once the thread is stopped."""

        def begin(conn: apsw.Connection) -> None:
            begin_taking_turns(
                conn.cursor(), turn, self._busy_timeout_ms, interrupted=self._stop.is_set
            )

        return begin

    def _round_in_turn(self, conn: apsw.Connection, turn: WriteTurn | None) -> None:
        begin = self._begin(turn)
        with self._lock:
            # Idle: no commit here since the last round, and no change by any other process
            # either (the op counter is the home's). Judged by this process's commits alone, a
            # daemon that does not save took every timer round for idle while the app saved
            # beside it, and then tried the WAL truncate and started FTS optimizes, which only
            # an idle round is to do (docs/architecture.md, upkeep under steady saving).
            op = int(str(conn.execute(_LAST_OP).fetchall()[0][0]))
            idle = self._pending == 0 and self._last_op in (None, op)
            self._last_op = op
            self._pending = 0
            if int(str(conn.execute("PRAGMA user_version").fetchall()[0][0])) > len(
                CORE_MIGRATIONS
            ):
                # A newer localstore upgraded the index under this process: the revisions,
                # change log and search tables are now laid out as it means them (compacted
                # history read as the wrong type is what core v5 keeps older versions from), so
                # none of them is rewritten here (Index.write refuses for the same reason). The
                # checkpoint copies pages, whatever they mean: a WAL left to grow helps no one.
                with contextlib.suppress(apsw.BusyError):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                return
            failure: apsw.Error | None = None
            try:
                # Superseded revisions stored compacted (before the checkpoint, which then
                # copies those pages too). Its failure (a full disk), or that of giving free
                # pages back, must not cost the checkpoint: raised after it.
                compact_superseded(conn, begin=begin)
            except apsw.BusyError:
                pass  # the app is writing: the next round goes on from the same watermark
            except apsw.Error as exc:
                failure = exc
            try:
                # Bounded FTS merge work per round, then a PASSIVE checkpoint (never blocks
                # writers). One write with the change log's trim (its `with conn` is then a
                # savepoint): one turn for both.
                begin(conn)
                try:
                    _merge_search_indexes(conn, idle=idle)
                    conn.execute(_TRIM_CHANGE_LOG)
                    conn.execute("COMMIT")
                except BaseException:
                    if not conn.getautocommit():
                        conn.execute("ROLLBACK")
                    raise
            except apsw.BusyError:  # another process writes or checkpoints: the next round
                return
            try:
                # Before the checkpoint, which is what shortens the file.
                release_free_pages(conn, begin=begin)
            except apsw.BusyError:
                pass  # the app is writing: the next round
            except apsw.Error as exc:
                failure = failure or exc
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except apsw.BusyError:  # another process writes or checkpoints: the next round
                return
            if failure is not None:
                raise failure
            if idle and wal_size(self._path) > WAL_IDLE_TRUNCATE:
                self._truncate(conn)

    def _truncate(self, conn: apsw.Connection) -> None:
        # Gives back what a burst left in the WAL (journal_size_limit only cuts it to
        # WAL_SIZE_LIMIT, and only when a writer starts it over). With no busy timeout: a
        # TRUNCATE checkpoint waits for readers holding the write lock, so it is tried only
        # when nobody reads or writes, and otherwise left to the next idle round.
        truncate_wal_now(conn, self._busy_timeout_ms)


def truncate_wal_now(conn: apsw.Connection, busy_timeout_ms: int) -> None:
    """A TRUNCATE checkpoint with no busy timeout (it would wait for every reader and hold the
    write lock meanwhile): done if nobody reads or writes, else left for a later try. The
    connection's busy timeout is ``busy_timeout_ms`` again afterwards."""
    conn.setbusytimeout(0)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except apsw.BusyError:
        pass
    finally:
        conn.setbusytimeout(busy_timeout_ms)


def _merge_search_indexes(conn: apsw.Connection, *, idle: bool) -> None:
    """One round's FTS merge work; an incremental optimize started when one is due."""
    due = False
    if idle:  # see FTS_OPTIMIZE_EVERY_OPS
        op = int(str(conn.execute(_LAST_OP).fetchall()[0][0]))
        key = (FTS_OPTIMIZED_KEY,)
        row = conn.execute("SELECT value FROM settings WHERE key = ?", key).fetchall()
        due = op - (int(str(row[0][0])) if row else 0) >= FTS_OPTIMIZE_EVERY_OPS
    pages = -FTS_MERGE_PAGES if due else FTS_MERGE_PAGES
    with conn:  # one transaction: the mark is written only with the merges it stands for
        for table in FTS_TABLES:
            conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('merge', {pages})")
        if due:
            conn.execute(
                "INSERT OR REPLACE INTO settings VALUES (?, ?)", (FTS_OPTIMIZED_KEY, str(op))
            )


def page_usage(conn: apsw.Connection) -> dict[str, int]:
    """``pages``, ``free_pages`` and ``page_size`` of the index, and its ``auto_vacuum`` mode
    (0 none: free pages are only reused; 2 incremental: the maintainer gives them back)."""
    return {
        name: int(str(conn.execute(f"PRAGMA {pragma}").fetchall()[0][0]))
        for name, pragma in (
            ("pages", "page_count"),
            ("free_pages", "freelist_count"),
            ("page_size", "page_size"),
            ("auto_vacuum", "auto_vacuum"),
        )
    }


def release_free_pages(
    conn: apsw.Connection, *, begin: Callable[[apsw.Connection], None] | None = None
) -> int:
    """Give free pages back to the filesystem when they are a large share of the file (see
    FREE_PAGES_SHARE), a bounded number per call; returns how many pages went. Only for an index
    in incremental auto_vacuum mode (a new one, or one ``check --fix`` converted). Raises
    apsw.Error (BusyError: someone writes; try later). Each step is
    a transaction of its own (``begin(conn)`` starts it when given: the maintainer's takes
    turns; else the pragma alone is one)."""
    usage = page_usage(conn)
    pages, free, size = usage["pages"], usage["free_pages"], usage["page_size"]
    if (
        usage["auto_vacuum"] != 2
        or free * size < FREE_PAGES_FLOOR
        or free < pages * FREE_PAGES_SHARE
    ):
        return 0
    keep = int(pages * FREE_PAGES_SHARE / 2)
    count = min(free - keep, FREE_PAGES_PER_ROUND // size)
    step = max(1, FREE_PAGES_PER_STEP // size)
    done = 0
    while done < count:
        # Each pragma outside a transaction is one (see FREE_PAGES_PER_STEP); stepped to the
        # end: each step of the pragma moves one page (fetchall runs them all).
        n = min(step, count - done)
        if begin is None:
            conn.execute(f"PRAGMA incremental_vacuum({n})").fetchall()
        else:
            _in_transaction(conn, begin, f"PRAGMA incremental_vacuum({n})")
        done += n
    return count


def _in_transaction(
    conn: apsw.Connection, begin: Callable[[apsw.Connection], None], *sql: str
) -> None:
    """Run ``sql`` (each statement stepped to its end) in one transaction started by
    ``begin(conn)``; rolled back on any error."""
    begin(conn)
    try:
        for statement in sql:
            conn.execute(statement).fetchall()
        conn.execute("COMMIT")
    except BaseException:
        if not conn.getautocommit():
            conn.execute("ROLLBACK")
        raise


def wal_size(path: Path) -> int:
    """The size of the index's WAL file now (0 when there is none)."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size
    except OSError:
        return 0


def _close_quietly(conn: apsw.Connection) -> None:
    try:
        conn.close()
    except apsw.Error:  # a connection broken by an I/O error; nothing left to release
        pass


# -- fork ------------------------------------------------------------------------------------------

# How long a fork waits for this process's index transactions to end (see _fork_wait): as long as
# a write waits for another process's lock by default, which is what the child's writes waited
# for, and then failed, before.
FORK_WAIT_S = 30.0

# Every Index and Maintainer of this process: a fork waits for their locks (_fork_wait).
_LIVE: weakref.WeakSet[Index | Maintainer] = weakref.WeakSet()
_LIVE_MUTEX = threading.Lock()
# The locks _fork_wait took, released on both sides of the fork.
_HELD_AT_FORK: list[Any] = []


def _track_for_fork(owner: Index | Maintainer) -> None:
    with _LIVE_MUTEX:
        _LIVE.add(owner)


def _fork_wait() -> None:
    """Before a fork: wait until no thread of this process is inside an index transaction.

    SQLite keeps the locks of all connections to a file in one table per process (its unix
    VFS), and a child inherits that table. Forked while a thread of the parent was inside a write
    (a save, a pulled page, a maintenance round), the child "held" the write lock in its own
    table, which nothing in the child ever releases: every write of the store the child opened
    itself, as the docs tell it to, waited out the busy timeout and failed with "the index stayed
    locked by another process" (and a read in flight left a read mark the child believed held).
    So the forking thread takes every index's lock (each one's connection is used only under
    it) and every maintainer's (its rounds and its connection's open and close), waiting up to
    FORK_WAIT_S in all, and lets go of them on both sides once the fork is done. A lock still
    held then (a thread that waits for the forking one inside a transaction) is left, with a
    warning: the fork goes on, as before.
    """
    with _LIVE_MUTEX:
        live = list(_LIVE)
    # Maintainers first: a round never takes an index's lock, nor a transaction a maintainer's.
    locks: list[Any] = [o._lock for o in live if isinstance(o, Maintainer)]
    locks += [o._lock for o in live if isinstance(o, Index)]
    deadline = time.monotonic() + FORK_WAIT_S
    missed = 0
    for lock in locks:
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _HELD_AT_FORK.append(lock)
        else:
            missed += 1
    if missed:
        log.warning(
            "forking while %d index transaction(s) of this process stayed open for %.0f s: a "
            "store the child opens may find the index locked for good (fork before the long "
            "write, or use the spawn start method)",
            missed,
            FORK_WAIT_S,
        )
    _LIVE_MUTEX.acquire()  # (held across the fork: a child must not inherit it taken)
    _HELD_AT_FORK.append(_LIVE_MUTEX)


def _fork_done() -> None:
    """After a fork, in the parent and in the child: let go of what _fork_wait took."""
    while _HELD_AT_FORK:
        lock = _HELD_AT_FORK.pop()
        with contextlib.suppress(RuntimeError):  # (the child's forking thread is the owner)
            lock.release()


if hasattr(os, "register_at_fork"):  # (no fork on Windows)
    os.register_at_fork(before=_fork_wait, after_in_parent=_fork_done, after_in_child=_fork_done)
