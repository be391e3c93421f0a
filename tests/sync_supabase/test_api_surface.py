"""What a signed-in user can reach through the API, with the official client.

pg_advisory_xact_lock is executable by every role, as on any PostgreSQL. A user could stall
another user's pushes by holding that user's owner lock (docs/sync-protocol.md, "Pull safety"),
but PostgREST only calls functions of its exposed schemas (Supabase: public, graphql_public), and
of ours only the sync RPCs are there; the helpers in sync_internal are not exposed either.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client

from sync.localcloud.stack import LocalCloud

from .conftest import PASSWORD, new_email

pytestmark = pytest.mark.cloud


@pytest.fixture
def user_client(cloud: LocalCloud) -> Iterator[Client]:
    email = new_email()
    cloud.create_user(email, PASSWORD)
    http = httpx.Client(timeout=10)
    client = create_client(cloud.url, cloud.anon_key, ClientOptions(httpx_client=http))
    client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    try:
        yield client
    finally:
        client.auth.sign_out()
        http.close()


@pytest.mark.parametrize(
    ("schema", "fn", "args", "code"),
    [
        ("public", "pg_advisory_xact_lock", {"key": 1}, "PGRST202"),
        ("public", "pg_advisory_lock", {"key": 1}, "PGRST202"),
        ("pg_catalog", "pg_advisory_xact_lock", {"key": 1}, "PGRST106"),
        ("sync_internal", "lock_owner", {"owner_id": str(uuid.uuid4())}, "PGRST106"),
        ("sync_internal", "taken_ids", {"ids": [], "me": str(uuid.uuid4())}, "PGRST106"),
    ],
)
def test_a_user_cannot_call_lock_functions_or_internal_helpers(
    user_client: Client, schema: str, fn: str, args: dict[str, Any], code: str
) -> None:
    with pytest.raises(APIError) as info:
        user_client.schema(schema).rpc(fn, args).execute()
    assert info.value.code == code


def test_the_sync_rpcs_are_reachable(user_client: Client) -> None:
    info = user_client.rpc("server_info", {}).execute().data
    assert isinstance(info, dict) and info["protocol"] == 1
