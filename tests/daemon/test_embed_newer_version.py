"""An app syncing in-process (``start_sync``) on an older localstore while a newer one (another
app, the CLI after an update, its daemon) upgrades the home's index. Every write of the app's
localstore is refused from then on; the newer version must be able to take the home over. The
newer localstore is a real second process: this code with one core migration more."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

import sync.embed as embed_module
from localstore.watcher import WatcherState
from sync.embed import lock_holder, start_sync
from sync.engine import SyncStatus
from sync.memory_remote import MemoryRemote, MemoryServer

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .conftest import eventually, home_settings
from .test_newer_version_upgrade import NEWER, OFFLINE, _cli


def test_an_apps_sync_lets_go_of_the_home_when_a_newer_localstore_upgrades_it(
    stores: StoreOpener,
    spawn_daemon: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the app's engine stopped (once a cycle met a refused write), but the handle kept
    the home's lock for as long as the app ran, so neither the newer daemon (exit 75, "process N
    already syncs this home") nor the newer app could sync the home; its watcher went on; and
    its status said "the sync thread stopped (see the log): stop this sync and start it again",
    which changes nothing."""
    monkeypatch.setattr(embed_module, "LOCK_CHECK_S", 0.05)
    caplog.set_level(logging.INFO)
    home = tmp_path / "home"
    store = stores(home=home)
    store.save("team/hello", "steps: [a]\n")
    handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    heard: list[SyncStatus] = []
    handle.subscribe_status(heard.append)
    watcher = handle.watcher
    assert watcher is not None
    state_dir = home_settings(home).paths.state
    assert eventually(lambda: lock_holder(state_dir) == os.getpid(), 10)

    upgraded = _cli(home, "ls")  # the newer localstore opens the home: its index is upgraded
    assert upgraded.returncode == 0, upgraded.stderr

    # The app lets go of the home by itself, with nothing asked of it.
    assert eventually(lambda: lock_holder(state_dir) is None, 30), "the app kept the home"
    status = handle.status()
    assert status["state"] == "error" and status["running"] is False
    assert "a newer localstore upgraded this home's index" in status["detail"]
    assert "restart this app" in status["hint"]
    assert "restart this program (or the daemon) with the newer localstore" in (
        status["last_error"] or ""
    )
    # An app showing the engine's status (a status listener) hears it too.
    assert heard and heard[-1].state == "error"
    assert "a newer localstore upgraded" in (heard[-1].last_error or "")
    # The watcher start_sync started stopped with it (it could record no edit).
    assert watcher.state is WatcherState.STOPPED
    stopping = [
        r for r in caplog.records if r.name == "sync.embed" and r.levelno >= logging.WARNING
    ]
    assert len(stopping) == 1, [r.getMessage() for r in stopping]
    assert "stopping this app's sync: a newer localstore upgraded" in stopping[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)

    # An edit made now stays in its file, and the newer version takes the home over: its
    # daemon starts (before: exit 75) and records the edit.
    (home / "blueprints" / "team" / "hello.blueprint.yaml").write_text("steps: [edited]\n")
    d = spawn_daemon(home, env=OFFLINE, prelude=NEWER)
    d.wait_ready()
    assert d.stop() == 0
    assert _cli(home, "show", "team/hello").stdout == "steps: [edited]\n"
    handle.stop()  # (the app quits: nothing left to do)
