"""A hostile (or broken) cloud on 127.0.0.1: a real HTTP server whose answers a test scripts.

Not a mock of the client: the supabase client really connects, sends its requests and parses
what comes back. ``HostileCloud.answer`` maps a request (method and path, query left out) to
``(status, json body)`` (or ``(status, json body, headers)``) or to a callable of the request's
text (its headers and body); anything unscripted gets a 404.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.server import ServerConnection, serve

Answer = tuple[int, Any] | tuple[int, Any, dict[str, str]]  # (status, JSON body[, headers])


def fake_jwt(sub: str, ttl_s: int = 3600) -> str:
    """An unsigned JWT the client can decode (it reads ``exp`` and ``sub``; it does not verify)."""

    def part(obj: dict[str, Any]) -> str:
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"sub": sub, "exp": int(time.time()) + ttl_s, "role": "authenticated", "aud": "x"}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlLXNlY3JldA"


def session_body(access_token: str, refresh_token: str, user_id: str) -> dict[str, Any]:
    """A well-formed GoTrue token answer."""
    return {
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": int(time.time()) + 3600,
        "refresh_token": refresh_token,
        "user": {
            "id": user_id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": "a@example.com",
            "app_metadata": {},
            "user_metadata": {},
            "created_at": "2024-01-01T00:00:00Z",
        },
    }


def echo(status: int) -> Callable[[str], Answer]:
    """An error answer that quotes the request it refused, headers and body (a debugging proxy,
    a broken gateway)."""

    def answer(request: str) -> Answer:
        return status, {"code": "XX001", "message": f"cannot handle: {request}", "msg": request}

    return answer


class HostileCloud:
    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], Answer | Callable[[str], Answer]] = {}
        self.user_id = str(uuid.uuid4())
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1: websockets takes no HTTP/1.0 answer to its upgrade request.
            protocol_version = "HTTP/1.1"

            def _reply(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                request = str(self.headers) + self.rfile.read(size).decode("utf-8", "replace")
                answer = cloud.answers.get((self.command, self.path.split("?", 1)[0]))
                if answer is None:
                    answer = 404, {"message": "not here"}
                elif callable(answer):
                    answer = answer(request)
                status, body, *more = answer
                out = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (more[0] if more else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PATCH = do_DELETE = _reply

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="hostile-cloud", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class HostileRealtime:
    """A websocket server on 127.0.0.1 that plays a hostile realtime endpoint: it answers the
    client's first message (the channel join) with ``reply`` (a JSON text, if any) and then
    closes the connection with ``close_code`` and ``close_reason``. A HostileCloud redirects the
    realtime URL here (``redirect_answer``): the client follows it, as it would any redirect."""

    def __init__(
        self, *, reply: Callable[[dict[str, Any]], str] | None, close_code: int, close_reason: str
    ) -> None:
        self.reply = reply
        self.close_code = close_code
        self.close_reason = close_reason
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, name="hostile-realtime", daemon=True)

    async def _handle(self, ws: ServerConnection) -> None:
        join: dict[str, Any] = {}
        while join.get("event") != "phx_join":  # (a heartbeat may come first)
            join = json.loads(await ws.recv())
        if self.reply is not None:
            await ws.send(self.reply(join))
        await ws.close(self.close_code, self.close_reason)

    async def _serve(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(self._handle, "127.0.0.1", 0) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    def redirect_answer(self) -> Answer:
        """A HostileCloud answer to ``GET /realtime/v1/websocket`` that sends the client here."""
        return 302, {}, {"Location": f"ws://127.0.0.1:{self.port}/realtime/v1/websocket"}

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the hostile realtime server did not start")
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        stop = self._stop
        if stop is not None:

            def done() -> None:
                if not stop.done():
                    stop.set_result(None)

            self._loop.call_soon_threadsafe(done)
        self._thread.join(10)
