"""Notice the OS keychain coming back while sync waits on it (docs/daemon.md, "A locked keychain").

A keychain locked with the screen, or a Secret Service restarted with the desktop session, makes a
token refresh fail: sync stops with "the keychain is locked" and the engine waits for a person
(``ATTENTION_RETRY_S``, or its poll interval), and a daemon started meanwhile stays offline until
its next ``RELOGIN_CHECK_S``. The person unlocking the keychain is that fix, so while sync waits
the lock state is asked every few seconds (a D-Bus property read: never an unlock prompt, which a
keychain read would pop up) and the keychain opening ends the wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from localstore.credentials import keychain_locked
from localstore.errors import CredentialError

if TYPE_CHECKING:
    from sync.engine import SyncEngine

log = logging.getLogger(__name__)

__all__ = ["KEYCHAIN_PROBE_S", "KeychainWatch", "keychain_failure"]

# How often the lock state is asked while sync waits (one D-Bus round trip each).
KEYCHAIN_PROBE_S = 2.0


def keychain_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised from, a keychain failure (a CredentialError)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, CredentialError):
            return True
        seen.add(id(cur))
        cur = cur.__cause__
    return False


class KeychainWatch:
    """Tell when the keychain opened (was locked or unreachable, is unlocked now)."""

    def __init__(
        self,
        probe: Callable[[], bool | None] = keychain_locked,
        *,
        every_s: float = KEYCHAIN_PROBE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._every_s = every_s
        self._clock = clock
        self._next = 0.0
        # Taken as closed when a wait begins (the failure that began it says so), then as last
        # seen: starting from "open", an unlock made before the first look (a tick after the
        # failure) was never seen as a change, and sync waited a minute, or a poll interval.
        # A keychain open at the first look (a failure that was no lock) is one retry, not one
        # every look: after it a lock has to be seen again.
        self._closed = True

    def opened(self, *, waiting: bool) -> bool:
        """Whether the keychain opened since sync began to wait (or since the last time it
        did); looks only while ``waiting``, at most every ``every_s``. Raises nothing."""
        if not waiting:
            self._closed = True  # (for the next wait)
            return False
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._every_s
        if self._probe() is False:
            opened, self._closed = self._closed, False
            return opened
        self._closed = True
        return False

    def follow(
        self,
        engine: SyncEngine | None,
        *,
        offline_on_keychain: bool,
        attach_now: Callable[[], None],
    ) -> None:
        """End sync's wait for a person when the keychain opens: ``engine`` syncs now, or, with
        no engine (offline, ``offline_on_keychain`` when for a keychain failure), ``attach_now``
        makes the next look for a login come at once. For the daemon and an app syncing
        in-process alike. Raises what ``request_sync`` raises (a closed store)."""
        waiting = offline_on_keychain if engine is None else engine.waits_on_keychain
        if not self.opened(waiting=waiting):
            return
        log.info("the keychain is open again; syncing now")
        if engine is None:
            attach_now()
        else:
            engine.request_sync()
