"""A pause is per home: an app's in-process sync honours `state/sync-paused.json` as the daemon
does (docs/daemon.md, "Pause"). Before, a user who paused sync (`localstore daemon --pause`, or
the app, on a metered connection) found the app syncing everything anyway."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from localstore._daemon_state import PAUSE_FILE, read_pause, write_pause
from localstore.cli import cli
from sync.embed import start_sync
from sync.engine import SyncStatus
from sync.memory_remote import MemoryRemote, MemoryServer

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .conftest import eventually


def _cli(home: Path, *args: str) -> dict:
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", *args])
    assert result.exit_code in (0, 3), result.output
    return json.loads(result.stdout)


def test_an_apps_sync_starts_paused_when_the_home_is_paused(
    stores: StoreOpener, tmp_path: Path
) -> None:
    home = tmp_path / "h"
    server = MemoryServer()
    store = stores(home=home)
    since = write_pause(store.settings.paths.state)  # `localstore daemon --pause`, no daemon
    store.save("notes/a", "x: 1\n")
    handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
    time.sleep(1.0)  # an unpaused engine pushes at once
    assert not server.rows
    assert handle.paused and handle.engine.status().state == "paused"
    status = handle.status()
    assert status["state"] == "paused" and status["paused_since"] == since
    assert "localstore daemon --resume" in status["detail"]
    handle.resume()
    assert read_pause(store.settings.paths.state) is None
    assert eventually(lambda: len(server.rows) == 1, 20)
    assert not handle.paused and handle.status().get("paused_since") is None


def test_an_apps_pause_is_kept_for_the_home(stores: StoreOpener, tmp_path: Path) -> None:
    home = tmp_path / "h"
    server = MemoryServer()
    store = stores(home=home)
    handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
    handle.pause()
    assert read_pause(store.settings.paths.state) is not None
    handle.stop()
    # The CLI (and the next daemon, or the app's next start) see it.
    assert _cli(home, "status")["state"] == "paused"
    store.save("notes/a", "x: 1\n")
    again = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
    time.sleep(1.0)
    assert again.paused and not server.rows


def test_a_pause_from_the_cli_reaches_an_app_that_syncs(
    stores: StoreOpener, tmp_path: Path
) -> None:
    home = tmp_path / "h"
    server = MemoryServer()
    store = stores(home=home)
    handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
    said = _cli(home, "daemon", "--pause")
    assert said["app_pid"] == os.getpid() and not said["daemon"]  # it says who syncs
    human = CliRunner().invoke(cli, ["--home", str(home), "daemon", "--pause"])
    assert f"the app syncing this home (process {os.getpid()})" in human.output
    assert (store.settings.paths.state / PAUSE_FILE).exists()
    assert eventually(lambda: handle.engine.status().state == "paused", 10)
    store.save("notes/a", "x: 1\n")
    time.sleep(1.0)
    assert not server.rows
    _cli(home, "daemon", "--resume")
    assert eventually(lambda: len(server.rows) == 1, 20)
    assert not handle.paused


def test_a_listener_waiting_for_the_app_during_a_cli_pause_lets_the_app_pause(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """A pause the CLI records reaches the app's status listeners on the follower thread. It
    called them holding the lock that pause() takes: a listener that waited for the app's UI
    thread while that thread called pause() waited for ever (here: until its bound ran out)."""
    store = stores(home=tmp_path / "h")
    handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    in_listener, ui_paused = threading.Event(), threading.Event()
    waited: list[bool] = []

    def listener(status: SyncStatus) -> None:
        if threading.current_thread().name == "localstore-sync-follow" and not waited:
            in_listener.set()
            waited.append(ui_paused.wait(10))  # (an app handing the status to its UI thread)

    handle.subscribe_status(listener)
    write_pause(store.settings.paths.state)  # `localstore daemon --pause`, no daemon
    assert in_listener.wait(10)
    handle.pause()  # the UI thread, meanwhile (the user pressed "pause")
    ui_paused.set()
    assert eventually(lambda: bool(waited), 20)
    assert waited == [True] and handle.status()["state"] == "paused"
