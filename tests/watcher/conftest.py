"""Fixtures for the watcher tests: a store in tmp_path, a running watcher, an event recorder.

Every watcher and store a test opens is stopped and closed here; a test that leaks a thread fails.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from localstore.config import load_settings
from localstore.events import Event
from localstore.store import BlueprintStore
from localstore.watcher import Watcher, WatcherState

STRESS = os.environ.get("LOCALSTORE_STRESS") == "1"
REPEATS = 1000 if STRESS else 20


class Recorder:
    """Collects events (thread-safe append) and answers questions about them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def take(self) -> list[Event]:
        with self._lock:
            out, self.events = self.events, []
        return out

    @staticmethod
    def kinds(events: list[Event]) -> list[str]:
        return [e.kind for e in events]


def _settings(home: Path, **overrides: object):
    return load_settings(home=home, environ={}, **overrides)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def make_store(home: Path) -> Iterator:
    stores: list[BlueprintStore] = []

    def make(**kwargs: object) -> BlueprintStore:
        reconcile = bool(kwargs.pop("reconcile", True))
        store = BlueprintStore(_settings(home, **kwargs), reconcile=reconcile)
        stores.append(store)
        return store

    yield make
    for s in stores:
        s.close()


@pytest.fixture
def store(make_store) -> BlueprintStore:
    return make_store()


@pytest.fixture
def make_watcher() -> Iterator:
    watchers: list[Watcher] = []

    def make(store: BlueprintStore, **kwargs: object) -> Watcher:
        w = Watcher(store, **kwargs)  # type: ignore[arg-type]
        watchers.append(w)
        return w

    yield make
    for w in watchers:
        w.stop()
        w.join(10)
        assert w.state is WatcherState.STOPPED


@pytest.fixture
def recorder(store: BlueprintStore) -> Iterator[Recorder]:
    rec = Recorder()
    unsubscribe = store.subscribe(rec)
    yield rec
    unsubscribe()


@pytest.fixture
def watcher(store: BlueprintStore, make_watcher, recorder: Recorder) -> Watcher:
    w = make_watcher(store)
    w.start()
    assert w.wait_idle(30)
    recorder.take()
    return w
