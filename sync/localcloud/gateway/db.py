"""Connection pools and the per-request transaction PostgREST runs.

Every API request borrows one ``authenticator`` connection and runs, as PostgREST does
(``Query/PreQuery.hs``): ``BEGIN [READ ONLY]``; one ``select set_config(...)`` batch for the search
path, the role's own ``statement_timeout``, the role, the JWT claims and the request method, path and
headers (all transaction-local); the statement; ``COMMIT``. Nothing survives on the connection, so the
pool can hand it to any other caller next.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

# GUCs from pg_db_role_setting that PostgREST re-applies after switching role (the login role's
# settings are the authenticator's, not the impersonated role's).
_ROLE_GUCS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")

T = TypeVar("T")

RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0


def reconnect_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed connects in a row: 0.2 doubling to 5."""
    # (The exponent is capped: 2 ** 1024 does not fit a float, and the OverflowError after
    # ~1,025 failures in a row (the database down for about 1.5 hours) once ended the change feed.)
    return min(RECONNECT_FIRST_S * 2 ** min(max(failures - 1, 0), 8), RECONNECT_MAX_S)


async def connect_with_backoff(connect: Callable[[], Awaitable[T]], what: str) -> T:
    """Call ``connect`` until it succeeds: at once, then every :func:`reconnect_delay` seconds.

    Each failure is logged at DEBUG only: Postgres may be down for hours, and the caller logs
    the loss and the recovery once each."""
    failures = 0
    while True:
        try:
            return await connect()
        except psycopg.OperationalError as exc:
            failures += 1
            log.debug("gateway: %s cannot reconnect yet (%d tries): %s", what, failures, exc)
        await asyncio.sleep(reconnect_delay(failures))


async def run_reconnect_hook(hook: Callable[[], Awaitable[None]], what: str) -> None:
    """Run what makes up for a lost connection; its failure is logged, never fatal."""
    try:
        await hook()
    except Exception:  # the caller's loop serves every client and must go on
        # (Postgres may be gone again already: the next loss reconnects and runs it again.)
        log.exception("gateway: catching up after %s reconnected failed", what)


class _ConnectionLoop(Protocol):
    _task: asyncio.Task[None] | None
    _conn: psycopg.AsyncConnection[Any] | None


async def stop_loop(owner: _ConnectionLoop) -> None:
    """Cancel ``owner``'s loop and wait for it to end, then close its connection (the one it
    holds then: the loop may have reconnected); either may be None (never started, or stopped).
    The NOTIFY listener's and the change feed's stop."""
    if owner._task is not None:
        owner._task.cancel()
        await asyncio.gather(owner._task, return_exceptions=True)
        owner._task = None
    if owner._conn is not None:
        await owner._conn.close()
        owner._conn = None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a request exposes to SQL through ``current_setting('request.*')``."""

    role: str
    claims: dict[str, Any]
    method: str
    path: str
    headers: dict[str, str]
    schema: str


class Database:
    """Two pools: ``authenticator`` for API requests, superuser for auth/realtime bookkeeping."""

    def __init__(
        self, *, authenticator_dsn: str, admin_dsn: str, max_size: int = 8, admin_max_size: int = 4
    ) -> None:
        self.authenticator_dsn = authenticator_dsn
        self.admin_dsn = admin_dsn
        self.api = AsyncConnectionPool(
            authenticator_dsn,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            open=False,
            name="gateway-api",
        )
        self.admin = AsyncConnectionPool(
            admin_dsn,
            min_size=1,
            max_size=admin_max_size,
            kwargs={"autocommit": True},
            open=False,
            name="gateway-admin",
        )
        self._role_settings: dict[str, list[tuple[str, str]]] = {}

    async def open(self) -> None:
        """Open both pools and wait until each has a working connection."""
        await self.api.open(wait=True, timeout=30)
        await self.admin.open(wait=True, timeout=30)
        await self.load_role_settings()

    async def close(self) -> None:
        """Close both pools (their connections end)."""
        await self.api.close()
        await self.admin.close()

    async def check(self) -> None:
        """Replace the pools' idle connections that no longer work (after Postgres restarted).

        A pool hands out an idle connection without testing it, so after a restart each one
        failed the request that drew it; checking them all costs a round trip each, once."""
        await self.api.check()
        await self.admin.check()

    async def load_role_settings(self) -> None:
        """Cache the per-role GUCs PostgREST applies after ``SET ROLE``."""
        query = """
            select r.rolname, s.setconfig
            from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
            where s.setdatabase in (0, (select oid from pg_database where datname = current_database()))
        """
        settings: dict[str, list[tuple[str, str]]] = {}
        async with self.admin.connection() as conn:
            rows = await (await conn.execute(query)).fetchall()
        for rolname, setconfig in rows:
            for item in setconfig or []:
                name, _, value = str(item).partition("=")
                if name in _ROLE_GUCS:
                    settings.setdefault(rolname, []).append((name, value))
        self._role_settings = settings

    @asynccontextmanager
    async def request_tx(
        self, info: RequestInfo, *, read_only: bool
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Run a block inside PostgREST's request transaction; COMMIT on success, else ROLLBACK."""
        async with self.api.connection() as conn:
            await conn.execute("BEGIN READ ONLY" if read_only else "BEGIN")
            try:
                await conn.execute(*self._set_config_query(info))
                yield conn
            except BaseException:
                await _rollback_quietly(conn)
                raise
            await conn.execute("COMMIT")

    def _set_config_query(self, info: RequestInfo) -> tuple[sql.Composed, list[str]]:
        claims = dict(info.claims)
        claims["role"] = info.role
        pairs: list[tuple[str, str]] = [("search_path", f'"{info.schema}", "public"')]
        pairs += self._role_settings.get(info.role, [])
        pairs += [
            ("role", info.role),
            ("request.jwt.claims", json.dumps(claims)),
            ("request.method", info.method),
            ("request.path", info.path),
            ("request.headers", json.dumps(info.headers)),
        ]
        parts = [sql.SQL("set_config({}, %s, true)").format(sql.Literal(name)) for name, _ in pairs]
        query = sql.SQL("select ") + sql.SQL(", ").join(parts)
        return query, [value for _, value in pairs]


async def _rollback_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    """Roll back after a failure; a broken connection is discarded by the pool anyway."""
    if conn.closed or conn.broken:
        return
    try:
        await conn.execute("ROLLBACK")
    except psycopg.OperationalError as exc:
        log.warning("rollback failed on a request connection: %s", exc)
