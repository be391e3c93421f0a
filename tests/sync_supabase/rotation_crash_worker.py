"""Subprocess worker for the token-rotation crash tests (not a test module).

argv: home point. Opens the home's remote, then refreshes its session and is killed (SIGKILL, no
cleanup of any kind) at ``point``, after the server rotated the refresh token:

- ``answer``: the server's answer arrived and was not even parsed yet (a crash, or a connection
  that dropped after the server committed: the client holds the same knowledge either way);
- ``store``: the new session was parsed and is about to be stored;
- ``keychain``: inside the keychain write of the new session, before it reaches the keychain;
- ``refused``: the keychain refuses every write of the session (locked, as macOS locks it on
  sleep); the process refreshes three times, keeping the new session in memory, then is killed.

Prints nothing when the fault fired: the parent checks the exit status (-SIGKILL).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import supabase_auth._sync.gotrue_client as gotrue_client

from localstore.config import load_settings
from localstore.errors import KeychainUnavailableError
from sync.supabase_remote import KeychainSessionStorage, remote_from_settings


def _die(*_args: Any, **_kwargs: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    home, point = sys.argv[1], sys.argv[2]
    remote = remote_from_settings(load_settings(home=home, environ={}))
    storage: KeychainSessionStorage = remote._storage
    if point == "answer":
        # The refresh grant parses its answer through this module global.
        gotrue_client.parse_auth_response = _die
    elif point == "store":
        storage.store_rotated = _die  # type: ignore[method-assign]
    elif point == "keychain":
        real_set = storage._creds.set

        def set_then_die(name: str, value: str) -> None:
            if name == storage._name:
                _die()
            real_set(name, value)

        storage._creds.set = set_then_die  # type: ignore[method-assign]
    elif point == "refused":

        def refuse(name: str, value: str) -> None:
            raise KeychainUnavailableError(
                f"store {name!r}: the keychain is locked (injected)",
                hint="unlock the login keychain",
            )

        storage._creds.set = refuse  # type: ignore[method-assign]
        for _ in range(3):
            remote.refresh_auth()
            remote.check_session()  # the engine's per-cycle retry of the write: refused too
        assert storage.has_unsaved
        _die()
    else:
        raise SystemExit(f"unknown kill point {point!r}")
    remote.refresh_auth()
    print("the fault never fired", flush=True)


if __name__ == "__main__":
    main()
