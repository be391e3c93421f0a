"""A session refreshed while the OS keychain locks stays signed in, and is stored at the unlock.

Refresh tokens rotate: the token a refresh sends is spent once the server answers, so the
answer is the only session left. The keychain locking between the refresh's read and its write
(a screen lock at that moment) must therefore neither drop it nor sign the person out: it is kept
in memory, sync goes on with it, the status says so, and it is written to the keychain as soon as
the keychain is unlocked (docs/daemon.md, "A locked keychain"). Against the local stack and a
private gnome-keyring, locked right before the write.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localstore.credentials import CredentialStore
from localstore.errors import CredentialError
from localstore.index import Index
from localstore.store import BlueprintStore
from sync.embed import start_sync
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import remote_from_settings, session_credential_name
from tests.credentials.conftest import secret_service  # noqa: F401  (the private keychain's)
from tests.credentials.test_copied_home import (  # noqa: F401  (fixtures)
    _Keychain,
    _private_keychain,
    keychain,
)
from tests.credentials.test_no_prompt_race import _lock_before

from .conftest import eventually, home_settings, log_in, new_email

pytestmark = pytest.mark.keychain


def _stored_refresh_token(settings_home: Path) -> str | None:
    """The refresh token the keychain holds for the home (None while it cannot be read)."""
    settings = home_settings(settings_home)
    index = Index(settings.paths.index_db)
    try:
        raw = CredentialStore(index, settings, prompt=False).find(session_credential_name(settings))
    except CredentialError:
        return None
    finally:
        index.close()
    return None if raw is None else str(json.loads(raw)["refresh_token"])


def test_a_session_refreshed_as_the_keychain_locks_is_kept_and_stored_at_the_unlock(
    cloud: LocalCloud,
    keychain: _Keychain,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "a"
    settings = home_settings(home)
    log_in(settings, cloud, new_email())
    before = _stored_refresh_token(home)
    store = BlueprintStore(settings, maintenance=False)
    remote = remote_from_settings(settings)  # (as the daemon's and start_sync's: no prompt)
    try:
        with monkeypatch.context() as hook:
            locked = _lock_before("CreateItem", keychain, hook)
            remote.refresh_auth()  # the server rotates; the keychain locks before the write
        assert locked == ["CreateItem"]
        session = remote._client.auth.get_session()
        assert session is not None and session.refresh_token != before  # kept, in memory
        store.save("app/x", "v: 1\n")
        handle = start_sync(store, remote=remote, watch=False, poll_interval_s=3600)
        try:
            # Still signed in: the edit goes up with the session kept in memory.
            def synced() -> bool:
                st = handle.status()
                return bool(st["state"] == "idle" and st["pending"] == 0)

            assert eventually(synced, 30), handle.status()
            st = handle.status()
            assert "kept in memory" in (st["hint"] or ""), st
            keychain.unlock()
            # Within seconds of the unlock, not at the next poll an hour later.
            assert eventually(lambda: _stored_refresh_token(home) == session.refresh_token, 15)
            assert eventually(lambda: handle.status()["hint"] is None, 10), handle.status()
        finally:
            handle.stop()
    finally:
        remote.close()
        store.close()
    reopened = remote_from_settings(settings)
    try:
        reopened.refresh_auth()  # the stored token is the live one: no "log in again"
    finally:
        reopened.close()
