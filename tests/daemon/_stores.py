"""A fixture that opens stores for the in-process sync tests and stops all they started.

A test that failed before its ``store.close()`` left the sync's threads (follower, engine,
watcher) running into the next tests; some tests had no ``finally`` at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import localstore
from localstore.store import BlueprintStore

JOIN_S = 15.0

StoreOpener = Callable[..., BlueprintStore]


@pytest.fixture(name="stores")
def stores_fixture() -> Iterator[StoreOpener]:
    """``stores(**open_kwargs)`` opens a store; after the test every one is closed and no thread
    the test started is left running (the follower, engine, watcher and its observer, the
    store's maintainer; the test fails if one is)."""
    before = set(threading.enumerate())
    made: list[BlueprintStore] = []

    def open_store(**kwargs: Any) -> BlueprintStore:
        store = localstore.open(**kwargs)
        made.append(store)
        return store

    yield open_store
    for store in reversed(made):
        store.close()
    deadline = time.monotonic() + JOIN_S
    left: list[threading.Thread] = []
    for thread in threading.enumerate():
        if thread in before:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread)
    assert not left, f"threads left running after the stores closed: {left}"
