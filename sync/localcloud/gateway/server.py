"""The gateway process: one aiohttp application serving ``/rest/v1``, ``/auth/v1`` and
``/realtime/v1`` on 127.0.0.1, plus its background tasks (change feed, NOTIFY listener).

``Gateway`` is the asyncio object (``await start()`` / ``await stop()``); ``GatewayThread`` runs one
on a private event loop in a background thread for synchronous callers (tests, ``LocalCloud``).
Stopping closes, in order: the listening socket (after the connections it already accepted are
set up, see ``Gateway._stop_accepting``), open websockets, in-flight requests, the change feed (its
connection, and with it the temporary replication slot), the listener and both pools.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiohttp import web

from sync.localcloud.gateway.catalog import Catalog
from sync.localcloud.gateway.changes import NOTIFY_CHANNEL, TriggerChangeFeed, WalChangeFeed
from sync.localcloud.gateway.db import Database
from sync.localcloud.gateway.gotrue import AuthSettings, GoTrueHandler
from sync.localcloud.gateway.keys import ProjectKeys
from sync.localcloud.gateway.listener import NotifyListener
from sync.localcloud.gateway.postgrest import PostgrestHandler
from sync.localcloud.gateway.realtime import DEFAULT_IDLE_TIMEOUT_S, RealtimeHub
from sync.localcloud.gateway.visibility import Visibility

log = logging.getLogger(__name__)

BROADCAST_CHANNEL = "gw_realtime_send"
RELOAD_CHANNEL = "pgrst"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs; ``port=0`` picks a free port."""

    authenticator_dsn: str
    admin_dsn: str
    keys: ProjectKeys
    host: str = "127.0.0.1"
    port: int = 0
    access_token_ttl: int = 3600
    refresh_reuse_interval: int = 0
    schemas: tuple[str, ...] = ("public",)
    change_source: str = "auto"  # "wal2json" | "trigger" | "auto" (wal2json when installed)
    poll_interval: float = 0.05
    pool_size: int = 8
    realtime_idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S  # (tests shorten it)
    extra: dict[str, Any] = field(default_factory=dict)


class Gateway:
    """The asyncio gateway; create, ``await start()``, use ``url``, ``await stop()``."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.db = Database(
            authenticator_dsn=config.authenticator_dsn,
            admin_dsn=config.admin_dsn,
            max_size=config.pool_size,
        )
        self.catalog = Catalog(self.db.admin)
        self.visibility = Visibility(self.db)
        self.hub = RealtimeHub(
            config.keys, self.visibility, idle_timeout_s=config.realtime_idle_timeout_s
        )
        self.feed: WalChangeFeed | TriggerChangeFeed | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._listener: NotifyListener | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` once started."""
        if self.port is None:
            raise RuntimeError("the gateway is not running")
        return f"http://{self.config.host}:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        auth = AuthSettings(
            access_token_ttl=self.config.access_token_ttl,
            refresh_reuse_interval=self.config.refresh_reuse_interval,
            issuer=f"http://{self.config.host}:{self.config.port or 0}/auth/v1",
        )
        rest = PostgrestHandler(
            self.db, self.catalog, self.config.keys, schemas=self.config.schemas
        )
        app.add_routes(GoTrueHandler(self.db, self.config.keys, auth).routes())
        app.add_routes(self.hub.routes())
        app.add_routes(rest.routes())
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.hub.close()

    async def start(self) -> None:
        """Open pools, start the change feed and listener, then serve; raise on failure."""
        try:
            await self.db.open()
            await self._start_feed()
            await self._start_listener()
            self._runner = web.AppRunner(self._app(), handle_signals=False, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
            await site.start()
            server = site._server
            assert server is not None and isinstance(server, asyncio.base_events.Server)
            self._server = server
            self.port = int(server.sockets[0].getsockname()[1])
        except BaseException:
            await self.stop()
            raise
        log.info("gateway listening on %s (changes via %s)", self.url, type(self.feed).__name__)

    async def _start_feed(self) -> None:
        source = self.config.change_source
        if source == "auto":
            source = "wal2json" if await self._has_wal2json() else "trigger"
        sink = self.hub.deliver_changes
        if source == "wal2json":
            self.feed = WalChangeFeed(
                self.config.admin_dsn,
                sink,
                interval=self.config.poll_interval,
                listening=self.hub.listening,
                on_reconnect=self._feed_reconnected,
            )
            self.hub.on_subscribe.append(self.feed.poke)
        else:
            self.feed = TriggerChangeFeed(self.config.admin_dsn, sink)
        await self.feed.start()

    async def _has_wal2json(self) -> bool:
        async with self.db.admin.connection() as conn:
            try:
                # Loading the plugin is the only reliable test (it may be missing on disk).
                await conn.execute(
                    "select pg_drop_replication_slot(slot) from"
                    " (select (pg_create_logical_replication_slot('gw_probe_' || pg_backend_pid(),"
                    " 'wal2json', true)).slot_name as slot) s"
                )
            except psycopg.errors.UndefinedFile:
                return False
        return True

    async def _start_listener(self) -> None:
        self._listener = NotifyListener(
            self.config.admin_dsn,
            (BROADCAST_CHANNEL, RELOAD_CHANNEL, NOTIFY_CHANNEL),
            self._on_notify,
            on_reconnect=self._listener_reconnected,
        )
        await self._listener.start()

    async def _listener_reconnected(self) -> None:
        """Make up for the notifications lost while the listener was away."""
        await self.db.check()  # a restart broke the pools' idle connections too
        await self._reload_schema()  # a reload asked for meanwhile was missed
        if isinstance(self.feed, TriggerChangeFeed):  # (the WAL feed reports its own losses)
            await self.hub.changes_lost()

    async def _feed_reconnected(self) -> None:
        await self.db.check()
        await self.hub.changes_lost()

    async def _reload_schema(self) -> None:
        """Forget cached schema facts (``NOTIFY pgrst``, as PostgREST's schema cache reload)."""
        self.catalog.clear()
        self.visibility.clear()
        await self.db.load_role_settings()

    async def _on_notify(self, channel: str, payload: str) -> None:
        try:
            if channel == BROADCAST_CHANNEL:
                await self.hub.deliver_db_broadcast(payload)
            elif channel == RELOAD_CHANNEL:
                await self._reload_schema()
            elif channel == NOTIFY_CHANNEL and isinstance(self.feed, TriggerChangeFeed):
                await self.feed.on_notify(payload)
        except Exception:  # one notification must not end the listener
            # The listener serves every socket (broadcasts, trigger-feed changes, schema
            # reloads), and whatever escaped here ended it for good: a RecursionError from a
            # payload nested 2,000 deep did, unseen, as none of the errors once listened for.
            log.exception("gateway: handling NOTIFY %s failed; going on", channel)

    async def stop(self) -> None:
        """Stop serving and release every task, connection, pool and the replication slot."""
        if self._runner is not None:
            await self._stop_accepting()
            # aiohttp's shutdown clears its connection table without closing a transport whose
            # request is mid-flight; remember them all and abort whatever is still open after it.
            server = self._runner.server
            transports = list(getattr(server, "_connections", {}).values()) if server else []
            await self._runner.cleanup()
            self._runner = None
            for transport in transports:
                transport.abort()  # closing ones too (see _drain)
        await self.hub.close()
        if self.feed is not None:
            await self.feed.stop()
            self.feed = None
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        await self.db.close()
        self._server = None
        self.port = None

    async def _stop_accepting(self) -> None:
        """Stop accepting, then let every connection already accepted get its transport.

        asyncio accepts in a reader callback and builds the transport in a task
        (``_accept_connection2``) one loop turn later. aiohttp's cleanup closes the
        ``asyncio.Server`` first; a transport built after that fails in ``Server._attach()``
        (``assert self._sockets is not None``), and asyncio (3.11) swallows the error without
        closing the accepted socket. That socket is then in no transport table and no handler:
        it lives until the garbage collector finds it, after this loop is gone (CPython gh-109564,
        gh-155934). So only unregister the listening sockets here (no new accepts; the kernel
        resets whatever is still in the backlog when cleanup closes them) and wait for the pending
        accept tasks: their connections join aiohttp's table and are closed by its shutdown.
        """
        server = self._server
        if server is None:
            return
        loop = asyncio.get_running_loop()
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
        # Matched by name: asyncio keeps no other handle on them. Their first step is already
        # queued, and each ends once the protocol's connection_made has run.
        accepting = [
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__name__", "") == "_accept_connection2"
        ]
        if accepting:
            await asyncio.wait(accepting, timeout=5.0)


class GatewayThread:
    """Run a Gateway on its own event loop in a background thread (start/stop/join)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.gateway: Gateway | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The running gateway's URL."""
        if self.gateway is None:
            raise RuntimeError("the gateway is not running")
        return self.gateway.url

    @property
    def port(self) -> int:
        """The running gateway's port."""
        if self.gateway is None or self.gateway.port is None:
            raise RuntimeError("the gateway is not running")
        return self.gateway.port

    def start(self, timeout: float = 30.0) -> None:
        """Start the loop thread and the gateway; re-raise a startup failure here."""
        if self._thread is not None:
            raise RuntimeError("the gateway thread is already running")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name="localcloud-gateway", daemon=True
        )
        self._thread.start()
        gateway = Gateway(self.config)
        future = asyncio.run_coroutine_threadsafe(gateway.start(), loop)
        try:
            future.result(timeout)
        except BaseException:
            self._finish_loop()
            raise
        self.gateway = gateway

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the gateway's loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the gateway, then the loop, and join the thread."""
        if self._loop is None:
            return
        if self.gateway is not None:
            try:
                self.call(self.gateway.stop(), timeout)
            except concurrent.futures.TimeoutError:
                log.error("gateway: stop timed out after %.0f s", timeout)
            self.gateway = None
        self._finish_loop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the loop thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _finish_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        # Closing a transport only schedules the socket's close on the loop: cancel what is left
        # and give those callbacks one turn, or a client's keep-alive socket outlives the loop
        # (a ResourceWarning, and a leaked fd in a long-running stack).
        loop.run_until_complete(_drain())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        self._loop = None
        self._thread = None


async def _drain() -> None:
    """Cancel the tasks left on the loop and let pending close callbacks run."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # A client connection that lost its handler in aiohttp's shutdown (one mid-request, say) may
    # still hold a transport; the gateway is gone, so abort whatever sockets the loop still holds.
    loop = asyncio.get_running_loop()
    # Closing ones too: a close() with unsent data waits for the peer to read it, which a client
    # that stopped reading never does (abort() on a transport already gone is a no-op).
    for transport in list(getattr(loop, "_transports", {}).values()):
        if transport is not None:
            transport.abort()
    await asyncio.sleep(0.05)
