"""Bootstrap and migrations: idempotent, recorded like the Supabase CLI, deployable to Supabase."""

from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from sync.localcloud.cluster import PostgresCluster
from sync.localcloud.schema import (
    MigrationError,
    applied_migrations,
    apply_bootstrap,
    apply_migrations,
    migration_files,
    migration_version,
    set_authenticator_password,
)
from sync.localcloud.sqlsplit import split_statements

from .helpers import Db, catalog_fingerprint, change

pytestmark = pytest.mark.cloud


def test_bootstrap_and_migrations_apply_cleanly_twice(fresh_db: str) -> None:
    apply_bootstrap(fresh_db)
    versions = [migration_version(p) for p in migration_files()]
    assert apply_migrations(fresh_db) == versions
    first = catalog_fingerprint(fresh_db)

    apply_bootstrap(fresh_db)
    assert apply_migrations(fresh_db) == []  # recorded, so skipped
    # And the files themselves are re-run safe (what `psql -f` twice, or a lost history, does).
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for path in migration_files():
            with conn.transaction():
                conn.execute(path.read_bytes())
    assert catalog_fingerprint(fresh_db) == first
    assert applied_migrations(fresh_db) == versions


def test_history_is_recorded_like_the_supabase_cli(fresh_db: str) -> None:
    apply_bootstrap(fresh_db)
    apply_migrations(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations"
            " order by version"
        ).fetchall()
    files = migration_files()
    assert [r[0] for r in rows] == [migration_version(p) for p in files]
    assert [r[1] for r in rows] == [p.stem.partition("_")[2] for p in files]
    # The statements the CLI sent, as it records them (not the file's text).
    assert [r[2] for r in rows] == [split_statements(p.read_text(encoding="utf-8")) for p in files]


def test_a_file_the_supabase_cli_cuts_inside_a_string_is_refused(
    fresh_db: str, tmp_path: Path
) -> None:
    """`db push` cuts at this ';' (a backslash does not escape a quote for its splitter) and
    fails; `psql -f`, and this runner before it cut files like the CLI, applied it."""
    apply_bootstrap(fresh_db)
    (tmp_path / "20990101000000_escape.sql").write_text(
        "comment on schema public is E'it\\'s; fine';\n", encoding="utf-8"
    )
    with pytest.raises(MigrationError, match=r"20990101000000_escape\.sql failed: 42601") as info:
        apply_migrations(fresh_db, directory=tmp_path)
    assert "at statement 1 of 2" in str(info.value)
    assert applied_migrations(fresh_db) == []


def test_a_setting_made_by_one_file_does_not_reach_the_next(fresh_db: str, tmp_path: Path) -> None:
    """The CLI runs RESET ALL before each file: a file that leaves a session setting behind
    (here a search_path with no schema in it) changes nothing for the files after it."""
    apply_bootstrap(fresh_db)
    (tmp_path / "20990101000000_sets.sql").write_text(
        "select pg_catalog.set_config('search_path', 'nowhere', false);", encoding="utf-8"
    )
    (tmp_path / "20990101000001_creates.sql").write_text(
        "create table unqualified (x int);", encoding="utf-8"
    )
    assert apply_migrations(fresh_db, directory=tmp_path) == ["20990101000000", "20990101000001"]
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("select to_regclass('public.unqualified')").fetchone() == (
            "unqualified",
        )


def test_concurrent_appliers_serialise(fresh_db: str) -> None:
    apply_bootstrap(fresh_db)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(apply_migrations(fresh_db))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(results) == 3
    assert sorted(results, key=len) == [[], [], [migration_version(p) for p in migration_files()]]


def test_a_failing_migration_is_rolled_back_and_named(fresh_db: str, tmp_path: Path) -> None:
    (tmp_path / "20990101000000_good.sql").write_text("create table public.good (x int);")
    bad = tmp_path / "20990101000001_bad.sql"
    bad.write_text("create table public.half (x int);\nselect 1/0;")
    with pytest.raises(MigrationError, match=r"20990101000001_bad\.sql failed: 22012") as info:
        apply_migrations(fresh_db, directory=tmp_path)
    assert "safe to run again" in info.value.hint
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("select to_regclass('public.half')").fetchone() == (None,)
        assert conn.execute("select to_regclass('public.good')").fetchone() == ("good",)
    assert applied_migrations(fresh_db) == ["20990101000000"]

    bad.write_text("create table public.half (x int);")
    assert apply_migrations(fresh_db, directory=tmp_path) == ["20990101000001"]


def _copy_migrations(directory: Path, versions: list[str] | None = None) -> None:
    directory.mkdir(exist_ok=True)
    for p in migration_files():
        if versions is None or migration_version(p) in versions:
            (directory / p.name).write_bytes(p.read_bytes())


def test_a_renamed_migration_is_refused_like_the_supabase_cli(
    fresh_db: str, tmp_path: Path
) -> None:
    """A project that applied a file under a version the directory no longer has: `supabase db
    push` stops (ErrMissingLocal), so the local runner must too, before running anything."""
    apply_bootstrap(fresh_db)
    first = migration_version(migration_files()[0])
    old = tmp_path / "old"
    _copy_migrations(old, [first])
    (old / "20261122000050_renamed_later.sql").write_text("create table public.r (x int);")
    apply_migrations(fresh_db, directory=old)
    with pytest.raises(MigrationError, match="not found in local migrations directory") as info:
        apply_migrations(fresh_db)
    assert "20261122000050" in str(info.value)
    assert "migration repair --status reverted 20261122000050" in info.value.hint
    assert applied_migrations(fresh_db) == [first, "20261122000050"]  # nothing else ran


def test_a_migration_older_than_the_applied_ones_is_refused_like_the_supabase_cli(
    fresh_db: str, tmp_path: Path
) -> None:
    """A new file numbered before the newest applied one (e.g. into a gap of the numbering):
    `supabase db push` refuses it without --include-all (ErrMissingRemote)."""
    apply_bootstrap(fresh_db)
    apply_migrations(fresh_db)
    newest = migration_version(migration_files()[-1])
    both = tmp_path / "both"
    _copy_migrations(both)
    early = both / "20261122000001_inserted_early.sql"
    early.write_text("create table public.early (x int);")
    late = both / "20991231000000_late.sql"
    late.write_text("create table public.late (x int);")
    with pytest.raises(
        MigrationError, match=f"before the last migration on the database .{newest}"
    ):
        apply_migrations(fresh_db, directory=both)
    with psycopg.connect(fresh_db) as conn:  # refused before anything ran
        assert conn.execute("select to_regclass('public.late')").fetchone() == (None,)
    assert apply_migrations(fresh_db, directory=both, include_all=True) == [
        "20261122000001",
        "20991231000000",
    ]


def test_a_migration_without_a_timestamp_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="timestamp"):
        migration_version(tmp_path / "blueprints.sql")


def test_unreachable_database_is_a_migration_error() -> None:
    with pytest.raises(MigrationError, match="cannot connect"):
        apply_bootstrap("host=/nonexistent-socket-dir port=1 user=postgres connect_timeout=2")


# What a hosted Supabase project owns: the migrations must not create or alter any of it.
_FORBIDDEN = [
    r"\bcreate\s+(role|user)\b",
    r"\balter\s+(role|user)\b",
    r"\bcreate\s+publication\b",
    r"\bdrop\s+publication\b",
    r"\bcreate\s+extension\b",
    r"\bcreate\s+(schema|table|function|view)\s+(if\s+not\s+exists\s+)?(auth|realtime|storage)\.",
    r"\bcreate\s+or\s+replace\s+function\s+(auth|realtime|storage)\.",
    r"\bcreate\s+schema\s+(if\s+not\s+exists\s+)?(auth|realtime|storage|extensions)\b",
    r"\balter\s+table\s+(auth|realtime|storage)\.",
    r"\bgrant\s+\w+(\s*,\s*\w+)*\s+to\s+authenticator\b",
]


# The text of a RAISE's message, detail or hint ('...' || var || '...'): it may quote SQL for
# the operator to run (20261122001500 names the publication fix), which the file never runs.
_RAISE_TEXT = re.compile(
    r"\b(message|detail|hint)\s*=\s*'(?:[^']|'')*'(?:\s*\|\|\s*(?:'(?:[^']|'')*'|\w+))*"
)


@pytest.mark.parametrize("path", migration_files(), ids=lambda p: p.name)
def test_migrations_create_nothing_supabase_owns(path: Path) -> None:
    sql = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8")).lower()
    sql = _RAISE_TEXT.sub(r"\1 = '...'", sql)
    for pattern in _FORBIDDEN:
        assert not re.search(pattern, sql), f"{path.name} matches {pattern}"


def test_security_definer_functions_pin_their_search_path(db: Db) -> None:
    with db.superuser() as conn:
        unsafe = conn.execute(
            "select p.oid::regprocedure::text from pg_proc p"
            " join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname in ('public', 'sync_internal') and p.prosecdef"
            " and not exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%')"
        ).fetchall()
    assert unsafe == []


def test_bootstrap_roles_and_auth_functions(db: Db) -> None:
    with db.superuser() as conn:
        roles = {
            r[0]: tuple(r[1:])
            for r in conn.execute(
                "select rolname, rolcanlogin, rolinherit, rolbypassrls from pg_roles"
                " where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')"
            )
        }
        members = {
            r[0]
            for r in conn.execute(
                "select r.rolname from pg_auth_members m join pg_roles r on r.oid = m.roleid"
                " join pg_roles u on u.oid = m.member where u.rolname = 'authenticator'"
            )
        }
    assert roles["authenticator"] == (True, False, False)
    assert roles["service_role"][2] is True and roles["anon"][0] is False
    assert members == {"anon", "authenticated", "service_role"}

    uid = db.new_user()
    api = db.api(uid)
    assert str(api.scalar("select auth.uid()")) == uid
    assert api.scalar("select auth.role()") == "authenticated"
    assert api.scalar("select auth.jwt() ->> 'sub'") == uid
    assert db.api(None).scalar("select auth.uid()") is None


def test_api_sessions_have_the_hosted_authenticator_limits(db: Db) -> None:
    """On Supabase the login role `authenticator` sets statement_timeout and lock_timeout to
    8 s, and a request keeps them unless its role sets its own: a service_role call stops after
    8 s, and a push queued behind its owner's lock gives up after 8 s with 55P03."""
    show = "select current_setting('statement_timeout'), current_setting('lock_timeout')"
    assert db.api(None, role="service_role").rows(show) == [("8s", "8s")]
    assert db.api(db.new_user()).rows(show) == [("8s", "8s")]


def test_wrong_authenticator_password_is_refused(db: Db, cluster: PostgresCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(cluster.dsn("authenticator", "not-the-password")).close()
    set_authenticator_password(db.superuser_dsn, db.password)  # unchanged, still works
    psycopg.connect(db.authenticator_dsn).close()


# What a project's supabase_realtime may be: Supabase's empty one (the bootstrap's), or none (a
# self-hosted stack without Realtime, or one an operator dropped). One that streams the whole
# schema (FOR ALL TABLES, what some guides tell people to create) is refused:
# test_realtime_publication.py.
_PUBLICATIONS = {
    "empty": "",
    "absent": "drop publication supabase_realtime",
}


@pytest.mark.parametrize("publication", list(_PUBLICATIONS))
def test_the_migrations_deploy_whatever_the_realtime_publication(
    fresh_db: str, publication: str
) -> None:
    """Realtime is only a hint: no publication leaves it off (a notice), and running the files
    again changes neither."""
    apply_bootstrap(fresh_db)
    if _PUBLICATIONS[publication]:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute(_PUBLICATIONS[publication].encode())
    apply_migrations(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for path in migration_files():  # safe to run again, whatever the publication
            with conn.transaction():
                for statement in split_statements(path.read_text(encoding="utf-8")):
                    conn.cursor().execute(statement.encode(), binary=True)
        carried = conn.execute(
            "select p.puballtables, exists (select 1 from pg_publication_tables t"
            " where t.pubname = p.pubname and t.schemaname = 'public' and t.tablename ="
            " 'blueprints') from pg_publication p where p.pubname = 'supabase_realtime'"
        ).fetchall()
        explicit = conn.execute(
            "select count(*) from pg_publication_rel where prrelid = 'public.blueprints'::regclass"
        ).fetchone()
    expected = {"empty": [(False, True)], "absent": []}
    assert carried == expected[publication]
    assert explicit == ((1,) if publication == "empty" else (0,))


def test_blueprints_changes_reach_a_wal2json_slot(db: Db) -> None:
    """What the gateway's realtime does: the publication's table streams through wal2json."""
    uid = db.new_user()
    with db.superuser() as conn:
        published = conn.execute(
            "select count(*) from pg_publication_tables where pubname = 'supabase_realtime'"
            " and schemaname = 'public' and tablename = 'blueprints'"
        ).fetchone()
        assert published == (1,)
        slot = f"t_{uuid.uuid4().hex[:12]}"
        conn.execute("select pg_create_logical_replication_slot(%s, 'wal2json', true)", (slot,))
        c = change(1, path="rt.yaml")
        db.api(uid).push([c])
        rows = conn.execute(
            "select data from pg_logical_slot_get_changes(%s, null, null,"
            " 'format-version', '2', 'include-pk', 'true', 'add-tables', 'public.blueprints')",
            (slot,),
        ).fetchall()
    data = "\n".join(r[0] for r in rows)
    assert '"table":"blueprints"' in data and c["id"] in data


def test_realtime_send_notifies_the_gateway_channel(db: Db) -> None:
    with db.superuser() as listener, db.superuser() as sender:
        listener.execute("listen gw_realtime_send")
        sender.execute("select realtime.send('{\"x\": 1}'::jsonb, 'changed', 'room1', false)")
        note = next(listener.notifies(timeout=5, stop_after=1))
    body = json.loads(note.payload)
    assert body["topic"] == "room1" and body["event"] == "changed" and body["private"] is False
    assert body["payload"]["x"] == 1 and "id" in body["payload"]


def test_contents_compress_with_lz4_where_the_server_has_it(db: Db) -> None:
    with db.superuser() as conn:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("create temp table lz4_probe (c text compression lz4)")
            want = "l"
        except psycopg.errors.FeatureNotSupported:
            want = ""  # the migration keeps the default (pglz) then
        got = conn.execute(
            "select attrelid::regclass::text, attcompression::text from pg_attribute"
            " where attname = 'content'"
            "   and attrelid in ('public.blueprints'::regclass,"
            "                    'public.blueprint_revisions'::regclass)"
            " order by 1"
        ).fetchall()
    assert got == [("blueprint_revisions", want), ("blueprints", want)]


def test_limits_added_to_a_project_with_rows_that_break_them_still_deploy(
    fresh_db: str, tmp_path: Path
) -> None:
    """Migration 20261122000500 adds CHECK constraints to tables a deployed project has filled:
    a row that already breaks one must not fail the deploy (it is reported instead)."""
    apply_bootstrap(fresh_db)
    before = [p for p in migration_files() if migration_version(p) < "20261122000500"]
    for p in before:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    apply_migrations(fresh_db, directory=tmp_path)
    uid = str(uuid.uuid4())
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("insert into auth.users (id, email) values (%s, 'old@example.test')", (uid,))
        conn.execute(
            "insert into public.blueprints (id, owner, path, content_hash, rev, seq, device)"
            " values (gen_random_uuid(), %s, '../old.yaml', 'h', 1, 1, 'd')",
            (uid,),
        )
    notices: list[str] = []
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        for p in migration_files():
            if p not in before:
                conn.execute(p.read_bytes())
        valid: dict[str, bool] = dict(
            conn.execute(
                "select conname, convalidated from pg_constraint"
                " where conname in ('blueprints_path_valid', 'blueprints_content_size')"
            ).fetchall()
        )
    assert valid == {"blueprints_path_valid": False, "blueprints_content_size": True}
    assert any("blueprints_path_valid" in n for n in notices), notices
