"""The index under long-running use: waiting for another process's write lock, maintenance that
fails, a WAL that a burst left large.

Real SQLite files, a real second process holding the write lock; mocks only inject faults (a
maintenance round raising apsw.FullError as on a full disk). No timing assertions: each test asserts
what happened while the lock was held, not how fast.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

import localstore
from localstore import _index_connect
from localstore._index_connect import WAL_HARD_LIMIT, WAL_SIZE_LIMIT
from localstore._index_upkeep import WAL_IDLE_TRUNCATE
from localstore.errors import IndexStoreError, StoreClosedError
from localstore.index import (
    Index,
    Maintainer,
    wal_size,
)
from localstore.store import SaveRequest
from tests.conftest import eventually
from tests.store.lockholder import LockHolder, holders, waiting_for_lock

holder_factory = pytest.fixture(holders)


def _blueprint(i: int, size: int = 4000, salt: str = "") -> str:
    body = "".join(
        f"  - step {i}-{k} {salt} lorem ipsum dolor sit amet\n" for k in range(size // 40)
    )
    return f"name: bp{i}\nsteps:\n{body}"


def _waiting_write(write: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``write`` on a thread until it waits for the other process's lock; what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            write()
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=run)
    writer.start()
    assert eventually(lambda: waiting_for_lock(writer), 10)
    return writer, errors


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
    writer, errors = _waiting_write(lambda: store.save("late", "name: late\n"))
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
    writer, errors = _waiting_write(lambda: index.set_setting("k", "v"))
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
        writer, errors = _waiting_write(lambda: index.set_setting("k", "v"))
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


# -- maintenance that fails -------------------------------------------------------------------------


def _fail_first_round(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> list[int]:
    calls: list[int] = []
    real = Maintainer._round

    def flaky(self: Maintainer, conn: apsw.Connection) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise exc
        real(self, conn)

    monkeypatch.setattr(Maintainer, "_round", flaky)
    return calls


def test_the_maintainer_survives_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A round failing with apsw.FullError is logged and retried; it no longer ends the only
    checkpointer of the process."""
    store = localstore.open(home=tmp_path / "home", maintenance=False)
    store.save("a", "name: a\n")
    calls = _fail_first_round(monkeypatch, apsw.FullError("database or disk is full"))
    m = Maintainer(store.paths.index_db, every_commits=1)
    m.start()
    try:
        with caplog.at_level(logging.WARNING, logger="localstore.index"):
            m.notify_commit()  # wakes it: the injected failure
            assert eventually(lambda: len(calls) >= 1, 10)

            def next_round_ran() -> bool:
                m.notify_commit()
                return len(calls) >= 2 and m.health()["rounds"] >= 1

            assert eventually(next_round_ran, 20), "no round ran after the failure"
        health = m.health()
        assert health["running"] and health["failed_rounds"] == 0
        assert "FullError" in (health["last_error"] or "")
        assert any("maintenance failed" in r.getMessage() for r in caplog.records)
    finally:
        m.stop()
        m.join(10)
        store.close()


def test_the_maintainer_survives_a_fault_that_lasts_more_than_a_thousand_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its back-off after failed rounds was 2.0 ** (failures - 1): at the 1,025th failed round
    in a row (about 8.5 hours of a full disk at one round every 30 s) the float overflowed, the
    OverflowError ended the thread, and each restart by a later commit died the same way at
    once, so nothing checkpointed the WAL again until the process restarted. Many fast rounds
    here (a 1 ms interval); the fault is injected, the index and its rounds are real."""
    store = localstore.open(home=tmp_path / "home", maintenance=False)
    store.save("a", "name: a\n")
    calls: list[int] = []
    failing = 1100
    real = Maintainer._round

    def full_disk_for_a_while(self: Maintainer, conn: apsw.Connection) -> None:
        calls.append(1)
        if len(calls) <= failing:
            raise apsw.FullError("database or disk is full")
        real(self, conn)

    monkeypatch.setattr(Maintainer, "_round", full_disk_for_a_while)
    m = Maintainer(store.paths.index_db, interval_s=0.001)
    m.start()
    try:
        assert eventually(lambda: m.health()["rounds"] >= 1, 60), (
            f"no round succeeded after the fault: {len(calls)} round(s) ran, {m.health()}"
        )
        health = m.health()
        assert health["running"] and health["failed_rounds"] == 0 and health["restarts"] == 0
        assert len(calls) > failing
    finally:
        m.stop()
        m.join(10)
        store.close()


class _Fatal(BaseException):
    """Ends the maintainer thread (an error no per-round boundary catches)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_maintainer_is_restarted_by_the_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = localstore.open(home=tmp_path / "home")
    m = store._maintainer
    assert m is not None
    calls = _fail_first_round(monkeypatch, _Fatal("injected"))
    try:
        first = m._thread
        assert first is not None
        m._wake.set()
        first.join(10)
        assert not first.is_alive() and calls == [1]
        store.save("after", "name: after\n")  # the next commit notices
        assert m._thread is not first and m._thread is not None and m._thread.is_alive()
        assert m.health()["restarts"] == 1
        m._wake.set()
        assert eventually(lambda: len(calls) >= 2 and m.health()["rounds"] >= 1, 20)
        assert store.index_health()["maintainer"]["running"]
    finally:
        store.close()


# -- the WAL's size ---------------------------------------------------------------------------------


def test_connections_cap_a_started_over_wal(tmp_path: Path) -> None:
    with localstore.open(home=tmp_path / "home") as store, store.index.read() as cur:
        assert cur.execute("PRAGMA journal_size_limit").fetchall()[0][0] == WAL_SIZE_LIMIT


def test_connections_run_wal_with_synchronous_full(tmp_path: Path) -> None:
    """An acknowledged save survives a power cut only with synchronous=FULL on every connection
    that commits. The field notes' trap: a pragma in a multi-statement execute is not applied
    until its cursor is consumed, and nothing else would notice a connection left on NORMAL."""
    with localstore.open(home=tmp_path / "home") as store:
        with store.index.read() as cur:
            assert cur.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"
            assert cur.execute("PRAGMA synchronous").fetchall()[0][0] == 2  # FULL
        upkeep = Maintainer(store.index.path, busy_timeout_ms=1000)._open()
        try:  # the maintainer's own connection commits FTS merges and compacted history
            assert upkeep.execute("PRAGMA synchronous").fetchall()[0][0] == 2
        finally:
            upkeep.close()


def test_the_maintainers_connection_flushes_as_the_stores_does_on_macos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On macOS the store's connection asks for F_FULLFSYNC (fsync there leaves data in the
    drive's cache), but the maintainer's did not, and it runs the checkpoints: a page copied into
    the database file, the WAL then started over, could be lost to a power cut. (SQLite accepts
    and reports these pragmas on Linux too, so the settings are checked here as macOS gets them.)"""
    with localstore.open(home=tmp_path / "home") as store:
        path = store.index.path
    # Only while the two connections are made: sys is every module's, and the rest of the
    # store would take macOS-only paths (F_FULLFSYNC) that Linux does not have.
    monkeypatch.setattr(_index_connect.sys, "platform", "darwin")
    try:
        own = _index_connect._connect(path, 1000)
        upkeep = Maintainer(path, busy_timeout_ms=1000)._open()
    finally:
        monkeypatch.undo()
    try:
        for pragma in ("synchronous", "fullfsync", "checkpoint_fullfsync"):
            theirs = own.execute(f"PRAGMA {pragma}").fetchall()[0][0]
            assert upkeep.execute(f"PRAGMA {pragma}").fetchall()[0][0] == theirs, pragma
        assert upkeep.execute("PRAGMA checkpoint_fullfsync").fetchall()[0][0] == 1
    finally:
        upkeep.close()
        own.close()


def test_an_idle_round_gives_back_what_a_burst_left_in_the_wal(tmp_path: Path) -> None:
    store = localstore.open(home=tmp_path / "home", maintenance=False)
    try:
        store.save_many(
            [SaveRequest(path=f"imp/bp{i}", content=_blueprint(i)) for i in range(1000)]
        )
        assert wal_size(store.paths.index_db) > WAL_IDLE_TRUNCATE
        m = Maintainer(store.paths.index_db)
        m.notify_commit()  # a round with a commit since the last: checkpoints, keeps the file
        m.run_once()
        assert wal_size(store.paths.index_db) > WAL_IDLE_TRUNCATE
        m.run_once()  # no commit since: idle
        assert wal_size(store.paths.index_db) == 0
        assert store.load("imp/bp999").data()["name"] == "bp999"
        store.save("after", "name: after\n")
        assert store.index.integrity_check() == []
    finally:
        store.close()


def _wal_starts(index_db: Path) -> int:
    """How many times SQLite has started this WAL over (its header's checkpoint sequence)."""
    with open(f"{index_db}-wal", "rb") as wal:
        return int(struct.unpack(">I", wal.read(16)[12:16])[0])


def test_steady_saves_write_over_a_started_over_wal_instead_of_growing_it(
    tmp_path: Path,
) -> None:
    """Under steady saving the WAL is started over every WAL_HARD_LIMIT, and its file is not
    cut when it is (so the next commits write over blocks it has instead of appending: a
    commit that grows the file pays for the new blocks and size in its flush). With no
    maintainer: the writer's own checkpoints alone keep it so."""
    assert WAL_HARD_LIMIT <= WAL_SIZE_LIMIT
    store = localstore.open(home=tmp_path / "home", maintenance=False)
    try:
        largest = 0
        # ~20 pages a save: about 2.5 times the limit in WAL frames.
        saves = 5 * WAL_HARD_LIMIT // (2 * 20 * 4096)
        for i in range(saves):
            store.save(f"p/bp{i % 10}", _blueprint(i % 10, salt=str(i)))
            largest = max(largest, wal_size(store.paths.index_db))
        assert _wal_starts(store.paths.index_db) >= 2
        # (One commit past the limit before the writer's checkpoint, and the page padding.)
        assert largest <= WAL_HARD_LIMIT + 1024 * 1024
        assert store.index.integrity_check() == []
    finally:
        store.close()


def test_a_wal_past_the_hard_limit_is_checkpointed_by_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With no maintainer (or one that cannot keep up), the WAL stays near the hard limit
    instead of growing by every save."""
    monkeypatch.setattr(_index_connect, "WAL_HARD_LIMIT", 1024 * 1024)
    monkeypatch.setattr(_index_connect, "WAL_FALLBACK_STEP", 256 * 1024)
    store = localstore.open(home=tmp_path / "home", maintenance=False)
    try:
        with caplog.at_level(logging.INFO, logger="localstore.index"):
            # ~20 pages a save: about 10 MB of WAL frames in all.
            for i in range(120):
                store.save(f"p/bp{i % 10}", _blueprint(i % 10, salt=str(i)))
        assert wal_size(store.paths.index_db) < 4 * 1024 * 1024
        assert any("a save checkpointed it" in r.getMessage() for r in caplog.records)
        assert store.index.integrity_check() == []
    finally:
        store.close()


class _StallingVFS(apsw.VFS):
    """The default VFS, but while ``armed`` a file's sync waits for ``release``: a checkpoint
    run through it stalls holding SQLite's checkpoint lock (a slow disk, a descheduled
    process), which is how another connection's checkpoint finds it busy."""

    NAME = "stalling"

    def __init__(self) -> None:
        self.armed = False
        self.inside = threading.Event()
        self.release = threading.Event()
        super().__init__(self.NAME, base="")

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        return _StallingFile(self, name, flags)


class _StallingFile(apsw.VFSFile):
    def __init__(self, vfs: _StallingVFS, name: Any, flags: list[int]) -> None:
        self._vfs = vfs
        super().__init__("", name, flags)

    def xSync(self, flags: int) -> None:
        if self._vfs.armed:
            self._vfs.inside.set()
            assert self._vfs.release.wait(30)
        super().xSync(flags)


def test_a_checkpoint_that_found_another_running_is_tried_again_at_the_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past WAL_HARD_LIMIT a commit checkpoints, then only a WAL_FALLBACK_STEP later. One that
    found another connection checkpointing (busy: it copied nothing) counted as done, so the
    WAL grew a whole step before the next try (51 MB against a bound of 33 under CI load, two
    busy tries in a row). Now the next commit tries again."""
    monkeypatch.setattr(_index_connect, "WAL_HARD_LIMIT", 1024 * 1024)
    monkeypatch.setattr(_index_connect, "WAL_FALLBACK_STEP", 16 * 1024 * 1024)
    store = localstore.open(home=tmp_path / "home", maintenance=False)
    vfs = _StallingVFS()
    other = apsw.Connection(str(store.paths.index_db), vfs=_StallingVFS.NAME)
    db = store.paths.index_db
    try:
        other.execute("PRAGMA synchronous=FULL").fetchall()  # (its checkpoint syncs)
        store.save("p/first", _blueprint(0))  # frames for the other's checkpoint to copy
        starts = _wal_starts(db)
        vfs.armed = True
        stalled = threading.Thread(
            target=other.wal_checkpoint, kwargs={"mode": apsw.SQLITE_CHECKPOINT_PASSIVE}
        )
        stalled.start()
        try:
            assert vfs.inside.wait(30)
            i = 0
            while wal_size(db) < 1024 * 1024 + 256 * 1024:  # past the limit: busy tries
                i += 1
                store.save(f"p/bp{i % 10}", _blueprint(i % 10, salt=str(i)))
        finally:
            vfs.armed = False
            vfs.release.set()
            stalled.join()
        before = wal_size(db)
        for n in range(40):  # ~3 MB of frames: the first commit's checkpoint runs now
            store.save(f"p/bp{n % 10}", _blueprint(n % 10, salt=f"after {n}"))
        assert _wal_starts(db) > starts  # checkpointed, and started over
        assert wal_size(db) < before + 1024 * 1024  # written over, not appended to
        assert store.index.integrity_check() == []
    finally:
        other.close()
        vfs.unregister()
        store.close()
