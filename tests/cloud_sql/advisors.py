"""The checks behind Supabase's Security and Performance Advisors, as catalog queries.

The dashboard's advisors run the lints of supabase/splinter (one SQL view per lint, `lints/*.sql`).
Each query here states the rule of one of those lints in our own SQL, read from splinter at
commit 55db5b1 (2026-04-27); the lint's number and name are splinter's, so a finding can be looked
up at https://supabase.com/docs/guides/database/database-linter?lint=<number>_<name>. Left out:
lints about objects the project has none of (storage buckets, pgmq queues, table bloat,
extension versions, reg* columns, sensitive column names) and ``0005_unused_index``, which only
says that this database's statistics have not seen an index used yet.

Where splinter's rule is a text match, the query here is at least as strict: ``0003`` flags any
``auth.<fn>()`` or ``current_setting(...)`` of a policy that is not wrapped in its own
``(select ...)``, not only a policy with no such wrapper at all.

``findings(conn, ...)`` returns ``{lint: [object, ...]}`` for every lint that found something.
Objects in the schemas Supabase owns (``EXCLUDED_SCHEMAS``, splinter's list) and objects that
belong to extensions are skipped, as the advisors skip them; the local bootstrap's stand-ins live
there, so what is left is the project's own schema.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["EXCLUDED_SCHEMAS", "EXPOSED_SCHEMAS", "LINTS", "findings", "graphql_visible"]

# Supabase's own schemas: the advisors never report objects in them (splinter's exclusion list).
EXCLUDED_SCHEMAS = [
    "_timescaledb_cache",
    "_timescaledb_catalog",
    "_timescaledb_config",
    "_timescaledb_internal",
    "auth",
    "cron",
    "extensions",
    "graphql",
    "graphql_public",
    "information_schema",
    "net",
    "pg_catalog",
    "pg_toast",
    "pgbouncer",
    "pgmq",
    "pgroonga",
    "pgsodium",
    "pgsodium_masks",
    "pgtle",
    "realtime",
    "repack",
    "storage",
    "supabase_functions",
    "supabase_migrations",
    "tiger",
    "topology",
    "vault",
]

# PostgREST's exposed schemas on a new hosted project (`pgrst.db_schemas`).
EXPOSED_SCHEMAS = ["public", "graphql_public"]

# Shared fragments. %(excluded)s and %(exposed)s are text[] parameters.
_OURS = "n.nspname <> all (%(excluded)s::text[])"
_NOT_EXTENSION = (
    "not exists (select 1 from pg_catalog.pg_depend d where d.objid = {oid} and d.deptype = 'e')"
)
_API_READABLE = (
    "(pg_catalog.has_table_privilege('anon', c.oid, 'SELECT')"
    " or pg_catalog.has_table_privilege('authenticated', c.oid, 'SELECT'))"
)
_EXPOSED = "n.nspname = any (%(exposed)s::text[])"
_SECURITY_INVOKER_VIEW = (
    "lower(coalesce(c.reloptions::text, '{}'))::text[] && array['security_invoker=1',"
    " 'security_invoker=true', 'security_invoker=yes', 'security_invoker=on']"
)
_TABLE = f"""
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where {_OURS} and {_NOT_EXTENSION.format(oid="c.oid")}
"""
_POLICY = f"""
    from pg_catalog.pg_policy p
    join pg_catalog.pg_class c on c.oid = p.polrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    join pg_catalog.pg_policies v
      on v.schemaname = n.nspname and v.tablename = c.relname and v.policyname = p.polname
    where {_OURS} and {_NOT_EXTENSION.format(oid="c.oid")}
"""
_FUNCTION = f"""
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where {_OURS} and {_NOT_EXTENSION.format(oid="p.oid")}
"""

LINTS: dict[str, str] = {
    # A foreign key whose columns are not the leading columns of a valid index: every delete or
    # key update of the referenced row scans the referencing table.
    "0001_unindexed_foreign_keys": f"""
        select format('%%s.%%s %%s', n.nspname, c.relname, k.conname)
        from pg_catalog.pg_constraint k
        join pg_catalog.pg_class c on c.oid = k.conrelid
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where k.contype = 'f' and {_OURS} and {_NOT_EXTENSION.format(oid="c.oid")}
          and not exists (
            select 1 from pg_catalog.pg_index i
            where i.indrelid = k.conrelid and i.indisvalid
              and (string_to_array(i.indkey::text, ' ')::smallint[])[1:cardinality(k.conkey)]
                  = k.conkey)
    """,
    # A view or materialized view in an exposed schema, readable by the API roles, that reads
    # auth.users.
    "0002_auth_users_exposed": f"""
        select distinct format('%%s.%%s', n.nspname, c.relname)
        from pg_catalog.pg_depend d
        join pg_catalog.pg_rewrite r on r.oid = d.objid
        join pg_catalog.pg_class c on c.oid = r.ev_class
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where d.refobjid = to_regclass('auth.users') and d.deptype = 'n'
          and c.relkind in ('v', 'm') and {_EXPOSED} and {_API_READABLE}
          and (c.relkind = 'm' or not ({_SECURITY_INVOKER_VIEW})
               or not (select u.relrowsecurity from pg_catalog.pg_class u
                       where u.oid = to_regclass('auth.users')))
    """,
    # auth.<fn>() or current_setting() evaluated per row in a policy: each must sit in its own
    # "(select ...)" so the planner runs it once per statement (an InitPlan).
    "0003_auth_rls_initplan": f"""
        select format('%%s.%%s %%s', n.nspname, c.relname, p.polname)
        {_POLICY}
          and c.relrowsecurity
          and exists (
            select 1 from unnest(array[v.qual, v.with_check]) e(expr)
            where regexp_replace(
                    e.expr,
                    '\\(\\s*select\\s+(auth\\.\\w+\\(\\)|current_setting\\([^()]*\\))'
                    '(\\s*(->>?|#>>?)\\s*[^()]*)?\\s+as\\s+\\w+\\s*\\)',
                    '', 'gi')
                  ~* '(auth\\.\\w+\\s*\\(|current_setting\\s*\\()')
    """,
    "0004_no_primary_key": f"""
        select format('%%s.%%s', n.nspname, c.relname)
        {_TABLE}
          and c.relkind = 'r'
          and not exists (select 1 from pg_catalog.pg_index i
                          where i.indrelid = c.oid and i.indisprimary)
    """,
    # Two permissive policies for the same role and command: both run for every row.
    "0006_multiple_permissive_policies": f"""
        select format('%%s.%%s %%s %%s', n.nspname, c.relname, r.rolname, a.cmd)
        from pg_catalog.pg_policy p
        join pg_catalog.pg_class c on c.oid = p.polrelid
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        join pg_catalog.pg_roles r
          on (p.polroles @> array[r.oid] or p.polroles = array[0::oid])
        cross join lateral unnest(case p.polcmd
            when 'r' then array['SELECT'] when 'a' then array['INSERT']
            when 'w' then array['UPDATE'] when 'd' then array['DELETE']
            else array['SELECT', 'INSERT', 'UPDATE', 'DELETE'] end) a(cmd)
        where {_OURS} and {_NOT_EXTENSION.format(oid="c.oid")}
          and c.relkind = 'r' and p.polpermissive
          and r.rolname !~ '^pg_' and r.rolname !~ '^supabase.*admin$' and not r.rolbypassrls
        group by n.nspname, c.relname, r.rolname, a.cmd
        having count(*) > 1
    """,
    "0007_policy_exists_rls_disabled": f"""
        select distinct format('%%s.%%s', n.nspname, c.relname)
        {_POLICY}
          and c.relkind = 'r' and not c.relrowsecurity
    """,
    "0008_rls_enabled_no_policy": f"""
        select format('%%s.%%s', n.nspname, c.relname)
        {_TABLE}
          and c.relkind = 'r' and c.relrowsecurity
          and not exists (select 1 from pg_catalog.pg_policy p where p.polrelid = c.oid)
    """,
    # Two indexes with the same definition on one table.
    "0009_duplicate_index": f"""
        select format('%%s.%%s: %%s', n.nspname, c.relname,
                      string_agg(x.indexname, ', ' order by x.indexname))
        from pg_catalog.pg_class c
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        join pg_catalog.pg_indexes x on x.schemaname = n.nspname and x.tablename = c.relname
        where {_OURS} and {_NOT_EXTENSION.format(oid="c.oid")}
          and c.relkind in ('r', 'm')
        group by n.nspname, c.relname, replace(x.indexdef, x.indexname, '')
        having count(*) > 1
    """,
    # A view the API roles can read that runs with its owner's rights (bypassing their RLS).
    "0010_security_definer_view": f"""
        select format('%%s.%%s', n.nspname, c.relname)
        {_TABLE}
          and c.relkind = 'v' and {_EXPOSED} and {_API_READABLE}
          and not ({_SECURITY_INVOKER_VIEW})
    """,
    # A function whose search_path is the caller's: a SECURITY DEFINER one can be hijacked by
    # objects the caller puts earlier on the path, any other one behaves differently per caller.
    "0011_function_search_path_mutable": f"""
        select p.oid::regprocedure::text
        {_FUNCTION}
          and not exists (select 1 from unnest(coalesce(p.proconfig, '{{}}')) cfg
                          where cfg like 'search_path=%%')
    """,
    "0013_rls_disabled_in_public": f"""
        select format('%%s.%%s', n.nspname, c.relname)
        {_TABLE}
          and c.relkind = 'r' and not c.relrowsecurity and {_EXPOSED} and {_API_READABLE}
    """,
    "0014_extension_in_public": """
        select e.extname::text from pg_catalog.pg_extension e
        where e.extname <> 'plpgsql' and e.extnamespace = 'public'::regnamespace
    """,
    # user_metadata is editable by the user it describes; a policy must not trust it.
    "0015_rls_references_user_metadata": f"""
        select format('%%s.%%s %%s', n.nspname, c.relname, p.polname)
        {_POLICY}
          and (coalesce(v.qual, '') || coalesce(v.with_check, '')) ~ 'user_metadata'
    """,
    # Materialized views and foreign tables have no RLS: readable through the API means readable.
    "0016_0017_relation_without_rls_in_api": f"""
        select format('%%s.%%s', n.nspname, c.relname)
        {_TABLE}
          and c.relkind in ('m', 'f') and {_EXPOSED} and {_API_READABLE}
    """,
    # A permissive policy for the API roles that lets every row through a write.
    "0024_rls_policy_always_true": f"""
        select format('%%s.%%s %%s', n.nspname, c.relname, p.polname)
        {_POLICY}
          and c.relkind = 'r' and c.relrowsecurity and p.polpermissive
          and (p.polroles = array[0::oid] or exists (
                select 1 from unnest(p.polroles) r(oid)
                where r.oid::regrole::text in ('anon', 'authenticated')))
          and (
            (p.polcmd in ('w', 'd', '*') and (v.qual is null
               or regexp_replace(lower(v.qual), '\\s', '', 'g') in ('true', '(true)', '1=1',
                                                                    '(1=1)')))
            or regexp_replace(lower(coalesce(v.with_check, '')), '\\s', '', 'g')
               in ('true', '(true)', '1=1', '(1=1)')
            or (p.polcmd = 'a' and v.with_check is null))
    """,
    # pg_graphql shows anon every relation anon can SELECT a column of (its name, columns and
    # mutations), RLS or not. Reported as if pg_graphql were installed: projects may enable it.
    "0026_pg_graphql_anon_table_exposed": f"""
        select format('%%s.%%s', n.nspname, c.relname)
        {_TABLE}
          and c.relkind in ('r', 'v', 'm', 'f')
          and exists (select 1 from pg_catalog.pg_attribute a
                      where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                        and pg_catalog.has_column_privilege('anon', c.oid, a.attnum, 'SELECT'))
    """,
    # A SECURITY DEFINER function the API can call as an RPC runs with its owner's rights.
    "0028_anon_security_definer_function_executable": f"""
        select p.oid::regprocedure::text
        {_FUNCTION}
          and p.prosecdef and {_EXPOSED}
          and pg_catalog.has_function_privilege('anon', p.oid, 'EXECUTE')
    """,
    "0029_authenticated_security_definer_function_executable": f"""
        select p.oid::regprocedure::text
        {_FUNCTION}
          and p.prosecdef and {_EXPOSED}
          and pg_catalog.has_function_privilege('authenticated', p.oid, 'EXECUTE')
    """,
}

# Lint 0027 (pg_graphql_authenticated_table_exposed): what a signed-in user can see in the
# GraphQL schema. Not a defect by itself (the RPCs are SECURITY INVOKER, so `authenticated` must
# read the tables they read); the test pins the list, so nothing joins it unnoticed.
_GRAPHQL_VISIBLE = f"""
    select format('%%s.%%s', n.nspname, c.relname)
    {_TABLE}
      and c.relkind in ('r', 'v', 'm', 'f')
      and exists (select 1 from pg_catalog.pg_attribute a
                  where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                    and pg_catalog.has_column_privilege(%(role)s::name, c.oid, a.attnum, 'SELECT'))
    order by 1
"""


def _params(**extra: Any) -> dict[str, Any]:
    return {"excluded": EXCLUDED_SCHEMAS, "exposed": EXPOSED_SCHEMAS, **extra}


def findings(conn: psycopg.Connection[Any], lints: list[str] | None = None) -> dict[str, list[str]]:
    """Run the lints (default: all) and return the objects each one reports, if any."""
    found: dict[str, list[str]] = {}
    for name in lints or list(LINTS):
        rows = conn.execute(LINTS[name], _params()).fetchall()
        if rows:
            found[name] = sorted(str(r[0]) for r in rows)
    return found


def graphql_visible(conn: psycopg.Connection[Any], role: str) -> list[str]:
    """Return the relations ``role`` would see in pg_graphql's schema (lints 0026 and 0027)."""
    return [str(r[0]) for r in conn.execute(_GRAPHQL_VISIBLE, _params(role=role)).fetchall()]
