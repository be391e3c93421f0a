"""Request bodies Python's json cannot hold reach Postgres, as PostgREST hands them on.

A body nested past the interpreter's recursion limit, or with an integer past ``int()``'s digit
limit, is valid JSON that Postgres (and so Supabase) reads. The gateway answered such a push with
a plain-text 500, which the client retries for ever, where Supabase rejects the one change.
"""

from __future__ import annotations

import json
import uuid

import httpx
import psycopg
import pytest

from tests.cloud.conftest import change, forge, user_claims

pytestmark = pytest.mark.cloud

# Far past Python's recursion limit (1,000), well inside Postgres's 2 MB stack.
_DEEP = 5_000
# Past Postgres's max_stack_depth (2 MB): its JSON parser gives up with 54001.
_TOO_DEEP_FOR_POSTGRES = 200_000


def _push(cloud, user, body: str) -> httpx.Response:
    headers = {
        "apikey": cloud.anon_key,
        "Authorization": f"Bearer {forge(cloud, user_claims(user.id))}",
        "Content-Type": "application/json",
    }
    return httpx.post(
        f"{cloud.url}/rest/v1/rpc/push_changes", content=body, headers=headers, timeout=60
    )


def _push_with_meta_value(cloud, user, value_text: str) -> httpx.Response:
    entry = change("deep.yaml", op_id=1)
    placeholder = '"@@value@@"'
    entry["meta"] = {"name": "deep.yaml", "x": "@@value@@"}
    body = json.dumps({"changes": [entry], "device": "d"}).replace(placeholder, value_text)
    return _push(cloud, user, body)


@pytest.mark.parametrize(
    "value_text",
    ["[" * _DEEP + "]" * _DEEP, "1" * 5_000],
    ids=["nested-5000-deep", "integer-5000-digits"],
)
def test_a_meta_python_cannot_hold_is_rejected_for_that_change(cloud, user, value_text):
    response = _push_with_meta_value(cloud, user, value_text)
    assert response.status_code == 200, response.text[:300]
    [answer] = response.json()
    assert (answer["status"], answer["code"]) == ("rejected", "invalid_meta")


def test_a_body_past_postgres_stack_depth_is_54001_as_postgrest_json(cloud, user):
    deep = "[" * _TOO_DEEP_FOR_POSTGRES + "]" * _TOO_DEEP_FOR_POSTGRES
    response = _push(cloud, user, '{"changes": ' + deep + ', "device": "d"}')
    assert response.status_code == 500
    assert response.headers["Proxy-Status"] == "PostgREST; error=54001"
    error = response.json()
    assert error["code"] == "54001" and error["message"] == "stack depth limit exceeded"
    assert set(error) == {"code", "message", "details", "hint"}


def test_invalid_json_nested_past_the_recursion_limit_is_pgrst102(cloud, user):
    response = _push(cloud, user, '{"changes": ' + "[" * _DEEP + "nope")
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "PGRST102" and error["message"] == "Empty or invalid json"


def _table_write(cloud, user, method: str, body: str, query: str = "", **headers: str):
    headers = {
        "apikey": cloud.anon_key,
        "Authorization": f"Bearer {forge(cloud, user_claims(user.id))}",
        "Content-Type": "application/json",
        **headers,
    }
    url = f"{cloud.url}/rest/v1/rt_items{query}"
    return httpx.request(method, url, content=body, headers=headers, timeout=60)


def _stored_data_text(cloud, label: str) -> list[str]:
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select data::text from public.rt_items where label = %s order by data::text", (label,)
        ).fetchall()
    return [text for (text,) in rows]


_DEEP_VALUE = "[" * _DEEP + "]" * _DEEP
_LONG_INTEGER = "1" * 5_000


@pytest.mark.parametrize("value_text", [_DEEP_VALUE, _LONG_INTEGER], ids=["deep", "long-integer"])
def test_a_table_insert_python_cannot_hold_is_postgres_s_to_take(cloud, user, value_text):
    """PostgREST (aeson, no digit or depth limit) hands such a body to Postgres, which stores
    it; the gateway answered 400 PGRST102, so a write Supabase takes failed only locally."""
    label = f"deep-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"label": label, "data": "@@"}).replace('"@@"', value_text)
    response = _table_write(cloud, user, "POST", body, Prefer="return=representation")
    assert response.status_code == 201, response.text[:300]
    assert f'"label":"{label}"' in response.text.replace(" ", "")
    assert [len(t) for t in _stored_data_text(cloud, label)] == [len(value_text)]


def test_a_table_insert_of_rows_python_cannot_hold_inserts_each(cloud, user):
    label = f"rows-{uuid.uuid4().hex[:8]}"
    row = json.dumps({"label": label, "data": "@@"})
    deep, long = (row.replace('"@@"', value) for value in (_DEEP_VALUE, _LONG_INTEGER))
    body = f"[{deep}, {long}]"
    response = _table_write(cloud, user, "POST", body)
    assert response.status_code == 201, response.text[:300]
    assert sorted(len(t) for t in _stored_data_text(cloud, label)) == sorted(
        [len(_DEEP_VALUE), len(_LONG_INTEGER)]
    )


def test_a_table_update_python_cannot_hold_is_postgres_s_to_take(cloud, user):
    label = f"upd-{uuid.uuid4().hex[:8]}"
    assert _table_write(cloud, user, "POST", json.dumps({"label": label})).status_code == 201
    body = '{"data": ' + _LONG_INTEGER + "}"
    response = _table_write(cloud, user, "PATCH", body, f"?label=eq.{label}")
    assert response.status_code == 204, response.text[:300]
    assert _stored_data_text(cloud, label) == [_LONG_INTEGER]


def test_a_table_write_python_cannot_hold_is_checked_as_any_other(cloud, user):
    """Its keys (read by Postgres) are columns as any body's; the rows must be objects."""
    response = _table_write(cloud, user, "POST", '{"label": "x", "nope": ' + _DEEP_VALUE + "}")
    assert response.status_code == 400
    assert response.json()["code"] == "PGRST204" and "'nope' column" in response.json()["message"]
    response = _table_write(cloud, user, "POST", "[" + _DEEP_VALUE + "]")
    assert response.status_code == 400 and response.json()["code"] == "PGRST102"
    response = _table_write(cloud, user, "PATCH", _DEEP_VALUE, "?label=eq.x")
    assert response.status_code == 400 and response.json()["code"] == "PGRST102"


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_invalid_json_nested_past_the_recursion_limit_is_pgrst102_for_tables(cloud, user, method):
    response = _table_write(cloud, user, method, '{"data": ' + "[" * _DEEP + "nope", "?label=eq.x")
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "PGRST102" and error["message"] == "Empty or invalid json"
    assert "nope" in error["details"]  # Postgres's reading of it, not a refusal of the gateway's
