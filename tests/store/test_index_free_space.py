"""The index file under months of use: free pages are given back, not kept at the peak for good.

SQLite never shrinks a database by itself: pages freed by compacted revisions, merged FTS
segments or deleted rows are only reused, so a burst (an import, an upgrade's history
compaction) left index.db at its largest size forever. Real SQLite files; the maintainer round is
run directly (``run_once``) with small thresholds instead of waiting months.
"""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

import localstore
from localstore import _index_upkeep
from localstore.index import Maintainer, page_usage


def _big(i: int, salt: str) -> str:
    # ~20 KB that zlib shrinks to almost nothing: each superseded revision frees ~5 pages.
    body = "".join(f"  - step {k} lorem ipsum dolor sit amet {salt}\n" for k in range(500))
    return f"name: bp{i}\nsteps:\n{body}"


def _usage(db: Path) -> dict[str, int]:
    conn = apsw.Connection(str(db))
    try:
        return page_usage(conn)
    finally:
        conn.close()


@pytest.fixture
def small_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_index_upkeep, "FREE_PAGES_FLOOR", 256 * 1024)
    monkeypatch.setattr(_index_upkeep, "FREE_PAGES_PER_ROUND", 512 * 1024)


def _history_then_compaction(store: localstore.BlueprintStore, maintainer: Maintainer) -> None:
    """200 revisions of one 20 KB blueprint (4 MB of history), then the rounds that compact
    them: most of those pages become free."""
    for n in range(200):
        store.save("big", _big(0, salt=str(n)))
    for _ in range(3):
        maintainer.notify_commit()
        maintainer.run_once()


def test_a_new_index_gives_freed_pages_back(tmp_path: Path, small_bounds: None) -> None:
    store = localstore.open(home=tmp_path / "home", maintenance=False)
    try:
        db = store.paths.index_db
        assert _usage(db)["auto_vacuum"] == 2  # incremental: made so when the file was new
        m = Maintainer(db)
        _history_then_compaction(store, m)
        peak = max(_usage(db)["pages"], 1)
        for _ in range(20):  # at most FREE_PAGES_PER_ROUND a round
            m.run_once()
        after = _usage(db)
        # Before the fix the free pages (about 3.5 MB of this 4 MB) stayed in the file.
        assert after["free_pages"] < after["pages"] * _index_upkeep.FREE_PAGES_SHARE
        assert after["pages"] < peak / 2
        # The checkpoint shortened the file itself, not only the page count in the WAL.
        assert db.stat().st_size <= after["pages"] * after["page_size"]
        history = store.history("big")
        assert len(history) == 200
        assert store.load_revision("big", history[-1].rev).content == _big(0, salt="0")
        assert store.index.integrity_check() == []
    finally:
        store.close()


def test_slack_below_the_bounds_is_kept_for_the_next_saves(tmp_path: Path) -> None:
    """With the real bounds a small home's free pages stay: steady use reuses them, and
    handing them back only to grow the file again would be churn."""
    store = localstore.open(home=tmp_path / "home", maintenance=False)
    try:
        db = store.paths.index_db
        m = Maintainer(db)
        for n in range(40):
            store.save("big", _big(0, salt=str(n)))
        m.notify_commit()
        m.run_once()
        before = _usage(db)
        assert 0 < before["free_pages"] * before["page_size"] < _index_upkeep.FREE_PAGES_FLOOR
        m.run_once()
        assert _usage(db)["free_pages"] == before["free_pages"]
    finally:
        store.close()


def _make_pre_vacuum_index(db: Path) -> None:
    """Turn the index into one made before auto_vacuum (mode none), as every existing home's."""
    conn = apsw.Connection(str(db))
    try:
        conn.execute("PRAGMA auto_vacuum=NONE").fetchall()
        conn.execute("VACUUM").fetchall()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        assert page_usage(conn)["auto_vacuum"] == 0
    finally:
        conn.close()


def test_check_fix_converts_an_existing_index_and_gives_its_free_space_back(
    tmp_path: Path, small_bounds: None
) -> None:
    home = tmp_path / "home"
    with localstore.open(home=home, maintenance=False) as store:
        db = store.paths.index_db
        store.save("other/kept", "name: kept\nsteps: [build]\n", tags=["keep"])
    _make_pre_vacuum_index(db)
    store = localstore.open(home=home, maintenance=False)
    try:
        m = Maintainer(db)
        _history_then_compaction(store, m)
        for _ in range(5):
            m.run_once()
        stuck = _usage(db)
        # Mode none: the maintainer cannot give anything back; the peak stays.
        assert stuck["auto_vacuum"] == 0
        assert stuck["free_pages"] > stuck["pages"] / 2

        report = store.check()
        assert not [f for f in report.fixed if f["kind"] == "index-vacuumed"]
        report = store.check(fix=True)
        vacuumed = [f for f in report.fixed if f["kind"] == "index-vacuumed"]
        assert len(vacuumed) == 1 and "MB given back" in vacuumed[0]["detail"]
        after = _usage(db)
        assert after["auto_vacuum"] == 2
        assert after["free_pages"] == 0
        assert after["pages"] < stuck["pages"] / 2
        assert db.stat().st_size == after["pages"] * after["page_size"]
        # Nothing lost: history, search, tags, and saves go on.
        assert len(store.history("big")) == 200
        assert [h.info.path for h in store.search("kept")] == ["other/kept.blueprint.yaml"]
        assert [b.path for b in store.list(tag="keep")] == ["other/kept.blueprint.yaml"]
        store.save("after", "name: after\n")
        assert store.index.integrity_check() == []
        # Done once: a second check --fix has nothing to convert.
        again = store.check(fix=True)
        assert not [f for f in again.fixed if f["kind"] == "index-vacuumed"]
    finally:
        store.close()


# -- the full-text index under edits ---------------------------------------------------------------


def _segments(store: localstore.BlueprintStore) -> dict[str, int]:
    with store.index.read() as cur:
        return {
            t: int(cur.execute(f"SELECT count(DISTINCT segid) FROM {t}_idx").fetchall()[0][0])
            for t in _index_upkeep.FTS_TABLES
        }


def _mark(store: localstore.BlueprintStore) -> list[tuple[str, ...]]:
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT value FROM settings WHERE key = ?", (_index_upkeep.FTS_OPTIMIZED_KEY,)
        ).fetchall()
    return [tuple(str(v) for v in r) for r in rows]


def test_edits_do_not_leave_dead_entries_in_the_search_index_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positive merges never merge across levels: replaced entries and delete marks stayed in
    older segments. An idle round FTS_OPTIMIZE_EVERY_OPS changes after the last starts an
    incremental optimize, and the rounds after it end with one segment per table."""
    monkeypatch.setattr(_index_upkeep, "FTS_OPTIMIZE_EVERY_OPS", 150)
    store = localstore.open(home=tmp_path / "home", maintenance=False)
    try:
        m = Maintainer(store.paths.index_db)
        for i in range(60):
            store.save(f"f/bp{i}", f"name: bp{i}\nsteps: [build {i}, test {i}]\n")
        for n in range(400):  # edits and deletes, a round every 20 changes
            i = n % 60
            if n % 50 == 49:
                store.delete(f"f/bp{i}")
            else:
                store.save(f"f/bp{i}", f"name: bp{i}\nsteps: [build {i}, edit {n}]\n")
            if n % 20 == 19:
                m.notify_commit()
                m.run_once()
        busy = _segments(store)
        # Rounds with commits since the last never start one: they merge the newest segments.
        assert _mark(store) == []
        for _ in range(12):  # idle rounds: the first starts an optimize, the next carry it on
            m.run_once()
        assert _mark(store) == [("460",)]  # 60 creates and 400 changes
        # Before the fix idle rounds left 2 segments in one table here, and more as edits went on.
        assert _segments(store) == {t: 1 for t in _index_upkeep.FTS_TABLES}, busy
        assert [h.info.path for h in store.search("edit 398")][:1] == ["f/bp38.blueprint.yaml"]
        assert store.search("bp49") == []  # deleted (n = 349)
        assert store.index.integrity_check() == []
    finally:
        store.close()
