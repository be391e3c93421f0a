"""State a store keeps per connection or per process, after ANOTHER connection or process changed
the home (session 19's audit, after FTS5's cached segment lists made check() report a healthy
index as corrupt: tests/store/test_check_after_merge.py).

Each test uses two real connections (two stores on one home, or a second process) on real files.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import localstore
from localstore import _index_upkeep
from localstore._identity import replace_device_id
from localstore.index import FTS_OPTIMIZED_KEY, Maintainer
from localstore.kv import KVStore
from localstore.store import BlueprintStore

REPO = Path(__file__).resolve().parents[2]


def _other_process(home: Path, body: str) -> None:
    """Run ``body`` in a new Python process with ``s``, a store open on ``home``."""
    code = textwrap.dedent(
        """
        import sys
        import localstore
        import localstore.index
        s = localstore.open(home=sys.argv[1], maintenance=False)
        try:
        {body}
        finally:
            s.close()
        """
    ).format(body=textwrap.indent(textwrap.dedent(body), "    "))
    subprocess.run([sys.executable, "-c", code, str(home)], check=True, cwd=REPO, timeout=120)


def _searched_store(home: Path) -> BlueprintStore:
    """A store that has searched both full-text tables (its connection caches their segment
    lists)."""
    store = localstore.open(home=home, maintenance=False)
    for i in range(40):
        store.save(f"f/bp{i}", f"name: bp{i}\ndescription: step {i}\nsteps: [build {i}]\n")
    assert store.search("build")
    return store


# -- the device id -------------------------------------------------------------------------------


def test_a_device_id_another_process_replaced_is_the_one_used(tmp_path: Path) -> None:
    """The sync engine of one process (the daemon) replaces the home's device id when the server
    shows another home pushing under it. Before, a store open in another process (the app) kept
    the id it read at open: its revisions named the old writer, and an in-process sync it
    started once the daemon had stopped pushed under the id given up (taking the other home's
    rows for its own writes, what the replacement is there to prevent)."""
    home = tmp_path / "home"
    app = localstore.open(home=home, maintenance=False)
    try:
        old = app.device_id
        other = localstore.open(home=home, maintenance=False)
        try:
            new = replace_device_id(other.index, lambda: "00000000-0000-4000-8000-000000000019")
        finally:
            other.close()
        assert new != old
        assert app.device_id == new
        app.save("a/one", "v: 1\n")
        assert [r.device for r in app.history("a/one")] == [new]
    finally:
        app.close()


# -- full-text search after another connection's merge or rebuild ---------------------------------
# Fine: FTS5 reads a table's segment list again when a statement opens a cursor on it or starts
# writing it after another connection's commit (xOpen, xBegin); only SQLite's integrity pragmas
# skipped that (fixed in 72e8b8d). These pin that every other path of the store is such a path.


def _merged_by_a_maintainer(store: BlueprintStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_index_upkeep, "FTS_OPTIMIZE_EVERY_OPS", 10)
    m = Maintainer(store.paths.index_db)
    m.notify_commit()
    for _ in range(11):  # a round, then idle ones: the optimize starts and is carried to its end
        m.run_once()
    assert store.index.get_setting(FTS_OPTIMIZED_KEY) is not None


def _rebuilt_by_another_process(store: BlueprintStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # What `check --fix` does to a search table that fails its check.
    _other_process(
        store.paths.index_db.parent.parent,
        """
        with s.index.write() as cur:
            for t in ("blueprints_fts", "blueprints_described"):
                cur.execute(f"INSERT INTO {t}({t}) VALUES ('rebuild')")
        """,
    )


@pytest.mark.parametrize("change", [_merged_by_a_maintainer, _rebuilt_by_another_process])
def test_search_and_saves_after_another_connection_rewrote_the_search_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: object
) -> None:
    store = _searched_store(tmp_path / "home")
    try:
        change(store, monkeypatch)  # type: ignore[operator]
        # FTS5's own check alone (its INSERT starts a write: refreshed), before anything else.
        assert store.index.search_index_problems() == []
        assert {h.info.path for h in store.search("bp7")} == {"f/bp7.blueprint.yaml"}
        hits = store.search("step", limit=50)
        assert len(hits) == 40 and all("[step]" in h.snippet for h in hits)
        # An update takes the old entry out by giving back what it indexed: from a stale
        # segment list that would corrupt the index.
        store.save("f/bp3", "name: bp3\ndescription: changed\nsteps: [deploy]\n")
        store.delete("f/bp4")
        report = store.check()
        assert report.clean, report.problems
        assert {h.info.path for h in store.search("deploy")} == {"f/bp3.blueprint.yaml"}
        assert not store.search("bp4")
    finally:
        store.close()


# -- a newer localstore's migration while this one has the home open -------------------------------


def test_no_write_after_a_newer_localstore_upgraded_the_index_under_an_open_store(
    tmp_path: Path,
) -> None:
    """The core schema version is checked when a store opens. A newer localstore that upgraded
    the index meanwhile (the app updated while the daemon ran) changed what its rows mean (a
    version bump is what keeps an older localstore out: v3 "would change rows without counting
    them", v5 "would read such a revision as the text of its bytes"); before, the store that was
    open went on writing as before. Its writes are now refused as at open, with the same error."""
    home = tmp_path / "home"
    app = localstore.open(home=home, maintenance=False)
    try:
        app.save("a/one", "v: 1\n")
        _other_process(
            home,
            # A newer localstore: one core version more, as its open would migrate it.
            """
            with s.index.write() as cur:
                n = len(localstore.index.CORE_MIGRATIONS) + 1
                cur.execute("UPDATE component_versions SET version = ? WHERE component = 'core'",
                            (n,))
                cur.execute(f"PRAGMA user_version = {n}")
            """,
        )
        with pytest.raises(localstore.errors.NewerIndexError, match="newer localstore"):
            app.save("a/two", "v: 2\n")
        assert [b.path for b in app.list()] == ["a/one.blueprint.yaml"]  # (reads go on)
    finally:
        app.close()
    assert not (home / "blueprints" / "a" / "two.blueprint.yaml").exists()


def _raise_component(home: Path, component: str) -> None:
    """A newer localstore's migration of one component's tables only (its core unchanged)."""
    _other_process(
        home,
        f"""
        with s.index.write() as cur:
            cur.execute("UPDATE component_versions SET version = version + 1 "
                        "WHERE component = '{component}'")
        """,
    )


def test_no_write_after_a_newer_localstore_upgraded_a_component_this_store_uses(
    tmp_path: Path,
) -> None:
    """Each component's tables have their own version (app data, sync, credentials, the
    archive), bumped without the core's when only they change. Only the core's was checked per
    write: a store that used app data went on writing its rows as its own version means them
    after a newer one upgraded those tables. Every write of that connection is refused then, as
    for the core (a transaction may write any table; the daemon and an app's sync stop on it)."""
    home = tmp_path / "home"
    app = localstore.open(home=home, maintenance=False)
    kv = KVStore(app.index)
    try:
        kv.save("k", "v1")
        app.save("a/one", "v: 1\n")
        _raise_component(home, "kv")
        with pytest.raises(localstore.errors.NewerIndexError, match=r"\(kv schema v\d+;"):
            kv.save("k", "v2")
        with pytest.raises(localstore.errors.NewerIndexError, match="upgrade localstore"):
            app.save("a/two", "v: 2\n")
        assert app.index.newer_version() is app.index.newer
        assert kv.load("k") == "v1"  # (reads go on)
    finally:
        kv.close()
        app.close()
    assert not (home / "blueprints" / "a" / "two.blueprint.yaml").exists()


def test_a_newer_component_this_store_does_not_use_leaves_its_writes_alone(
    tmp_path: Path,
) -> None:
    """As at open: an older build refuses only what uses the newer component (a home whose app
    data a newer build upgraded still saves blueprints under an older one that never opened
    them)."""
    home = tmp_path / "home"
    with localstore.open(home=home, maintenance=False) as first:
        KVStore(first.index).close()  # (the kv tables exist, at this version)
    app = localstore.open(home=home, maintenance=False)
    try:
        _raise_component(home, "kv")
        app.save("a/one", "v: 1\n")
        assert app.index.newer_version() is None
    finally:
        app.close()


def test_the_per_write_version_check_reads_no_table_until_another_connection_commits(
    tmp_path: Path,
) -> None:
    """What keeps the check cheap: the versions are read only when ``PRAGMA data_version`` says
    another connection committed since they were last found fine (an upgrade is such a commit);
    otherwise a write runs that one pragma, as the core check did alone before."""
    home = tmp_path / "home"
    app = localstore.open(home=home, maintenance=False)
    kv = KVStore(app.index)
    statements: list[str] = []

    def trace(_cursor: object, sql: str, _bindings: object) -> bool:
        statements.append(sql)
        return True

    try:
        kv.save("k", "v0")
        app.index.conn.set_exec_trace(trace)
        kv.save("k", "v1")
        app.save("a/one", "v: 1\n")
        assert not [s for s in statements if "component_versions" in s or "user_version" in s]
        _other_process(home, 's.save("b/other", "v: 1\\n")')
        statements.clear()
        kv.save("k", "v2")
        kv.save("k", "v3")
        assert len([s for s in statements if "component_versions" in s]) == 1, statements
    finally:
        app.index.conn.set_exec_trace(None)
        kv.close()
        app.close()
