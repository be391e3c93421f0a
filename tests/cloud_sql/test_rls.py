"""Row-level security and privileges: a user reaches only their own rows; anon reaches nothing."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from .helpers import Db, change

pytestmark = pytest.mark.cloud

TABLES = ("blueprints", "blueprint_revisions", "applied_ops", "sync_horizon")


@pytest.fixture
def two_users(db: Db) -> tuple[str, str, dict[str, object]]:
    alice, bob = db.new_user(), db.new_user()
    a = db.api(alice)
    row = change(1, path="secret/plan.blueprint.yaml", content="top secret\n")
    a.push([row, change(2, row["id"], base_rev=1, path=row["path"], deleted=True)])
    a.push([change(3, path="secret/live.blueprint.yaml")])
    return alice, bob, row


def test_other_users_rows_are_invisible_in_tables(db: Db, two_users: tuple) -> None:
    alice, bob, _row = two_users
    b = db.api(bob)
    for table in TABLES:
        assert b.scalar(f"select count(*) from public.{table}") == 0, table
    assert db.api(alice).scalar("select count(*) from public.blueprints") == 2


def test_other_users_rows_are_invisible_through_the_rpcs(db: Db, two_users: tuple) -> None:
    alice, bob, row = two_users
    b = db.api(bob)
    assert b.pull(0)["changes"] == []
    assert b.verify()["rows"] == []
    assert b.fetch([row["id"]]) == []
    assert db.api(alice).fetch([row["id"]])[0]["id"] == row["id"]


def test_writing_someone_elses_id_is_not_owner_and_reveals_nothing(
    db: Db, two_users: tuple
) -> None:
    _alice, bob, row = two_users
    b = db.api(bob)
    results = b.push(
        [
            change(1, row["id"]),
            change(2, row["id"], base_rev=2, path=row["path"], content="mine now\n"),
        ]
    )
    for res in results:
        assert res["status"] == "rejected" and res["code"] == "not_owner"
        assert set(res) == {"op_id", "id", "status", "code", "message"}
        assert "secret" not in res["message"]
    assert db.api(two_users[0]).fetch([row["id"]])[0]["rev"] == 2


def test_direct_table_writes_cannot_touch_other_users_rows(db: Db, two_users: tuple) -> None:
    alice, bob, _row = two_users
    b = db.api(bob)
    assert (
        b.scalar(
            "with u as (update public.blueprints set path = 'x' returning 1) select count(*) from u"
        )
        == 0
    )
    assert (
        b.scalar("with d as (delete from public.blueprints returning 1) select count(*) from d")
        == 0
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        b.scalar(
            "insert into public.blueprints (id, owner, path, content_hash, rev, seq, device)"
            " values (gen_random_uuid(), %s, 'p', 'h', 1, 1, 'd')",
            (alice,),
        )
    assert db.api(alice).scalar("select count(*) from public.blueprints") == 2


def test_a_user_cannot_forge_history_or_horizon(db: Db, two_users: tuple) -> None:
    alice, _bob, _row = two_users
    a = db.api(alice)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        a.scalar("insert into public.sync_horizon (owner, horizon) values (%s, 0)", (alice,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        a.scalar("delete from public.blueprint_revisions")


def test_direct_writes_still_get_server_seq_rev_and_history(db: Db) -> None:
    """A user writing the table through REST gets the same bookkeeping as push_changes."""
    uid = db.new_user()
    a = db.api(uid)
    rid = a.scalar(
        "insert into public.blueprints (id, path, content_hash, rev, seq, device)"
        " values (gen_random_uuid(), 'direct.yaml', 'h', 99, -5, 'rest') returning id"
    )
    rev, seq = a.rows("select rev, seq from public.blueprints where id = %s", (rid,))[0]
    assert rev == 1 and seq > 0
    assert a.scalar("select count(*) from public.blueprint_revisions where id = %s", (rid,)) == 1
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        a.scalar("update public.blueprints set owner = gen_random_uuid() where id = %s", (rid,))


def test_live_rows_cannot_be_hard_deleted_by_their_owner(db: Db, two_users: tuple) -> None:
    alice, _bob, _row = two_users
    a = db.api(alice)
    gone = a.scalar(
        "with d as (delete from public.blueprints where not deleted returning 1) "
        "select count(*) from d"
    )
    assert gone == 0


@pytest.mark.parametrize(
    "call",
    [
        "select public.push_changes('[]'::jsonb, 'd')",
        "select public.pull_changes(0)",
        "select public.verify_rows()",
        "select public.fetch_rows('{}'::uuid[])",
        "select public.fetch_rows_page('{}'::uuid[])",
        "select public.purge_tombstones('0'::interval)",
        "select public.server_info()",
        "select public.match_revisions('[]'::jsonb)",
        "select public.localstore_schema_version()",
    ],
)
def test_anon_cannot_call_the_rpcs(db: Db, call: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.api(None).scalar(call)


def test_anon_cannot_read_the_tables(db: Db, two_users: tuple) -> None:
    anon = db.api(None)
    for table in TABLES:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            anon.scalar(f"select count(*) from public.{table}")


def test_authenticated_role_without_a_user_is_refused(db: Db) -> None:
    nobody = db.api(None, role="authenticated")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not signed in"):
        nobody.push([change(1)])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not signed in"):
        nobody.pull(0)


def test_internal_helpers_are_not_in_the_api_schema(db: Db) -> None:
    with db.superuser() as conn:
        public_fns = {
            r[0]
            for r in conn.execute(
                "select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
                " where n.nspname = 'public'"
            )
        }
        anon_exec = conn.execute(
            "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname in ('public', 'sync_internal')"
            " and has_function_privilege('anon', p.oid, 'execute')"
        ).fetchone()
    assert public_fns == {
        "push_changes",
        "pull_changes",
        "verify_rows",
        "fetch_rows",
        "fetch_rows_page",
        "purge_tombstones",
        "purge_applied_ops",
        "purge_revisions",
        "server_info",
        "match_revisions",
        "localstore_schema_version",
    }
    assert anon_exec == (0,)


def test_internal_helpers_refuse_another_users_id_over_direct_sql(db: Db, two_users: tuple) -> None:
    """sync_internal is not exposed by PostgREST, but a direct SQL login as a user reaches it: the
    helpers that take the caller's id must not believe one that is not the caller's."""
    alice, bob, row = two_users
    b = db.api(bob)
    # taken_ids is SECURITY DEFINER: with alice's id it told bob whether alice owns an id.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        b.scalar("select sync_internal.taken_ids(array[%s]::uuid[], %s)", (row["id"], alice))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        b.scalar("select sync_internal.taken_ids(array[%s]::uuid[], null)", (row["id"],))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        b.scalar("select sync_internal.lock_owner(%s)", (alice,))
    # With their own id they still work (the RPCs call them as the user).
    assert b.scalar("select sync_internal.taken_ids(array[%s]::uuid[], %s)", (row["id"], bob)) == [
        uuid.UUID(row["id"])
    ]
    b.scalar("select sync_internal.lock_owner(%s)", (bob,))


def test_the_only_security_definer_function_a_user_may_call_is_taken_ids(db: Db) -> None:
    """Every other SECURITY DEFINER function is a trigger; a new one needs the same review."""
    with db.superuser() as conn:
        callable_definers = {
            r[0]
            for r in conn.execute(
                "select p.oid::regprocedure::text from pg_proc p"
                " join pg_namespace n on n.oid = p.pronamespace"
                " where n.nspname in ('public', 'sync_internal') and p.prosecdef"
                " and p.prorettype <> 'trigger'::regtype"
                " and has_function_privilege('authenticated', p.oid, 'execute')"
            )
        }
    assert callable_definers == {"sync_internal.taken_ids(uuid[],uuid)"}
