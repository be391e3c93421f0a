"""Logging in again after a revoked session takes effect at once, against the local stack.

A revoked session (a password change elsewhere, a sign-out everywhere) stops sync with "log in
again" (tell_user: the engine retries only after a minute, or its poll interval), and realtime's
refused joins back off up to 5 minutes. When the person then ran `localstore login` as the same
user, the daemon saw the login but only checked that the user was the same: status said "error"
until the engine's wait ended, and realtime stayed down until its own wait did, still holding
the old token. Waits here are an hour, so only the login can end them within the test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from supabase_auth.types import Session

from localstore.store import BlueprintStore
from sync._realtime import RealtimeHints
from sync.embed import start_sync
from sync.errors import AuthRevokedError
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import SupabaseRemote, login, remote_from_settings
from tests.conftest import run_cli
from tests.sync_supabase.faultproxy import FaultProxy

from .conftest import PASSWORD, eventually, home_settings, new_email

WAIT = 30.0
LONG_WAIT_S = 3600.0


@pytest.fixture
def proxy(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of the stack, and realtime's backoff after a failed join made an
    hour (production: up to 5 min), so only something that cuts it short ends it in time."""
    monkeypatch.setattr(RealtimeHints, "_backoff_s", lambda _self, _failures: LONG_WAIT_S)
    with FaultProxy(cloud.port) as p:
        yield p


def _revoke_and_expire(
    remote: SupabaseRemote, cloud: LocalCloud, proxy: FaultProxy, *, realtime_too: bool = True
) -> None:
    """Fault injection: the session is revoked on the server and its access token has expired
    (the hour a revoked session goes on working). With ``realtime_too`` as the client and
    realtime see it, and the realtime connection drops, so its rebuild has to join with that
    session; without, only the client's calls carry the expired token (realtime stays up)."""
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        conn.execute("delete from auth.sessions where user_id = %s", (remote.user_id,))
    session = remote._storage.durable_session()
    assert session is not None
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 7200, exp=now - 3600)
    token = jwt.encode(claims, cloud.jwt_secret, algorithm="HS256")
    if not realtime_too:
        remote._client.options.headers["Authorization"] = f"Bearer {token}"
        remote._client._postgrest = None
        return
    expired = session.model_copy(update={"access_token": token, "expires_at": now - 3600})
    remote._client.auth._notify_all_subscribers("TOKEN_REFRESHED", expired)
    proxy.reset_all()


def _realtime_waits_long(state: dict[str, Any]) -> bool:
    return not state.get("subscribed") and state.get("retry_in_s", 0) >= LONG_WAIT_S / 2


def _stored_session(remote: SupabaseRemote) -> Session:
    session = remote._storage.durable_session()
    assert session is not None
    return session


def test_a_remote_adopts_a_new_login_of_its_user_at_once(
    cloud: LocalCloud, proxy: FaultProxy, tmp_path: Path
) -> None:
    settings = home_settings(tmp_path / "h")
    email = new_email()
    login(settings, proxy.url, cloud.anon_key, email, PASSWORD, signup=True)
    remote = remote_from_settings(settings)
    try:
        remote.subscribe(lambda: None)
        assert remote.realtime_state["subscribed"]
        _revoke_and_expire(remote, cloud, proxy)
        assert eventually(lambda: _realtime_waits_long(remote.realtime_state), WAIT), (
            remote.realtime_state
        )
        with pytest.raises(AuthRevokedError):
            remote.pull(0)  # the cycle that fails: "log in again"

        login(settings, proxy.url, cloud.anon_key, email, PASSWORD)
        remote.check_session()  # what the engine runs before each cycle, the daemon on a login
        fresh = _stored_session(remote)
        # Realtime joins again with the new session, without waiting out its backoff.
        assert eventually(lambda: remote.realtime_state["subscribed"], WAIT), remote.realtime_state
        # Calls go out with the new session's token: no refresh was needed (a refresh rotates
        # the stored refresh token).
        remote.pull(0)
        assert _stored_session(remote).refresh_token == fresh.refresh_token
    finally:
        remote.close()


def test_logging_in_again_ends_the_error_at_once_while_realtime_stayed_up(
    cloud: LocalCloud, proxy: FaultProxy, inproc_daemon: Any, tmp_path: Path
) -> None:
    """Realtime still up (its token not expired yet): no resubscribe (whose pull would have
    woken the engine) follows the login, so only the daemon can wake the engine."""
    home = tmp_path / "h"
    settings = home_settings(home)
    email = new_email()
    login(settings, proxy.url, cloud.anon_key, email, PASSWORD, signup=True)
    d = inproc_daemon(home, poll_interval_s=LONG_WAIT_S)
    remote, engine = d.daemon.remote, d.daemon.engine
    assert isinstance(remote, SupabaseRemote) and engine is not None
    with d.client() as c:
        assert eventually(lambda: c.status()["realtime"]["state"] == "subscribed", WAIT)
        _revoke_and_expire(remote, cloud, proxy, realtime_too=False)
        engine.request_sync()
        assert eventually(lambda: c.status()["sync"]["state"] == "error", WAIT)
        login(settings, proxy.url, cloud.anon_key, email, PASSWORD)
        assert eventually(lambda: c.status()["sync"]["state"] == "idle", WAIT), c.status()
        assert c.status()["realtime"]["stats"]["subscribes"] == 1  # (it never went down)
        assert d.daemon.engine is engine  # the same user: the engine carries on


def test_logging_in_again_after_a_revoked_session_ends_the_error_at_once(
    cloud: LocalCloud, proxy: FaultProxy, inproc_daemon: Any, tmp_path: Path
) -> None:
    home = tmp_path / "h"
    settings = home_settings(home)
    email = new_email()
    login(settings, proxy.url, cloud.anon_key, email, PASSWORD, signup=True)
    # Polling hourly: the engine's wait after "log in again" is max(poll interval, 60 s).
    d = inproc_daemon(home, poll_interval_s=LONG_WAIT_S)
    remote, engine = d.daemon.remote, d.daemon.engine
    assert isinstance(remote, SupabaseRemote) and engine is not None
    with d.client() as c:
        assert eventually(lambda: c.status()["realtime"]["state"] == "subscribed", WAIT)
        _revoke_and_expire(remote, cloud, proxy)
        engine.request_sync()
        assert eventually(lambda: c.status()["sync"]["state"] == "error", WAIT)
        assert "log in again" in c.status()["sync"]["last_error"]
        assert eventually(lambda: _realtime_waits_long(remote.realtime_state), WAIT)

        # The realtime channel's health is in the status, the metrics and `localstore status`.
        realtime = c.status()["realtime"]
        assert realtime["state"] == "down" and realtime["problem"], realtime
        assert realtime["retry_in_s"] >= LONG_WAIT_S / 2 and realtime["failures"] >= 1
        assert realtime["stats"]["subscribes"] == 1
        metrics = c.metrics()
        assert metrics["gauges"]["realtime_subscribed"] == 0
        assert metrics["gauges"]["realtime_failures"] >= 1
        assert metrics["counters"]["realtime_subscribes"] == 1
        human = run_cli(home, "status")
        assert human.returncode == 1, human.stderr  # (sync stopped by an error)
        assert "realtime: down (" in human.stdout
        assert "sync polls meanwhile" in human.stdout
        data = json.loads(run_cli(home, "--json", "status").stdout)
        assert data["realtime"]["state"] == "down"

        login(settings, proxy.url, cloud.anon_key, email, PASSWORD)
        # Synced and rejoined now, not after the hour the engine and realtime would wait.
        assert eventually(lambda: c.status()["sync"]["state"] == "idle", WAIT), c.status()
        assert eventually(lambda: c.status()["realtime"]["state"] == "subscribed", WAIT), (
            c.status()["realtime"]
        )
        assert d.daemon.engine is engine  # the same user: the engine carries on
        assert c.metrics()["gauges"]["realtime_subscribed"] == 1
    human = run_cli(home, "status")
    assert human.returncode == 0, human.stdout + human.stderr
    assert "realtime:" not in human.stdout  # (said only when it is down)


def test_an_app_syncing_in_process_takes_the_new_login_at_once(
    cloud: LocalCloud, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The same in an app's start_sync, which follows logins as the daemon does."""
    settings = home_settings(tmp_path / "h")
    email = new_email()
    login(settings, proxy.url, cloud.anon_key, email, PASSWORD, signup=True)
    store = BlueprintStore(settings)
    try:
        embedded = start_sync(store, watch=False, poll_interval_s=LONG_WAIT_S)
        try:
            remote, engine = embedded._remote, embedded.engine
            assert isinstance(remote, SupabaseRemote)
            assert remote.realtime_state["subscribed"]
            _revoke_and_expire(remote, cloud, proxy, realtime_too=False)
            engine.request_sync()
            assert eventually(lambda: embedded.status()["state"] == "error", WAIT)
            login(settings, proxy.url, cloud.anon_key, email, PASSWORD)
            assert eventually(lambda: embedded.status()["state"] == "idle", WAIT), embedded.status()
            assert embedded.engine is engine
        finally:
            embedded.stop()
    finally:
        store.close()
