"""The watcher under inotify's per-user limits (faults injected at the exact inotify call).

Lowering ``fs.inotify.max_user_watches`` or ``max_user_instances`` for a test would change them
for every process on the machine, so the kernel's answers (ENOSPC from inotify_add_watch, EMFILE
from inotify_init) are injected where watchdog makes the call.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from watchdog.observers import inotify_c

from localstore import watcher as watcher_mod
from localstore.errors import WatcherError
from localstore.store import BlueprintStore
from localstore.watcher import Watcher, WatcherState


def test_instance_limit_names_the_fix(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inotify_init failing with EMFILE (max_user_instances, 128 by default) is a WatcherError
    naming the sysctl, not a bare OSError (which the daemon's keeper did not catch)."""

    def no_instance() -> int:
        ctypes.set_errno(errno.EMFILE)
        return -1

    monkeypatch.setattr(inotify_c, "inotify_init", no_instance)
    w: Watcher = make_watcher(store)
    with pytest.raises(WatcherError) as info:
        w.start()
    assert "max_user_instances" in (info.value.hint or "")
    assert w.state is WatcherState.NEW


def _refuse_watches_on(monkeypatch: pytest.MonkeyPatch, *refused: Path) -> set[bytes]:
    """inotify_add_watch answers ENOSPC (the watch limit) for these folders, as the kernel does
    when another program (an IDE, a file indexer) holds nearly all of the user's watches. Empty
    the returned set to let the kernel answer again."""
    real = inotify_c.inotify_add_watch
    names = {os.fsencode(p) for p in refused}

    def add_watch(fd: int, path: bytes, mask: int) -> int:
        if path in names:
            ctypes.set_errno(errno.ENOSPC)
            return -1
        return real(fd, path, mask)

    monkeypatch.setattr(inotify_c, "inotify_add_watch", add_watch)
    return names


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_unwatched_sub_folder_is_reported_and_rescanned(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """watchdog skips a sub-folder it cannot watch without a word; the watcher said RUNNING and
    an edit there waited for the 10-minute timer rescan (a sync barrier synced without it)."""
    bp = store.save("deep/note", "value: 1\n")
    store.save("top", "value: 1\n")
    _refuse_watches_on(monkeypatch, store.root / "deep")
    monkeypatch.setattr(watcher_mod, "LIMITED_RESCAN_S", 0.5, raising=False)
    w: Watcher = make_watcher(store)
    w.start()
    assert w.wait_idle(10)
    assert _wait_for(lambda: w.state is WatcherState.DEGRADED)
    assert "max_user_watches" in (w.problem or "")
    assert "deep" in (w.problem or "")

    (store.root / "deep" / "note.blueprint.yaml").write_text("value: 2\n")
    # The barrier (the daemon's `sync --wait`) must cover the folder inotify does not.
    assert w.wait_idle(10)
    assert store.load(bp.id).content == "value: 2\n"

    # Without a barrier, the shortened rescan finds the next edit by itself.
    (store.root / "deep" / "note.blueprint.yaml").write_text("value: 3\n")
    assert _wait_for(lambda: store.load(bp.id).content == "value: 3\n")


def test_watches_are_taken_again_once_the_limit_is_raised(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    bp = store.save("deep/note", "value: 1\n")
    refused = _refuse_watches_on(monkeypatch, store.root / "deep")
    monkeypatch.setattr(watcher_mod, "LIMITED_RESCAN_S", 0.5, raising=False)
    limit = [8192]
    # The user raises the sysctl, as the problem text says (a global setting: simulated here).
    monkeypatch.setattr(watcher_mod, "_watch_limit", lambda: limit[0], raising=False)
    w: Watcher = make_watcher(store)
    w.start()
    assert w.wait_idle(10)
    assert _wait_for(lambda: w.state is WatcherState.DEGRADED)
    refused.clear()
    limit[0] = 524288
    assert _wait_for(lambda: w.state is WatcherState.RUNNING)
    # Watched now: the edit arrives as an event, long before the 10-minute timer rescan.
    (store.root / "deep" / "note.blueprint.yaml").write_text("value: 2\n")
    assert _wait_for(lambda: store.load(bp.id).content == "value: 2\n")
