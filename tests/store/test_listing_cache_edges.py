"""Edges of the cached full listing (localstore._listing) found in review.

``store.list(...)`` must return what the uncached query returns, whatever the cache holds: a
folder argument that names no folder filter only after normalisation ("/") still filters; and a
refresh that re-reads this connection's changed rows sees one snapshot of the index, not the
cached rows of one moment and the re-read rows of a later one (another process committing in
between).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest

import localstore
from localstore._listing import INFO_COLUMNS, infos
from localstore.blueprint import BlueprintInfo
from localstore.index import Index


def _query(db: Path, where: str = "") -> list[BlueprintInfo]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return infos(
            conn.execute(
                f"SELECT {INFO_COLUMNS} FROM blueprints b WHERE b.deleted = 0{where} ORDER BY b.path"
            ).fetchall()
        )
    finally:
        conn.close()


@pytest.mark.parametrize("recursive", [True, False])
def test_a_folder_of_slashes_lists_the_same_cached_or_not(store: Any, recursive: bool) -> None:
    """``folder="/"`` filters (to the top folder, as search does): it gave that before the
    cache existed, and with a cached listing it gave every blueprint instead, so the same call
    answered differently with and without a limit, and before and after a full listing."""
    store.save("top", {"a": 1})
    store.save("sub/deep", {"b": 2})
    before = store.list(folder="/", recursive=recursive)  # (no listing cached yet)
    assert [i.path for i in before] == ["top.blueprint.yaml"]
    assert len(store.list()) == 2  # arms the cache
    assert store.list(folder="/", recursive=recursive) == before
    assert store.list(folder="/", recursive=recursive, limit=5) == before
    assert store.list(folder=None, recursive=recursive) == store.list()


def test_a_refresh_reads_one_snapshot(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's commit landing while the cached listing is brought up to date must not
    leave a listing of two moments: this handle's changed row as after that commit, the other
    rows as before it (here: a rename away from a path and a rename onto it in one commit, and
    the listing held both blueprints at one path)."""
    store = localstore.open(home=home)
    other = localstore.open(home=home)
    try:
        x = store.save("x", {"i": 1}).id
        y = store.save("p", {"i": 2}).id
        assert len(store.list()) == 2  # cached
        store.save("x", {"i": "own change"})  # noted: the next listing re-reads x's row
        commits: list[int] = []
        real = Index.blueprint_changes

        def foreign_commit_first(index: Index) -> set[int] | None:
            # (Fault injection: the other process commits right after the cache read the
            # change counter and before it re-reads the rows this handle changed.)
            if index is store.index and not commits:
                with other.index.write():
                    other.move(y, "q")  # p is free ...
                    other.move(x, "p")  # ... and x takes it, in the same commit
                commits.append(1)
            return real(index)

        monkeypatch.setattr(Index, "blueprint_changes", foreign_commit_first)
        before_commit = [("p.blueprint.yaml", y), ("x.blueprint.yaml", x)]
        after_commit = [("p.blueprint.yaml", x), ("q.blueprint.yaml", y)]
        listed = [(i.path, i.id) for i in store.list()]
        assert commits, "the injected commit did not run"
        assert listed in (before_commit, after_commit), listed
        monkeypatch.undo()
        assert store.list() == _query(store.paths.index_db)
        assert [(i.path, i.id) for i in store.list()] == after_commit
    finally:
        other.close()
        store.close()


class Boom(Exception):
    pass


def test_a_listing_asked_while_a_rollback_undoes_keeps_the_cache_true(store: Any) -> None:
    """An undo callback (Index.undo_on_rollback) runs inside the transaction it undoes, just
    before the ROLLBACK: a listing asked there sees the uncommitted rows, and must not make them
    the cached listing (a rollback tells the update hook nothing)."""
    store.save("a", {"i": 1})
    store.list()  # cached
    seen: list[list[str]] = []
    with pytest.raises(Boom), store.index.write():
        store.save("never", {"rolled": "back"})
        store.index.undo_on_rollback(lambda: seen.append([i.path for i in store.list()]))
        with store.index.write():  # (released into the outer level, whose undo runs it)
            pass
        raise Boom
    assert seen == [["a.blueprint.yaml", "never.blueprint.yaml"]]  # (what it sees there)
    assert store.list() == _query(store.paths.index_db)
    assert [i.path for i in store.list()] == ["a.blueprint.yaml"]
