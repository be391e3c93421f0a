"""The daemon's control API: a token-protected websocket on 127.0.0.1, and its Python client.

Wire format (one JSON object per text frame)::

    request   {"id": 7, "op": "status", "args": {...}}           args optional
    reply     {"id": 7, "ok": true, "result": ...}
              {"id": 7, "ok": false, "error": {"code": "unknown_op", "message": "..."}}
    event     {"event": "saved", "seq": 12, "ts": "...", "data": {...}}   after "subscribe"

Ops: ``auth`` (token in the first message), ``ping``, ``status``, ``sync`` (``{"wait": true}``
runs a cycle and returns its report), ``pause``, ``resume``, ``metrics``, ``stop`` (a clean
shut-down, as SIGTERM: the one way to ask for it on Windows), ``subscribe``
(``{"events": [...]}`` filters by name), ``unsubscribe``. Events: ``saved``, ``deleted``,
``moved``, ``invalid``, ``conflict``, ``sync`` (state and progress), ``error``, ``dropped``,
``shutdown``; and ``events_lost``, made by the client itself (not sent by the server) when it had
to discard events it buffered while waiting for a reply (see ControlClient).

Safety, because any local program (or a web page, through a browser) can open a socket to us:

- the server binds 127.0.0.1 only, and refuses peers that are not loopback (defence in depth
  against a future bind change or a proxy);
- a handshake with an ``Origin`` header (browsers always send one, native clients none) is
  refused unless the origin is in ``allowed_origins`` (empty by default);
- every connection must present the token from ``state/daemon.json`` (mode 0600) in an
  ``Authorization: Bearer`` or ``X-LocalStore-Token`` header, or in its first message within
  ``AUTH_TIMEOUT_S``; tokens are compared with ``hmac.compare_digest``;
- connections not yet authenticated have their own small pool (``MAX_UNAUTHENTICATED``; a new
  one evicts the oldest), so clients without the token never take a token holder's slot;
- the sockets held at once, handshakes included, are capped (beyond it the oldest socket that has
  not shown the token is closed), so nobody on the machine can use up the daemon's file
  descriptors nor keep the token holder out; and so is the size of an
  opening handshake (``MAX_HANDSHAKE_BYTES``), so nobody can make it buffer ~1 MiB for each;
- frames above ``MAX_FRAME_BYTES`` close the connection (websockets' own limit, enforced before
  the frame is buffered); requests above ``MAX_REQUEST_BYTES``, binary frames, bad JSON, wrong
  types and unknown ops get an error reply, and the connection and the daemon go on;
- at most ``max_connections`` authenticated clients; a subscriber that does not read its events fills its
  bounded queue and is dropped from the stream with a ``dropped`` notice (memory never grows with
  a stuck client); compression is off (no decompression bombs).

The server runs on its own asyncio loop in one thread; blocking handler work (index reads, a sync
cycle) runs in a small thread pool so a slow op never stalls other clients, and ``sync`` requests
(which wait for a whole cycle) in a pool of their own, so they never hold up status, pause or
resume. A ``sync`` request not yet started when its client disconnects is cancelled.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import hmac
import http
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, WebSocketException
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from localstore._process_owner import ProcessOwner
from localstore.config import Settings, home_name, is_loopback_address, load_settings
from sync.errors import SyncError

__all__ = [
    "AUTH_TIMEOUT_S",
    "EVENTS_LOST",
    "MAX_AUTH_FRAME_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_HANDSHAKE_BYTES",
    "MAX_PENDING_EVENTS",
    "MAX_REQUEST_BYTES",
    "MAX_UNAUTHENTICATED",
    "OPS",
    "ControlClient",
    "ControlError",
    "ControlHandler",
    "ControlRequestError",
    "ControlServer",
    "DaemonNotRunningError",
    "OpError",
    "is_loopback_peer",
]

log = logging.getLogger("sync.control")

HOST = "127.0.0.1"
AUTH_TIMEOUT_S = 2.0
MAX_UNAUTHENTICATED = 8
MAX_FRAME_BYTES = 256 * 1024
# Before authentication: an `auth` message, or a request carrying its token, is well under 1 KiB.
MAX_AUTH_FRAME_BYTES = 8 * 1024
# An opening handshake is a few hundred bytes (a webview's cookies for 127.0.0.1, a few KiB).
MAX_HANDSHAKE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_QUEUE_SIZE = 1000
MAX_METRICS_CONNECTIONS = 8
METRICS_HEADER_TIMEOUT_S = 5.0
CLOSE_GRACE_S = 1.5  # at stop, for clients to take the close before their sockets are aborted
METRICS_MAX_HEADERS = 100
OPS = (
    "auth",
    "ping",
    "status",
    "sync",
    "verify",
    "pause",
    "resume",
    "metrics",
    "stop",
    "subscribe",
    "unsubscribe",
)
_HANDLER_OPS = frozenset({"status", "sync", "verify", "pause", "resume", "metrics", "stop"})
# Run on their own pool (see ControlServer.__init__): each waits for the server (and `verify`
# for the cycle in progress), which must not leave `status` or `pause` unanswered meanwhile.
_SYNC_OPS = frozenset({"sync", "verify"})
_SYNC_WORKERS = 2
_TOKEN_HEADERS = ("X-LocalStore-Token",)
# The client's buffer of events that arrive while it waits for a reply; beyond it the oldest are
# discarded and an EVENTS_LOST event is delivered first (ControlClient.events).
MAX_PENDING_EVENTS = 10_000
EVENTS_LOST = "events_lost"


# -- errors ----------------------------------------------------------------------------------------


class ControlError(SyncError):
    """The control API cannot be reached or used."""

    hint = "check that the daemon runs: `localstore doctor`"


class DaemonNotRunningError(ControlError):
    """No daemon serves this home."""

    hint = "start it with `localstore daemon` (or `localstore service install`)"


class ControlRequestError(ControlError):
    """The daemon answered a request with an error (``code`` says which)."""

    hint = ""


class OpError(Exception):
    """Raised by a ControlHandler to send ``{"ok": false, "error": {code, message}}``."""

    def __init__(self, code: str, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint


class ControlHandler(Protocol):
    """What the server asks the daemon: one blocking call per op (runs in the server's pool)."""

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        """Answer ``op`` (status, sync, pause, resume, metrics, stop); raise OpError to refuse."""
        ...


# -- address and token checks ----------------------------------------------------------------------


def is_loopback_peer(address: Any) -> bool:
    """True when a socket peer address (``(host, port, ...)`` or a host string) is loopback."""
    host = address[0] if isinstance(address, tuple | list) and address else address
    return isinstance(host, str) and is_loopback_address(host)


def token_matches(expected: str, given: object) -> bool:
    """Constant-time comparison; anything that is not a non-empty string never matches."""
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def _header_token(headers: Headers) -> str | None:
    auth = headers.get("Authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for name in _TOKEN_HEADERS:
        value = headers.get(name)
        if value:
            return value.strip()
    return None


class _HandshakeNoise(logging.Filter):
    """websockets logs each failed opening handshake at ERROR with a traceback: a port scan, or
    a socket closed before it spoke. Any local process can make them, as fast as it likes, and
    they rotated the daemon's real history out of daemon.log; they are DEBUG lines here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "opening handshake failed":
            return True
        exc = record.exc_info[1] if record.exc_info else None
        log.debug("control: an opening handshake failed: %r", exc)
        return False


# websockets' own logger for our server ("websockets" stays at WARNING: configure_logging).
_ws_log = logging.getLogger("websockets.server.localstore")
_ws_log.addFilter(_HandshakeNoise())


class _CountedConnection(ServerConnection):
    """A connection that counts against its server's socket budget (beyond it, the oldest
    socket that has not shown the token is closed at once).

    Anyone on the machine may connect to 127.0.0.1, token or not, and a socket that never sends
    its handshake was held for AUTH_TIMEOUT_S without limit: about a thousand (a loop in any
    process) took the daemon's file descriptors (the usual soft limit is 1024), and its saves,
    index and sync failed with EMFILE. Closing sockets beyond the budget keeps the files working.
    """

    def __init__(self, *args: Any, budget: _SocketBudget, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._budget = budget
        self._handshake_bytes = 0
        # Until the token is shown (see _authenticated): anyone may get this far,
        # and each frame was buffered up to MAX_FRAME_BYTES (several in the incoming queue)
        # before the first message was read and refused; 120 such clients at once grew the
        # daemon by ~240 MiB, all of it kept after they went.
        self.protocol.max_size = MAX_AUTH_FRAME_BYTES

    def data_received(self, data: bytes) -> None:
        # websockets buffers up to 128 header lines of 8 KiB (~1 MiB) before process_request
        # sees the handshake, for anyone, token or not: 120 such handshakes at once (within the
        # socket budget) grew the daemon by ~130 MiB, and it kept most of it after they went.
        if self.protocol.state is State.CONNECTING:
            self._handshake_bytes += len(data)
            if self._handshake_bytes > MAX_HANDSHAKE_BYTES:
                self._budget.refused()
                self.transport.abort()
                return
        super().data_received(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._budget.open += 1
        super().connection_made(transport)
        self._budget.unproven[self] = None
        if self._budget.open > self._budget.limit:
            # Beyond the budget the oldest socket without the token goes, not the newest: when
            # the newest was refused, another local user holding the budget's sockets (a loop
            # that reconnects each one the server closes; no token needed) kept every client
            # of this user out of its own daemon (`status`, `--pause`, `sync`, an app's event
            # stream) for as long as it ran. A token holder's socket is newest and proves itself
            # with its first bytes, so it is not the one evicted.
            self._budget.refused()
            oldest = next(iter(self._budget.unproven))
            del self._budget.unproven[oldest]
            oldest.transport.abort()

    def proven(self) -> None:
        """The client showed the token: its socket is no longer the first to go (see above)."""
        self._budget.unproven.pop(self, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._budget.open -= 1
        self._budget.unproven.pop(self, None)
        super().connection_lost(exc)


@dataclass
class _SocketBudget:
    """Sockets a server may hold and holds now, handshakes included (its loop thread only)."""

    limit: int
    refused: Callable[[], None]
    open: int = 0
    # Open sockets that have not shown the token yet, oldest first: evicted beyond the limit.
    unproven: dict[_CountedConnection, None] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- server ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Conn:
    """One client: its socket, auth state and (when subscribed) a bounded event queue."""

    ws: ServerConnection
    authed: bool
    queue: asyncio.Queue[dict[str, Any]]
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subscribed: bool = False
    kinds: frozenset[str] | None = None
    writer: asyncio.Task[None] | None = None


@dataclass
class ServerStats:
    """Counters the metrics op reports."""

    connections: int = 0
    connections_total: int = 0
    refused: int = 0
    requests: int = 0
    errors: int = 0
    events_published: int = 0
    subscribers_dropped: int = 0
    syncs_cancelled: int = 0  # queued `sync` requests of clients that disconnected


class ControlServer:
    """The websocket control API on 127.0.0.1 (own loop thread). start(), publish(), stop(), join().

    ``allowed_origins`` lists the ``Origin`` values accepted (e.g. a desktop app's webview); any
    other handshake that carries an Origin is refused with 403. ``metrics_text`` enables a Prometheus text endpoint (GET /metrics) on ``metrics_port``,
    also bound to 127.0.0.1 only. ``on_subscribers(n)`` is called (on the server thread) whenever
    the number of subscribed connections changes, so the daemon computes what only subscribers
    read (e.g. the engine's status on every state change) only while someone listens. Raises
    ControlError from start() when it cannot bind.
    """

    def __init__(
        self,
        handler: ControlHandler,
        *,
        token: str,
        port: int = 0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        metrics_port: int | None = None,
        metrics_text: Callable[[], str] | None = None,
        workers: int = 4,
        on_subscribers: Callable[[int], None] | None = None,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        if not token:
            raise ValueError("the control token must not be empty")
        self.handler = handler
        self.stats = ServerStats()
        self._token = token
        self._requested_port = port
        self._max_connections = max(1, max_connections)
        self._queue_size = max(1, queue_size)
        self._metrics_port = metrics_port
        self._metrics_text = metrics_text
        self._on_subscribers = on_subscribers
        self._subscribers = 0
        self._conns: set[_Conn] = set()
        # Not yet authenticated, oldest first: evicted when more arrive (see _admit_unauthed).
        self._unauthed: dict[_Conn, None] = {}
        self._allowed_origins = frozenset(allowed_origins)
        self._closing: set[asyncio.Task[None]] = set()
        self._seq = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._metrics_server: asyncio.Server | None = None
        self._metrics_conns = 0
        # Metrics connections still sending their request head, oldest first (_serve_metrics).
        self._metrics_reading: dict[asyncio.StreamWriter, None] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stopping = False
        # Handler calls running on the pools (see wait_ops).
        # Twice the connections it accepts, plus handshakes in flight: a flood is refused at
        # accept (see _CountedConnection), real clients never meet the limit.
        self._budget = _SocketBudget(
            2 * (self._max_connections + MAX_UNAUTHENTICATED) + 48, self._count_refused
        )
        self._ops_running = 0
        self._ops_cond = threading.Condition()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="localstore-control-op"
        )
        # `sync` waits for a whole cycle (minutes on a first sync; several wait for each other on
        # the engine's cycle lock). On the shared pool, four of them (a user re-running
        # `localstore sync` after its client timed out; the daemon still runs the request) left
        # status, pause and resume unanswered until the cycle ended. They queue here instead.
        self._sync_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=_SYNC_WORKERS, thread_name_prefix="localstore-control-op-sync"
        )
        self.port = 0
        self.metrics_bound_port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Bind and serve on a new thread; returns once listening. Raises ControlError."""
        if self._thread is not None:
            raise ControlError("the control server starts once", hint="create a new one")
        self._thread = threading.Thread(target=self._run, name="localstore-control", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ControlError("the control server did not start in time")
        if self._start_error is not None:
            self.join(timeout)
            raise ControlError(
                f"cannot serve the control API: {self._start_error}",
                hint="free the port or choose another one",
            ) from self._start_error

    @property
    def bound_host(self) -> str:
        """The address the websocket server listens on (always 127.0.0.1)."""
        assert self._server is not None
        return str(next(iter(self._server.sockets)).getsockname()[0])

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except (OSError, OverflowError, WebSocketException) as exc:
            # OverflowError: bind() to a port outside 0-65535. Uncaught, it ended this thread
            # with a traceback and start() waited its whole timeout for nothing.
            self._start_error = exc
            if self._server is not None:  # the metrics port failed after the API was bound
                self._server.close()
                loop.run_until_complete(self._server.wait_closed())
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self) -> None:
        self._server = await serve(
            self._serve_conn,
            HOST,
            self._requested_port,
            process_request=self._process_request,
            compression=None,
            max_size=MAX_FRAME_BYTES,
            max_queue=4,
            write_limit=64 * 1024,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            open_timeout=AUTH_TIMEOUT_S,
            server_header=None,
            logger=_ws_log,
            create_connection=cast(
                type[ServerConnection], functools.partial(_CountedConnection, budget=self._budget)
            ),
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        if self._metrics_port is not None and self._metrics_text is not None:
            self._metrics_server = await asyncio.start_server(
                self._serve_metrics, HOST, self._metrics_port, limit=8192
            )
            self.metrics_bound_port = int(self._metrics_server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        notice = self._event_message("shutdown", {"reason": "the daemon is stopping"})
        # All at once: one after another, each subscriber that stopped reading cost 0.5 s.
        await asyncio.gather(
            *(self._send_notice(conn, notice) for conn in list(self._conns) if conn.subscribed)
        )
        if self._metrics_server is not None:
            self._metrics_server.close()
            await self._metrics_server.wait_closed()
        if self._server is not None:
            self._server.close(close_connections=True)
            try:
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_GRACE_S)
            except TimeoutError:
                # A client that stopped reading (a hung app): the close frame waits behind the
                # unsent data, with no time limit (websockets' close_timeout starts once it is
                # written), and the server's stop waited for the keepalive to give up (40 s).
                # Or a handler still waits for its op on the pool (a sync cycle): its reply can
                # no longer be sent; the op itself is the daemon's to wait for (or abandon).
                log.warning("control: dropping clients that did not take the close in time")
                for conn in list(self._conns):
                    conn.ws.transport.abort()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _send_notice(self, conn: _Conn, notice: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._send(conn, notice), 0.5)

    def stop(self) -> None:
        """Close every connection (subscribers get a ``shutdown`` notice) and stop. Idempotent."""
        if self._stopping:
            # A second loop.stop() would interrupt the close under way (run_until_complete
            # raised "Event loop stopped before Future completed" on the server thread).
            return
        self._stopping = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between check and call
                loop.call_soon_threadsafe(loop.stop)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sync_pool.shutdown(wait=False, cancel_futures=True)

    def _count_refused(self) -> None:
        self.stats.refused += 1

    def wait_ops(self, timeout: float) -> bool:
        """Wait until no handler call runs on the pools (after stop()); True when none does.

        A `sync` request runs its cycle here, not on the engine's loop: the daemon must not close
        the store under it.
        """
        deadline = time.monotonic() + timeout
        with self._ops_cond:
            while self._ops_running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._ops_cond.wait(remaining)
            return True

    def _submit(
        self, pool: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], *args: Any
    ) -> concurrent.futures.Future[Any]:
        """Submit a handler call, counted for wait_ops from now until it is done or cancelled.

        Counted at submission, not when a worker starts it: a worker that had taken the call off
        the queue but not yet started it was invisible to wait_ops, so the daemon could close
        the store under a call that started a moment later. Raises RuntimeError once the pool
        has shut down (the daemon is stopping).
        """
        with self._ops_cond:
            self._ops_running += 1
        try:
            work = pool.submit(fn, *args)
        except BaseException:
            self._op_done(None)
            raise
        work.add_done_callback(self._op_done)  # runs at once if already done
        return work

    def _op_done(self, _work: object) -> None:
        with self._ops_cond:
            self._ops_running -= 1
            self._ops_cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the server thread to exit; True when it has."""
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # -- publishing --------------------------------------------------------------------------------

    def publish(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to every subscriber (thread-safe, never blocks the caller)."""
        loop = self._loop
        if loop is None or self._stopping or not self._conns:
            return
        ts = _now()
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody to tell
            loop.call_soon_threadsafe(self._fanout, event, ts, data)

    def _event_message(self, event: str, data: dict[str, Any], ts: str = "") -> dict[str, Any]:
        """An event with the next sequence number; called on the loop's thread only."""
        return {"event": event, "seq": next(self._seq), "ts": ts or _now(), "data": data}

    def _fanout(self, event: str, ts: str, data: dict[str, Any]) -> None:
        # The sequence number is drawn here, on the loop's thread, in the order the events are
        # queued to subscribers: drawn in each publishing thread, two threads' events could
        # reach a subscriber with their numbers out of order.
        message = self._event_message(event, data, ts)
        self.stats.events_published += 1
        for conn in self._conns:
            if not conn.subscribed or (
                conn.kinds is not None and message["event"] not in conn.kinds
            ):
                continue
            try:
                conn.queue.put_nowait(message)
            except asyncio.QueueFull:
                self._drop_subscriber(conn)

    def _drop_subscriber(self, conn: _Conn) -> None:
        # A client that does not read: stop streaming to it rather than buffer without bound.
        self._set_subscribed(conn, False)
        while not conn.queue.empty():
            conn.queue.get_nowait()
        self.stats.subscribers_dropped += 1
        conn.queue.put_nowait(
            self._event_message(
                "dropped",
                {
                    "reason": "slow consumer: the event queue overflowed",
                    "hint": "read events faster, then subscribe again",
                },
            )
        )
        log.warning("control: dropped a slow subscriber")

    # -- connections -------------------------------------------------------------------------------

    def _authed_count(self) -> int:
        # Not len(_conns) - len(_unauthed): evicted connections are in neither while they close.
        return sum(1 for c in self._conns if c.authed)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not is_loopback_peer(connection.remote_address):
            self.stats.refused += 1
            log.warning("control: refused non-loopback peer %s", connection.remote_address)
            return connection.respond(http.HTTPStatus.FORBIDDEN, "loopback clients only\n")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self._allowed_origins:
            # A web page (cross-site websocket hijacking); native clients send no Origin.
            self.stats.refused += 1
            return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
        given = _header_token(request.headers)
        if given is None:
            return None  # first-message auth, in its own pool (_admit_unauthed)
        if not token_matches(self._token, given):
            self.stats.refused += 1
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "wrong token\n")
        # Only authenticated connections count here: clients without the token cannot fill it.
        if self._authed_count() >= self._max_connections:
            self.stats.refused += 1
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many clients\n")
        _authenticated(connection)  # here, before the 101: the client may send at once after it
        return None

    async def _serve_conn(self, ws: ServerConnection) -> None:
        authed = token_matches(self._token, _header_token(ws.request.headers) if ws.request else "")
        if authed and self._authed_count() >= self._max_connections:
            await ws.close(1013, "too many clients")  # handshakes that raced past the check
            return
        conn = _Conn(ws, authed, asyncio.Queue(self._queue_size + 1))
        if not authed:
            await self._admit_unauthed(conn)
        self._conns.add(conn)
        self.stats.connections = len(self._conns)
        self.stats.connections_total += 1
        try:
            if not conn.authed and not await self._first_message_auth(conn):
                return
            async for raw in ws:
                reply = await self._dispatch(conn, raw)
                if reply is not None:
                    await self._send(conn, reply)
        except ConnectionClosed:
            pass
        finally:
            self._set_subscribed(conn, False)
            self._unauthed.pop(conn, None)
            self._conns.discard(conn)
            self.stats.connections = len(self._conns)
            if conn.writer is not None:
                conn.writer.cancel()

    async def _admit_unauthed(self, conn: _Conn) -> None:
        # Evict the oldest rather than refuse the newest: a real client authenticates within
        # milliseconds of connecting, so squatters that hold connections open cannot keep it out.
        while len(self._unauthed) >= MAX_UNAUTHENTICATED:
            oldest = next(iter(self._unauthed))
            del self._unauthed[oldest]
            self.stats.refused += 1
            task = asyncio.get_running_loop().create_task(
                oldest.ws.close(1008, "too many unauthenticated clients")
            )
            self._closing.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._closing.discard)
        self._unauthed[conn] = None

    async def _first_message_auth(self, conn: _Conn) -> bool:
        """The token in the first message (browsers cannot set headers). False closes."""
        try:
            raw = await asyncio.wait_for(conn.ws.recv(), AUTH_TIMEOUT_S)
        except TimeoutError:
            await conn.ws.close(1008, "authentication timeout")
            return False
        req = _parse(raw)
        rid = req.get("id") if isinstance(req, dict) else None
        token = req.get("token") if isinstance(req, dict) else None
        if token is None and isinstance(req, dict) and isinstance(req.get("args"), dict):
            token = req["args"].get("token")
        if not token_matches(self._token, token):
            self.stats.refused += 1
            await self._send(
                conn, _error(_safe_id(rid), "unauthorized", "a valid token is required")
            )
            await conn.ws.close(1008, "unauthorized")
            return False
        if self._authed_count() >= self._max_connections:  # counts the others, not this one
            self.stats.refused += 1
            await self._send(conn, _error(_safe_id(rid), "busy", "too many clients"))
            await conn.ws.close(1013, "too many clients")
            return False
        self._unauthed.pop(conn, None)
        conn.authed = True
        _authenticated(conn.ws)
        if isinstance(req, dict) and req.get("op") not in (None, "auth"):
            reply = await self._dispatch(conn, raw)  # a request that carried its token
        else:
            reply = {"id": _safe_id(rid), "ok": True, "result": {"authenticated": True}}
        if reply is not None:
            await self._send(conn, reply)
        return True

    async def _send(self, conn: _Conn, message: dict[str, Any]) -> None:
        # ASCII: a lone surrogate (a request id, an undecodable file name) becomes a \uXXXX
        # escape; with ensure_ascii=False it made ws.send raise UnicodeEncodeError.
        text = json.dumps(message, default=str)
        async with conn.send_lock:
            await conn.ws.send(text)

    async def _writer(self, conn: _Conn) -> None:
        try:
            while True:
                message = await conn.queue.get()
                await self._send(conn, message)
        except ConnectionClosed:
            pass
        except Exception:  # task boundary: nobody awaits this task, so say why the stream ended
            log.exception("control: an event could not be sent; the subscriber is dropped")
            self._set_subscribed(conn, False)
            conn.writer = None  # subscribing again starts a new writer
            while not conn.queue.empty():
                conn.queue.get_nowait()
            self.stats.subscribers_dropped += 1
            notice = self._event_message(
                "dropped",
                {"reason": "an event could not be sent", "hint": "subscribe again"},
            )
            with contextlib.suppress(ConnectionClosed, OSError):
                await self._send(conn, notice)

    # -- requests ----------------------------------------------------------------------------------

    async def _dispatch(self, conn: _Conn, raw: str | bytes) -> dict[str, Any] | None:
        self.stats.requests += 1
        req = _parse(raw)
        if isinstance(req, OpError):
            self.stats.errors += 1
            return _error(None, req.code, req.message)
        rid = req.get("id")
        if not _valid_id(rid):
            self.stats.errors += 1
            return _error(None, "bad_request", "'id' must be a string, an integer or null")
        op, args = req.get("op"), req.get("args", {})
        if not isinstance(op, str):
            self.stats.errors += 1
            return _error(rid, "bad_request", "'op' must be a string")
        if not isinstance(args, dict):
            self.stats.errors += 1
            return _error(rid, "bad_request", "'args' must be an object")
        try:
            result = await self._run_op(conn, op, args)
        except OpError as exc:
            self.stats.errors += 1
            return _error(rid, exc.code, exc.message, exc.hint)
        return {"id": rid, "ok": True, "result": result}

    async def _run_op(self, conn: _Conn, op: str, args: dict[str, Any]) -> Any:
        if op == "auth":
            return {"authenticated": True}
        if op == "ping":
            return "pong"
        if op == "subscribe":
            return self._subscribe(conn, args)
        if op == "unsubscribe":
            self._set_subscribed(conn, False)
            return {"subscribed": False}
        if op not in _HANDLER_OPS:
            raise OpError("unknown_op", f"unknown op {op[:40]!r}; known: {', '.join(OPS)}")
        if op in _SYNC_OPS:
            return await self._run_sync_op(conn, op, args)
        try:
            work = self._submit(self._pool, self._call_handler, op, args)
        except RuntimeError as exc:  # the pool shut down: the daemon is stopping
            raise OpError("shutting_down", "the daemon is stopping") from exc
        done = asyncio.wrap_future(work)
        # Not `await done`: stop() cancels the requests still queued for a worker, and awaiting
        # the cancelled future raised CancelledError here, which ended the connection's handler
        # without closing its socket (websockets closes after a return or an Exception only):
        # the client was left unanswered and open. asyncio.wait raises only if this task is
        # itself cancelled.
        await asyncio.wait((done,))
        if work.cancelled():
            raise OpError("shutting_down", "the daemon is stopping")
        return done.result()

    async def _run_sync_op(self, conn: _Conn, op: str, args: dict[str, Any]) -> Any:
        """A `sync` request, cancelled if its client goes away before a worker takes it.

        Each one runs a whole cycle. A client that sent some and disconnected (an interrupted
        `localstore sync`, an app that quit) left them waiting for a worker, and the daemon ran
        every one of them for nobody, ahead of the requests of clients still waiting. A request
        already running finishes: a cycle is not interrupted half-way.
        """
        if conn.ws.state is not State.OPEN:  # read from the socket before the close arrived
            self.stats.syncs_cancelled += 1
            raise OpError("cancelled", "the client disconnected")
        try:
            work = self._submit(self._sync_pool, self._call_handler, op, args)
        except RuntimeError as exc:  # the pool shut down: the daemon is stopping
            raise OpError("shutting_down", "the daemon is stopping") from exc
        done = asyncio.wrap_future(work)
        closed = asyncio.ensure_future(conn.ws.wait_closed())
        try:
            await asyncio.wait((done, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not done.done():
            if work.cancel():  # still queued: no worker took it
                self.stats.syncs_cancelled += 1
                raise OpError("cancelled", "the client disconnected")
            await asyncio.wait((done,))  # running: the cycle finishes, its reply goes nowhere
        # (Not `await done` with an except CancelledError: that would also swallow the
        # cancellation of this task at the server's stop.)
        if work.cancelled():  # the pool shut down with it queued: the daemon is stopping
            raise OpError("shutting_down", "the daemon is stopping")
        return done.result()

    def _call_handler(self, op: str, args: dict[str, Any]) -> Any:
        try:
            result = self.handler.handle(op, args)
            json.dumps(result, default=str)  # fail here, as an error reply, not in the send
            return result
        except OpError:
            raise
        except SyncError as exc:
            raise OpError(_code_of(exc), exc.message, hint=exc.hint) from exc
        except Exception as exc:  # process boundary for one request: logged, reported, survived
            log.exception("control: op %s failed", op)
            raise OpError("internal", f"{type(exc).__name__}: {exc}") from exc

    def _subscribe(self, conn: _Conn, args: dict[str, Any]) -> dict[str, Any]:
        kinds = args.get("events")
        if kinds is not None and (
            not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds)
        ):
            raise OpError("bad_request", "'events' must be a list of event names")
        conn.kinds = frozenset(kinds) if kinds is not None else None
        self._set_subscribed(conn, True)
        if conn.writer is None:
            conn.writer = asyncio.get_running_loop().create_task(self._writer(conn))
        return {"subscribed": True, "queue": self._queue_size}

    def _set_subscribed(self, conn: _Conn, subscribed: bool) -> None:
        if conn.subscribed == subscribed:
            return
        conn.subscribed = subscribed
        self._subscribers += 1 if subscribed else -1
        if self._on_subscribers is not None:
            try:
                self._on_subscribers(self._subscribers)
            except Exception:  # the daemon's callback must not break the connection handling
                log.exception("control: the subscriber callback failed")

    @property
    def subscribers(self) -> int:
        """How many connections are subscribed to events."""
        return self._subscribers

    # -- Prometheus endpoint -----------------------------------------------------------------------

    async def _serve_metrics(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._metrics_conns += 1
        try:
            if not is_loopback_peer(writer.get_extra_info("peername")):
                return
            if self._metrics_conns > MAX_METRICS_CONNECTIONS:
                # A scraper needs one; more is a flood. The oldest still sending its head goes,
                # not this one: refusing the newest let any local user who held 8 idle sockets
                # (reconnecting each one cut at the deadline) blind the user's monitoring.
                if not self._metrics_reading:
                    return  # all are being answered: their work is what the cap bounds
                oldest = next(iter(self._metrics_reading))
                del self._metrics_reading[oldest]
                oldest.transport.abort()
            self._metrics_reading[writer] = None
            try:
                async with asyncio.timeout(METRICS_HEADER_TIMEOUT_S):  # for all lines, not each
                    line, headers = await _read_head(reader)
            finally:
                self._metrics_reading.pop(writer, None)
            if not line:
                return  # closed (or evicted) before it asked anything
            parts = line.decode("latin-1").split()
            if not self._metrics_host_ok(headers.get("host")):
                # DNS rebinding: a page of attacker.example resolved to 127.0.0.1 names its host.
                body, status, ctype = b"wrong host\n", "421 Misdirected Request", "text/plain"
            elif len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                assert self._metrics_text is not None
                text = await asyncio.wrap_future(self._submit(self._pool, self._metrics_text))
                body = text.encode()
                status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
            # A page anywhere may point a <script> at 127.0.0.1 (its Host passes the check
            # above): nosniff makes the browser refuse to run the text as a script.
            head += "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n"
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (
            TimeoutError,
            ValueError,
            OSError,
            RuntimeError,
            asyncio.IncompleteReadError,
        ) as exc:
            log.debug("metrics request failed: %s", exc)
        finally:
            self._metrics_conns -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _metrics_host_ok(self, host: str | None) -> bool:
        if host is None:
            return True  # HTTP/1.0 without Host: not a browser, so not DNS rebinding
        name, sep, port = host.strip().lower().rpartition(":")
        if not sep:
            name, port = port, ""
        return name in ("127.0.0.1", "localhost") and port in ("", str(self.metrics_bound_port))


async def _read_head(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str]]:
    """The request line and headers (names lower-cased). Raises ValueError past the limits."""
    line = await reader.readline()
    headers: dict[str, str] = {}
    for _ in range(METRICS_MAX_HEADERS + 1):
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            return line, headers
        name, _, value = raw.decode("latin-1").partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    raise ValueError("too many header lines")


def _authenticated(ws: ServerConnection) -> None:
    """Lift the frame limit of a connection that showed the token, and keep its socket from
    eviction (see _CountedConnection)."""
    ws.protocol.max_size = MAX_FRAME_BYTES
    if isinstance(ws, _CountedConnection):
        ws.proven()


def _parse(raw: str | bytes) -> dict[str, Any] | OpError:
    if isinstance(raw, bytes):
        return OpError("bad_request", "binary frames are not accepted; send JSON text")
    if len(raw) > MAX_REQUEST_BYTES:
        return OpError("too_large", f"requests are limited to {MAX_REQUEST_BYTES} bytes")
    try:
        req = json.loads(raw)
    except (ValueError, RecursionError):
        return OpError("bad_json", "the message is not valid JSON")
    if not isinstance(req, dict):
        return OpError("bad_request", "a request is a JSON object with 'id' and 'op'")
    return req


def _valid_id(rid: object) -> bool:
    return (
        rid is None
        or (isinstance(rid, str) and len(rid) <= 200)
        or (isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) < 2**53)
    )


def _safe_id(rid: object) -> Any:
    return rid if _valid_id(rid) else None


def _error(rid: Any, code: str, message: str, hint: str = "") -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if hint:
        err["hint"] = hint
    return {"id": rid, "ok": False, "error": err}


def _code_of(exc: SyncError) -> str:
    """``NotLoggedInError`` -> ``not_logged_in``: a stable code clients can branch on."""
    name = type(exc).__name__.removesuffix("Error") or "sync"
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


# -- client ----------------------------------------------------------------------------------------


class ControlClient:
    """A blocking client of a running daemon's control API.

    ``ControlClient.connect(home)`` finds the daemon through ``state/daemon.json``. Requests and
    the event stream share one connection: events that arrive while waiting for a reply are kept
    for :meth:`events`, at most ``MAX_PENDING_EVENTS``. Beyond that the oldest are discarded,
    counted in ``dropped_events``, and the next event :meth:`events` yields is an
    ``events_lost`` marker (``{"event": "events_lost", "seq": null, "ts": ..., "data":
    {"dropped", "dropped_total", "reason", "hint"}}``): the app's view may be stale, so it re-reads
    what it shows. Not thread-safe; use one client per thread. Raises ControlError (and
    DaemonNotRunningError, ControlRequestError).
    """

    def __init__(self, port: int, token: str, *, host: str = HOST, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._ids = itertools.count(1)
        # Bounded by hand, not deque(maxlen=...): that discarded the oldest silently, and an app
        # following the stream missed changes without knowing it should re-read.
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._lost = 0  # discarded since the last events_lost marker was delivered
        self.dropped_events = 0
        """Events discarded over this client's life because its buffer was full."""
        # The process that connected: a child forked from it shares the socket (see close()).
        self._process = ProcessOwner()
        try:
            self._ws: ClientConnection = ws_connect(
                f"ws://{host}:{int(port)}",
                additional_headers={"Authorization": f"Bearer {token}"},
                proxy=None,
                compression=None,
                open_timeout=timeout,
                close_timeout=2,
                max_size=16 * 1024 * 1024,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ControlError(f"cannot connect to the daemon on port {port}: {exc}") from exc

    @classmethod
    def connect(
        cls, home: str | Path | Settings | None = None, *, timeout: float = 10.0
    ) -> ControlClient:
        """Connect to the daemon of a home (a path, Settings, or None for LOCALSTORE_HOME)."""
        from sync.embed import daemon_running

        settings = home if isinstance(home, Settings) else load_settings(home=home)
        state = daemon_running(settings)
        if state is None or not state.get("port") or not state.get("token"):
            raise DaemonNotRunningError(f"no daemon runs for {home_name(settings)}")
        return cls(int(state["port"]), str(state["token"]), timeout=timeout)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection. Idempotent. In a child forked from the process that connected,
        only the child's copy of the socket is closed: the connection is the parent's."""
        if self._process.forked:
            # (The app's ``with`` block or atexit handler, run in a multiprocessing worker.) The
            # close handshake went out on the socket both processes share, then websockets'
            # shutdown() (which acts on the connection, not on this descriptor) cut it: the
            # parent's next request failed and its event stream ended. close() of the
            # descriptor alone sends nothing.
            self._ws.socket.close()
            return
        self._ws.close()

    # -- requests ----------------------------------------------------------------------------------

    def request(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        """Send one request and return its result. Raises ControlRequestError on an error reply."""
        rid = next(self._ids)
        self._send({"id": rid, "op": op, "args": args})
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            message = self._recv(deadline)
            if message.get("id") == rid and "ok" in message:
                break
            if "event" in message:
                self._keep(message)
        if not message["ok"]:
            err = message.get("error") or {}
            raise ControlRequestError(
                str(err.get("message", "request failed")),
                hint=str(err.get("hint", "")),
                code=str(err.get("code", "error")),
            )
        return message.get("result")

    def status(self) -> dict[str, Any]:
        """The daemon's status: daemon, sync, watcher."""
        result: dict[str, Any] = self.request("status")
        return result

    def sync(
        self, *, wait: bool = True, retry_quarantined: bool = False, timeout: float = 120.0
    ) -> dict[str, Any]:
        """Ask for a sync cycle; with ``wait`` return its report once done.

        ``retry_quarantined`` un-parks the quarantined changes first (the reply's ``retried``
        says how many; a daemon without that option leaves the key out).
        """
        args: dict[str, Any] = {"wait": wait}
        if retry_quarantined:  # (only when asked: the op's arguments of older daemons stay valid)
            args["retry_quarantined"] = True
        result: dict[str, Any] = self.request("sync", timeout=timeout, **args)
        return result

    def verify(self, *, timeout: float = 120.0) -> dict[str, Any]:
        """Compare the home's ids and hashes with the server's (``VerifyReport.to_dict()``), in
        the daemon's engine, between its cycles. A daemon without the op answers ``unknown_op``.
        """
        result: dict[str, Any] = self.request("verify", timeout=timeout)
        return result

    def pause(self) -> dict[str, Any]:
        """Pause syncing (the watcher goes on indexing edits)."""
        result: dict[str, Any] = self.request("pause")
        return result

    def resume(self) -> dict[str, Any]:
        """Resume syncing."""
        result: dict[str, Any] = self.request("resume")
        return result

    def metrics(self) -> dict[str, Any]:
        """Counters and gauges."""
        result: dict[str, Any] = self.request("metrics")
        return result

    def stop(self) -> dict[str, Any]:
        """Ask the daemon to shut down cleanly (as SIGTERM does); returns once it has begun."""
        result: dict[str, Any] = self.request("stop")
        return result

    # -- events ------------------------------------------------------------------------------------

    def subscribe(self, events: list[str] | None = None) -> None:
        """Start the event stream (optionally only these event names)."""
        args: dict[str, Any] = {} if events is None else {"events": list(events)}
        self.request("subscribe", **args)

    def events(self, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield events (subscribe first); stops after ``timeout`` s without one, or on close."""
        while True:
            if self._lost:
                yield self._lost_marker()
                continue
            if self._pending:
                yield self._pending.popleft()
                continue
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                message = self._recv(deadline)
            except ControlError as exc:
                if isinstance(exc.__cause__, TimeoutError | ConnectionClosed):
                    return
                raise
            if "event" in message:
                yield message

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first event for which ``match(event)`` is true. Raises ControlError on timeout."""
        deadline = time.monotonic() + timeout
        for event in self.events(timeout=max(0.01, deadline - time.monotonic())):
            if match(event):
                return event
            if time.monotonic() > deadline:
                break
        raise ControlError(f"no matching event within {timeout} s")

    def _keep(self, event: dict[str, Any]) -> None:
        if len(self._pending) >= MAX_PENDING_EVENTS:
            self._pending.popleft()
            self._lost += 1
            self.dropped_events += 1
        self._pending.append(event)

    def _lost_marker(self) -> dict[str, Any]:
        lost, self._lost = self._lost, 0
        return {
            "event": EVENTS_LOST,
            "seq": None,
            "ts": _now(),
            "data": {
                "dropped": lost,
                "dropped_total": self.dropped_events,
                "reason": "events arrived faster than they were read while waiting for a reply",
                "hint": "re-read the state you show (the events after this one are complete)",
            },
        }

    # -- wire ----------------------------------------------------------------------------------------

    def _check_process(self) -> None:
        """Raise ControlError in a child forked from the process that connected: a request sent
        from there went out on the parent's connection, and its answer went to the parent's
        reader (the child waited out its timeout), taken there for the answer to the parent's
        next request, whose id the copied count gave it too."""
        if self._process.forked:
            raise ControlError(
                f"this control client was connected by process {self._process.pid}; a child "
                "forked from it cannot use its connection",
                hint="connect a new client in the child with ControlClient.connect(home)",
            )

    def _send(self, message: dict[str, Any]) -> None:
        self._check_process()
        try:
            self._ws.send(json.dumps(message))
        except (ConnectionClosed, OSError) as exc:
            raise ControlError(f"the daemon closed the connection: {exc}") from exc

    def _recv(self, deadline: float | None) -> dict[str, Any]:
        self._check_process()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            raw = self._ws.recv(timeout=remaining)
        except TimeoutError as exc:
            raise ControlError("the daemon did not answer in time") from exc
        except ConnectionClosed as exc:
            raise ControlError(f"the daemon closed the connection: {exc}") from exc
        try:
            message = json.loads(raw)
        except ValueError as exc:
            raise ControlError("the daemon sent a malformed message") from exc
        if not isinstance(message, dict):
            raise ControlError("the daemon sent a malformed message")
        return message
