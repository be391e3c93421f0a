"""Fixtures for the local stack: one LocalCloud per xdist worker; tests isolate by fresh users."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from supabase import (
    AsyncClient,
    AsyncClientOptions,
    Client,
    ClientOptions,
    acreate_client,
    create_client,
)

from sync.localcloud.cluster import PostgresNotFoundError, find_bindir
from sync.localcloud.stack import LocalCloud

PASSWORD = "correct-horse-battery"

# A table with REPLICA IDENTITY FULL (so DELETE visibility can be decided) and one without RLS that
# anon may read: both give realtime tests rows they fully control.
_TEST_SCHEMA = """
create table if not exists public.rt_items (
  id uuid primary key default gen_random_uuid(),
  owner uuid not null default auth.uid() references auth.users (id) on delete cascade,
  label text not null,
  data jsonb not null default '{}'::jsonb,
  tags text[] not null default '{}',
  at timestamptz not null default now()
);
alter table public.rt_items enable row level security;
alter table public.rt_items replica identity full;
drop policy if exists rt_items_own on public.rt_items;
create policy rt_items_own on public.rt_items for all to authenticated
  using (owner = (select auth.uid())) with check (owner = (select auth.uid()));
revoke all on public.rt_items from anon;
create table if not exists public.rt_public (id bigserial primary key, label text not null);
grant select on public.rt_public to anon, authenticated;
do $$ begin
  if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                 and tablename = 'rt_items') then
    alter publication supabase_realtime add table public.rt_items, public.rt_public;
  end if;
end $$;
"""


def publish_test_tables(lc: LocalCloud) -> None:
    """Create the realtime test tables in ``lc`` and add them to its publication."""
    with psycopg.connect(lc.superuser_dsn, autocommit=True) as conn:
        conn.execute(_TEST_SCHEMA)


def _require_postgres() -> None:
    try:
        find_bindir()
    except PostgresNotFoundError as exc:
        pytest.fail(f"the cloud tests need PostgreSQL: {exc}")


@pytest.fixture(scope="session")
def cloud() -> Iterator[LocalCloud]:
    """The worker's local Supabase-compatible stack."""
    _require_postgres()
    with LocalCloud() as lc:
        publish_test_tables(lc)
        yield lc
    # (No gateway thread may outlive the session: tests/conftest.py checks after every stack.)


@pytest.fixture(scope="module")
def trigger_cloud() -> Iterator[LocalCloud]:
    """A stack of its own whose changes come through the trigger + NOTIFY fallback (a server
    without wal2json), with the test tables published."""
    _require_postgres()
    with LocalCloud(change_source="trigger") as lc:
        publish_test_tables(lc)
        lc.restart_gateway()  # (the feed puts its triggers on the tables published when it starts)
        yield lc


@dataclass
class User:
    """A fresh confirmed user."""

    id: str
    email: str
    password: str = PASSWORD


@pytest.fixture
def make_user(cloud: LocalCloud) -> Iterator[object]:
    """Create fresh users (unique emails) through the admin endpoint."""

    def make() -> User:
        email = f"u-{uuid.uuid4().hex[:12]}@example.test"
        return User(cloud.create_user(email, PASSWORD), email)

    yield make


@pytest.fixture
def user(make_user) -> User:
    return make_user()


@pytest.fixture
def other_user(make_user) -> User:
    return make_user()


@pytest.fixture
def new_client(cloud: LocalCloud) -> Iterator[object]:
    """Build sync clients (auto refresh off: no timer threads outlive a test); sign out at the end."""
    made: list[Client] = []
    sessions: list[httpx.Client] = []

    def make(*, sign_in: User | None = None, key: str | None = None, **opts: object) -> Client:
        # Our own httpx client: closed below (no ResourceWarning), and without it postgrest-py
        # warns that its timeout argument is deprecated.
        http = httpx.Client(timeout=30)
        sessions.append(http)
        options = ClientOptions(auto_refresh_token=False, httpx_client=http, **opts)  # type: ignore[arg-type]
        client = create_client(cloud.url, key or cloud.anon_key, options)
        made.append(client)
        if sign_in is not None:
            client.auth.sign_in_with_password(
                {"email": sign_in.email, "password": sign_in.password}
            )
        return client

    yield make
    for client in made:
        client.auth._remove_session()  # no network: the test may have stopped the server
    for http in sessions:
        http.close()


async def async_client(cloud: LocalCloud) -> tuple[AsyncClient, httpx.AsyncClient]:
    """An async client on its own httpx session (close both with close_async)."""
    http = httpx.AsyncClient(timeout=30)
    options = AsyncClientOptions(auto_refresh_token=False, httpx_client=http)
    return await acreate_client(cloud.url, cloud.anon_key, options), http


async def close_async(client: AsyncClient, http: httpx.AsyncClient) -> None:
    """Close an async client's realtime socket and HTTP session."""
    await client.remove_all_channels()
    await client.realtime.close()
    await http.aclose()


def forge(cloud: LocalCloud, claims: dict, *, secret: str | None = None) -> str:
    """Sign arbitrary claims (the test plays an attacker or an old client)."""
    return jwt.encode(claims, secret or cloud.jwt_secret, algorithm="HS256")


def user_claims(user_id: str, *, exp_in: int = 3600) -> dict:
    now = int(time.time())
    return {
        "sub": user_id,
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + exp_in,
    }


def change(
    path: str,
    *,
    op_id: int,
    base_rev: int | None = None,
    content: str = "a: 1\n",
    row_id: str | None = None,
    deleted: bool = False,
) -> dict:
    """One push_changes entry."""
    import hashlib

    return {
        "op_id": op_id,
        "id": row_id or str(uuid.uuid4()),
        "base_rev": base_rev,
        "path": path,
        "content": "" if deleted else content,
        "meta": {"name": path},
        "content_hash": hashlib.sha256(content.encode()).hexdigest(),
        "deleted": deleted,
    }


def obj(value: object) -> dict[str, Any]:
    """``value``, part of a PostgREST answer, as the JSON object it must be.

    The client types ``APIResponse.data`` as ``list[JSON]`` whatever the RPC returns; this narrows
    it for the type checker, and a value of another shape fails here, shown in full.
    """
    assert isinstance(value, dict), value
    return value


def rows(value: object) -> list[dict[str, Any]]:
    """``value``, a PostgREST answer, as the list of JSON objects it must be (see :func:`obj`)."""
    assert isinstance(value, list) and all(isinstance(r, dict) for r in value), value
    return value
