"""The gateway's NOTIFY listener: one connection that LISTENs on a few channels, kept alive.

Whatever ends that connection (Postgres restarted, its backend terminated, an idle-session
timeout) ends the notifications with it. Before this module nothing noticed: broadcasts, the
trigger feed's changes and schema reloads stayed silent for good while the gateway answered
everything else. Now the loss is logged once, the connection is rebuilt with backoff (one try
every few seconds (``db.connect_with_backoff``) while Postgres is down, each failure at DEBUG only), the
channels are LISTENed again, and ``on_reconnect`` runs. Notifications sent in between are lost
(NOTIFY has no replay), so that callback makes up for them (the gateway reloads its schema cache
and tells realtime clients to re-read).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from sync.localcloud.gateway.db import connect_with_backoff, run_reconnect_hook, stop_loop

log = logging.getLogger(__name__)

APPLICATION_NAME = "localcloud-gateway-listen"  # how pg_stat_activity shows the connection

NotifyHandler = Callable[[str, str], Awaitable[None]]


class NotifyListener:
    """LISTEN on ``channels`` and hand each notification to ``on_notify``; reconnect when lost."""

    def __init__(
        self,
        dsn: str,
        channels: Sequence[str],
        on_notify: NotifyHandler,
        *,
        on_reconnect: Callable[[], Awaitable[None]],
    ) -> None:
        self.dsn = dsn
        self.channels = tuple(channels)
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and LISTEN; notifications sent after this returns are delivered. Raises
        psycopg.OperationalError when Postgres cannot be reached."""
        self._conn = await self._connect()
        self._task = asyncio.create_task(self._run(), name="gateway-listen")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        await stop_loop(self)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name=APPLICATION_NAME
        )
        try:
            for channel in self.channels:
                await conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _run(self) -> None:
        while True:
            assert self._conn is not None
            lost = await self._receive(self._conn)
            began = time.monotonic()
            log.warning("gateway: the NOTIFY listener lost its connection (%s); reconnecting", lost)
            await self._conn.close()
            self._conn = await connect_with_backoff(self._connect, "the NOTIFY listener")
            log.info(
                "gateway: the NOTIFY listener reconnected after %.1f s (notifications sent "
                "meanwhile are lost)",
                time.monotonic() - began,
            )
            await run_reconnect_hook(self.on_reconnect, "the NOTIFY listener")

    async def _receive(self, conn: psycopg.AsyncConnection[Any]) -> psycopg.OperationalError:
        """Deliver notifications until the connection fails; return why it did."""
        try:
            while True:
                async for note in conn.notifies(timeout=1.0):
                    await self.on_notify(note.channel, note.payload)
        except psycopg.OperationalError as exc:
            return exc
