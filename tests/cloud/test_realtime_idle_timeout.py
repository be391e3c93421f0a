"""The gateway closes a realtime socket that stopped sending, as hosted Realtime (Phoenix) does.

Hosted closes a socket silent for its websocket timeout (60 s) with 1000; clients heartbeat every
25 s. The gateway kept such a socket for ever, so a client whose heartbeats stopped (a blocked event
loop) never saw the drop, nor had to reconnect, in tests. These run a gateway with the timeout
scaled down to 1 s and the official client's heartbeat scaled down to match.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from realtime import RealtimePostgresChangesListenEvent, RealtimeSubscribeStates
from realtime.message import Message

from sync.localcloud.cluster import find_bindir
from sync.localcloud.stack import LocalCloud
from tests.cloud.conftest import async_client, close_async, publish_test_tables

pytestmark = pytest.mark.cloud

IDLE_S = 1.0
TIMEOUT = 10


@pytest.fixture(scope="module")
def idle_cloud() -> Iterator[LocalCloud]:
    """A stack whose gateway closes realtime sockets silent for IDLE_S."""
    find_bindir()
    with LocalCloud(realtime_idle_timeout_s=IDLE_S) as lc:
        publish_test_tables(lc)
        yield lc


async def _heartbeats(client: Any) -> None:
    """Heartbeat every IDLE_S / 4, as the client does every 25 s against hosted's 60 s."""
    while True:
        with contextlib.suppress(Exception):  # (a socket being replaced: the next one gets it)
            await client.realtime.send(
                Message(topic="phoenix", event="heartbeat", payload={}, ref=None)
            )
        await asyncio.sleep(IDLE_S / 4)


def test_a_client_whose_loop_blocked_is_dropped_reconnects_and_hears_changes(idle_cloud):
    async def scenario() -> None:
        client, http = await async_client(idle_cloud)
        states: asyncio.Queue[RealtimeSubscribeStates] = asyncio.Queue()
        events: asyncio.Queue[Any] = asyncio.Queue()
        pump = asyncio.create_task(_heartbeats(client))
        try:
            channel = client.channel(f"idle-{uuid.uuid4().hex[:8]}")
            channel.on_postgres_changes(
                RealtimePostgresChangesListenEvent.Insert,
                events.put_nowait,
                schema="public",
                table="rt_public",
            )
            await channel.subscribe(lambda state, _err: states.put_nowait(state))
            assert (
                await asyncio.wait_for(states.get(), TIMEOUT) is RealtimeSubscribeStates.SUBSCRIBED
            )
            first = client.realtime._ws_connection
            await asyncio.sleep(3 * IDLE_S)  # heartbeating: kept past the timeout
            assert client.realtime._ws_connection is first and states.empty()

            time.sleep(2.5 * IDLE_S)  # the fault: the loop blocks, no heartbeat goes out

            # The gateway closed the socket (1000): the client reconnects and rejoins.
            seen = [await asyncio.wait_for(states.get(), TIMEOUT) for _ in range(2)]
            assert seen == [
                RealtimeSubscribeStates.CHANNEL_ERROR,
                RealtimeSubscribeStates.SUBSCRIBED,
            ]
            assert client.realtime._ws_connection is not first
            label = f"after-{uuid.uuid4().hex[:8]}"
            async with await psycopg.AsyncConnection.connect(
                idle_cloud.superuser_dsn, autocommit=True
            ) as conn:
                await conn.execute("insert into public.rt_public (label) values (%s)", [label])
            while (await asyncio.wait_for(events.get(), TIMEOUT))["data"]["record"][
                "label"
            ] != label:
                pass
        finally:
            pump.cancel()
            await close_async(client, http)

    asyncio.run(scenario())


def test_a_silent_socket_is_closed_with_1000(idle_cloud):
    async def scenario() -> None:
        client, http = await async_client(idle_cloud)
        try:
            await client.realtime.connect()
            ws = client.realtime._ws_connection
            assert ws is not None
            # The client's own heartbeat went out on connect; the next is 15 s away.
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert ws.close_code == 1000
        finally:
            await close_async(client, http)

    asyncio.run(scenario())
