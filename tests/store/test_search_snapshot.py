"""A search reads one snapshot of the index, whatever another connection commits meanwhile.

A search is several statements: it picks the hits (FTS5), reads their index rows, and past the
first page makes the page's snippets in one more statement. Each ran in its own autocommit read,
so a commit by another connection (the daemon's watcher or sync next to an app) landing between
them mixed two moments: a hit's row read after it was rewritten (its name and rev of after, its
snippet of before), a deleted blueprint answered as a hit, and a page past the first failed with
a raw KeyError when a hit no longer matched by the time its snippet was made.

Two real stores on one home (two connections, real files); the other connection's commit is
injected at the exact moment between two statements of the search, through apsw's statement
trace on the searching store's connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.store import BlueprintStore


@pytest.fixture
def two(home: Path) -> Iterator[tuple[BlueprintStore, BlueprintStore]]:
    a = localstore.open(home=home, maintenance=False)
    b = localstore.open(home=home, maintenance=False)
    try:
        for i in range(5):
            a.save(f"f/bp{i}", f"name: bp{i}\nsteps: [build {i}]\n")
        yield a, b
    finally:
        b.close()
        a.close()


def _commit_before(store: BlueprintStore, marker: str, change: Callable[[], None]) -> list[str]:
    """Run ``change`` (another connection's commit) once, just before ``store``'s connection runs
    its first statement whose SQL holds ``marker``; the statements it fired before."""
    fired: list[str] = []

    def trace(_cur: Any, sql: str, _bindings: Any) -> bool:
        if marker in sql and not fired:
            fired.append(sql)
            change()
        return True

    store.index.conn.exec_trace = trace
    return fired


def test_a_hit_rewritten_by_another_connection_mid_search_is_answered_as_it_was(two) -> None:
    a, b = two
    before = {i.id: i for i in a.list()}
    expected = a.search("build")

    def rewrite() -> None:
        for i in range(5):
            b.save(f"f/bp{i}", f"name: renamed{i}\nsteps: [other]\n")

    # (The statement that reads the picked hits' index rows.)
    fired = _commit_before(a, "WHERE b.rid IN", rewrite)
    hits = a.search("build")
    assert fired, "the other connection's commit was not injected"
    # One moment: each hit's row as it was when the hits were picked, with its snippet.
    assert [h.info for h in hits] == [before[h.info.id] for h in expected]
    assert hits == expected


def test_a_page_past_the_first_survives_another_connections_commit_mid_search(two) -> None:
    a, b = two
    expected = a.search("build", limit=10)[1:]

    def rewrite() -> None:
        b.save("f/bp1", "name: bp1\nsteps: [other]\n")
        b.delete("f/bp3")

    # (The statement that makes the snippets of the page's hits, after they were picked.)
    fired = _commit_before(a, "rowid IN (", rewrite)
    hits = a.search("build", limit=10, offset=1)  # was: KeyError
    assert fired, "the other connection's commit was not injected"
    assert hits == expected
    # The next search sees the commit.
    a.index.conn.exec_trace = None
    assert sorted(h.info.path for h in a.search("build")) == [
        f"f/bp{i}.blueprint.yaml" for i in (0, 2, 4)
    ]
