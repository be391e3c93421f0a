"""A keychain that locks while sync opens its remote: nothing goes out as anon, sync resumes at
the unlock (docs/daemon.md, "A locked keychain").

``remote_from_settings`` reads the session; the official client's ``initialize_from_storage``
then refreshes it when its access token has expired (a laptop waking up) and reads the keychain
again to do so. A keychain locked between the two (a screen lock at that moment) failed that
refresh, and the client dropped the session (``_remove_session``: our storage hides it in memory
only) and cancelled its refresh timer, whose 30 s retry the log had just announced. Requests then
went out with the anon key: refused by this project's grants (42501), but a project that let anon
read would answer them with no rows, which a pull or a verify takes as "nothing on the server".
Against the local stack and a private gnome-keyring, locked by a hook right at that refresh.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from supabase_auth._sync.gotrue_client import SyncGoTrueClient

from localstore.credentials import CredentialStore
from localstore.index import Index
from localstore.store import BlueprintStore
from sync._supabase_session import KEYCHAIN_RETRY_S
from sync.embed import start_sync
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import remote_from_settings, session_credential_name
from tests.credentials.conftest import secret_service  # noqa: F401  (the private keychain's)
from tests.credentials.test_copied_home import (  # noqa: F401  (fixtures)
    _Keychain,
    _private_keychain,
    keychain,
)

from .conftest import eventually, home_settings, log_in, new_email
from .test_keychain_keeps_session import _stored_refresh_token

pytestmark = pytest.mark.keychain


def _expire_stored_token(settings_home: Path, cloud: LocalCloud) -> None:
    """Fault injection: the stored access token expired an hour ago (by the server's clock too),
    as after a night's sleep; its refresh token stays good."""
    settings = home_settings(settings_home)
    index = Index(settings.paths.index_db)
    try:
        creds = CredentialStore(index, settings, prompt=False)
        name = session_credential_name(settings)
        session = json.loads(creds.find(name) or "{}")
        claims = jwt.decode(session["access_token"], options={"verify_signature": False})
        claims.update(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
        session["access_token"] = jwt.encode(claims, cloud.jwt_secret, algorithm="HS256")
        session["expires_at"] = claims["exp"]
        creds.set(name, json.dumps(session))
    finally:
        index.close()


@pytest.fixture
def lock_at_open(keychain: _Keychain, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:  # noqa: F811
    """Lock ``keychain`` as the client starts from storage (after remote_from_settings read the
    session, before the client's refresh reads it again); the list records that it did."""
    real = SyncGoTrueClient.initialize_from_storage
    done: list[str] = []

    def initialize_from_storage(self: SyncGoTrueClient) -> None:
        if not done:
            done.append("locked")
            keychain.lock()
        real(self)

    monkeypatch.setattr(SyncGoTrueClient, "initialize_from_storage", initialize_from_storage)
    yield done


def _record_auth(remote: Any) -> list[str]:
    """The Authorization header of each data request (PostgREST's: auth's refresh grant is sent
    with the anon key by design) the remote sends from now on."""
    sent: list[str] = []

    def on_request(request: httpx.Request) -> None:
        if request.url.path.startswith("/rest/"):
            sent.append(request.headers.get("Authorization", ""))

    remote._http.event_hooks["request"].append(on_request)
    return sent


def test_a_keychain_locked_as_the_remote_opens_sends_nothing_as_anon_and_syncs_at_the_unlock(
    cloud: LocalCloud,
    keychain: _Keychain,  # noqa: F811  (the fixture imported above)
    lock_at_open: list[str],
    tmp_path: Path,
) -> None:
    home = tmp_path / "a"
    settings = home_settings(home)
    log_in(settings, cloud, new_email())
    _expire_stored_token(home, cloud)
    before = _stored_refresh_token(home)
    store = BlueprintStore(settings, maintenance=False)
    remote = remote_from_settings(settings)  # (as the daemon's and start_sync's: no prompt)
    try:
        assert lock_at_open == ["locked"]
        sent = _record_auth(remote)
        # The refresh timer goes on trying every KEYCHAIN_RETRY_S, as the log says it does.
        timer = remote._client.auth._refresh_token_timer
        assert timer is not None and timer._milliseconds == KEYCHAIN_RETRY_S * 1000, timer
        store.save("app/x", "v: 1\n")
        handle = start_sync(store, remote=remote, watch=False, poll_interval_s=3600)
        try:
            # Meanwhile: sync waits for the unlock and says so; nothing went out as anon.
            def waiting() -> bool:
                st = handle.status()
                return bool(st["state"] == "error" and "locked" in (st["last_error"] or ""))

            assert eventually(waiting, 30), handle.status()
            st = handle.status()
            assert "unlock" in (st["hint"] or ""), st
            assert st["pending"] == 1, st
            keychain.unlock()

            # Within seconds of the unlock (the keychain watch), not at the next poll.
            def synced() -> bool:
                st = handle.status()
                return bool(st["state"] == "idle" and st["pending"] == 0)

            assert eventually(synced, 30), handle.status()
        finally:
            handle.stop()
        assert sent and f"Bearer {cloud.anon_key}" not in sent, sent
        assert (
            remote.pull(0).changes[0].path == "app/x.blueprint.yaml"
        )  # on the server, as this user's
        assert _stored_refresh_token(home) not in (None, before)  # the refresh was stored
    finally:
        remote.close()
        store.close()
