"""The gateway's database connections for realtime come back after they are lost.

Its NOTIFY listener (broadcasts, the trigger feed's changes, schema reloads) and its WAL change
feed each hold one connection. Before, a listener whose backend was terminated (or whose
Postgres restarted) was never replaced: realtime stayed silent for good while REST answered.
Each fault below is followed by what a client must see: a second ``system`` ok "Subscribed to
PostgreSQL" on its still joined postgres_changes channel once the gateway is back (changes made
meanwhile were lost; hosted Realtime says so that way after its change capture dropped, and the
sync engine re-reads on it), then changes and broadcasts made afterwards, live.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from realtime import RealtimePostgresChangesListenEvent

from sync.localcloud.gateway.listener import APPLICATION_NAME as LISTENER_APP
from sync.localcloud.stack import LocalCloud
from tests.cloud.conftest import async_client, close_async, publish_test_tables

pytestmark = pytest.mark.cloud
TIMEOUT = 15


@pytest.fixture(scope="module", params=["wal2json", "trigger"])
def own_cloud(request: pytest.FixtureRequest) -> Iterator[LocalCloud]:
    """A stack of this module's own (its Postgres is restarted), per change source."""
    with LocalCloud(change_source=request.param) as lc:
        publish_test_tables(lc)
        lc.restart_gateway()  # (the trigger feed puts its triggers on the tables published now)
        yield lc


def _backends(cloud: LocalCloud, app: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select pid, state, query from pg_stat_activity where application_name = %s", (app,)
        ).fetchall()
    return [(int(pid), str(state), str(query)) for pid, state, query in rows]


def _wait_listening(cloud: LocalCloud, *, not_pid: int | None = None) -> int:
    """Wait until a listener backend (other than ``not_pid``) has run all its LISTENs."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for pid, state, query in _backends(cloud, LISTENER_APP):
            # (its last LISTEN is for the trigger feed's channel; only then is it complete)
            if pid != not_pid and state == "idle" and "gw_realtime_change" in query:
                return pid
        time.sleep(0.05)  # no event tells another process that a backend LISTENs
    raise AssertionError(f"no NOTIFY listener came back: {_backends(cloud, LISTENER_APP)}")


class Subscriber:
    """One async client with one channel on ``rt_public``; states, changes and broadcasts queued."""

    def __init__(self) -> None:
        self.states: asyncio.Queue[str] = asyncio.Queue()
        self.changes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.broadcasts: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.systems: asyncio.Queue[Any] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.topic = f"rc-{uuid.uuid4().hex[:8]}"

    async def join(self, client: Any) -> None:
        await self.subscribe(client)
        assert await self.state() == "SUBSCRIBED"
        await self.subscribed_to_postgres()  # the join's own

    async def subscribe(self, client: Any) -> None:
        """Join the channel; what the server answers is queued."""
        ch = client.channel(self.topic)
        ch.on_postgres_changes(
            RealtimePostgresChangesListenEvent.All,
            lambda p: self.changes.put_nowait(p["data"]),
            schema="public",
            table="rt_public",
        )
        ch.on_broadcast("*", self.broadcasts.put_nowait)
        ch.on_system(self.systems.put_nowait)

        def on_state(state: Any, err: Exception | None) -> None:
            self.states.put_nowait(state.value)
            if err is not None:
                self.errors.put_nowait(err)

        await ch.subscribe(on_state)

    async def state(self) -> str:
        return await asyncio.wait_for(self.states.get(), TIMEOUT)

    async def subscribed_to_postgres(self) -> None:
        msg = await asyncio.wait_for(self.systems.get(), TIMEOUT)
        assert (msg.extension, msg.status, msg.message) == (
            "postgres_changes",
            "ok",
            "Subscribed to PostgreSQL",
        )

    async def resubscribed(self) -> None:
        """The gateway said it is subscribed to the database again, the channel staying joined."""
        await self.subscribed_to_postgres()
        assert self.states.empty(), "the channel changed state"

    async def sees_live_traffic(self, cloud: LocalCloud) -> None:
        label = f"after-{uuid.uuid4().hex[:6]}"
        with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
            conn.execute("insert into public.rt_public (label) values (%s)", (label,))
            conn.execute(
                "select realtime.send('{\"n\": 7}'::jsonb, 'ping', %s, false)", (self.topic,)
            )
        data = await asyncio.wait_for(self.changes.get(), TIMEOUT)
        while data["record"]["label"] != label:
            data = await asyncio.wait_for(self.changes.get(), TIMEOUT)
        msg = await asyncio.wait_for(self.broadcasts.get(), TIMEOUT)
        assert msg["event"] == "ping" and msg["payload"]["n"] == 7


def test_a_terminated_listener_backend_is_replaced(own_cloud: LocalCloud) -> None:
    """pg_terminate_backend of the listener: it reconnects at once. With the trigger feed its
    notifications were the changes, so channels are told to re-read; with wal2json they were not."""
    cloud = own_cloud
    old = _wait_listening(cloud)
    trigger = cloud._change_source == "trigger"

    def fault() -> None:
        with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
            conn.execute("select pg_terminate_backend(%s)", (old,))
        _wait_listening(cloud, not_pid=old)

    async def scenario() -> None:
        client, http = await async_client(cloud)
        try:
            sub = Subscriber()
            await sub.join(client)
            await asyncio.to_thread(fault)
            if trigger:
                await sub.resubscribed()
            await sub.sees_live_traffic(cloud)
        finally:
            await close_async(client, http)

    asyncio.run(scenario())


def test_a_restarted_postgres_is_reconnected_and_channels_told_to_re_read(
    own_cloud: LocalCloud,
) -> None:
    """pg_ctl restart: the listener and the feed reconnect, channels are told they are
    subscribed to the database again, later changes and broadcasts arrive live, and REST answers the first request."""
    cloud = own_cloud
    old = _wait_listening(cloud)

    async def scenario() -> None:
        client, http = await async_client(cloud)
        try:
            sub = Subscriber()
            await sub.join(client)
            await asyncio.to_thread(cloud.cluster.restart)
            await sub.resubscribed()
            await asyncio.to_thread(_wait_listening, cloud, not_pid=old)
            await sub.sees_live_traffic(cloud)
            rows = await client.table("rt_public").select("id").limit(1).execute()
            assert rows.data
        finally:
            await close_async(client, http)

    asyncio.run(scenario())


def test_a_join_while_postgres_is_down_gets_a_system_error_and_keeps_the_socket(
    own_cloud: LocalCloud,
) -> None:
    """A phx_join with postgres_changes while Postgres was down raised out of the socket's loop
    (the join's check of the publication): the gateway closed the socket, and every channel on
    it went with it. Hosted Realtime answers the join with a ``system`` error for
    postgres_changes and keeps the socket; the channels joined before stay joined."""
    cloud = own_cloud

    async def scenario() -> None:
        client, http = await async_client(cloud)
        try:
            joined = Subscriber()
            await joined.join(client)
            await asyncio.to_thread(cloud.cluster.pause)
            try:
                late = Subscriber()
                await late.subscribe(client)
                assert await late.state() == "SUBSCRIBED"  # (the phx_reply, before the check)
                assert await late.state() == "CHANNEL_ERROR"
                error = await asyncio.wait_for(late.errors.get(), TIMEOUT)
                assert "unable to connect to the project database" in str(error)
                assert '"extension": "postgres_changes"' in str(error)
            finally:
                await asyncio.to_thread(cloud.cluster.resume)
            await joined.resubscribed()  # (on the same socket: nothing closed it)
            await joined.sees_live_traffic(cloud)
        finally:
            await close_async(client, http)

    asyncio.run(scenario())
