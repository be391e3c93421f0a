"""The watcher's back-offs survive any number of failures in a row.

``first * 2 ** (n - 1)`` does not fit a float once ``n`` passes 1,024: the OverflowError ended the
worker thread (state FAILED) after ~17 hours of a failing step at the 60 s back-off, or of a path
that cannot be indexed (a full disk) tried again at every rescan. The counters are set past 1,100
(reaching them for real takes those hours); the failures that follow are real (SQLITE_FULL from a
capped index) or injected (a step that raises).
"""

from __future__ import annotations

import pytest

from localstore import _watch_state
from localstore.store import BlueprintStore
from localstore.watcher import MAX_FAILURES, Watcher, WatcherState
from tests.conftest import eventually

from .test_ingest_failures import BIG, FullIndex, big_text


def test_a_step_failing_after_1100_failures_in_a_row_keeps_the_worker(
    store: BlueprintStore, watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    bp = store.save("plan", "value: 0\n")
    assert watcher.wait_idle(30)
    watcher._errors_in_row = 1_100
    real = watcher._on_fs_event
    failed: list[bool] = []

    def fails_once(*args: object) -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("injected: a bug handling one event")
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(watcher, "_on_fs_event", fails_once)
    store.abspath(bp.path).write_text("value: 1\n")
    assert eventually(lambda: watcher.stats.errors == 1, 10)
    assert eventually(lambda: watcher.failure is not None, 0.5) is False
    assert watcher.state is not WatcherState.FAILED
    watcher.rescan()  # the worker still answers, and the edit is found
    assert eventually(lambda: store.load(bp.id).content == "value: 1\n", 10)
    assert watcher.failure is None


def test_a_path_given_up_1100_times_keeps_the_worker(
    store: BlueprintStore, watcher: Watcher
) -> None:
    full = FullIndex(store)
    try:
        full(True)
        watcher._failing[BIG] = _watch_state._Failing(tries=1_100)
        (store.root / BIG).write_text(big_text("a"))
        assert eventually(lambda: watcher._failing[BIG].tries > 1_100, 10)
        # Given up as any path is (a rescan brought forward), not a failed step of the worker.
        assert eventually(lambda: "tried again at the next rescan" in (watcher.problem or ""), 10)
        assert watcher.stats.errors == 0
        assert watcher.failure is None
    finally:
        full(False)
    watcher.rescan()  # what the brought-forward rescan does: indexed now
    assert watcher.wait_idle(30)
    assert watcher.failure is None
    assert watcher.state is WatcherState.RUNNING
    assert BIG not in watcher._failing
    assert MAX_FAILURES < 1_100
