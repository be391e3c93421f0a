"""save_many: one transaction, few flushes, per-item errors for bad input, all-or-nothing on I/O."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from localstore import files as fs
from localstore.errors import (
    AlreadyExistsError,
    DiskFullError,
    IndexStoreError,
    InvalidInputError,
    InvalidYAMLError,
    StorageError,
    UnsafePathError,
)
from localstore.events import Event
from localstore.store import SaveRequest


def test_batch_saves_all_and_reports_bad_items(store, home: Path) -> None:
    seen: list[Event] = []
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
    assert [r.rev for r in again] == [r.rev for r in first] == [1] * 20


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


def _live_files(home: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (home / "blueprints").rglob("*") if p.is_file()}


def test_a_temp_write_failing_in_a_batch_changes_nothing(store, home: Path, monkeypatch) -> None:
    # A full disk at the 7th temp file of a batch: a typed error, and nothing changed.
    for i in range(10):
        store.save(f"s/{i}", f"old: {i}\n")
    before = _live_files(home)
    real_write = fs.os.write
    calls = []

    def filling_write(fd: int, data) -> int:
        calls.append(fd)
        if len(calls) == 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(fs.os, "write", filling_write)
    reqs = [SaveRequest(path=f"s/{i}", content=f"new: {i}\n") for i in range(10)]
    with pytest.raises(DiskFullError) as err:
        store.save_many(reqs)
    monkeypatch.undo()
    assert err.value.hint and len(calls) >= 7
    assert _live_files(home) == before
    assert store.count() == 10 and store.load("s/3").content == "old: 3\n"
    assert store.check().clean


def test_a_flush_failing_after_the_renames_puts_every_file_back(
    store, home: Path, monkeypatch
) -> None:
    # The second syncfs of a batch makes its renames durable; when it fails the renames already
    # happened, and the store puts the previous versions back from history.
    for i in range(10):
        store.save(f"s/{i}", f"old: {i}\n")
    before = _live_files(home)
    real_syncfs = fs.syncfs
    calls: list[str] = []

    def second_fails(directory) -> None:
        calls.append(str(directory))
        if len(calls) == 2:
            raise OSError(errno.EIO, "injected")
        real_syncfs(directory)

    monkeypatch.setattr(fs, "syncfs", second_fails)
    reqs = [SaveRequest(path=f"s/{i}", content=f"new: {i}\n") for i in range(10)]
    reqs += [SaveRequest(path=f"t/{i}", content="fresh: 1\n") for i in range(10)]
    with pytest.raises(StorageError):
        store.save_many(reqs)
    monkeypatch.undo()
    assert len(calls) == 2
    assert _live_files(home) == before
    assert store.count() == 10 and store.load("s/3").content == "old: 3\n"
    assert store.check().clean


def test_a_batch_records_the_stats_its_files_have(store, home: Path) -> None:
    # The index's size and mtime of each file are what later looks (a save, the watcher,
    # reconcile) compare with: any difference would be taken for an editor's change.
    reqs = [SaveRequest(path=f"m/{i % 3}/item-{i}", content=f"i: {i}\n") for i in range(40)]
    saved = store.save_many(reqs)
    rows = store.index.conn.execute(
        "SELECT path, yaml_size, yaml_mtime_ns, meta_size, meta_mtime_ns FROM blueprints"
    ).fetchall()
    assert len(rows) == 40
    for path, y_size, y_mtime, m_size, m_mtime in rows:
        y = (home / "blueprints" / path).stat()
        m = (home / "blueprints" / fs.meta_path_for(path)).stat()
        assert (y.st_size, y.st_mtime_ns, m.st_size, m.st_mtime_ns) == (
            y_size,
            y_mtime,
            m_size,
            m_mtime,
        )
    store.save_many([SaveRequest(path=bp.path, content=bp.content + "j: 1\n") for bp in saved])
    assert all(len(store.history(bp.id)) == 2 for bp in saved)  # no external revision between


def test_a_batch_flushes_every_filesystem_it_wrote_to(tmp_path: Path, monkeypatch) -> None:
    # syncfs flushes one filesystem; a blueprints tree may hold a mount point. Both flushes of
    # a batch (the temps, then the renames) must cover every filesystem written to.
    shm = Path("/dev/shm")
    assert shm.is_dir(), "this test needs a second filesystem at /dev/shm (Linux)"
    other = Path(tempfile.mkdtemp(dir=shm))
    try:
        assert other.stat().st_dev != tmp_path.stat().st_dev
        real_syncfs = fs.syncfs
        flushed: list[int] = []

        def recording(directory) -> None:
            flushed.append(Path(directory).stat().st_dev)
            real_syncfs(directory)

        monkeypatch.setattr(fs, "syncfs", recording)
        pending = fs.PendingWrites(expected_files=fs.SYNCFS_MIN_FILES)
        targets = [tmp_path / f"a{i}" for i in range(8)] + [other / f"b{i}" for i in range(8)]
        for target in targets:
            pending.add(target, b"x")
        pending.commit()
        devices = {tmp_path.stat().st_dev, other.stat().st_dev}
        assert len(flushed) == 4 and set(flushed[:2]) == devices == set(flushed[2:])
        assert all(t.read_bytes() == b"x" for t in targets)
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_a_batch_of_new_names_looks_each_up_in_its_folders_listing(
    store, home: Path, monkeypatch
) -> None:
    """A download's batch creates many new names in a few folders: the folder's listing, read
    once by the batch, says they are free, instead of an lstat of each missing name (three per
    blueprint: the existence check and each file's mode to keep)."""
    store.save("f/old", "v: 0\n")
    root = str(home / "blueprints")
    missing: list[str] = []
    real_lstat = os.lstat

    def spying_lstat(path, *args, **kwargs):
        try:
            return real_lstat(path, *args, **kwargs)
        except FileNotFoundError:
            name = os.fspath(path)
            if name.startswith(root) and not name.endswith(fs.TEMP_SUFFIX):
                missing.append(name)
            raise

    monkeypatch.setattr(os, "lstat", spying_lstat)
    results = store.save_many([SaveRequest(path=f"f/new-{i}", content="v: 1\n") for i in range(20)])
    monkeypatch.undo()
    assert not any(isinstance(r, Exception) for r in results)
    # (The first new name is looked up before the batch lists its folder.)
    assert len(missing) <= 1, missing
    assert store.check().clean


def test_a_listed_folder_keeps_a_replaced_files_mode_and_an_unindexed_file(
    store, home: Path
) -> None:
    """What the listing stands in for still holds: a file the batch replaces keeps its mode,
    and a file the index has not seen (written while nothing ran) is recorded before the batch
    saves over it, both after the batch listed their folder for a new name."""
    kept = store.save("f/kept", "v: 0\n")
    kept_file = store.abspath(kept.path)
    kept_file.chmod(0o600)
    stray = home / "blueprints" / "f" / ("stray" + fs.YAML_SUFFIX)
    stray.write_text("by: hand\n")
    results = store.save_many(
        [
            SaveRequest(path="f/new", content="v: 1\n"),  # lists f/
            SaveRequest(path="f/kept", content="v: 1\n", id=kept.id),
            SaveRequest(path="f/stray", content="v: 1\n"),
        ]
    )
    assert not any(isinstance(r, Exception) for r in results)
    assert stat.S_IMODE(kept_file.stat().st_mode) == 0o600
    new_mode = stat.S_IMODE(store.abspath("f/new.blueprint.yaml").stat().st_mode)
    assert new_mode == stat.S_IMODE(store.abspath("f/stray.blueprint.yaml").stat().st_mode)
    first = store.history("f/stray")[-1]
    assert store.load_revision("f/stray", first.rev).content == "by: hand\n"
    assert store.load("f/stray").content == "v: 1\n"
    assert store.check().clean
