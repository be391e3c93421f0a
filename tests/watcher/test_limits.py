"""The watcher under inotify's per-user limits (faults injected at the exact inotify call).

Lowering ``fs.inotify.max_user_watches`` or ``max_user_instances`` for a test would change them
for every process on the machine, so the kernel's answers (ENOSPC from inotify_add_watch, EMFILE
from inotify_init) are injected where watchdog makes the call.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from watchdog.observers import inotify_c

from localstore import _inotify, _watch_health
from localstore.store import BlueprintStore
from localstore.watcher import Watcher, WatcherState


def test_instance_limit_names_the_fix(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inotify_init failing with EMFILE (max_user_instances, 128 by default) is reported with
    the sysctl, not a bare OSError (which the daemon's keeper did not catch). Since session 8
    (watch2) start() does not raise for it: the watcher runs on rescans, DEGRADED."""

    def no_instance() -> int:
        ctypes.set_errno(errno.EMFILE)
        return -1

    monkeypatch.setattr(inotify_c, "inotify_init", no_instance)
    w: Watcher = make_watcher(store)
    w.start()
    assert w.state is WatcherState.DEGRADED
    assert "sudo sysctl fs.inotify.max_user_instances=512" in (w.problem or "")


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
    monkeypatch.setattr(_watch_health, "LIMITED_RESCAN_S", 0.5)
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
    monkeypatch.setattr(_watch_health, "LIMITED_RESCAN_S", 0.5)
    limit = [8192]
    # The user raises the sysctl, as the problem text says (a global setting: simulated here).
    # (Read where the unwatched folders are reported, and where a refused watch is.)
    monkeypatch.setattr(_watch_health, "_watch_limit", lambda: limit[0])
    monkeypatch.setattr(_inotify, "_watch_limit", lambda: limit[0])
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


def _refuse_instances(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """inotify_init answers EMFILE (max_user_instances used up) while the returned flag is set."""
    real = inotify_c.inotify_init
    refusing = [True]

    def init() -> int:
        if refusing[0]:
            ctypes.set_errno(errno.EMFILE)
            return -1
        return real()

    monkeypatch.setattr(inotify_c, "inotify_init", init)
    return refusing


@pytest.fixture
def fast_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorten the limited-mode rescan and the retries of the watch (minutes in real use)."""
    monkeypatch.setattr(_watch_health, "LIMITED_RESCAN_S", 0.5)
    monkeypatch.setattr(_watch_health, "LIMIT_RETRY_S", (0.2, 0.5))


def _edits_are_found_without_an_observer(store: BlueprintStore, w: Watcher) -> None:
    """What a rescan-only watcher must still do: barriers, deletes (with their fences), timer."""
    bp = store.save("a/note", "value: 1\n")
    gone = store.save("gone", "value: 1\n")
    (store.root / "a" / "note.blueprint.yaml").write_text("value: 2\n")
    (store.root / "gone.blueprint.yaml").unlink()
    (store.root / "gone.blueprint.meta.json").unlink()
    # The barrier (the daemon's `sync --wait`) covers what no event reports.
    assert w.wait_idle(10)
    assert store.load(bp.id).content == "value: 2\n"
    assert not any(b.id == gone.id for b in store.list())
    # Without a barrier, the limited-mode rescan finds the next edit by itself.
    (store.root / "a" / "note.blueprint.yaml").write_text("value: 3\n")
    assert _wait_for(lambda: store.load(bp.id).content == "value: 3\n")


def test_root_watch_limit_starts_rescan_only_and_recovers(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch, fast_limits: None
) -> None:
    """ENOSPC on the folder's own watch (an IDE holds every watch): start() raised, and the
    daemon refused to start at all. Now the watcher runs on rescans, says why, and takes the
    watch once the kernel gives it."""
    refused = _refuse_watches_on(monkeypatch, store.root)
    w: Watcher = make_watcher(store)
    w.start()
    assert w.state is WatcherState.DEGRADED
    assert "max_user_watches" in (w.problem or "") and "sysctl" in (w.problem or "")
    assert "missing" not in (w.problem or "")
    _edits_are_found_without_an_observer(store, w)

    refused.clear()  # the IDE closed: its watches are free again
    assert _wait_for(lambda: w.state is WatcherState.RUNNING)
    bp = store.save("later", "value: 1\n")
    (store.root / "later.blueprint.yaml").write_text("value: 2\n")
    # Watched again: the edit arrives as an event (the timer rescan is 10 minutes away).
    monkeypatch.setattr(_watch_health, "LIMITED_RESCAN_S", 600.0)
    assert _wait_for(lambda: store.load(bp.id).content == "value: 2\n")


def test_instance_limit_starts_rescan_only_and_recovers(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch, fast_limits: None
) -> None:
    refusing = _refuse_instances(monkeypatch)
    w: Watcher = make_watcher(store)
    w.start()
    assert w.state is WatcherState.DEGRADED
    assert "max_user_instances" in (w.problem or "")
    _edits_are_found_without_an_observer(store, w)
    refusing[0] = False
    assert _wait_for(lambda: w.state is WatcherState.RUNNING)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_restart_refused_by_the_limit_keeps_rescanning(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch, fast_limits: None
) -> None:
    """The health check's observer restart failing on the limit was stored as the folder's
    problem: rescans and deletes stopped as if the folder were missing."""
    w: Watcher = make_watcher(store)
    w.start()
    assert w.wait_idle(10)
    refused = _refuse_watches_on(monkeypatch, store.root)
    reader = w._observer._inotify_fd  # fault injection: watchdog's reader thread dies

    def broken(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EIO, "injected read failure")

    reader.read_events = broken
    (store.root / "poke.tmp").write_text("wake the reader so it fails")
    reader.join(10)
    assert _wait_for(lambda: "max_user_watches" in (w.problem or ""))
    assert "missing" not in (w.problem or "")
    _edits_are_found_without_an_observer(store, w)
    refused.clear()
    assert _wait_for(lambda: w.state is WatcherState.RUNNING)


def test_watches_freed_by_other_programs_are_taken_again(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch, fast_limits: None
) -> None:
    """Freed watches were taken again only when the limit's value changed or the watcher
    restarted: after the IDE closed, the folder stayed on 30-second rescans for good."""
    bp = store.save("deep/note", "value: 1\n")
    refused = _refuse_watches_on(monkeypatch, store.root / "deep")
    w: Watcher = make_watcher(store)
    w.start()
    assert w.wait_idle(10)
    assert _wait_for(lambda: w.state is WatcherState.DEGRADED)
    refused.clear()  # the limit stays as it was
    assert _wait_for(lambda: w.state is WatcherState.RUNNING)
    monkeypatch.setattr(_watch_health, "LIMITED_RESCAN_S", 600.0)
    (store.root / "deep" / "note.blueprint.yaml").write_text("value: 2\n")
    assert _wait_for(lambda: store.load(bp.id).content == "value: 2\n")


@pytest.mark.parametrize("refusal", [errno.ENOMEM, errno.EIO], ids=["ENOMEM", "EIO"])
def test_a_retry_refused_for_another_reason_keeps_rescanning_quietly(
    refusal: int,
    store: BlueprintStore,
    make_watcher,
    monkeypatch: pytest.MonkeyPatch,
    fast_limits: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rescan-only mode for months: a retry of the watch refused for another reason than the
    two limits (ENOMEM: inotify marks are charged to a memory cgroup; or any other error, such
    as EIO from a FUSE file system) was taken for a missing folder: no rescans and no deletes
    any more, and an ERROR every 0.5 s (no back-off) for as long as it lasted. (EACCES is not
    raised by watchdog at all.)"""
    answer = [errno.ENOSPC]
    calls = [0]
    real = inotify_c.inotify_add_watch
    root = os.fsencode(store.root)

    def add_watch(fd: int, path: bytes, mask: int) -> int:
        if path == root and answer[0]:
            calls[0] += 1
            ctypes.set_errno(answer[0])
            return -1
        return real(fd, path, mask)

    monkeypatch.setattr(inotify_c, "inotify_add_watch", add_watch)
    w: Watcher = make_watcher(store)
    w.start()
    assert w.state is WatcherState.DEGRADED and "max_user_watches" in (w.problem or "")
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="localstore.watcher"):
        answer[0] = refusal
        start = calls[0]
        # LIMIT_RETRY_S is (0.2, 0.5) here: 60 s in real use, so this is hours of a laptop's day.
        assert _wait_for(lambda: calls[0] >= start + 5)
        loud = [
            r.getMessage()
            for r in caplog.records
            if r.name == "localstore.watcher" and r.levelno >= logging.WARNING
        ]
    assert len(loud) == 1, loud  # the reason changed: said once
    assert "missing" not in (w.problem or "") and "max_user_watches" not in (w.problem or "")
    assert "rescan" in (w.problem or "")
    _edits_are_found_without_an_observer(store, w)
    answer[0] = 0  # the memory is back
    assert _wait_for(lambda: w.state is WatcherState.RUNNING)
    assert w.problem is None


def test_a_memory_limit_at_start_starts_rescan_only(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch, fast_limits: None
) -> None:
    """ENOMEM from the folder's watch (inotify marks are charged to the session's or the
    container's memory cgroup) made start() raise, and the daemon refused to start, as the
    watch limit once did."""
    real = inotify_c.inotify_add_watch
    refusing = [True]

    def add_watch(fd: int, path: bytes, mask: int) -> int:
        if refusing[0]:
            ctypes.set_errno(errno.ENOMEM)
            return -1
        return real(fd, path, mask)

    monkeypatch.setattr(inotify_c, "inotify_add_watch", add_watch)
    w: Watcher = make_watcher(store)
    w.start()
    assert w.state is WatcherState.DEGRADED
    assert "memory" in (w.problem or "") and "rescan" in (w.problem or "")
    _edits_are_found_without_an_observer(store, w)
    refusing[0] = False
    assert _wait_for(lambda: w.state is WatcherState.RUNNING)
