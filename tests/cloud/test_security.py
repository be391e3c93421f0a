"""User B can neither read, change, delete nor learn of user A's rows through any HTTP endpoint."""

from __future__ import annotations

import pytest
from postgrest.exceptions import APIError

from tests.cloud.conftest import change, forge

pytestmark = pytest.mark.cloud


@pytest.fixture
def a_row(new_client, user):
    """User A's blueprint (pushed through the RPC) and A's client."""
    client = new_client(sign_in=user)
    c = change("secret/plan.yaml", op_id=1, content="secret: 42\n")
    res = client.rpc("push_changes", {"changes": [c], "device": "a"}).execute().data[0]
    assert res["status"] == "applied"
    return client, c, res


def test_b_cannot_read_a_rows(a_row, new_client, other_user):
    _, c, _ = a_row
    b = new_client(sign_in=other_user)
    assert b.table("blueprints").select("*").execute().data == []
    assert b.table("blueprints").select("*").eq("id", c["id"]).execute().data == []
    assert b.table("blueprint_revisions").select("*").eq("id", c["id"]).execute().data == []
    assert b.rpc("pull_changes", {"since": 0}).execute().data["changes"] == []
    assert b.rpc("fetch_rows", {"ids": [c["id"]]}).execute().data == []
    assert b.rpc("verify_rows", {}).execute().data["rows"] == []
    counted = b.table("blueprints").select("id", count="exact").execute()
    assert counted.count == 0


def test_b_cannot_overwrite_or_delete_a_rows(a_row, new_client, user, other_user):
    a, c, res = a_row
    b = new_client(sign_in=other_user)
    steal = {**c, "op_id": 1, "base_rev": res["rev"], "content": "stolen: 1\n"}
    out = b.rpc("push_changes", {"changes": [steal], "device": "b"}).execute().data[0]
    assert out["status"] == "rejected" and out["code"] == "not_owner"
    assert "current" not in out  # nothing about A's row leaks
    create = {**c, "op_id": 2, "base_rev": None}
    out = b.rpc("push_changes", {"changes": [create], "device": "b"}).execute().data[0]
    assert out["status"] == "rejected" and out["code"] == "not_owner"
    assert b.table("blueprints").update({"content": "x"}).eq("id", c["id"]).execute().data == []
    assert b.table("blueprints").delete().eq("id", c["id"]).execute().data == []
    with pytest.raises(APIError) as err:
        b.table("blueprints").insert(
            {"id": c["id"], "owner": user.id, "path": "p", "content_hash": "h", "device": "b"}
        ).execute()
    assert err.value.code == "42501"  # RLS WITH CHECK refuses a row owned by A
    mine = a.rpc("fetch_rows", {"ids": [c["id"]]}).execute().data
    assert mine[0]["content"] == "secret: 42\n" and mine[0]["rev"] == res["rev"]


def test_anon_sees_nothing(a_row, new_client):
    anon = new_client()
    with pytest.raises(APIError) as err:
        anon.table("blueprints").select("*").execute()
    assert err.value.code == "42501"
    with pytest.raises(APIError) as err:
        anon.rpc("fetch_rows", {"ids": [a_row[1]["id"]]}).execute()
    assert err.value.code == "42501"


def test_forged_tokens_are_refused(cloud, a_row, new_client, user):
    _, c, _ = a_row
    claims = {"sub": user.id, "role": "authenticated", "exp": 4102444800}
    wrong = forge(cloud, claims, secret="an-attacker-secret-that-is-long-enough-000")
    with pytest.raises(APIError) as err:
        new_client().postgrest.auth(wrong).rpc("fetch_rows", {"ids": [c["id"]]}).execute()
    assert err.value.code == "PGRST301"
    unsigned = forge(cloud, claims).rsplit(".", 1)[0] + "."
    with pytest.raises(APIError) as err:
        new_client().postgrest.auth(unsigned).rpc("fetch_rows", {"ids": [c["id"]]}).execute()
    assert err.value.code == "PGRST301"
    superuser = forge(cloud, {**claims, "role": "postgres"})
    with pytest.raises(APIError) as err:
        new_client().postgrest.auth(superuser).rpc("fetch_rows", {"ids": [c["id"]]}).execute()
    assert err.value.code in ("42501", "22023")
