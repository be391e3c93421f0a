"""A write SQLite rolled back whole by itself commits nothing, and its caller gets a typed error.

After SQLITE_FULL (also IOERR, NOMEM, INTERRUPT) inside a transaction SQLite may roll the whole
transaction back on its own (https://www.sqlite.org/lang_transaction.html, "Response To Errors
Within A Transaction"). A batch that caught that item's error and went on then ran the next
items in autocommit mode: each SAVEPOINT opened a transaction of its own that its RELEASE
committed, so later items were saved one by one while the earlier ones were gone, and the
batch's COMMIT failed with "no transaction is active". Errors that leaked untyped too
(apsw.FullError out of reconcile and sync, "generator didn't yield" out of reconcile).

The fault is real: ``PRAGMA max_page_count`` caps the index near its current size, and SQLite
answers SQLITE_FULL and rolls the transaction back as on a full disk. Two tests inject an
apsw error by monkeypatch, where they need one that does not roll the transaction back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

import localstore
from localstore._reconcile import Reconciler
from localstore.errors import DiskFullError, IndexStoreError, StorageError
from localstore.store import BlueprintStore, SaveRequest
from sync.memory_remote import MemoryServer
from tests.sync_engine.conftest import close_device, open_device


def big_text(i: int, salt: str = "v1") -> str:
    # Large enough that each blueprint grows the index by a few pages.
    return f"name: bp{i}\nsteps:\n" + "".join(
        f"  - step {j} {salt} {i} lorem ipsum dolor sit amet\n" for j in range(400)
    )


class Cap:
    """Lets the index grow by ``extra`` pages more (SQLITE_FULL beyond), or lifts the cap."""

    def __init__(self, store: BlueprintStore) -> None:
        self.store = store
        with store.index.read() as cur:
            self.normal = int(cur.execute("PRAGMA max_page_count").fetchall()[0][0])

    def __call__(self, extra: int | None) -> None:
        with self.store.index.read() as cur:
            pages = int(cur.execute("PRAGMA page_count").fetchall()[0][0])
            limit = self.normal if extra is None else pages + extra
            cur.execute(f"PRAGMA max_page_count={limit}").fetchall()


@pytest.fixture
def store(home: Path) -> Iterator[BlueprintStore]:
    s = localstore.open(home=home)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def cap(store: BlueprintStore) -> Iterator[Cap]:
    c = Cap(store)
    yield c
    c(None)


def settings_like(store: BlueprintStore, prefix: str) -> list[str]:
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT key FROM settings WHERE key LIKE ? ORDER BY key", (prefix + "%",)
        ).fetchall()
    return [str(r[0]) for r in rows]


def live(store: BlueprintStore) -> dict[str, tuple[str, int]]:
    """id -> (path, rev) of every live blueprint in the index."""
    with store.index.read() as cur:
        rows = cur.execute("SELECT id, path, rev FROM blueprints WHERE deleted = 0").fetchall()
    return {str(r[0]): (str(r[1]), int(r[2])) for r in rows}


def yaml_files(store: BlueprintStore) -> list[str]:
    return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*.yaml"))


# -- the index ---------------------------------------------------------------------------------


def test_a_batch_that_catches_each_items_error_commits_nothing(
    store: BlueprintStore, cap: Cap
) -> None:
    """The callers' pattern (watcher, reconcile, sync, import): one savepoint per item, an item's
    error caught and the next item tried."""
    index = store.index
    cap(20)
    caught: list[BaseException] = []
    with pytest.raises(StorageError) as info, index.write():
        for i in range(60):
            try:
                with index.write() as cur:
                    cur.execute("INSERT INTO settings VALUES (?, ?)", (f"item{i:02}", big_text(i)))
            except Exception as exc:
                caught.append(exc)
    # Not one item committed on its own after SQLite rolled the batch back (before: every item
    # after the failed one, each in a transaction of its own, until the index was full again).
    assert settings_like(store, "item") == []
    # The batch fails with the error that lost it (before: "no transaction is active").
    assert isinstance(info.value, DiskFullError), repr(info.value)
    assert isinstance(info.value.__cause__, apsw.FullError)
    # Every item after the loss failed with an index error, which the per-item handlers of
    # reconcile and sync do not take for one item's failure.
    assert caught and all(isinstance(e, StorageError) for e in caught)
    assert all(isinstance(e, IndexStoreError) for e in caught[1:])
    # The connection is usable again, and the next write commits.
    cap(None)
    index.set_setting("after", "ok")
    assert index.get_setting("after") == "ok"


def test_a_statement_after_a_swallowed_full_error_does_not_commit_alone(
    store: BlueprintStore, cap: Cap
) -> None:
    index = store.index
    cap(2)
    after: list[BaseException] = []
    # (The error that rolled it back was swallowed before any level saw it: the write fails
    # with the index error that says so.)
    with pytest.raises(StorageError) as info, index.write() as cur:
        try:
            for i in range(20):
                cur.execute("INSERT INTO settings VALUES (?, ?)", (f"big{i}", big_text(i)))
        except apsw.FullError:
            pass  # a caller that swallows the error and goes on
        try:
            cur.execute("INSERT INTO settings VALUES ('small', 'x')")
        except IndexStoreError as exc:
            after.append(exc)
        # Reads still work (an undo path reads the committed revision it puts back).
        cur.execute("SELECT count(*) FROM settings").fetchall()
    assert settings_like(store, "small") == settings_like(store, "big") == []
    assert len(after) == 1  # refused: it would have committed alone
    assert isinstance(info.value, IndexStoreError)
    assert "rolled back the whole write" in str(info.value)
    cap(None)
    index.set_setting("after", "ok")
    assert index.get_setting("after") == "ok"


# -- the store ---------------------------------------------------------------------------------


def test_save_many_runs_in_a_batch_that_goes_on_after_a_storage_error_save_nothing(
    store: BlueprintStore, cap: Cap
) -> None:
    """A caller saving runs inside its own transaction (as sync does) that takes one run's
    StorageError and goes on: the later runs are not saved one by one, their files not left."""
    keep = store.save("keep.blueprint.yaml", "name: keep\n")
    before = live(store)
    cap(10)
    errors: list[StorageError] = []
    with pytest.raises(StorageError) as info, store.index.write():
        # The first run fills the index; the small ones after it would fit (before: each
        # was committed on its own, files and rows, and the batch then failed to commit).
        for run, count in enumerate([20, 2, 2]):
            requests = [
                SaveRequest(
                    path=f"r{run}/bp{i}.blueprint.yaml",
                    content=big_text(i) if run == 0 else f"name: r{run}-{i}\n",
                )
                for i in range(count)
            ]
            try:
                store.save_many(requests)
            except StorageError as exc:
                errors.append(exc)
    assert live(store) == before
    assert yaml_files(store) == ["keep.blueprint.yaml"]  # each run's files undone
    assert len(errors) == 3
    assert isinstance(info.value, DiskFullError), repr(info.value)
    cap(None)
    assert store.load("keep").content == keep.content
    assert len(store.save_many([SaveRequest(path="later.blueprint.yaml", content="a: 1\n")])) == 1


@pytest.mark.parametrize("extra", [4, 10])
def test_reconcile_on_a_full_index_raises_disk_full_and_records_nothing(
    store: BlueprintStore, cap: Cap, extra: int
) -> None:
    """Before: apsw.FullError leaked (a path's savepoint failing inside the item), or the
    per-path handler swallowed the failed SAVEPOINT and the pass died with "generator didn't
    yield" (a RuntimeError)."""
    store.save("keep.blueprint.yaml", "name: keep\n")
    before = live(store)
    for i in range(40):
        path = store.root / "new" / f"bp{i:02}.blueprint.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(big_text(i))
    cap(extra)
    with pytest.raises(DiskFullError) as info:
        store.reconcile()
    assert isinstance(info.value.__cause__, apsw.FullError)
    assert live(store) == before
    cap(None)
    store.reconcile()
    assert len(live(store)) == 41
    assert store.load("new/bp07.blueprint.yaml").content == big_text(7)


def test_reconcile_maps_an_index_error_that_left_the_transaction_open(
    store: BlueprintStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite may roll back only the failed statement; the error still must not leak as apsw's."""
    (store.root / "a.blueprint.yaml").write_text("name: a\n")

    def full(*args: Any, **kwargs: Any) -> None:
        raise apsw.FullError("database or disk is full")

    monkeypatch.setattr(Reconciler, "_record", full)
    with pytest.raises(DiskFullError):
        store.reconcile()


def test_reconcile_stops_at_an_index_error_raised_typed_inside_a_path(
    store: BlueprintStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'The index failing is not a bad file': a StorageError mapped from apsw ends the pass
    instead of being reported as one skipped path while the others go on."""
    for name in ("a", "b"):
        (store.root / f"{name}.blueprint.yaml").write_text(f"name: {name}\n")

    def full(*args: Any, **kwargs: Any) -> None:
        try:
            raise apsw.FullError("database or disk is full")
        except apsw.Error as exc:
            raise DiskFullError("save: the disk is full", hint="free some disk space") from exc

    monkeypatch.setattr(Reconciler, "_record", full)
    with pytest.raises(DiskFullError):
        store.reconcile()


# -- sync --------------------------------------------------------------------------------------


def test_sync_apply_on_a_full_index_raises_a_typed_error_and_keeps_the_index(
    tmp_path: Path,
) -> None:
    """Push conflicts (the server took these paths first) applied row by row in savepoints; the
    index fills on the way. Before: apsw.FullError leaked out of sync_once."""
    server = MemoryServer()
    a = open_device(tmp_path, "a", server)
    b = open_device(tmp_path, "b", server)
    try:
        for i in range(30):
            b.store.save(f"f/bp{i}.blueprint.yaml", big_text(i, "b"))
        a.store.save_many(
            [SaveRequest(path=f"f/bp{i}.blueprint.yaml", content=big_text(i)) for i in range(30)]
        )
        a.sync()
        before = live(b.store)
        cap = Cap(b.store)
        cap(5)
        with pytest.raises(StorageError) as info:
            b.sync()
        assert isinstance(info.value, DiskFullError), repr(info.value)
        assert live(b.store) == before
        cap(None)
        b.sync()
        a.sync()
        assert {p for p, _ in live(a.store).values()} == {p for p, _ in live(b.store).values()}
    finally:
        close_device(a)
        close_device(b)
