"""Realtime postgres_changes and broadcast through the official async client.

"Never arrives" is proven without sleeping: after the other user's changes, the listener makes a
change of its own and waits for that event. The gateway dispatches in commit order from one feed,
so anything it was going to send about the earlier changes has been sent by then.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from realtime import BroadcastPayload, RealtimePostgresChangesListenEvent
from supabase import AsyncClient

from tests.cloud.conftest import async_client, change, close_async, obj, rows

pytestmark = pytest.mark.cloud
TIMEOUT = 10


class Listener:
    """An async client subscribed to one table; events land in a queue."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.events: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue()
        self.broadcasts: asyncio.Queue[BroadcastPayload] = asyncio.Queue()

    async def subscribe(self, table: str, *, topic: str | None = None, **kw: Any) -> None:
        states: asyncio.Queue[Any] = asyncio.Queue()
        ch = self.client.channel(topic or f"t-{uuid.uuid4().hex[:8]}")
        ch.on_postgres_changes(
            RealtimePostgresChangesListenEvent.All,
            self.events.put_nowait,
            schema="public",
            table=table,
            **kw,
        )
        ch.on_broadcast("*", self.broadcasts.put_nowait)
        await ch.subscribe(lambda state, err: states.put_nowait((state, err)))
        state, err = await asyncio.wait_for(states.get(), TIMEOUT)
        assert state.value == "SUBSCRIBED", (state, err)

    async def next_where(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Events up to and including the first one matching ``pred``."""
        seen = []
        while True:
            payload = await asyncio.wait_for(self.events.get(), TIMEOUT)
            seen.append(payload["data"])
            if pred(payload["data"]):
                return seen


@asynccontextmanager
async def listener(cloud, user=None) -> AsyncIterator[Listener]:
    client, http = await async_client(cloud)
    if user is not None:
        await client.auth.sign_in_with_password({"email": user.email, "password": user.password})
        await asyncio.sleep(0)  # let the client's realtime.set_auth task run before joining
    try:
        yield Listener(client)
    finally:
        if user is not None:
            await client.auth.sign_out()
        await close_async(client, http)


def _rec(data: dict[str, Any]) -> dict[str, Any]:
    return data.get("record") or data.get("old_record") or {}


def test_own_blueprint_changes_arrive_and_others_never_do(cloud, user, other_user):
    async def scenario() -> None:
        async with listener(cloud, user) as a, listener(cloud, other_user) as b:
            await a.subscribe("blueprints")
            await b.subscribe("blueprints")
            c = change("rt/one.yaml", op_id=1)
            push = a.client.rpc
            pushed = await push("push_changes", {"changes": [c], "device": "a"}).execute()
            r1 = rows(pushed.data)[0]
            got = await a.next_where(lambda d: _rec(d).get("id") == c["id"])
            assert got[-1]["type"] == "INSERT" and got[-1]["record"]["rev"] == 1
            edit = {**c, "op_id": 2, "base_rev": r1["rev"], "content": "a: 2\n"}
            await push("push_changes", {"changes": [edit], "device": "a"}).execute()
            got = await a.next_where(
                lambda d: d["type"] == "UPDATE" and _rec(d).get("id") == c["id"]
            )
            assert got[-1]["record"]["content"] == "a: 2\n"
            tomb = {**c, "op_id": 3, "base_rev": 2, "deleted": True}
            await push("push_changes", {"changes": [tomb], "device": "a"}).execute()
            got = await a.next_where(lambda d: _rec(d).get("deleted") is True)
            assert got[-1]["type"] == "UPDATE"
            # Barrier: B's own change; nothing of A's may come before it.
            mine = change("rt/b.yaml", op_id=1)
            await b.client.rpc("push_changes", {"changes": [mine], "device": "b"}).execute()
            seen = await b.next_where(lambda d: _rec(d).get("id") == mine["id"])
            assert all(_rec(d).get("owner") == other_user.id for d in seen), seen
            assert c["id"] not in {_rec(d).get("id") for d in seen}

    asyncio.run(scenario())


def test_insert_update_delete_with_values_typed_like_realtime(cloud, user, other_user):
    async def scenario() -> None:
        async with listener(cloud, user) as a, listener(cloud, other_user) as b:
            await a.subscribe("rt_items", filter=f"owner=eq.{user.id}")
            await b.subscribe("rt_items")
            t = a.client.table("rt_items")
            new = {"label": "x", "data": {"k": [1]}, "tags": ["p", "q"]}
            row = obj((await t.insert(new).execute()).data[0])
            ins = (await a.next_where(lambda d: _rec(d).get("id") == row["id"]))[-1]
            assert ins["type"] == "INSERT" and ins["record"]["data"] == {"k": [1]}
            assert ins["record"]["tags"] == ["p", "q"] and ins["record"]["at"] == row["at"]
            assert {"name": "tags", "type": "_text"} in ins["columns"]
            assert ins["commit_timestamp"].endswith("Z")
            await t.update({"label": "y"}).eq("id", row["id"]).execute()
            upd = (await a.next_where(lambda d: d["type"] == "UPDATE"))[-1]
            assert upd["record"]["label"] == "y" and upd["old_record"] == {"id": row["id"]}
            await t.delete().eq("id", row["id"]).execute()
            dele = (await a.next_where(lambda d: d["type"] == "DELETE"))[-1]
            assert dele["old_record"] == {"id": row["id"]} and "record" not in dele
            # Barrier for B: its own insert and delete; none of A's three events came first.
            mine = obj((await b.client.table("rt_items").insert({"label": "b"}).execute()).data[0])
            await b.client.table("rt_items").delete().eq("id", mine["id"]).execute()
            seen = await b.next_where(lambda d: d["type"] == "DELETE")
            assert row["id"] not in {_rec(d).get("id") for d in seen}, seen

    asyncio.run(scenario())


def test_anon_subscriber_gets_no_user_rows(cloud, user):
    async def scenario() -> None:
        async with listener(cloud) as anon, listener(cloud, user) as a:
            await anon.subscribe("*")
            await a.subscribe("rt_items")
            inserted = await a.client.table("rt_items").insert({"label": "private"}).execute()
            row = obj(inserted.data[0])
            await a.next_where(lambda d: _rec(d).get("id") == row["id"])
            with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
                conn.execute("insert into public.rt_public (label) values ('barrier')")
            seen = await anon.next_where(lambda d: d["table"] == "rt_public")
            assert [d["table"] for d in seen] == ["rt_public"], seen

    asyncio.run(scenario())


def test_broadcast_from_the_database_and_between_clients(cloud, user):
    async def scenario() -> None:
        topic = f"room-{uuid.uuid4().hex[:8]}"
        async with listener(cloud, user) as a, listener(cloud, user) as b:
            await a.subscribe("rt_items", topic=topic)
            await b.subscribe("rt_items", topic=topic)
            with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
                conn.execute(
                    "select realtime.send(%s::jsonb, 'ping', %s, false)", ('{"n": 1}', topic)
                )
            msg = await asyncio.wait_for(a.broadcasts.get(), TIMEOUT)
            assert msg["event"] == "ping" and msg["payload"]["n"] == 1 and msg["payload"]["id"]
            sender = b.client.channel(topic)  # already joined: same channel object
            await sender.send_broadcast("hello", {"x": 2})
            got = await asyncio.wait_for(a.broadcasts.get(), TIMEOUT)
            while got["event"] != "hello":
                got = await asyncio.wait_for(a.broadcasts.get(), TIMEOUT)
            assert got["payload"] == {"x": 2}

    asyncio.run(scenario())


def test_a_database_broadcast_python_cannot_read_leaves_later_ones_flowing(cloud, user):
    """A realtime.send payload nested 2,000 deep raised a RecursionError in the gateway's NOTIFY
    listener, which ended it: no broadcast, change (trigger feed) or schema reload reached
    anyone again."""

    async def scenario() -> None:
        topic = f"room-{uuid.uuid4().hex[:8]}"
        async with listener(cloud, user) as a:
            await a.subscribe("rt_items", topic=topic)
            with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
                for payload in ("[" * 2000 + "]" * 2000, '{"n": 2}'):
                    conn.execute(
                        "select realtime.send(jsonb_build_object('v', %s::jsonb), 'ping', %s, false)",
                        (payload, topic),
                    )
            msg = await asyncio.wait_for(a.broadcasts.get(), TIMEOUT)
            assert msg["payload"]["v"] == {"n": 2}

    asyncio.run(scenario())
