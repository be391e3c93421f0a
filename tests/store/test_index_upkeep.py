"""The index under long-running use: waiting for another process's write lock.

Real SQLite files, a real second process holding the write lock. No timing assertions: each test
asserts what happened while the lock was held, not how fast.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import localstore
from localstore.errors import IndexStoreError, StoreClosedError
from localstore.index import Index
from tests.conftest import eventually
from tests.store.lockholder import LockHolder, holders, waiting_for_lock

holder_factory = pytest.fixture(holders)


# -- waiting for another process's write lock -------------------------------------------------------


def test_reads_answer_while_writes_wait_for_another_process(
    tmp_path: Path, holder_factory: Callable[[Path], LockHolder]
) -> None:
    """The writers wait with the index lock released: this process's reads (a daemon's status)
    go on meanwhile, and every waiting write lands once the other process lets go."""
    store = localstore.open(home=tmp_path / "home")
    try:
        store.save("seen", "name: seen\n")
        holder = holder_factory(store.paths.index_db)
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                store.save(f"waiting/{n}", f"name: w{n}\n")
            except BaseException as exc:
                errors.append(exc)

        writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
        for w in writers:
            w.start()
        assert eventually(lambda: any(waiting_for_lock(w) for w in writers), 10)
        # Before the fix a read queued behind the waiting writer for the whole busy timeout (30 s).
        answered: list[int] = []

        def read() -> None:
            for _ in range(20):
                answered.append(len(store.list()))

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(15)
        assert not reader.is_alive(), "a read waited behind a write waiting for another process"
        assert answered == [1] * 20
        assert holder.holding and all(w.is_alive() for w in writers)  # still waiting
        holder.release()
        for w in writers:
            w.join(30)
        assert errors == []
        assert len(store.list()) == 4
        assert [store.load(f"waiting/{n}").data()["name"] for n in range(3)] == ["w0", "w1", "w2"]
    finally:
        store.close()


def test_close_does_not_wait_for_another_process_lock(
    tmp_path: Path, holder_factory: Callable[[Path], LockHolder]
) -> None:
    """A store closed while a save waits for another process's lock closes at once; the save
    fails (lock timeout or index closed) instead of holding the close for 30 s."""
    store = localstore.open(home=tmp_path / "home")
    holder = holder_factory(store.paths.index_db)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.save("late", "name: late\n")
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    assert eventually(lambda: waiting_for_lock(writer), 10)
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(20)
    closed_while_held = not closer.is_alive() and holder.holding
    holder.release()
    closer.join(60)
    writer.join(60)
    assert closed_while_held, "close() waited for another process's write lock"
    # Which one depends on whether the close came between two tries of the wait or during one.
    assert len(errors) == 1 and isinstance(errors[0], IndexStoreError | StoreClosedError)


def test_index_close_from_another_thread_ends_a_lock_wait(
    tmp_path: Path, holder_factory: Callable[[Path], LockHolder]
) -> None:
    """Index.close() takes the lock between two tries of the waiting write, which then reports
    the index closed."""
    index = Index(tmp_path / "index.db", busy_timeout_ms=60_000)
    holder = holder_factory(index.path)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            index.set_setting("k", "v")
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    assert eventually(lambda: waiting_for_lock(writer), 10)
    closer = threading.Thread(target=index.close)
    closer.start()
    closer.join(20)
    writer.join(20)
    done_while_held = not closer.is_alive() and not writer.is_alive() and holder.holding
    holder.release()
    closer.join(60)
    writer.join(60)
    index.close()
    assert done_while_held
    assert len(errors) == 1 and isinstance(errors[0], StoreClosedError)


def test_a_write_gives_up_after_the_busy_timeout_with_the_usual_error(
    tmp_path: Path, holder_factory: Callable[[Path], LockHolder]
) -> None:
    """The wait keeps its overall timeout and its error; reads answered while it lasted."""
    index = Index(tmp_path / "index.db", busy_timeout_ms=5_000)
    try:
        holder = holder_factory(index.path)
        errors: list[BaseException] = []

        def write() -> None:
            try:
                index.set_setting("k", "v")
            except BaseException as exc:
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        assert eventually(lambda: waiting_for_lock(writer), 10)
        assert index.get_setting("k") is None
        read_during_wait = writer.is_alive()
        writer.join(60)
        assert read_during_wait, "the read waited until the write gave up"
        assert len(errors) == 1 and isinstance(errors[0], IndexStoreError)
        assert "stayed locked by another process" in str(errors[0])
        assert holder.holding
        holder.release()
        index.set_setting("k", "v")
        assert index.get_setting("k") == "v"
    finally:
        index.close()
