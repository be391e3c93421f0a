"""Callers for the cloud schema tests: superuser access, users, and PostgREST-like API calls.

``Api`` mirrors one PostgREST request per call: a connection logged in as ``authenticator`` over
TCP (scram), ``BEGIN``, ``set_config('role', ...)``, ``set_config('request.jwt.claims', ...)``,
the function call, ``COMMIT``.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from sync.localcloud.cluster import PostgresCluster


@dataclass
class Db:
    """The prepared database: superuser access plus a factory for API callers."""

    cluster: PostgresCluster
    password: str
    _conns: list[psycopg.Connection[Any]] = field(default_factory=list)

    @property
    def superuser_dsn(self) -> str:
        return self.cluster.superuser_dsn

    @property
    def authenticator_dsn(self) -> str:
        return self.cluster.dsn("authenticator", self.password)

    def superuser(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.superuser_dsn, autocommit=True)
        self._conns.append(conn)
        return conn

    def new_user(self, email: str | None = None) -> str:
        """Create a user the way GoTrue does (a row in auth.users); return its id."""
        uid = str(uuid.uuid4())
        with psycopg.connect(self.superuser_dsn, autocommit=True) as conn:
            conn.execute(
                "insert into auth.users (id, email, aud, role) values (%s, %s, %s, %s)",
                (uid, email or f"{uid}@example.test", "authenticated", "authenticated"),
            )
        return uid

    def api(self, user: str | None, *, role: str | None = None) -> Api:
        """A PostgREST-like caller: ``user`` None means anon."""
        conn = psycopg.connect(self.authenticator_dsn, autocommit=True)
        self._conns.append(conn)
        return Api(conn, user, role or ("authenticated" if user else "anon"))

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns.clear()


class Api:
    """Calls the sync RPCs as one user, one transaction per call, like PostgREST."""

    def __init__(self, conn: psycopg.Connection[Any], user: str | None, role: str) -> None:
        self.conn = conn
        self.user = user
        self.role = role

    @property
    def claims(self) -> str:
        claims: dict[str, Any] = {"role": self.role}
        if self.user is not None:
            claims.update(sub=self.user, aud="authenticated")
        return json.dumps(claims)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """BEGIN + PostgREST's set_config batch; COMMIT on exit (ROLLBACK on error)."""
        with self.conn.transaction():
            self.conn.execute(
                "select set_config('search_path', '\"public\", \"public\"', true),"
                " set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                (self.role, self.claims),
            )
            yield self.conn

    def scalar(self, query: Any, params: Any = None) -> Any:
        with self.transaction() as conn:
            row = conn.execute(query, params).fetchone()
            return None if row is None else row[0]

    def rows(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        with self.transaction() as conn:
            return conn.execute(query, params).fetchall()

    def push(self, changes: list[dict[str, Any]], device: str = "dev-a") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.scalar(
            "select public.push_changes(changes := %s, device := %s)", (Jsonb(changes), device)
        )
        return result

    def pull(self, since: int, lim: int | None = None) -> dict[str, Any]:
        if lim is None:
            return self.scalar("select public.pull_changes(since := %s::bigint)", (since,))
        return self.scalar(
            "select public.pull_changes(since := %s::bigint, lim := %s::int)", (since, lim)
        )

    def verify(self, after: str | None = None, lim: int | None = None) -> dict[str, Any]:
        return self.scalar(
            "select public.verify_rows(after := %s::uuid, lim := coalesce(%s::int, 1000))",
            (after, lim),
        )

    def fetch(self, ids: list[str]) -> list[dict[str, Any]]:
        return self.scalar("select public.fetch_rows(ids := %s::uuid[])", (ids,))

    def fetch_page(self, ids: list[str]) -> dict[str, Any]:
        return self.scalar("select public.fetch_rows_page(ids := %s::uuid[])", (ids,))

    def purge(self, older_than: timedelta = timedelta(0)) -> int:
        return self.scalar("select public.purge_tombstones(older_than := %s)", (older_than,))

    def server_info(self) -> dict[str, Any]:
        return self.scalar("select public.server_info()")


def change(
    op_id: int,
    id: str | None = None,
    *,
    base_rev: int | None = None,
    path: str | None = None,
    content: str = "name: x\n",
    meta: dict[str, Any] | None = None,
    content_hash: str | None = None,
    deleted: bool = False,
) -> dict[str, Any]:
    """One change in the wire shape (a create unless base_rev is given)."""
    rid = id or str(uuid.uuid4())
    return {
        "op_id": op_id,
        "id": rid,
        "base_rev": base_rev,
        "path": path or f"folder/{rid}.blueprint.yaml",
        "content": "" if deleted else content,
        "meta": meta if meta is not None else {"name": "x"},
        "content_hash": content_hash or secrets.token_hex(32),
        "deleted": deleted,
    }


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll a database condition (another backend's lock wait has no event to listen to)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def catalog_fingerprint(dsn: str) -> tuple[object, ...]:
    """Counts of what the schema defines, to show a re-run adds and drops nothing."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """
            select
              (select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname in ('public', 'sync_internal', 'auth', 'realtime')),
              (select count(*) from pg_policies),
              (select count(*) from pg_trigger where not tgisinternal),
              (select count(*) from pg_indexes where schemaname in ('public', 'auth')),
              (select count(*) from pg_publication_tables where pubname = 'supabase_realtime'),
              (select string_agg(relname || ':' || relrowsecurity::text, ',' order by relname)
               from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r'),
              -- Definitions and grants, not only counts: re-running an older file alone would
              -- put back a function a later file replaced (run them all, in order).
              (select string_agg(md5(pg_get_functiondef(p.oid)) || coalesce(p.proacl::text, ''),
                                 ',' order by p.oid::regprocedure::text)
               from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname in ('public', 'sync_internal') and p.prokind = 'f'),
              (select string_agg(relname || coalesce(relacl::text, ''), ',' order by relname)
               from pg_class where relnamespace in ('public'::regnamespace,
                                                    'sync_internal'::regnamespace)),
              (select string_agg(conname || convalidated::text, ',' order by conname)
               from pg_constraint where connamespace = 'public'::regnamespace),
              (select string_agg(policyname || coalesce(qual, '') || coalesce(with_check, ''),
                                 ',' order by policyname) from pg_policies)
            """
        ).fetchone()
    assert row is not None
    return tuple(row)
