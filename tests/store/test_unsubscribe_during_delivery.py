"""A subscriber unsubscribed while a batch of events is being delivered (by itself, once it had
what it waited for, or by another subscriber: a view closed in answer to an event) went on
hearing the rest of the batch (a save_many, a pulled page): the bus delivered to the subscribers
it had copied when the batch began. An app's callback then ran into a view it had torn down."""

from __future__ import annotations

from collections.abc import Callable

import localstore
from localstore.events import Event


def _batch(store: localstore.BlueprintStore, n: int = 3) -> None:
    store.save_many([localstore.SaveRequest(path=f"x/{i}", content=f"v: {i}\n") for i in range(n)])


def test_a_subscriber_that_unsubscribes_itself_hears_no_more(
    store: localstore.BlueprintStore,
) -> None:
    heard: list[str] = []
    unsubscribe: list[Callable[[], None]] = []

    def first_only(event: Event) -> None:
        heard.append(event.path)
        unsubscribe[0]()

    unsubscribe.append(store.subscribe(first_only))
    _batch(store)
    assert heard == ["x/0.blueprint.yaml"]


def test_a_subscriber_unsubscribed_by_another_hears_no_more(
    store: localstore.BlueprintStore,
) -> None:
    heard: list[str] = []
    others: list[str] = []

    def view(event: Event) -> None:
        heard.append(event.path)

    def closer(event: Event) -> None:
        others.append(event.path)
        close_view()

    store.subscribe(closer)
    close_view = store.subscribe(view)
    _batch(store)
    assert heard == []  # closed at the first event, before it was its turn
    assert len(others) == 3  # the others go on


def test_a_subscriber_added_during_a_batch_hears_the_next_commit(
    store: localstore.BlueprintStore,
) -> None:
    late: list[str] = []
    added: list[bool] = []

    def adder(event: Event) -> None:
        if not added:
            added.append(True)
            store.subscribe(lambda e: late.append(e.path))

    store.subscribe(adder)
    _batch(store)
    assert late == []  # (as before: a batch goes to those subscribed when it began)
    store.save("x/next", "v: 9\n")
    assert late == ["x/next.blueprint.yaml"]
