"""push_changes takes every meta a local meta file can hold (migration 20261122000500).

A local meta file holds at most 1 MiB of JSON text (``decode_meta``); the server counts a meta
as ``pg_column_size`` of its jsonb, which takes up to 6 times the text (8 bytes per number and 4
per element: ``[1,1,...]`` is 2 bytes of text and 12 of jsonb each). The first version of the
migration refused a meta over 1 MiB of jsonb, so a 980 KB meta file holding such an array, which
pushed before, was refused for good. And a project that ran that first version gets the new
limits when the file is run again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from localstore.blueprint import BlueprintMeta, decode_meta, encode_meta
from sync.localcloud.schema import apply_bootstrap, apply_migrations, migration_files

from .helpers import Db, change

pytestmark = pytest.mark.cloud

MIB = 2**20
MIGRATION = next(p for p in migration_files() if p.name.endswith("_row_limits.sql"))


def _largest(
    make: Callable[[int], dict[str, Any]], encode: Callable[[dict[str, Any]], bytes]
) -> dict[str, Any]:
    """The meta of ``make(n)`` with the largest ``n`` whose file still holds at most 1 MiB."""
    lo, hi = 1, 2 * MIB
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encode(make(mid))) <= MIB:
            lo = mid
        else:
            hi = mid - 1
    return make(lo)


def _compact(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, separators=(",", ":")).encode()


def _pretty(meta: dict[str, Any]) -> bytes:
    return encode_meta(BlueprintMeta.from_dict(meta, source="test"))


SHAPES: dict[str, Callable[[int], Any]] = {
    "one-digit numbers": lambda n: [1] * n,
    "nested numbers": lambda n: [[1]] * n,
    "objects": lambda n: [{"a": 1}] * n,
    "fractions": lambda n: [0.5] * n,
}


@pytest.mark.parametrize("encode", [_compact, _pretty], ids=["compact", "pretty"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_meta_a_local_file_holds_is_pushed(
    db: Db, shape: str, encode: Callable[[dict[str, Any]], bytes]
) -> None:
    rid = str(uuid.uuid4())
    meta = _largest(lambda n: {"id": rid, "name": "x", "grid": SHAPES[shape](n)}, encode)
    decoded = decode_meta(encode(meta))  # the store reads this file
    wire = decoded.to_dict()  # what the engine pushes
    api = db.api(db.new_user())
    size = api.scalar("select pg_column_size(%s::jsonb)", (json.dumps(wire),))
    [res] = api.push([change(1, rid, meta=wire)])
    assert (res["status"], res.get("code")) == ("applied", None), res.get("message")
    if shape == "one-digit numbers":  # (over the first version's 1 MiB, in either file form)
        assert size > MIB


def test_running_the_file_again_replaces_the_first_versions_limits(fresh_db: str) -> None:
    # In a database of its own: the file also defines push_changes, so run again in the
    # session's database it put back its own version over later migrations' (20261122000800's
    # op id fingerprints) for every test after it in that worker.
    apply_bootstrap(fresh_db)
    apply_migrations(fresh_db)
    first = {
        ("blueprints", "blueprints_meta_size"): "check (pg_column_size(meta) <= 1048576)",
        ("applied_ops", "applied_ops_result_size"): "check (pg_column_size(result) <= 16777216)",
    }
    with psycopg.connect(fresh_db, autocommit=True) as su:
        for (table, name), definition in first.items():
            su.execute(f"alter table public.{table} drop constraint {name}")
            su.execute(f"alter table public.{table} add constraint {name} {definition}")
        with su.transaction():
            su.execute(MIGRATION.read_bytes())
        defs: dict[str, str] = dict(
            su.execute(
                "select conname, pg_get_constraintdef(oid) || ' ' || convalidated::text"
                " from pg_constraint where conname = any(%s)",
                ([name for _, name in first],),
            ).fetchall()
        )
    assert defs == {
        "blueprints_meta_size": "CHECK ((pg_column_size(meta) <= 8388608)) true",
        "applied_ops_result_size": "CHECK ((pg_column_size(result) <= 25165824)) true",
    }


def test_a_conflict_answer_carrying_the_largest_row_is_recorded(db: Db) -> None:
    """The idempotency record of a conflict holds the current row: 10 MiB of content and up to
    8 MiB of meta fit its bound."""
    api = db.api(db.new_user())
    rid = str(uuid.uuid4())
    meta = {"name": "x", "note": "m" * (8 * MIB - 4096)}
    [res] = api.push([change(1, rid, content="c" * (10 * MIB), meta=meta)])
    assert res["status"] == "applied", res.get("message")
    try:
        [res] = api.push([change(2, rid)])  # a create of an existing id: 'exists'
    except psycopg.errors.CheckViolation as exc:  # (the first version's 16 MiB bound)
        pytest.fail(f"the conflict answer was not recorded: {exc}")
    assert (res["status"], res["reason"]) == ("conflict", "exists")
