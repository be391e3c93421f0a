"""Only public.blueprints streams through supabase_realtime (migration 20261122001500).

Hosted Realtime sends the primary key of every DELETE on a published table to any subscriber
whose role may SELECT it (RLS cannot be applied to a deleted row), and ``authenticated`` may
SELECT applied_ops, blueprint_revisions and sync_horizon (the SECURITY INVOKER RPCs read them).
Realtime takes the tables it streams from ``pg_publication_tables`` and the actions from
``pubinsert/pubupdate/pubdelete``, so that is what these tests read.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import psycopg
import pytest

from sync.localcloud.schema import (
    MigrationError,
    applied_migrations,
    apply_bootstrap,
    apply_migrations,
    migration_files,
    migration_version,
)
from sync.localcloud.sqlsplit import split_statements

pytestmark = pytest.mark.cloud

SCOPE_VERSION = "20261122001500"
OURS = {"applied_ops", "blueprint_revisions", "sync_horizon"}
# What `db push` runs once the refused file goes through: it and every file after it.
FROM_SCOPE = [
    migration_version(p) for p in migration_files() if migration_version(p) >= SCOPE_VERSION
]


def _streamed(dsn: str) -> tuple[set[str], bool]:
    """The public tables supabase_realtime streams, and whether it streams their deletes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "select tablename from pg_publication_tables"
            " where pubname = 'supabase_realtime' and schemaname = 'public'"
        ).fetchall()
        deletes = conn.execute(
            "select pubdelete from pg_publication where pubname = 'supabase_realtime'"
        ).fetchone()
    assert deletes is not None
    return {str(t[0]) for t in tables}, bool(deletes[0])


def _rerun_every_file(dsn: str) -> None:
    """What `psql -f` of every file again (or a lost history) does."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for path in migration_files():
            with conn.transaction():
                for statement in split_statements(path.read_text(encoding="utf-8")):
                    conn.cursor().execute(statement.encode(), binary=True)


# How a project's publication can stream all of the schema, and the fix the refusal names.
_WHOLE_SCHEMA = {
    "for all tables": (
        "drop publication supabase_realtime; create publication supabase_realtime for all tables",
        "FOR ALL TABLES",
    ),
    "tables in schema public": (
        "drop publication supabase_realtime;"
        " create publication supabase_realtime for tables in schema public",
        "streams the whole schema public",
    ),
}


@pytest.mark.parametrize("kind", list(_WHOLE_SCHEMA))
def test_a_publication_streaming_the_whole_schema_is_refused_with_what_to_run(
    fresh_db: str, kind: str
) -> None:
    apply_bootstrap(fresh_db)
    create, says = _WHOLE_SCHEMA[kind]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(create.encode())

    with pytest.raises(MigrationError) as refused:
        apply_migrations(fresh_db)
    message = str(refused.value)
    assert message.startswith(f"{SCOPE_VERSION}_realtime_publication_scope.sql failed: 55000")
    assert says in message
    assert "public.applied_ops, public.blueprint_revisions, public.sync_horizon" in message
    # Every earlier file is in; the refused one left nothing behind, the publication included.
    assert applied_migrations(fresh_db) == [
        migration_version(p) for p in migration_files() if migration_version(p) < SCOPE_VERSION
    ]
    assert _streamed(fresh_db)[0] >= OURS | {"blueprints"}

    # What the error tells the operator to run, verbatim, then `db push` again.
    fix = re.search(r"then db push again: (begin;.*?commit;)", message)
    assert fix is not None, message
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(fix.group(1).encode())
    assert apply_migrations(fresh_db) == FROM_SCOPE
    assert _streamed(fresh_db) == ({"blueprints"}, True)
    _rerun_every_file(fresh_db)
    assert _streamed(fresh_db) == ({"blueprints"}, True)


def test_a_whole_schema_publication_that_stops_sending_deletes_deploys(fresh_db: str) -> None:
    """The third fix docs/supabase-remote.md offers: INSERTs and UPDATEs pass Realtime's RLS
    check, so without DELETEs nothing leaks and the tables may stay in."""
    apply_bootstrap(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(_WHOLE_SCHEMA["for all tables"][0].encode())
    with pytest.raises(MigrationError):
        apply_migrations(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            "alter publication supabase_realtime set (publish = 'insert, update, truncate')"
        )
    assert apply_migrations(fresh_db) == FROM_SCOPE
    _rerun_every_file(fresh_db)
    tables, deletes = _streamed(fresh_db)
    assert tables >= OURS | {"blueprints"} and deletes is False


def test_our_tables_listed_in_the_publication_by_name_are_taken_out(
    fresh_db: str, tmp_path: Path
) -> None:
    """A project that deployed the earlier files, then had someone add these tables to the
    publication (the dashboard's Realtime toggle, a hand-written ALTER PUBLICATION)."""
    for p in migration_files():
        if migration_version(p) < SCOPE_VERSION:
            shutil.copy(p, tmp_path / p.name)
    apply_bootstrap(fresh_db)
    apply_migrations(fresh_db, directory=tmp_path)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            "alter publication supabase_realtime add table public.applied_ops,"
            " public.blueprint_revisions, public.sync_horizon"
        )
    assert _streamed(fresh_db) == (OURS | {"blueprints"}, True)

    assert apply_migrations(fresh_db) == FROM_SCOPE
    assert _streamed(fresh_db) == ({"blueprints"}, True)
    _rerun_every_file(fresh_db)
    assert _streamed(fresh_db) == ({"blueprints"}, True)
