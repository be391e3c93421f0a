"""What an operator sees in Supabase's Security and Performance Advisors after `supabase db push`.

The advisors are supabase/splinter's lints; ``advisors.py`` states them as catalog queries. The
schema must give none of them anything to report, on a fresh project and on one upgraded from
any earlier migration while it held data. Plus what the lints do not look at: who may execute
the internal helpers, and an index under every owner filter (a user's purge, here).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sync.localcloud.cluster import PostgresCluster
from sync.localcloud.schema import apply_bootstrap, apply_migrations, migration_files
from sync.localcloud.sqlsplit import split_statements

from .advisors import LINTS, findings, graphql_visible
from .conftest import new_database
from .helpers import Api, Db, catalog_fingerprint, change

pytestmark = pytest.mark.cloud

# The tables the SECURITY INVOKER RPCs read as the caller, so `authenticated` must hold SELECT
# on them, and pg_graphql (if a project enables it) lists them to signed-in users (lint 0027).
# Their rows stay behind RLS. See docs/sync-protocol.md, "Supabase Security and Performance
# Advisors".
GRAPHQL_VISIBLE_TO_USERS = [
    "public.applied_ops",
    "public.blueprint_revisions",
    "public.blueprints",
    "public.sync_horizon",
]


@pytest.fixture(scope="module")
def deployed(cluster: PostgresCluster, prepared: str) -> Iterator[psycopg.Connection[Any]]:
    """A database holding the bootstrap and the migrations and nothing else (the session's
    database also holds what other tests create); a superuser connection to it."""
    with new_database(cluster) as dsn:
        apply_bootstrap(dsn)
        apply_migrations(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            yield conn


@pytest.mark.parametrize("lint", list(LINTS))
def test_the_schema_gives_the_advisors_nothing_to_report(
    deployed: psycopg.Connection[Any], lint: str
) -> None:
    assert findings(deployed, [lint]) == {}


def test_only_the_sync_tables_are_visible_in_graphql_and_only_to_signed_in_users(
    deployed: psycopg.Connection[Any],
) -> None:
    conn = deployed
    assert graphql_visible(conn, "anon") == []
    assert graphql_visible(conn, "authenticated") == GRAPHQL_VISIBLE_TO_USERS


# Each lint query must be able to fail: a schema with one of each mistake, and what each lint
# is expected to name in it.
_MISTAKES = """
create table public.m_parent (id int primary key);
create table public.m_child (id int primary key, parent int references public.m_parent);
create view public.m_users as select id, email from auth.users;
create table public.m_owned (id int primary key, owner uuid, other uuid);
create index m_owned_a on public.m_owned (owner);
create index m_owned_b on public.m_owned (owner);
alter table public.m_owned enable row level security;
create policy m_per_row on public.m_owned for select to authenticated using (owner = auth.uid());
create policy m_half on public.m_owned for select to authenticated
  using (owner = (select auth.uid()) or other = auth.uid());
create policy m_meta on public.m_owned for insert to authenticated
  with check ((auth.jwt() -> 'user_metadata' ->> 'admin') = 'true');
create policy m_open on public.m_owned for update to authenticated using (true);
create table public.m_no_pk (x int);
create policy m_ignored on public.m_no_pk for select using (true);
create table public.m_locked (id int primary key);
alter table public.m_locked enable row level security;
create materialized view public.m_matview as select 1 as x;
create function public.m_definer() returns int language sql security definer as 'select 1';
create extension if not exists citext with schema public;
"""

_EXPECTED = {
    "0001_unindexed_foreign_keys": "public.m_child m_child_parent_fkey",
    "0002_auth_users_exposed": "public.m_users",
    "0003_auth_rls_initplan": "public.m_owned m_half",
    "0004_no_primary_key": "public.m_no_pk",
    "0006_multiple_permissive_policies": "public.m_owned authenticated SELECT",
    "0007_policy_exists_rls_disabled": "public.m_no_pk",
    "0008_rls_enabled_no_policy": "public.m_locked",
    "0009_duplicate_index": "public.m_owned: m_owned_a, m_owned_b",
    "0010_security_definer_view": "public.m_users",
    "0011_function_search_path_mutable": "m_definer()",
    "0013_rls_disabled_in_public": "public.m_child",
    "0014_extension_in_public": "citext",
    "0015_rls_references_user_metadata": "public.m_owned m_meta",
    "0016_0017_relation_without_rls_in_api": "public.m_matview",
    "0024_rls_policy_always_true": "public.m_owned m_open",
    "0026_pg_graphql_anon_table_exposed": "public.m_matview",
    "0028_anon_security_definer_function_executable": "m_definer()",
    "0029_authenticated_security_definer_function_executable": "m_definer()",
}


def test_every_lint_reports_the_mistake_it_is_about(fresh_db: str) -> None:
    assert set(_EXPECTED) == set(LINTS)
    apply_bootstrap(fresh_db)  # Supabase's default privileges: new objects go to the API roles
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(_MISTAKES.encode())
        found = findings(conn)
    missed = {
        lint: found.get(lint) for lint, obj in _EXPECTED.items() if obj not in found.get(lint, [])
    }
    assert missed == {}
    # The per-row policy is caught by splinter's own text match too; the half-wrapped one only
    # by the stricter rule here.
    assert "public.m_owned m_per_row" in found["0003_auth_rls_initplan"]


def _open_to_anon_or_public(conn: psycopg.Connection[Any]) -> list[tuple[str]]:
    """The schema's functions that anon, or every role through PUBLIC, may execute."""
    return conn.execute(
        """
        select p.oid::regprocedure::text from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('public', 'sync_internal')
          and (has_function_privilege('anon', p.oid, 'EXECUTE')
               or exists (select 1 from aclexplode(coalesce(p.proacl,
                                                            acldefault('f', p.proowner))) a
                          where a.grantee = 0))
        """
    ).fetchall()


def test_no_function_of_the_schema_is_executable_by_anon_or_public(
    deployed: psycopg.Connection[Any],
) -> None:
    conn = deployed
    open_to_all = _open_to_anon_or_public(conn)
    # Trigger functions run as the table's triggers only; nobody calls them.
    callable_triggers = conn.execute(
        """
        select p.oid::regprocedure::text from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('public', 'sync_internal') and p.prorettype = 'trigger'::regtype
          and (has_function_privilege('authenticated', p.oid, 'EXECUTE')
               or has_function_privilege('service_role', p.oid, 'EXECUTE'))
        """
    ).fetchall()
    definers = conn.execute(
        """
        select p.oid::regprocedure::text, p.proconfig from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('public', 'sync_internal') and p.prosecdef
          and has_function_privilege('authenticated', p.oid, 'EXECUTE')
        """
    ).fetchall()
    sequence_open = conn.execute(
        "select has_sequence_privilege('authenticated', 'sync_internal.blueprint_seq',"
        " 'USAGE') or has_sequence_privilege('anon', 'sync_internal.blueprint_seq', 'USAGE')"
    ).fetchone()
    assert open_to_all == []
    assert callable_triggers == []
    # The one SECURITY DEFINER helper a user calls (through the invoker RPCs), outside the API
    # schemas, with an empty search_path; it checks its `me` against auth.uid().
    assert definers == [("sync_internal.taken_ids(uuid[],uuid)", ['search_path=""'])]
    assert sequence_open == (False,)


def test_every_owner_column_leads_an_index(deployed: psycopg.Connection[Any]) -> None:
    conn = deployed
    missing = conn.execute(
        """
        select c.relname from pg_class c
        join pg_attribute a on a.attrelid = c.oid and a.attname = 'owner'
        where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
          and not exists (select 1 from pg_index i
                          where i.indrelid = c.oid and i.indkey[0] = a.attnum)
        """
    ).fetchall()
    assert missing == []


def _rows_read(api: Api, query: str, params: Any) -> tuple[Any, int]:
    """Run ``query`` as the user; return its result and the blueprints rows it read."""
    with api.transaction() as conn:
        result = conn.execute(query, params).fetchone()
        read = conn.execute(
            "select coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
            " from pg_stat_xact_user_tables where relid = 'public.blueprints'::regclass"
        ).fetchone()
    assert result is not None and read is not None
    return result[0], int(read[0])


def test_a_users_purge_reads_only_their_own_tombstones(db: Db) -> None:
    """Migration 20261122000700: before it, a user's purge read every tombstone of the project
    (the (updated_at) index) or all of the user's own rows ((owner, seq)), whatever the plan."""
    me, other = db.new_user(), db.new_user()
    api = db.api(me)
    live = [change(i, path=f"live/{i}.yaml") for i in range(1, 301)]
    gone = [change(1000 + i, path=f"gone/{i}.yaml") for i in range(5)]
    api.push(live)
    api.push(gone)
    api.push(
        [
            change(2000 + i, c["id"], base_rev=1, path=c["path"], deleted=True)
            for i, c in enumerate(gone)
        ]
    )
    su = db.superuser()
    su.execute(
        "insert into public.blueprints (id, owner, path, content_hash, rev, seq, device, deleted)"
        " select gen_random_uuid(), %s, 'old/' || g || '.yaml', 'h', 0, 0, 'd', true"
        " from generate_series(1, 3000) g",
        (other,),
    )
    su.execute("analyze public.blueprints")

    # A new connection: a backend's table counters also hold its earlier transactions' reads
    # until it reports them (at most once a second), and the pushes above read plenty.
    purged, read = _rows_read(
        db.api(me), "select public.purge_tombstones(older_than := %s)", (timedelta(0),)
    )
    assert purged == 5
    # The owner list and the delete each read the five; nothing near 300 or 3000.
    assert read <= 30, f"a purge of 5 tombstones read {read} rows"


# -- upgrades --------------------------------------------------------------------------------


def _state(dsn: str) -> dict[str, Any]:
    """Everything the migrations must keep: rows, history, horizons, idempotency records."""
    with psycopg.connect(dsn) as conn:
        return {
            "blueprints": conn.execute(
                "select id, owner, path, content, meta, content_hash, rev, seq, deleted, device,"
                " updated_at from public.blueprints order by id"
            ).fetchall(),
            "revisions": conn.execute(
                "select id, rev, seq, path, content_hash, deleted from public.blueprint_revisions"
                " order by id, rev"
            ).fetchall(),
            "horizons": conn.execute(
                "select owner, horizon from public.sync_horizon order by owner"
            ).fetchall(),
            "applied_ops": conn.execute(
                "select owner, device, op_id, result from public.applied_ops"
                " order by owner, device, op_id"
            ).fetchall(),
        }


def _run_again(dsn: str, path: Path) -> None:
    """Run a migration file once more without recording it, as the Supabase CLI sends it."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("reset all")
        for statement in split_statements(path.read_text(encoding="utf-8")):
            conn.cursor().execute(statement.encode(), binary=True)


def _write_some(conn: psycopg.Connection[Any], users: list[str], stage: int) -> None:
    """Creates, edits, deletes and a purge, through whatever the schema offers at this stage."""
    has_rpcs = conn.execute("select to_regprocedure('public.push_changes(jsonb,text)')").fetchone()
    for n, user in enumerate(users):
        if not has_rpcs or has_rpcs[0] is None:
            # Tables only: a direct write, as PostgREST's table endpoint would make it.
            conn.execute(
                "insert into public.blueprints (id, owner, path, content_hash, rev, seq, device)"
                " values (%s, %s, %s, 'h0', 0, 0, 'direct')",
                (str(uuid.uuid4()), user, f"s{stage}/direct.yaml"),
            )
            continue
        api = Api(conn, user, "authenticated")
        op = stage * 100 + n * 10
        a = change(op + 1, path=f"s{stage}/a.yaml", content=f"a{stage}\n")
        b = change(op + 2, path=f"s{stage}/b.yaml")
        created = api.push([a, b], device=f"dev{n}")
        assert [r["status"] for r in created] == ["applied"] * 2
        # Revs of a create start above the owner's horizon since 20261122001400.
        ra, rb = (r["rev"] for r in created)
        edit = change(op + 3, a["id"], base_rev=ra, path=f"s{stage}/A.yaml", content="edited\n")
        drop = change(op + 4, b["id"], base_rev=rb, path=b["path"], deleted=True)
        assert [r["status"] for r in api.push([edit, drop], device=f"dev{n}")] == ["applied"] * 2
        if stage % 2:
            assert api.purge() >= 1  # raises the horizon


def test_each_migration_applies_on_top_of_a_project_holding_data(
    fresh_db: str, other_fresh_db: str, tmp_path: Path
) -> None:
    """A project deployed at any earlier migration, with users and rows, takes the rest: the data
    is unchanged, sync still works on the old rows, and the schema ends as a fresh one's."""
    apply_bootstrap(fresh_db)
    users = [str(uuid.uuid4()), str(uuid.uuid4())]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for u in users:
            conn.execute("insert into auth.users (id, email) values (%s, %s)", (u, f"{u}@x.test"))
    for stage, path in enumerate(migration_files()):
        before = _state(fresh_db) if stage else None
        shutil.copy(path, tmp_path / path.name)
        assert apply_migrations(fresh_db, directory=tmp_path) == [path.stem.partition("_")[0]]
        if before is not None:
            assert _state(fresh_db) == before, f"{path.name} changed existing data"
        # Every file says it is safe to run again (someone ran it by hand in the SQL editor
        # first, or a lost history): right after itself, it changes no data and no definition.
        once = (_state(fresh_db), catalog_fingerprint(fresh_db))
        _run_again(fresh_db, path)
        assert (_state(fresh_db), catalog_fingerprint(fresh_db)) == once, f"{path.name} again"
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            _write_some(conn, users, stage)

    # A project deployed with psql has no history: a later `db push` runs every file again, in
    # order, over the users' data.
    once = (_state(fresh_db), catalog_fingerprint(fresh_db))
    for path in migration_files():
        _run_again(fresh_db, path)
    assert (_state(fresh_db), catalog_fingerprint(fresh_db)) == once

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert findings(conn) == {}
        for n, user in enumerate(users):
            api = Api(conn, user, "authenticated")
            # An op id answered under the first migrations is still a replay, not a new write.
            again = change(100 + n * 10 + 1, path="replayed.yaml")
            [replay] = api.push([again], device=f"dev{n}")
            assert replay["status"] == "applied" and replay["id"] != again["id"]
            # Every old live row takes an edit on its current rev.
            rows = api.verify()["rows"]
            live = [r for r in rows if not r["deleted"]]
            assert len(live) >= len(migration_files())
            fetched = {r["id"]: r for r in api.fetch([r["id"] for r in live])}
            edits = [
                change(9000 + i, r["id"], base_rev=r["rev"], path=fetched[r["id"]]["path"])
                for i, r in enumerate(live)
            ]
            assert {r["status"] for r in api.push(edits, device="after")} == {"applied"}
            pulled = api.pull(0)
            assert pulled["reset_required"] and pulled["horizon"] > 0  # purges were kept

    apply_bootstrap(other_fresh_db)
    apply_migrations(other_fresh_db)
    assert catalog_fingerprint(fresh_db) == catalog_fingerprint(other_fresh_db)


# What a hosted project's `postgres` is (supabase/postgres 10000000000000_demote-postgres.sql and
# later grants): not a superuser, but the database's owner (so it owns `public`), with BYPASSRLS,
# ALL on Supabase's auth tables and owner of the supabase_realtime publication. `supabase db
# push` runs the migrations as that role.
_HOSTED_POSTGRES = """
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'hosted_postgres') then
    create role hosted_postgres nologin nosuperuser createdb createrole replication bypassrls;
  end if;
end
$$;
grant all on schema auth, extensions, realtime to hosted_postgres;
grant all on all tables in schema auth to hosted_postgres;
grant all on all routines in schema auth, realtime to hosted_postgres;
alter publication supabase_realtime owner to hosted_postgres;
alter default privileges for role hosted_postgres in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges for role hosted_postgres in schema public
  grant all on functions to anon, authenticated, service_role;
alter default privileges for role hosted_postgres in schema public
  grant all on sequences to anon, authenticated, service_role;
"""


def test_the_migrations_deploy_as_a_role_that_is_not_a_superuser(fresh_db: str) -> None:
    """As `supabase db push` on a hosted project: the objects belong to a non-superuser, and the
    SECURITY DEFINER triggers and purges still work with only that role's rights."""
    apply_bootstrap(fresh_db)
    name = conninfo_to_dict(fresh_db)["dbname"]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(_HOSTED_POSTGRES.encode())
        conn.execute(f'alter database "{name}" owner to hosted_postgres')
    as_hosted_postgres = make_conninfo(fresh_db, options="-c role=hosted_postgres")
    assert apply_migrations(as_hosted_postgres) == [
        p.stem.partition("_")[0] for p in migration_files()
    ]
    user = str(uuid.uuid4())
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        owners = conn.execute(
            "select distinct pg_get_userbyid(p.proowner) from pg_proc p"
            " where p.pronamespace in ('public'::regnamespace, 'sync_internal'::regnamespace)"
        ).fetchall()
        assert owners == [("hosted_postgres",)]
        assert findings(conn) == {}
        # Supabase's default privileges for postgres grant EXECUTE on every new function in
        # public to anon; each file takes it back (and PUBLIC's) for what it creates.
        assert _open_to_anon_or_public(conn) == []
        has_defaults = conn.execute(
            "select count(*) from pg_default_acl d where d.defaclrole = 'hosted_postgres'::regrole"
            " and d.defaclobjtype = 'f' and d.defaclacl::text like '%anon=X%'"
        ).fetchone()
        assert has_defaults == (1,)  # so the check above saw them at work
        conn.execute("insert into auth.users (id, email) values (%s, 'h@x.test')", (user,))
    with psycopg.connect(as_hosted_postgres, autocommit=True) as conn:
        api = Api(conn, user, "authenticated")
        c = change(1, path="a.yaml")
        assert api.push([c])[0]["status"] == "applied"
        gone = change(2, c["id"], base_rev=1, path="a.yaml", deleted=True)
        assert api.push([gone])[0]["rev"] == 2
        assert api.purge() == 1  # as the user, under RLS
        assert api.pull(0)["reset_required"] is True
        # A pg_cron job runs as the role that scheduled it (postgres), with no JWT: the
        # project-wide purges work with that role's rights (docs/supabase-remote.md).
        # Creates start above the horizon: the stamping trigger reads it with that role's rights.
        again = change(3, path="b.yaml")
        [made] = api.push([again])
        assert made["rev"] == api.pull(0)["horizon"] + 1 > 1
        api.push([change(4, again["id"], base_rev=made["rev"], path="b.yaml", deleted=True)])
        kept = change(5, path="c.yaml")
        [made] = api.push([kept])
        edit = change(6, kept["id"], base_rev=made["rev"], path="c.yaml", content="edited\n")
        assert api.push([edit])[0]["status"] == "applied"
        with conn.transaction():
            assert conn.execute("select auth.uid()").fetchone() == (None,)
            conn.execute(
                "update public.blueprint_revisions set created_at = now() - interval '1 day'"
            )
            assert conn.execute("select public.purge_tombstones('0')").fetchone() == (1,)
            assert conn.execute("select public.purge_revisions('1 hour')").fetchone() == (1,)
            assert conn.execute("select public.purge_applied_ops('1 hour')").fetchone() == (0,)
        service = Api(conn, None, "service_role")
        assert service.scalar("select public.purge_applied_ops(interval '0')") == 6
        # Deleting the user cascades through the SECURITY DEFINER triggers.
        conn.execute("delete from auth.users where id = %s", (user,))
        assert conn.execute("select count(*) from public.sync_horizon").fetchone() == (0,)
