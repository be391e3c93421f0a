"""A sync pass that fails part-way leaves the disk as the index describes it.

The engine applies a push's conflicts and a pull's rows inside one outer index transaction; each
store save, move or delete in it is only a savepoint. When a later row fails (a full disk), the
outer transaction rolls back, and before the fix the files of the earlier rows stayed: conflict
copies and moved pairs with no index row, which the next reconcile adopted as new blueprints
(duplicates of the copies the resync makes again, synced to every device).

Real homes, real SQLite, one MemoryServer; the only mock is the injected fault.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localstore import files as fs
from localstore.config import load_settings
from localstore.errors import DiskFullError
from localstore.store import BlueprintStore
from sync import _apply
from sync import _state as sync_state
from sync.engine import SyncEngine
from sync.memory_remote import MemoryServer

from .conftest import Device, assert_converged, close_device, converge, open_device

N = 10


def pairs_on_disk(dev: Device) -> set[str]:
    """Relative paths of every blueprint YAML under the home's blueprints folder."""
    root = dev.store.root
    found = set()
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.endswith(fs.YAML_SUFFIX):
                found.add(Path(folder, name).relative_to(root).as_posix())
    return found


def indexed(dev: Device) -> set[str]:
    return {info.path for info in dev.store.list()}


def assert_disk_matches_index(dev: Device) -> None:
    orphans = pairs_on_disk(dev) - indexed(dev)
    missing = indexed(dev) - pairs_on_disk(dev)
    assert not orphans, f"files with no index row: {sorted(orphans)}"
    assert not missing, f"index rows with no files: {sorted(missing)}"


def heal(server: MemoryServer, a: Device, b: Device, reopen: Callable[[Device], Device]) -> Device:
    """After the fault: b syncs again, is reopened (reconcile), syncs again; at every step its
    disk matches its index and in the end both devices match the server. Returns b reopened."""
    converge(a, b)
    assert_disk_matches_index(b)
    b = reopen(b)
    assert_disk_matches_index(b)
    converge(a, b)
    assert_converged(server, a, b)
    return b


def fail_on_call(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    nth: int,
    when: Callable[..., bool] = lambda *args, **kwargs: True,
) -> Callable[[], None]:
    """Make ``owner.name`` raise DiskFullError on its ``nth`` call for which ``when(*args)``
    holds; returns an undo."""
    real = getattr(owner, name)
    calls = [0]

    def faulty(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            calls[0] += 1
        if calls[0] == nth and when(*args, **kwargs):
            raise DiskFullError("write the index: the disk is full", hint="free some disk space")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, faulty)
    return lambda: monkeypatch.setattr(owner, name, real)


def at_cursor(cur: Any, key: str, value: str) -> bool:
    """The pull's apply saves its cursor last, in the transaction of its rows."""
    return key == "cursor"


@pytest.fixture
def two(make_device: Callable[..., Device]) -> Iterator[tuple[Device, Device, list[str]]]:
    a, b = make_device("a"), make_device("b")
    ids = [a.store.save(f"f/bp{i}", f"steps: 0\nn: {i}\n").id for i in range(N)]
    converge(a, b)
    yield a, b, ids


@pytest.fixture
def reopen(tmp_path: Path, server: MemoryServer) -> Iterator[Callable[[Device], Device]]:
    """Close a device and open its home again (reconcile on open, then once more explicitly)."""
    opened: list[Device] = []

    def again(dev: Device) -> Device:
        close_device(dev)
        new = open_device(tmp_path, dev.name, server)
        opened.append(new)
        new.store.reconcile()
        return new

    yield again
    for dev in opened:
        close_device(dev)


def test_a_failed_push_pass_leaves_no_conflict_copies_behind(
    server: MemoryServer,
    reopen: Callable[[Device], Device],
    two: tuple[Device, Device, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every one of b's pushes conflicts (a changed the same key) and is kept both ways; the
    conflict record of the last row fails. The 9 copies before it must not stay on disk."""
    a, b, _ = two
    for i in range(N):
        a.store.save(f"f/bp{i}", f"steps: 1\nn: {i}\n")
        b.store.save(f"f/bp{i}", f"steps: 2\nn: {i}\n")
    a.sync()
    before = indexed(b)
    restore = fail_on_call(monkeypatch, sync_state, "add_conflict", N)
    with pytest.raises(DiskFullError):
        b.sync()
    assert indexed(b) == before
    assert_disk_matches_index(b)
    for i in range(N):  # b's edits are still where they were, and still to be pushed
        assert b.text(f"f/bp{i}") == f"steps: 2\nn: {i}\n"
    restore()

    b = heal(server, a, b, reopen)
    texts = sorted(text for _, text in b.snapshot().values())
    # One main per blueprint (a's edit, which reached the server first) and one copy of each of
    # b's edits: no duplicates adopted from orphaned copies, no edit lost.
    assert texts == sorted(
        [f"steps: 1\nn: {i}\n" for i in range(N)] + [f"steps: 2\nn: {i}\n" for i in range(N)]
    )
    assert len(b.engine.conflicts()) == N


def test_a_failed_path_taken_leaves_no_moved_pairs_behind(
    server: MemoryServer,
    reopen: Callable[[Device], Device],
    make_device: Callable[..., Device],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """b's new blueprints each take a path a already gave to another one; each is moved to a
    conflict path, and the last move fails. The moves before it must be put back."""
    a, b = make_device("a"), make_device("b")
    for i in range(N):
        a.store.save(f"p/x{i}", f"from_a: {i}\n")
        b.store.save(f"p/x{i}", f"from_b: {i}\n")
    a.sync()
    before = indexed(b)
    restore = fail_on_call(monkeypatch, SyncEngine, "_path_taken", N)
    with pytest.raises(DiskFullError):
        b.sync()
    assert indexed(b) == before
    assert_disk_matches_index(b)
    for i in range(N):
        assert b.text(f"p/x{i}") == f"from_b: {i}\n"
    restore()

    b = heal(server, a, b, reopen)
    texts = sorted(text for _, text in b.snapshot().values())
    assert texts == sorted(
        [f"from_a: {i}\n" for i in range(N)] + [f"from_b: {i}\n" for i in range(N)]
    )


def test_a_failed_pull_leaves_no_pulled_files_behind(
    server: MemoryServer,
    reopen: Callable[[Device], Device],
    make_device: Callable[..., Device],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page of new rows is saved in one run, then the apply's transaction fails at its end."""
    a, b = make_device("a"), make_device("b")
    b.sync()
    for i in range(N):
        a.store.save(f"n/y{i}", f"new: {i}\n")
    a.sync()
    restore = fail_on_call(monkeypatch, sync_state, "set_state", 1, at_cursor)
    with pytest.raises(DiskFullError):
        b.sync()
    assert indexed(b) == set()
    assert_disk_matches_index(b)
    restore()

    b.sync()
    b = reopen(b)
    assert_disk_matches_index(b)
    converge(a, b)
    assert_converged(server, a, b)
    assert len(b.store.list()) == N


def test_a_failed_pull_puts_back_what_a_row_deleted_and_moved(
    server: MemoryServer,
    reopen: Callable[[Device], Device],
    two: tuple[Device, Device, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Remote moves and deletes applied before the failure are undone on disk as well."""
    a, b, ids = two
    for i, ident in enumerate(ids):
        if i % 2:
            a.store.delete(ident)
        else:
            a.store.move(ident, f"g/bp{i}")
    a.sync()
    snapshot = b.snapshot()
    restore = fail_on_call(monkeypatch, sync_state, "set_state", 1, at_cursor)
    with pytest.raises(DiskFullError):
        b.sync()
    assert b.snapshot() == snapshot
    assert_disk_matches_index(b)
    restore()

    b = reopen(b)
    converge(a, b)
    assert_converged(server, a, b)
    assert len(b.store.list()) == N // 2


def test_a_quarantined_row_leaves_no_conflict_copy(
    server: MemoryServer,
    two: tuple[Device, Device, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row's own savepoint rolled back after its conflict copy was saved (the row is parked):
    the copy goes with it, and the pass goes on."""
    a, b, _ = two
    a.store.save("f/bp0", "steps: 1\nn: 0\n")
    b.store.save("f/bp0", "steps: 2\nn: 0\n")
    a.sync()
    real = _apply.Applier._save_remote

    def refuse(self: _apply.Applier, cur: Any, r: Any) -> Any:
        raise _apply.InvalidInputError(f"server row {r.id} refused here")

    monkeypatch.setattr(_apply.Applier, "_save_remote", refuse)
    b.sync()
    assert_disk_matches_index(b)
    assert b.text("f/bp0") == "steps: 2\nn: 0\n"
    monkeypatch.setattr(_apply.Applier, "_save_remote", real)


def test_an_edit_made_during_a_failed_pass_is_not_put_back_over(
    server: MemoryServer,
    reopen: Callable[[Device], Device],
    two: tuple[Device, Device, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An editor saves over a file the pass wrote, then the pass fails: the undo leaves that
    file alone (reconcile records it) instead of writing the old version over the edit."""
    a, b, _ = two
    for i in range(N):
        a.store.save(f"f/bp{i}", f"steps: 1\nn: {i}\n")
        b.store.save(f"f/bp{i}", f"steps: 2\nn: {i}\n")
    a.sync()
    real = sync_state.add_conflict
    calls = [0]
    edited = b.store.abspath("f/bp0.blueprint.yaml")

    def edit_then_fail(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == N:
            edited.write_text("steps: 9\nn: 0\n")  # over a's version, which the pass wrote
            raise DiskFullError("write the index: the disk is full", hint="free some disk space")
        return real(*args, **kwargs)

    monkeypatch.setattr(sync_state, "add_conflict", edit_then_fail)
    with pytest.raises(DiskFullError):
        b.sync()
    assert edited.read_text() == "steps: 9\nn: 0\n"
    for i in range(1, N):
        assert b.text(f"f/bp{i}") == f"steps: 2\nn: {i}\n"
    monkeypatch.setattr(sync_state, "add_conflict", real)

    b = reopen(b)
    assert_disk_matches_index(b)
    converge(a, b)
    assert_converged(server, a, b)
    texts = [text for _, text in b.snapshot().values()]
    assert "steps: 9\nn: 0\n" in texts
    for i in range(1, N):
        assert texts.count(f"steps: 2\nn: {i}\n") == 1


def test_store_writes_inside_a_callers_transaction_go_back_with_it(tmp_path: Path) -> None:
    """The store-level contract the engine relies on: saves, moves and deletes released into a
    caller's transaction are undone on disk when it rolls back, newest first, and kept when it
    commits."""
    store = BlueprintStore(load_settings(home=tmp_path / "h", device_name="h"), maintenance=False)
    try:
        kept = store.save("keep", "v: 1\n")
        gone = store.save("gone", "g: 1\n")
        with pytest.raises(RuntimeError), store.index.write():
            store.save("new", "n: 1\n")
            store.save("keep", "v: 2\n")
            store.move(kept.id, "sub/moved")
            store.save("sub/moved", "v: 3\n")
            store.delete(gone.id)
            store.save("gone", "other: 1\n")  # a new blueprint where the deleted one was
            raise RuntimeError("the caller fails after the writes")
        on_disk = {p.relative_to(store.root).as_posix() for p in store.root.rglob("*.yaml")}
        assert on_disk == {"keep.blueprint.yaml", "gone.blueprint.yaml"}
        assert not (store.root / "sub").exists()
        assert store.abspath("keep.blueprint.yaml").read_text() == "v: 1\n"
        assert store.abspath("gone.blueprint.yaml").read_text() == "g: 1\n"
        assert store.reconcile().clean and store.load(gone.id).content == "g: 1\n"

        with store.index.write():
            store.save("new", "n: 1\n")
        assert store.load("new").content == "n: 1\n"
        with pytest.raises(RuntimeError), store.index.write():
            raise RuntimeError("a later transaction rolls back")
        assert store.abspath("new.blueprint.yaml").read_text() == "n: 1\n"
    finally:
        store.close()


def test_a_pull_page_that_fails_after_its_first_chunk_is_pulled_again_whole(
    server: MemoryServer,
    make_device: Callable[..., Device],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page is applied in several transactions (``apply_batch`` rows each) and the cursor
    commits with the last one only: the second chunk fails, and the next pass pulls the rows of
    the chunks after the first again (with the cursor saved by the first, they were never
    applied here and never pulled again: lost on this device until a full reconcile)."""
    a, b = make_device("a"), make_device("b", apply_batch=4)
    b.sync()
    for i in range(N):
        a.store.save(f"n/y{i}", f"new: {i}\n")
    a.sync()
    restore = fail_on_call(monkeypatch, b.store, "save_many", 2)
    with pytest.raises(DiskFullError):
        b.sync()
    assert 0 < len(indexed(b)) < N  # (the first chunk committed on its own)
    restore()

    b.sync()
    assert len(b.store.list()) == N
    assert_converged(server, a, b)
