"""Request bodies Python's json cannot hold reach Postgres, as PostgREST hands them on.

A body nested past the interpreter's recursion limit, or with an integer past ``int()``'s digit
limit, is valid JSON that Postgres (and so Supabase) reads. The gateway answered such a push with
a plain-text 500, which the client retries for ever, where Supabase rejects the one change.
"""

from __future__ import annotations

import json

import httpx
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


def test_a_table_write_python_cannot_hold_is_a_clear_pgrst102(cloud, user):
    # (Table writes are built from the parsed rows; the local gateway says why it refuses.)
    headers = {
        "apikey": cloud.anon_key,
        "Authorization": f"Bearer {forge(cloud, user_claims(user.id))}",
        "Content-Type": "application/json",
    }
    body = '{"label": "deep", "data": ' + "[" * _DEEP + "]" * _DEEP + "}"
    response = httpx.post(f"{cloud.url}/rest/v1/rt_items", content=body, headers=headers)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "PGRST102" and "nested deeper than" in error["details"]
