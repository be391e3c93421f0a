"""localstore_schema_version(): what a client reads to refuse a cloud schema older than it needs."""

from __future__ import annotations

import psycopg
import pytest

from sync.localcloud.schema import migration_files, migration_version
from sync.supabase_remote import NEEDED_MIGRATIONS

from .helpers import Db

RPC = "select public.localstore_schema_version()"


def test_it_answers_the_newest_migration_that_replaces_it(db: Db) -> None:
    """The convention of 20261122000900: each migration clients need replaces the function to
    answer its own timestamp, so the answer is the newest file that defines it."""
    defining = [p for p in migration_files() if "localstore_schema_version()" in p.read_text()]
    assert defining, "no migration defines localstore_schema_version()"
    assert db.api(db.new_user()).scalar(RPC) == int(migration_version(defining[-1]))


def test_the_client_needs_exactly_what_the_migrations_provide(db: Db) -> None:
    """A client needing a later schema than the project's own migrations would refuse every
    project; one needing an older one would not notice a missing migration it relies on."""
    assert set(NEEDED_MIGRATIONS) <= {p.name for p in migration_files()}
    assert list(NEEDED_MIGRATIONS) == sorted(NEEDED_MIGRATIONS)
    newest = int(NEEDED_MIGRATIONS[-1].partition("_")[0])
    assert db.api(db.new_user()).scalar(RPC) == newest


def test_anon_cannot_ask_it(db: Db) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.api(None).scalar(RPC)
