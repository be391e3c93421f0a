"""``Accept: application/vnd.pgrst.object+json`` (the client's ``.single()``) answers as PostgREST.

The gateway decoded the one row in Python to send it as an object: a row Python's json cannot hold
(an integer of 5,000 digits in a jsonb column) and a write with ``return=minimal`` (no row text at
all) raised there, and the client got a plain-text 500 where PostgREST answers 200 with the row as
Postgres wrote it, or 201/204 without a body (PostgREST's ``SingularSpec``).
"""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest
from postgrest import APIError
from postgrest.types import ReturnMethod

from tests.cloud.conftest import forge, user_claims

pytestmark = pytest.mark.cloud

OBJECT = "application/vnd.pgrst.object+json"
BIG = "1" * 5_000  # past Python's 4,300-digit int() limit; a jsonb number Postgres holds


def _row_with_big_number(cloud, user) -> str:
    row_id = str(uuid.uuid4())
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        conn.execute(
            "insert into public.rt_items (id, owner, label, data) values (%s, %s, 'big', %s::jsonb)",
            [row_id, user.id, '{"n": ' + BIG + "}"],
        )
    return row_id


def test_single_of_a_row_python_cannot_hold_is_sent_as_postgres_wrote_it(cloud, user, new_client):
    row_id = _row_with_big_number(cloud, user)
    headers = {
        "apikey": cloud.anon_key,
        "Authorization": f"Bearer {forge(cloud, user_claims(user.id))}",
        "Accept": OBJECT,
    }
    response = httpx.get(f"{cloud.url}/rest/v1/rt_items?id=eq.{row_id}", headers=headers)
    assert response.status_code == 200, response.text[:300]
    assert response.text.startswith("{") and f'"n": {BIG}' in response.text
    # The official client gets that body, as from Supabase, and its own json fails on it (not an
    # APIError: that was the gateway's 500).
    client = new_client(sign_in=user)
    with pytest.raises(ValueError, match="digits"):
        client.table("rt_items").select("*").eq("id", row_id).single().execute()


def test_single_write_with_return_minimal_has_no_body(cloud, user, new_client):
    client = new_client(sign_in=user, headers={"Accept": OBJECT})
    label = f"min-{uuid.uuid4().hex[:8]}"
    for name in (label, label + "-2"):
        inserted = client.table("rt_items").insert({"label": name}, returning=ReturnMethod.minimal)
        assert inserted.execute().data == []
    updated = client.table("rt_items").update(
        {"label": label + "!"}, returning=ReturnMethod.minimal
    )
    assert updated.eq("label", label).execute().data == []
    with pytest.raises(APIError) as caught:  # two rows: PGRST116, and nothing deleted
        client.table("rt_items").delete(returning=ReturnMethod.minimal).neq("label", "").execute()
    assert caught.value.code == "PGRST116"
    plain = new_client(sign_in=user)
    rows = plain.table("rt_items").select("label").order("label").execute().data
    assert rows == [{"label": label + "!"}, {"label": label + "-2"}]
