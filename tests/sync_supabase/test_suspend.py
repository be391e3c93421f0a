"""A laptop's night: suspend (monotonic timers stand still, the access token expires by the wall
clock), a keychain locked on resume, and wall-clock steps between client and server.

Everything is fault injection on the real stack: the token is made expired (conftest.expire_token),
the keychain's read is made to fail as a locked one does, and a clock step is applied to the
client's modules only (the gateway runs in this process: stepping ``time`` itself would move the
server's clock too).
"""

from __future__ import annotations

import pytest

from localstore.errors import KeychainUnavailableError
from sync.errors import AuthError, SyncError
from sync.localcloud.stack import LocalCloud

from .conftest import Homes, expire_token, new_email


def _locked(name: str) -> str | None:
    # What map_keyring_error makes of keyring's KeyringLocked (macOS locks the login keychain on
    # sleep when set to; a KDE wallet closes with the screen saver).
    raise KeychainUnavailableError(
        f"read {name!r}: the keychain is locked (Collection is locked)",
        hint="unlock the login keychain (log in to the desktop session) and try again",
    )


def test_a_keychain_locked_at_the_first_refresh_after_a_sleep_is_a_sync_error(
    cloud: LocalCloud, homes: Homes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a night the first call gets 401 and refreshes, which reads the keychain first. A
    locked keychain made refresh_auth raise the raw KeychainUnavailableError out of pull(): not a
    SyncError, so the engine logged it as an unexpected failure with a traceback every retry and
    had no action for it. It is an AuthError now (wait for a person, with the unlock hint), and
    once the keychain is unlocked the next call refreshes and goes through."""
    _, remote = homes.device(cloud.url, cloud.anon_key, new_email())
    expire_token(remote, cloud)
    monkeypatch.setattr(remote._storage._creds, "find", _locked)
    with pytest.raises(SyncError) as info:
        remote.pull(0)
    err = info.value
    assert isinstance(err, AuthError) and err.action == "tell_user", repr(err)
    assert "locked" in err.message and "unlock" in (err.hint or "")
    monkeypatch.undo()  # the user logs in to the desktop: the keychain opens
    page = remote.pull(0)
    assert page.changes == [] and not page.reset_required


def test_a_refusal_met_while_the_keychain_is_locked_stays_a_sync_error(
    cloud: LocalCloud, homes: Homes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 42501 answered to a user's token makes the remote ask whether it still holds a session,
    which reads the keychain; a locked one raised its raw KeychainUnavailableError from inside
    the error handling, not a SyncError."""
    from postgrest.exceptions import APIError

    _, remote = homes.device(cloud.url, cloud.anon_key, new_email())
    remote.pull(0)  # signed in: calls carry the user's token

    class _Refused:
        def execute(self) -> None:
            raise APIError({"code": "42501", "message": "permission denied for function x"})

    monkeypatch.setattr(remote._client, "rpc", lambda *_a, **_k: _Refused())
    monkeypatch.setattr(remote._storage._creds, "find", _locked)
    monkeypatch.setattr(remote._storage, "_loaded", False)
    with pytest.raises(SyncError) as info:
        remote.pull(0)
    assert info.value.code == "42501", repr(info.value)
