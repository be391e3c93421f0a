"""Fixtures for the cloud schema tests: one real PostgreSQL cluster per xdist worker, prepared with
the local bootstrap and the project's migrations once per session."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sync.localcloud.cluster import PostgresCluster
from sync.localcloud.schema import (
    apply_bootstrap,
    apply_migrations,
    set_authenticator_password,
)

from .helpers import Db


@pytest.fixture(scope="session")
def cluster() -> Iterator[PostgresCluster]:
    """One throw-away cluster per test session (= per xdist worker)."""
    with PostgresCluster() as c:
        yield c


@pytest.fixture(scope="session")
def prepared(cluster: PostgresCluster) -> str:
    """Bootstrap + migrations applied once per session; returns the authenticator password."""
    apply_bootstrap(cluster.superuser_dsn)
    apply_migrations(cluster.superuser_dsn)
    password = secrets.token_urlsafe(16)
    set_authenticator_password(cluster.superuser_dsn, password)
    return password


_ROUTINES = (
    "select md5(string_agg(p.oid::regprocedure::text || pg_get_functiondef(p.oid), '' order by"
    " p.oid::regprocedure::text)) from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
    " where n.nspname in ('public', 'sync_internal') and p.prokind in ('f', 'p')"
)


def _routines(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(_ROUTINES).fetchone()
    return str(row[0] if row else "")


@pytest.fixture(scope="session")
def deployed_routines(cluster: PostgresCluster, prepared: str) -> str:
    """The session database's functions as the migrations made them (a fingerprint)."""
    return _routines(cluster.superuser_dsn)


@pytest.fixture
def db(cluster: PostgresCluster, prepared: str, deployed_routines: str) -> Iterator[Db]:
    d = Db(cluster, prepared)
    try:
        yield d
    finally:
        d.close()
    # A test that ran a migration file again in the shared database put that file's version of
    # push_changes back over a later migration's: every later test of the worker then checked
    # the old function (two push tests passed that way against 20261122000800's for a day).
    assert _routines(cluster.superuser_dsn) == deployed_routines, (
        "this test changed the session database's functions; run migration files in a "
        "database of its own (the fresh_db fixture)"
    )


@contextmanager
def new_database(cluster: PostgresCluster) -> Iterator[str]:
    """An empty database in the cluster (roles, being cluster-wide, already exist)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.superuser_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    params = conninfo_to_dict(cluster.superuser_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)  # type: ignore[arg-type]
    finally:
        with psycopg.connect(cluster.superuser_dsn, autocommit=True) as conn:
            conn.execute(f'drop database "{name}" with (force)')


@pytest.fixture
def fresh_db(cluster: PostgresCluster, prepared: str) -> Iterator[str]:
    """An empty database in the session's cluster; returns its conninfo."""
    with new_database(cluster) as dsn:
        yield dsn


@pytest.fixture
def other_fresh_db(cluster: PostgresCluster, prepared: str) -> Iterator[str]:
    """A second empty database, for tests that compare two."""
    with new_database(cluster) as dsn:
        yield dsn
