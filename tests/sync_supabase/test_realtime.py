"""Realtime hints end to end: a save on device A reaches device B's files through realtime and B's
engine (which polls only hourly here, so only the hint can wake it), also after the channel died."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import psycopg
import pytest
from realtime.message import ServerMessageAdapter
from supabase_auth.types import Session

from localstore.events import Event
from sync import _realtime, _timefmt
from sync.localcloud.gateway.changes import APPLICATION_NAME as FEED_APP
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import SupabaseRemote, _stop_refresh_timer
from tests.suspend_clock import SleepsBetweenReadings
from tests.sync_contract.contract import POISONS

from .conftest import STRESS, Homes, new_email, poison_meta, shift_client_clock
from .devices import Device, device_pair
from .faultproxy import FaultProxy


@pytest.fixture
def pair(cloud: LocalCloud, proxy: FaultProxy, tmp_path: Path) -> Iterator[tuple[Device, Device]]:
    with device_pair(tmp_path, cloud.anon_key, new_email(), cloud.url, proxy.url) as devices:
        yield devices


def _arrivals(dev: Device) -> tuple[threading.Event, list[str]]:
    seen: list[str] = []
    got = threading.Event()

    def on_event(ev: Event) -> None:
        if ev.origin == "remote":
            seen.append(ev.path)
            got.set()

    dev.store.subscribe(on_event)
    return got, seen


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_save_on_a_reaches_b_through_realtime(pair: tuple[Device, Device]) -> None:
    a, b = pair
    b.engine.start()
    assert b.remote.realtime_state["subscribed"]
    got, seen = _arrivals(b)
    a.store.save("rt/one.blueprint.yaml", "x: 1\n", name="one")
    assert a.sync() is None
    assert got.wait(10), "device B never heard of A's save"
    assert seen == ["rt/one.blueprint.yaml"]
    assert (b.store.root / "rt/one.blueprint.yaml").read_text() == "x: 1\n"


@pytest.mark.parametrize("kind", sorted(POISONS))
def test_a_change_the_client_cannot_read_still_wakes_b(
    pair: tuple[Device, Device], cloud: LocalCloud, kind: str
) -> None:
    """A change of a row whose meta the realtime client cannot validate (an integer of 5,000
    digits, nesting 2,000 deep) still says something changed: B pulls and parks that row now.

    The library dropped such a frame (logging it), no hint fired, and B learned of the change
    only at its next poll (hourly here)."""
    a, b = pair
    row = a.store.save("rt/poisoned.blueprint.yaml", "p: 1\n", name="poisoned").id
    assert a.sync() is None
    assert b.sync() is None
    b.engine.start()
    assert b.remote.realtime_state["subscribed"]
    assert _wait_for(lambda: _quiet(b), 15)  # the start's sync and the subscribe's hint are done
    events = b.remote.realtime_state["events"]
    poison_meta(cloud, row, kind)  # (a superuser's write: A's device id stays on the row)
    assert _wait_for(lambda: b.engine.quarantined(), 10), (
        f"B never heard of the change: {b.remote.realtime_state}"
    )
    (entry,) = b.engine.quarantined()
    assert (entry.id, entry.code) == (row, "invalid_remote")
    assert b.remote.realtime_state["events"] == events + 1


@pytest.mark.parametrize("fault", ["reset", "gateway-restart"])
def test_hints_survive_a_dead_channel(
    fault: str, pair: tuple[Device, Device], proxy: FaultProxy, cloud: LocalCloud
) -> None:
    a, b = pair
    b.engine.start()
    before = b.remote.realtime_state["subscribes"]
    if fault == "reset":
        proxy.reset_all()
    else:
        cloud.restart_gateway()
    assert _wait_for(lambda: b.remote.realtime_state["subscribes"] > before, 15), (
        b.remote.realtime_state
    )
    got, _ = _arrivals(b)
    a.store.save("rt/two.blueprint.yaml", "y: 2\n", name="two")
    assert _wait_for(lambda: a.sync() is None, 10)
    assert got.wait(10), f"no hint after the channel was rebuilt: {b.remote.realtime_state}"
    assert (b.store.root / "rt/two.blueprint.yaml").read_text() == "y: 2\n"


def test_a_channel_rebuilt_after_sleep_joins_with_a_fresh_token(
    cloud: LocalCloud, homes: Homes
) -> None:
    """Review s8: after a sleep the channel was rebuilt with the access token realtime was last
    given, long expired; every join was refused until some poll happened to refresh it."""
    with FaultProxy(cloud.port) as proxy:
        _, remote = homes.device(proxy.url, cloud.anon_key, new_email())
        remote.subscribe(lambda: None)
        assert remote.realtime_state["subscribed"]
        # The machine slept for an hour: timers stood still (monotonic clocks stop in suspend),
        # so the last token handed out (to the client, the keychain and realtime) has expired by
        # the wall clock, and the network dropped.
        _stop_refresh_timer(remote._client)
        remote._client.auth._notify_all_subscribers("TOKEN_REFRESHED", _slept(remote, cloud))
        before = remote.realtime_state["subscribes"]
        proxy.reset_all()
        assert _wait_for(lambda: remote.realtime_state["subscribes"] > before, 15), (
            remote.realtime_state
        )
        assert remote.realtime_state["subscribed"]


def test_a_channel_rebuilt_after_sleep_joins_with_a_fresh_token_on_a_clock_hours_behind(
    cloud: LocalCloud, homes: Homes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token expiry is the server's clock (its ``exp``), and this machine's clock runs two hours
    behind (a dual boot's RTC in local time, NTP off): a token that expired an hour ago looked
    good for another hour, realtime rejoined with it and was refused until a poll's 401
    happened to refresh it (up to a poll interval, then realtime's backoff), after every sleep.
    Expiry is judged on the server's clock, learned from its responses' Date header."""
    with FaultProxy(cloud.port) as proxy:
        _, remote = homes.device(proxy.url, cloud.anon_key, new_email())
        shift_client_clock(monkeypatch, -7200.0)
        remote.subscribe(lambda: None)
        assert remote.pull(0).changes == []  # the daemon's last poll before the sleep
        assert remote.realtime_state["subscribed"]
        _stop_refresh_timer(remote._client)
        remote._client.auth._notify_all_subscribers("TOKEN_REFRESHED", _slept(remote, cloud))
        before = remote.realtime_state["subscribes"]
        proxy.reset_all()
        assert _wait_for(lambda: remote.realtime_state["subscribes"] > before, 15), (
            remote.realtime_state
        )
        assert remote.realtime_state["subscribed"]


def _slept(remote: SupabaseRemote, cloud: LocalCloud) -> Session:
    """The remote's session as an hour-long sleep leaves it: its access token expired."""
    session = remote._storage.durable_session()
    assert session is not None
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 7200, exp=now - 3600)
    token = jwt.encode(claims, cloud.jwt_secret, algorithm="HS256")
    return session.model_copy(update={"access_token": token, "expires_at": now - 3600})


@pytest.mark.skipif(sys.platform == "win32", reason="time.monotonic() counts sleep on Windows")
def test_a_night_offline_is_logged_as_a_night(
    cloud: LocalCloud,
    homes: Homes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The outage's length was measured on the event loop's clock (monotonic), which stands
    still while a laptop sleeps: a night with the lid closed was "reconnected after 3 s"."""
    with FaultProxy(cloud.port) as proxy:
        _, remote = homes.device(proxy.url, cloud.anon_key, new_email())
        remote.subscribe(lambda: None)
        assert remote.realtime_state["subscribed"]
        monkeypatch.setattr(_timefmt, "time", SleepsBetweenReadings())

        def ends() -> list[str]:
            return [r.getMessage() for r in caplog.records if "reconnected" in r.getMessage()]

        with caplog.at_level(logging.INFO, logger="sync._realtime"):
            proxy.reset_all()  # the network drops: the channel is rebuilt
            assert _wait_for(lambda: ends(), 15), remote.realtime_state
    assert ends() == ["realtime reconnected after 10.0 h"]


def test_reconnects_back_off_while_offline_and_retry_once_the_network_is_back(
    cloud: LocalCloud, homes: Homes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review s8: offline for days (or with a revoked session) realtime retried about every
    5 s forever. After a long run of failures the wait grows (capped); a call that gets
    through (the network is back) or a new token makes it try at once; success resets it."""
    # The production run (20 failures, 5 s, then up to 5 min) shortened to fit a test.
    monkeypatch.setattr(_realtime, "_BACKOFF_MAX_S", 0.1)
    monkeypatch.setattr(_realtime, "_LONG_RUN", 3)
    monkeypatch.setattr(_realtime, "_LONG_BACKOFF_MAX_S", 8.0)
    with FaultProxy(cloud.port) as proxy:
        _, remote = homes.device(proxy.url, cloud.anon_key, new_email())
        proxy.refuse()  # offline
        remote.subscribe(lambda: None)
        assert not remote.realtime_state["subscribed"]
        assert _wait_for(lambda: remote.realtime_state["retry_in_s"] >= 3.0, 20), (
            remote.realtime_state
        )
        state = remote.realtime_state
        assert state["failures"] > 3 and state["retry_in_s"] <= 8.0
        tries = proxy.stats.connections
        time.sleep(1.0)
        assert proxy.stats.connections == tries  # waiting, not retrying every 0.1 s
        proxy.heal()
        assert remote.server_info().protocol == 1  # the engine's next call gets through
        assert _wait_for(lambda: remote.realtime_state["subscribed"], 1.5), remote.realtime_state
        assert remote.realtime_state["failures"] == 0


def _quiet(dev: Device) -> bool:
    """Whether dev's engine is idle with nothing due before its hourly poll: no hint waiting to
    be dispatched or being dispatched, no wake-up pending, no cycle running, no failed sync
    being retried. Read in the order a hint goes through them, so that one in flight is never
    between two reads unseen (before dispatching and cycle_running, a read between the
    dispatcher's clearing of the hint and the engine's wake-up, or between the wake-up's
    clearing and the cycle's start, found B settled under load, and its pull then met the
    outage: a failed sync whose retry, not the resubscribe, would pull)."""
    engine, hints = dev.engine, dev.remote._hints
    return (
        hints is not None
        and not hints._pending.is_set()
        and not hints.dispatching
        and engine._wake_at is None
        and not engine.cycle_running
        and engine._failures == 0
        and engine.status().state == "idle"
    )


def test_a_save_made_while_the_channel_was_down_arrives_through_the_resubscribe_pull(
    pair: tuple[Device, Device], proxy: FaultProxy
) -> None:
    """Field notes: realtime has no replay after a reconnect. A's save is committed, and its
    change event sent, while B has no channel; B polls only hourly, has nothing to push and
    no failed sync to retry, so only the pull that follows the resubscribe can bring it."""
    a, b = pair
    # A listens too, so the gateway hands each change out as it reads it (as Realtime does),
    # and A's event count says when this one has gone by.
    a.remote.subscribe(lambda: None)
    assert b.sync() is None  # B's first sync done, so the loop's start has nothing to fetch
    b.engine.start()
    assert a.remote.realtime_state["subscribed"] and b.remote.realtime_state["subscribed"]
    # The start's sync and the subscribe's hint run their course (both reach the server): after
    # that B tries nothing during the outage below.
    assert _wait_for(lambda: _quiet(b) and _quiet(b), 15)
    got, seen = _arrivals(b)
    before = b.remote.realtime_state["subscribes"]
    proxy.refuse()  # B is offline: its channel dies and cannot come back yet
    proxy.reset_all()
    assert _wait_for(lambda: not b.remote.realtime_state["subscribed"], 15), b.remote.realtime_state
    events = a.remote.realtime_state["events"]
    a.store.save("rt/while-down.blueprint.yaml", "z: 3\n", name="while-down")
    assert a.sync() is None  # A talks to the stack directly: the row exists now
    # Its change event has been sent (to A, which skips its own): nothing will replay it.
    assert _wait_for(lambda: a.remote.realtime_state["events"] > events, 15)
    assert not got.is_set()
    assert _quiet(b), "B tried to sync during the outage: a retry, not the resubscribe, would pull"
    proxy.heal()
    assert _wait_for(lambda: b.remote.realtime_state["subscribes"] > before, 15), (
        b.remote.realtime_state
    )
    assert got.wait(10), f"the save made while down never reached B: {b.remote.realtime_state}"
    assert seen == ["rt/while-down.blueprint.yaml"]
    assert (b.store.root / "rt/while-down.blueprint.yaml").read_text() == "z: 3\n"


# Channel rebuilds measured after the warm-up (a daemon on a laptop rebuilds a few a day, for
# months); enough for a leak of one task, socket or thread per rebuild to stand out.
REBUILDS = 300 if STRESS else 25


def _realtime_resources(remote: SupabaseRemote, proxy: FaultProxy) -> dict[str, int]:
    hints = remote._hints
    assert hints is not None and hints._loop is not None
    return {
        "tasks": len(asyncio.all_tasks(hints._loop)),
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        # The client's sockets: the proxy closes both sides of each connection it resets.
        "proxy_connections": len(proxy._conns),
    }


def test_channel_rebuilds_leave_no_tasks_sockets_or_threads_behind(
    cloud: LocalCloud, homes: Homes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Realtime builds a new client and channel for every rebuild (a reset, a gateway restart):
    the old one's socket, its listen, heartbeat and keepalive tasks, and no thread may outlive
    it. Neither soak covers this (both sync with a MemoryRemote or without faults)."""
    monkeypatch.setattr(_realtime, "_BACKOFF_START_S", 0.01)
    monkeypatch.setattr(_realtime, "_BACKOFF_MAX_S", 0.05)
    with FaultProxy(cloud.port) as proxy:
        _, remote = homes.device(
            proxy.url, cloud.anon_key, new_email(), realtime_health_s=0.1, timeout_s=2.0
        )
        remote.subscribe(lambda: None)
        assert remote.realtime_state["subscribed"]

        def rebuild() -> None:
            before = remote.realtime_state["subscribes"]
            proxy.reset_all()
            assert _wait_for(lambda: remote.realtime_state["subscribes"] > before, 15), (
                remote.realtime_state
            )

        for _ in range(5):
            rebuild()
        first = _realtime_resources(remote, proxy)
        for _ in range(REBUILDS):
            rebuild()
        last = _realtime_resources(remote, proxy)
    report = f"after the warm-up: {first}; after {REBUILDS} more rebuilds: {last}"
    assert last["tasks"] <= first["tasks"] + 2, report
    assert last["threads"] <= first["threads"] + 1, report
    assert last["fds"] <= first["fds"] + 4, report
    assert last["proxy_connections"] <= 2, report


def test_a_resubscribe_after_the_change_feed_dropped_pulls_at_once(
    cloud: LocalCloud, homes: Homes
) -> None:
    """The gateway's change feed lost its connection (here: its backend terminated): changes made
    meanwhile were never sent. Once it is back it sends each channel a second ``system`` ok
    "Subscribed to PostgreSQL", as hosted Realtime does 1-3 s after its change capture dropped,
    the channel staying joined. That must mean a pull now: only the first one (the join's) was
    expected, and the lost change waited for the next poll, an hour for an idle daemon. (A
    health check of a minute here: only that message counts.)"""
    _, remote = homes.device(cloud.url, cloud.anon_key, new_email(), realtime_health_s=60.0)
    hints = threading.Semaphore(0)
    remote.subscribe(hints.release)
    assert remote.realtime_state["subscribed"]
    assert hints.acquire(timeout=10)  # the subscribe's own hint
    before = remote.realtime_state
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
            (FEED_APP,),
        )
    assert hints.acquire(timeout=15), f"no pull after the resubscribe: {remote.realtime_state}"
    after = remote.realtime_state
    assert after["subscribed"]
    assert (after["subscribes"], after["rebuilds"]) == (before["subscribes"], before["rebuilds"])


def _system_frame(topic: str, status: str, extension: str, message: str) -> str:
    channel = topic.removeprefix("realtime:")
    payload = {"channel": channel, "extension": extension, "message": message, "status": status}
    return json.dumps({"event": "system", "topic": topic, "payload": payload, "ref": None})


class _FedChannel:
    """A live hints channel (on the local stack) fed ``system`` frames as the server sends them,
    and counting the hints it fires. Built once the join's own "Subscribed to PostgreSQL" is in."""

    def __init__(self, remote: SupabaseRemote) -> None:
        self.fired = 0
        hints = remote._hints
        assert hints is not None and hints._loop is not None and hints._channel is not None
        self.hints, self.loop, self.channel = hints, hints._loop, hints._channel
        # (Asked of the channel's own count: a callback added now misses a message already in.)
        confirmed = _wait_for(lambda: hints.db_confirmations >= 1, 10)
        assert confirmed, "the join's own system message never came"
        hint = hints._hint

        def counted() -> None:
            self.fired += 1
            hint()

        hints._hint = counted  # type: ignore[method-assign]

    def feed(self, status: str, extension: str, message: str) -> int:
        """Hand the channel one frame on its loop; return the hints it fired."""
        frame = ServerMessageAdapter.validate_json(
            _system_frame(self.channel.topic, status, extension, message)
        )
        fired = self.fired

        async def handle() -> None:
            self.channel._handle_message(frame)

        asyncio.run_coroutine_threadsafe(handle(), self.loop).result(10)
        return self.fired - fired


def test_every_subscribed_to_postgresql_after_the_joins_own_is_a_hint(
    cloud: LocalCloud, homes: Homes
) -> None:
    """Hosted Realtime also resubscribes after an ``access_token`` push, and retries a failed
    subscription: each later ok is a gap in the changes sent, so each is a pull. Other ``system``
    oks (hosted's "Replication connection established") are not."""
    _, remote = homes.device(cloud.url, cloud.anon_key, new_email(), realtime_health_s=60.0)
    remote.subscribe(lambda: None)
    fed = _FedChannel(remote)
    assert fed.feed("ok", "system", "Replication connection established") == 0
    assert fed.feed("ok", "postgres_changes", "Subscribed to PostgreSQL") == 1
    assert fed.feed("ok", "postgres_changes", "Subscribed to PostgreSQL") == 1


def test_a_server_system_error_rebuilds_the_channel_and_pulls_at_once(
    cloud: LocalCloud, homes: Homes
) -> None:
    """A ``system`` error (Realtime's subscription to the database failed: changes are being
    lost) must mean a rebuild and a pull now. The library rejoins an errored channel by itself
    a second later, so a health check every 2 s mostly found it joined again: no rebuild, no
    hint, and the lost change waited for the next poll. (A health check of a minute here.)"""
    _, remote = homes.device(cloud.url, cloud.anon_key, new_email(), realtime_health_s=60.0)
    hints = threading.Semaphore(0)
    remote.subscribe(hints.release)
    assert hints.acquire(timeout=10)  # the subscribe's own hint
    before = remote.realtime_state["subscribes"]
    _FedChannel(remote).feed("error", "postgres_changes", "Unable to subscribe to changes")
    assert hints.acquire(timeout=15), f"no pull after the server's error: {remote.realtime_state}"
    assert _wait_for(lambda: remote.realtime_state["subscribes"] > before, 15)
    assert remote.realtime_state["subscribed"]
