"""An app's in-process sync (store.start_sync) follows what the daemon follows: editor edits (its
watcher), saves of other processes, a logout and a new login; it stops cleanly when the store is
closed from its own thread, and says who holds the home when it cannot start (review r2)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import localstore
from localstore.events import Event
from localstore.watcher import Watcher, WatcherState
from sync.embed import HomeLock, lock_holder, start_sync
from sync.engine import SyncEngine, SyncStatus, WorkerState
from sync.errors import NotLoggedInError, SyncLockedError
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.supabase_remote import logout, remote_from_settings

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .conftest import eventually, home_settings, log_in, new_email, write_external

CLI = [sys.executable, "-c", "from localstore.cli import main; main()"]


def _server_text(server: MemoryServer) -> dict[str, str]:
    return {r.row.path: r.row.content for r in server.rows.values() if not r.row.deleted}


def test_an_editor_edit_is_synced_by_the_watcher_start_sync_starts(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """README says a file watcher picks up edits, but start_sync started none: an edit made in
    an editor reached the server only at the app's next load/save/open."""
    server = MemoryServer()
    store = stores(home=tmp_path / "app")
    try:
        store.save("notes/todo", "items: [a]\n")
        handle = store.start_sync(remote=MemoryRemote(server), poll_interval_s=3600)
        assert eventually(lambda: "notes/todo.blueprint.yaml" in _server_text(server), 15)
        write_external(store.root, "notes/todo.blueprint.yaml", "items: [a, b-from-editor]\n")
        assert eventually(
            lambda: (
                _server_text(server).get("notes/todo.blueprint.yaml")
                == "items: [a, b-from-editor]\n"
            ),
            15,
        )
        watcher = handle.watcher
        assert watcher is not None and watcher.state is WatcherState.RUNNING
    finally:
        store.close()
    assert watcher.state is WatcherState.STOPPED  # stopped with the sync


def test_start_sync_uses_the_apps_own_watcher_and_watch_false_starts_none(
    stores: StoreOpener, tmp_path: Path
) -> None:
    server = MemoryServer()
    store = stores(home=tmp_path / "app")
    try:
        own = Watcher(store)
        own.start()
        handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
        assert handle.watcher is own  # no second watcher on the store
        assert sum(t.name == "localstore-watcher" for t in threading.enumerate()) == 1
        handle.stop()
        assert own.state is WatcherState.RUNNING  # the app's: not the sync's to stop
        own.stop()
        own.join(10)

        handle = start_sync(store, remote=MemoryRemote(server), watch=False)
        assert handle.watcher is None
        assert not any(t.name == "localstore-watcher" for t in threading.enumerate())
        handle.stop()
    finally:
        store.close()


@pytest.mark.parametrize("watch", [True, False])
def test_a_save_by_another_process_is_pushed_without_waiting_for_the_poll(
    stores: StoreOpener, tmp_path: Path, watch: bool
) -> None:
    """A save through the CLI (or another localstore.open()) raises no event in the app's store
    and its watcher sees an echo: the embedded engine pushed it only at its next poll (30 s by
    default). The daemon notices such saves within a tick; the app's sync now does too, with or
    without a watcher."""
    server = MemoryServer()
    home = tmp_path / "app"
    store = stores(home=home)
    try:
        options = {} if watch else {"watch": False}
        start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600, **options)
        saved = subprocess.run(
            [*CLI, "--home", str(home), "save", "via/cli"],
            input="b: 2\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert saved.returncode == 0, saved.stderr
        assert eventually(lambda: "via/cli.blueprint.yaml" in _server_text(server), 15)
    finally:
        store.close()


def test_closing_the_store_from_a_subscriber_on_the_sync_thread(
    stores: StoreOpener, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store-event subscriber (running on the engine's thread) that closes the store: stop()
    tried to join its own thread ("cannot join current thread"), logged as a failed close hook.
    Now the loop ends after its cycle and the rest is finished once it has."""
    server = MemoryServer()
    seed = stores(home=tmp_path / "seed")
    try:
        seed.save("x/y", "a: 1\n")
        SyncEngine(seed, MemoryRemote(server)).sync_once()
    finally:
        seed.close()
    store = stores(home=tmp_path / "app")
    closed_on: list[str] = []
    done = threading.Event()

    def on_event(event: Event) -> None:
        if event.origin == "remote" and not done.is_set():
            closed_on.append(threading.current_thread().name)
            store.close()
            done.set()

    store.subscribe(on_event)
    caplog.set_level(logging.ERROR)
    handle = store.start_sync(remote=MemoryRemote(server), poll_interval_s=0.2)
    assert done.wait(15)
    assert closed_on == ["localstore-sync"]
    failed_hooks = [r for r in caplog.records if "close hook" in r.getMessage()]
    assert not failed_hooks, [r.exc_info for r in failed_hooks]
    assert handle.engine.join(10)
    assert eventually(lambda: lock_holder(store.settings.paths.state) is None, 10)
    watcher = handle.watcher
    assert watcher is not None and eventually(lambda: watcher.state is WatcherState.STOPPED, 10)


def test_the_lock_error_names_who_syncs_the_home(stores: StoreOpener, tmp_path: Path) -> None:
    """The message said 'process <this pid> already syncs this home' with the hint to follow
    the daemon's events, for a second store of this very process too."""
    home = tmp_path / "h"
    a, b = stores(home=home), stores(home=home)
    try:
        a.start_sync(remote=MemoryRemote(MemoryServer()))
        with pytest.raises(SyncLockedError) as info:
            b.start_sync(remote=MemoryRemote(MemoryServer()))
        assert info.value.message == "another store in this process already syncs this home"
        assert "start_sync() returned" in (info.value.hint or "")
    finally:
        b.close()
        a.close()
    code = (
        "import sys, time; from sync.embed import HomeLock; "
        f"HomeLock({str(home / 'state')!r}).acquire(); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with localstore.open(home=home) as c, pytest.raises(SyncLockedError) as info:
            c.start_sync(remote=MemoryRemote(MemoryServer()))
        assert f"process {proc.pid} already syncs this home" in info.value.message
        assert "ControlClient" not in (info.value.hint or "")  # no daemon to follow
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert HomeLock(home / "state").acquire()


def test_sync_starts_again_after_a_logout_and_a_new_login(
    stores: StoreOpener, cloud, tmp_path: Path
) -> None:
    """After `localstore logout` the embedded remote refuses for good (SessionChangedError) and
    the app's sync stayed dead after the user logged in again, until the app restarted it. The
    daemon opens a new remote from the new login; the app's sync now does the same."""
    settings = home_settings(tmp_path / "app")
    email = new_email()
    log_in(settings, cloud, email)
    reader_settings = home_settings(tmp_path / "reader")  # reads the account's rows
    log_in(reader_settings, cloud, email)
    reader = remote_from_settings(reader_settings)

    def on_server() -> list[str]:
        return sorted(r.path for r in reader.pull(0, limit=1000).changes if not r.deleted)

    store = stores(settings=settings)
    try:
        handle = store.start_sync(poll_interval_s=3600)
        first = handle.engine
        store.save("a/before", "v: 1\n")
        assert eventually(lambda: on_server() == ["a/before.blueprint.yaml"], 30)

        logout(settings)
        assert eventually(lambda: first.worker_state is WorkerState.STOPPED, 10)
        store.save("a/while-out", "v: 2\n")
        log_in(settings, cloud, email)
        assert eventually(
            lambda: on_server() == ["a/before.blueprint.yaml", "a/while-out.blueprint.yaml"], 30
        )
        assert handle.offline is None and handle.engine is not first

        # A status listener subscribed through the handle follows the engine to the next one.
        statuses: list[SyncStatus] = []
        handle.subscribe_status(statuses.append)
        logout(settings)
        assert eventually(lambda: handle.offline == "not logged in", 10)
        # What to do, as `localstore status` and the daemon say it (it said only "not logged in").
        assert handle.status()["hint"] == NotLoggedInError.hint
        second = handle.engine
        log_in(settings, cloud, email)
        assert eventually(lambda: handle.engine is not second, 10)
        store.save("a/third", "v: 3\n")
        assert eventually(lambda: any(s.state == "pushing" for s in statuses), 30)
    finally:
        store.close()
        reader.close()
