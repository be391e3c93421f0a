"""A rename whose two halves reach the watcher apart keeps its identity (issue #4's last bug).

watchdog pairs IN_MOVED_FROM with IN_MOVED_TO for 0.5 s. When its inotify thread stalls longer
between the two (a loaded machine), it reports the source deleted and, later, the destination
created. If the watcher ingested that delete before the destination arrived, the renamed file got
a new id: about one case-only rename in 1,000 under the stress run.

The stall is injected (the only mock here): the destination's half is held inside watchdog's
inotify thread until the watcher has found the source gone and laid its fence, or until
``STALL_LIMIT_S`` passed (a watcher without the fence deletes in the meantime, and the test fails).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest
from watchdog.observers.inotify_move_event_grouper import (
    InotifyMoveEventGrouper,
    PathedInotifyEvent,
)

from localstore import files as fs
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder

STALL_LIMIT_S = 10.0


class _StalledMoveTo:
    """Holds the IN_MOVED_TO of one file name in watchdog's inotify thread until released."""

    def __init__(self, name: str) -> None:
        self.name = os.fsencode(name)
        self.held = threading.Event()
        self.released = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = InotifyMoveEventGrouper.put_event

        def put_event(grouper: InotifyMoveEventGrouper, event: PathedInotifyEvent) -> None:
            if (
                event.ev.is_moved_to
                and event.path.endswith(b"/" + self.name)
                and not self.held.is_set()
            ):
                self.held.set()
                self.released.wait(STALL_LIMIT_S)
            original(grouper, event)

        monkeypatch.setattr(InotifyMoveEventGrouper, "put_event", put_event)

    def release_on_worker_fence(self, watcher: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
        """Release the held half when the watcher's worker lays a fence (it found a path gone)."""
        original: Callable[[], int] = watcher._lay_fence

        def lay_fence() -> int:
            n = original()
            if threading.current_thread().name == "localstore-watcher":
                self.released.set()
            return n

        monkeypatch.setattr(watcher, "_lay_fence", lay_fence)


@pytest.mark.parametrize(
    "new",
    ["Case/REPORT.blueprint.yaml", "Other/report.blueprint.yaml"],
    ids=["case-only", "other-folder"],
)
def test_late_move_destination_keeps_identity(
    new: str,
    store: BlueprintStore,
    watcher: Watcher,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bp = store.save("Case/report", "kind: report\n")
    os.makedirs(store.root / "Other")
    assert watcher.wait_idle()
    recorder.take()
    stall = _StalledMoveTo(os.path.basename(new))
    stall.install(monkeypatch)
    stall.release_on_worker_fence(watcher, monkeypatch)

    os.rename(store.abspath(bp.path), store.root / new)
    assert stall.held.wait(STALL_LIMIT_S), "the injected stall never happened"
    assert watcher.wait_idle()

    events = recorder.take()
    assert [(e.kind, e.id, e.path, e.old_path) for e in events] == [("moved", bp.id, new, bp.path)]
    assert stall.released.is_set(), "the watcher did not wait for the late half"
    assert store.resolve(bp.id).path == new
    assert (store.root / fs.meta_path_for(new)).exists()
    assert not store.abspath(fs.meta_path_for(bp.path)).exists()
    assert not any(r.deleted for r in store.history(bp.id))
    assert store.check().clean
