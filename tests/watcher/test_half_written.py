"""A blueprint still being written is never reported invalid (real inotify, real writes).

Seen in the suite under load: a git rebase rewrites each file several times in a row (unlink,
create, write, close); the worker, behind the kernel's events, read a file between the next create
and its write, found it empty and reported ``invalid`` (flagging the blueprint) for a file git was
about to fill. A writer pausing mid-file longer than the quiet period, its file still open, got
the same. A file closed half-written is still reported (``test_lifecycle``'s invalid tests).

The only mock holds watchdog's inotify thread (a loaded machine's lag): the events of the second
write stay in the kernel's queue while the worker reads the file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest
from watchdog.observers.inotify_move_event_grouper import (
    InotifyMoveEventGrouper,
    PathedInotifyEvent,
)

from localstore import watcher as watcher_mod
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder

STALL_LIMIT_S = 10.0


def _flagged(store: BlueprintStore, bp_id: str) -> object:
    with store.index.read() as cur:
        rows = cur.execute("SELECT flagged FROM blueprints WHERE id = ?", (bp_id,)).fetchall()
    return rows[0][0]


def _kinds(recorder: Recorder) -> list[str]:
    return [e.kind for e in recorder.take()]


def test_a_writer_pausing_mid_file_is_not_reported_invalid(
    store: BlueprintStore, make_watcher: Callable[..., Watcher], recorder: Recorder
) -> None:
    """Half a file, a pause past the quiet period with the file open, then the rest."""
    bp = store.save("plan", "value: 0\n")
    w = make_watcher(store, write_quiet_ms=200)
    w.start()
    assert w.wait_idle(30)
    recorder.take()
    fd = os.open(store.abspath(bp.path), os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"value: [1,\n")  # not YAML on its own
        time.sleep(1.0)  # five quiet periods, still open
        assert _flagged(store, bp.id) is None
        assert _kinds(recorder) == []
        os.write(fd, b"  2]\n")
    finally:
        os.close(fd)
    assert w.wait_idle(30)
    assert _kinds(recorder) == ["modified"]
    assert store.load(bp.id).content == "value: [1,\n  2]\n"
    assert [r.rev for r in store.history(bp.id)] == [2, 1]
    assert _flagged(store, bp.id) is None


def test_a_file_left_open_half_written_is_reported_after_the_hold(
    store: BlueprintStore,
    make_watcher: Callable[..., Watcher],
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Held while open; the hold is bounded: a writer that never finishes does not hide a
    broken file for ever."""
    monkeypatch.setattr(watcher_mod, "OPEN_WRITE_HOLD_S", 1.5, raising=False)
    bp = store.save("plan", "value: 0\n")
    w = make_watcher(store, write_quiet_ms=200)
    w.start()
    assert w.wait_idle(30)
    recorder.take()
    fd = os.open(store.abspath(bp.path), os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"value: [1,\n")
        time.sleep(0.8)
        assert _kinds(recorder) == []  # held: its writer has not closed it
        assert w.wait_idle(30)
        assert _kinds(recorder) == ["invalid"]
        assert _flagged(store, bp.id)
        assert store.load(bp.id).content == "value: 0\n"  # the last good revision
    finally:
        os.close(fd)
    assert w.wait_idle(30)
    assert _kinds(recorder) == []  # the close changed nothing: reported once


class _StallAfterClose:
    """Holds watchdog's inotify thread at the first event of ``name`` after its close-write,
    until the watcher's worker lays a fence (or ``STALL_LIMIT_S``)."""

    def __init__(self, name: str) -> None:
        self.name = os.fsencode(name)
        self.closed = threading.Event()
        self.held = threading.Event()
        self.released = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch, watcher: Watcher) -> None:
        original = InotifyMoveEventGrouper.put_event

        def put_event(grouper: InotifyMoveEventGrouper, event: PathedInotifyEvent) -> None:
            if event.path.endswith(b"/" + self.name):
                if event.ev.is_close_write and not self.closed.is_set():
                    self.closed.set()
                elif self.closed.is_set() and not self.held.is_set():
                    self.held.set()
                    self.released.wait(STALL_LIMIT_S)
            original(grouper, event)

        monkeypatch.setattr(InotifyMoveEventGrouper, "put_event", put_event)
        lay: Callable[[], int] = watcher._lay_fence

        def lay_fence() -> int:
            n = lay()
            if threading.current_thread().name == "localstore-watcher":
                self.released.set()
            return n

        monkeypatch.setattr(watcher, "_lay_fence", lay_fence)


def test_a_file_rewritten_behind_the_workers_back_is_not_reported_invalid(
    store: BlueprintStore,
    make_watcher: Callable[..., Watcher],
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """git's rewrite of a file just written: the worker reads it after the first close-write,
    while the second write's events are still in the kernel's queue."""
    bp = store.save("n24", "value: 0\n")
    w = make_watcher(store, settle_ms=300)
    w.start()
    assert w.wait_idle(30)
    recorder.take()
    path = store.abspath(bp.path)
    stall = _StallAfterClose(path.name)
    stall.install(monkeypatch, w)
    path.write_text("value: 1\n")  # complete and closed: due after the settle window
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # the next write starts at once (held)
    try:
        os.write(fd, b"value: [2,\n")
        assert stall.closed.wait(5)
        time.sleep(0.6)  # past the settle window: the worker has read the half file
        assert stall.held.is_set()
        os.write(fd, b"  3]\n")
    finally:
        os.close(fd)
    stall.released.set()
    assert w.wait_idle(30)
    assert "invalid" not in _kinds(recorder)
    assert store.load(bp.id).content == "value: [2,\n  3]\n"
    assert _flagged(store, bp.id) is None
