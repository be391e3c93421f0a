"""Fixtures for the cloud schema tests: one real PostgreSQL cluster per xdist worker, prepared with
the local bootstrap and the project's migrations once per session."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

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


@pytest.fixture
def db(cluster: PostgresCluster, prepared: str) -> Iterator[Db]:
    d = Db(cluster, prepared)
    try:
        yield d
    finally:
        d.close()
