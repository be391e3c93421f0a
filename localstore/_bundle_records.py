"""What the index says about a bundle's blueprints: the import records and the plan's lookups.

The ``archive_imports`` table (its own schema, created by the first import, never by a plan)
records what each import saved for which bundle version, so importing the same bundle again
changes nothing and a blueprint an import put aside is known by the path it came from. The
lookups are the few indexed queries a plan makes per entry (or per 500 entries).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from localstore import files as fs
from localstore._bundle_read import BundleEntry
from localstore._bundle_results import ORIGIN
from localstore.errors import UnsafePathError

if TYPE_CHECKING:
    from localstore.store import BlueprintStore, Row


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
