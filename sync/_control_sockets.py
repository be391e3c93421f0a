"""The control server's sockets before they show the token: the budget of sockets held at once,
the size of a handshake and of a first frame, and websockets' handshake noise kept out of the
log (``sync.control``'s safety list)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from sync._control_wire import MAX_FRAME_BYTES

log = logging.getLogger("sync.control")


# Before authentication: an `auth` message, or a request carrying its token, is well under 1 KiB.
MAX_AUTH_FRAME_BYTES = 8 * 1024
# An opening handshake is a few hundred bytes (a webview's cookies for 127.0.0.1, a few KiB).
MAX_HANDSHAKE_BYTES = 32 * 1024


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


def _authenticated(ws: ServerConnection) -> None:
    """Lift the frame limit of a connection that showed the token, and keep its socket from
    eviction (see _CountedConnection)."""
    ws.protocol.max_size = MAX_FRAME_BYTES
    if isinstance(ws, _CountedConnection):
        ws.proven()
