"""The Realtime subset under ``/realtime/v1/websocket``: Phoenix V1 JSON channels.

Per channel: ``phx_join`` (postgres_changes bindings, broadcast config, the access token), ``heartbeat``,
``access_token``, ``broadcast``, ``presence`` (acknowledged only) and ``phx_leave``. Changes come from a
change feed (``changes.py``) and are delivered per subscriber only if the subscriber may see the row:
for INSERT/UPDATE the row is looked up by primary key under the subscriber's role and claims at
delivery time (what Realtime's ``apply_rls`` does); for DELETE see :mod:`visibility`.
Broadcasts from the database arrive through ``NOTIFY gw_realtime_send``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import jwt
import psycopg
from aiohttp import WSMsgType, web

from sync.localcloud.gateway import jsontext
from sync.localcloud.gateway.changes import Change
from sync.localcloud.gateway.context import api_key_of
from sync.localcloud.gateway.keys import JWTCheckError, ProjectKeys
from sync.localcloud.gateway.visibility import Visibility

log = logging.getLogger(__name__)

# How long a join's check of the publication waits for a database connection: the pool's default
# (30 s) is past the client's join timeout (10 s), and the socket's other frames wait meanwhile.
JOIN_CHECK_S = 5.0
# Hosted Realtime's words when the project's database cannot be reached.
UNREACHABLE = "Realtime was unable to connect to the project database"

# Hosted Realtime's websocket timeout: its endpoint sets none, so Phoenix's default (60 s) applies,
# and Cowboy closes a socket that sent nothing (no frame, not even a ping) for that long with 1000.
# Clients heartbeat every 25 s. Without it here, a client whose heartbeats stopped (a blocked event
# loop) kept its channels for ever, and only hosted showed the drop and the reconnect it needs.
DEFAULT_IDLE_TIMEOUT_S = 60.0

ANY = "*"
SUBSCRIBED = "Subscribed to PostgreSQL"  # the system ok of a channel's database subscription


@dataclass(frozen=True, slots=True)
class Binding:
    """One postgres_changes binding of a channel, with the id echoed in the join reply."""

    id: int
    event: str
    schema: str
    table: str | None
    filter: str | None
    raw: dict[str, Any]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Binding:
        """Build from the client's binding dict; the id is a stable non-zero hash."""
        digest = zlib.crc32(json.dumps(raw, sort_keys=True).encode()) & 0x7FFFFFFF
        return cls(
            id=digest or 1,
            event=str(raw.get("event", ANY)).upper(),
            schema=str(raw.get("schema", "public")),
            table=raw.get("table"),
            filter=raw.get("filter"),
            raw=raw,
        )

    def matches(self, change: Change) -> bool:
        """Event, schema and table match (the filter is checked on converted values later)."""
        return (
            self.event in (ANY, change.type)
            and self.schema in (ANY, change.schema)
            and self.table in (None, ANY, change.table)
        )


@dataclass(slots=True, eq=False)
class Channel:
    """One joined topic on one socket."""

    socket: Socket
    topic: str
    join_ref: str | None
    claims: dict[str, Any]
    bindings: list[Binding]
    broadcast_self: bool = False
    broadcast_ack: bool = False
    private: bool = False

    @property
    def role(self) -> str:
        """Database role of the subscriber."""
        return str(self.claims.get("role") or "anon")


@dataclass(eq=False)
class Socket:
    """One websocket connection and its channels."""

    ws: web.WebSocketResponse
    api_key: str
    channels: dict[str, Channel] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, topic: str, event: str, payload: Any, ref: str | None) -> None:
        """Send one frame; a socket closing under us is not an error."""
        frame = {"topic": topic, "event": event, "payload": payload, "ref": ref}
        if self.ws.closed:
            return
        async with self.lock:
            try:
                await self.ws.send_str(jsontext.dumps(frame))
            except (ConnectionResetError, RuntimeError) as exc:
                log.debug("realtime: dropping a frame for a closing socket: %s", exc)


class TokenRefused(Exception):
    """A join/access_token JWT was refused; ``reason`` is what Realtime says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RealtimeHub:
    """Sockets, channels and delivery of changes and broadcasts."""

    def __init__(
        self,
        keys: ProjectKeys,
        visibility: Visibility,
        *,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.keys = keys
        self.visibility = visibility
        self.idle_timeout_s = idle_timeout_s
        self.sockets: set[Socket] = set()
        self.on_subscribe: list[Any] = []  # callables run after a join with bindings

    def routes(self) -> list[web.RouteDef]:
        """The routes to mount on the application."""
        return [web.get("/realtime/v1/websocket", self.websocket)]

    async def close(self) -> None:
        """Close every socket (going-away)."""
        for sock in list(self.sockets):
            await sock.ws.close(code=1001, message=b"server shutting down")
        self.sockets.clear()

    # ------------------------------------------------------------------ socket loop

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """Accept a socket after the API key check (401 before the upgrade, as Kong does)."""
        key = api_key_of(request)
        if not key or not self.keys.is_api_key(key):
            message = (
                "No API key found in request" if not key else "Invalid authentication credentials"
            )
            return web.json_response({"message": message}, status=401)
        # (receive_timeout: each read, so any frame, a ping too, restarts the wait, as in Cowboy.)
        ws = web.WebSocketResponse(
            heartbeat=None, max_msg_size=8 * 1024 * 1024, receive_timeout=self.idle_timeout_s
        )
        await ws.prepare(request)
        sock = Socket(ws, key)
        self.sockets.add(sock)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                await self._on_text(sock, msg.data)
        except TimeoutError:
            log.info("realtime: closing a socket silent for %.0f s", self.idle_timeout_s)
            await ws.close(code=1000, message=b"")  # what Cowboy sends on its idle timeout
        finally:
            self.sockets.discard(sock)
            sock.channels.clear()
        return ws

    async def _on_text(self, sock: Socket, text: str) -> None:
        try:
            frame = json.loads(text)
            topic = str(frame["topic"])
            event = str(frame["event"])
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("realtime: ignoring a malformed frame: %.200s", text)
            return
        payload = frame.get("payload") or {}
        ref = frame.get("ref")
        join_ref = frame.get("join_ref")
        if topic == "phoenix" and event == "heartbeat":
            await sock.send("phoenix", "phx_reply", {"status": "ok", "response": {}}, ref)
        elif event == "phx_join":
            await self._join(sock, topic, payload, ref, join_ref)
        elif topic not in sock.channels:
            await sock.send(
                topic,
                "phx_reply",
                {"status": "error", "response": {"reason": "unmatched topic"}},
                ref,
            )
        elif event == "phx_leave":
            sock.channels.pop(topic, None)
            await sock.send(topic, "phx_reply", {"status": "ok", "response": {}}, ref)
            await sock.send(topic, "phx_close", {}, ref)
        elif event == "access_token":
            await self._access_token(sock.channels[topic], payload, ref)
        elif event == "broadcast":
            await self._broadcast(sock.channels[topic], payload, ref)
        elif event == "presence":
            await sock.send(topic, "phx_reply", {"status": "ok", "response": {}}, ref)
        else:
            log.debug("realtime: unhandled event %s on %s", event, topic)

    # ------------------------------------------------------------------ channel events

    def verify_token(self, token: str) -> dict[str, Any]:
        """Check a channel token as Realtime does: signature, then ``role`` and ``exp``."""
        try:
            claims = self.keys.verify(token)
        except JWTCheckError as exc:
            if exc.code == "PGRST303" and "expired" in exc.message:
                raise TokenRefused(_expired_reason(token)) from exc
            raise TokenRefused(f"JwtSignatureError: {exc.message}") from exc
        if "role" not in claims or "exp" not in claims:
            raise TokenRefused("Fields `role` and `exp` are required in JWT")
        return claims

    async def _join(
        self, sock: Socket, topic: str, payload: dict[str, Any], ref: Any, join_ref: Any
    ) -> None:
        config = payload.get("config") or {}
        token = payload.get("access_token") or payload.get("user_token") or sock.api_key
        try:
            claims = self.verify_token(str(token))
        except TokenRefused as exc:
            await sock.send(
                topic, "phx_reply", {"status": "error", "response": {"reason": exc.reason}}, ref
            )
            return
        private = bool(config.get("private"))
        if private and claims.get("role") == "anon":
            reason = "Unauthorized: You do not have permissions to read from this Channel topic"
            await sock.send(
                topic, "phx_reply", {"status": "error", "response": {"reason": reason}}, ref
            )
            return
        raw_bindings = config.get("postgres_changes") or []
        bindings = [Binding.of(b) for b in raw_bindings if isinstance(b, dict)]
        broadcast = config.get("broadcast") or {}
        channel = Channel(
            sock, topic, join_ref, claims, bindings,
            broadcast_self=bool(broadcast.get("self")), broadcast_ack=bool(broadcast.get("ack")),
            private=private,
        )  # fmt: skip
        sock.channels[topic] = channel
        reply = {"postgres_changes": [{**b.raw, "id": b.id} for b in bindings]}
        await sock.send(topic, "phx_reply", {"status": "ok", "response": reply}, ref)
        if bindings:
            await self._confirm_bindings(channel)

    async def _confirm_bindings(self, channel: Channel) -> None:
        try:
            missing = [b for b in channel.bindings if not await self._published(b)]
        except psycopg.Error as exc:
            # Postgres down or restarting: raised out of the socket's loop, this closed the
            # socket and every channel on it. Hosted answers the join with a system error and
            # keeps the socket (the client rejoins; changes_lost says when the database is back).
            log.warning("realtime: a join's tables cannot be checked, no database: %s", exc)
            await _send_system(channel, "postgres_changes", "error", UNREACHABLE)
            return
        if missing:
            params = ", ".join(f"[schema: {b.schema}, table: {b.table}]" for b in missing)
            message = (
                "Unable to subscribe to changes with given parameters. Please check Realtime is "
                f"enabled for the given connect parameters: {params}"
            )
            status = "error"
        else:
            message, status = SUBSCRIBED, "ok"
        await _send_system(channel, "postgres_changes", status, message)
        for hook in self.on_subscribe:
            hook()

    async def _published(self, binding: Binding) -> bool:
        """Whether a binding's table is in the publication (any table: yes); raises psycopg.Error."""
        if binding.table in (None, ANY):
            return True
        return await self.visibility.published(
            binding.schema, str(binding.table), timeout=JOIN_CHECK_S
        )

    async def _access_token(self, channel: Channel, payload: dict[str, Any], ref: Any) -> None:
        try:
            channel.claims = self.verify_token(str(payload.get("access_token") or ""))
        except TokenRefused as exc:
            await self._shut_channel(channel, exc.reason)

    async def _shut_channel(self, channel: Channel, reason: str) -> None:
        sock = channel.socket
        sock.channels.pop(channel.topic, None)
        await _send_system(channel, "system", "error", reason)
        await sock.send(channel.topic, "phx_close", {}, channel.join_ref)

    async def _broadcast(self, channel: Channel, payload: dict[str, Any], ref: Any) -> None:
        for other in self._channels(channel.topic, channel.private):
            if other is channel and not channel.broadcast_self:
                continue
            await other.socket.send(other.topic, "broadcast", payload, None)
        if channel.broadcast_ack:
            await channel.socket.send(
                channel.topic, "phx_reply", {"status": "ok", "response": {}}, ref
            )

    def _channels(self, topic: str, private: bool) -> list[Channel]:
        found = []
        for sock in self.sockets:
            ch = sock.channels.get(topic)
            if ch is not None and ch.private == private:
                found.append(ch)
        return found

    # ------------------------------------------------------------------ delivery

    async def deliver_db_broadcast(self, text: str) -> None:
        """Relay a ``realtime.send`` NOTIFY payload ``{"topic","event","payload","private"}``."""
        try:
            msg = json.loads(text)
            topic = "realtime:" + str(msg["topic"])
        except (ValueError, RecursionError, KeyError, TypeError) as exc:
            # (ValueError: no JSON, or an integer over 4,300 digits; RecursionError: nesting
            # past the interpreter's limit. Either is this message's problem alone.)
            log.warning(
                "realtime: ignoring a gw_realtime_send payload it cannot read (%s): %.200s",
                type(exc).__name__,
                text,
            )
            return
        body = msg.get("payload") or {}
        frame = {
            "type": "broadcast",
            "event": msg.get("event"),
            "payload": body,
            "meta": {"id": body.get("id") if isinstance(body, dict) else None},
        }
        for channel in self._channels(topic, bool(msg.get("private", True))):
            await channel.socket.send(channel.topic, "broadcast", frame, None)

    async def changes_lost(self) -> None:
        """Tell every channel with postgres_changes bindings it is subscribed to the database again.

        Sent after the change source reconnected, as hosted Realtime does once it resubscribed a
        channel after its change capture dropped: the ``system`` ok "Subscribed to PostgreSQL",
        a channel's second. Changes made meanwhile were not sent, and nothing else says so; the
        sync engine pulls on it. (A ``system`` error here, as before, made clients rejoin, a
        path hosted does not take, so the engine's answer to hosted's was never tested.)"""
        for sock in list(self.sockets):
            for channel in list(sock.channels.values()):
                if channel.bindings:
                    await _send_system(channel, "postgres_changes", "ok", SUBSCRIBED)

    def listening(self) -> bool:
        """Whether any channel has postgres_changes bindings (changes are worth decoding)."""
        return any(ch.bindings for s in self.sockets for ch in s.channels.values())

    async def deliver_changes(self, changes: list[Change]) -> None:
        """Send each change to every channel whose bindings match and whose role may see it."""
        channels = [ch for s in self.sockets for ch in s.channels.values() if ch.bindings]
        if not channels:
            return
        channels = await self._drop_expired(channels)
        candidates: list[tuple[Change, Channel, list[Binding]]] = []
        for change in changes:
            for ch in channels:
                hits = [b for b in ch.bindings if b.matches(change)]
                if hits:
                    candidates.append((change, ch, hits))
        if not candidates:
            return
        await self.visibility.prepare([c for c, _, _ in candidates])
        decided = await self.visibility.decide([(c, ch.claims) for c, ch, _ in candidates])
        for (change, ch, hits), visible in zip(candidates, decided, strict=True):
            if not visible:
                continue
            data = self.visibility.payload(change, ch.claims)
            ids = [b.id for b in hits if self.visibility.passes_filter(change, b.filter)]
            if ids:
                await ch.socket.send(ch.topic, "postgres_changes", {"ids": ids, "data": data}, None)

    async def _drop_expired(self, channels: list[Channel]) -> list[Channel]:
        now = time.time()
        alive = []
        for ch in channels:
            exp = ch.claims.get("exp")
            if isinstance(exp, int | float) and exp < now:
                await self._shut_channel(ch, f"Token has expired {int(now - exp)} seconds ago")
            else:
                alive.append(ch)
        return alive


async def _send_system(channel: Channel, extension: str, status: str, message: str) -> None:
    """Send ``channel`` a ``system`` message (``ref`` null, as Realtime's)."""
    payload = {
        "message": message,
        "status": status,
        "extension": extension,
        "channel": channel.topic.removeprefix("realtime:"),
    }
    await channel.socket.send(channel.topic, "system", payload, None)


def _expired_reason(token: str) -> str:
    # Only called after the signature checked out and exp alone failed.
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        ago = int(time.time() - float(claims.get("exp", 0)))
    except (jwt.InvalidTokenError, TypeError, ValueError):
        ago = 0
    return f"InvalidJWTExpiration: Token has expired {ago} seconds ago"
