"""``list(sort="modified"|"created")`` orders by the moment a timestamp names, not by its text.

The store writes ``2024-01-01T10:00:00.000000Z``, but a meta file edited by hand or written by
another tool may hold the same moment in another form: no fraction, another offset, no zone
(read as UTC, as merge does). Compared as text, ``10:00:00Z`` came after ``10:00:00.5Z`` ('Z'
follows '.') and ``11:30+02:00`` (09:30 UTC) after both. The cached full listing and the
query behind a page or a filter must agree, and a store holding only its own stamps must still
page along the stamp's index (query plans, not times). A real store in a temporary home, real
SQLite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apsw
import pytest

import localstore
from localstore.index import CORE_MIGRATIONS
from tests.store.older_index import set_core_back
from tests.store.query_plans import query_plans

# path -> (modified, created) as written into the meta file, oldest moment first.
STAMPS = {
    "t/e": ("", ""),  # (no time at all: before every time)
    "t/d": ("not a time", "not a time"),  # (unreadable: as if none)
    "t/c": ("2024-01-01T11:30:00+02:00", "2024-01-01T11:30:00+02:00"),  # 09:30 UTC
    "t/a": ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z"),
    "t/b": ("2024-01-01T10:00:00.500000Z", "2024-01-01T10:00:00.500000Z"),
    "t/f": ("2024-01-01T10:00:01", "2024-01-01T10:00:01"),  # (naive: UTC)
    "t/g": ("2024-01-01T10:00:02.000001Z", "2024-01-01T10:00:02.000001Z"),
}
# In time order; "" and the unreadable one tie, so their paths decide (d before e).
OLDEST_FIRST = ["t/d", "t/e", "t/c", "t/a", "t/b", "t/f", "t/g"]


@pytest.fixture
def stamped(home: Path) -> Any:
    with localstore.open(home=home) as s:
        for path in STAMPS:
            s.save(path, "steps: []\n")
    for path, (modified, created) in STAMPS.items():
        meta = home / "blueprints" / f"{path}.blueprint.meta.json"
        data = json.loads(meta.read_text())
        data.update(modified=modified, created=created)
        meta.write_text(json.dumps(data))
    s = localstore.open(home=home)  # (the open's reconcile reads the edited meta files)
    try:
        yield s
    finally:
        s.close()


def _paths(infos: list[Any]) -> list[str]:
    return [i.path.removesuffix(".blueprint.yaml") for i in infos]


@pytest.mark.parametrize("sort", ["modified", "created"])
def test_a_page_and_a_filtered_listing_order_by_the_moment(stamped: Any, sort: str) -> None:
    # (Listed as the meta files hold them.)
    infos = stamped.list(folder="t")  # (a filter: the query, not the cache, is asked)
    listed = {p: (i.modified, i.created) for p, i in zip(_paths(infos), infos, strict=True)}
    assert listed == STAMPS
    # (A page before any full listing, and a filtered listing: the query's order.)
    assert _paths(stamped.list(sort=sort, limit=3)) == OLDEST_FIRST[:3]
    assert _paths(stamped.list(sort=sort, folder="t")) == OLDEST_FIRST
    assert _paths(stamped.list(sort=sort, folder="t", descending=True)) == [
        "t/g", "t/f", "t/b", "t/a", "t/c", "t/d", "t/e",
    ]  # fmt: skip


@pytest.mark.parametrize("sort", ["modified", "created"])
def test_the_cached_listing_orders_as_the_query_does(stamped: Any, sort: str) -> None:
    for descending in (False, True):
        query = stamped.list(sort=sort, folder="t", descending=descending)
        assert stamped.list(sort=sort, descending=descending) == query  # (cached)
        assert stamped.list(sort=sort, descending=descending, limit=4, offset=2) == query[2:6]


def _listing_plan(store: Any, **kw: Any) -> list[str]:
    """The plan steps of the listing query a ``store.list(**kw)`` runs (not the cache's)."""
    plans = query_plans(store, lambda: store.list(**kw))
    return [step for sql, plan in plans if "ORDER BY" in sql for step in plan]


@pytest.mark.parametrize("sort", ["modified", "created"])
def test_a_store_with_its_own_stamps_only_pages_along_the_stamps_index(
    store: Any, sort: str
) -> None:
    """Sorting every row by the moment cost a page of 100 of 10,000 blueprints 3 ms instead of
    0.1 ms: where every stamp is in the store's own form, the page walks the stamp's index, and
    whether one is not is asked of core v13's partial index (empty here), never of every row."""
    for i in range(5):
        store.save(f"t/bp{i}", "steps: []\n")
    plan = _listing_plan(store, sort=sort, limit=3)
    assert f"SCAN b USING INDEX blueprints_{sort}" in plan
    assert "USE TEMP B-TREE FOR ORDER BY" not in plan  # (only ties, by path: LAST TERM)
    asked = query_plans(store, lambda: store.list(sort=sort, limit=3))
    assert [plan for sql, plan in asked if "GLOB" in sql] == [
        ["SCAN blueprints USING COVERING INDEX blueprints_odd_times"]
    ]


def test_the_moment_order_lasts_only_while_a_stamp_is_in_another_form(stamped: Any) -> None:
    """The cached listing follows too: arm it, then the edited meta files put back in the
    store's form (a rewrite by a save) leave the query walking the index again."""
    cached = stamped.list(sort="modified")
    assert _paths(cached) == OLDEST_FIRST
    assert "USE TEMP B-TREE FOR ORDER BY" in _listing_plan(stamped, sort="modified", folder="t")
    for path in STAMPS:
        stamped.save(path, "steps: [1]\n")  # (stamps now, in the store's form, oldest first)
    resaved = list(STAMPS)
    assert _paths(stamped.list(sort="modified")) == resaved  # (cached, patched)
    assert _paths(stamped.list(sort="modified", folder="t")) == resaved
    assert "USE TEMP B-TREE FOR ORDER BY" not in _listing_plan(stamped, sort="modified", limit=3)


def test_an_index_of_core_v12_gets_the_odd_stamps_index_on_open(stamped: Any, home: Path) -> None:
    stamped.close()
    set_core_back(home, 12, ())
    conn = apsw.Connection(str(home / "data/index.db"))
    conn.execute("DROP INDEX blueprints_odd_times")
    conn.close()
    with localstore.open(home=home) as s:
        with s.index.read() as cur:
            assert cur.execute("PRAGMA user_version").fetchall()[0][0] == len(CORE_MIGRATIONS)
        assert _paths(s.list(sort="created", limit=3)) == OLDEST_FIRST[:3]
        plans = query_plans(s, lambda: s.list(sort="created", limit=3))
        assert ["SCAN blueprints USING COVERING INDEX blueprints_odd_times"] in [
            plan for sql, plan in plans if "GLOB" in sql
        ]
