"""Adversarial review of the in-process follower (session 7): this process's own changes must
never reach the app's subscribers a second time as another process's (``process="other"``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import localstore
from localstore.events import Event
from localstore.store import SaveRequest
from sync.embed import start_sync
from sync.memory_remote import MemoryRemote, MemoryServer

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .conftest import eventually


def test_own_changes_are_not_published_as_other_while_subscribers_are_slow(
    stores: StoreOpener,
    tmp_path: Path,
) -> None:
    """A batch's events are delivered one after the other, every subscriber for each: the
    follower's claim for the 20th event ran only after the app's subscriber handled the 19
    before it. Meanwhile the tick thread found those rows and published them as "other"."""
    store = stores(home=tmp_path / "app")
    heard: list[Event] = []
    lock = threading.Lock()

    def slow(event: Event) -> None:
        time.sleep(0.15)  # an app that updates a view per event
        with lock:
            heard.append(event)

    try:
        handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
        assert eventually(lambda: handle.engine.status().state == "idle", 15)
        store.subscribe(slow)
        saver = threading.Thread(
            target=store.save_many,
            args=([SaveRequest(f"mine/b{n:02}", f"n: {n}\n") for n in range(20)],),
        )
        saver.start()
        # Another connection commits while those events are being delivered: the follower
        # looks at the index, and finds this store's rows as well as that one.
        time.sleep(0.5)
        other_store = stores(home=tmp_path / "app")
        try:
            other_store.save("theirs/one", "v: 1\n")
        finally:
            other_store.close()
        saver.join(30)
        assert eventually(lambda: any(e.path.startswith("theirs/") for e in heard), 15)
        time.sleep(1.5)  # a few ticks after the last delivery
        with lock:
            other = [e.path for e in heard if e.process == "other"]
            mine = [e for e in heard if e.process == "this"]
        assert len([e for e in mine if e.path.startswith("mine/")]) == 20
        assert other == ["theirs/one.blueprint.yaml"]
    finally:
        store.close()


def test_the_daemons_own_changes_are_not_counted_as_other_while_delivery_is_slow(
    inproc_daemon, tmp_path: Path
) -> None:
    """The daemon claimed its store's events one by one as it forwarded them, so a slow delivery
    of a large batch let the follower find its own rows first and announce them as another
    process's (the same race as the in-process sync's above)."""
    home = tmp_path / "shared"
    d = inproc_daemon(home)
    store = d.daemon.store
    assert store is not None
    store.subscribe(lambda _event: time.sleep(0.15))  # a slow in-process listener
    saver = threading.Thread(
        target=store.save_many,
        args=([SaveRequest(f"mine/b{n:02}", f"n: {n}\n") for n in range(20)],),
    )
    saver.start()
    time.sleep(0.5)
    with localstore.open(home=home) as other_store:  # another connection's commit, meanwhile
        other_store.save("theirs/one", "v: 1\n")
    saver.join(30)
    assert eventually(lambda: d.daemon.metrics.foreign_changes >= 1, 15)
    time.sleep(2.0)  # a few ticks after the last delivery
    assert d.daemon.metrics.foreign_changes == 1


def test_no_foreign_event_is_delivered_once_the_store_is_closing(
    stores: StoreOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower's tick ran its remaining steps after stop() set ``_done``: a row found by
    the tick before was published while the app's ``close()`` was under way (and its UI,
    say, torn down). Only the timing is injected: the tick's session check waits, once a
    foreign row waits to be published, until the close has begun."""
    home = tmp_path / "app"
    store = stores(home=home)
    heard: list[tuple[Event, bool]] = []
    store.subscribe(lambda e: heard.append((e, store.closed)))
    handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    closing = threading.Thread(target=store.close, name="test-close")
    try:
        waiting = threading.Event()

        def session_check() -> None:
            # A row found by this tick's predecessor is published by this tick's last step.
            if handle._foreign._candidates and not waiting.is_set():
                waiting.set()
                assert handle._done.wait(10)

        monkeypatch.setattr(handle, "_check_session", session_check)
        with localstore.open(home=home) as other:
            other.save("theirs/one", "v: 1\n")
        assert waiting.wait(10)
        closing.start()
        closing.join(30)
        assert not closing.is_alive()
    finally:
        store.close()
    handle._ticker.join(10)
    assert not handle._ticker.is_alive()
    assert [(e.path, closed) for e, closed in heard if closed] == []


def test_a_save_by_another_process_as_the_sync_starts_is_heard(
    stores: StoreOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower took the highest op_id first and the index's data_version after it: a
    commit of another process in between was in neither, so no tick looked for it, and the app
    heard of it only when some later commit of another process moved data_version again. Only
    the timing is injected: the other store commits right after the op_id is read."""
    from sync._follow import ForeignChanges

    home = tmp_path / "app"
    store = stores(home=home)
    other = stores(home=home)
    heard: list[Event] = []
    store.subscribe(heard.append)
    read_max = ForeignChanges._max_op_id
    saved: list[str] = []

    def read_then_commit(self: ForeignChanges) -> int:
        value = read_max(self)
        if not saved:
            saved.append(other.save("theirs/early", "v: 1\n").id)
        return value

    monkeypatch.setattr(ForeignChanges, "_max_op_id", read_then_commit)
    start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600, watch=False)
    assert eventually(lambda: any(e.process == "other" for e in heard), 5), heard
    assert [(e.kind, e.id) for e in heard if e.process == "other"] == [("created", saved[0])]
