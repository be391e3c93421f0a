"""save_many: one transaction, few flushes, per-item errors for bad input, all-or-nothing on I/O."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from localstore import files as fs
from localstore.errors import (
    AlreadyExistsError,
    IndexStoreError,
    InvalidInputError,
    InvalidYAMLError,
    StorageError,
    UnsafePathError,
)
from localstore.store import SaveRequest


def test_batch_saves_all_and_reports_bad_items(store, home: Path) -> None:
    seen = []
    store.subscribe(seen.append)
    reqs = [SaveRequest(path=f"b/item-{i}", content=f"i: {i}\n") for i in range(40)]
    reqs.insert(7, SaveRequest(path="b/bad", content="a: ["))
    reqs.insert(9, SaveRequest(path="../escape", content="a: 1\n"))
    results = store.save_many(reqs, origin="import")
    assert isinstance(results[7], InvalidYAMLError) and isinstance(results[9], UnsafePathError)
    saved = [r for r in results if not isinstance(r, Exception)]
    assert len(saved) == 40 and store.count() == 40
    assert all(
        store.load(bp.id).content == f"i: {bp.path.split('-')[1].split('.')[0]}\n" for bp in saved
    )
    assert [e.kind for e in seen] == ["created"] * 40 and {e.origin for e in seen} == {"import"}
    assert store.history(saved[0].id)[0].origin == "import"
    assert store.check().clean
    assert not list((home / "blueprints").rglob("*" + fs.TEMP_SUFFIX))


def test_batch_with_moves_and_repeated_ids(store) -> None:
    a = store.save("x/a", "v: 1\n")
    b = store.save("x/b", "v: 1\n")
    results = store.save_many(
        [
            SaveRequest(path="y/a", content="v: 2\n", id=a.id),
            SaveRequest(path="y/a2", content="v: 3\n", id=a.id),
            SaveRequest(path="x/b", content="v: 2\n", id=b.id),
            SaveRequest(path="x/a", content="new: true\n"),
        ]
    )
    assert not any(isinstance(r, Exception) for r in results)
    assert store.load(a.id).path == "y/a2.blueprint.yaml" and store.load(a.id).content == "v: 3\n"
    assert store.load(b.id).content == "v: 2\n"
    assert store.load("x/a").id not in (a.id, b.id)
    assert store.check().clean


def test_batch_storage_failure_changes_nothing(store, home: Path, monkeypatch) -> None:
    for i in range(10):
        store.save(f"s/{i}", f"old: {i}\n")

    def failing_syncfs(directory: Path) -> None:
        raise OSError(errno.EIO, "injected")

    monkeypatch.setattr(fs, "syncfs", failing_syncfs)
    before = {p: p.read_bytes() for p in (home / "blueprints").rglob("*") if p.is_file()}
    reqs = [SaveRequest(path=f"s/{i}", content=f"new: {i}\n") for i in range(10)]
    reqs += [SaveRequest(path=f"t/{i}", content="fresh: 1\n") for i in range(10)]
    with pytest.raises(StorageError):
        store.save_many(reqs)
    monkeypatch.undo()
    after = {p: p.read_bytes() for p in (home / "blueprints").rglob("*") if p.is_file()}
    assert after == before
    assert store.count() == 10 and store.load("s/3").content == "old: 3\n"
    assert store.check().clean


def test_identical_batch_is_a_noop(store) -> None:
    reqs = [SaveRequest(path=f"n/{i}", content=f"i: {i}\n") for i in range(20)]
    first = store.save_many(reqs)
    again = store.save_many(reqs)
    assert [r.rev for r in again] == [r.rev for r in first] == [1] * 20  # type: ignore[union-attr]


def _files(home: Path) -> dict[str, bytes]:
    root = home / "blueprints"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_an_item_refused_by_its_hook_leaves_nothing_behind(store, home: Path) -> None:
    kept = store.save("k/kept", "v: 1\n")
    mover = store.save("k/mover", "v: 1\n")
    before = _files(home)
    hooked = []

    def refuse(cur, bp) -> None:
        hooked.append(bp.path)
        cur.execute("UPDATE settings SET value = 'hook was here' WHERE key = 'device_id'")
        raise InvalidInputError("the hook refuses this item")

    results = store.save_many(
        [
            SaveRequest("k/new-refused", "v: 1\n", tx_hook=refuse),
            SaveRequest("k/kept", "v: 2\n", tx_hook=refuse),
            SaveRequest("k/moved", "v: 2\n", id=mover.id, tx_hook=refuse),
            SaveRequest("k/new-ok", "v: 1\n"),
        ]
    )
    assert len(hooked) == 3
    assert [type(r).__name__ for r in results] == ["InvalidInputError"] * 3 + ["Blueprint"]
    after = _files(home)
    assert {k: v for k, v in after.items() if not k.startswith("k/new-ok")} == before
    assert store.load(kept.id).rev == 1 and store.load(mover.id).path == mover.path
    assert not store.exists("k/new-refused") and store.exists("k/new-ok")
    assert store.index.get_setting("device_id") == store.device_id  # the hook's write rolled back
    assert store.check().clean
    with pytest.raises(InvalidInputError):
        store.save("k/kept", "v: 3\n", tx_hook=refuse)
    assert _files(home)["k/kept.blueprint.yaml"] == b"v: 1\n"


def test_a_meta_with_another_blueprints_id_fails_only_that_item(store, home: Path) -> None:
    other = store.save("other", "v: 0\n")
    gone = store.save("gone", "v: 0\n")
    store.delete("gone")
    results = store.save_many(
        [
            SaveRequest("x1", "v: 1\n"),
            SaveRequest("x2", "v: 2\n", meta={"id": other.id, "name": "pasted"}),
            SaveRequest("x3", "v: 3\n", meta={"id": gone.id, "name": "pasted"}),
            SaveRequest("x4", "v: 4\n"),
        ]
    )
    assert [type(r).__name__ for r in results] == [
        "Blueprint",
        "AlreadyExistsError",
        "AlreadyExistsError",
        "Blueprint",
    ]
    assert not (home / "blueprints/x2.blueprint.yaml").exists()
    with pytest.raises(AlreadyExistsError):
        store.save("x2", "v: 2\n", meta={"id": other.id, "name": "pasted"})
    assert store.load(other.id).path == "other.blueprint.yaml" and store.check().clean


def test_an_index_error_inside_a_save_is_a_localstore_error(store, home: Path) -> None:
    bp = store.save("e/flow", "v: 1\n")
    before = _files(home)

    def broken_sql(cur, blueprint) -> None:
        cur.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(IndexStoreError):
        store.save("e/flow", "v: 2\n", tx_hook=broken_sql)
    with pytest.raises(IndexStoreError):
        store.save_many([SaveRequest("e/other", "v: 1\n", tx_hook=broken_sql)])
    assert _files(home) == before and store.load(bp.id).rev == 1
    assert store.check().clean
