"""An app's in-process sync keeps its watcher alive as the daemon does: a watcher whose worker
thread died is replaced (a new one rescans, so edits made meanwhile are not lost), with a back-off
when it cannot start, logged once per outage, and reported by ``EmbeddedSync.watcher_status()``.

The death is injected (the worker's step raises what its per-item boundary does not catch);
inotify, the files and the index are real."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import localstore
import sync._follow as follow
from localstore.store import BlueprintStore
from localstore.watcher import Watcher, WatcherState
from sync.embed import EmbeddedSync, start_sync
from sync.memory_remote import MemoryRemote, MemoryServer

from .conftest import eventually, kill_watcher, write_external


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[BlueprintStore, EmbeddedSync, MemoryServer]]:
    """An app's store syncing in-process (with the watcher start_sync starts); closed after."""
    server = MemoryServer()
    store = localstore.open(home=tmp_path / "app")
    try:
        handle = start_sync(store, remote=MemoryRemote(server), poll_interval_s=3600)
        yield store, handle, server
    finally:
        store.close()


def _server_text(server: MemoryServer) -> dict[str, str]:
    return {r.row.path: r.row.content for r in server.rows.values() if not r.row.deleted}


def test_a_dead_watcher_of_the_apps_sync_is_restarted(
    app: tuple[BlueprintStore, EmbeddedSync, MemoryServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, the watcher start_sync started stayed dead: every later editor edit went unseen
    (and unsynced) until the app restarted, with nothing but one log line to tell."""
    store, handle, server = app
    caplog.set_level(logging.INFO, logger="sync")
    old = handle.watcher
    assert old is not None
    kill_watcher(old, monkeypatch)
    # Edited while no watcher works: the new watcher's start-up rescan finds it.
    write_external(store.root, "meanwhile.blueprint.yaml", "v: 1\n")
    assert eventually(lambda: handle.watcher is not old, 10)
    new = handle.watcher
    assert new is not None and new.state is WatcherState.RUNNING
    assert handle.watcher_status() == {"state": "running", "problem": None, "restarts": 1}
    assert old.state is WatcherState.STOPPED
    write_external(store.root, "after.blueprint.yaml", "v: 2\n")
    assert eventually(
        lambda: (
            _server_text(server).get("meanwhile.blueprint.yaml") == "v: 1\n"
            and _server_text(server).get("after.blueprint.yaml") == "v: 2\n"
        ),
        15,
    )
    restarts = [r for r in caplog.records if "restarting it" in r.getMessage()]
    assert len(restarts) == 1 and restarts[0].levelno == logging.ERROR
    store.close()
    assert new.state is WatcherState.STOPPED  # the replacement stops with the sync too


def test_a_watcher_that_cannot_restart_is_retried_with_a_backoff_and_logged_once(
    app: tuple[BlueprintStore, EmbeddedSync, MemoryServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A short first delay (the real one is seconds) so that several tries fit in the test; the
    # follower ticks every 0.5 s, so tries land about 0.5, 1 and 2 s apart.
    monkeypatch.setattr(follow, "WATCHER_RESTART_S", 0.4)
    store, handle, server = app
    caplog.set_level(logging.DEBUG, logger="sync")
    old = handle.watcher
    assert old is not None
    root = store.root
    shutil.rmtree(root)  # nothing can be watched: every restart fails
    kill_watcher(old, monkeypatch)

    def tries() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "cannot restart the watcher" in r.getMessage()]

    assert eventually(lambda: len(tries()) >= 3, 15)
    assert [r.levelno for r in tries()][:3] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
    # The dead watcher was stopped (its own state says "stopped"); it is reported failed.
    assert handle.watcher is old
    status = handle.watcher_status()
    assert status["state"] == "failed" and status["restarts"] == 0
    assert "stopped working: injected" in status["problem"]
    assert "cannot restart it: cannot watch" in status["problem"]
    # The delays between tries grow (0.4, 0.8, 1.6 s ...), they do not come every tick.
    times = [r.created for r in tries()]
    assert times[2] - times[1] > times[1] - times[0] + 0.2 >= 0.6

    root.mkdir()
    write_external(root, "back.blueprint.yaml", "v: 1\n")
    assert eventually(lambda: handle.watcher is not old, 15)
    assert handle.watcher_status() == {"state": "running", "problem": None, "restarts": 1}
    assert eventually(lambda: "back.blueprint.yaml" in _server_text(server), 15)
    assert sum("restarting it" in r.getMessage() for r in caplog.records) == 1


def test_an_apps_own_watcher_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watcher the app started is the app's (it holds it): the sync only reports it."""
    store = localstore.open(home=tmp_path / "app")
    try:
        own = Watcher(store)
        own.start()
        handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
        assert handle.watcher is own
        kill_watcher(own, monkeypatch)
        assert not eventually(lambda: handle.watcher is not own, 1.5)
        status = handle.watcher_status()
        assert status["state"] == "failed" and status["restarts"] == 0
    finally:
        store.close()
