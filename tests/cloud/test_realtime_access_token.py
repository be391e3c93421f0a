"""A channel's ``access_token`` push, as the official client sends it after a token refresh.

Hosted Realtime (``realtime_channel.ex`` ``handle_in("access_token", ...)``) verifies the new token:
valid, the channel stays joined and RLS follows the new claims; expired or invalid, the channel
gets a ``system`` error and ``phx_close``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from realtime import RealtimePostgresChangesListenEvent, RealtimeSubscribeStates

from tests.cloud.conftest import async_client, close_async, forge, obj, user_claims

pytestmark = pytest.mark.cloud
TIMEOUT = 10


class Watched:
    """An async client with one rt_items channel; states, system messages and events queued."""

    def __init__(self) -> None:
        self.states: asyncio.Queue[tuple[RealtimeSubscribeStates, Any]] = asyncio.Queue()
        self.system: asyncio.Queue[Any] = asyncio.Queue()
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    async def join(self, client: Any) -> Any:
        channel = client.channel(f"tok-{uuid.uuid4().hex[:8]}")
        channel.on_postgres_changes(
            RealtimePostgresChangesListenEvent.Insert,
            self.events.put_nowait,
            schema="public",
            table="rt_items",
        )
        channel.on_system(self.system.put_nowait)
        await channel.subscribe(lambda state, err: self.states.put_nowait((state, err)))
        assert (await self.state())[0] is RealtimeSubscribeStates.SUBSCRIBED
        await asyncio.wait_for(self.system.get(), TIMEOUT)  # "Subscribed to PostgreSQL"
        return channel

    async def state(self) -> tuple[RealtimeSubscribeStates, Any]:
        return await asyncio.wait_for(self.states.get(), TIMEOUT)


async def _signed_in(cloud, user) -> tuple[Any, Any]:
    client, http = await async_client(cloud)
    await client.auth.sign_in_with_password({"email": user.email, "password": user.password})
    await asyncio.sleep(0)  # let the client's realtime.set_auth task run before joining
    return client, http


@pytest.mark.parametrize("bad", ["expired", "bad-signature"])
def test_an_expired_or_invalid_token_push_errors_and_closes_the_channel(cloud, user, bad):
    async def scenario() -> None:
        client, http = await _signed_in(cloud, user)
        try:
            watched = Watched()
            channel = await watched.join(client)
            claims = user_claims(user.id, exp_in=-120 if bad == "expired" else 3600)
            token = forge(
                cloud,
                claims,
                secret="not-the-project-secret-" + "x" * 32 if bad != "expired" else None,
            )
            await client.realtime.set_auth(token)
            # (realtime-py hands a system error to the channel's error state, not on_system.)
            state, error = await watched.state()
            assert state is RealtimeSubscribeStates.CHANNEL_ERROR, (state, error)
            reason = "Token has expired" if bad == "expired" else "JwtSignatureError"
            assert reason in str(error), error
            assert not channel.is_joined
        finally:
            await close_async(client, http)

    asyncio.run(scenario())


def test_a_valid_token_push_keeps_the_channel_and_rls_follows_its_claims(cloud, user, other_user):
    async def scenario() -> None:
        client, http = await _signed_in(cloud, user)
        other, other_http = await _signed_in(cloud, other_user)
        try:
            watched = Watched()
            channel = await watched.join(client)
            await client.realtime.set_auth(forge(cloud, user_claims(other_user.id)))
            mine = obj((await client.table("rt_items").insert({"label": "u"}).execute()).data[0])
            theirs = obj((await other.table("rt_items").insert({"label": "o"}).execute()).data[0])
            event = await asyncio.wait_for(watched.events.get(), TIMEOUT)
            # The feed delivers in commit order: the first user's row would have come first.
            assert event["data"]["record"]["id"] == theirs["id"] != mine["id"]
            assert channel.is_joined and watched.states.empty() and watched.system.empty()
        finally:
            await close_async(other, other_http)
            await close_async(client, http)

    asyncio.run(scenario())
