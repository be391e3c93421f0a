"""What keeps a project from growing without bound over a year: the operator's purge jobs.

Tombstones (purge_tombstones), idempotency records (purge_applied_ops) and revision history
(purge_revisions, migration 20261122001000) each have a purge an operator schedules with pg_cron
(docs/supabase-remote.md, "Running a project"). Before 20261122001000 nothing removed the history
of a blueprint that stayed alive: every accepted write of every file, forever.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from sync.localcloud.schema import apply_bootstrap, apply_migrations

from .helpers import Api, Db, change

pytestmark = pytest.mark.cloud


def _revisions(db: Db, *owners: str) -> list[tuple[str, int]]:
    with db.superuser() as conn:
        rows = conn.execute(
            "select id::text, rev from public.blueprint_revisions where owner = any(%s::uuid[])"
            " order by id, rev",
            (list(owners),),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_purge_revisions_keeps_each_current_revision_and_the_recent_ones(db: Db) -> None:
    me, other = db.new_user(), db.new_user()
    mine, theirs = db.api(me), db.api(other)
    a = change(1, path="a.yaml", content="v1\n")
    gone = change(2, path="gone.yaml")
    mine.push([a, gone])
    mine.push([change(3, a["id"], base_rev=1, path="a.yaml", content="v2\n")])
    mine.push([change(4, a["id"], base_rev=2, path="a.yaml", content="v3\n")])
    mine.push([change(5, gone["id"], base_rev=1, path="gone.yaml", deleted=True)])
    b = change(1, path="b.yaml")
    theirs.push([b])
    with db.superuser() as conn:  # a year passes
        conn.execute(
            "update public.blueprint_revisions set created_at = now() - interval '365 days'"
            " where owner = any(%s::uuid[])",
            ([me, other],),
        )
    latest = change(6, a["id"], base_rev=3, path="a.yaml", content="v4\n")
    mine.push([latest])

    service = db.api(None, role="service_role")
    purged = service.scalar("select public.purge_revisions(%s)", (timedelta(days=90),))

    assert purged >= 4  # a's revs 1-3 and the tombstoned blueprint's rev 1 (and any older rows)
    assert _revisions(db, me, other) == sorted(
        [(a["id"], 4), (gone["id"], 2), (b["id"], 1)]  # current revisions: a, tombstone, b
    )
    # The rows themselves, pulls and conflicts do not read the history.
    assert {r["id"]: r["rev"] for r in mine.pull(0)["changes"]} == {a["id"]: 4, gone["id"]: 2}
    probes = [
        {"id": a["id"], "content_hash": a["content_hash"], "path": "a.yaml"},
        {"id": a["id"], "content_hash": latest["content_hash"], "path": "a.yaml"},
    ]
    matched = mine.scalar("select public.match_revisions(%s)", (Jsonb(probes),))
    assert [m["rev"] for m in matched] == [4]  # rev 1 is gone, the current one still matches
    # Nothing younger than the window goes: a second run finds nothing of these users.
    service.scalar("select public.purge_revisions(%s)", (timedelta(days=90),))
    assert len(_revisions(db, me, other)) == 3


def test_purge_revisions_is_for_the_operator_only(db: Db) -> None:
    me = db.new_user()
    db.api(me).push([change(1)])
    for caller in (db.api(me), db.api(None)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            caller.scalar("select public.purge_revisions(interval '0')")
    assert len(_revisions(db, me)) == 1
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.api(None, role="service_role").scalar("select public.purge_revisions(interval '-1 day')")


def test_no_user_can_run_a_purge_for_everyone(db: Db) -> None:
    """The idempotency records and the history of every user are the operator's to purge; a
    signed-in user's purge_tombstones reaches only their own tombstones (test_pull.py)."""
    me, other = db.new_user(), db.new_user()
    db.api(other).push([change(1)])
    for caller in (db.api(me), db.api(None), db.api(None, role="authenticated")):
        for call in ("purge_applied_ops", "purge_revisions"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                caller.scalar(f"select public.{call}(interval '0')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not signed in"):
        db.api(None, role="authenticated").scalar("select public.purge_tombstones('0')")
    with db.superuser() as conn:
        assert conn.execute(
            "select count(*) from public.applied_ops where owner = %s", (other,)
        ).fetchone() == (1,)
    assert len(_revisions(db, other)) == 1


_DOCS = Path(__file__).resolve().parents[2] / "docs" / "supabase-remote.md"

# The entries of the server's shared lock table (PostgreSQL's lock.c sizes it by these), which
# every advisory lock of every session takes one of until it is released.
_LOCK_TABLE = """
select current_setting('max_locks_per_transaction')::int * (
  current_setting('max_connections')::int + current_setting('autovacuum_max_workers')::int + 1
  + current_setting('max_worker_processes')::int + current_setting('max_wal_senders')::int
  + current_setting('max_prepared_transactions')::int)
"""


def test_a_project_wide_tombstone_purge_of_more_users_than_the_lock_table_holds(
    fresh_db: str,
) -> None:
    """The nightly job of docs/supabase-remote.md on a project with more users holding an old
    tombstone than the server's lock table has entries. The purge took every such user's owner
    lock in one transaction: it failed with 53200 "out of shared memory" every night, and no
    tombstone was ever purged again (migration 20261122001600)."""
    apply_bootstrap(fresh_db)
    apply_migrations(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        row = conn.execute(_LOCK_TABLE).fetchone()
        assert row is not None
        # The table takes some more from the server's spare shared memory (here the limit was
        # under twice its nominal size); three times is well past it.
        users = 3 * int(row[0])
        for start in range(0, users, 1000):
            ids = [str(uuid.uuid4()) for _ in range(min(1000, users - start))]
            with conn.transaction():
                conn.execute(
                    "insert into auth.users (id, email)"
                    " select u::uuid, u || '@x.test' from unnest(%s::text[]) u",
                    (ids,),
                )
                # A direct write, as an admin's SQL would make it: the trigger stamps it.
                conn.execute(
                    "insert into public.blueprints"
                    " (id, owner, path, content_hash, rev, seq, device, deleted)"
                    " select gen_random_uuid(), u::uuid, 'gone.yaml', 'h', 0, 0, 'd', true"
                    " from unnest(%s::text[]) u",
                    (ids,),
                )

        # One call holds the owner locks of at most 1000 users until it commits.
        with conn.transaction():
            assert conn.execute("select public.purge_tombstones('0')").fetchone() == (1000,)
            held = conn.execute(
                "select count(*) from pg_locks"
                " where locktype = 'advisory' and pid = pg_backend_pid()"
            ).fetchone()
            assert held == (1000,)
            raise psycopg.Rollback  # leaves the transaction (the block swallows it)

        # The documented job, as pg_cron runs it: one statement, calling again and committing
        # until nothing is left.
        job = re.search(
            r"cron\.schedule\('localstore-purge-tombstones', '[^']*', \$\$(.*?)\$\$\);",
            _DOCS.read_text(encoding="utf-8"),
            re.S,
        )
        assert job is not None, "the tombstone job is no longer in docs/supabase-remote.md"
        conn.execute(job.group(1).replace("'90 days'", "'0'").encode())

        assert conn.execute("select count(*) from public.blueprints where deleted").fetchone() == (
            0,
        )
        # Every purged user's horizon rose, so each of their devices reconciles.
        assert conn.execute("select count(*) from public.sync_horizon").fetchone() == (users,)


def test_the_documented_size_query_lists_the_largest_table_first(fresh_db: str) -> None:
    """docs/supabase-remote.md's "Sizes:" query, run as written. It ordered by its second
    column, the pg_size_pretty text, so "24 kB" came before "17 MB"."""
    found = re.search(r"Sizes: `(select .*?;)`", _DOCS.read_text(encoding="utf-8"), re.S)
    assert found is not None, "the size query is no longer in docs/supabase-remote.md"
    apply_bootstrap(fresh_db)
    apply_migrations(fresh_db)
    user = str(uuid.uuid4())
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("insert into auth.users (id, email) values (%s, 'sz@x.test')", (user,))
        api = Api(conn, user, "authenticated")
        # Incompressible content: blueprints and their history hold over 10 MB each (which
        # pg_size_pretty writes in MB), the other two tables a few kB.
        api.push([change(op, content=secrets.token_hex(1_400_000)) for op in (11, 12, 13, 14)])
        gone = change(2)
        api.push([gone])
        api.push([change(3, gone["id"], base_rev=1, path=gone["path"], deleted=True)])
        api.purge()  # a row in sync_horizon
        listed = conn.execute(" ".join(found.group(1).split()).encode()).fetchall()
        sizes: dict[str, int] = dict(
            conn.execute(
                "select relname::text, pg_total_relation_size(oid) from pg_class"
                " where relnamespace = 'public'::regnamespace and relkind = 'r'"
            ).fetchall()
        )
    assert len(listed) == 4
    assert [sizes[r[0]] for r in listed] == sorted(sizes.values(), reverse=True), listed
