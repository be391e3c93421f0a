"""A jsonb value Python's json cannot hold (an integer over 4,300 digits, nesting 2,000 deep, a
decimal past a double's range) reaches realtime subscribers as Postgres wrote it, as Realtime
sends it, and the changes after it still arrive.

It ended the gateway's change feed: ``json.loads`` of the value raised in the feed's task, which
died without a word, and every socket stayed up and joined without a change ever again.

The frames are read off a plain websocket: the official client cannot decode such a frame (its
pydantic parser refuses it; the library logs it at ERROR and drops it).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import psycopg
import pytest

from sync.localcloud.stack import LocalCloud
from tests.cloud.conftest import PASSWORD, forge, user_claims

pytestmark = pytest.mark.cloud
TIMEOUT = 10

# The values as SQL (the client cannot send them: its own json cannot write them).
_POISON_SQL = {
    "huge_integer": "'1e5000'",
    "deep": "repeat('[', 2000) || repeat(']', 2000)",
    "infinite": "repeat('9', 400) || '.5'",
}


async def _next_change(
    ws: aiohttp.ClientWebSocketResponse, value: str
) -> tuple[str, dict[str, Any]]:
    """The next postgres_changes frame: its text, and its data with ``value`` read as null (the
    test's json cannot read it either)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        if '"event": "postgres_changes"' in msg.data:
            outline = json.loads(msg.data.replace(value, "null"))
            return msg.data, outline["payload"]["data"]


@pytest.mark.parametrize("label", ["short", "long"])
@pytest.mark.parametrize("source", ["default", "trigger"])
@pytest.mark.parametrize("kind", sorted(_POISON_SQL))
def test_a_value_python_cannot_hold_is_sent_as_postgres_wrote_it_and_later_changes_arrive(
    request: pytest.FixtureRequest, kind: str, source: str, label: str
) -> None:
    """For either change feed, and a row small enough for one NOTIFY or not (the trigger feed
    then sends its key, and the gateway reads the row). The trigger + NOTIFY fallback read
    each notification with json.loads: nesting 2,000 deep raised a RecursionError that ended
    the gateway's NOTIFY listener (changes, broadcasts and schema reloads, for every socket),
    and a 5,000-digit integer lost its change; so did a long row's, read back by psycopg."""
    cloud: LocalCloud = request.getfixturevalue("cloud" if source == "default" else "trigger_cloud")
    user_id = cloud.create_user(f"u-{uuid.uuid4().hex[:12]}@example.test", PASSWORD)

    async def scenario() -> None:
        url = f"{cloud.url}/realtime/v1/websocket?apikey={cloud.anon_key}&vsn=1.0.0"
        binding = {"event": "*", "schema": "public", "table": "rt_items"}
        join = {
            "topic": f"realtime:t-{uuid.uuid4().hex[:8]}",
            "event": "phx_join",
            "payload": {
                "config": {"postgres_changes": [{**binding, "filter": f"owner=eq.{user_id}"}]},
                "access_token": forge(cloud, user_claims(user_id)),
            },
            "ref": "1",
        }
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str(json.dumps(join))
            while '"Subscribed to PostgreSQL"' not in (
                await asyncio.wait_for(ws.receive_str(), TIMEOUT)
            ):
                pass
            with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
                # One at a time: an INSERT or UPDATE is sent only if the row is still there.
                row_id, text = conn.execute(
                    "insert into public.rt_items (owner, label, data)"
                    f" values (%s, %s, ({_POISON_SQL[kind]})::jsonb) returning id, data::text",
                    (user_id, "poison" if label == "short" else "x" * 8000),
                ).fetchone()  # type: ignore[misc]
                inserted, data = await _next_change(ws, text)
                assert (data["type"], data["record"]["id"]) == ("INSERT", str(row_id))
                # (The value written again: an unchanged TOASTed value is left out of an UPDATE.)
                conn.execute(
                    "update public.rt_items set label = 'still',"
                    f" data = ({_POISON_SQL[kind]})::jsonb where id = %s",
                    (row_id,),
                )
                updated, data = await _next_change(ws, text)
                assert (data["type"], data["record"]["label"]) == ("UPDATE", "still")
                conn.execute("delete from public.rt_items where id = %s", (row_id,))
                _, data = await _next_change(ws, text)
                assert (data["type"], data["old_record"]) == ("DELETE", {"id": str(row_id)})
                conn.execute(
                    "insert into public.rt_items (owner, label) values (%s, 'after')", (user_id,)
                )
                _, data = await _next_change(ws, text)
                assert (data["type"], data["record"]["label"]) == ("INSERT", "after")
        for frame in (inserted, updated):
            assert f'"data": {text}, "tags": ' in frame  # the very text, not a float or a string

    asyncio.run(scenario())
