"""Lifecycle, start-up rescans, invalid files, ignore rules, echo suppression and OS limits."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest
from watchdog.observers import inotify_c

from localstore.errors import StoreClosedError, WatcherError
from localstore.store import BlueprintStore
from localstore.watcher import Watcher, WatcherState

from .conftest import Recorder


def test_lifecycle_refuses_misuse(store: BlueprintStore, make_watcher) -> None:
    w: Watcher = make_watcher(store)
    assert w.state is WatcherState.NEW
    with pytest.raises(WatcherError):
        w.wait_idle()
    w.start()
    assert w.state is WatcherState.RUNNING
    with pytest.raises(WatcherError):
        w.start()
    w.stop()
    w.stop()  # idempotent
    w.join(10)
    assert w.state is WatcherState.STOPPED
    with pytest.raises(WatcherError):
        w.start()
    with pytest.raises(WatcherError):
        w.wait_idle()


def test_context_manager_and_store_close_stop_it(make_store, make_watcher) -> None:
    store = make_store()
    with make_watcher(store) as w:
        assert w.state is WatcherState.RUNNING
    assert w.state is WatcherState.STOPPED
    w2: Watcher = make_watcher(store)
    w2.start()
    store.close()
    assert w2.state is WatcherState.STOPPED
    with pytest.raises(StoreClosedError):
        make_watcher(store).start()


def test_change_while_nothing_ran_is_picked_up_at_start(make_store, make_watcher) -> None:
    store = make_store()
    bp = store.save("offline", "x: 1\n")
    store.close()
    (store.root / "offline.blueprint.yaml").write_text("x: 2\n")
    (store.root / "new.blueprint.yaml").write_text("fresh: true\n")
    store2 = make_store(reconcile=False)
    rec = Recorder()
    store2.subscribe(rec)
    w: Watcher = make_watcher(store2)
    w.start()
    assert w.wait_idle()
    got = sorted((e.kind, e.path, e.origin) for e in rec.take())
    assert got == [
        ("created", "new.blueprint.yaml", "external"),
        ("modified", "offline.blueprint.yaml", "external"),
    ]
    assert store2.load(bp.id).content == "x: 2\n"
    assert store2.check().clean


def test_synchronous_rescan_when_not_running(make_store, make_watcher) -> None:
    store = make_store()
    bp = store.save("s", "x: 1\n")
    (store.root / "s.blueprint.yaml").write_text("x: 3\n")
    os.unlink(store.root / "s.blueprint.yaml")
    store.save("t", "y: 1\n")
    (store.root / "t.blueprint.yaml").write_text("y: 2\n")
    w: Watcher = make_watcher(store)
    report = w.rescan()
    assert (report.changed, report.missing) == (1, 1)
    assert not store.exists(bp.id)
    assert store.load("t").content == "y: 2\n"
    assert w.rescan().changed == 0


def test_invalid_yaml_keeps_last_good_and_heals(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    bp = store.save("fragile", "steps: [a, b]\n")
    assert watcher.wait_idle()
    recorder.take()
    path = store.abspath(bp.path)
    path.write_text("steps: [a, b\n  broken: {\n")
    assert watcher.wait_idle()
    events = recorder.take()
    assert [(e.kind, e.id) for e in events] == [("invalid", bp.id)]
    loaded = store.load(bp.id)
    assert loaded.content == "steps: [a, b]\n"
    assert not loaded.valid
    assert store.row(bp.id).flagged
    assert any(p["kind"] == "flagged" for p in store.check().problems)
    path.write_text("steps: [a, b, c]\n")
    assert watcher.wait_idle()
    assert [(e.kind, e.id) for e in recorder.take()] == [("modified", bp.id)]
    assert store.row(bp.id).flagged is None
    assert store.check().clean


def test_invalid_new_file_is_reported_not_indexed(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    (store.root / "bad.blueprint.yaml").write_text("- just\n- a list\n")
    assert watcher.wait_idle()
    assert [e.kind for e in recorder.take()] == ["invalid"]
    assert store.count() == 0


def test_store_writes_are_not_external_edits(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    external: list[object] = []
    watcher.subscribe(external.append)
    a = store.save("own/a", "x: 1\n")
    store.save("own/a", "x: 2\n")
    store.save("own/b", "y: 1\n", tags=["t"])
    store.move(a.id, "own/moved")
    store.delete("own/b")
    store.restore(a.id, 1)
    store.save("own/remote", "r: 1\n", origin="remote")
    store.save("own/remote", "r: 2\n", origin="remote")
    assert watcher.wait_idle()
    origins = {e.origin for e in recorder.take()}
    assert origins == {"local", "remote"}
    assert external == []
    assert watcher.stats.events == {}
    assert store.check().clean


def test_ignored_names_and_user_ignore_file(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    for name in (
        ".a.blueprint.yaml.swp",
        "a.blueprint.yaml~",
        "4913",
        ".goutputstream-ABC123",
        "a.blueprint.yaml___jb_tmp___",
        ".#a.blueprint.yaml",
        ".DS_Store",
        "notes.txt",
    ):
        (store.root / name).write_text("x: 1\n")
    os.makedirs(store.root / ".git")
    (store.root / ".git" / "x.blueprint.yaml").write_text("x: 1\n")
    (store.root / ".localstoreignore").write_text("# user rules\nscratch-*\n")
    assert watcher.wait_idle()
    (store.root / "scratch-1.blueprint.yaml").write_text("x: 1\n")
    (store.root / "kept.blueprint.yaml").write_text("x: 1\n")
    assert watcher.wait_idle()
    assert [(e.kind, e.path) for e in recorder.take()] == [("created", "kept.blueprint.yaml")]
    assert store.check().clean


def test_watch_limit_names_the_fix(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(fd: int, path: bytes, mask: int) -> int:
        ctypes.set_errno(errno.ENOSPC)
        return -1

    monkeypatch.setattr(inotify_c, "inotify_add_watch", exhausted)
    w: Watcher = make_watcher(store)
    # Not raised any more (a daemon then refused to start): rescan-only, DEGRADED, with the fix.
    w.start()
    assert w.state is WatcherState.DEGRADED
    assert "sudo sysctl fs.inotify.max_user_watches=524288" in (w.problem or "")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dead_reader_thread_is_restarted(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    reader = watcher._observer._inotify_fd  # fault injection: watchdog's reader thread dies

    def broken(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EIO, "injected read failure")

    reader.read_events = broken
    (store.root / "poke.tmp").write_text("wake the reader so it fails")
    reader.join(10)
    assert not reader.is_alive()
    (store.root / "after.blueprint.yaml").write_text("x: 1\n")
    # The health check (every 2 s) restarts the observer; its rescan finds the file.
    w = watcher
    for _ in range(20):
        if w.stats.restarts:
            break
        w.wait_idle()
    assert w.stats.restarts == 1
    assert w.wait_idle()
    assert [(e.kind, e.path) for e in recorder.take()] == [("created", "after.blueprint.yaml")]


def test_a_store_closed_while_the_watcher_starts_leaves_no_thread(
    make_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """start() registers its close hook last, once its threads run: a store closed by another
    thread just before (an app quitting while its watcher starts) refused the hook, and start()
    raised StoreClosedError with the observer's threads and the home's watch mark left behind,
    for the life of the process (nothing stops a watcher that never ran)."""
    store = make_store()
    register = store.on_close

    def closed_just_before(hook):  # (fault injection: the close lands at this exact point)
        store.close()
        return register(hook)

    monkeypatch.setattr(store, "on_close", closed_just_before)
    w = Watcher(store)
    with pytest.raises(StoreClosedError):
        w.start()
    observer = w._observer
    assert observer is not None and not observer.is_alive()
    w.join(10)
    assert w.state is WatcherState.STOPPED
