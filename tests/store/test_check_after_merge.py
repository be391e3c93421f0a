"""check() and the quick check on a connection whose cached view of the search index is older
than another connection's merge of it.

FTS5 caches each table's segment list per connection; SQLite's integrity pragmas run FTS5's own
check on that cache without refreshing it. An app's store whose maintainer (its own connection)
had merged the search tables since the store last searched got "fts5: corruption found reading
blob" from check() on a healthy index (seen in CI: tests/test_embedding_app.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from localstore import _index_upkeep
from localstore.index import FTS_OPTIMIZED_KEY, Maintainer


def _searched_then_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> localstore.BlueprintStore:
    """A store that searched (its connection caches the segment lists), then a maintainer on
    its own connection that optimized both search tables (segments deleted, others written)."""
    monkeypatch.setattr(_index_upkeep, "FTS_OPTIMIZE_EVERY_OPS", 10)
    store = localstore.open(home=tmp_path / "home", maintenance=False)
    for i in range(40):
        store.save(f"f/bp{i}", f"name: bp{i}\ndescription: step {i}\nsteps: [build {i}]\n")
    assert store.search("build")  # (reads both tables: their segment lists are cached)
    m = Maintainer(store.paths.index_db)
    m.notify_commit()
    m.run_once()
    for _ in range(10):  # idle rounds: the optimize starts and is carried to its end
        m.run_once()
    # The optimize ran (its mark is written with the merges it stands for), so the segments
    # the store's connection has cached are gone.
    assert store.index.get_setting(FTS_OPTIMIZED_KEY) is not None
    return store


def test_check_finds_a_search_index_another_connection_merged_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _searched_then_merged(tmp_path, monkeypatch)
    try:
        report = store.check()
        assert report.clean, report.problems  # before the fix: fts5: corruption found ...
        assert store.index.pragma_check("quick_check") == []
        store.index.quick_check()  # at open, a failure here sets the index aside
        assert {h.info.path for h in store.search("bp7")} == {"f/bp7.blueprint.yaml"}
    finally:
        store.close()


def test_check_fix_after_another_connections_merge_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _searched_then_merged(tmp_path, monkeypatch)
    try:
        report = store.check(fix=True)
        assert report.clean and report.fixed == [], (report.problems, report.fixed)
        assert store.recovered_index is None
    finally:
        store.close()
