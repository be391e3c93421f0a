"""An app that forks while it syncs in-process (``multiprocessing`` with the fork start method, a
worker pool): the child inherited the home lock's open file description, and an flock belongs to
the description, so the home stayed locked while the child lived, after the app stopped its sync.
Starting sync again (or a daemon) was refused with "process ? already syncs this home".

And a child that stops what it inherited (the app's atexit handler, a ``with`` block set up before
the fork) must leave the parent's sync and watcher running: they are the parent's."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from localstore._daemon_state import lock_is_held
from localstore.store import BlueprintStore
from localstore.watcher import Watcher
from sync.control import ControlClient, ControlError
from sync.embed import HomeLock, lock_holder, start_sync
from sync.localcloud.stack import LocalCloud
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.supabase_remote import SupabaseRemote, login
from tests.store.test_embedding_lifecycle import _in_child

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .conftest import (
    PASSWORD,
    InProcessDaemon,
    eventually,
    home_settings,
    new_email,
    write_external,
)


def _fork_sleeper() -> tuple[int, int]:
    """A child that does nothing until its pipe closes (or it is killed); (pid, write end).

    Returns once the child runs: its at-fork handlers (which let go of the parent's locks and
    marks) are over by then. Returning at once, a loaded machine ran the parent's next step
    before the child had been scheduled at all, its inherited locks still held (CI failed so).
    """
    read_end, write_end = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no threads; wait for the parent, then leave at once
        try:
            os.close(write_end)
            os.close(ready_read)
            os.write(ready_write, b"r")
            os.read(read_end, 1)
        finally:
            os._exit(0)
    os.close(read_end)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"r", "the forked child ended before it ran"
    finally:
        os.close(ready_read)
    return pid, write_end


def test_a_forked_child_does_not_keep_the_home_locked(stores: StoreOpener, tmp_path: Path) -> None:
    store = stores(home=tmp_path / "h")
    server = MemoryServer()
    handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
    pid, pipe = _fork_sleeper()
    try:
        handle.stop()
        assert not lock_is_held(store.settings.paths.state)
        again = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
        again.stop()
        lock = HomeLock(store.settings.paths.state)  # (a daemon starting now)
        assert lock.acquire()
        lock.release()
    finally:
        os.close(pipe)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def _stopped_in_child(stop: Callable[[], None]) -> str:
    """Call ``stop`` in a forked child (an app's atexit handler, a ``with`` block it set up before
    the fork): "ok", what it raised, or "hung"."""

    def body() -> str:
        stop()
        return "ok"

    return _in_child(body)


def test_stop_in_a_forked_child_leaves_the_parents_sync_running(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """A child forked after start_sync (``multiprocessing``'s fork start method) inherits the
    handle; its stop() (an atexit handler, a ``with`` block the app set up) stopped the parent's
    watcher: removing the inotify watches of the instance both processes share, so the app's
    editor edits were no longer seen nor synced."""
    store = stores(home=tmp_path / "h")
    server = MemoryServer()
    handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
    assert _stopped_in_child(handle.stop) == "ok"
    assert _stopped_in_child(store.close) == "ok"
    write_external(store.root, "after.blueprint.yaml", "v: 1\n")
    assert eventually(
        lambda: any(r.row.path == "after.blueprint.yaml" for r in server.rows.values()), 10
    )
    assert handle.status()["running"]
    assert lock_holder(store.settings.paths.state) == os.getpid()


def test_an_apps_watcher_stopped_in_a_forked_child_keeps_watching_in_the_parent(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """The app's own Watcher (not start_sync's), stopped in a child: the same shared inotify
    instance lost its watches, and the parent's edits went unrecorded."""
    store = stores(home=tmp_path / "h")
    watcher = Watcher(store)
    watcher.start()
    try:
        assert _stopped_in_child(watcher.stop) == "ok"
        write_external(store.root, "after.blueprint.yaml", "v: 1\n")
        assert eventually(lambda: store.exists("after"), 10)
    finally:
        watcher.stop()
        watcher.join(10)


def _stop_noting_remote_closes(stop: Callable[[], None]) -> str:
    """Run in a child: ``stop``, then "ok", or what it closed of the parent's cloud session (the
    remote's close waited out realtime's 10 s shutdown on the parent's event loop)."""
    closed: list[str] = []
    real_close = SupabaseRemote.close

    def noting_close(remote: SupabaseRemote) -> None:
        closed.append("closed the parent's remote")
        real_close(remote)

    # (This child only: it leaves through os._exit.)
    SupabaseRemote.close = noting_close  # type: ignore[method-assign,assignment]
    stop()
    return closed[0] if closed else "ok"


def test_stop_in_a_forked_child_leaves_the_parents_cloud_session_alone(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    """With the home's Supabase session: the child's stop() closed the parent's remote, waiting
    out realtime's shutdown on an event loop whose thread only the parent has."""
    settings = home_settings(tmp_path / "h")
    login(settings, cloud.url, cloud.anon_key, new_email(), PASSWORD, signup=True)
    store = BlueprintStore(settings)
    try:
        handle = start_sync(store, watch=False, poll_interval_s=3600)
        try:
            assert eventually(
                lambda: (handle.status()["realtime"] or {}).get("state") == "subscribed", 30
            ), handle.status()
            assert _in_child(lambda: _stop_noting_remote_closes(handle.stop)) == "ok"
            store.save("after", "v: 1\n")  # (the parent's session still pushes)
            assert eventually(lambda: handle.status()["pending"] == 0, 30), handle.status()
            status = handle.status()
            assert status["running"], status
            assert status["realtime"]["state"] == "subscribed", status["realtime"]
        finally:
            handle.stop()
    finally:
        store.close()


def test_a_control_client_closed_in_a_forked_child_keeps_the_parents_connection(
    inproc_daemon: Callable[..., InProcessDaemon],
) -> None:
    """An app following the daemon with a ControlClient, closed in a child forked from it (its
    ``with`` block, an atexit handler): the close handshake went out on the socket the two share,
    then shutdown() cut it, and the parent's next request failed with "the daemon closed the
    connection" (its event stream ended with it)."""
    d = inproc_daemon()
    with ControlClient.connect(d.daemon.settings) as client:
        client.subscribe(["saved"])
        assert _stopped_in_child(client.close) == "ok"
        assert client.status()["watcher"]["state"] == "running"
        write_external(d.daemon.settings.paths.blueprints, "after.blueprint.yaml", "v: 1\n")
        event = client.wait_for(lambda e: e["event"] == "saved", 30)
        assert event["data"]["path"] == "after.blueprint.yaml"


def test_a_control_client_refuses_requests_in_a_forked_child(
    inproc_daemon: Callable[..., InProcessDaemon],
) -> None:
    """A request from the child went out on the parent's connection: its answer went to the
    parent's reader (the child waited out its timeout), where it was taken for the answer of the
    parent's next request, which had the same id (the count was copied at the fork)."""
    d = inproc_daemon()
    with ControlClient.connect(d.daemon.settings) as client:

        def pause() -> str:
            try:
                client.pause()
            except ControlError as exc:
                return str(exc)
            return "paused"

        refused = _in_child(pause)
        assert f"connected by process {os.getpid()}" in refused, refused
        assert "ControlClient.connect" in refused, refused
        assert client.status()["sync"]["state"] != "paused"
