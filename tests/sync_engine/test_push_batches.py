"""Push batches bounded by bytes, and a push the server refuses as too large or too slow.

A batch used to be up to ``sync_batch`` (200) changes whatever their size, and a call the server
refused (statement timeout 57014, jsonb over 256 MiB 54000, a gateway's 413) was sent again
unchanged on every retry: one such batch stalled every upload for good. The memory remote's
``refuse_push_above`` fails a call as the server does (the same TransientError and code as
SupabaseRemote raises; see tests/sync_contract/test_wire_and_errors.py).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import pytest

from sync import _state as sync_state
from sync.engine import DEFAULT_PUSH_BATCH_BYTES, LONE_TIMEOUTS
from sync.errors import TransientError
from sync.memory_remote import MemoryServer

from .conftest import Device, server_snapshot

KIB = 1024


def _text(rng: random.Random, n: int, size: int) -> str:
    """A YAML text of about ``size`` bytes (random, so sizes are what they say)."""
    data = rng.randbytes(size * 64 // 69 // 2).hex()  # 69 bytes a line hold 64 of data
    rows = "\n".join(f"  - {data[i : i + 64]}" for i in range(0, len(data), 64))
    return f"name: b{n}\nrows:\n{rows}\n"


def _save(dev: Device, count: int, size: int, *, prefix: str = "big") -> list[str]:
    rng = random.Random(count * 7919 + size)
    return [dev.store.save(f"{prefix}/b{n:03}", _text(rng, n, size)).id for n in range(count)]


def _splits(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "in halves" in r.getMessage()]


def test_the_outbox_is_read_in_batches_bounded_by_bytes(
    make_device: Callable[..., Device],
) -> None:
    a = make_device("a")
    _save(a, 5, 100 * KIB)
    with a.store.index.read() as cur:
        everything = sync_state.outbox_batch(cur, 0, 200)
        assert len(everything) == 5
        assert len(sync_state.outbox_batch(cur, 0, 200, max_bytes=250 * KIB)) == 2
        # Always at least one: a blueprint larger than the budget still goes, alone.
        (one,) = sync_state.outbox_batch(cur, 0, 200, max_bytes=1)
        assert one == everything[0]
        # The count still bounds it, and what comes is what the unbounded read gives.
        assert sync_state.outbox_batch(cur, 0, 3, max_bytes=2**30) == everything[:3]
        after = everything[1].op_id
        assert sync_state.outbox_batch(cur, after, 200, max_bytes=250 * KIB) == everything[2:4]


def test_many_large_blueprints_all_go_up_in_one_sync(
    make_device: Callable[..., Device], server: MemoryServer, caplog: pytest.LogCaptureFixture
) -> None:
    # 40 blueprints of 400 KiB (16 MiB) fit one count-bounded batch; a server refusing calls
    # over 6 MiB refused that batch on every retry. By bytes, no call is even refused.
    a = make_device("a")
    ids = _save(a, 40, 400 * KIB)
    a.remote.refuse_push_above(DEFAULT_PUSH_BATCH_BYTES + 2 * 2**20, code="54000")
    with caplog.at_level(logging.INFO, logger="sync.engine"):
        report = a.sync()
    assert (report.pushed, report.quarantined, report.errors) == (40, 0, [])
    assert sorted(server_snapshot(server)) == sorted(ids)
    assert _splits(caplog) == []
    assert a.engine.status().pending == 0
    # About 4 MiB per call: 9 of 10 blueprints each, not 40 calls.
    assert 4 <= a.remote.calls["push"] <= 6


def test_a_refused_push_is_split_in_halves_and_keeps_the_order(
    make_device: Callable[..., Device], server: MemoryServer, caplog: pytest.LogCaptureFixture
) -> None:
    # No byte bound of the engine's own (as before): the first call is all 48 changes, and a
    # server timing out on calls over 1 MiB must see halves, not the same call again.
    a = make_device("a", batch_bytes=2**40)
    ids = _save(a, 48, 100 * KIB)
    a.remote.refuse_push_above(2**20, code="57014")
    with caplog.at_level(logging.INFO, logger="sync.engine"):
        report = a.sync()
    assert (report.pushed, report.quarantined, report.errors) == (48, 0, [])
    # The server got them in the order they were made (one seq each, ascending).
    with server.lock:
        seqs = [server.rows[i].row.seq for i in ids]
    assert seqs == sorted(seqs)
    splits = _splits(caplog)
    assert splits and "[57014]" in splits[0]
    # 48 (4.8 MB) -> 24 -> 12 -> under 1 MiB: a few refused calls on the way down, then the rest
    # goes in pieces as small as the last halves (not halves of halves refused again each).
    # (Pieces of half the last refused call's 1.2 MB: 5 changes, about ten calls.)
    assert len(splits) <= 4
    assert a.remote.calls["push"] <= len(splits) + 12
    assert a.engine.status().pending == 0


def test_a_change_too_large_even_alone_is_quarantined_and_the_rest_go(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a")
    small = _save(a, 6, 10 * KIB, prefix="small")
    (big,) = _save(a, 1, 600 * KIB, prefix="big")
    after = _save(a, 6, 10 * KIB, prefix="after")
    a.remote.refuse_push_above(300 * KIB, code="413")
    report = a.sync()  # does not raise: the queue goes on
    assert report.pushed == 12 and report.quarantined == 1
    assert sorted(server_snapshot(server)) == sorted(small + after)
    (parked,) = a.engine.quarantined()
    assert (parked.id, parked.code, parked.direction) == (big, "too_large", "push")
    assert "even alone" in parked.message and "[413]" in parked.message
    assert a.engine.status().pending == 0 and a.engine.status().quarantined == 1
    # A later edit that makes it fit un-parks it, as for any rejection.
    a.store.save("big/b000", "name: b0\nrows: []\n")
    assert a.sync().pushed == 1
    assert big in server_snapshot(server) and a.engine.quarantined() == []


def test_a_change_too_complex_for_the_server_is_parked_alone_and_its_batch_goes(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """54001 (statement too complex: PostgreSQL's JSON parser past its stack depth) matched the
    retryable class 5: the batch holding such a change was sent again unchanged every cycle, and
    the changes with it never went up. The call is split like a too-large one; the change the
    server refuses alone is parked (``too_complex``) and the others of its batch are pushed."""
    a = make_device("a")
    before = _save(a, 5, 10 * KIB, prefix="before")
    (poison,) = _save(a, 1, 600 * KIB, prefix="poison")
    after = _save(a, 5, 10 * KIB, prefix="after")
    # (The memory server refuses by size; the engine sees only the code, as from PostgreSQL.)
    a.remote.refuse_push_above(300 * KIB, code="54001")
    report = a.sync()  # does not raise: the queue goes on
    assert (report.pushed, report.quarantined) == (10, 1)
    assert sorted(server_snapshot(server)) == sorted(before + after)
    (parked,) = a.engine.quarantined()
    assert (parked.id, parked.code, parked.direction) == (poison, "too_complex", "push")
    assert "too complex" in parked.message and "[54001]" in parked.message
    assert "simplify" in parked.message  # what the user can do: sending it again cannot work
    assert a.engine.status().pending == 0


def test_a_change_timing_out_alone_is_retried_then_quarantined(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    # A timeout alone can be a busy server: retried (the cycle fails, with backoff), but after
    # LONE_TIMEOUTS cycles in a row it is parked, so it cannot stall the queue for good.
    a = make_device("a")
    (big,) = _save(a, 1, 600 * KIB, prefix="big")
    later = _save(a, 3, 10 * KIB, prefix="later")
    a.remote.refuse_push_above(300 * KIB, code="57014")
    for _ in range(LONE_TIMEOUTS - 1):
        with pytest.raises(TransientError) as info:
            a.sync()
        assert info.value.code == "57014"
        assert a.engine.quarantined() == []
    report = a.sync()
    assert report.pushed == 3 and report.quarantined == 1
    assert sorted(server_snapshot(server)) == sorted(later)
    (parked,) = a.engine.quarantined()
    assert (parked.id, parked.code) == (big, "too_large")
    assert f"timed out on this change alone {LONE_TIMEOUTS} times" in parked.message
    # The server is well again: a retry of the quarantine pushes it.
    a.remote.refuse_push_above(None)
    assert a.engine.retry_quarantined() == 1
    assert a.sync().pushed == 1
    assert big in server_snapshot(server)


def test_a_timeout_alone_that_clears_is_not_counted_against_it(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a")
    (big,) = _save(a, 1, 600 * KIB)
    a.remote.refuse_push_above(300 * KIB, code="57014")
    with pytest.raises(TransientError):
        a.sync()
    a.remote.refuse_push_above(None)
    assert a.sync().pushed == 1
    # Edited and refused again later: a fresh count, not the old one's continuation.
    a.store.save("big/b000", _text(random.Random(1), 0, 600 * KIB))
    a.remote.refuse_push_above(300 * KIB, code="57014")
    for _ in range(LONE_TIMEOUTS - 1):
        with pytest.raises(TransientError):
            a.sync()
    assert a.engine.quarantined() == []
    a.sync()  # the LONE_TIMEOUTS-th in a row
    assert [e.id for e in a.engine.quarantined()] == [big]


def test_a_byte_limit_the_server_announces_is_respected(
    make_device: Callable[..., Device], server: MemoryServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.announce["max_batch_bytes"] = 300 * KIB
    a = make_device("a")
    ids = _save(a, 12, 100 * KIB)
    a.remote.refuse_push_above(400 * KIB, code="413")
    with caplog.at_level(logging.INFO, logger="sync.engine"):
        report = a.sync()
    assert report.pushed == 12 and sorted(server_snapshot(server)) == sorted(ids)
    assert a.engine.batch_bytes == 300 * KIB
    assert _splits(caplog) == []  # never had to learn it by a refusal
    assert a.remote.calls["push"] == 6  # two of ~100 KiB each per call


def test_an_announced_limit_that_is_no_positive_number_is_ignored(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    for bogus in (True, 0, -5, "1000", None):
        server.announce["max_batch_bytes"] = bogus
        a = make_device(f"a{bogus!s}")
        a.store.save("x", "n: 1\n")
        assert a.sync().pushed == 1
        assert a.engine.batch_bytes == DEFAULT_PUSH_BATCH_BYTES


def test_the_ids_verify_reports_as_pending_are_the_outbox_without_its_texts(
    make_device: Callable[..., Device],
) -> None:
    """verify() took the pending ids from a read of the whole outbox, every text included."""
    a = make_device("a")
    ids = _save(a, 6, 2 * KIB)
    with a.store.index.read() as cur:
        assert sync_state.dirty_ids(cur) == set(ids)
    a.engine.sync_once()
    a.store.save("big/b001", "name: edited\n")
    a.store.delete("big/b002.blueprint.yaml")
    a.store.save("new/one", "name: new\n")
    with a.store.index.read() as cur:
        pending = {i.id for i in sync_state.outbox_batch(cur, 0, 1_000_000)}
        assert len(pending) == 3
        assert sync_state.dirty_ids(cur) == pending
