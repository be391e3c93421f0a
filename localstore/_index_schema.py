"""The core schema of the index: its migrations, and the reshaping of an early core v1.

``CORE_MIGRATIONS`` takes the core tables (blueprints, revisions, full-text search, settings,
counters, the change log) one version at a time; ``CORE_READ_WITHOUT`` says which steps a read-only
open may do without. Index.register_schema (localstore/index.py) runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from localstore import files as fs
from localstore._time_key import ODD_TIMES_INDEX

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
