"""An interrupt that comes once a sync pass's transaction committed leaves the pulled rows standing.

The engine applies a pulled page inside one outer index transaction, each store save in it a
savepoint. Ctrl-C (or any BaseException) right after that transaction's COMMIT used to leave
the index holding the pulled blueprints; now nothing undoes files the index committed, and one
before the COMMIT (or at a save's RELEASE) still undoes every file of the pass.

Real homes, real SQLite, one MemoryServer; the interrupt is the only thing injected.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sync.memory_remote import MemoryServer
from tests.interrupts import AFTER_COMMIT, Interrupt, snapshot

from .conftest import Device, assert_converged, close_device, converge

N = 5


@pytest.mark.parametrize("where", [*AFTER_COMMIT, "before-commit", "before-release"])
def test_an_interrupted_pull_leaves_files_and_index_agreeing(
    server: MemoryServer,
    make_device: Callable[..., Device],
    where: str,
) -> None:
    a, b = make_device("a"), make_device("b")
    for i in range(N):
        a.store.save(f"n/y{i}", f"new: {i}\n")
    a.sync()
    heard: list[str] = []
    b.store.subscribe(lambda e: heard.append(e.id), kinds=["created"])
    with (
        Interrupt(b.store, where, KeyboardInterrupt) as interrupt,
        pytest.raises(KeyboardInterrupt),
    ):
        b.sync()
    assert interrupt.fired
    assert not b.store.index.write_open
    pulled = len(b.store.list())
    assert pulled == (N if where in AFTER_COMMIT else 0)
    # The app hears of every committed pull (the events wait for the pass's COMMIT: an
    # interrupt right after the index lock's release dropped them all).
    assert sorted(heard) == sorted(bp.id for bp in b.store.list())
    after = snapshot(b.store)
    assert len(after[0]) == 2 * pulled  # (the pairs, nothing else: no temps, no kept files)
    close_device(b)
    # Reopened, the reconcile records nothing: before, it recorded each committed pull as
    # deleted by an external edit, which the next pass pushed.
    b = make_device("b")  # (the same home)
    assert b.store.check().clean
    assert snapshot(b.store) == after
    converge(a, b)
    assert_converged(server, a, b)
    assert all(not r.deleted for i in after[1] for r in b.store.history(i))
    assert len(b.store.list()) == N
