"""Blueprint ids are one space for every user of a project: two users holding the same id (one
imported the other's bundle, which keeps ids) get one rejected change each, never a failed batch,
and the SECURITY DEFINER helper that answers "taken" cannot be pointed at another user."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .helpers import Db, change, wait_for

pytestmark = pytest.mark.cloud


def _someone_waits_on_a_transaction(db: Db) -> bool:
    with psycopg.connect(db.superuser_dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_locks where locktype = 'transactionid' and not granted"
        ).fetchone()
    return bool(row and row[0] > 0)


def test_an_id_created_by_another_user_first_is_not_owner_and_the_batch_goes_on(
    db: Db,
) -> None:
    a, b = db.api(db.new_user()), db.api(db.new_user())
    shared = str(uuid.uuid4())
    assert a.push([change(1, shared)])[0]["status"] == "applied"
    results = b.push([change(1, shared), change(2)], "b-dev")
    assert [(r["status"], r.get("code")) for r in results] == [
        ("rejected", "not_owner"),
        ("applied", None),
    ]


@pytest.mark.parametrize("serial", [False, True], ids=["batch", "serial"])
def test_a_concurrent_create_of_the_same_id_rejects_one_change_not_the_batch(
    db: Db, serial: bool
) -> None:
    """B decides its create while A's insert of the same id is uncommitted (taken_ids cannot see
    it); B's insert then waits for A and finds the key taken. That was a 23505 failing all of B's
    changes; it is one not_owner now. ``serial``: the id occurs twice in B's batch, so
    decide_change writes it."""
    a, b = db.api(db.new_user()), db.api(db.new_user())
    shared = str(uuid.uuid4())
    others = [change(10 + i) for i in range(49)]
    mine = [change(1, shared, path="shared/recipe.yaml")]
    if serial:
        mine.append(change(2, shared, base_rev=1, path="shared/recipe.yaml", content="v2\n"))
    outcome: dict[str, Any] = {}

    def push_b() -> None:
        try:
            outcome["results"] = b.push(mine + others, "b-dev")
        except psycopg.Error as exc:  # the failure this test guards against
            outcome["error"] = exc

    with a.transaction() as conn:
        conn.execute(
            "select public.push_changes(changes := %s, device := 'a-dev')",
            (Jsonb([change(1, shared)]),),
        )
        pusher = threading.Thread(target=push_b)
        pusher.start()
        wait_for(lambda: _someone_waits_on_a_transaction(db), "B to wait on A's insert")
    pusher.join(20)
    assert not pusher.is_alive()
    assert "error" not in outcome, outcome.get("error")
    results = outcome["results"]
    assert [(r["status"], r.get("code")) for r in results[: len(mine)]] == [
        ("rejected", "not_owner")
    ] * len(mine)
    assert [r["status"] for r in results[len(mine) :]] == ["applied"] * 49
    assert b.fetch([shared]) == []
    # The answers were recorded: a resend with the same op ids replays them.
    assert b.push(mine + others, "b-dev") == results
