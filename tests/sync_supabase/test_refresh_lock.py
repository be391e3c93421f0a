"""Opening a remote never refreshes the session outside the refresh lock of its home.

A daemon and a CLI run (or two CLI runs) on one home share one stored session. GoTrue rotates the
refresh token on every refresh and revokes the whole session when a rotated token is used again, so
every refresh of a home's session must happen under ``refresh_lock_path`` and start from the newest
stored token (sync/supabase_remote.py, ``KeychainSessionStorage.refresh_guard``).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from supabase_auth.types import Session

from localstore.config import Settings
from localstore.credentials import CredentialStore
from localstore.index import Index
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import SupabaseRemote, refresh_lock_path, session_credential_name

from .conftest import Homes, new_email


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
