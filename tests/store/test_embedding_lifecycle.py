"""An app's store over its life in one process: dropped without close(), and a fork (a worker pool
with the fork start method) while it is open.

A store the app dropped without close() kept its maintainer thread, which went on checkpointing a
home nobody used (and held a connection to it) for the life of the process: one more per store an
app opened per task. A forked child that used the parent's store hung for ever (its save waited
for the parent's flush thread, which does not exist in the child, or for the index lock a parent
thread held at the fork), and with it the parent waiting for the child.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import localstore
import localstore._index_fork
from localstore.errors import StoreClosedError

FORK_CHILD_S = 60.0  # a generous bound: the child hangs for ever without the fix


def _open_save_drop(home: Path) -> set[threading.Thread]:
    """Open a store, save, and drop it without close(); the threads it started."""
    before = set(threading.enumerate())
    store = localstore.open(home=home)
    store.save("a/one", "k: 1\n")
    started = set(threading.enumerate()) - before
    del store
    return started


def test_a_store_dropped_without_close_stops_its_threads(home: Path) -> None:
    with pytest.warns(ResourceWarning, match="never closed"):
        started = _open_save_drop(home)
        gc.collect()  # (in case a cycle holds it)
    assert any(t.name == "localstore-maintainer" for t in started)
    for thread in started:
        thread.join(10)
    assert not [t.name for t in started if t.is_alive()]
    with localstore.open(home=home) as again:  # the home is fine
        assert [i.path for i in again.list()] == ["a/one.blueprint.yaml"]


def test_a_closed_store_is_collected_without_a_warning(home: Path) -> None:
    store = localstore.open(home=home)
    store.close()
    del store
    gc.collect()  # (filterwarnings=error: a ResourceWarning would fail the test)


def _in_child(body: Callable[[], str], on_fork: Callable[[], None] | None = None) -> str:
    """Run ``body`` in a forked child; what it returned (or raised), or 'hung'. ``on_fork`` runs
    in the parent as soon as the fork returned."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid and on_fork is not None:
        on_fork()
    if pid == 0:  # the child: report on the pipe and leave at once (no pytest teardown here)
        try:
            os.close(read_end)
            try:
                out = body()
            except BaseException as exc:  # (reported to the parent)
                out = f"{type(exc).__name__}: {exc}"
            os.write(write_end, out.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + FORK_CHILD_S
    try:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "hung"
            time.sleep(0.02)
        return os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)


def test_a_forked_child_using_the_parents_store_gets_an_error(
    store: localstore.BlueprintStore,
) -> None:
    bp = store.save("a/one", "k: 1\n")

    def child() -> str:
        out = []
        for call in (
            lambda: store.save("a/child", "k: 2\n"),
            lambda: store.load(bp.id),
            lambda: store.list(),
        ):
            try:
                call()
                out.append("ok")
            except StoreClosedError as exc:
                out.append(f"closed: {exc}")
        store.close()  # (the parent's resources are the parent's: nothing to do here)
        return "\n".join(out)

    result = _in_child(child)
    assert result != "hung"
    lines = result.splitlines()
    assert len(lines) == 3 and all(line.startswith("closed: ") for line in lines), result
    assert f"process {os.getpid()}" in lines[0] and "localstore.open()" in lines[0]
    # The parent's store goes on, and nothing of the child's attempt reached the home.
    store.save("a/two", "k: 3\n")
    assert [i.path for i in store.list()] == ["a/one.blueprint.yaml", "a/two.blueprint.yaml"]
    assert store.check().clean


def test_a_child_forked_during_a_save_closes_the_store_without_a_hang(
    store: localstore.BlueprintStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker thread of the parent held the index lock at the fork: the child's copy of that lock
    stays taken for ever, so nothing in the child may wait for it. (A fork waits for the lock,
    FORK_WAIT_S at most: this thread holds it until the child is done, so the fork goes on
    without it, as after a transaction that outlasts the wait.)"""
    monkeypatch.setattr(localstore._index_fork, "FORK_WAIT_S", 0.2)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.index.write():
            inside.set()
            release.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert inside.wait(30)

        def child() -> str:
            try:
                store.index.read().__enter__()
            except StoreClosedError:
                pass
            store.close()
            return f"closed={store.closed}"

        result = _in_child(child)
    finally:
        release.set()
        worker.join(30)
    assert result == "closed=True"
    assert not store.closed
    store.save("a/after", "k: 1\n")


def test_a_child_forked_during_a_save_can_open_and_write_the_home(home: Path) -> None:
    """The docs tell a forked child to open the home again with localstore.open(). SQLite keeps
    the locks of every connection to a file in one table per process: a child forked while a
    thread of the parent was inside a write transaction inherited "this process holds the write
    lock", which no connection of the child ever releases, so every write of the child's own
    store waited out the busy timeout and failed ("the index stayed locked by another process
    ... try again": it never would). A fork now waits for the store's transaction to end."""
    store = localstore.open(home=home)
    try:
        inside, forked = threading.Event(), threading.Event()

        def hold() -> None:
            # A save in flight: the write transaction ends once the fork returned (or after 2 s,
            # which is what the fork now waits for).
            with store.index.write():
                inside.set()
                forked.wait(2)

        worker = threading.Thread(target=hold)
        worker.start()
        try:
            assert inside.wait(30)

            def child() -> str:
                with localstore.open(home=home, busy_timeout_ms=1000) as own:
                    own.save("a/child", "k: 2\n")
                    return "saved"

            result = _in_child(child, on_fork=forked.set)
        finally:
            forked.set()
            worker.join(30)
        assert result == "saved"
        assert [i.path for i in store.list()] == ["a/child.blueprint.yaml"]
    finally:
        store.close()


def test_a_store_sent_to_a_spawned_process_is_refused_with_what_to_do(
    store: localstore.BlueprintStore,
) -> None:
    """The docs' other way to a worker process, the spawn start method, pickles the Process's
    arguments: an app that passed its store (as it would with fork) got "TypeError: cannot
    pickle '_thread.lock' object", naming neither the store nor what to do instead."""
    from multiprocessing.reduction import ForkingPickler

    with pytest.raises(localstore.InvalidInputError) as refused:
        ForkingPickler.dumps(store)
    assert "store" in refused.value.message
    assert (
        "localstore.open(" in refused.value.hint and str(store.settings.home) in refused.value.hint
    )
    store.save("a/still", "k: 1\n")  # (the store is untouched)


def test_no_subscriber_hears_an_event_once_close_returned(home: Path) -> None:
    """An app that closes its store in answer to an event (the person quit, the view closed)
    tears its model down; no subscriber is called after close() returned, as after an
    unsubscribe. Before, the rest of the batch under way (a save_many, a pulled page, another
    process's changes found by an in-process sync) still reached every subscriber, each call
    for a store that was closed, the app's model already gone."""
    store = localstore.open(home=home)
    heard: list[tuple[str, str]] = []
    after_close: list[str] = []

    def closer(event: localstore.Event) -> None:
        heard.append(("closer", event.path))
        if store.closed:
            after_close.append(f"closer {event.path}")
        store.close()

    def view(event: localstore.Event) -> None:
        heard.append(("view", event.path))
        if store.closed:
            after_close.append(f"view {event.path}")

    store.subscribe(closer)
    store.subscribe(view)
    results = store.save_many(
        [localstore.SaveRequest(f"a/{n}", f"k: {n}\n") for n in ("one", "two", "three")]
    )
    assert store.closed
    assert all(isinstance(r, localstore.Blueprint) for r in results)  # (committed: kept)
    assert after_close == []
    assert heard == [("closer", "a/one.blueprint.yaml")]
    with localstore.open(home=home) as again:
        assert again.count() == 3
