"""The cached full listing (localstore._listing) always equals what the index says.

Each step changes the store one way (this handle's saves, moves, deletes, restores; another
handle's or another process's changes; an edit made on disk and reconciled; a transaction rolled
back; a maintainer round), then every sort order and some pages of ``list()`` are compared with
the same query run on a connection of its own.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest

import localstore
from localstore import _index_upkeep
from localstore import index as index_module
from localstore._listing import INFO_COLUMNS, infos
from localstore.blueprint import BlueprintInfo
from localstore.store import SORT_COLUMNS, SaveRequest

FOLDERS = ["", "ops/", "ops/deep/", "Zeta/", "alpha/"]
NAMES = ["deploy", "Backup", "zz", "äpfel", "build", "deploy"]  # (a repeated name: ties)
TAGS = [[], ["ops"], ["ops", "nightly"], ["ci"]]


def expected(db: Path, sort: str, descending: bool) -> list[BlueprintInfo]:
    """The listing as the uncached query returns it, read on a connection of its own."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        order = f"b.{SORT_COLUMNS[sort]} {'DESC' if descending else 'ASC'}"
        if sort != "path":
            order += ", b.path"
        return infos(
            conn.execute(
                f"SELECT {INFO_COLUMNS} FROM blueprints b WHERE b.deleted = 0 ORDER BY {order}"
            ).fetchall()
        )
    finally:
        conn.close()


def check_all(store: Any, rng: random.Random) -> None:
    for sort in SORT_COLUMNS:
        for descending in (False, True):
            want = expected(store.paths.index_db, sort, descending)
            assert store.list(sort=sort, descending=descending) == want, (sort, descending)
            offset = rng.randrange(len(want) + 1)
            page = store.list(sort=sort, descending=descending, limit=3, offset=offset)
            assert page == want[offset : offset + 3], (sort, descending, offset)


class Boom(Exception):
    pass


def test_cached_listing_follows_every_kind_of_change(home: Path) -> None:
    rng = random.Random(7001)
    store = localstore.open(home=home)
    other = localstore.open(home=home)  # another connection: its changes are foreign
    try:
        for i in range(12):
            store.save(f"{FOLDERS[i % 5]}seed{i}", {"steps": [i]}, name=NAMES[i % 6])
        check_all(store, rng)
        for step in range(140):
            live = store.list()
            with store.index.read() as cur:
                gone = cur.execute("SELECT id FROM blueprints WHERE deleted").fetchall()
            op = rng.randrange(12)
            pick = rng.choice(live) if live else None
            if op == 0 or pick is None:
                store.save(
                    f"{rng.choice(FOLDERS)}n{step}",
                    {"steps": [step]},
                    name=rng.choice(NAMES),
                    tags=rng.choice(TAGS),
                )
            elif op == 1:  # an update of name, tags or content
                store.save(
                    pick.path, {"steps": [step, 1]}, name=rng.choice(NAMES), tags=rng.choice(TAGS)
                )
            elif op == 2 and pick.valid:  # (a file that does not parse cannot be moved)
                store.move(pick.id, f"{rng.choice(FOLDERS)}m{step}")
            elif op == 3:
                store.delete(pick.id)
            elif op == 4 and gone:
                store.restore(str(gone[0][0]), 1, path=f"r{step}")
            elif op == 5:  # another handle (another connection) changes one
                which = rng.randrange(3)
                if which == 0:
                    other.save(f"o{step}", {"x": step}, name=rng.choice(NAMES))
                elif which == 1:
                    other.save(pick.path, {"x": step}, tags=rng.choice(TAGS))
                else:
                    other.delete(pick.id)
            elif op == 6:  # an edit made on disk, found by reconcile
                store.abspath(pick.path).write_text(f"steps: [{step}, 2, 3]\n# edited\n")
                store.reconcile()
            elif op == 7:  # a transaction that changed rows, then rolled back
                with pytest.raises(Boom), store.index.write():
                    store.save(pick.path, {"rolled": "back"}, name="never")
                    store.save(f"never{step}", {"rolled": "back"})
                    # Read inside the transaction: the uncommitted rows, not the cache.
                    assert any(i.path == f"never{step}.blueprint.yaml" for i in store.list())
                    raise Boom
            elif op == 8 and store._maintainer is not None:  # FTS merges commit elsewhere
                store._maintainer.run_once()
            elif op == 9:  # another handle finds an edit made on disk (a flag or size change)
                store.abspath(pick.path).write_text(rng.choice(["steps: [9]\n", "steps: [oops\n"]))
                other.reconcile()
            elif op == 10:  # a file that no longer parses: reconcile flags its row (not valid)
                store.abspath(pick.path).write_text("steps: [unclosed\n")
                store.reconcile()
            else:
                store.save(pick.path, {"steps": [step]}, name=pick.name)
            check_all(store, rng)
    finally:
        other.close()
        store.close()


def test_a_save_by_another_process_shows_in_the_next_listing(home: Path) -> None:
    with localstore.open(home=home) as store:
        for i in range(5):
            store.save(f"a{i}", {"i": i})
        before = store.list()
        code = (
            "import sys, localstore\n"
            "with localstore.open(home=sys.argv[1]) as s:\n"
            "    s.save('from-child', {'x': 1}, name='child')\n"
            "    s.delete('a0.blueprint.yaml')\n"
        )
        subprocess.run([sys.executable, "-c", code, str(home)], check=True, timeout=60)
        after = store.list()
        assert [i.path for i in after] == sorted(
            {i.path for i in before} - {"a0.blueprint.yaml"} | {"from-child.blueprint.yaml"}
        )
        assert after == expected(store.paths.index_db, "path", False)


def test_own_and_others_changes_patch_the_listing(home: Path) -> None:
    """This handle's own changes patch the cached listing, and so do commits of other connections
    that touch no blueprint (the maintainer's FTS merges) and another handle's save."""
    with localstore.open(home=home) as store, localstore.open(home=home) as other:
        for i in range(8):
            store.save(f"a{i}", {"i": i})
        cache = store._listing
        store.list()
        assert cache.loads == 1
        store.save("a1", {"i": "changed"}, tags=["new"])
        store.move("a2.blueprint.yaml", "b/a2")
        store.delete("a3.blueprint.yaml")
        assert store.list() == expected(store.paths.index_db, "path", False)
        assert store.list(sort="name", descending=True) == expected(
            store.paths.index_db, "name", True
        )
        assert store._maintainer is not None
        for _ in range(6):  # enough saves for the maintainer's merge to write
            store.save("a4", {"more": _})
            store._maintainer.run_once()
        assert store.list() == expected(store.paths.index_db, "path", False)
        assert cache.loads == 1
        other.save("z", {"by": "other"})
        assert store.list() == expected(store.paths.index_db, "path", False)
        assert cache.loads == 1  # the rows the change log names are read, not all


def test_other_handles_changes_are_patched_from_the_change_log(home: Path) -> None:
    """Another handle's saves, moves, deletes and restores (and its commits mixed with this
    handle's own) are read from the rows the change log names: no full read, the same listing."""
    rng = random.Random(7)
    with localstore.open(home=home) as store, localstore.open(home=home) as other:
        for i in range(12):
            store.save(f"{FOLDERS[i % 5]}a{i}", {"i": i}, name=NAMES[i % 6], tags=TAGS[i % 4])
        check_all(store, rng)
        loads = store._listing.loads
        other.save("ops/a1", {"i": "by other"}, name="zzz")
        other.save("new-one", {"i": "new"}, tags=["ci"])
        check_all(store, rng)
        other.move("a0.blueprint.yaml", "Zeta/moved")
        store.save("alpha/a4", {"i": "own"})
        other.delete("ops/deep/a2.blueprint.yaml")
        other.save_many([SaveRequest(path=f"batch/b{i}", content={"i": i}) for i in range(5)])
        check_all(store, rng)
        other.restore("ops/deep/a2.blueprint.yaml", 1)
        store.move("Zeta/moved.blueprint.yaml", "a0")
        check_all(store, rng)
        assert store._listing.loads == loads


def test_a_change_log_that_misses_a_commit_reads_everything(home: Path) -> None:
    """The maintainer trims the log: a listing last brought up to date before the oldest commit
    it still lists is read again in full (as is one after a commit of too many rows)."""
    with localstore.open(home=home) as store, localstore.open(home=home) as other:
        for i in range(4):
            store.save(f"a{i}", {"i": i})
        assert len(store.list()) == 4
        other.save("b", {"i": 1})
        other.save("c", {"i": 2})
        with other.index.write() as cur:
            cur.execute(
                "DELETE FROM blueprint_changes WHERE gen = (SELECT min(gen) FROM ("
                "SELECT gen FROM blueprint_changes ORDER BY gen DESC LIMIT 2))"
            )
        assert store.list() == expected(store.paths.index_db, "path", False)
        assert store._listing.loads == 2
        other.save("d", {"i": 3})
        assert store.list() == expected(store.paths.index_db, "path", False)
        assert store._listing.loads == 2  # the log covers everything since: patched


def test_a_commit_of_too_many_rows_is_logged_as_such(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "CHANGED_ROWS_KEPT", 3)
    with localstore.open(home=home) as store, localstore.open(home=home) as other:
        store.save("a", {"i": 0})
        assert len(store.list()) == 1
        other.save_many([SaveRequest(path=f"b{i}", content={"i": i}) for i in range(5)])
        with store.index.read() as cur:
            assert cur.execute(
                "SELECT rid FROM blueprint_changes ORDER BY gen DESC LIMIT 1"
            ).fetchall() == [(-1,)]
        assert store.list() == expected(store.paths.index_db, "path", False)
        assert store._listing.loads == 2


def test_the_maintainer_keeps_the_newest_change_log_rows(store: Any) -> None:
    """A daemon runs for months: the log keeps CHANGE_LOG_ROWS rows, the newest."""
    store.save("a", {"i": 0})
    keep = _index_upkeep.CHANGE_LOG_ROWS
    with store.index.write() as cur:
        cur.executemany(
            "INSERT INTO blueprint_changes VALUES (?, 1)", [(-g,) for g in range(1, keep + 500)]
        )
    assert store._maintainer is not None
    store._maintainer.run_once()
    with store.index.read() as cur:
        rows = cur.execute("SELECT gen FROM blueprint_changes ORDER BY gen").fetchall()
    assert len(rows) == keep
    assert rows[-1][0] > 0  # the real commits' rows are the newest, and kept
    assert rows[0][0] == -(keep - 1)


def test_the_listing_returned_is_the_callers_own(store: Any) -> None:
    store.save("a", {"i": 1})
    first = store.list()
    first.clear()
    assert [i.path for i in store.list()] == ["a.blueprint.yaml"]


def test_an_index_without_the_change_counter_gets_it(home: Path) -> None:
    """A v2 index (before the counter) is migrated: the counter is created and the cached
    listing then sees another connection's change."""
    with localstore.open(home=home) as store:
        store.save("a", {"i": 1})
        with store.index.write() as cur:
            cur.execute("DELETE FROM counters WHERE name = 'blueprints_gen'")
            cur.execute("UPDATE component_versions SET version = 2 WHERE component = 'core'")
            cur.execute("PRAGMA user_version = 2")
    with localstore.open(home=home) as store, localstore.open(home=home) as other:
        assert [i.path for i in store.list()] == ["a.blueprint.yaml"]
        other.save("b", {"i": 2})
        assert [i.path for i in store.list()] == ["a.blueprint.yaml", "b.blueprint.yaml"]


def test_many_changes_read_the_listing_again_and_nothing_is_kept_before_a_listing(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that never listed everything notes no changed rows (a daemon runs for months);
    past CHANGED_ROWS_KEPT changes between two listings, the listing is read again in full."""
    monkeypatch.setattr(index_module, "CHANGED_ROWS_KEPT", 3)
    for i in range(5):
        store.save(f"a{i}", {"i": i})
    assert not store.index._changed_rids
    assert len(store.list()) == 5
    assert store._listing.loads == 1
    store.save("b0", {"i": 0})
    assert len(store.list()) == 6
    assert store._listing.loads == 1  # patched
    for i in range(1, 5):
        store.save(f"b{i}", {"i": i})
    assert store.list() == expected(store.paths.index_db, "path", False)
    assert store._listing.loads == 2  # read again
