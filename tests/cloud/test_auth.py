"""GoTrue subset through the official client: sign-up/in, rotation, restore, sign-out."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from supabase_auth import SyncMemoryStorage
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from tests.cloud.conftest import PASSWORD, async_client, close_async, forge, obj, user_claims

pytestmark = pytest.mark.cloud


def _email() -> str:
    return f"s-{uuid.uuid4().hex[:12]}@example.test"


def test_sign_up_returns_a_session_and_duplicates_are_refused(new_client):
    client = new_client()
    email = _email()
    res = client.auth.sign_up({"email": email, "password": PASSWORD})
    assert res.session is not None and res.user is not None
    assert res.user.email == email and res.user.aud == "authenticated"
    assert client.auth.get_user().user.id == res.user.id
    with pytest.raises(AuthApiError) as err:
        new_client().auth.sign_up({"email": email, "password": PASSWORD})
    assert err.value.code == "user_already_exists"
    with pytest.raises(AuthWeakPasswordError):
        new_client().auth.sign_up({"email": _email(), "password": "123"})


def test_sign_in_with_wrong_password_is_invalid_credentials(new_client, user):
    with pytest.raises(AuthApiError) as err:
        new_client().auth.sign_in_with_password({"email": user.email, "password": "wrong-one"})
    assert err.value.code == "invalid_credentials"
    assert err.value.status == 400


def test_refresh_rotates_and_a_token_rotated_twice_since_is_refused(new_client, user):
    client = new_client(sign_in=user)
    first = client.auth.get_session()
    assert first is not None
    second = client.auth.refresh_session().session
    assert second is not None and second.refresh_token != first.refresh_token
    assert second.user.id == user.id
    third = client.auth.refresh_session().session
    assert third is not None and third.refresh_token not in (
        first.refresh_token,
        second.refresh_token,
    )
    with pytest.raises(AuthApiError) as err:
        new_client().auth.refresh_session(first.refresh_token)
    assert err.value.code == "refresh_token_already_used"
    # Reuse means a leak: GoTrue ends the whole session, so the newest token dies too.
    with pytest.raises(AuthApiError) as err:
        new_client().auth.refresh_session(third.refresh_token)
    assert err.value.code == "refresh_token_already_used"
    with pytest.raises(AuthApiError) as err:
        new_client().auth.refresh_session("never-issued")
    assert err.value.code == "refresh_token_not_found"


def test_the_token_the_active_one_was_rotated_from_gets_the_active_one_back(new_client, user):
    """GoTrue >= v2.105.0 (supabase/auth #1278): a client that lost the answer to its refresh
    (it crashed before storing it, the connection dropped) asks again with the old token and
    gets the active token back, with a new access token; nothing rotates, nothing is revoked."""
    client = new_client(sign_in=user)
    first = client.auth.get_session()
    assert first is not None
    second = client.auth.refresh_session().session
    assert second is not None
    for _ in range(2):  # asking again any number of times converges on the one token
        again = new_client().auth.refresh_session(first.refresh_token).session
        assert again is not None and again.refresh_token == second.refresh_token
        assert again.user.id == user.id
    third = new_client().auth.refresh_session(second.refresh_token).session
    assert third is not None and third.refresh_token != second.refresh_token
    # Now first is two rotations behind: a leak, the session ends.
    with pytest.raises(AuthApiError) as err:
        new_client().auth.refresh_session(first.refresh_token)
    assert err.value.code == "refresh_token_already_used"
    with pytest.raises(AuthApiError) as err:
        new_client().auth.refresh_session(third.refresh_token)
    assert err.value.code == "refresh_token_already_used"


def test_session_restores_from_storage(new_client, user):
    storage = SyncMemoryStorage()
    first = new_client(storage=storage, sign_in=user)
    first.rpc("server_info", {}).execute()
    restored = new_client(storage=storage)
    restored.auth.initialize_from_storage()
    assert restored.auth.get_user().user.id == user.id
    assert restored.rpc("server_info", {}).execute().data["protocol"] == 1


def test_set_session_with_an_expired_access_token_refreshes(cloud, new_client, user):
    session = new_client(sign_in=user).auth.get_session()
    assert session is not None
    stale = forge(cloud, {**user_claims(user.id, exp_in=-120), "session_id": "x"})
    client = new_client()
    res = client.auth.set_session(stale, session.refresh_token)
    assert res.session is not None and res.session.access_token != stale
    assert client.rpc("server_info", {}).execute().data["max_batch"] == 500


def test_sign_out_ends_the_session_everywhere(new_client, user):
    client = new_client(sign_in=user)
    session = client.auth.get_session()
    assert session is not None
    client.auth.sign_out()
    assert client.auth.get_session() is None
    with pytest.raises(AuthApiError) as err:
        new_client().auth.refresh_session(session.refresh_token)
    assert err.value.code == "refresh_token_not_found"
    with pytest.raises(AuthApiError) as err:
        new_client().auth.get_user(session.access_token)
    assert err.value.code == "session_not_found"


def test_auth_errors_carry_the_api_version_header(cloud):
    response = httpx.get(
        f"{cloud.url}/auth/v1/user",
        headers={"apikey": cloud.anon_key, "Authorization": f"Bearer {cloud.anon_key}"},
    )
    assert response.status_code == 403
    assert response.headers["X-Supabase-Api-Version"] == "2024-01-01"
    assert response.json()["code"] == "bad_jwt"


def test_admin_endpoint_needs_the_service_key(cloud, user):
    response = httpx.post(
        f"{cloud.url}/auth/v1/admin/users",
        headers={"apikey": cloud.anon_key, "Authorization": f"Bearer {cloud.anon_key}"},
        json={"email": _email(), "password": PASSWORD},
    )
    assert response.status_code == 403 and response.json()["code"] == "not_admin"


def test_async_client_auth_round_trip(cloud, user):
    async def scenario() -> None:
        client, http = await async_client(cloud)
        email = _email()
        signed = await client.auth.sign_up({"email": email, "password": PASSWORD})
        assert signed.session is not None
        await client.auth.sign_out()
        res = await client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
        assert res.session is not None
        refreshed = await client.auth.refresh_session()
        assert refreshed.session is not None
        assert refreshed.session.refresh_token != res.session.refresh_token
        data = obj((await client.rpc("server_info", {}).execute()).data)
        assert data["protocol"] == 1
        await client.auth.sign_out()
        await close_async(client, http)

    asyncio.run(scenario())


def test_short_lived_tokens_expire_as_configured(cloud, new_client, user):
    # The TTL is configurable per stack; the default fixture issues 3600 s tokens.
    session = new_client(sign_in=user).auth.get_session()
    assert session is not None
    assert session.expires_in == cloud.access_token_ttl
    assert abs(session.expires_at - (time.time() + cloud.access_token_ttl)) < 30
