"""The daemon notices a watcher that stopped working, reports it and replaces it.

These run on an in-process daemon (offline, or with a memory remote): no keychain needed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from localstore.watcher import WatcherState
from sync.control import ControlRequestError
from sync.memory_remote import MemoryRemote

from .conftest import eventually, write_external


class _Fatal(BaseException):
    """Ends the watcher's worker thread, as an error its per-item boundary does not catch."""


def test_a_dead_watcher_is_reported_and_restarted(inproc_daemon, monkeypatch) -> None:
    d = inproc_daemon()
    old = d.daemon.watcher
    assert old is not None

    def die() -> None:
        raise _Fatal("injected")

    monkeypatch.setattr(old, "_process_due", die)
    old._q.put(("noop",))  # wake the worker
    assert old._worker is not None
    old._worker.join(10)
    assert not old._worker.is_alive()
    root = d.daemon.settings.paths.blueprints
    with d.client() as c:
        c.subscribe()
        assert eventually(lambda: d.daemon.watcher is not old, 10)
        status = c.status()
        assert status["watcher"]["state"] == "running"
        assert status["watcher"]["problem"] is None
        write_external(root, "after.blueprint.yaml", "name: after\n")
        ev = c.wait_for(lambda e: e.get("event") == "saved", 10)
        assert ev["data"]["path"] == "after.blueprint.yaml"
        assert c.metrics()["counters"]["watcher_restarts"] == 1
    assert old.state is WatcherState.STOPPED


def test_a_missing_folder_is_reported_and_sync_wait_is_refused(
    inproc_daemon, tmp_path: Path
) -> None:
    d = inproc_daemon(remote_factory=lambda _settings: MemoryRemote())
    root = d.daemon.settings.paths.blueprints
    with d.client() as c:
        assert "report" in c.sync(wait=True)
        shutil.rmtree(root)
        assert eventually(lambda: c.status()["watcher"]["state"] == "degraded", 10)
        assert "missing" in c.status()["watcher"]["problem"]
        with pytest.raises(ControlRequestError) as info:
            c.sync(wait=True)
        assert info.value.code == "watcher_behind"
        root.mkdir()
        write_external(root, "back.blueprint.yaml", "name: back\n")
        assert eventually(lambda: c.status()["watcher"]["state"] == "running", 10)
        assert "report" in c.sync(wait=True)
