"""Server-side bounds on what one user can store, on every write path.

push_changes checks a change's content size and path (docs/sync-protocol.md, checks 2-5), but a
user can also write the tables directly through PostgREST (``client.table("blueprints")``), which
skipped all of them; and nothing bounded a change's meta, content_hash or the device name. Each
limit is now a per-change answer in push_changes and a CHECK constraint on the table.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .helpers import Db, change

pytestmark = pytest.mark.cloud

MIB = 1024 * 1024
_BIG_META = {"notes": "m" * 8 * MIB}


def _direct_insert(db: Db, **fields: Any) -> None:
    row: dict[str, Any] = {
        "path": "direct.yaml",
        "content": "x: 1\n",
        "meta": Jsonb({}),
        "content_hash": "h",
        "device": "rest",
    }
    row.update(fields)
    cols = ", ".join(row)
    vals = ", ".join(["%s"] * len(row))
    db.api(db.new_user()).scalar(
        f"insert into public.blueprints (id, rev, seq, {cols})"
        f" values (gen_random_uuid(), 1, 1, {vals}) returning 1",
        tuple(row.values()),
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"content": "x" * (10 * MIB + 1)},
        {"path": "../escape.yaml"},
        {"path": "/etc/passwd"},
        {"path": "a\\b.yaml"},
        {"path": ""},
        {"path": "p" * 1025},
        {"meta": Jsonb(_BIG_META)},
        {"content_hash": "h" * 129},
        {"device": "d" * 129},
        {"device": ""},
    ],
    ids=lambda f: next(iter(f)) + ":" + str(len(str(next(iter(f.values())))))[:8],
)
def test_direct_table_writes_obey_the_push_limits(db: Db, fields: dict[str, Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        _direct_insert(db, **fields)


def test_direct_writes_within_the_limits_are_accepted(db: Db) -> None:
    _direct_insert(
        db,
        content="x" * (10 * MIB),
        path="p" * 1024,
        content_hash="h" * 128,
        device="d" * 128,
        meta=Jsonb({"notes": "m" * (8 * MIB - 1024)}),
    )


def test_a_meta_over_8_mib_is_too_large_alone(db: Db) -> None:
    api = db.api(db.new_user())
    big, ok = change(1, meta=_BIG_META), change(2)
    results = api.push([big, ok])
    assert [(r["status"], r.get("code")) for r in results] == [
        ("rejected", "too_large"),
        ("applied", None),
    ]
    assert "meta" in results[0]["message"]


def test_a_content_hash_over_128_characters_is_invalid_change(db: Db) -> None:
    api = db.api(db.new_user())
    [res] = api.push([change(1, content_hash="h" * 129)])
    assert (res["status"], res["code"]) == ("rejected", "invalid_change")
    assert "content_hash" in res["message"]


def test_a_device_name_over_128_characters_fails_the_call(db: Db) -> None:
    api = db.api(db.new_user())
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="device"):
        api.push([change(1)], "d" * 129)
    assert api.scalar("select count(*) from public.blueprints") == 0
    assert api.push([change(1)], "d" * 128)[0]["status"] == "applied"


def test_idempotency_records_are_bounded_too(db: Db) -> None:
    uid = db.new_user()
    api = db.api(uid)
    with pytest.raises(psycopg.errors.CheckViolation):
        api.scalar(
            "insert into public.applied_ops (owner, device, op_id, result) values (%s, 'd', 1, %s)",
            (uid, Jsonb({"junk": "j" * (24 * MIB)})),
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        api.scalar(
            "insert into public.applied_ops (owner, device, op_id, result) values (%s, %s, 1, %s)",
            (uid, "d" * 129, Jsonb({})),
        )


def test_server_info_announces_the_limits(db: Db) -> None:
    info = db.api(db.new_user()).server_info()
    assert info["max_meta_bytes"] == 8 * MIB and info["max_device_chars"] == 128
