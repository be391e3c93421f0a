"""Put the cloud schema into a database: the local bootstrap, then the project's migrations.

``apply_bootstrap`` runs ``bootstrap.sql`` (what a hosted Supabase project already has: roles, the
``auth`` schema, the publication, ``realtime`` stubs). ``apply_migrations`` runs
``sync/supabase/migrations/*.sql`` in name order, each file in its own transaction, and records them
in ``supabase_migrations.schema_migrations`` the way ``supabase db push`` does, so a database
prepared here and one pushed with the CLI agree on what has been applied. It also refuses what the
CLI refuses (supabase/cli ``pkg/migration`` ``FindPendingMigrations``): a recorded version with no
file (a migration renamed or removed after a project applied it), and a new file older than the
newest recorded version (unless ``include_all``, the CLI's ``--include-all``). Without that the
local stack applied both silently, and only the operator's ``db push`` found out. And it runs each
file as the CLI does: ``RESET ALL`` first, then the statements ``sqlsplit.split_statements`` cuts
it into, one extended-protocol query each, in one transaction with the history row (supabase/cli
``pkg/migration`` ``ApplyMigrations``, ``ExecBatch``). Sending a file whole, as ``psql -f`` does,
accepted SQL that ``db push`` cuts in the wrong place.

Both take a session-level advisory lock, so two processes preparing the same database at once
(two test workers, a gateway and a test) serialise instead of racing on CREATE statements.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from sync.localcloud.cluster import LocalCloudError
from sync.localcloud.sqlsplit import split_statements

__all__ = [
    "BOOTSTRAP_PATH",
    "MIGRATIONS_DIR",
    "MigrationError",
    "applied_migrations",
    "apply_bootstrap",
    "apply_migrations",
    "migration_files",
    "migration_version",
    "set_authenticator_password",
]

BOOTSTRAP_PATH = Path(__file__).with_name("bootstrap.sql")
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "migrations"

# Arbitrary constant for pg_advisory_lock: "localstore schema" serialisation.
_SCHEMA_LOCK_KEY = 0x4C53_5343_4845_4D41 & 0x7FFF_FFFF_FFFF_FFFF

# The Supabase CLI's history table (supabase/cli pkg/migration/history.go).
_HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text not null primary key,
  statements text[],
  name text
);
"""


class MigrationError(LocalCloudError):
    """A bootstrap or migration file failed; nothing of that file was applied."""


def migration_files(directory: Path | None = None) -> list[Path]:
    """Return the migration files (default: the project's) in the order they apply, by name."""
    return sorted((directory or MIGRATIONS_DIR).glob("*.sql"), key=lambda p: p.name)


def migration_version(path: Path) -> str:
    """Return the version of a migration file: the digits before the first underscore."""
    version, _, _name = path.stem.partition("_")
    if not version.isdigit():
        raise MigrationError(
            f"migration file name {path.name!r} does not start with a timestamp",
            hint="name migrations <YYYYMMDDHHMMSS>_<name>.sql, as `supabase migration new` does",
        )
    return version


def apply_bootstrap(conninfo: str) -> None:
    """Run bootstrap.sql as a superuser in one transaction (idempotent); raise MigrationError."""
    with _connect(conninfo) as conn, _schema_lock(conn):
        _run_file(conn, BOOTSTRAP_PATH)


def apply_migrations(
    conninfo: str, *, directory: Path | None = None, include_all: bool = False
) -> list[str]:
    """Apply the migrations not yet recorded, in order; return the versions applied now.

    ``directory`` defaults to sync/supabase/migrations. As ``supabase db push``: a recorded
    version without a file, or (unless ``include_all``) an unapplied file older than the newest
    recorded version, raises MigrationError before anything runs.

    Each file runs in its own transaction together with its history row, so a failing file leaves
    neither its objects nor its row behind. Raises MigrationError naming the file.
    """
    applied_now: list[str] = []
    with _connect(conninfo) as conn, _schema_lock(conn):
        with conn.transaction():
            conn.execute(_HISTORY_DDL)
        done = _applied(conn)
        files = migration_files(directory)
        _check_history(done, [migration_version(p) for p in files], include_all=include_all)
        for path in files:
            version = migration_version(path)
            if version in done:
                continue
            _push_file(conn, path, version)
            applied_now.append(version)
    return applied_now


def applied_migrations(conninfo: str) -> list[str]:
    """Return the versions recorded in supabase_migrations.schema_migrations, in order."""
    with _connect(conninfo) as conn:
        exists = conn.execute(
            "select to_regclass('supabase_migrations.schema_migrations') is not null"
        ).fetchone()
        if not exists or not exists[0]:
            return []
        return sorted(_applied(conn))


def set_authenticator_password(conninfo: str, password: str) -> None:
    """Give the ``authenticator`` role a password (scram) so the gateway can log in over TCP."""
    stmt = sql.SQL("alter role authenticator with login password {}").format(sql.Literal(password))
    with _connect(conninfo) as conn:
        try:
            conn.execute(stmt)
        except psycopg.Error as exc:
            raise MigrationError(
                f"could not set the authenticator password: {exc}",
                hint="run apply_bootstrap() first; it creates the role",
            ) from exc


# -- internals ----------------------------------------------------------------------------------


def _connect(conninfo: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as exc:
        raise MigrationError(
            f"cannot connect to the database: {exc}",
            hint="is the cluster running, and is the conninfo a superuser's?",
        ) from exc


@contextmanager
def _schema_lock(conn: psycopg.Connection[tuple[object, ...]]) -> Iterator[None]:
    """Hold the schema advisory lock for the duration of a with-block."""
    conn.execute("select pg_advisory_lock(%s)", (_SCHEMA_LOCK_KEY,))
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("select pg_advisory_unlock(%s)", (_SCHEMA_LOCK_KEY,))


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> set[str]:
    rows = conn.execute("select version from supabase_migrations.schema_migrations").fetchall()
    return {str(r[0]) for r in rows}


def _check_history(done: set[str], local: list[str], *, include_all: bool) -> None:
    """Refuse what ``supabase db push`` refuses (supabase/cli FindPendingMigrations)."""
    missing = sorted(done - set(local))
    if missing:
        raise MigrationError(
            "remote migration versions not found in local migrations directory: "
            + ", ".join(missing),
            hint="a migration file was renamed or removed after this database applied it; if"
            " its contents live on under another version, forget the old one with `supabase"
            " migration repair --status reverted " + " ".join(missing) + "`",
        )
    newest = max(done, default="")
    early = [v for v in local if v not in done and v < newest]
    if early and not include_all:
        raise MigrationError(
            "local migration files to be inserted before the last migration on the database"
            f" ({newest}): " + ", ".join(early),
            hint="give a new migration a version after every released one; to apply these"
            " anyway, rerun with include_all (`supabase db push --include-all`)",
        )


def _run_file(conn: psycopg.Connection[tuple[object, ...]], path: Path) -> None:
    """Execute the bootstrap (several statements, no parameters) in one transaction."""
    text = path.read_text(encoding="utf-8")
    try:
        with conn.transaction():
            # No parameters: psycopg sends the file with the simple query protocol, so it may hold
            # many statements, as psql -f would. Supabase's own setup is not pushed by the CLI.
            conn.execute(text.encode("utf-8"))
    except psycopg.Error as exc:
        raise MigrationError(
            f"{path.name} failed: {_describe(exc)}",
            hint="fix the SQL; the file was rolled back, so it is safe to run again",
        ) from exc


def _push_file(conn: psycopg.Connection[tuple[object, ...]], path: Path, version: str) -> None:
    """Apply one migration file and record it, as ``supabase db push`` does."""
    statements = split_statements(path.read_text(encoding="utf-8"))
    # The CLI resets the session first: a SET in one file does not reach the next.
    conn.execute("reset all")
    done = 0
    try:
        with conn.transaction():
            for statement in statements:
                # binary=True makes psycopg use the extended protocol, as the CLI's batch does:
                # a piece that still holds two statements fails here as it fails there.
                conn.cursor().execute(statement.encode("utf-8"), binary=True)
                done += 1
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name, statements)"
                " values (%s, %s, %s)",
                (version, path.stem.partition("_")[2], statements),
            )
    except psycopg.Error as exc:
        where = (
            f"statement {done + 1} of {len(statements)}: {statements[done][:200]!r}"
            if done < len(statements)
            else "recording it in supabase_migrations.schema_migrations"
        )
        raise MigrationError(
            f"{path.name} failed: {_describe(exc)}; at {where}",
            hint="fix the SQL (the Supabase CLI cuts a file at each ';' outside quotes, comments,"
            " dollar quotes and parentheses, and sends each piece alone); the file was rolled"
            " back, so it is safe to run again",
        ) from exc


def _describe(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [f"{exc.sqlstate or ''} {diag.message_primary or exc}".strip()]
    if diag.message_detail:
        parts.append(f"detail: {diag.message_detail}")
    if diag.context:
        parts.append(f"context: {diag.context.strip().splitlines()[0]}")
    return "; ".join(parts)
