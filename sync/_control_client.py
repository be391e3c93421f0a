"""The blocking Python client of the daemon's control API (``sync.control`` has the wire format)."""

from __future__ import annotations

import collections
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from localstore._process_owner import ProcessOwner
from localstore.config import Settings, home_name, load_settings
from sync._control_wire import HOST, ControlError, ControlRequestError, DaemonNotRunningError, _now

# The client's buffer of events that arrive while it waits for a reply; beyond it the oldest are
# discarded and an EVENTS_LOST event is delivered first (ControlClient.events).
MAX_PENDING_EVENTS = 10_000
EVENTS_LOST = "events_lost"


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
