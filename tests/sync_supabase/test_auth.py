"""Sessions: keychain only, rotated and stored every time, expiry mid-sync, revoked sessions."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from supabase_auth._sync.gotrue_admin_api import SyncGoTrueAdminAPI
from supabase_auth.errors import AuthApiError

from localstore.config import Settings, load_settings
from localstore.credentials import CredentialStore
from localstore.errors import CredentialError
from localstore.index import Index
from sync.errors import AuthError, AuthRevokedError, NotLoggedInError, SessionChangedError
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import (
    login,
    logout,
    remote_from_settings,
    session_credential_name,
)

from .conftest import (
    PASSWORD,
    Homes,
    _require_environment,
    expire_token,
    new_email,
    shift_client_clock,
)
from .devices import Device, open_device
from .faultproxy import FaultProxy

TTL_S = 3


@pytest.fixture(scope="module")
def short_cloud() -> Iterator[LocalCloud]:
    """A stack whose access tokens live TTL_S seconds (the client refreshes every ~2.5 s)."""
    _require_environment()
    with LocalCloud(access_token_ttl=TTL_S) as lc:
        yield lc


def _stored_session(settings_home: Path | None) -> str | None:
    # Settings.home is None only for the default (XDG) home, which these tests never use.
    assert settings_home is not None
    settings = load_settings(home=settings_home, environ={})
    index = Index(settings.paths.index_db)
    try:
        return CredentialStore(index, settings).find(session_credential_name(settings))
    finally:
        index.close()


def test_session_is_in_the_keychain_and_nowhere_on_disk(cloud: LocalCloud, homes: Homes) -> None:
    settings, remote = homes.device(cloud.url, cloud.anon_key, new_email())
    raw = _stored_session(settings.home)
    assert raw is not None
    rt = remote._storage.durable_session().refresh_token  # type: ignore[union-attr]
    assert rt in raw
    home = settings.home
    assert home is not None
    for path in home.rglob("*"):
        if path.is_file():
            assert rt.encode() not in path.read_bytes(), f"refresh token written to {path}"


def test_not_logged_in_is_clear(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "h", environ={})
    with pytest.raises(NotLoggedInError) as info:
        remote_from_settings(settings)
    assert info.value.action == "tell_user"
    assert "localstore login" in str(info.value)


def test_every_rotation_is_stored_and_a_new_process_resumes(
    short_cloud: LocalCloud, homes: Homes
) -> None:
    settings, remote = homes.device(short_cloud.url, short_cloud.anon_key, new_email())
    first = remote._storage.durable_session().refresh_token  # type: ignore[union-attr]
    refreshed = threading.Event()
    count = [0]

    def on_event(event: str, session: object) -> None:
        if event == "TOKEN_REFRESHED":
            count[0] += 1
            if count[0] >= 2:
                refreshed.set()

    sub = remote._client.auth.on_auth_state_change(on_event)
    try:
        assert refreshed.wait(15), "the refresh timer never fired"
    finally:
        sub.unsubscribe()
    remote.close()
    stored = _stored_session(settings.home)
    assert stored is not None and first not in stored
    again = homes.remote(settings)  # a new "process": only the keychain carries the session
    assert again.server_info().protocol == 1


@pytest.fixture
def short_device(short_cloud: LocalCloud, tmp_path: Path) -> Iterator[Device]:
    dev = open_device(tmp_path, "dev", short_cloud.url, short_cloud.anon_key, new_email())
    try:
        yield dev
    finally:
        dev.close()


def test_token_expiry_mid_sync_loses_and_quarantines_nothing(
    short_cloud: LocalCloud, short_device: Device
) -> None:
    dev = short_device
    deadline = time.monotonic() + 2.5 * TTL_S  # spans several timer refreshes
    saved = 0
    while time.monotonic() < deadline or saved < 6:
        dev.store.save(f"e/{saved}.blueprint.yaml", f"n: {saved}\n", name=f"n{saved}")
        saved += 1
        if saved % 2:
            expire_token(dev.remote, short_cloud)
        assert dev.sync() is None
    status = dev.engine.status()
    assert (status.pending, status.quarantined) == (0, 0)
    assert dev.engine.verify().clean
    assert dev.engine.verify().remote == saved


def test_revoked_session_says_log_in_again_and_writes_wait(
    short_cloud: LocalCloud, short_device: Device, tmp_path: Path
) -> None:
    dev = short_device
    dev.store.save("r/a.blueprint.yaml", "a: 1\n", name="a")
    assert dev.sync() is None
    with psycopg.connect(short_cloud.superuser_dsn, autocommit=True) as conn:
        conn.execute("delete from auth.sessions where user_id = %s", (dev.remote.user_id,))
    dev.store.save("r/b.blueprint.yaml", "b: 1\n", name="b")
    expire_token(dev.remote, short_cloud)
    error = dev.sync()
    assert isinstance(error, AuthRevokedError), error
    assert error.action == "tell_user" and "log in again" in str(error)
    status = dev.engine.status()
    assert status.pending == 1 and status.quarantined == 0
    assert status.last_error and "log in again" in status.last_error
    # Logging in again resumes: the waiting write goes up, nothing was lost.
    dev.engine.stop()
    dev.remote.close()
    email = _email_of(short_cloud, dev.remote.user_id)
    login(dev.store.settings, short_cloud.url, short_cloud.anon_key, email, PASSWORD)
    from sync.engine import SyncEngine

    dev.remote = remote_from_settings(dev.store.settings)
    dev.engine = SyncEngine(dev.store, dev.remote, poll_interval_s=3600)
    assert dev.sync() is None
    assert dev.engine.status().pending == 0
    assert dev.engine.verify().clean


def _email_of(cloud: LocalCloud, user_id: str) -> str:
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        row = conn.execute("select email from auth.users where id = %s", (user_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_logout_revokes_and_forgets(cloud: LocalCloud, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "h", environ={})
    login(settings, cloud.url, cloud.anon_key, new_email(), PASSWORD, signup=True)
    assert logout(settings) is True
    assert _stored_session(tmp_path / "h") is None
    with pytest.raises(NotLoggedInError):
        remote_from_settings(settings)


def test_the_refresh_timer_never_adopts_another_users_session(
    short_cloud: LocalCloud, homes: Homes
) -> None:
    """The client's own refresh timer reloads the keychain too (review r3, f_logout_daemon)."""
    settings, remote = homes.device(short_cloud.url, short_cloud.anon_key, new_email())
    bob_home = homes.home("bob")
    login(bob_home, short_cloud.url, short_cloud.anon_key, new_email(), PASSWORD, signup=True)
    bob_raw = _stored_session(bob_home.home)
    assert bob_raw is not None
    # Fault injection: bob's session lands in this home's entry without the session marker
    # changing (a login by another tool, or one killed between the keychain and the marker).
    index = Index(settings.paths.index_db)
    try:
        CredentialStore(index, settings).set(session_credential_name(settings), bob_raw)
    finally:
        index.close()
    time.sleep(2.5 * TTL_S)  # the timer fires ~0.5 s before each expiry
    header = str(remote._client.options.headers.get("Authorization", ""))
    sent_as = jwt.decode(header.removeprefix("Bearer "), options={"verify_signature": False})
    assert sent_as["sub"] == remote.user_id
    assert _stored_session(settings.home) == bob_raw  # bob's token was neither used nor rotated
    with pytest.raises(SessionChangedError):
        remote.server_info()


def test_the_refresh_timer_runs_on_a_clock_ahead_by_more_than_a_tokens_lifetime(
    short_cloud: LocalCloud, homes: Homes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """supabase_auth arms its refresh timer for the token's expiry (the server's clock) minus
    this machine's time: on a clock ahead by more than a token's lifetime every new token looked
    expired already and no timer was ever armed. The token expired in the background, and each
    process refreshed only when a call got a 401, realtime when a join was refused."""
    settings = homes.home()
    homes.login(settings, short_cloud.url, short_cloud.anon_key, new_email())
    shift_client_clock(monkeypatch, 7200.0)
    remote = homes.remote(settings)  # the token looks expired: opening refreshes it
    refreshed = threading.Event()

    def on_event(event: str, session: object) -> None:
        if event == "TOKEN_REFRESHED":
            refreshed.set()

    sub = remote._client.auth.on_auth_state_change(on_event)
    try:
        # With no call made, only the timer refreshes (it fires ~0.5 s before each expiry).
        assert refreshed.wait(10 * TTL_S)
    finally:
        sub.unsubscribe()
    assert remote.server_info().protocol == 1


def test_a_remote_opened_offline_with_an_expired_session_syncs_once_online(
    cloud: LocalCloud, proxy: FaultProxy, homes: Homes
) -> None:
    """A laptop waking up (access token long expired) before its network: the daemon opens the
    remote, the refresh fails, and the client falls back to the anon key. Once the network is
    back, the first RPC went out as anon and got 42501, reported as "deploy the grants"
    (RemoteConfigError, sync waits for a person) instead of being refreshed and retried."""
    settings = homes.home()
    homes.login(settings, proxy.url, cloud.anon_key, new_email())
    index = Index(settings.paths.index_db)
    try:
        creds = CredentialStore(index, settings)
        name = session_credential_name(settings)
        stored = creds.find(name)
        assert stored is not None
        session = json.loads(stored)
        session["expires_at"] = int(time.time()) - 3600  # slept through the token's lifetime
        creds.set(name, json.dumps(session))
    finally:
        index.close()
    proxy.refuse()
    remote = homes.remote(settings, timeout_s=2.0)
    header = remote._client.options.headers["Authorization"]
    assert header == f"Bearer {cloud.anon_key}"  # the refresh failed: no user token to send
    # The client's own retry of that refresh backs off (0.2 s doubling to ~100 s); the network
    # comes back before its next attempt.
    timer = remote._client.auth._refresh_token_timer
    if timer is not None:
        timer.cancel()
    proxy.heal()
    page = remote.pull(0)
    assert page.changes == [] and not page.reset_required
    assert remote.server_info().protocol == 1


def _refresh_grant(cloud: LocalCloud, refresh_token: str) -> httpx.Response:
    return httpx.post(
        f"{cloud.url}/auth/v1/token?grant_type=refresh_token",
        headers={"apikey": cloud.anon_key},
        json={"refresh_token": refresh_token},
        timeout=10,
    )


def test_logout_revokes_a_session_whose_access_token_expired(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    """The usual logout (no daemon ran for an hour) holds an expired access token, which the
    server's /logout refuses: the session stayed valid on the server, "could not confirm"."""
    settings = load_settings(home=tmp_path / "h", environ={})
    # Fault injection: the stored access token expired an hour ago (as after a night's sleep).
    session = _login_with_expired_token(cloud, settings, expired_s=3600)

    assert logout(settings) is True
    assert _stored_session(tmp_path / "h") is None
    # The session is gone on the server: its refresh token (and any rotated from it) is refused.
    refused = _refresh_grant(cloud, session["refresh_token"])
    assert refused.status_code == 400, refused.text


def _login_with_expired_token(
    cloud: LocalCloud, settings: Settings, *, expired_s: int
) -> dict[str, Any]:
    """Log in, then store the session with its access token expired ``expired_s`` ago (by the
    server's clock: ``expires_at`` is its exp); returns the stored session."""
    login(settings, cloud.url, cloud.anon_key, new_email(), PASSWORD, signup=True)
    raw = _stored_session(settings.home)
    assert raw is not None
    session: dict[str, Any] = json.loads(raw)
    claims = jwt.decode(session["access_token"], options={"verify_signature": False})
    claims.update(iat=int(time.time()) - 3600 - expired_s, exp=int(time.time()) - expired_s)
    session["access_token"] = jwt.encode(claims, cloud.jwt_secret, algorithm="HS256")
    session["expires_at"] = claims["exp"]
    index = Index(settings.paths.index_db)
    try:
        CredentialStore(index, settings).set(session_credential_name(settings), json.dumps(session))
    finally:
        index.close()
    return session


def test_logout_revokes_a_session_whose_access_token_expired_by_the_servers_clock_only(
    cloud: LocalCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine whose clock runs hours behind (NTP off, a dual boot's RTC in local time) took
    a token the server holds expired for a live one: /logout refused it (bad_jwt), and the
    session, refresh token included, stayed valid on the server ("did not confirm")."""
    settings = load_settings(home=tmp_path / "h", environ={})
    # The stored access token expired a minute ago by the server's clock.
    session = _login_with_expired_token(cloud, settings, expired_s=60)
    # Fault injection: this machine's wall clock, as the logout reads it, is two hours behind.
    shift_client_clock(monkeypatch, -7200.0)

    assert logout(settings) is True
    assert _stored_session(tmp_path / "h") is None
    refused = _refresh_grant(cloud, session["refresh_token"])
    assert refused.status_code == 400, refused.text


def test_logout_never_logs_the_session_tokens(
    cloud: LocalCloud,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server (or proxy) that echoes the request in its error put the access token in the
    "server did not confirm" warning of logout."""
    settings = load_settings(home=tmp_path / "h", environ={})
    login(settings, cloud.url, cloud.anon_key, new_email(), PASSWORD, signup=True)
    raw = _stored_session(tmp_path / "h")
    assert raw is not None
    session = json.loads(raw)

    def echoing_sign_out(self: SyncGoTrueAdminAPI, jwt: str, scope: str = "global") -> None:
        # Fault injection: the server's refusal quotes the token it was sent.
        raise AuthApiError(f"refused token {jwt} (refresh {session['refresh_token']})", 400, None)

    monkeypatch.setattr(SyncGoTrueAdminAPI, "sign_out", echoing_sign_out)
    with caplog.at_level(logging.DEBUG):
        assert logout(settings) is False
    assert "did not confirm" in caplog.text
    assert session["access_token"] not in caplog.text
    assert session["refresh_token"] not in caplog.text


def test_a_login_that_could_not_store_its_project_leaves_no_mixed_session(
    cloud: LocalCloud, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """login stores the session, then the project. When the second write failed, the home held
    the new project's session under the old project: the next start sent its access and refresh
    tokens to the old project's server (the wrong server, and "log in again")."""
    settings = load_settings(home=tmp_path / "h", environ={})
    login(settings, cloud.url, cloud.anon_key, new_email(), PASSWORD, signup=True)
    plain_set = CredentialStore.set

    def refusing_set(self: CredentialStore, name: str, value: str) -> None:
        # Fault injection: the keychain refuses the project (locked between the two writes).
        if name.startswith("cloud.project."):
            raise CredentialError("the keychain is locked")
        plain_set(self, name, value)

    monkeypatch.setattr(CredentialStore, "set", refusing_set)
    other = proxy.url  # another project URL (the same stack behind it)
    with pytest.raises(AuthError):
        login(settings, other, cloud.anon_key, new_email(), PASSWORD, signup=True)
    monkeypatch.setattr(CredentialStore, "set", plain_set)

    with pytest.raises(NotLoggedInError):
        remote_from_settings(settings).close()


def test_realtime_hints_keep_arriving_on_the_live_channel_after_its_token_expired(
    short_cloud: LocalCloud, tmp_path: Path
) -> None:
    """Field notes: token expiry in long-running processes breaks sync, and realtime is one of
    the places it does so. B's channel joined with an access token that has since expired;
    Realtime shuts such a channel when it next has a change for it. Every refresh must reach
    the live channel, so A's save arrives on the same channel, without a rebuild."""
    email = new_email()
    a = open_device(tmp_path, "a", short_cloud.url, short_cloud.anon_key, email)
    try:
        b = open_device(tmp_path, "b", short_cloud.url, short_cloud.anon_key, email)
    except BaseException:
        a.close()
        raise
    try:
        refreshes = [0]

        def on_event(event: str, session: object) -> None:
            if event == "TOKEN_REFRESHED":
                refreshes[0] += 1

        sub = b.remote._client.auth.on_auth_state_change(on_event)
        b.engine.start()
        state = b.remote.realtime_state
        assert state["subscribed"]
        subscribes, rebuilds = state["subscribes"], state["rebuilds"]
        joined = b.remote._hints._token  # type: ignore[union-attr]
        expires = jwt.decode(joined, options={"verify_signature": False})["exp"]
        got = threading.Event()
        b.store.subscribe(lambda ev: got.set() if ev.origin == "remote" else None)
        # Past the join token's expiry, with at least one refresh since (the timer runs
        # about 0.5 s before each expiry).
        deadline = time.monotonic() + 10 * TTL_S
        while (time.time() <= expires + 1 or refreshes[0] < 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        sub.unsubscribe()
        assert time.time() > expires + 1 and refreshes[0] >= 1, refreshes
        a.store.save("rt/after-refresh.blueprint.yaml", "r: 1\n", name="after-refresh")
        assert a.sync() is None
        assert got.wait(10), f"no hint after the token refresh: {b.remote.realtime_state}"
        state = b.remote.realtime_state
        assert (state["subscribes"], state["rebuilds"]) == (subscribes, rebuilds), state
        assert (b.store.root / "rt/after-refresh.blueprint.yaml").read_text() == "r: 1\n"
    finally:
        b.close()
        a.close()
