"""PostgREST subset through the official client: the sync RPCs and PostgREST's error codes."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from postgrest.exceptions import APIError

from tests.cloud.conftest import async_client, change, close_async, forge, obj, rows, user_claims

pytestmark = pytest.mark.cloud


def test_push_then_pull_round_trip(new_client, user):
    client = new_client(sign_in=user)
    changes = [change(f"dir/bp-{i}.yaml", op_id=i + 1, content=f"n: {i}\n") for i in range(3)]
    results = client.rpc("push_changes", {"changes": changes, "device": "dev-a"}).execute().data
    assert [r["status"] for r in results] == ["applied"] * 3
    pulled = client.rpc("pull_changes", {"since": 0}).execute().data
    assert [row["id"] for row in pulled["changes"]] == [c["id"] for c in changes]
    assert pulled["changes"][1]["content"] == "n: 1\n" and pulled["more"] is False
    assert pulled["next"] == results[-1]["seq"]
    replay = client.rpc("push_changes", {"changes": changes[:1], "device": "dev-a"}).execute().data
    assert replay == results[:1]  # idempotent by (device, op_id)
    again = client.rpc("pull_changes", {"since": pulled["next"], "lim": 10}).execute().data
    assert again["changes"] == [] and again["next"] == pulled["next"]


def test_async_client_push_and_pull(cloud, user):
    async def scenario() -> None:
        client, http = await async_client(cloud)
        await client.auth.sign_in_with_password({"email": user.email, "password": user.password})
        c = change("async.yaml", op_id=1)
        res = await client.rpc("push_changes", {"changes": [c], "device": "d"}).execute()
        assert rows(res.data)[0]["status"] == "applied"
        pulled = await client.rpc("pull_changes", {"since": 0, "lim": 5}).execute()
        assert [r["id"] for r in obj(pulled.data)["changes"]] == [c["id"]]
        await client.auth.sign_out()
        await close_async(client, http)

    asyncio.run(scenario())


def test_unknown_function_is_pgrst202(new_client, user):
    with pytest.raises(APIError) as err:
        new_client(sign_in=user).rpc("no_such_function", {"x": 1}).execute()
    assert err.value.code == "PGRST202"
    assert "no_such_function" in (err.value.message or "")


def test_anon_cannot_call_the_sync_rpcs(new_client):
    with pytest.raises(APIError) as err:
        new_client().rpc("pull_changes", {"since": 0}).execute()
    assert err.value.code == "42501"


def test_bad_signature_is_pgrst301(cloud, new_client, user):
    token = forge(cloud, user_claims(user.id), secret="not-the-project-secret-at-all-0123456789")
    with pytest.raises(APIError) as err:
        new_client().postgrest.auth(token).rpc("server_info", {}).execute()
    assert err.value.code == "PGRST301"


def test_expired_token_is_pgrst303(cloud, new_client, user):
    token = forge(cloud, user_claims(user.id, exp_in=-120))
    with pytest.raises(APIError) as err:
        new_client().postgrest.auth(token).rpc("server_info", {}).execute()
    assert err.value.code == "PGRST303"
    assert err.value.message == "JWT expired"


def test_malformed_token_is_pgrst301(new_client):
    with pytest.raises(APIError) as err:
        new_client().postgrest.auth("not-a-jwt").rpc("server_info", {}).execute()
    assert err.value.code == "PGRST301"


def test_too_many_changes_is_22023(new_client, user):
    client = new_client(sign_in=user)
    changes = [change(f"x{i}.yaml", op_id=i + 1) for i in range(501)]
    with pytest.raises(APIError) as err:
        client.rpc("push_changes", {"changes": changes, "device": "d"}).execute()
    assert err.value.code == "22023" and err.value.message == "too many changes"


def test_unexposed_schema_is_pgrst106(new_client, user):
    with pytest.raises(APIError) as err:
        new_client(sign_in=user).schema("sync_internal").rpc("require_uid", {}).execute()
    assert err.value.code == "PGRST106"


def test_unknown_table_is_pgrst205_and_single_needs_one_row(new_client, user):
    client = new_client(sign_in=user)
    with pytest.raises(APIError) as err:
        client.table("nope").select("*").execute()
    assert err.value.code == "PGRST205"
    with pytest.raises(APIError) as err:
        client.table("blueprints").select("*").eq("id", str(uuid.uuid4())).single().execute()
    assert err.value.code == "PGRST116"


def test_table_filters_order_count_and_writes(new_client, user):
    client = new_client(sign_in=user)
    rows = [{"label": f"l{i}", "tags": [f"t{i}"], "data": {"i": i}} for i in range(5)]
    inserted = client.table("rt_items").insert(rows).execute().data
    assert len(inserted) == 5 and inserted[0]["owner"] == user.id
    ids = [r["id"] for r in inserted]
    res = (
        client.table("rt_items")
        .select("id,label", count="exact")
        .in_("id", ids[:4])
        .neq("label", "l0")
        .order("label", desc=True)
        .limit(2)
        .execute()
    )
    assert [r["label"] for r in res.data] == ["l3", "l2"] and res.count == 3
    updated = client.table("rt_items").update({"label": "changed"}).eq("id", ids[0]).execute().data
    assert updated[0]["label"] == "changed" and updated[0]["data"] == {"i": 0}
    one = client.table("rt_items").select("*").eq("id", ids[0]).single().execute().data
    assert one["label"] == "changed"
    deleted = client.table("rt_items").delete().in_("id", ids).execute().data
    assert sorted(r["id"] for r in deleted) == sorted(ids)
    upserted = (
        client.table("rt_items")
        .upsert({"id": ids[0], "label": "again"}, on_conflict="id")
        .execute()
        .data
    )
    assert upserted[0]["label"] == "again"
    client.table("rt_items").delete().eq("id", ids[0]).execute()


def test_missing_or_unknown_api_key_is_refused_like_kong(cloud):
    response = httpx.post(f"{cloud.url}/rest/v1/rpc/server_info", json={})
    assert response.status_code == 401
    assert response.json() == {"message": "No API key found in request"}
    response = httpx.post(f"{cloud.url}/rest/v1/rpc/server_info", json={}, headers={"apikey": "x"})
    assert response.json() == {"message": "Invalid authentication credentials"}


def test_errors_have_proxy_status_and_www_authenticate(cloud):
    response = httpx.post(
        f"{cloud.url}/rest/v1/rpc/server_info",
        json={},
        headers={"apikey": cloud.anon_key, "Authorization": "Bearer a.b.c"},
    )
    assert response.status_code == 401
    assert response.headers["Proxy-Status"] == "PostgREST; error=PGRST301"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_gateway_restart_keeps_the_port_and_clients_carry_on(cloud, new_client, user):
    client = new_client(sign_in=user)
    url = cloud.url
    client.rpc("server_info", {}).execute()
    cloud.restart_gateway()
    assert cloud.url == url
    assert client.rpc("server_info", {}).execute().data["protocol"] == 1
