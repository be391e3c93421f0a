"""subscribe() and on_close() check what they are given, and refuse after close()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.errors import InvalidInputError, StoreClosedError
from localstore.events import Event


@pytest.mark.parametrize("kinds", [["create"], "created", [1], 5])
def test_subscribe_refuses_kinds_that_match_nothing(store, kinds: Any) -> None:
    with pytest.raises(InvalidInputError, match="kind") as info:
        store.subscribe(lambda ev: None, kinds=kinds)
    assert "created" in info.value.hint


def test_subscribe_refuses_a_callback_that_is_not_callable(store) -> None:
    with pytest.raises(InvalidInputError, match="callable"):
        store.subscribe("not callable")
    # Valid kinds still filter.
    heard: list[Event] = []
    store.subscribe(heard.append, kinds=("deleted",))
    store.save("k/one", "a: 1\n")
    store.delete("k/one")
    assert [e.kind for e in heard] == ["deleted"]


def test_subscribe_and_on_close_after_close_are_refused(home: Path) -> None:
    s = localstore.open(home=home)
    s.close()
    with pytest.raises(StoreClosedError):
        s.subscribe(lambda ev: None)
    with pytest.raises(StoreClosedError):
        s.on_close(lambda: None)  # it would never run
    with pytest.raises(StoreClosedError):
        s.count()


def test_on_close_refuses_a_hook_that_is_not_callable(store) -> None:
    with pytest.raises(InvalidInputError, match="callable"):
        store.on_close(None)


def test_subscribing_on_the_stores_event_bus_after_close_is_refused(home: Path) -> None:
    """``store.events.subscribe`` (and ``observe``), the bus under ``store.subscribe``, kept a
    subscriber after ``close()`` that nothing would ever call, and said nothing."""
    s = localstore.open(home=home)
    s.close()
    with pytest.raises(StoreClosedError, match="closed"):
        s.events.subscribe(lambda ev: None)
    with pytest.raises(StoreClosedError, match="closed"):
        s.events.observe(lambda events: None)
    assert not s.events._subs and not s.events._observers
