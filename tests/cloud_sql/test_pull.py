"""pull_changes, verify_rows, fetch_rows and purge_tombstones (the horizon)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from sync.localcloud.schema import apply_bootstrap, apply_migrations

from .helpers import Api, Db, change

pytestmark = pytest.mark.cloud


def test_pull_pages_in_seq_order_with_cursor_and_more(db: Db) -> None:
    api = db.api(db.new_user())
    api.push([change(i) for i in range(1, 8)])
    seen: list[int] = []
    cursor, pages = 0, 0
    while True:
        page = api.pull(cursor, 3)
        pages += 1
        seen += [r["seq"] for r in page["changes"]]
        assert page["reset_required"] is False and page["horizon"] == 0
        assert page["next"] == (page["changes"][-1]["seq"] if page["changes"] else cursor)
        cursor = page["next"]
        if not page["more"]:
            break
    assert pages == 3 and len(seen) == 7 and seen == sorted(seen)
    assert api.pull(cursor) == {
        "changes": [],
        "next": cursor,
        "more": False,
        "horizon": 0,
        "reset_required": False,
    }


def test_pull_returns_full_rows_and_tombstones(db: Db) -> None:
    api = db.api(db.new_user())
    c = change(1, path="p/q.blueprint.yaml", content="a: 1\n", meta={"name": "q", "tags": ["t"]})
    api.push([c])
    api.push([change(2, c["id"], base_rev=1, path=c["path"], meta=c["meta"], deleted=True)], "d2")
    [row] = api.pull(0)["changes"]
    assert set(row) == {
        "id",
        "path",
        "content",
        "meta",
        "content_hash",
        "rev",
        "seq",
        "deleted",
        "device",
        "updated_at",
    }
    assert (row["id"], row["rev"], row["deleted"], row["content"]) == (c["id"], 2, True, "")
    assert (row["meta"], row["device"], row["path"]) == (c["meta"], "d2", c["path"])
    assert isinstance(row["updated_at"], str) and "T" in row["updated_at"]


def test_pull_limit_is_capped_at_1000_and_at_least_1(db: Db) -> None:
    api = db.api(db.new_user())
    # 1100 rows quickly: a direct insert gets the same seq/rev stamping as push_changes.
    inserted = api.scalar(
        "with i as (insert into public.blueprints (id, path, content_hash, rev, seq, device)"
        " select gen_random_uuid(), 'p' || n, 'h', 0, 0, 'bulk' from generate_series(1, 1100) n"
        " returning 1) select count(*) from i"
    )
    assert inserted == 1100
    page = api.pull(0, 5000)
    assert len(page["changes"]) == 1000 and page["more"] is True
    assert len(api.pull(0, 0)["changes"]) == 1
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        api.pull(-1)


def test_verify_pages_by_id_and_fetch_returns_full_rows(db: Db) -> None:
    api = db.api(db.new_user())
    changes = [change(i) for i in range(1, 12)]
    api.push(changes)
    api.push([change(20, changes[0]["id"], base_rev=1, path=changes[0]["path"], deleted=True)])
    rows, after, pages = [], None, 0
    while True:
        page = api.verify(after, 4)
        pages += 1
        rows += page["rows"]
        if not page["more"]:
            break
        after = page["next"]
        assert after == page["rows"][-1]["id"]
    assert pages == 3
    ids = [r["id"] for r in rows]
    assert ids == sorted(str(c["id"]) for c in changes)
    assert all(set(r) == {"id", "rev", "content_hash", "deleted", "seq"} for r in rows)
    by_id = {r["id"]: r for r in rows}
    assert by_id[changes[0]["id"]]["deleted"] is True
    assert by_id[changes[1]["id"]]["content_hash"] == changes[1]["content_hash"]

    fetched = api.fetch([changes[1]["id"], changes[0]["id"], str(uuid.uuid4())])
    assert [r["id"] for r in fetched] == sorted([changes[0]["id"], changes[1]["id"]])
    assert fetched[0]["seq"] == by_id[fetched[0]["id"]]["seq"]


def test_verify_of_nothing(db: Db) -> None:
    api = db.api(db.new_user())
    assert api.verify() == {"rows": [], "next": None, "more": False}
    assert api.fetch([]) == []


def test_purge_raises_the_horizon_and_old_cursors_must_reset(db: Db) -> None:
    api = db.api(db.new_user())
    keep, drop = change(1), change(2)
    api.push([keep, drop])
    old_cursor = api.pull(0)["next"]
    [tomb] = api.push([change(3, drop["id"], base_rev=1, path=drop["path"], deleted=True)])
    cursor_after_delete = api.pull(old_cursor)["next"]
    assert cursor_after_delete == tomb["seq"]

    assert api.purge(timedelta(hours=1)) == 0  # too recent
    assert api.purge() == 1
    assert api.fetch([drop["id"]]) == []
    assert (
        api.scalar("select count(*) from public.blueprint_revisions where id = %s", (drop["id"],))
        == 0
    )

    stale = api.pull(old_cursor)
    assert stale == {
        "changes": [],
        "next": old_cursor,
        "more": False,
        "horizon": tomb["seq"],
        "reset_required": True,
    }
    fresh = api.pull(cursor_after_delete)
    assert fresh["reset_required"] is False and fresh["horizon"] == tomb["seq"]
    # The documented recovery: reconcile with verify, continue pulling from the horizon.
    assert [r["id"] for r in api.verify()["rows"]] == [keep["id"]]
    assert api.pull(stale["horizon"])["reset_required"] is False


def test_purge_by_a_user_touches_only_their_tombstones(db: Db) -> None:
    alice, bob = db.api(db.new_user()), db.api(db.new_user())
    for api in (alice, bob):
        c = change(1)
        api.push([c, change(2, c["id"], base_rev=1, path=c["path"], deleted=True)])
    assert alice.purge() == 1
    assert alice.pull(0)["reset_required"] is True
    assert bob.pull(0)["reset_required"] is False and len(bob.pull(0)["changes"]) == 1


def test_service_role_purges_everyone_and_users_keep_their_own_horizon(db: Db) -> None:
    users = [db.new_user() for _ in range(2)]
    seqs = []
    for uid in users:
        api = db.api(uid)
        c = change(1)
        [t] = api.push([c, change(2, c["id"], base_rev=1, path=c["path"], deleted=True)])[1:]
        seqs.append(t["seq"])
    service = db.api(None, role="service_role")
    assert service.purge() >= 2
    for uid, seq in zip(users, seqs, strict=True):
        assert db.api(uid).pull(0)["horizon"] == seq


def test_purge_rejects_a_negative_interval(db: Db) -> None:
    api = db.api(db.new_user())
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        api.purge(timedelta(seconds=-1))


def test_deleting_a_user_cascades_without_errors(db: Db) -> None:
    uid = db.new_user()
    api = db.api(uid)
    c = change(1)
    api.push([c, change(2, c["id"], base_rev=1, path=c["path"], deleted=True), change(3)])
    with db.superuser() as conn:
        conn.execute("delete from auth.users where id = %s", (uid,))
        left = conn.execute(
            "select (select count(*) from public.blueprints where owner = %(u)s)"
            " + (select count(*) from public.blueprint_revisions where owner = %(u)s)"
            " + (select count(*) from public.applied_ops where owner = %(u)s)"
            " + (select count(*) from public.sync_horizon where owner = %(u)s)",
            {"u": uid},
        ).fetchone()
    assert left == (0,)


def test_fetch_rows_refuses_more_than_1000_ids(db: Db) -> None:
    """A client that bypasses the library could send any number of ids, and the server looked
    each one up and built its rows into one jsonb, as often as it liked."""
    api = db.api(db.new_user())
    made = change(1)
    assert api.push([made])[0]["status"] == "applied"
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    with pytest.raises(psycopg.Error) as info:
        api.fetch([*ids, made["id"]])
    assert info.value.sqlstate == "22023"
    assert "too many ids" in str(info.value)
    assert [r["id"] for r in api.fetch([*ids[1:], made["id"]])] == [made["id"]]


def test_the_tables_that_carry_removals_cannot_be_truncated(fresh_db: str) -> None:
    """TRUNCATE fires no DELETE trigger: a truncated blueprints raised no horizon, so every
    device kept every row without being told, and a truncated sync_horizon let an old cursor
    pull a delta without purged deletions (migration 20261122001700). Its own database: before
    that migration the truncate went through and would have emptied the shared one."""
    apply_bootstrap(fresh_db)
    apply_migrations(fresh_db)
    user = str(uuid.uuid4())
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("insert into auth.users (id, email) values (%s, 'tr@x.test')", (user,))
        api = Api(conn, user, "authenticated")
        keep, drop = change(1), change(2)
        api.push([keep, drop])
        cursor = api.pull(0)["next"]  # a device that has both
        api.push([change(3, drop["id"], base_rev=1, path=drop["path"], deleted=True)])
        assert api.purge() == 1
        assert api.pull(0)["reset_required"] is True  # a device from before the purge

        # The dashboard's Table Editor and the SQL editor run as postgres; the service key too.
        for role in ("service_role", "postgres"):
            for table in ("blueprints", "sync_horizon"):
                with (
                    pytest.raises(psycopg.errors.InsufficientPrivilege) as refused,
                    Api(conn, None, role).transaction() as as_role,
                ):
                    as_role.execute(f"truncate public.{table}")
                assert "would hide removed blueprints" in str(refused.value)
                assert refused.value.diag.message_hint
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("truncate auth.users cascade")
        assert api.pull(0)["reset_required"] is True
        assert [r["id"] for r in api.fetch([keep["id"]])] == [keep["id"]]

        # What the refusal says to run instead: the device is told to reconcile.
        conn.execute("delete from public.blueprints where owner = %s", (user,))
        told = api.pull(cursor)
        assert told["reset_required"] is True and told["changes"] == []
