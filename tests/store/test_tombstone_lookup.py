"""A path with no live blueprint is looked for among the deleted ones by index, not by a scan.

``store.row(path)`` (and every reference resolving: ``localstore show``, ``history``, restore by
path, an import plan probing free paths) asks, when no live blueprint is at a path, for the
newest deleted one there (``path_key = ? AND deleted = 1 ORDER BY op_id DESC``). Only live rows
were indexed by path, so SQLite walked the whole table in op_id order for each miss: every
``localstore show <missing>`` read every row of the home. Core v12 indexes the deleted rows'
paths (a partial index: saves of live blueprints do not maintain it).

Counted, not timed: every statement a lookup runs is traced, and its query plan asked of SQLite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw

import localstore
from localstore.errors import NotFoundError
from localstore.index import CORE_MIGRATIONS
from tests.store.older_index import set_core_back
from tests.store.query_plans import blueprint_scans


def _missing(store: Any, ref: str, **kw: Any) -> str:
    try:
        store.row(ref, **kw)
    except NotFoundError as exc:
        return str(exc)
    raise AssertionError(f"{ref!r} was found")


def _fill(store: Any) -> None:
    """Live blueprints and deleted ones, a path deleted twice (two tombstones there)."""
    for i in range(20):
        store.save(f"live/bp{i}", f"name: {i}\n")
    for i in range(5):
        store.save(f"trash/bp{i}", f"name: gone {i}\n")
        store.delete(f"trash/bp{i}")
    store.save("twice/bp", "name: first\n")
    store.delete("twice/bp")
    store.save("twice/bp", "name: second\n")
    store.delete("twice/bp")


def test_a_missing_path_is_not_looked_for_by_scanning_the_table(store: Any) -> None:
    _fill(store)
    scans = blueprint_scans(store, lambda: _missing(store, "nowhere/bp", include_deleted=True))
    assert scans == []
    # The error that names a deleted blueprint at the path asks the same question.
    assert blueprint_scans(store, lambda: _missing(store, "nowhere/bp")) == []
    assert blueprint_scans(store, lambda: _missing(store, "trash/bp3")) == []


def test_the_newest_deleted_blueprint_at_a_path_still_answers(store: Any) -> None:
    _fill(store)
    with store.index.read() as cur:
        ids = [
            str(r[0])
            for r in cur.execute(
                "SELECT id FROM blueprints WHERE path = 'twice/bp.blueprint.yaml' ORDER BY op_id"
            )
        ]
    assert len(ids) == 2
    row = store.row("twice/bp", include_deleted=True)
    assert row.deleted and row.id == ids[1]
    assert ids[1] in _missing(store, "twice/bp")
    # Other case, same key: found by it as before.
    assert store.row("Trash/BP3", include_deleted=True).path == "trash/bp3.blueprint.yaml"
    # Restored, it leaves the deleted rows' index: the live row answers, the other stays.
    store.restore(ids[1], 1)
    assert store.row("twice/bp").id == ids[1]
    store.delete("twice/bp")
    assert store.row("twice/bp", include_deleted=True).id == ids[1]


def test_an_index_of_core_v11_gets_the_deleted_paths_index_on_open(home: Path) -> None:
    store = localstore.open(home=home)
    _fill(store)
    store.close()
    set_core_back(home, 11, ())
    conn = apsw.Connection(str(home / "data/index.db"))
    conn.execute("DROP INDEX blueprints_deleted_path")
    conn.close()
    store = localstore.open(home=home)
    try:
        with store.index.read() as cur:
            assert cur.execute("PRAGMA user_version").fetchall()[0][0] == len(CORE_MIGRATIONS)
        assert (
            blueprint_scans(store, lambda: _missing(store, "nowhere/bp", include_deleted=True))
            == []
        )
        assert store.row("trash/bp3", include_deleted=True).deleted
    finally:
        store.close()


def test_the_deleted_paths_index_holds_deleted_rows_only(store: Any) -> None:
    """A partial index: saves, moves and renames of live blueprints do not maintain it."""
    with store.index.read() as cur:
        partial = {str(r[1]): r[4] for r in cur.execute("PRAGMA index_list(blueprints)")}
        sql = cur.execute(
            "SELECT sql FROM sqlite_schema WHERE name = 'blueprints_deleted_path'"
        ).fetchall()
    assert partial["blueprints_deleted_path"] == 1
    assert "WHERE deleted = 1" in str(sql[0][0])
