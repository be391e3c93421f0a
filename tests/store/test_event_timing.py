"""Change events are delivered only once their change is committed, after the index lock is released.

The sync engine applies remote changes through ``store.save``/``save_many``/``delete`` inside its
own index transaction; events published there used to reach subscribers before that transaction
committed (other connections could not see the change yet, a rollback left a phantom event) and
while the sync thread held the index lock (a subscriber waiting on another thread that reads the
store deadlocked). Also here: ``Index.close()`` from inside a transaction of the closing thread.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from pathlib import Path

import pytest

import localstore
from localstore.errors import NotFoundError, StoreClosedError
from localstore.events import Event
from localstore.index import Index
from sync import _state as sync_state
from sync.engine import SyncEngine
from sync.memory_remote import MemoryRemote, MemoryServer


class _Boom(Exception):
    """An injected fault."""


def _two_devices(tmp_path: Path) -> tuple[localstore.BlueprintStore, ...]:
    a = localstore.open(home=tmp_path / "a")
    b = localstore.open(home=tmp_path / "b")
    return a, b


def test_a_remote_change_is_announced_after_its_commit_and_outside_the_index_lock(
    tmp_path: Path,
) -> None:
    server = MemoryServer()
    a, b = _two_devices(tmp_path)
    b_other = localstore.open(home=tmp_path / "b")  # another window on the same home
    ui = cf.ThreadPoolExecutor(1, thread_name_prefix="ui")
    seen: list[tuple[str, str, object, object]] = []

    def rev_in(store: localstore.BlueprintStore, blueprint_id: str) -> object:
        try:
            return store.resolve(blueprint_id).rev
        except NotFoundError:
            return "not found"

    def on_event(ev: Event) -> None:
        other = rev_in(b_other, ev.id)
        try:
            # A UI that hands the event to its own thread and waits for it.
            ui_rev: object = ui.submit(rev_in, b, ev.id).result(timeout=5)
        except cf.TimeoutError:
            ui_rev = "deadlock"
        seen.append((ev.kind, ev.origin, other, ui_rev))

    try:
        ea = SyncEngine(a, MemoryRemote(server, user="u"))
        eb = SyncEngine(b, MemoryRemote(server, user="u"))
        b.subscribe(on_event)
        a.save("shared/x", "a: 1\n")
        a.save("shared/y", "a: 2\n")
        ea.sync_once()
        eb.sync_once()
        assert sorted(seen) == [("created", "remote", 1, 1)] * 2
        seen.clear()
        a.delete("shared/x")
        ea.sync_once()
        eb.sync_once()
        # The delete is committed when announced: neither handle finds the blueprint.
        assert seen == [("deleted", "remote", "not found", "not found")]
    finally:
        ui.shutdown(wait=True, cancel_futures=True)
        for s in (b_other, b, a):
            s.close()


def test_a_rolled_back_apply_announces_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = MemoryServer()
    a, b = _two_devices(tmp_path)
    try:
        ea = SyncEngine(a, MemoryRemote(server, user="u"))
        eb = SyncEngine(b, MemoryRemote(server, user="u"))
        heard: list[Event] = []
        b.subscribe(heard.append)
        a.save("shared/x", "a: 1\n")
        ea.sync_once()

        def fail(*_args: object, **_kwargs: object) -> None:
            raise _Boom("injected after the apply's saves, before its commit")

        # Runs inside the engine's apply transaction, right after store.save_many saved the rows.
        monkeypatch.setattr(sync_state, "record_synced_bases", fail)
        with pytest.raises(_Boom):
            eb.sync_once()
        assert heard == []
        assert not b.exists("shared/x")
    finally:
        b.close()
        a.close()


def test_events_wait_for_the_callers_transaction(store) -> None:
    heard: list[str] = []
    store.subscribe(lambda ev: heard.append(ev.path))
    with store.index.write():
        store.save("t/one", "a: 1\n")
        assert heard == []  # not committed yet
    assert heard == ["t/one.blueprint.yaml"]

    heard.clear()
    with pytest.raises(_Boom), store.index.write():
        store.save("t/two", "a: 1\n")
        raise _Boom
    assert heard == []  # rolled back: no event, ever
    store.save("t/three", "a: 1\n")
    assert heard == ["t/three.blueprint.yaml"]  # no transaction open: at once


def test_a_rolled_back_savepoint_drops_only_its_own_events(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    done: list[str] = []
    try:
        with index.write():
            index.after_commit(lambda: done.append("outer"))
            with pytest.raises(_Boom), index.write():
                index.after_commit(lambda: done.append("rolled back"))
                raise _Boom
            with index.write():
                index.after_commit(lambda: done.append("released"))
            assert done == []
        assert done == ["outer", "released"]
    finally:
        index.close()


def test_after_commit_runs_after_the_lock_is_released(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    free: list[bool] = []

    def take() -> None:
        got = index._lock.acquire(timeout=2)
        free.append(got)
        if got:
            index._lock.release()

    def probe() -> None:
        # Another thread can take the index lock now (it could not if this one still held it).
        t = threading.Thread(target=take)
        t.start()
        t.join()

    try:
        with index.write():
            index.after_commit(probe)
        assert free == [True]
    finally:
        index.close()


def test_another_threads_transaction_does_not_hold_back_an_event(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    inside = threading.Event()
    leave = threading.Event()

    def hold() -> None:
        with index.write():
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(5)
        done: list[str] = []
        index.after_commit(lambda: done.append("now"))  # this thread has no transaction open
        assert done == ["now"]
    finally:
        leave.set()
        t.join()
        index.close()


def test_close_inside_a_transaction_waits_for_it_to_end(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    with index.write() as cur:
        cur.execute("CREATE TABLE t (x)")
        cur.execute("INSERT INTO t VALUES (1)")
        index.close()  # e.g. from a callback run by the code holding the transaction
        assert index.closed
        cur.execute("INSERT INTO t VALUES (2)")  # the transaction goes on unharmed
    assert index.closed
    with pytest.raises(StoreClosedError), index.read():
        pass
    again = Index(tmp_path / "index.db")
    try:
        with again.read() as cur:
            assert cur.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
    finally:
        again.close()


def test_close_inside_a_transaction_that_rolls_back_still_closes(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    with pytest.raises(_Boom), index.write() as cur:
        cur.execute("CREATE TABLE t (x)")
        index.close()
        raise _Boom
    assert index.closed
    again = Index(tmp_path / "index.db")
    try:
        with again.read() as cur:
            assert cur.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchall() == []
    finally:
        again.close()
