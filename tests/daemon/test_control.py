"""The control API against a real (in-process, offline) daemon: tokens, loopback, hostile input."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.connection import Connection

from sync import control
from sync.control import (
    AUTH_TIMEOUT_S,
    MAX_FRAME_BYTES,
    MAX_REQUEST_BYTES,
    MAX_UNAUTHENTICATED,
    ControlClient,
    ControlError,
    ControlRequestError,
    ControlServer,
    OpError,
    is_loopback_peer,
)

from .conftest import eventually, python_process, write_external


def raw(port: int, token: str | None = None, **kw: Any) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    return connect(
        f"ws://127.0.0.1:{port}",
        additional_headers=headers,
        proxy=None,
        open_timeout=10,
        close_timeout=1,
        max_size=None,
        **kw,
    )


def reply_to(ws: Connection, timeout: float = 10.0) -> dict[str, Any]:
    """The next reply (events that arrive in between are skipped)."""
    while True:
        msg = json.loads(ws.recv(timeout=timeout))
        if "ok" in msg:
            return msg


def test_state_file_is_private_and_the_server_listens_on_loopback_only(inproc_daemon) -> None:
    d = inproc_daemon()
    path = d.daemon.settings.paths.state / "daemon.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    state = json.loads(path.read_text())
    assert state["pid"] == os.getpid() and state["port"] == d.daemon.server.port
    assert len(state["token"]) >= 32
    assert d.daemon.server.bound_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("peer", "ok"),
    [
        (("127.0.0.1", 5000), True),
        (("127.8.9.10", 1), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 1, 0, 0), True),
        (("10.0.0.7", 5000), False),
        (("192.168.1.2", 5000), False),
        (("::ffff:10.0.0.1", 1, 0, 0), False),
        (("2001:db8::1", 1, 0, 0), False),
        (("0.0.0.0", 1), False),
        (("localhost", 1), False),
        (None, False),
        ((), False),
        ("not an address", False),
    ],
)
def test_loopback_check(peer: Any, ok: bool) -> None:
    assert is_loopback_peer(peer) is ok


def test_connections_without_the_right_token_are_refused(inproc_daemon) -> None:
    d = inproc_daemon()
    port, token = d.state["port"], d.state["token"]
    with pytest.raises(InvalidStatus) as info:
        raw(port, "wrong-token")
    assert info.value.response.status_code == 401
    # No header: the first message must carry the token.
    for first in (
        {"id": 1, "op": "status"},
        {"id": 2, "op": "auth", "token": "nope"},
        {"id": 3, "op": "auth", "token": token[:-1]},
        {"id": 4, "op": "auth", "token": 12345},
    ):
        with raw(port) as ws:
            ws.send(json.dumps(first))
            reply = json.loads(ws.recv(timeout=10))
            assert reply == {
                "id": first["id"],
                "ok": False,
                "error": {"code": "unauthorized", "message": "a valid token is required"},
            }
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
    with raw(port) as ws:
        ws.send("not json at all")
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "unauthorized"
    # The right token, in the first message or in a request.
    with raw(port) as ws:
        ws.send(json.dumps({"id": "a", "op": "auth", "token": token}))
        assert reply_to(ws) == {"id": "a", "ok": True, "result": {"authenticated": True}}
        ws.send(json.dumps({"id": "b", "op": "ping"}))
        assert reply_to(ws)["result"] == "pong"
    with raw(port) as ws:
        ws.send(json.dumps({"id": 9, "op": "status", "token": token}))
        assert reply_to(ws)["result"]["sync"]["state"] == "offline"
    assert d.daemon.server.stats.refused >= 5


def test_client_ops_on_an_offline_daemon(inproc_daemon) -> None:
    d = inproc_daemon()
    with ControlClient.connect(d.daemon.settings) as c:
        status = c.status()
        assert status["sync"]["state"] == "offline"
        assert status["sync"]["logged_in"] is False
        assert status["watcher"]["state"] == "running"
        with pytest.raises(ControlRequestError) as info:
            c.sync()
        assert info.value.code in ("not_logged_in", "offline")
        assert c.pause()["state"] == "paused"
        assert c.resume()["state"] == "offline"
        metrics = c.metrics()
        assert metrics["counters"]["control_requests"] >= 5
        with pytest.raises(ControlRequestError) as unknown:
            c.request("launch_missiles")
        assert unknown.value.code == "unknown_op"


def test_subscribers_get_store_events(inproc_daemon) -> None:
    d = inproc_daemon()
    root = d.daemon.settings.paths.blueprints
    with d.client() as c:
        c.subscribe()
        write_external(root, "team/flow.blueprint.yaml", "steps: [a]\n")
        saved = c.wait_for(lambda e: e["event"] == "saved", 15)
        assert saved["data"]["path"] == "team/flow.blueprint.yaml"
        assert saved["data"]["origin"] == "external" and saved["data"]["kind"] == "created"
        os.replace(root / "team/flow.blueprint.yaml", root / "team/renamed.blueprint.yaml")
        os.replace(
            root / "team/flow.blueprint.meta.json", root / "team/renamed.blueprint.meta.json"
        )
        moved = c.wait_for(lambda e: e["event"] == "moved", 15)
        assert moved["data"]["path"] == "team/renamed.blueprint.yaml"
        assert moved["data"]["old_path"] == "team/flow.blueprint.yaml"
        (root / "team/renamed.blueprint.yaml").unlink()
        (root / "team/renamed.blueprint.meta.json").unlink()
        deleted = c.wait_for(lambda e: e["event"] == "deleted", 15)
        assert deleted["data"]["id"] == saved["data"]["id"]


# -- hostile input --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ops = st.sampled_from(["status", "metrics", "pause", "resume", "sync", "subscribe", "nope", ""])
requests = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "op": ops | json_values,
        "args": st.dictionaries(st.sampled_from(["wait", "events", "x"]), json_values)
        | json_values,
    },
)
messages = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(json.dumps),
    requests.map(json.dumps),
)


@pytest.fixture
def fuzz_target(inproc_daemon):
    d = inproc_daemon()
    ws = raw(d.state["port"], d.state["token"])
    # websockets' keepalive (the control server's and this client's, every 20 s, on their own
    # threads) takes each ping's payload from the process-global ``random``. Hypothesis compares
    # that global state before and after it draws an example and, when it changed, blames the
    # strategies ("Do not use the `random` module inside strategies"), an error under this
    # suite's warning filter. A ping landing inside a draw is rare on an idle machine and was
    # seen once under load (a slower draw, a longer run). The noise below makes the overlap
    # happen in every run, so the test no longer depends on that timing.
    stop = threading.Event()

    def keepalive_noise() -> None:
        while not stop.wait(0.002):
            random.getrandbits(32)

    noise = threading.Thread(target=keepalive_noise, name="keepalive-noise", daemon=True)
    noise.start()
    yield d, ws
    stop.set()
    noise.join(5)
    ws.close()


# See fuzz_target: another thread's use of the global random state is not the strategies'.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@settings(
    max_examples=int(os.environ.get("LOCALSTORE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=messages)
def test_fuzz_every_message_gets_one_reply_and_the_daemon_survives(fuzz_target, message) -> None:
    d, ws = fuzz_target
    ws.send(message)
    reply = reply_to(ws)
    assert set(reply) == {"id", "ok", "result"} or set(reply) == {"id", "ok", "error"}
    if not reply["ok"]:
        assert set(reply["error"]) <= {"code", "message", "hint"}
        assert isinstance(reply["error"]["code"], str) and reply["error"]["message"]
    ws.send(json.dumps({"id": "alive", "op": "ping"}))
    assert reply_to(ws) == {"id": "alive", "ok": True, "result": "pong"}
    assert d.thread.is_alive() and not d.errors


def test_oversized_requests_and_frames(inproc_daemon) -> None:
    d = inproc_daemon()
    port, token = d.state["port"], d.state["token"]
    with raw(port, token) as ws:
        ws.send(json.dumps({"id": 1, "op": "ping", "pad": "x" * (MAX_REQUEST_BYTES + 10)}))
        assert reply_to(ws)["error"]["code"] == "too_large"
        ws.send(json.dumps({"id": 2, "op": "ping"}))
        assert reply_to(ws)["result"] == "pong"
        ws.send("[" * 100_000 + "]" * 100_000)  # deep nesting: no RecursionError escapes
        assert reply_to(ws)["error"]["code"] in ("bad_json", "too_large")
    with raw(port, token) as ws:
        ws.send("x" * (MAX_FRAME_BYTES + 1))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    with ControlClient(port, token) as c:
        assert c.request("ping") == "pong"


def test_too_many_connections_are_refused_and_the_daemon_goes_on(inproc_daemon) -> None:
    d = inproc_daemon()
    port, token = d.state["port"], d.state["token"]
    opened: list[ClientConnection] = []
    refused = 0
    try:
        for _ in range(40):
            try:
                opened.append(raw(port, token))
            except InvalidStatus as exc:
                assert exc.response.status_code == 503
                refused += 1
        assert len(opened) == 32 and refused == 8
    finally:
        for ws in opened:
            ws.close()
    with ControlClient(port, token) as c:
        assert c.request("ping") == "pong"


def test_clients_without_the_token_cannot_lock_out_a_token_holder(inproc_daemon) -> None:
    d = inproc_daemon()
    port, token = d.state["port"], d.state["token"]
    squatters = [raw(port) for _ in range(40)]  # no token, holding on until the auth timeout
    try:
        with ControlClient(port, token, timeout=5) as c:
            assert c.request("ping") == "pong"
        # A first-message client gets in too: it evicts the oldest squatter.
        with raw(port) as ws:
            ws.send(json.dumps({"id": 1, "op": "auth", "token": token}))
            assert reply_to(ws) == {"id": 1, "ok": True, "result": {"authenticated": True}}
        open_ = 0
        for ws in squatters:
            try:
                ws.recv(timeout=0.01)
            except TimeoutError:
                open_ += 1
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1008
        assert open_ <= MAX_UNAUTHENTICATED
    finally:
        for ws in squatters:
            ws.close()


def _silent_handshake(port: int) -> socket.socket:
    """A websocket client that completes the handshake, then never reads (nor answers a close)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "the server closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_evicted_connections_still_closing_do_not_count_as_authenticated() -> None:
    token = "t" * 40
    server = ControlServer(_Handler(), token=token, max_connections=4)
    server.start()
    squatters: list[socket.socket] = []
    try:
        squatters = [_silent_handshake(server.port) for _ in range(2 * MAX_UNAUTHENTICATED)]
        with ControlClient(server.port, token, timeout=5) as c:
            assert c.request("ping") == "pong"
    finally:
        for sock in squatters:
            sock.close()
        server.stop()
        assert server.join(10)


def test_an_unauthenticated_connection_is_closed_after_the_auth_timeout(inproc_daemon) -> None:
    d = inproc_daemon()
    with raw(d.state["port"]) as ws:
        t0 = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=AUTH_TIMEOUT_S + 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert time.monotonic() - t0 < AUTH_TIMEOUT_S + 2


def test_handshakes_with_an_origin_are_refused_unless_allowed() -> None:
    token = "t" * 40
    server = ControlServer(_Handler(), token=token, allowed_origins=["app://localstore"])
    server.start()
    try:
        for tok in (None, token):  # a web page; even with the right token (defence in depth)
            with pytest.raises(InvalidStatus) as info:
                raw(server.port, tok, origin="http://evil.example")
            assert info.value.response.status_code == 403
        with raw(server.port, token, origin="app://localstore") as ws:
            ws.send(json.dumps({"id": 1, "op": "ping"}))
            assert reply_to(ws)["result"] == "pong"
        with raw(server.port, token) as ws:  # native clients send no Origin
            ws.send(json.dumps({"id": 2, "op": "ping"}))
            assert reply_to(ws)["result"] == "pong"
    finally:
        server.stop()
        assert server.join(10)


class _Handler:
    def handle(self, op: str, args: dict[str, Any]) -> Any:
        if op == "status":
            return {"fine": True}
        if op == "sync":
            raise OpError("offline", "no cloud here")
        raise RuntimeError("a bug in the handler")


def test_a_subscriber_that_does_not_read_is_dropped_with_a_notice() -> None:
    counts: list[int] = []
    server = ControlServer(_Handler(), token="t" * 40, queue_size=10, on_subscribers=counts.append)
    server.start()
    try:
        ws = raw(server.port, "t" * 40)
        ws.send(json.dumps({"id": 1, "op": "subscribe"}))
        assert reply_to(ws)["result"]["subscribed"] is True
        # Flood while the client reads nothing: socket buffers fill, then the bounded queue.
        payload = {"blob": "y" * 4096}
        for _ in range(6000):
            server.publish("saved", payload)
        dropped = threading.Event()
        seen = 0
        while not dropped.is_set():
            msg = json.loads(ws.recv(timeout=30))
            seen += 1
            if msg.get("event") == "dropped":
                dropped.set()
        assert seen < 6000
        assert server.stats.subscribers_dropped == 1
        assert counts == [1, 0] and server.subscribers == 0
        # The connection still answers requests; handler errors become error replies.
        ws.send(json.dumps({"id": 2, "op": "status"}))
        assert reply_to(ws)["result"] == {"fine": True}
        ws.send(json.dumps({"id": 3, "op": "metrics"}))
        err = reply_to(ws)["error"]
        assert err["code"] == "internal" and "a bug in the handler" in err["message"]
        ws.close()
    finally:
        server.stop()
        assert server.join(10)


def test_lone_surrogates_in_replies_and_events_are_sent_escaped() -> None:
    token = "t" * 40
    server = ControlServer(_Handler(), token=token)
    server.start()
    try:
        with raw(server.port, token) as ws:
            ws.send('{"id": "\\ud800", "op": "ping"}')
            assert reply_to(ws) == {"id": "\ud800", "ok": True, "result": "pong"}
            ws.send(json.dumps({"id": 1, "op": "subscribe"}))
            assert reply_to(ws)["result"]["subscribed"] is True
            server.publish("saved", {"path": "bad-\udcff.yaml"})  # an undecodable file name
            assert json.loads(ws.recv(timeout=10))["data"] == {"path": "bad-\udcff.yaml"}
    finally:
        server.stop()
        assert server.join(10)


def test_an_event_that_cannot_be_sent_drops_the_subscriber_with_a_notice() -> None:
    token = "t" * 40
    counts: list[int] = []
    server = ControlServer(_Handler(), token=token, on_subscribers=counts.append)
    server.start()
    try:
        with raw(server.port, token) as ws:
            ws.send(json.dumps({"id": 1, "op": "subscribe"}))
            assert reply_to(ws)["result"]["subscribed"] is True
            circular: dict[str, Any] = {}
            circular["self"] = circular
            server.publish("saved", circular)  # json.dumps raises ValueError in the writer
            notice = json.loads(ws.recv(timeout=10))
            assert notice["event"] == "dropped" and notice["data"]["hint"] == "subscribe again"
            assert counts == [1, 0] and server.stats.subscribers_dropped == 1
            # The connection goes on, and a new subscription streams again.
            ws.send(json.dumps({"id": 2, "op": "subscribe"}))
            assert reply_to(ws)["result"]["subscribed"] is True
            server.publish("saved", {"path": "a.yaml"})
            assert json.loads(ws.recv(timeout=10))["data"] == {"path": "a.yaml"}
    finally:
        server.stop()
        assert server.join(10)


def test_client_reports_a_missing_daemon(tmp_path: Path) -> None:
    from sync.control import DaemonNotRunningError

    with pytest.raises(DaemonNotRunningError):
        ControlClient.connect(tmp_path / "nobody-home")
    with pytest.raises(ControlError):
        ControlClient(1, "token", timeout=2)


@pytest.fixture
def metrics_server() -> Iterator[ControlServer]:
    server = ControlServer(
        _Handler(), token="t" * 40, metrics_port=0, metrics_text=lambda: "localstore_up 1\n"
    )
    server.start()
    yield server
    server.stop()
    assert server.join(10)


def _http_get(port: int, host: str) -> bytes:
    """The whole response; b"" when the server closes (or resets) without one."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return data


def test_metrics_endpoint_answers_only_requests_for_a_local_host(metrics_server) -> None:
    port = metrics_server.metrics_bound_port
    assert port is not None
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1"):
        data = _http_get(port, host)
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"localstore_up 1\n")
        # (Script-loaded by a page elsewhere, text/plain ran as script; cached, it outlived
        # the daemon.)
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        assert b"\r\nx-content-type-options: nosniff" in head
        assert b"\r\ncache-control: no-store" in head
    # DNS rebinding: a page whose name resolves to 127.0.0.1 sends its own name.
    for host in (f"rebind.attacker.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1.nip.io"):
        data = _http_get(port, host)
        assert data.startswith(b"HTTP/1.1 421 ") and b"localstore_up" not in data


def test_metrics_endpoint_cuts_a_trickling_client_at_an_overall_deadline(
    metrics_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "METRICS_HEADER_TIMEOUT_S", 1.0)
    port = metrics_server.metrics_bound_port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        t0 = time.monotonic()
        sock.settimeout(0.3)
        closed = False
        while not closed and time.monotonic() - t0 < 8:
            try:
                closed = sock.recv(1024) == b""
            except TimeoutError:
                sock.sendall(b"X-Slow: 1\r\n")  # each line well within any per-line timeout
            except ConnectionResetError:
                closed = True
        assert closed and time.monotonic() - t0 < 3


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_metrics_endpoint_caps_its_connections_without_locking_a_scraper_out(
    metrics_server,
) -> None:
    """At most 8 connections. Beyond them the server closed the NEWEST: any local user who held
    8 sockets that never finish their request (reconnecting each one cut at the 5 s deadline)
    left the user's Prometheus without an answer for as long as they liked. Now the oldest
    connection still sending its request head is closed, and the scraper is answered."""
    port = metrics_server.metrics_bound_port
    assert port is not None
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    try:
        for sock in idle:  # each accepted: the request is incomplete, so no answer yet
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        # Over the cap: the oldest are closed unanswered, the last 8 held.
        assert eventually(lambda: sum(_closed_by_server(s) for s in idle) == 20 - 8, 10)
        for _ in range(3):
            assert _http_get(port, f"127.0.0.1:{port}").startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in idle:
            sock.close()


class _CycleHandler:
    """A daemon whose sync cycle runs until the test releases it (a first sync of a big home)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        if op == "sync":
            self.release.wait(60)
            return {"report": {}}
        return {"state": "paused" if op == "pause" else "idle"}


def test_sync_requests_waiting_for_a_cycle_do_not_stall_status_and_pause() -> None:
    """Every op shared one 4-thread pool, and a `sync` waits for a whole cycle: four of them (a
    user re-running `localstore sync` after its client timed out, whose requests the daemon
    still runs) left status, pause and resume unanswered until the cycle ended."""
    token = "t" * 40
    handler = _CycleHandler()
    server = ControlServer(handler, token=token)
    server.start()
    waiting: list[ClientConnection] = []
    try:
        for i in range(6):
            ws = raw(server.port, token)
            waiting.append(ws)
            ws.send(json.dumps({"id": i, "op": "sync", "args": {"wait": True}}))
        with ControlClient(server.port, token, timeout=5) as c:
            assert c.status() == {"state": "idle"}
            assert c.pause() == {"state": "paused"}
            assert c.metrics() == {"state": "idle"}
        handler.release.set()
        for ws in waiting:
            assert reply_to(ws, timeout=30)["result"] == {"report": {}}
    finally:
        handler.release.set()
        for ws in waiting:
            ws.close()
        server.stop()
        assert server.join(10)


def test_clients_that_stopped_reading_do_not_hold_up_the_servers_stop() -> None:
    """A client whose socket buffers are full (a hung app, subscribed or not) held the server's
    shut-down until the keepalive gave up on it (up to 40 s): the close frame waited behind
    the unsent events with no time limit, and the shutdown notices were sent one client after
    another, 0.5 s each. The daemon's 4 s stop budget went to waiting for them."""
    from sync.daemon import STOP_BUDGET_S

    token = "t" * 40
    server = ControlServer(_Handler(), token=token)
    server.start()
    stuck: list[ClientConnection] = []
    try:
        for _ in range(4):
            ws = raw(server.port, token)  # reads 16 frames into its queue, then no more
            ws.send(json.dumps({"id": 1, "op": "subscribe"}))
            assert reply_to(ws)["result"]["subscribed"] is True
            stuck.append(ws)
        blob = {"blob": "y" * 32768}
        for _ in range(600):  # ~20 MB per client: more than the socket buffers take
            server.publish("saved", blob)

        def all_blocked() -> bool:
            conns = list(server._conns)
            return len(conns) == 4 and all(
                c.ws.transport.get_write_buffer_size() > 0 for c in conns
            )

        assert eventually(all_blocked, 30)
        assert server.subscribers == 4  # not dropped: their queues did not overflow
        t0 = time.monotonic()
        server.stop()
        api = server._server
        assert api is not None
        assert eventually(lambda: not api.is_serving(), 5)  # now closing
        server.stop()  # idempotent, also while the close is under way
        assert server.join(STOP_BUDGET_S), "the server was still stopping"
        assert time.monotonic() - t0 < STOP_BUDGET_S
    finally:
        server.stop()
        assert server.join(60)
        for ws in stuck:
            ws.close()


def _open_sockets() -> int:
    """TCP sockets this process holds (the in-process server's, the test's own clients')."""
    return sum(1 for fd in os.listdir("/proc/self/fd") if _is_socket(f"/proc/self/fd/{fd}"))


def _is_socket(path: str) -> bool:
    try:
        return os.readlink(path).startswith("socket:")
    except OSError:
        return False


def test_a_flood_of_idle_sockets_cannot_take_the_daemons_file_descriptors(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any local user may connect to 127.0.0.1: sockets that never send a handshake were each
    held for the 2 s handshake timeout, without limit. ~1,000 of them (a loop in any process,
    no token needed) used up the daemon's file descriptors (the usual soft limit is 1024), and
    its saves, index and sync failed with EMFILE. Beyond a budget, new sockets are closed at
    once; a token holder gets in again once the flood stops. Each socket closed before its
    handshake was also an ERROR with a traceback in daemon.log (rotating the real history out):
    now a DEBUG line."""
    # A long handshake timeout, so that what the server holds does not depend on how fast this
    # machine connects 600 sockets (an attacker with a few threads connects faster than 2 s).
    monkeypatch.setattr(control, "AUTH_TIMEOUT_S", 60.0)
    token = "t" * 40
    server = ControlServer(_Handler(), token=token)
    server.start()
    flood = 600
    code = (
        "import socket, sys\n"
        f"socks = [socket.create_connection(('127.0.0.1', {server.port})) for _ in range({flood})]\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    try:
        before = _open_sockets()
        with python_process(code, ready="open"):  # (the attacker)
            budget = 2 * (32 + MAX_UNAUTHENTICATED) + 48
            # (Once the sockets accepted in the last turns of the server's loop are closed.)
            settled = eventually(lambda: _open_sockets() - before <= budget, 10)
            held = _open_sockets() - before
        assert settled, f"the server holds {held} sockets"
        assert eventually(lambda: _open_sockets() <= before, 10)
        with ControlClient(server.port, token, timeout=5) as c:
            assert c.request("ping") == "pong"
        noise = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not noise, noise[0].getMessage()
    finally:
        server.stop()
        assert server.join(10)


def test_a_token_holder_gets_in_while_a_flood_holds_every_socket_of_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beyond the socket budget the server closed the NEWEST socket: another local user who
    held the budget's sockets (no token needed; in the real attack a loop that reconnects each
    socket the server closes) kept this user's own clients out (`status`, `--pause`, `sync`, an
    app's event stream) for as long as it liked. Now the oldest socket that has not shown the
    token goes, and the token holder gets in during the flood."""
    monkeypatch.setattr(control, "AUTH_TIMEOUT_S", 60.0)  # the squatters stay for the whole test
    token = "t" * 40
    server = ControlServer(_Handler(), token=token)
    server.start()
    budget = 2 * (32 + MAX_UNAUTHENTICATED) + 48
    code = (
        "import socket, sys\n"
        f"socks = [socket.create_connection(('127.0.0.1', {server.port})) for _ in range(300)]\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    try:
        before = _open_sockets()
        with python_process(code, ready="open"):  # (the other user)
            assert eventually(lambda: server.stats.refused >= 300 - budget, 10)
            assert eventually(lambda: _open_sockets() - before <= budget, 10)
            for _ in range(3):
                with ControlClient(server.port, token, timeout=5) as c:
                    assert c.request("ping") == "pong"
            # ... and the budget still holds: the files stay usable.
            assert _open_sockets() - before <= budget + 1
    finally:
        server.stop()
        assert server.join(10)


class _PublishingHandler:
    """`status` publishes ``count`` events and answers once the server has sent them all, so
    they all reach the client while it waits for the reply (and are kept for events())."""

    def __init__(self) -> None:
        self.server: ControlServer | None = None
        self.count = 0

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        server = self.server
        assert server is not None
        target = server.stats.events_published + self.count
        for i in range(self.count):
            server.publish("saved", {"i": i})
        assert eventually(
            lambda: (
                server.stats.events_published >= target
                and all(c.queue.empty() for c in list(server._conns))
            ),
            30,
        )
        time.sleep(0.2)  # the last event taken from the queue is on the wire before the reply
        return {"published": self.count}


@pytest.fixture
def publishing_server() -> Iterator[tuple[ControlServer, _PublishingHandler]]:
    handler = _PublishingHandler()
    server = ControlServer(handler, token="t" * 40, queue_size=20_000)
    handler.server = server
    server.start()
    yield server, handler
    server.stop()
    assert server.join(10)


def test_events_the_client_cannot_keep_are_reported_with_an_events_lost_marker(
    publishing_server,
) -> None:
    """The client kept at most 10,000 events that arrived while it waited for a reply and
    dropped the oldest silently: an app following the stream missed changes and never knew.
    Now it counts them and delivers an ``events_lost`` event first, so the app re-reads."""
    server, handler = publishing_server
    cap = control.MAX_PENDING_EVENTS
    with ControlClient(server.port, "t" * 40, timeout=60) as c:
        c.subscribe()
        handler.count = cap + 50
        assert c.status() == {"published": cap + 50}
        got = list(c.events(timeout=1))
        marker, rest = got[0], got[1:]
        assert marker["event"] == "events_lost"
        assert marker["data"]["dropped"] == 50 and marker["data"]["dropped_total"] == 50
        assert marker["data"]["hint"]
        assert [e["data"]["i"] for e in rest] == list(range(50, cap + 50))
        assert c.dropped_events == 50
        # A second overflow: a new marker, the total goes on.
        handler.count = cap + 3
        c.status()
        got = list(c.events(timeout=1))
        assert got[0]["event"] == "events_lost"
        assert got[0]["data"]["dropped"] == 3 and got[0]["data"]["dropped_total"] == 53
        assert len(got) == cap + 1 and c.dropped_events == 53
        # Nothing lost: no marker.
        handler.count = 5
        c.status()
        assert [e["data"]["i"] for e in c.events(timeout=1)] == [0, 1, 2, 3, 4]


class _CountingCycleHandler:
    """Sync cycles that run until the test releases them, counted as they start and finish."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self.finished = 0
        self._lock = threading.Lock()

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        if op != "sync":
            return {"state": "idle"}
        with self._lock:
            self.started += 1
        self.release.wait(60)
        with self._lock:
            self.finished += 1
        return {"report": {}}


@pytest.fixture
def cycle_server() -> Iterator[tuple[ControlServer, _CountingCycleHandler]]:
    handler = _CountingCycleHandler()
    server = ControlServer(handler, token="t" * 40)
    server.start()
    yield server, handler
    handler.release.set()
    server.stop()
    assert server.join(10)
    assert server.wait_ops(10)


def test_sync_requests_of_a_client_that_disconnected_are_cancelled_unless_running(
    cycle_server,
) -> None:
    """A client that sent `sync` requests and went away (a `localstore sync` interrupted, an app
    that quit) left them queued, and the daemon ran a whole cycle for each, for nobody. Those
    not started yet are cancelled when the connection closes; a running one finishes."""
    server, handler = cycle_server
    token = "t" * 40
    running = [raw(server.port, token) for _ in range(2)]  # both sync workers busy
    gone = raw(server.port, token)
    try:
        for i, ws in enumerate(running):
            ws.send(json.dumps({"id": i, "op": "sync", "args": {"wait": True}}))
        assert eventually(lambda: handler.started == 2, 10)
        for i in range(3):  # one waits for a worker, two wait in the connection's queue
            gone.send(json.dumps({"id": 10 + i, "op": "sync", "args": {"wait": True}}))
        time.sleep(0.2)  # (the server has read them)
        gone.close()
        running[0].close()  # its cycle runs: it finishes, its reply goes nowhere
        # The server lets go of the closed client without waiting for a worker.
        assert eventually(lambda: server.stats.connections == 2, 10)
        handler.release.set()
        assert reply_to(running[1], timeout=30)["result"] == {"report": {}}
        running[1].close()
        assert eventually(lambda: server.stats.connections == 0, 10)
        assert server.wait_ops(10)
        assert handler.started == 2 and handler.finished == 2
        # The daemon still runs the cycles of clients that wait for them.
        with ControlClient(server.port, token, timeout=10) as c:
            assert c.sync(timeout=10) == {"report": {}}
        assert handler.started == 3
    finally:
        handler.release.set()
        for ws in (*running, gone):
            ws.close()


class _BlockingStatusHandler:
    """`status` holds its worker until the test releases it; other ops answer at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self._lock = threading.Lock()

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        if op == "status":
            with self._lock:
                self.started += 1
            self.release.wait(60)
        return {"op": op}


def test_a_request_still_queued_for_a_worker_when_the_server_stops_gets_its_connection_closed() -> (
    None
):
    """The stop cancels the requests still waiting for a pool worker. The cancelled future
    raised CancelledError in the connection's handler, which ended it without closing the
    socket (websockets closes only after a handler that returns or raises an Exception), and
    the handler had already taken the connection out of those the stop aborts: the client was
    neither answered nor closed, and waited for its own timeout (an app polling `status` while
    `localstore daemon --stop` ran), and the daemon's socket was never closed."""
    token = "t" * 40
    handler = _BlockingStatusHandler()
    server = ControlServer(handler, token=token, workers=1)
    server.start()
    # No keepalive on the client: it must learn of the stop from the server, not by itself.
    busy = raw(server.port, token, ping_interval=None)
    queued = raw(server.port, token, ping_interval=None)
    try:
        busy.send(json.dumps({"id": 1, "op": "status"}))
        assert eventually(lambda: handler.started == 1, 10)  # the only worker is taken
        queued.send(json.dumps({"id": 2, "op": "metrics"}))
        assert eventually(lambda: server._pool._work_queue.qsize() == 1, 10)  # waits for it
        server.stop()
        handler.release.set()
        assert server.join(10)
        # Answered `shutting_down`, or closed before the reply could go out; never left open.
        with pytest.raises(ConnectionClosed):
            while True:
                msg = json.loads(queued.recv(timeout=20))
                assert msg["id"] == 2 and msg["error"]["code"] == "shutting_down"
        with pytest.raises(ConnectionClosed):
            while True:
                busy.recv(timeout=20)
    finally:
        handler.release.set()
        server.stop()
        server.join(10)
        busy.close()
        queued.close()


def _handshake_reply(port: int, head: bytes) -> bytes:
    """What the server sends back to an opening handshake (b"" when it closes without a word)."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
            while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return data


def test_an_oversized_opening_handshake_is_cut_before_it_is_buffered() -> None:
    """Anyone on the machine may start a handshake, no token needed, and websockets buffers up
    to 128 header lines of 8 KiB each (~1 MiB) before the server sees the request. 120 such
    handshakes at once (within the socket budget) took the daemon's resident memory from 36 to
    166 MiB, and it stayed at ~157 MiB after they had gone: a few seconds of any local process
    left a long-running daemon much bigger for good. A handshake is a few hundred bytes; one
    over MAX_HANDSHAKE_BYTES is closed unanswered."""
    token = "t" * 40
    server = ControlServer(_Handler(), token=token)
    server.start()
    try:
        start = (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
        assert _handshake_reply(server.port, start + b"\r\n").startswith(b"HTTP/1.1 101 ")
        padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 8000) for i in range(100))
        assert len(padding) > control.MAX_HANDSHAKE_BYTES
        assert _handshake_reply(server.port, start + padding + b"\r\n") == b""
        with ControlClient(server.port, token, timeout=5) as c:  # the others go on
            assert c.request("ping") == "pong"
    finally:
        server.stop()
        assert server.join(10)


def test_frames_before_authentication_are_limited_to_a_few_kib() -> None:
    """A client without the token may complete the handshake and then send frames, and each
    was buffered up to the 256 KiB frame limit (the incoming queue holds several) until the
    first message was read and refused: 120 such clients at once (within the socket budget)
    took the daemon from 36 to 276 MiB resident, all of it kept after they had gone. Before
    authentication a frame is limited to MAX_AUTH_FRAME_BYTES (1009 beyond); after it, to
    MAX_FRAME_BYTES again."""
    token = "t" * 40
    server = ControlServer(_Handler(), token=token)
    server.start()
    try:
        big = json.dumps({"id": 1, "op": "auth", "token": token, "pad": "x" * 100_000})
        with raw(server.port) as ws:
            ws.send(big)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        # Authenticated (in the first message or a header), big requests are answered again.
        with raw(server.port) as ws:
            ws.send(json.dumps({"id": 1, "op": "auth", "token": token}))
            assert reply_to(ws)["result"] == {"authenticated": True}
            ws.send(json.dumps({"id": 2, "op": "ping", "pad": "x" * 100_000}))
            assert reply_to(ws)["error"]["code"] == "too_large"
            ws.send(json.dumps({"id": 3, "op": "ping"}))
            assert reply_to(ws)["result"] == "pong"
        with raw(server.port, token) as ws:
            ws.send(json.dumps({"id": 4, "op": "ping", "pad": "x" * 100_000}))
            assert reply_to(ws)["error"]["code"] == "too_large"
    finally:
        server.stop()
        assert server.join(10)


class _RecordingHandler:
    """Records whether each call started after the server's `wait_ops` had said none runs."""

    def __init__(self) -> None:
        self.ops_waited = threading.Event()
        self.started_after_wait = 0
        self.calls = 0

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        self.calls += 1
        if self.ops_waited.is_set():
            self.started_after_wait += 1
        return {"op": op}


def test_a_request_a_worker_has_taken_but_not_started_is_waited_for_at_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon closes the store once `wait_ops` says no handler call runs. A call was counted
    only when its function began, so one a worker had taken off the queue but not yet started
    (a thread switch) was invisible: `wait_ops` returned and the call ran a moment later, on a
    closed store. The fault injected is that thread switch, stretched: a pause in the worker
    between taking the call and starting it."""
    import concurrent.futures.thread as cft

    taken = threading.Event()
    original_run = cft._WorkItem.run

    def run_after_a_pause(item: Any) -> None:
        taken.set()
        time.sleep(0.5)
        original_run(item)

    monkeypatch.setattr(cft._WorkItem, "run", run_after_a_pause)
    token = "t" * 40
    handler = _RecordingHandler()
    server = ControlServer(handler, token=token, workers=1)
    server.start()
    ws = raw(server.port, token, ping_interval=None)
    try:
        ws.send(json.dumps({"id": 1, "op": "status"}))
        assert taken.wait(10)  # a worker holds the call and has not started it
        server.stop()
        assert server.wait_ops(10)
        handler.ops_waited.set()
        assert server.join(10)
        time.sleep(1.0)  # (long enough for a call still on its way to start)
        assert handler.calls == 1 and handler.started_after_wait == 0
    finally:
        server.stop()
        server.join(10)
        ws.close()


def test_event_numbers_reach_a_subscriber_in_order_when_several_threads_publish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each publishing thread drew its event's number, then queued the event for the server's
    loop: a thread switch between the two (injected here as a random pause in the timestamp)
    sent a subscriber 13 before 12. The number is now drawn on the loop, in queue order."""
    real_now = control._now
    rng = random.Random(16)

    def slow_now() -> str:
        time.sleep(rng.random() * 0.002)
        return real_now()

    monkeypatch.setattr(control, "_now", slow_now)
    token = "t" * 40
    server = ControlServer(_Handler(), token=token)
    server.start()
    try:
        with ControlClient(server.port, token, timeout=10) as client:
            client.subscribe()
            per_thread = 100

            def publish(n: int) -> None:
                for i in range(per_thread):
                    server.publish("saved", {"thread": n, "i": i})

            threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            seqs = []
            for event in client.events(timeout=10):
                seqs.append(event["seq"])
                if len(seqs) == 4 * per_thread:
                    break
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        server.stop()
        assert server.join(10)
