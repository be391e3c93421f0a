"""An app syncing in-process hears, through its store's subscribers, the saves, moves and deletes
that other processes make on its home (the CLI, another ``localstore.open()``), as the daemon's
control clients do: once each, after the commit, marked ``process="other"``; its own saves stay
``"this"`` and are never repeated as foreign. A foreign change wakes the engine for one cycle."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import localstore
from localstore.events import Event
from sync.embed import EmbeddedSync, lock_holder, start_sync
from sync.engine import SyncStatus
from sync.memory_remote import MemoryRemote, MemoryServer

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .conftest import REPO, eventually

# One tick of the embed's follower is 0.5 s; a foreign row waits one tick for a claim.
QUIET_S = 2.0


def _other_process(home: Path, code: str) -> dict[str, Any]:
    """Run ``code`` with ``s = localstore.open(home)`` in a fresh process; its printed JSON."""
    script = (
        "import json, localstore\n"
        f"s = localstore.open(home={str(home)!r})\n"
        "try:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "finally:\n    s.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


class _Heard:
    """A store subscriber that records every event and what the store showed at that moment."""

    def __init__(self, store: localstore.BlueprintStore) -> None:
        self.store = store
        self.events: list[Event] = []
        self.visible: list[bool] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        # The change must be committed and readable when a subscriber hears of it.
        if event.kind == "deleted":
            visible = not self.store.exists(event.path)
        else:
            visible = self.store.load(event.path).rev == event.rev
        with self._lock:
            self.events.append(event)
            self.visible.append(visible)

    def other(self) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.process == "other"]

    def wait_other(self, kind: str, path: str) -> Event:
        assert eventually(lambda: any(e.kind == kind and e.path == path for e in self.other()), 15)
        return next(e for e in self.other() if e.kind == kind and e.path == path)


def _settled(handle: EmbeddedSync) -> bool:
    # After a first cycle: a new engine is idle with nothing pending before its loop has run
    # one, and that first cycle, starting after this returned, was counted as the foreign
    # change's (two cycles, a flaky failure on a loaded machine).
    status = handle.engine.status()
    return status.state == "idle" and status.pending == 0 and status.last_synced_at is not None


def test_changes_by_another_process_reach_the_apps_store_subscribers(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """Before, EmbeddedSync found such rows only to wake its engine: the app's own subscribers
    (a sidebar listing blueprints, say) never learnt that the CLI saved, moved or deleted one."""
    server = MemoryServer()
    home = tmp_path / "app"
    store = stores(home=home)
    heard = _Heard(store)
    try:
        handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
        assert eventually(lambda: _settled(handle), 15)
        store.subscribe(heard)

        saved = _other_process(
            home,
            "b = s.save('other/one', 'v: 1\\n')\n"
            "print(json.dumps({'id': b.id, 'rev': b.rev, 'hash': b.content_hash}))",
        )
        created = heard.wait_other("created", "other/one.blueprint.yaml")
        assert (created.id, created.rev, created.content_hash) == (
            saved["id"],
            saved["rev"],
            saved["hash"],
        )
        assert created.origin == "local" and created.old_path is None
        assert created.to_dict()["process"] == "other"

        _other_process(
            home,
            "b = s.save('other/one', 'v: 2\\n')\nprint(json.dumps({'rev': b.rev}))",
        )
        modified = heard.wait_other("modified", "other/one.blueprint.yaml")
        assert modified.rev == created.rev + 1

        _other_process(
            home,
            "b = s.move('other/one', 'other/two')\nprint(json.dumps({'rev': b.rev}))",
        )
        moved = heard.wait_other("moved", "other/two.blueprint.yaml")
        assert moved.old_path == "other/one.blueprint.yaml" and moved.id == saved["id"]

        _other_process(home, "r = s.delete('other/two')\nprint(json.dumps({'rev': r.rev}))")
        deleted = heard.wait_other("deleted", "other/two.blueprint.yaml")
        assert deleted.id == saved["id"]

        # This process's own save: one event, "this", never published again as another's.
        mine = store.save("mine/x", "k: 1\n")
        time.sleep(QUIET_S)
        own = [e for e in heard.events if e.id == mine.id]
        assert [(e.kind, e.process) for e in own] == [("created", "this")]
        assert "process" not in own[0].to_dict()  # existing consumers see the dict they knew

        others = heard.other()
        assert [(e.kind, e.rev) for e in others] == [
            ("created", 1),
            ("modified", 2),
            ("moved", 3),
            ("deleted", 4),
        ]  # each once, in order
        # ... and only so: this process's watcher took the files for the echoes they are.
        assert [e for e in heard.events if e.id == saved["id"]] == others
        assert all(heard.visible), list(zip(heard.events, heard.visible, strict=True))
        assert all(e.origin == "local" for e in others)
        assert eventually(lambda: _settled(handle) and len(server.rows) == 2, 15)
    finally:
        store.close()


def test_a_change_by_another_process_runs_one_sync_cycle(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """The published event wakes the engine like an in-process save does; together with the
    follower's own wake-up it must still be one cycle, and that cycle's writes must not be taken
    for another process's change (a loop of cycles)."""
    server = MemoryServer()
    home = tmp_path / "app"
    store = stores(home=home)
    try:
        handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
        assert eventually(lambda: _settled(handle), 15)
        cycles: list[float] = []

        def count(status: SyncStatus) -> None:
            if status.state == "connecting":
                cycles.append(time.monotonic())

        handle.subscribe_status(count)
        heard = _Heard(store)
        store.subscribe(heard)
        _other_process(home, "b = s.save('other/one', 'v: 1\\n')\nprint(json.dumps({}))")
        heard.wait_other("created", "other/one.blueprint.yaml")
        assert eventually(lambda: len(server.rows) == 1 and _settled(handle), 15)
        time.sleep(QUIET_S)
        assert len(cycles) == 1, cycles
        assert len(heard.other()) == 1
    finally:
        store.close()


def test_closing_the_store_from_a_foreign_event_subscriber(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """Foreign events are delivered on the follower thread; a subscriber that closes the store
    there must stop the sync cleanly (the follower cannot join itself)."""
    server = MemoryServer()
    home = tmp_path / "app"
    store = stores(home=home)
    closed = threading.Event()
    on_thread: list[str] = []

    def on_event(event: Event) -> None:
        if event.process == "other" and not closed.is_set():
            on_thread.append(threading.current_thread().name)
            store.close()
            closed.set()

    handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
    store.subscribe(on_event)
    _other_process(home, "s.save('other/one', 'v: 1\\n')\nprint(json.dumps({}))")
    assert closed.wait(15)
    assert on_thread == ["localstore-sync-follow"]
    assert handle.engine.join(10)
    ticker = handle._ticker
    ticker.join(10)
    assert not ticker.is_alive()
    assert eventually(lambda: lock_holder(store.settings.paths.state) is None, 10)


def test_the_event_of_a_foreign_row_is_the_one_the_store_publishes_for_it(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """What another process's change looks like to the app is what the app's own store says for
    the same change (a move with new content is ``moved`` and ``modified``: it was ``moved``
    alone, and an app that re-reads on ``modified`` kept the old content). The daemon called a
    restore of a deleted blueprint ``moved`` or ``modified``; the store says ``created``."""
    # Imported here: the other tests of this file run (and fail on what they check) without it.
    from sync._follow import foreign_events

    store = stores(home=tmp_path / "h")
    own: list[Event] = []
    store.subscribe(own.append)

    def row(blueprint_id: str) -> tuple[Any, ...]:
        with store.index.read() as cur:
            return tuple(
                cur.execute(
                    "SELECT id, path, deleted, rev, op_id, content_hash FROM blueprints "
                    "WHERE id = ?",
                    (blueprint_id,),
                ).fetchall()[0]
            )

    def same(e: Event) -> tuple[Any, ...]:
        return (e.kind, e.id, e.path, e.origin, e.rev, e.old_path, e.content_hash)

    try:
        bp_id = ""  # the first step's blueprint; the later steps' lambdas read it when they run
        steps = [
            lambda: store.save("a/one", "v: 1\n"),
            lambda: store.save("a/one", "v: 2\n"),
            lambda: store.move("a/one", "a/two"),
            lambda: store.save("a/three", "v: 3\n", id=bp_id),  # moved with new content
            lambda: store.delete("a/three"),
            lambda: store.restore(bp_id, 2),
        ]
        for step in steps:
            own.clear()
            result = step()
            if not bp_id:
                assert isinstance(result, localstore.Blueprint)
                bp_id = result.id
            built = foreign_events(store, row(bp_id))
            assert all(e.process == "other" for e in built)
            assert all(e.process == "this" for e in own)
            assert [same(e) for e in built] == [same(e) for e in own], (own, built)
            assert {e.ts for e in built} == {max(store.history(bp_id), key=lambda r: r.rev).ts}
    finally:
        store.close()
