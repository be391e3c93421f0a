"""Realtime "something changed" hints for SupabaseRemote, on a background asyncio loop.

Realtime is only a hint to pull (DESIGN.md section 4): events can be lost (no replay after a
reconnect), and the Python realtime client can lose its postgres_changes bindings after its own
auto-reconnect (realtime-py #213, #258). So this module never trusts a channel to heal itself:

* the official ``realtime.AsyncRealtimeClient`` (what ``acreate_client(...).realtime`` is) runs
  with ``auto_reconnect=False`` on a private event loop in a daemon thread;
* a supervisor task builds a *new* client and channel for every (re)subscribe, fires a hint after
  each successful subscribe (the engine pulls then, covering events missed while down), and
  after each later "Subscribed to PostgreSQL" the server sends on a live channel (it
  resubscribed it to the database: changes in that gap were not sent either), and
  every ``health_interval_s`` (and at once when the channel leaves SUBSCRIBED: a server's
  ``system`` error says changes were lost) checks the socket, the channel state and a websocket
  ping; anything
  dead (a reset, a black hole, a closed channel, a gateway restart) is torn down and rebuilt with
  jittered backoff, which grows to minutes after a long run of failures (offline for days, a
  revoked session) and is cut short by :meth:`RealtimeHints.retry_now` (the network or the
  session is back);
* access tokens come from the sync client's auth events (``set_auth``) and are sent to the live
  channel, and every (re)join asks ``token_provider`` for the current token first (refreshed if
  it expired: after a sleep the last token handed out is stale), so realtime RLS follows token
  refreshes without a second auth session (an ``AsyncClient`` would have its own, wire-protocol
  notes section 2.4.7);
* callbacks run on a separate dispatcher thread, coalesced, so a callback that pulls right away
  never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import threading
import uuid
from collections.abc import Callable, Collection
from typing import Any

from pydantic import ValidationError
from realtime import AsyncRealtimeChannel, AsyncRealtimeClient
from realtime.exceptions import NotConnectedError
from realtime.message import ServerMessageAdapter, SuccessSystemPayload
from realtime.types import RealtimePostgresChangesListenEvent, RealtimeSubscribeStates
from websockets.exceptions import ConnectionClosedError

from sync._shown import guard_realtime_logs, without_credentials
from sync._timefmt import span, span_clock

__all__ = ["RealtimeHints"]

log = logging.getLogger(__name__)

# Read when a RealtimeHints is built (tests shorten them). Failed (re)subscribes wait 0.2 s
# doubling to 5 s; after _LONG_RUN failures in a row (about a minute) the network or the session
# is not coming back soon, and retrying every 5 s for days wastes battery and server work: the
# wait keeps doubling up to _LONG_BACKOFF_MAX_S. Success resets it; retry_now() cuts it short.
_BACKOFF_START_S = 0.2
_BACKOFF_MAX_S = 5.0
_LONG_RUN = 20
_LONG_BACKOFF_MAX_S = 300.0


class _ChannelDead(Exception):
    """The channel or its socket stopped working; rebuild it."""


# A frame's own "event" key naming a change. Inside a JSON string (a blueprint's content) its
# quotes are escaped, so content that quotes it does not match.
_CHANGE_FRAME = re.compile(r'"event"\s*:\s*"postgres_changes"')


class _Client(AsyncRealtimeClient):
    """The official client, except that a change it cannot validate is still a hint.

    realtime-py drops a frame its pydantic models refuse, with an ERROR line: the change of a
    row whose meta holds an integer of 5,000 digits or nesting 2,000 deep then woke nobody, and
    waited for the next poll (an hour for an idle daemon). Caught here, not from that log line:
    a logger silenced by an app (or ``--log-level critical``) would have silenced the hint too.
    Only for ``auto_reconnect=False``: the supervisor rebuilds a closed client."""

    # What _listen below uses of the library's internals. supabase is not pinned below 3 (a
    # fresh install takes the newest, realtime moving with it): a release without one of these
    # gets the stock _listen, whose only loss is this hint (the next poll takes the change),
    # rather than a channel that fails on every frame.
    _NEEDS = ("_listen", "_on_connect_error", "_set_channels_errored", "channels", "_ws_connection")

    def __init__(self, url: str, *, on_unreadable: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._on_unreadable = on_unreadable
        self._own_listen = all(hasattr(self, name) for name in self._NEEDS)
        if not self._own_listen:
            log.debug("realtime: this realtime-py lacks what _Client._listen uses; stock _listen")

    async def _listen(self) -> None:
        # realtime 2.x's _listen with auto_reconnect off, but for the frame it cannot read.
        if not self._own_listen:
            await super()._listen()
            return
        ws = self._ws_connection
        if ws is None:
            raise NotConnectedError("_listen")
        try:
            async for msg in ws:
                try:
                    message = ServerMessageAdapter.validate_json(msg)
                except ValidationError:
                    self._on_unreadable(
                        msg if isinstance(msg, str) else msg.decode("utf-8", "replace")
                    )
                    continue
                if channel := self.channels.get(message.topic):
                    channel._handle_message(message)
        except ConnectionClosedError as exc:
            await self._on_connect_error(exc)
        else:
            if self._ws_connection is ws:  # closed by the server (1000, 1001), not by close()
                self._ws_connection = None
                self._set_channels_errored(ws.protocol.close_exc)


class RealtimeHints:
    """One realtime subscription to the user's ``public.blueprints`` changes, kept alive."""

    def __init__(
        self,
        url: str,
        anon_key: str,
        *,
        user_id: str,
        access_token: str,
        on_hint: Callable[[], None],
        token_provider: Callable[[], str] | None = None,
        own_devices: Collection[str] = (),
        health_interval_s: float = 2.0,
        timeout_s: float = 10.0,
        schema: str = "public",
        table: str = "blueprints",
    ) -> None:
        # The anon key rides in the websocket URL, which websockets and the realtime library
        # log (a failed connect quotes it): their loggers and ours drop keys and tokens.
        guard_realtime_logs()
        self._url = url.rstrip("/") + "/realtime/v1"
        self._anon_key = anon_key
        self._user_id = user_id
        self._token = access_token
        # Blocking (it may refresh the session over the network); run off the loop.
        self._token_provider = token_provider
        self._on_hint = on_hint
        self._own_devices = own_devices
        self._health_s = health_interval_s
        self._timeout_s = timeout_s
        self._schema = schema
        self._table = table
        self._init_loop()
        self._init_health()

    def _init_loop(self) -> None:
        """Set up the event loop, its threads and channel, and the hand-off of hints."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._rt: AsyncRealtimeClient | None = None
        self._channel: AsyncRealtimeChannel | None = None
        # Set by the live channel's state callback when it leaves SUBSCRIBED (see _watch).
        self._channel_down: asyncio.Event | None = None
        self._pending = threading.Event()
        # A hint taken and being handed to the engine (between _pending's clearing and the
        # engine's wake-up): a reader of _pending, then this, misses no hint in flight.
        self.dispatching = False
        self._first_attempt = threading.Event()
        # "Subscribed to PostgreSQL" frames on the newest channel (see _on_resubscribed).
        self.db_confirmations = 0
        self._stopping = False
        self._start_lock = threading.Lock()
        self._state_lock = threading.Lock()

    def _init_health(self) -> None:
        """Set up the channel's health: counts, the last error and the retry back-off."""
        self._subscribes = 0
        self._rebuilds = 0
        self._events = 0
        self._subscribed = False
        self._last_error = ""
        self._backoff_start_s = _BACKOFF_START_S
        self._backoff_max_s = _BACKOFF_MAX_S
        self._long_run = _LONG_RUN
        self._long_backoff_max_s = _LONG_BACKOFF_MAX_S
        self._failures = 0  # failed (re)subscribes in a row
        self._retry_in_s = 0.0  # the wait now running before the next try (0: none)
        self._wake: asyncio.Event | None = None
        self._deadline = 0.0  # loop time the wait ends
        self._attempt_at = 0.0  # loop time the last try started
        # When the outage under way began, on span_clock: the loop's clock (monotonic) stops
        # while the laptop sleeps, and a night offline was logged as minutes.
        self._down_since: float | None = None

    # -- public, any thread ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop, supervisor and dispatcher threads (idempotent)."""
        with self._start_lock:
            if self._thread is not None or self._stopping:
                return
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._thread = threading.Thread(
                target=self._run_loop, args=(loop,), name="localstore-realtime", daemon=True
            )
            self._dispatcher = threading.Thread(
                target=self._dispatch, name="localstore-hints", daemon=True
            )
            self._thread.start()
            self._dispatcher.start()
            fut = asyncio.run_coroutine_threadsafe(self._start_supervisor(), loop)
            fut.result(self._timeout_s)

    def wait_subscribed(self, *, timeout_s: float) -> bool:
        """Wait until the first subscribe attempt finished; return whether it is live."""
        self._first_attempt.wait(timeout_s)
        with self._state_lock:
            return self._subscribed

    def set_auth(self, token: str) -> None:
        """Use ``token`` (a fresh access token) for the live channel and every rebuild.

        A new token means the session (and the network) works: a long wait is cut short."""
        loop = self._loop
        self._token = token
        if loop is None or self._stopping or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop stopped between the check and here
            asyncio.run_coroutine_threadsafe(self._apply_token(token), loop)
        self.retry_now()

    def retry_now(self) -> None:
        """Cut a long reconnect wait short: the network or the session is back. Any thread.

        Cheap when there is no long wait (call it after every call that got through). The
        next try comes at most ``_BACKOFF_MAX_S`` after the last one, so a stream of calls
        cannot make it retry faster than the normal cadence. A try that fails again keeps the
        grown backoff; only a success resets it."""
        if self._retry_in_s <= self._backoff_max_s:
            return
        loop = self._loop
        if loop is None or self._stopping:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._shorten_wait)

    def state(self) -> dict[str, Any]:
        """Health counters: subscribed, subscribes (incl. resubscribes), rebuilds, events, error,
        failures (failed subscribes in a row) and retry_in_s (the wait now running, 0 if none)."""
        with self._state_lock:
            return {
                "subscribed": self._subscribed,
                "subscribes": self._subscribes,
                "rebuilds": self._rebuilds,
                "events": self._events,
                "last_error": self._last_error,
                "failures": self._failures,
                "retry_in_s": self._retry_in_s,
            }

    def close(self) -> None:
        """Stop the supervisor, close the socket, stop both threads. Idempotent."""
        with self._start_lock:
            if self._stopping:
                return
            self._stopping = True
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            with contextlib.suppress(RuntimeError):
                fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
                try:
                    fut.result(self._timeout_s)
                except TimeoutError:
                    log.warning("realtime did not shut down in time; stopping its loop")
                loop.call_soon_threadsafe(loop.stop)
            thread.join(self._timeout_s)
        self._pending.set()
        if self._dispatcher is not None:
            self._dispatcher.join(self._timeout_s)
        self._first_attempt.set()

    # -- threads -----------------------------------------------------------------------------------

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            _cancel_all(loop)
            loop.close()

    def _dispatch(self) -> None:
        while True:
            self._pending.wait()
            if self._stopping:
                return
            self.dispatching = True
            self._pending.clear()
            try:
                self._on_hint()
            except Exception:  # a subscriber bug must not stop later hints
                log.exception("a realtime hint callback failed")
            finally:
                self.dispatching = False

    def _hint(self) -> None:
        self._pending.set()

    # -- loop side ---------------------------------------------------------------------------------

    async def _start_supervisor(self) -> None:
        self._wake = asyncio.Event()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._attempt_at = loop.time()
            try:
                await self._subscribe()
            except Exception as exc:  # noqa: BLE001 - any failure means "rebuild later"
                self._mark(False, f"subscribe failed: {type(exc).__name__}: {exc}")
                self._first_attempt.set()
                await self._teardown(graceful=False)
                with self._state_lock:
                    self._failures += 1
                    failures = self._failures
                self._outage_begins(f"cannot connect: {exc}")
                if failures == self._long_run + 1:
                    log.info(
                        "realtime has failed %d times in a row (%s); retrying less often, up "
                        "to every %.0f s (polling continues)",
                        failures - 1,
                        exc,
                        self._long_backoff_max_s,
                    )
                await self._wait(self._backoff_s(failures) * random.uniform(0.5, 1.0))
                continue
            with self._state_lock:
                self._failures = 0
                self._subscribes += 1
            # A pull after every (re)subscribe: events while down are never replayed. Asked
            # before the state says subscribed, so whoever sees "subscribed" sees that pull
            # asked for too: a status read between the two took the engine for settled, and
            # the pull then came unannounced (tests/sync_supabase/test_realtime.py).
            self._hint()
            self._mark(True, "")
            if self._down_since is not None:
                log.info("realtime reconnected after %s", span(span_clock() - self._down_since))
                self._down_since = None
            self._first_attempt.set()
            reason = await self._watch()
            self._mark(False, reason)
            with self._state_lock:
                self._rebuilds += 1
            if not self._stopping:
                self._outage_begins(reason)
            await self._teardown(graceful=False)

    def _outage_begins(self, reason: str) -> None:
        # A laptop changes networks daily: each lost connection is expected and heals itself, so
        # an outage is one WARNING (and one INFO with its length once reconnected), and the
        # failed tries in between are DEBUG. (The realtime library's own ERROR lines for the
        # same events are re-levelled in the daemon's log: sync._daemon_log._QuietReconnects.)
        if self._down_since is None:
            self._down_since = span_clock()
            log.warning("realtime is down (%s); reconnecting, sync polls meanwhile", reason)
        else:
            log.debug("realtime still down (%s)", reason)

    def _backoff_s(self, failures: int) -> float:
        """The wait (before jitter) after ``failures`` failed tries in a row."""
        if failures <= self._long_run:
            return min(self._backoff_start_s * 2 ** min(failures - 1, 30), self._backoff_max_s)
        grown = self._backoff_max_s * 2 ** min(failures - self._long_run, 30)
        return min(grown, self._long_backoff_max_s)

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if :meth:`retry_now` shortens the wait."""
        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None
        self._deadline = loop.time() + delay
        with self._state_lock:
            self._retry_in_s = delay
        try:
            while not self._stopping:
                remaining = self._deadline - loop.time()
                if remaining <= 0:
                    return
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), remaining)
        finally:
            with self._state_lock:
                self._retry_in_s = 0.0

    def _shorten_wait(self) -> None:
        # Loop side of retry_now: no sooner than the normal cadence after the last try.
        self._deadline = min(self._deadline, self._attempt_at + self._backoff_max_s)
        if self._wake is not None:
            self._wake.set()

    async def _current_token(self) -> str:
        provider = self._token_provider
        if provider is None:
            return self._token
        try:
            token = await asyncio.get_running_loop().run_in_executor(None, provider)
        except Exception as exc:  # noqa: BLE001 - a join with the last token says the rest
            log.info("realtime could not get a fresh access token (%s); using the last one", exc)
            return self._token
        self._token = token
        return token

    async def _subscribe(self) -> None:
        token = await self._current_token()
        rt = _Client(
            self._url,
            on_unreadable=self._on_unreadable,
            token=self._anon_key,
            auto_reconnect=False,
            max_retries=1,
            timeout=max(1, int(self._timeout_s)),
        )
        self._rt = rt
        rt.access_token = token
        channel = rt.channel(f"localstore-sync-{uuid.uuid4().hex[:12]}")
        self._channel = channel
        channel.on_postgres_changes(
            RealtimePostgresChangesListenEvent.All,
            self._on_change,
            table=self._table,
            schema=self._schema,
            filter=f"owner=eq.{self._user_id}",
        )
        channel.on_system(self._on_resubscribed())
        down = self._channel_down = asyncio.Event()

        def on_state(state: RealtimeSubscribeStates, _error: Exception | None) -> None:
            if state is not RealtimeSubscribeStates.SUBSCRIBED:
                down.set()

        await asyncio.wait_for(channel.subscribe(on_state), self._timeout_s)
        if not channel.is_joined:
            raise _ChannelDead(f"the join ended in state {channel.state.value}")

    def _on_resubscribed(self) -> Callable[[SuccessSystemPayload], None]:
        """A channel's ``system`` callback: every "Subscribed to PostgreSQL" after its first is a hint.

        Hosted Realtime resubscribes a channel to the database 1-3 s after its change capture
        (CDC) dropped, or after an ``access_token`` push, and says so with that ``system`` ok;
        changes committed in between are never sent. Only the first one (the join's own) was
        expected, so such a gap waited for the next poll (an hour for an idle daemon). A pull
        with nothing new is one small RPC, so every later one pulls."""
        confirmations = 0
        # (The newest channel's count, shown: tests wait for the join's own before feeding frames.)
        self.db_confirmations = 0

        def on_system(payload: SuccessSystemPayload) -> None:
            nonlocal confirmations
            if payload.extension != "postgres_changes":
                return
            confirmations += 1
            self.db_confirmations = confirmations
            if confirmations > 1:
                log.debug(
                    "realtime: the server resubscribed the channel (%s); pulling", payload.message
                )
                self._hint()

        return on_system

    async def _watch(self) -> str:
        """Return (with a reason) once the channel or its socket is dead."""
        while not self._stopping:
            down = self._channel_down
            assert down is not None
            # Not a plain sleep: a server's system error (changes were lost, re-read) errors the
            # channel, and the library rejoins it by itself a second later. A check every
            # health_interval_s mostly saw it joined again, so no rebuild and no pull followed,
            # and the lost changes waited for the next poll.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(down.wait(), self._health_s)
            if down.is_set():
                return "the server errored the channel"
            rt, channel = self._rt, self._channel
            if rt is None or channel is None or not rt.is_connected:
                return "socket closed"
            if not channel.is_joined:
                return f"channel {channel.state.value}"
            ws = rt._ws_connection  # no public ping: a black-holed socket looks connected
            if ws is None:
                return "socket closed"
            try:
                pong = await ws.ping()
                await asyncio.wait_for(pong, self._timeout_s)
            except Exception as exc:  # noqa: BLE001 - any ping failure means dead
                return f"ping failed: {type(exc).__name__}"
        return "closing"

    async def _teardown(self, *, graceful: bool) -> None:
        rt, self._rt, self._channel = self._rt, None, None
        if rt is None:
            return
        for channel in list(rt.channels.values()):
            channel.rejoin_timer.reset()
        ws = rt._ws_connection
        if ws is not None and not graceful:
            ws.transport.abort()  # no close handshake over a connection that may be dead
        try:
            await asyncio.wait_for(rt.close(), 2.0)
        except Exception as exc:  # noqa: BLE001 - the socket is being thrown away anyway
            log.debug("realtime close: %s: %s", type(exc).__name__, exc)
            if ws is not None:
                ws.transport.abort()

    async def _apply_token(self, token: str) -> None:
        rt = self._rt
        if rt is None:
            return
        try:
            await rt.set_auth(token)
        except Exception as exc:  # noqa: BLE001 - a failed push shows up in the health check
            log.info("realtime token update failed (%s); the health check will rebuild", exc)

    async def _shutdown(self) -> None:
        task = self._supervisor
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._teardown(graceful=False)  # a hint socket needs no close handshake

    def _on_change(self, payload: Any) -> None:
        with self._state_lock:
            self._events += 1
        if self._is_own_write(payload):
            return
        self._hint()

    def _on_unreadable(self, frame: str) -> None:
        # Its text is not logged: a change frame carries the blueprint's content (10 MiB).
        if _CHANGE_FRAME.search(frame) is None:
            log.warning(
                "realtime: dropped a message the client could not read (%d characters)", len(frame)
            )
            return
        log.warning(
            "realtime: a change came in a message the client could not read (%d characters, "
            "not logged); pulling, and that row is parked if its meta cannot be held",
            len(frame),
        )
        with self._state_lock:
            self._events += 1
        self._hint()  # (whose write it was cannot be read either)

    def _is_own_write(self, payload: Any) -> bool:
        # This remote's own pushes come back too; they carry the device id, and skipping them
        # saves one pull per push. Anything without a device (a DELETE) is a hint.
        data = payload.get("data") if isinstance(payload, dict) else None
        record = data.get("record") if isinstance(data, dict) else None
        device = record.get("device") if isinstance(record, dict) else None
        return isinstance(device, str) and device in self._own_devices

    def _mark(self, subscribed: bool, error: str) -> None:
        with self._state_lock:
            self._subscribed = subscribed
            if error:  # (shown by status displays: an error may quote the URL and its key)
                self._last_error = without_credentials(error)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and reap every task left on a stopped loop (the realtime client's own tasks)."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
