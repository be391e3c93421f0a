"""The wal2json change feed: with nobody listening it moves its slot on without decoding."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from sync.localcloud.gateway.changes import Change, WalChangeFeed
from sync.localcloud.stack import LocalCloud

pytestmark = pytest.mark.cloud


def _insert(cloud: LocalCloud, label: str) -> None:
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        conn.execute("insert into public.rt_public (label) values (%s)", (label,))


def test_changes_are_skipped_while_nobody_listens_and_decoded_once_someone_does(
    cloud: LocalCloud,
) -> None:
    if not cloud.cluster.has_wal2json():
        pytest.fail("the local stack needs wal2json (scripts/test installs it)")
    got: list[Change] = []
    listening = False

    async def sink(changes: list[Change]) -> None:
        got.extend(changes)

    async def scenario() -> None:
        feed = WalChangeFeed(cloud.superuser_dsn, sink, interval=3600, listening=lambda: listening)
        await feed.start()
        try:
            await feed.poll_once()  # whatever other tests wrote before the slot existed
            got.clear()
            _insert(cloud, "unheard")
            assert await feed.poll_once() == 0
            assert got == []
            nonlocal listening
            listening = True
            _insert(cloud, "heard")
            assert await feed.poll_once() >= 1
        finally:
            await feed.stop()

    asyncio.run(scenario())
    labels = [c.record.get("label") for c in got if c.table == "rt_public" and c.record]
    assert labels == ["heard"]  # the skipped change was never decoded, so never replayed


def test_the_feed_keeps_retrying_past_a_thousand_failed_polls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``0.2 * 2**failures`` overflowed a float at the 1,024th failed poll in a row (the database
    down for about 1.5 hours): the OverflowError ended the change feed's task for good. The fault
    is injected (every poll fails as with the database down); the waits are recorded, not slept."""
    tries = 0
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def poll_fails() -> int:
        raise psycopg.OperationalError("connection refused")

    async def connect_fails() -> None:
        # (Since the reconnect loop moved to db.connect_with_backoff, the failures counted are
        # the connects; before, every poll failed and each reconnect returned quietly.)
        nonlocal tries
        tries += 1
        raise psycopg.OperationalError("connection refused")

    async def quick_sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    async def scenario() -> None:
        feed = WalChangeFeed("postgresql:///unused", lambda changes: real_sleep(0))
        monkeypatch.setattr(feed, "poll_once", poll_fails)
        monkeypatch.setattr(feed, "_connect", connect_fails)
        monkeypatch.setattr(asyncio, "sleep", quick_sleep)
        task = asyncio.create_task(feed._run())
        while tries < 1_100 and not task.done():
            await real_sleep(0)
        monkeypatch.setattr(asyncio, "sleep", real_sleep)
        assert not task.done(), task.exception()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert tries >= 1_100
    assert max(waits) == 5.0


def test_a_batch_that_cannot_be_delivered_is_dropped_and_the_feed_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any failure of a poll but a lost connection (a value json could not read was one) ended
    the feed's task for good, without a word: every socket stayed up and joined, and no change
    was ever sent again. The fault is injected: the first batch fails to deliver."""
    delivered: list[int] = []
    two = asyncio.Event()

    async def poll(batch: int) -> int:
        if batch == 1:
            raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")
        delivered.append(batch)
        if len(delivered) == 2:
            two.set()
        return 1

    async def scenario() -> None:
        feed = WalChangeFeed("postgresql:///unused", lambda changes: asyncio.sleep(0))
        batches = iter(range(1, 100))
        feed.poll_once = lambda: poll(next(batches))  # type: ignore[method-assign]
        task = asyncio.create_task(feed._run())
        try:
            await asyncio.wait_for(two.wait(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert delivered == [2, 3]
    (record,) = [r for r in caplog.records if r.name == "sync.localcloud.gateway.changes"]
    assert "dropping a batch of changes" in record.getMessage()
    assert record.exc_info is not None and "4300 digits" in str(record.exc_info[1])
