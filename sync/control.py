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

This module holds the server; ``_control_wire`` (errors, limits, token checks, the JSON codec),
``_control_sockets`` (the socket budget, the handshake and first-frame limits) and
``_control_client`` (ControlClient) hold the rest, re-exported here. A test patches a constant
the server reads (``AUTH_TIMEOUT_S``, ``METRICS_HEADER_TIMEOUT_S``, ``_now``) on this module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import http
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.http11 import Request, Response
from websockets.protocol import State

from sync._control_client import EVENTS_LOST, MAX_PENDING_EVENTS, ControlClient
from sync._control_sockets import (
    MAX_AUTH_FRAME_BYTES,
    MAX_HANDSHAKE_BYTES,
    _authenticated,
    _CountedConnection,
    _SocketBudget,
    _ws_log,
)
from sync._control_wire import (
    HOST,
    MAX_FRAME_BYTES,
    MAX_REQUEST_BYTES,
    ControlError,
    ControlRequestError,
    DaemonNotRunningError,
    OpError,
    _code_of,
    _error,
    _header_token,
    _now,
    _parse,
    _safe_id,
    _valid_id,
    is_loopback_peer,
    token_matches,
)
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

AUTH_TIMEOUT_S = 2.0
MAX_UNAUTHENTICATED = 8
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


class ControlHandler(Protocol):
    """What the server asks the daemon: one blocking call per op (runs in the server's pool)."""

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        """Answer ``op`` (status, sync, pause, resume, metrics, stop); raise OpError to refuse."""
        ...


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
