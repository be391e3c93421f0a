"""A TCP fault proxy for sync tests: 127.0.0.1 only, one asyncio loop in one thread.

``FaultProxy(target_port)`` listens on a free port and forwards every connection to the target.
Faults are set at any time from any thread and apply to new *and* open connections (HTTP
keep-alive pools and websockets reuse connections, so per-connect faults alone would miss them):

* ``latency(s)``: delay every forwarded chunk by ``s`` seconds;
* ``reset_next(n)``: the next ``n`` server->client chunks instead reset their connection (RST);
* ``truncate_next(n, keep)``: the next ``n`` server->client chunks are cut to ``keep`` bytes and the
  connection is closed (a truncated response);
* ``blackhole()``: nothing is forwarded any more, connections stay open (a dead network);
* ``refuse()``: every new connection is reset at once, nothing reaches the server (no network:
  the laptop woke up before its Wi-Fi did);
* ``reset_all()``: reset every open connection now;
* ``heal()``: clear every fault (black-holed bytes are then delivered) and reset stalled connections.

``stats`` counts connections and injected faults, so tests can assert a fault really happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

_CHUNK = 64 * 1024


@dataclass
class ProxyStats:
    """What the proxy did."""

    connections: int = 0
    resets: int = 0
    truncations: int = 0
    blackholed_chunks: int = 0


@dataclass
class _Faults:
    latency_s: float = 0.0
    resets: int = 0
    truncations: list[int] = field(default_factory=list)
    blackhole: bool = False
    refuse: bool = False


class FaultProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<target_port>, injecting faults on demand."""

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.stats = ProxyStats()
        self._faults = _Faults()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="localstore-faultproxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._resume = asyncio.Event()
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start listening; ``port`` is set when this returns."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Close the listener and every connection, stop the thread."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    # -- fault controls (any thread) ---------------------------------------------------------------

    def latency(self, seconds: float) -> None:
        """Delay every forwarded chunk by ``seconds``."""
        with self._lock:
            self._faults.latency_s = seconds

    def reset_next(self, n: int = 1) -> None:
        """Reset the connection of each of the next ``n`` server->client chunks."""
        with self._lock:
            self._faults.resets += n

    def truncate_next(self, n: int = 1, *, keep: int = 10) -> None:
        """Cut each of the next ``n`` server->client chunks to ``keep`` bytes, then close."""
        with self._lock:
            self._faults.truncations.extend([keep] * n)

    def blackhole(self) -> None:
        """Stop forwarding anything (connections stay open and stall)."""
        with self._lock:
            self._faults.blackhole = True
        self._loop.call_soon_threadsafe(self._resume.clear)

    def refuse(self) -> None:
        """Reset every new connection before anything is forwarded (open ones are kept)."""
        with self._lock:
            self._faults.refuse = True

    def reset_all(self) -> None:
        """Reset every open connection now."""
        asyncio.run_coroutine_threadsafe(self._reset_open(), self._loop).result(10)

    def heal(self, *, reset_open: bool = True) -> None:
        """Clear every fault; by default also reset open connections (they may be half-dead)."""
        with self._lock:
            self._faults = _Faults()
        self._loop.call_soon_threadsafe(self._resume.set)
        if reset_open:
            self.reset_all()

    # -- loop side -----------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._resume.set()
        try:
            self._loop.run_forever()
        finally:
            tasks = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        with self._lock:
            self.stats.connections += 1
            refuse = self._faults.refuse
        if refuse:
            _abort(cw)
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(cw)
            return
        pair = (cw, uw)
        self._conns.add(pair)
        try:
            await asyncio.gather(
                self._pump(cr, uw, upstream=True, pair=pair),
                self._pump(ur, cw, upstream=False, pair=pair),
            )
        finally:
            self._conns.discard(pair)
            _abort(cw)
            _abort(uw)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                    return
                await self._gate()
                if not upstream and not await self._deliver(data, writer, pair):
                    return
                if upstream:
                    writer.write(data)
                    await writer.drain()
        except (OSError, asyncio.IncompleteReadError, RuntimeError):
            for w in pair:
                _abort(w)

    async def _gate(self) -> None:
        with self._lock:
            latency = self._faults.latency_s
            holed = self._faults.blackhole
        if holed:
            with self._lock:
                self.stats.blackholed_chunks += 1
            await self._resume.wait()
        if latency > 0:
            await asyncio.sleep(latency)

    async def _deliver(
        self,
        data: bytes,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> bool:
        """Forward one server->client chunk with any pending fault; False ends the connection."""
        with self._lock:
            reset = self._faults.resets > 0
            if reset:
                self._faults.resets -= 1
                self.stats.resets += 1
            keep = None
            if not reset and self._faults.truncations:
                keep = self._faults.truncations.pop(0)
                self.stats.truncations += 1
        if reset:
            for w in pair:
                _abort(w)
            return False
        if keep is not None:
            writer.write(data[:keep])
            with contextlib.suppress(OSError, ConnectionError):
                await writer.drain()
            for w in pair:
                w.close()
            return False
        writer.write(data)
        await writer.drain()
        return True

    async def _reset_open(self) -> None:
        for pair in list(self._conns):
            for w in pair:
                _abort(w)

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_open()
        self._resume.set()
        if self._server is not None:
            await self._server.wait_closed()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), the way a crashed peer or a middlebox reset looks."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
