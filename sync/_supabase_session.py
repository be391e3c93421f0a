"""The cloud session in the OS keychain and its refreshes.

``KeychainSessionStorage`` is the client's auth storage (the session JSON in the keychain, a
rotated session the keychain refused kept in memory); ``_guard_refreshes`` routes every refresh
of a client through the home's refresh lock, and ``_TimerKeeper`` keeps supabase_auth's refresh
timer armed while the keychain refuses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic
from supabase import Client
from supabase_auth import SyncSupportedStorage
from supabase_auth.constants import STORAGE_KEY
from supabase_auth.types import AuthResponse, Session

from localstore import _durable
from localstore.config import Settings
from localstore.credentials import CredentialStore
from localstore.errors import CredentialError, CredentialNotFoundError, KeychainUnavailableError
from sync._supabase_http import ServerClock

log = logging.getLogger("sync.supabase_remote")

# -- keychain-backed session storage --------------------------------------------------------------


# The status hint while a refreshed session is kept in memory only (KeychainSessionStorage).
UNSAVED_LOCKED_HINT = (
    "keychain locked: the cloud sign-in is kept in memory and will be saved when the keychain "
    "is unlocked (unlock the login keychain)"
)
UNSAVED_REFUSED_HINT = (
    "the keychain refused the refreshed cloud sign-in: it is kept in memory and stored at the "
    "next sync that the keychain takes it (see the log for why)"
)


def refresh_lock_path(settings: Settings) -> Path:
    """The lock file that serializes session refreshes of this home across processes."""
    return settings.paths.state / "cloud-session.lock"


class KeychainSessionStorage(SyncSupportedStorage):
    """supabase auth storage that keeps the session JSON in the OS keychain.

    Only the session key (``supabase.auth.token``) goes to the keychain; other keys (the PKCE
    verifier of a sign-up) stay in memory. ``remove_item`` forgets the session *in memory only*:
    the client calls it whenever a refresh fails, even for a transient server error, and deleting
    the stored session then would log the user out for a network blip. :meth:`forget` is the one
    destructive call, used by ``logout``.

    A rotated session the keychain refused to store (:meth:`store_rotated`: the keychain locked
    between the guard's read and its write, a full disk under the encrypted-file fallback) is
    kept in memory as the *unsaved* session and preferred over the stored one, which holds the
    refresh token it was rotated from, already used up on the server. :meth:`retry_unsaved`
    stores it later. It stops being preferred once the keychain holds anything else than what it
    held when the write failed: that was stored after it (a new login), so it is newer.

    While a session is unsaved, refreshes start from the token the keychain holds
    (:meth:`stored_refresh_token`), not from the unsaved one: GoTrue answers that token, the
    parent of the active one, with the active token again, so the server never gets more than
    one rotation ahead of the keychain and a process killed meanwhile leaves a token the next
    process can still use (docs/credentials.md, "The cloud session across a crash").
    """

    def __init__(
        self, credentials: CredentialStore, name: str, *, lock_path: Path | None = None
    ) -> None:
        self._creds = credentials
        self._name = name
        self._lock_path = lock_path
        self._lock = threading.RLock()
        self._memory: dict[str, str] = {}
        self._durable: str | None = None  # the keychain's value as last read or written
        self._loaded = False
        self._removed = False
        self._unsaved: str | None = None  # a newer rotated session the keychain refused
        self._unsaved_over: str | None = None  # what the keychain held when it refused
        self._unsaved_locked = False  # whether it refused as locked (see unsaved_hint)
        self._warned = False

    def __repr__(self) -> str:
        return f"KeychainSessionStorage({self._name!r})"

    def get_item(self, key: str) -> str | None:
        """Return the stored value (the session JSON for the session key)."""
        with self._lock:
            if key != STORAGE_KEY:
                return self._memory.get(key)
            if self._removed:
                return None
            return self.durable_value()

    def set_item(self, key: str, value: str) -> None:
        """Store a value; the session goes to the keychain unless it is unchanged.

        Raises CredentialError when the keychain refuses (a login must not pretend it stored
        the session); rotations go through :meth:`store_rotated` instead."""
        with self._lock:
            if key != STORAGE_KEY:
                self._memory[key] = value
                return
            self._removed = False
            if value == (self._unsaved if self._unsaved is not None else self._durable):
                return
            self._write(value)

    def store_rotated(self, value: str) -> None:
        """Store a session just rotated under :meth:`refresh_guard`; never raises.

        Its refresh token is the only usable one (the one it was rotated from is used up), so
        if the keychain refuses it is kept in memory, preferred, and written again later."""
        with self._lock:
            self._removed = False
            try:
                self._write(value)
            except Exception as exc:  # noqa: BLE001 - whatever failed, dropping the token is worse
                if self._unsaved is None:
                    self._unsaved_over = self._durable
                self._unsaved = value
                # (A KeychainUnavailableError is also "no keychain at all": only a lock says so.)
                self._unsaved_locked = isinstance(exc, KeychainUnavailableError) and (
                    "locked" in exc.message
                )
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "could not store the refreshed cloud session in the keychain (%s); "
                        "keeping it in memory and retrying. Unlock the keychain or free disk "
                        "space",
                        exc.message if isinstance(exc, CredentialError) else exc,
                    )

    def retry_unsaved(self) -> None:
        """Store the unsaved session now, if any, under the refresh guard (cheap if none).

        Raises nothing: a keychain still refusing keeps the session in memory."""
        if self._unsaved is None:
            return
        with self.refresh_guard():
            try:
                self.reload()  # drops the unsaved session if a newer one was stored meanwhile
            except CredentialError:
                return  # the keychain cannot even be read yet: try again at the next point
            self.store_unsaved()

    def stored_refresh_token(self) -> str | None:
        """While a rotated session is unsaved: the refresh token the keychain holds, the one the
        unsaved session's token was rotated from (None when nothing is unsaved, or the keychain
        held no readable session then). Refreshing with it gets the same active token back."""
        with self._lock:
            if self._unsaved is None:
                return None
            held = _parse_session(self._unsaved_over)
            return None if held is None else held.refresh_token

    @property
    def has_unsaved(self) -> bool:
        """Whether a rotated session is only in memory (the keychain refused it)."""
        return self._unsaved is not None

    @property
    def unsaved_hint(self) -> str | None:
        """What the person should know while a rotated session is only in memory, else None."""
        if self._unsaved is None:
            return None
        return UNSAVED_LOCKED_HINT if self._unsaved_locked else UNSAVED_REFUSED_HINT

    def store_unsaved(self) -> None:
        """Write the unsaved session, if any; call under :meth:`refresh_guard` after a reload.

        Raises nothing (see :meth:`store_rotated`)."""
        with self._lock:
            if self._unsaved is not None:
                self.store_rotated(self._unsaved)

    def _write(self, value: str) -> None:
        self._creds.set(self._name, value)
        self._durable = value
        self._loaded = True
        if self._unsaved is not None:
            self._unsaved = self._unsaved_over = None
            log.warning("stored the refreshed cloud session in the keychain after all")
        self._warned = False
        log.debug("stored the rotated cloud session in the keychain")

    def remove_item(self, key: str) -> None:
        """Forget a value in memory (the keychain copy stays; see the class docstring)."""
        with self._lock:
            if key == STORAGE_KEY:
                self._removed = True
            else:
                self._memory.pop(key, None)

    def keep(self) -> None:
        """Undo :meth:`remove_item` of the session (the client dropped it for a failure that
        is no sign-out: see SupabaseRemote._keep_session_through_lock)."""
        with self._lock:
            self._removed = False

    def durable_value(self) -> str | None:
        """The newest session JSON: the unsaved one (see the class docstring), else the one
        last read from the keychain (read once, then cached). Raises CredentialError."""
        with self._lock:
            if not self._loaded:
                try:
                    self._durable = self._creds.find(self._name)
                except CredentialError:
                    if self._unsaved is None:
                        raise
                    # Still locked: the unsaved session is the newest this process can know.
                    return self._unsaved
                self._loaded = True
            if self._unsaved is not None:
                if self._durable == self._unsaved_over:
                    return self._unsaved
                log.info("another session was stored since the keychain refused ours; using it")
                self._unsaved = self._unsaved_over = None
                self._warned = False
            return self._durable

    def reload(self) -> str | None:
        """Re-read the session from the keychain (another process may have rotated it).

        Returns the newest session (:meth:`durable_value`): an unsaved rotated session is newer
        than the stored one it was rotated from. Raises CredentialError, and then keeps what it
        read before (supabase_auth's timer reads the session before each refresh: that read
        raised too after a reload that failed, and stopped the timer for good)."""
        with self._lock:
            was_loaded, self._loaded = self._loaded, False
            try:
                return self.durable_value()
            except CredentialError:
                self._loaded = was_loaded
                raise

    @contextlib.contextmanager
    def refresh_guard(self) -> Iterator[None]:
        """Hold the one right to refresh this session, across threads and processes.

        GoTrue rotates the refresh token on every refresh and treats a reused one as theft: the
        whole session is revoked. Two refreshers racing with the same token (the client's timer
        and the engine's ``refresh_auth``, or a daemon and a CLI run on one home) would log the
        user out, so every refresh happens under this lock and starts from the newest token.
        """
        with self._lock:
            if self._lock_path is None:
                yield
                return
            self._lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                # (flock on POSIX, a byte-range lock on Windows: "import fcntl" failed there.)
                with _durable.holding_lock(fd):
                    yield
            finally:
                os.close(fd)

    def durable_session(self) -> Session | None:
        """The stored session, parsed; None when absent or unreadable."""
        session = _parse_session(self.durable_value())
        if session is None and self.durable_value():
            log.warning("the stored cloud session is unreadable; log in again")
        return session

    def forget(self) -> None:
        """Delete the stored session from the keychain (logout)."""
        with self._lock:
            self._memory.clear()
            self._removed = True
            self._durable = None
            self._unsaved = self._unsaved_over = None
            self._loaded = True
            try:
                self._creds.delete(self._name)
            except CredentialNotFoundError:
                pass


def _guard_refreshes(
    client: Client,
    storage: KeychainSessionStorage,
    require_own: Callable[[Session | None], None] | None = None,
    *,
    clock: ServerClock,
) -> _TimerKeeper:
    """Route every refresh grant of ``client`` through ``storage.refresh_guard()``; return the
    keeper of its refresh timer.

    supabase_auth's refresh timer and ``refresh_session`` both end in ``_refresh_access_token``;
    wrapping that one method (pinned client 2.34.x) serializes them with our own refreshes and
    with other processes of this home, and makes each start from the newest stored token. A
    session another refresher rotated moments ago is reused as is instead of rotating again.
    ``require_own`` vets the stored session first: a session that was logged out (absent) or
    belongs to another user is never refreshed nor adopted (it raises, and the timer stops).
    Whether a stored session is still live is judged on ``clock``, the server's.
    """
    auth = client.auth
    plain = auth._refresh_access_token
    keeper = _TimerKeeper(auth)

    def guarded(refresh_token: str) -> AuthResponse:
        try:
            response = refresh(refresh_token)
        except CredentialError as exc:
            keeper.keychain_failed(exc)
            raise
        keeper.worked()
        return response

    def refresh(refresh_token: str) -> AuthResponse:
        with storage.refresh_guard():
            # The newest session: the keychain's, or one this process rotated but could not
            # store (newer than the stored one it was rotated from, whose token is spent).
            raw = storage.reload()
            latest = _parse_session(raw)
            if require_own is not None:
                require_own(latest)
            # Store it now: if this refresh fails (offline), other processes still get it.
            storage.store_unsaved()
            if latest is not None and latest.refresh_token != refresh_token:
                if not clock.expired(latest):
                    return AuthResponse(session=latest, user=latest.user)
                refresh_token = latest.refresh_token
            # Still unsaved (the keychain refused it again): refresh from the keychain's token,
            # the parent of the active one, which GoTrue trades for the same active token.
            # Rotating from the unsaved one put the keychain two rotations behind: a process
            # killed then left only a token the server takes as stolen (the session revoked).
            stored = storage.stored_refresh_token()
            if stored is not None:
                refresh_token = stored
            response = plain(refresh_token)
            if response.session is not None:
                # Persist before the lock is released: the next refresher must see this token.
                # A refused write keeps it in memory (the token just used is spent): never lose it.
                storage.store_rotated(response.session.model_dump_json())
            return response

    auth._refresh_access_token = guarded  # type: ignore[method-assign]
    return keeper


# How soon the refresh timer tries again after the keychain refused the session (locked).
KEYCHAIN_RETRY_S = 30.0


class _TimerKeeper:
    """Keep supabase_auth's refresh timer armed while the keychain refuses (see docs/daemon.md,
    "A locked keychain").

    The library re-arms its timer only for its own retryable (network) errors: a refresh that
    found the keychain locked stopped it for good, silently, and the token then expired in the
    background until a call's 401 (or a refused realtime join) refreshed it. The timer now tries
    again every KEYCHAIN_RETRY_S; the failure is logged once, and its end.
    """

    def __init__(self, auth: Any) -> None:
        self._auth = auth
        self._failing = False

    def keychain_failed(self, exc: CredentialError) -> None:
        if not self._failing:
            log.warning(
                "cannot refresh the cloud session: %s; trying again every %gs",
                exc.message,
                KEYCHAIN_RETRY_S,
            )
        self._failing = True
        self.rearm()

    @property
    def failing(self) -> bool:
        """Whether the last refresh failed on the keychain (none has worked since)."""
        return self._failing

    def rearm(self) -> None:
        """Arm the refresh timer to try again in KEYCHAIN_RETRY_S."""
        # Not the library's network retries (it gives up after MAX_RETRIES of those).
        self._auth._network_retries = 0
        # (A no-op once the timer was stopped: auto-refresh is off then. A refresh_auth that
        # failed re-arms it too: the next success arms it for the new token anyway.)
        self._auth._start_auto_refresh_token(KEYCHAIN_RETRY_S * 1000)

    def worked(self) -> None:
        if self._failing:
            log.info("the cloud session was refreshed again: the keychain answers")
        self._failing = False


def _parse_session(raw: str | None) -> Session | None:
    if not raw:
        return None
    try:
        return Session.model_validate_json(raw)
    except pydantic.ValidationError:
        return None


def _stop_refresh_timer(client: Client) -> None:
    # supabase_auth has no public "stop"; turning auto-refresh off first stops a refresh that is
    # running right now from arming a new timer, then the armed one is cancelled.
    auth = client.auth
    auth._auto_refresh_token = False
    timer = auth._refresh_token_timer
    if timer is not None:
        timer.cancel()
        auth._refresh_token_timer = None
