"""The engine fetches rows by id one byte-bounded answer at a time (fetch_rows_page).

A full reconcile and a quarantine retry asked for 200 ids in one call and held all their rows
at once: up to 200 blueprints of 18 MiB in memory here, and one jsonb over 256 MiB on the
server. Now each answer (at most the server's byte budget and one row) is applied before the
ids it leaves are asked for. A MemoryServer with a budget of one byte answers one row a call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from sync.errors import TransientError
from sync.memory_remote import MemoryServer
from sync.remote import FetchPage

from .conftest import Device, assert_converged

COUNT = 5


def _fail_fetch_call(dev: Device, n: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the ``n``-th fetch_page call of ``dev`` fail as a network error does (once)."""
    real = dev.remote.fetch_page
    sizes: list[int] = []

    def fetch_page(ids: Sequence[str]) -> FetchPage:
        if len(sizes) + 1 == n:
            sizes.append(-1)
            raise TransientError("network down")
        page = real(ids)
        sizes.append(len(page.rows))
        return page

    monkeypatch.setattr(dev.remote, "fetch_page", fetch_page)
    return sizes


def _horizon_above_everything(a: Device) -> list[str]:
    """COUNT blueprints on the server below a purged tombstone; returns their ids."""
    ids = [a.store.save(f"r/b{n}", f"n: {n}\n").id for n in range(COUNT)]
    gone = a.store.save("r/gone", "n: gone\n").id
    a.sync()
    a.store.delete(gone)
    a.sync()
    assert a.remote.purge_tombstones() == 1
    return ids


def test_a_full_reconcile_keeps_each_answer_when_a_later_one_fails(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All the rows of a chunk came at once, so a fetch that failed after some answers had come
    kept none of them: a reconcile of large blueprints over a poor connection started over."""
    server.fetch_page_bytes = 1
    a, b = make_device("a"), make_device("b")
    ids = _horizon_above_everything(a)
    sizes = _fail_fetch_call(b, 3, monkeypatch)
    with pytest.raises(TransientError):
        b.sync()
    assert sizes == [1, 1, -1]
    assert sum(b.store.exists(i) for i in ids) == 2  # the first two answers are applied
    report = b.sync()
    assert report.reset and report.errors == []
    assert sizes == [1, 1, -1, 1, 1, 1]  # only the three rows still missing are asked for
    assert all(b.store.exists(i) for i in ids)
    assert_converged(server, a, b)


def test_a_quarantine_retry_unparks_each_answer_as_it_applies_it(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.fetch_page_bytes = 1
    a, b = make_device("a"), make_device("b")
    for n in range(3):
        (b.store.root / f"q{n}.blueprint.yaml").mkdir()  # folders where a's blueprints go
    ids = sorted(a.store.save(f"q{n}", f"n: {n}\n").id for n in range(3))
    a.sync()
    assert b.sync().quarantined == 3
    for n in range(3):
        (b.store.root / f"q{n}.blueprint.yaml").rmdir()
    sizes = _fail_fetch_call(b, 2, monkeypatch)
    with pytest.raises(TransientError):
        b.engine.retry_quarantined()
    # The first answer's row is applied and un-parked; the others are still parked.
    assert b.store.exists(ids[0])
    assert sorted(q.id for q in b.engine.quarantined()) == ids[1:]
    assert b.engine.retry_quarantined() == 2
    assert sizes == [1, -1, 1, 1]
    assert b.engine.quarantined() == [] and all(b.store.exists(i) for i in ids)
    b.sync()
    assert_converged(server, a, b)
