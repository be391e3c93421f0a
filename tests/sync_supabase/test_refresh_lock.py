"""Opening a remote never refreshes the session outside the refresh lock of its home.

A daemon and a CLI run (or two CLI runs) on one home share one stored session. GoTrue rotates the
refresh token on every refresh and revokes the whole session when a rotated token is used again, so
every refresh of a home's session must happen under ``refresh_lock_path`` and start from the newest
stored token (sync/_supabase_session.py, ``KeychainSessionStorage.refresh_guard``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from supabase_auth.types import Session

from localstore.config import Settings
from localstore.credentials import CredentialStore
from localstore.errors import KeychainUnavailableError
from localstore.index import Index
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import SupabaseRemote, refresh_lock_path, session_credential_name

from .conftest import Homes, new_email, shift_client_clock


def _stored(settings: Settings) -> str:
    index = Index(settings.paths.index_db)
    try:
        raw = CredentialStore(index, settings).find(session_credential_name(settings))
    finally:
        index.close()
    assert raw is not None
    return raw


def _store(settings: Settings, raw: str) -> None:
    index = Index(settings.paths.index_db)
    try:
        CredentialStore(index, settings).set(session_credential_name(settings), raw)
    finally:
        index.close()


@contextmanager
def _refresh_lock_held_elsewhere(settings: Settings) -> Iterator[None]:
    """Hold the home's refresh lock as another process refreshing the session would."""
    path: Path = refresh_lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _refresh_elsewhere(cloud: LocalCloud, refresh_token: str) -> str:
    """Rotate ``refresh_token`` on the server as another process would; return the session JSON."""
    response = httpx.post(
        f"{cloud.url}/auth/v1/token",
        params={"grant_type": "refresh_token"},
        headers={"apikey": cloud.anon_key, "Authorization": f"Bearer {cloud.anon_key}"},
        json={"refresh_token": refresh_token},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return Session.model_validate(response.json()).model_dump_json()


def test_opening_with_an_expired_session_waits_for_a_refresh_in_another_process(
    cloud: LocalCloud, homes: Homes
) -> None:
    settings = homes.home()
    homes.login(settings, cloud.url, cloud.anon_key, new_email())
    # The machine slept past the access token's expiry: whoever runs next must refresh it.
    session = json.loads(_stored(settings))
    session["expires_at"] = int(time.time()) - 60
    _store(settings, json.dumps(session))
    first_token = session["refresh_token"]

    opened: list[SupabaseRemote] = []
    failed: list[BaseException] = []

    def open_remote() -> None:  # a CLI run starting while the daemon refreshes
        try:
            opened.append(homes.remote(settings))
        except BaseException as exc:  # reported by the assertions below
            failed.append(exc)

    opener = threading.Thread(target=open_remote)
    with _refresh_lock_held_elsewhere(settings):
        opener.start()
        opener.join(1.5)
        refreshed_meanwhile = json.loads(_stored(settings))["refresh_token"] != first_token
        # The daemon's refresh, under the lock: the token it rotates must still be the newest.
        rotated = None if refreshed_meanwhile else _refresh_elsewhere(cloud, first_token)
        if rotated is not None:
            _store(settings, rotated)
    opener.join(30)
    assert not refreshed_meanwhile, "the session was refreshed while another process held the lock"
    assert not failed and opened, failed
    remote = opened[0]
    assert remote.server_info().protocol == 1  # the session was adopted, not revoked
    assert (
        rotated is not None
        and json.loads(_stored(settings))["refresh_token"] == json.loads(rotated)["refresh_token"]
    )


class _KeychainRefuses:
    """Fault injection: the next ``times`` writes of the session fail as a locked keychain does
    (macOS locks it on sleep, between the refresh guard's read and its write); reads and every
    other write go to the real keychain."""

    def __init__(self, remote: SupabaseRemote, times: int) -> None:
        self.left = times
        self.refused = 0
        creds = remote._storage._creds
        self._real_set = creds.set
        self._name = remote._storage._name
        creds.set = self._set  # type: ignore[method-assign]

    def _set(self, name: str, value: str) -> None:
        if name == self._name and self.left > 0:
            self.left -= 1
            self.refused += 1
            raise KeychainUnavailableError(
                f"store {name!r}: the keychain is locked (injected)",
                hint="unlock the login keychain",
            )
        self._real_set(name, value)


def _in_memory_token(remote: SupabaseRemote) -> str:
    """The refresh token the remote's client would refresh with next."""
    session = remote._client.auth._load_session()  # what the refresh timer uses
    assert session is not None
    return session.refresh_token


@pytest.mark.parametrize(("shift", "expired"), [(-7200.0, True), (7200.0, False)])
def test_a_session_another_process_rotated_is_judged_by_the_servers_clock(
    cloud: LocalCloud, homes: Homes, monkeypatch: pytest.MonkeyPatch, shift: float, expired: bool
) -> None:
    """The refresh timer fires, and the keychain holds a session another process (a CLI run)
    rotated meanwhile: the guard reuses it while it is live, else refreshes it. It judged that
    on this machine's clock, against an expiry set by the server's: two hours behind, a session
    that expired a minute ago was reused (the client sent an expired token until a call's 401);
    two hours ahead, a live one was rotated once more for nothing."""
    settings = homes.home()
    homes.login(settings, cloud.url, cloud.anon_key, new_email())
    remote = homes.remote(settings)
    shift_client_clock(monkeypatch, shift)
    assert remote.pull(0).changes == []  # a response: its Date header shows the server's clock
    timer_token = _in_memory_token(remote)
    rotated = json.loads(_refresh_elsewhere(cloud, timer_token))
    if expired:  # it has expired since, a minute ago by the server's clock (its exp)
        now = int(time.time())
        claims = jwt.decode(rotated["access_token"], options={"verify_signature": False})
        claims.update(iat=now - 3660, exp=now - 60)
        rotated["access_token"] = jwt.encode(claims, cloud.jwt_secret, algorithm="HS256")
        rotated["expires_at"] = claims["exp"]
    _store(settings, json.dumps(rotated))
    session = remote._client.auth.refresh_session(timer_token).session  # the timer's refresh
    assert session is not None
    exp = jwt.decode(session.access_token, options={"verify_signature": False})["exp"]
    assert exp > time.time() + 60  # a live token, by the server's (here the real) clock
    assert (session.refresh_token == rotated["refresh_token"]) is not expired  # reused if live
    assert remote.pull(0).changes == []


def test_a_rotated_session_the_keychain_refused_is_kept_and_stored_later(
    cloud: LocalCloud, homes: Homes, caplog: pytest.LogCaptureFixture
) -> None:
    """Review s8: the guard rotated the refresh token, the keychain write failed, and the new
    token was thrown away even in memory while the old one was already used up on the server:
    the next refresh reused it and the session was revoked ("log in again")."""
    settings = homes.home()
    homes.login(settings, cloud.url, cloud.anon_key, new_email())
    remote = homes.remote(settings)
    first = json.loads(_stored(settings))["refresh_token"]
    fault = _KeychainRefuses(remote, times=3)
    with caplog.at_level(logging.WARNING, logger="sync.supabase_remote"):
        remote.refresh_auth()  # rotates first -> second; storing it fails
        second = _in_memory_token(remote)
        assert second != first
        assert json.loads(_stored(settings))["refresh_token"] == first  # not stored yet
        # reload() prefers the newer unsaved session over the older stored one.
        assert json.loads(remote._storage.reload() or "{}")["refresh_token"] == second
        assert remote.server_info().protocol == 1
        # The guard retries storing second first (refused), then refreshes from the stored
        # first, the parent of the active second: the server hands second back, so the chain
        # stays one rotation ahead of the keychain (test_rotation_crash.py). Storing it is
        # refused too.
        remote.refresh_auth()
        third = _in_memory_token(remote)
        assert third == second
    assert fault.refused == 3
    # (Only sync.supabase_remote's warnings: the home's first secret also logs, at INFO, which
    # backend it recorded, and the root logger may pass INFO here.)
    warnings = [
        r
        for r in caplog.records
        if r.name == "sync.supabase_remote"
        and r.levelno >= logging.WARNING
        and "keychain" in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one warning, not one per try
    # The keychain works again: the periodic point (before each engine cycle) stores it.
    remote.check_session()
    assert json.loads(_stored(settings))["refresh_token"] == third
    remote.refresh_auth()
    assert remote.server_info().protocol == 1
    # Another process of the home takes the stored token over: it is the newest, not revoked.
    other = homes.remote(settings)
    other.refresh_auth()
    assert other.server_info().protocol == 1


def test_a_session_stored_after_the_failed_write_wins_over_the_unsaved_one(
    cloud: LocalCloud, homes: Homes
) -> None:
    """The unsaved session is newer than what was stored when its write failed, not than what
    someone stores later (the same user logging in again): that one is adopted, never
    overwritten by the retry."""
    settings = homes.home()
    email = new_email()
    homes.login(settings, cloud.url, cloud.anon_key, email)
    remote = homes.remote(settings)
    _KeychainRefuses(remote, times=1)
    remote.refresh_auth()
    unsaved = _in_memory_token(remote)
    homes.login(settings, cloud.url, cloud.anon_key, email, signup=False)
    relogged = json.loads(_stored(settings))["refresh_token"]
    assert relogged != unsaved
    remote.check_session()  # sees the login (marker), retries the write: must not clobber it
    assert json.loads(_stored(settings))["refresh_token"] == relogged
    remote.refresh_auth()  # refreshes the adopted session
    assert remote.server_info().protocol == 1
    assert json.loads(_stored(settings))["refresh_token"] not in (relogged, unsaved)


def test_closing_stores_an_unsaved_session_or_leaves_its_parent_to_resume_from(
    cloud: LocalCloud, homes: Homes, caplog: pytest.LogCaptureFixture
) -> None:
    """A process that ends while holding an unsaved rotated session gives it one last try;
    failing that, the keychain's token (its parent) still opens the home."""
    settings = homes.home()
    homes.login(settings, cloud.url, cloud.anon_key, new_email())
    remote = homes.remote(settings)
    _KeychainRefuses(remote, times=1)
    remote.refresh_auth()
    newest = _in_memory_token(remote)
    remote.close()
    assert json.loads(_stored(settings))["refresh_token"] == newest
    assert homes.remote(settings).server_info().protocol == 1

    still_locked = homes.remote(settings)
    _KeychainRefuses(still_locked, times=99)
    still_locked.refresh_auth()
    with caplog.at_level(logging.WARNING, logger="sync.supabase_remote"):
        still_locked.close()
    assert any(
        "next start refreshes from the one stored before it" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING
    )
    reopened = homes.remote(settings)
    reopened.refresh_auth()
    assert reopened.server_info().protocol == 1
