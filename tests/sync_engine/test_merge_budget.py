"""A merge over the work budget is an ordinary conflict in a sync: both versions kept, explained."""

from __future__ import annotations

from collections.abc import Callable

from sync.memory_remote import MemoryServer
from sync.merge import TOO_LARGE
from tests.merge.test_budget import pathological
from tests.sync_engine.conftest import Device, converge


def test_the_engine_keeps_both_sides_of_a_merge_over_the_budget(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    base, edit_a, edit_b = pathological()
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("wf/big", base).id
    converge(a, b)
    a.store.save("wf/big", edit_a)
    b.store.save("wf/big", edit_b)
    a.sync()
    report = b.sync()  # b's merge is over the budget: an ordinary conflict, not an error
    assert report.conflicts == 1 and report.merged == 0
    (record,) = b.engine.conflicts()
    assert TOO_LARGE in record.reason and record.local == edit_b and record.remote == edit_a
    assert record.copy_id is not None
    assert b.text(ident) == edit_a and b.text(record.copy_id) == edit_b  # no edit lost
    converge(a, b)
    assert a.text(ident) == edit_a and a.text(record.copy_id) == edit_b
