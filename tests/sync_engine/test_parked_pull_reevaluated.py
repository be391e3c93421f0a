"""Server rows parked because the local file did not parse (``unparsable_local``) run again
once it parses, also when it was fixed back to exactly its last synced text (MemoryRemote).

Such a fix raises no op id: nothing is pushed, so nothing met the parked row again, and the
replicas stayed apart until someone ran ``--retry-quarantined``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .conftest import Device, converge


def _half_typed(a: Device, b: Device) -> tuple[str, Path]:
    """x synced on a and b; b's file of it does not parse (an edit in progress)."""
    x = a.store.save("s/x", "v: 1\n").id
    converge(a, b)
    f = b.home / "blueprints/s/x.blueprint.yaml"
    f.write_text("v: [2  # half-typed\n")
    b.store.reconcile()
    assert b.engine.status().flagged == 1
    return x, f


def _parked(b: Device, x: str) -> None:
    b.sync()
    assert [(q.id, q.code) for q in b.engine.quarantined()] == [(x, "unparsable_local")]


def test_a_parked_delete_applies_once_the_file_is_fixed_back_to_the_synced_text(
    make_device: Callable[..., Device],
) -> None:
    a, b = make_device("a"), make_device("b")
    x, f = _half_typed(a, b)
    a.store.delete(x)
    a.sync()
    _parked(b, x)
    assert f.read_text() == "v: [2  # half-typed\n"  # left as it is while it does not parse

    f.write_text("v: 1\n")
    b.store.reconcile()
    b.sync()
    assert not b.store.exists(x) and not f.exists()
    assert b.engine.quarantined() == []
    assert not b.engine.status().needs_attention
    assert b.engine.verify().clean and a.engine.verify().clean


def test_a_parked_revision_applies_once_the_file_is_fixed_back_to_the_synced_text(
    make_device: Callable[..., Device],
) -> None:
    a, b = make_device("a"), make_device("b")
    x, f = _half_typed(a, b)
    a.store.save("s/x", "v: 3\n", id=x)
    a.sync()
    _parked(b, x)

    f.write_text("v: 1\n")
    b.store.reconcile()
    b.sync()
    assert b.store.load(x).content == "v: 3\n"
    assert b.engine.quarantined() == []
    assert b.engine.verify().clean


def test_an_edit_made_while_a_delete_was_parked_still_beats_it(
    make_device: Callable[..., Device],
) -> None:
    a, b = make_device("a"), make_device("b")
    x, f = _half_typed(a, b)
    a.store.delete(x)
    a.sync()
    _parked(b, x)

    f.write_text("v: 2\n")
    b.store.reconcile()
    converge(a, b)
    assert b.store.load(x).content == "v: 2\n" and a.store.load(x).content == "v: 2\n"
    assert b.engine.quarantined() == [] and a.engine.quarantined() == []
    assert b.engine.verify().clean and a.engine.verify().clean


def test_a_row_waits_while_the_file_still_does_not_parse(
    make_device: Callable[..., Device],
) -> None:
    a, b = make_device("a"), make_device("b")
    x, f = _half_typed(a, b)
    a.store.delete(x)
    a.sync()
    _parked(b, x)

    f.write_text("v: [2, 3  # still typing\n")
    b.store.reconcile()
    b.sync()
    assert f.read_text() == "v: [2, 3  # still typing\n"
    assert [(q.id, q.code) for q in b.engine.quarantined()] == [(x, "unparsable_local")]
