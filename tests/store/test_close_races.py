"""What an app registers with a store while another thread closes it either takes effect or is
refused with StoreClosedError; never accepted and then forgotten.

on_close() and subscribe() checked that the store was open and then added the hook or the
subscriber without the lock close() takes: one added in between was accepted but never run (a
resource the app registered to be released on close leaked; the in-process sync relies on its
close hook to stop its threads and release the home's lock), or kept on a closed store.

Each test holds the adding thread right after its open check (a fault-injection pause) until
close() has either got past the point it copies the hooks and forgets the subscribers, or is
waiting for the adding thread to finish: whichever the code under test does, no sleep decides it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.errors import StoreClosedError
from localstore.store import BlueprintStore

WAIT = 10.0


class _WatchedLock:
    """The store's close lock, telling ``contended`` when a thread has to wait for it."""

    def __init__(self, contended: threading.Event) -> None:
        self._lock = threading.Lock()
        self._contended = contended

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            self._contended.set()
            self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _add_while_closing(
    store: BlueprintStore, monkeypatch: pytest.MonkeyPatch, add: Callable[[], Any]
) -> BaseException | None:
    """Run ``add()`` on a thread held after its open check while close() runs; what it raised."""
    close_cannot_interfere = threading.Event()
    monkeypatch.setattr(store, "_close_lock", _WatchedLock(close_cannot_interfere))
    # Run by close() after it copied its hooks and forgot the subscribers.
    store.on_close(close_cannot_interfere.set)
    checked = threading.Event()
    open_check = store._check_open

    def held_open_check() -> None:
        open_check()
        if threading.current_thread() is adder:
            checked.set()
            assert close_cannot_interfere.wait(WAIT), "close() neither ran on nor waited"

    monkeypatch.setattr(store, "_check_open", held_open_check)
    raised: list[BaseException] = []

    def adding() -> None:
        try:
            add()
        except BaseException as exc:  # (reported to the test thread)
            raised.append(exc)

    adder = threading.Thread(target=adding, name="test-adder")
    adder.start()
    assert checked.wait(WAIT)
    closer = threading.Thread(target=store.close, name="test-closer")
    closer.start()
    adder.join(WAIT)
    closer.join(WAIT)
    assert not adder.is_alive() and not closer.is_alive()
    assert store.closed
    return raised[0] if raised else None


def test_a_close_hook_added_while_the_store_closes_runs_or_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = localstore.open(home=home)
    ran = threading.Event()
    raised = _add_while_closing(store, monkeypatch, lambda: store.on_close(ran.set))
    if raised is not None:
        assert isinstance(raised, StoreClosedError), raised
    else:
        assert ran.is_set(), "on_close() accepted the hook, and close() never ran it"


def test_a_subscriber_added_while_the_store_closes_is_forgotten_or_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = localstore.open(home=home)
    raised = _add_while_closing(store, monkeypatch, lambda: store.subscribe(lambda event: None))
    if raised is not None:
        assert isinstance(raised, StoreClosedError), raised
    assert not store.events._subs, "subscribe() added a subscriber to a closed store"
