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


def test_a_user_who_knows_anothers_id_can_change_nothing_and_learns_only_taken(db: Db) -> None:
    """What user A can do with an id of user B's (from a bundle B shared): every write path is
    refused, B's rows and history stay as they were, and the only thing A learns is "taken",
    worded the same whether B's row is live or a tombstone (no state, owner or content)."""
    alice, bob = db.new_user(), db.new_user()
    a, b = db.api(alice), db.api(bob)
    live, gone = change(1, path="b/live.yaml", content="bob's\n"), change(2, path="b/gone.yaml")
    b.push([live, gone])
    b.push([change(3, gone["id"], base_rev=1, path=gone["path"], deleted=True)])
    before = b.fetch([live["id"], gone["id"]])
    history = b.scalar("select count(*) from public.blueprint_revisions")

    answers = []
    for rid in (live["id"], gone["id"]):
        results = a.push(
            [
                change(10, rid, path="a/mine.yaml"),
                change(11, rid, base_rev=1, path="a/mine.yaml"),
                change(12, rid, base_rev=2, path="a/mine.yaml", deleted=True),
            ],
            f"a-{rid}",
        )
        answers.append([{k: v for k, v in r.items() if k != "id"} for r in results])
        # Through the table endpoints as well (PostgREST insert, upsert, update, delete).
        with pytest.raises(psycopg.errors.UniqueViolation):
            a.scalar(
                "insert into public.blueprints (id, path, content_hash, rev, seq, device)"
                " values (%s, 'a/x.yaml', 'h', 1, 1, 'd')",
                (rid,),
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.scalar(
                "insert into public.blueprints (id, path, content_hash, rev, seq, device)"
                " values (%s, 'a/x.yaml', 'h', 1, 1, 'd')"
                " on conflict (id) do update set content = 'taken over'",
                (rid,),
            )
        for dml in (
            "update public.blueprints set content = 'x' where id = %s",
            "delete from public.blueprints where id = %s",
        ):
            assert a.scalar(f"with w as ({dml} returning 1) select count(*) from w", (rid,)) == 0
    assert answers[0] == answers[1]
    assert {(r["status"], r["code"]) for r in answers[0]} == {("rejected", "not_owner")}
    assert a.fetch([live["id"], gone["id"]]) == []
    assert b.fetch([live["id"], gone["id"]]) == before
    assert b.scalar("select count(*) from public.blueprint_revisions") == history


def test_an_id_freed_by_a_purge_can_be_taken_and_the_old_owner_loses_nothing(db: Db) -> None:
    """After B's tombstone is purged its id is free: A may create it. B's devices learn of the
    purge through the horizon (reset_required), and a stale device of B's pushing an edit of it
    gets not_owner, a rejection its engine quarantines with the local files untouched."""
    alice, bob = db.new_user(), db.new_user()
    a, b = db.api(alice), db.api(bob)
    row = change(1, path="b/old.yaml")
    b.push([row])
    b.push([change(2, row["id"], base_rev=1, path=row["path"], deleted=True)])
    assert b.purge() == 1
    assert a.push([change(1, row["id"], path="a/new.yaml")])[0]["status"] == "applied"
    pulled = b.pull(0)
    assert pulled["reset_required"] and pulled["horizon"] > 0
    assert b.verify()["rows"] == []
    [res] = b.push([change(3, row["id"], base_rev=2, path=row["path"], content="edit\n")])
    assert (res["status"], res["code"]) == ("rejected", "not_owner")
    assert b.fetch([row["id"]]) == [] and a.fetch([row["id"]])[0]["path"] == "a/new.yaml"
