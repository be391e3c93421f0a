"""The gateway's shutdown leaves no accepted socket behind.

asyncio accepts a connection in the listening socket's reader callback and builds its transport one
loop turn later, in a task. If aiohttp's cleanup closes the ``asyncio.Server`` in between, building
the transport fails (``Server._attach``) and asyncio 3.11 drops the accepted socket without closing
it: the client hangs, and the socket is garbage-collected open long after the gateway's loop closed.
The first test stops a gateway at exactly that point; the stress variant restarts one under client
traffic (how ``LocalCloud.restart_gateway()`` hit it in a few restarts in ten).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sync.localcloud.gateway import Gateway, GatewayConfig
from sync.localcloud.stack import LocalCloud

STRESS = os.environ.get("LOCALSTORE_STRESS") == "1"


def _accepts_not_started() -> int:
    """Accepted connections whose transport task has not run yet (asyncio internals, 3.11-3.14)."""
    coros = [task.get_coro() for task in asyncio.all_tasks()]
    return len(
        [
            coro
            for coro in coros
            if inspect.iscoroutine(coro)
            and coro.__name__ == "_accept_connection2"
            and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
        ]
    )


async def _stop_with_an_accept_pending(config: GatewayConfig) -> socket.socket:
    gateway = Gateway(config)
    await gateway.start()
    assert gateway.port is not None
    # A blocking connect to 127.0.0.1 completes in the kernel's backlog at once; asyncio accepts it
    # on a later turn and queues the transport task after that: stop right there.
    client = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    try:
        for _ in range(50):
            await asyncio.sleep(0)
            if _accepts_not_started():
                break
        else:
            pytest.fail("never caught the connection between accept and transport")
        await gateway.stop()
    except BaseException:
        client.close()
        raise
    return client


@contextmanager
def _unclosed_sockets() -> Iterator[list[str]]:
    """Collect the 'unclosed' ResourceWarnings raised inside (gc off, so nothing is hidden)."""
    found: list[str] = []
    gc.disable()
    try:
        yield found
    finally:
        gc.enable()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            gc.collect()
        found += [str(w.message) for w in caught if "unclosed" in str(w.message)]


def test_a_connection_accepted_as_the_gateway_stops_is_closed(cloud: LocalCloud) -> None:
    with _unclosed_sockets() as unclosed:
        client = asyncio.run(_stop_with_an_accept_pending(cloud._gateway_config(0)))
        with client:
            # The server's side is closed (FIN) or was never accepted (RST from the backlog);
            # a dropped socket would leave the client waiting for its timeout instead.
            try:
                assert client.recv(1) == b""
            except ConnectionResetError:
                pass
    assert unclosed == []


def _traffic(port: int, key: str, stop: threading.Event) -> None:
    request = f"GET /rest/v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\napikey: {key}\r\n\r\n".encode()
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                for _ in range(3):  # keep-alive: some connections are idle at shutdown
                    sock.sendall(request)
                    if not sock.recv(65536):
                        break
        except OSError:
            time.sleep(0.001)  # the gateway is restarting


@pytest.mark.stress
@pytest.mark.skipif(not STRESS, reason="30 gateway restarts under traffic: LOCALSTORE_STRESS=1")
def test_restarts_under_traffic_leave_no_socket(cloud: LocalCloud) -> None:
    stop = threading.Event()
    clients = [
        threading.Thread(target=_traffic, args=(cloud.port, cloud.anon_key, stop), daemon=True)
        for _ in range(8)
    ]
    leaked: dict[int, list[str]] = {}
    try:
        for t in clients:
            t.start()
        for i in range(30):
            with _unclosed_sockets() as unclosed:
                cloud.restart_gateway()
            if unclosed:
                leaked[i] = unclosed
    finally:
        stop.set()
        for t in clients:
            t.join(10)
    assert leaked == {}
