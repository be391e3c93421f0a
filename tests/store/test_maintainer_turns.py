"""The maintainer's writes take turns with the home's other writers (localstore/_write_turn.py).

It waited for the write lock with SQLite's busy handler, neither announcing itself nor giving
way: a process saving back to back (which gives way only to an announced waiter) kept its
compaction and search-index merges out for as long as the saves went on, and a saver that
waited behind a round waited for each of its writes in a row. Counts and orderings only: each
test waits for a state (with a generous deadline), never asserts how long anything took.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

import localstore
from localstore import _write_turn
from localstore._write_turn import WriteTurn
from localstore.index import Maintainer
from tests.store.lockholder import LockHolder, holders

holder_factory = pytest.fixture(holders)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A home's index holding one superseded revision (what a round compacts)."""
    home = tmp_path / "home"
    with localstore.open(home=home, maintenance=False) as store:
        store.save("a", "v: 1\n" + "line: text\n" * 50)
        store.save("a", "v: 2\n" + "line: text\n" * 50)
        return store.paths.index_db


def _compacted(db: Path) -> int:
    conn = apsw.Connection(str(db))
    try:
        rows = conn.execute("SELECT count(*) FROM revisions WHERE typeof(content) = 'blob'")
        return int(str(rows.fetchall()[0][0]))
    finally:
        conn.close()


@pytest.fixture
def round_on_thread() -> Iterator[Callable[[Maintainer], threading.Thread]]:
    """Run one maintainer round on a thread (joined at teardown); its error re-raised there."""
    started: list[tuple[threading.Thread, list[BaseException]]] = []

    def start(maintainer: Maintainer) -> threading.Thread:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                maintainer.run_once()
            except BaseException as exc:  # (re-raised in the test's thread below)
                errors.append(exc)

        thread = threading.Thread(target=run, name="localstore-test-maintainer")
        thread.start()
        started.append((thread, errors))
        return thread

    yield start
    for thread, errors in started:
        thread.join(60)
        assert not thread.is_alive()
        if errors:
            raise errors[0]


def _until(done: Callable[[], bool]) -> bool:
    """Wait for ``done()`` (a state, not a duration: the deadline only ends a broken test)."""
    deadline = time.monotonic() + 60
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _in_frame(thread: threading.Thread, name: str) -> bool:
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False


def test_a_maintainer_waiting_for_the_lock_announces_itself(
    db: Path,
    holder_factory: Callable[[Path], LockHolder],
    round_on_thread: Callable[[Maintainer], threading.Thread],
) -> None:
    """Another process holds the lock: the waiting maintainer says so in the turn file, which
    is what makes a writer about to begin (Index.write: one saving back to back) leave it the
    lock. Before, it waited unannounced, and that writer never gave way to it."""
    holder = holder_factory(db)
    saver = WriteTurn.open(db)  # the view of any other writer of the home
    assert saver is not None
    try:
        thread = round_on_thread(Maintainer(db, busy_timeout_ms=120_000))
        assert _until(lambda: saver.other_waiting() or not thread.is_alive())
        assert thread.is_alive() and saver.other_waiting()
        assert _compacted(db) == 0
        holder.release()
        thread.join(60)
        assert _compacted(db) == 1  # its round ran once the lock was free
        assert not saver.other_waiting()  # withdrawn once it had the lock
    finally:
        holder.release()  # (again: a failed assertion must not leave the round waiting)
        saver.close()


def test_a_maintainer_leaves_the_lock_to_a_writer_that_waits(
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    round_on_thread: Callable[[Maintainer], threading.Thread],
) -> None:
    """A writer announced that it waits: the round writes nothing until that one had its turn.
    Before, it took the lock at once, and the waiter waited for each of its writes in a row.
    (The announcement stays fresh, and the round gives way, as long as the test needs: a
    stalled test thread must not turn into a waiter that stopped polling.)"""
    monkeypatch.setattr(_write_turn, "FRESH_NS", 10**12)
    monkeypatch.setattr(_write_turn, "GIVE_WAY_MAX_S", 600.0)
    waiter = WriteTurn.open(db)
    assert waiter is not None
    try:
        waiter.announce()
        thread = round_on_thread(Maintainer(db, busy_timeout_ms=120_000))
        assert _until(lambda: _in_frame(thread, "_give_way") or not thread.is_alive())
        assert thread.is_alive(), "the round did not give way to the waiting writer"
        assert _compacted(db) == 0
        # The waiter's turn: the lock is free, and it withdraws once it has it.
        conn = apsw.Connection(str(db))
        try:
            conn.execute("BEGIN IMMEDIATE")
            waiter.withdraw()
            conn.execute("COMMIT")
        finally:
            conn.close()
        thread.join(60)
        assert _compacted(db) == 1
    finally:
        waiter.close()
