"""The memory remote counts a meta's size as the server does: ``pg_column_size`` of its jsonb.

push_changes rejects a meta over 8 MiB by that measure (migration 20261122000500). JSON text is
no stand-in (jsonb spends 4 bytes per key and element, text spends quotes and escapes), so
``sync.memory_remote.jsonb_size`` models jsonb's layout; this compares it with PostgreSQL itself.
A pull page and a fetch answer count the meta by its text instead (``octet_length(meta::text)``,
migrations 20261122001100 and 20261122001300): ``jsonb_text_bytes`` is compared the same way.
"""

from __future__ import annotations

import json
import random
from typing import Any

import psycopg

from sync.localcloud.stack import LocalCloud
from sync.memory_remote import jsonb_size, jsonb_text_bytes


def _value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if depth > 3 or pick < 0.3:
        kind = rng.randrange(6)
        if kind == 0:
            return rng.choice([True, False, None])
        if kind == 1:
            return rng.randint(-(10 ** rng.randint(0, 30)), 10 ** rng.randint(0, 30))
        if kind == 2:
            return rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-12, 12)
        if kind == 3:
            return round(rng.random(), rng.randint(0, 8))
        return "".join(
            rng.choice('ab\u00e9\u4e2d\U0001f600 "\\\n') for _ in range(rng.randint(0, 40))
        )
    if pick < 0.65:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 6))]
    return {
        "".join(rng.choice("abc\u00e9") for _ in range(rng.randint(0, 5))): _value(rng, depth + 1)
        for _ in range(rng.randint(0, 6))
    }


def _values() -> list[Any]:
    rng = random.Random(20261122)
    return [
        *(_value(rng) for _ in range(1500)),
        {},
        [],
        "s",
        None,
        0,
        0.0,
        -0.5,
        1e-10,
        1e20,
        12345678901234567890,
        {"id": "a", "name": "Flow", "tags": ["x", "y"], "n": [1.5, 0.0001, 123456789]},
        {"note": "x" * 2**20},
        {"note": "x" * (2**20 - 4096)},
        {"ctl": "\x01\x1f\x7f\t\b\f\r", "e": [1e16, 1.5e-7, -0.0, 1e300, 5e-324]},
        # Around numeric's short header: weight -64..63 and display scale up to 63.
        [1e252, 1e255, 1e256, 10**255, 10**256, 1e-63, 1e-64, 1.5e-61, 1.5e-62, 5.5e-255],
    ]


def test_jsonb_size_equals_pg_column_size(cloud: LocalCloud) -> None:
    values = _values()
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        wrong = []
        for value in values:
            text = json.dumps(value)
            row = conn.execute("select pg_column_size(%s::jsonb)", (text,)).fetchone()
            assert row is not None
            pg = row[0]
            if jsonb_size(json.loads(text)) != pg:
                wrong.append((pg, jsonb_size(json.loads(text)), text[:120]))
    assert wrong == []


def test_jsonb_text_bytes_equals_octet_length_of_the_text(cloud: LocalCloud) -> None:
    values = _values()
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        wrong = []
        for value in values:
            text = json.dumps(value)
            row = conn.execute("select octet_length(%s::jsonb::text)", (text,)).fetchone()
            assert row is not None
            if jsonb_text_bytes(json.loads(text)) != row[0]:
                wrong.append((row[0], jsonb_text_bytes(json.loads(text)), text[:120]))
    assert wrong == []
