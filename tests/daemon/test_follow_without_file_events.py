"""The daemon hears another process's changes even when its watcher reports no file events.

The daemon's follower used to look at the index only for 3 s after its watcher reported file
activity. A watcher in rescan-only mode (inotify's watch limit taken by an IDE: it still starts,
``degraded``) reports none, so control clients never heard a save, move or delete made by the CLI
or an app beside the daemon. The follower now looks whenever another connection committed
(``PRAGMA data_version``, as an app's in-process sync does), whatever the watcher saw.
"""

from __future__ import annotations

import ctypes
import errno
from pathlib import Path

import pytest
from watchdog.observers import inotify_c

from localstore import _watch_health

from .test_embed_foreign_events import _other_process


def test_another_processs_changes_reach_clients_of_a_daemon_whose_watcher_sees_no_events(
    inproc_daemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Fault injection: every inotify watch refused, as when an IDE holds the user's limit. The
    # watcher then runs rescan-only (no file event at all), and never gets the watch back here.
    def add_watch(fd: int, path: bytes, mask: int) -> int:
        ctypes.set_errno(errno.ENOSPC)
        return -1

    monkeypatch.setattr(inotify_c, "inotify_add_watch", add_watch)
    monkeypatch.setattr(_watch_health, "LIMIT_RETRY_S", (3600.0, 3600.0))
    home = tmp_path / "shared"
    d = inproc_daemon(home)
    with d.client() as client:
        assert client.status()["watcher"]["state"] == "degraded"
        client.subscribe(["saved", "moved", "deleted"])
        made = _other_process(
            home, "b = s.save('app/one', 'k: v\\n')\nprint(json.dumps({'id': b.id}))"
        )
        created = client.wait_for(lambda e: e["data"].get("process") == "other", 15)
        assert created["event"] == "saved" and created["data"]["kind"] == "created"
        assert created["data"]["id"] == made["id"]
        assert created["data"]["path"] == "app/one.blueprint.yaml"

        _other_process(home, "s.move('app/one', 'app/two')\nprint(json.dumps({}))")
        moved = client.wait_for(lambda e: e["data"].get("process") == "other", 15)
        assert moved["event"] == "moved"
        assert moved["data"]["old_path"] == "app/one.blueprint.yaml"
        assert moved["data"]["path"] == "app/two.blueprint.yaml"

        _other_process(home, "s.delete('app/two')\nprint(json.dumps({}))")
        deleted = client.wait_for(lambda e: e["data"].get("process") == "other", 15)
        assert deleted["event"] == "deleted" and deleted["data"]["id"] == made["id"]
    # Each change once.
    assert d.daemon.metrics.foreign_changes == 3
