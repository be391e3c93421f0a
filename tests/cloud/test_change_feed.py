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
