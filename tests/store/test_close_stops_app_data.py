"""Closing a store stops the app-data purger of a KVStore made on its index.

An app makes its ``KVStore(store.index)`` with a purger and closes the store when it quits. The
purger's thread slept on: it found the index closed only at its next round (a minute later by
default, an hour with ``interval=3600``), so an app checking ``threading.enumerate()`` after
``close()`` (or a test suite's leak guard) found ``localstore-kv-purger`` still running, and the
KVStore went on answering "the index is closed" as if it were open.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import localstore
from localstore.errors import StoreClosedError
from localstore.kv import PurgerState


def _purgers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "localstore-kv-purger"]


def test_closing_the_store_stops_and_joins_its_kv_purger(tmp_path: Path) -> None:
    store = localstore.open(home=tmp_path / "h")
    kv = localstore.KVStore(store.index)
    kv.save("ui.window", {"w": 800})
    purger = kv.start_purger(interval=3600)
    assert _purgers()
    store.close()  # the app forgot kv.close(): the store's close still ends the thread
    assert not _purgers()
    assert purger.state is PurgerState.STOPPED
    assert kv.closed
    with pytest.raises(StoreClosedError, match="KVStore was closed"):
        kv.load("ui.window")


def test_an_index_closed_inside_its_own_transaction_stops_the_purger_when_it_ends(
    tmp_path: Path,
) -> None:
    store = localstore.open(home=tmp_path / "h")
    kv = localstore.KVStore(store.index)
    purger = kv.start_purger(interval=3600)
    with store.index.write():
        store.index.close()  # (deferred until the transaction ends)
        assert not kv.closed
    assert kv.closed
    purger.join(10)  # (not joined by close under the lock the round may wait for)
    assert purger.state is PurgerState.STOPPED
    store.close()
