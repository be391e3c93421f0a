"""The Remote protocol over the official ``supabase`` client: RPC sync, keychain sessions, hints.

``SupabaseRemote`` speaks the sync RPCs (``push_changes``, ``pull_changes``, ``verify_rows``,
``fetch_rows_page`` or ``fetch_rows``, ``match_revisions``, ``server_info``) through ``client.rpc(...).execute()`` of
a sync ``supabase.Client``. Everything the client can raise (postgrest ``APIError``, httpx transport
errors, ``supabase_auth`` errors, malformed bodies) is translated at this boundary by
:func:`map_error` into the ``sync.errors`` tree, so the engine acts on ``.action`` alone:

==============================================  =================================  ============
what the client raised                          sync error                         action
==============================================  =================================  ============
PGRST301 / PGRST302 / PGRST303 / HTTP 401       AuthExpiredError                   refresh_auth
refresh_token_already_used / _not_found,        AuthRevokedError ("log in again")  tell_user
session/user not found, session_expired
no stored session (AuthSessionMissingError)     NotLoggedInError                   tell_user
42501 (RLS / grants / not signed in)            RemoteConfigError / NotLoggedIn    tell_user
PGRST202 / PGRST106 / 42883 / HTTP 404, bad     RemoteConfigError                  tell_user
URL, wrong API key (HTTP 401 without a code)
22023 (too many changes, bad argument)          ProtocolError                      tell_user
HTTP 429 / over_request_rate_limit, HTTP 503    RateLimitedError (retry_after =    retry
with Retry-After                                Retry-After, at most an hour)
57014 (statement timeout), 54000 (jsonb too     TransientError keeping the code:   retry
large), HTTP 413 (request too large)            the engine splits the push
connect refused / DNS (RPC or auth refresh)     OfflineError                       retry
TLS certificate or handshake refused            TransientError (code "tls")        retry
timeouts, resets, truncated bodies, 5xx,        TransientError                     retry
40001 / 40P01 / 55P03 / 08* / 53*
anything unclassified                           TransientError (reason logged)     retry
==============================================  =================================  ============

Before its first push, and again after a failed call or a new session, the remote asks
``localstore_schema_version()`` and refuses to push to a cloud schema older than
:data:`NEEDED_MIGRATIONS` with :class:`~sync.errors.SchemaTooOldError` (a RemoteConfigError:
tell_user, nothing quarantined, the edits wait; see ``_check_schema``).

Nothing here ever deletes local data or a stored session because of an error: an unclassified
failure is retried, and the stored session is removed only by :func:`logout`.

Sessions: :func:`login` signs in (or signs up) and stores the whole session JSON, refresh token
included, in the OS keychain through :class:`~localstore.credentials.CredentialStore`, never in a
file. :class:`KeychainSessionStorage` is the client's auth storage, so every rotation of the refresh
token (the client's auto-refresh timer, or :meth:`SupabaseRemote.refresh_auth`) is written to the
keychain before anyone can use the new token; an auth-state listener writes it again on
``TOKEN_REFRESHED`` (a no-op when unchanged) and hands the new access token to realtime.
:func:`remote_from_settings` restores the session and calls ``auth.initialize_from_storage()``,
without which a restored client never starts its refresh timer (field notes, Sync).

Realtime (``sync/_realtime.py``) is only a hint to pull; see :meth:`SupabaseRemote.subscribe`.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import itertools
import json
import logging
import os
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydantic
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, SupabaseException, create_client
from supabase_auth import SyncSupportedStorage
from supabase_auth import errors as auth_errors
from supabase_auth.constants import EXPIRY_MARGIN, STORAGE_KEY
from supabase_auth.types import AuthChangeEvent, AuthResponse, Session

from localstore import _durable
from localstore.config import Settings, check_cloud_url
from localstore.credentials import CredentialStore
from localstore.errors import CredentialError, CredentialNotFoundError, KeychainUnavailableError
from localstore.index import Index
from sync import _state as st
from sync import account_record, session_marker
from sync._realtime import RealtimeHints
from sync._shown import MAX_CODE, MAX_SHOWN, shown
from sync.errors import (
    AccountMismatchError,
    AuthError,
    AuthExpiredError,
    AuthRevokedError,
    NotLoggedInError,
    OfflineError,
    ProtocolError,
    RateLimitedError,
    RemoteConfigError,
    SchemaTooOldError,
    SessionChangedError,
    SyncError,
    TransientError,
)
from sync.login_names import project_credential_name, session_credential_name
from sync.remote import (
    DEFAULT_PULL_LIMIT,
    DEFAULT_VERIFY_LIMIT,
    MAX_BATCH,
    SPLIT_CODES,
    Change,
    FetchPage,
    HintCallback,
    PullPage,
    PushResult,
    RevisionMatch,
    RevisionProbe,
    ServerInfo,
    ServerRow,
    UnreadableValue,
    Unsubscribe,
    VerifyPage,
    canonical_uuid,
    checked_fetch_ids,
    checked_probes,
    fetch_in_pages,
    unsendable,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAPPED_EXCEPTIONS",
    "NEEDED_MIGRATIONS",
    "CloudProject",
    "KeychainSessionStorage",
    "LoginResult",
    "SupabaseRemote",
    "has_login",
    "login",
    "logout",
    "map_error",
    "remote_from_settings",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0

# -- the cloud schema this client needs ---------------------------------------------------------

# Every migration whose behaviour this client relies on, oldest first: push refuses a schema
# older than the last (see _check_schema). A later migration the client needs replaces
# localstore_schema_version() to answer its own timestamp and is appended here.
NEEDED_MIGRATIONS: tuple[str, ...] = (
    # An op id reused for another change is refused (op_id_reused), not answered as a replay:
    # without it a restored or copied home's edits were acknowledged and never applied.
    "20261122000800_op_fingerprint.sql",
    # localstore_schema_version() itself: an older schema cannot say what it has.
    "20261122000900_schema_version.sql",
)
SCHEMA_VERSION_RPC = "localstore_schema_version"


def _version_of(migration: str) -> int:
    return int(migration.partition("_")[0])


def _schema_hint(first: str) -> str:
    """How to apply the migrations from ``first`` on, with commands that run as written.

    The folder is this client's own (an installed package has no checkout), and the Supabase
    CLI needs ``--workdir``: a bare ``supabase db push`` looks in ./supabase/migrations. It also
    needs ``--db-url``: without it, it pushes to the project linked in that folder, and nobody
    ran ``supabase link`` in an installed package ("Cannot find project ref. Have you run
    supabase link?"). Both commands take the same connection string."""
    package = Path(__file__).parent
    folder = package / "supabase" / "migrations"
    return (
        f"apply the migrations from {first} on, in order (applying one again is safe), from "
        f'{folder}: `supabase --workdir {package} db push --db-url "$DATABASE_URL"`, or for '
        'each file `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 --single-transaction -f <file>`, '
        "with DATABASE_URL the project's Postgres connection string (dashboard: Connect) "
        '(docs/sync-protocol.md, "Deploying"); local edits wait and sync resumes by itself'
    )


def _schema_too_old(server_version: int | None) -> SchemaTooOldError | None:
    """The error for a cloud schema at ``server_version`` (None: it has no version function),
    or None when it has every migration in NEEDED_MIGRATIONS."""
    if server_version is None:
        # Older than the version function, so it cannot tell which of the earlier ones it has.
        first = NEEDED_MIGRATIONS[0]
        others = NEEDED_MIGRATIONS[:-1]
        return SchemaTooOldError(
            f"the cloud schema is older than this LocalStore needs: migration "
            f"{NEEDED_MIGRATIONS[-1]} is missing (the project has no {SCHEMA_VERSION_RPC}()), "
            f"and {' and '.join(others)} may be too",
            missing=first,
            hint=_schema_hint(first),
        )
    missing = [m for m in NEEDED_MIGRATIONS if _version_of(m) > server_version]
    if not missing:
        return None
    return SchemaTooOldError(
        f"the cloud schema is older than this LocalStore needs: migration {missing[0]} and "
        f"later are missing (the server's schema is at {server_version})",
        missing=missing[0],
        server_version=server_version,
        hint=_schema_hint(missing[0]),
    )


# -- error mapping -------------------------------------------------------------------------------

_AUTH_EXPIRED_CODES = frozenset({"PGRST301", "PGRST302", "PGRST303", "401"})
_CONFIG_CODES = frozenset({"PGRST202", "PGRST203", "PGRST106", "PGRST205", "42883", "42P01", "404"})
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"})
_TRANSIENT_PREFIXES = ("08", "53", "5")  # connection, resources; numeric 5xx from the fallback
_REVOKED_AUTH_CODES = frozenset(
    {
        "refresh_token_already_used",
        "refresh_token_not_found",
        "session_not_found",
        "session_expired",
        "user_not_found",
        "user_banned",
    }
)
_CONFIG_AUTH_CODES = frozenset(
    {"signup_disabled", "email_provider_disabled", "provider_disabled", "validation_failed"}
)
_BAD_KEY_MESSAGES = ("No API key found in request", "Invalid authentication credentials")

# Every third-party exception type this module translates; the tests instantiate each one and
# check that it maps to a non-destructive SyncError.
MAPPED_EXCEPTIONS: tuple[type[BaseException], ...] = (
    APIError,
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.CookieConflict,
    httpx.StreamError,
    auth_errors.AuthError,
    pydantic.ValidationError,
    ValueError,
    OSError,
    CredentialError,
)


def map_error(
    exc: BaseException, *, what: str, quiet: bool = False, secrets: Iterable[str | None] = ()
) -> SyncError:
    """Translate an exception raised by the supabase client into the sync.errors tree.

    ``quiet``: an unclassified error is not logged as "will retry" (for a one-shot caller).
    ``secrets`` (the password, tokens and key the failed request carried) are replaced by
    ``***`` in the error and in the line logged: a server or proxy that echoes the request back
    in its error text would otherwise put them in the log and on the terminal."""
    hidden = _redactor(secrets)
    if isinstance(exc, SyncError):
        return _redacted(exc, hidden)
    if isinstance(exc, APIError):
        err = _map_api_error(exc, what, quiet, hidden)
    elif isinstance(exc, httpx.HTTPError | httpx.InvalidURL | httpx.CookieConflict):
        err = _map_httpx_error(exc, what, quiet, hidden)
    elif isinstance(exc, auth_errors.AuthError):
        err = _map_auth_error(exc, what, quiet, hidden)
    elif isinstance(exc, CredentialError):
        err = AuthError(f"{what}: {exc.message}", hint=exc.hint or AuthError.hint)
    elif isinstance(exc, OSError):
        err = OfflineError(f"{what}: network error {type(exc).__name__}: {exc}")
    else:
        err = _unclassified(exc, what, quiet, hidden)
    return _redacted(err, hidden)


def _redactor(secrets: Iterable[str | None]) -> Callable[[str], str]:
    """A function that replaces each secret in a text by ``***`` (longest first, so one secret
    that contains another is replaced whole)."""
    # Very short values are left alone: replacing every "a" would garble the message and a
    # secret that short protects nothing anyway.
    plain = {s for s in secrets if s and len(s) >= 4}
    # Also as they read inside an echoed JSON body (a quote, a backslash, non-ASCII escaped).
    escaped = {json.dumps(s, ensure_ascii=a)[1:-1] for s in plain for a in (True, False)}
    found = sorted(plain | escaped, key=len, reverse=True)

    def redact(text: str) -> str:
        for secret in found:
            text = text.replace(secret, "***")
        return text

    return redact


def _redacted(err: SyncError, redact: Callable[[str], str]) -> SyncError:
    """``err`` without the secrets, and with the server's text in it escaped and cut
    (sync._shown): its message and hint reach the index, `localstore status` and the log."""
    # Secrets first: cut first, a secret straddling the cut would leave its start behind.
    message = shown(redact(err.message), 2 * MAX_SHOWN)
    hint = shown(redact(err.hint), 2 * MAX_SHOWN)
    if message != err.message:
        err.message = message
        err.args = (message,)
    if hint != err.hint:
        err.hint = hint
    if err.code is not None:
        err.code = shown(err.code, MAX_CODE)
    return err


def _shape_error(exc: pydantic.ValidationError, what: str) -> str:
    """What a malformed answer lacked, without pydantic's text: that quotes the input it refused
    (part of it), and the input is the server's answer, a session with its tokens among them."""
    problems = exc.errors(include_url=False, include_context=False, include_input=False)
    fields = sorted({".".join(str(p) for p in e["loc"]) or "(whole answer)" for e in problems})
    shown = ", ".join(fields[:5]) + (f" and {len(fields) - 5} more" if len(fields) > 5 else "")
    return f"{what}: the server's answer is not a valid {exc.title} ({shown})"


def map_login_error(
    exc: BaseException, url: str, *, secrets: Iterable[str | None] = ()
) -> SyncError:
    """Translate a failed sign-in: like map_error, with hints for a one-shot command.

    Login runs once and nothing retries it, so sync's "retries by itself" hints would mislead,
    and an unclassified error is not logged as "will retry" (the caller shows the one error).
    ``secrets`` (the password, the anon key) never reach the error: see map_error.
    """
    return _redacted(_map_login_error(exc, url, secrets), _redactor(secrets))


def _map_login_error(exc: BaseException, url: str, secrets: Iterable[str | None]) -> SyncError:
    what = "log in"
    if isinstance(exc, SyncError):
        return exc
    if isinstance(exc, SupabaseException):  # create_client's checks: URL and key format
        invalid_url = str(exc.message) == "Invalid URL"
        return RemoteConfigError(
            f"{what}: {url!r} is not a project URL" if invalid_url else f"{what}: {exc.message}",
            hint="give the project URL, like https://<project>.supabase.co, and its anon key",
        )
    if isinstance(exc, UnicodeError):  # a password (or e-mail) that is not text: bytes on stdin
        return AuthError(
            f"{what}: the e-mail or password is not valid UTF-8 text",
            hint="give them as UTF-8 text",
        )
    if isinstance(exc, auth_errors.AuthRetryableError) and isinstance(
        exc.__cause__, httpx.ConnectError
    ):
        return OfflineError(
            f"{what}: cannot reach {url}: {exc.message}",
            hint="check the URL and that the server is up, then log in again",
        )
    err = map_error(exc, what=what, quiet=True, secrets=secrets)
    if isinstance(err, OfflineError):
        err.hint = "check the URL and the network, then log in again"
    elif isinstance(err, RateLimitedError):
        err.hint = "wait a minute, then log in again"
    elif isinstance(err, TransientError):
        err.hint = "check the URL and the anon key, then log in again"
    elif isinstance(err, AuthExpiredError):  # a 401 before any session: the key is refused
        err = RemoteConfigError(err.message, code=err.code, hint="check the anon key")
    return err


def _unclassified(
    exc: BaseException, what: str, quiet: bool = False, redact: Callable[[str], str] = str
) -> SyncError:
    # Never destructive: an error we cannot classify is retried, and the reason is logged once
    # here so a persistent one can be diagnosed (sibyl #265 lost writes on an unclassified 409).
    if isinstance(exc, pydantic.ValidationError):
        text = _shape_error(exc, what)
    else:
        text = shown(redact(f"{what}: unexpected {type(exc).__name__}: {exc}"), 2 * MAX_SHOWN)
    if not quiet:
        log.warning("%s; will retry", text)
    return TransientError(text)


def _too_big_hint(what: str) -> str:
    """What sync does about a call the server found too large or too slow (by the RPC's name)."""
    if what == "push_changes":
        return "sync pushes smaller batches by itself; nothing is lost"
    if what in ("fetch_rows", "fetch_rows_page"):
        return "sync asks for fewer rows at a time by itself; nothing is lost"
    # A pull page is bounded by the server (rows and bytes); this is a busy or limited server.
    return "sync tries again later by itself; nothing is lost"


def _map_api_error(
    exc: APIError, what: str, quiet: bool = False, redact: Callable[[str], str] = str
) -> SyncError:
    code = str(exc.code or "")
    message = str(exc.message or exc.details or code or "error")
    text = f"{what}: {message}" + (f" [{code}]" if code else "")
    if code in _AUTH_EXPIRED_CODES:
        return AuthExpiredError(text, code=code)
    if not code and message in _BAD_KEY_MESSAGES:
        return RemoteConfigError(text, hint="check the project's anon key (cloud_anon_key)")
    if code == "42501":
        if "not signed in" in message:
            return NotLoggedInError(text, code=code)
        return RemoteConfigError(
            text,
            code=code,
            hint="the cloud refused access: log in as the owner and deploy the grants and "
            "row-level security of sync/supabase/migrations",
        )
    if code in _CONFIG_CODES:
        return RemoteConfigError(text, code=code)
    if code == "22023":
        return ProtocolError(text, code=code, hint=str(exc.hint or ProtocolError.hint))
    if code == "429":
        return RateLimitedError(text, code=code)
    if code in SPLIT_CODES:
        # A call past a server limit: TransientError keeping the code, so the engine pushes it
        # again in smaller pieces (and parks a change refused alone) instead of the same call
        # forever, as the "5" prefix below would. 413 comes from a gateway in front of
        # PostgREST (not JSON: postgrest's fallback puts the HTTP status in the code).
        return TransientError(text, code=code, hint=_too_big_hint(what))
    if code in _TRANSIENT_SQLSTATES or code.startswith(_TRANSIENT_PREFIXES):
        return TransientError(text, code=code)
    return _unclassified(exc, what, quiet, redact)


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under a failed connect (certificate refused, handshake failed), if any."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _map_httpx_error(
    exc: Exception, what: str, quiet: bool = False, redact: Callable[[str], str] = str
) -> SyncError:
    text = f"{what}: {type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.ConnectError):
        if _tls_failure(exc) is not None:
            # The server answered, so this machine is not offline: its certificate (or TLS
            # itself) was refused. Retried all the same: a network's sign-in page (hotel, train)
            # intercepts TLS until the person signs in, and that fixes itself.
            return TransientError(
                text,
                code="tls",
                hint="the server's TLS certificate was refused: on a network with a sign-in "
                "page, sign in to it; otherwise check the project URL (cloud_url) and the "
                "system's certificates. Sync retries by itself",
            )
        return OfflineError(text)
    if isinstance(exc, httpx.TransportError):
        # Timeouts, resets, truncated bodies, proxy failures: the request may or may not have
        # been applied; idempotent pushes make the retry safe.
        if isinstance(exc, httpx.UnsupportedProtocol):
            return RemoteConfigError(text, hint="the project URL must start with http(s)://")
        return TransientError(text)
    if isinstance(exc, httpx.InvalidURL):
        return RemoteConfigError(text, hint="check the project URL (cloud_url)")
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if status == 401:
            return AuthExpiredError(text, code="401")
        if status == 429:
            return RateLimitedError(text, code="429")
        if status >= 500:
            return TransientError(text, code=str(status))
    return _unclassified(exc, what, quiet, redact)


def _map_auth_error(
    exc: auth_errors.AuthError, what: str, quiet: bool = False, redact: Callable[[str], str] = str
) -> SyncError:
    code = str(exc.code or "")
    status = int(getattr(exc, "status", 0) or 0)
    text = f"{what}: {exc.message}" + (f" [{code}]" if code else "")
    if isinstance(exc, auth_errors.AuthRetryableError):
        if isinstance(exc.__cause__, httpx.ConnectError):
            # A refresh that could not connect (DNS, refused, TLS) is the same fault as an RPC
            # that could not: offline, not "error" (after a laptop's sleep the token refresh is
            # often the first request, and its status said "error" while the RPCs said offline).
            return _map_httpx_error(exc.__cause__, what, quiet, redact)
        return TransientError(text, code=code or None)
    if isinstance(exc, auth_errors.AuthSessionMissingError):
        return NotLoggedInError(text)
    if code in _REVOKED_AUTH_CODES:
        return AuthRevokedError(f"{what}: the session is no longer valid", code=code)
    if code == "invalid_credentials":
        return AuthError(f"{what}: wrong email or password", code=code, hint="check them and retry")
    if code == "user_already_exists":
        return AuthError(text, code=code, hint="log in without --signup")
    if isinstance(exc, auth_errors.AuthWeakPasswordError) or code == "weak_password":
        return AuthError(text, code=code, hint="choose a longer password")
    if code == "email_not_confirmed":
        return AuthError(text, code=code, hint="confirm the e-mail address, then log in again")
    if code in _CONFIG_AUTH_CODES:
        return RemoteConfigError(text, code=code)
    if code in ("over_request_rate_limit",) or status == 429:
        return RateLimitedError(text, code=code or "429")
    if code in ("bad_jwt", "invalid_jwt", "no_authorization") or status == 401:
        return AuthExpiredError(text, code=code or "401")
    if status >= 500:
        return TransientError(text, code=code or str(status))
    return _unclassified(exc, what, quiet, redact)


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
                _durable.try_lock(fd, blocking=True)
                try:
                    yield
                finally:
                    # (Windows frees a lock at its handle's close only "eventually".)
                    with contextlib.suppress(OSError):
                        _durable.unlock(fd)
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


# -- project config --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CloudProject:
    """Where this home syncs to, as written by :func:`login` (kept in the keychain)."""

    url: str
    anon_key: str
    user_id: str = ""
    email: str = ""

    def to_json(self) -> str:
        """Serialize for the keychain."""
        return json.dumps(
            {
                "url": self.url,
                "anon_key": self.anon_key,
                "user_id": self.user_id,
                "email": self.email,
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> CloudProject:
        """Parse what :meth:`to_json` wrote. Raises NotLoggedInError when unreadable."""
        try:
            data = json.loads(raw)
            return cls(
                str(data["url"]),
                str(data["anon_key"]),
                data.get("user_id", ""),
                data.get("email", ""),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise NotLoggedInError("the stored cloud project is unreadable") from exc


@dataclass(frozen=True, slots=True)
class LoginResult:
    """What :func:`login` did."""

    url: str
    user_id: str
    email: str
    signed_up: bool
    # Something the person should know (the home's blueprints go to a new project or account).
    note: str = ""


# -- the remote ------------------------------------------------------------------------------------


def _client_options(
    storage: SyncSupportedStorage, http: httpx.Client, *, auto_refresh: bool
) -> ClientOptions:
    # Our own httpx client: it carries the timeout (the default is 120 s, far too long to notice
    # a black-holed connection) and lets close() release the sockets.
    return ClientOptions(
        storage=storage,
        httpx_client=http,
        auto_refresh_token=auto_refresh,
        persist_session=True,
        flow_type="implicit",
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~0.2 s; one context serves every client of the process
    # (SSLContext is safe to share between connections and threads once configured).
    return ssl.create_default_context()


def _http_client(
    timeout_s: float, *, on_response: Callable[[httpx.Response], None] | None = None
) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=True,
        verify=_tls_context(),
        event_hooks={"response": [on_response]} if on_response is not None else None,
    )


# How deep decode_answer reads an RPC answer: a value nested deeper is replaced by an
# UnreadableValue. A row's meta starts at level 4 of a pull page (page, changes, row, meta), so
# that still reads past MAX_META_DEPTH (what a meta may hold), and stays far below the
# interpreter's recursion limit, which json's C decoder spends one frame per level of.
ANSWER_DEPTH = 128
# A JSON string (escapes included) or a bracket, for decode_answer's depth cut.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
# What decode_answer puts in place of a value nested too deep: a string with a NUL, which no
# jsonb value holds, so it cannot be one a row really has.
_TOO_DEEP = "\x00nested too deep"


def decode_answer(raw: bytes) -> Any:
    """An RPC answer decoded as ``json.loads`` does, except for what json cannot hold: an
    integer of more digits than ``int()`` converts (``sys.get_int_max_str_digits()``, left as
    it is: it is process-wide) and a value nested deeper than :data:`ANSWER_DEPTH` each become
    an :class:`~sync.remote.UnreadableValue` where they were. ``sync.remote.meta_problem`` then
    refuses only the rows that hold one. Raises ValueError for what is no JSON at all.
    """
    text, cut = _cut_deep(raw.decode("utf-8"), ANSWER_DEPTH)
    data = json.loads(text, parse_int=_answer_int)
    return _mark_too_deep(data) if cut else data


def _answer_int(text: str) -> int | UnreadableValue:
    try:
        return int(text)
    except ValueError:  # (as meta_problem says it of such an int in a decoded meta)
        return UnreadableValue(f"an integer of more than {sys.get_int_max_str_digits()} digits")


def _cut_deep(text: str, limit: int) -> tuple[str, bool]:
    """``text`` with each value that opens deeper than ``limit`` levels replaced by the JSON
    string of :data:`_TOO_DEEP`, and whether any was. Brackets inside strings are skipped; a
    text whose brackets do not match is left to json.loads to refuse."""
    depth = 0
    start = -1
    parts: list[str] = []
    last = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token[0] == '"':
            continue
        if token in "[{":
            depth += 1
            if depth == limit + 1:
                start = match.start()
        else:
            if depth == limit + 1 and start >= 0:
                parts += [text[last:start], json.dumps(_TOO_DEEP)]
                last = match.end()
                start = -1
            depth -= 1
    if not parts:
        return text, False
    parts.append(text[last:])
    return "".join(parts), True


def _mark_too_deep(data: Any) -> Any:
    """``data`` with every :data:`_TOO_DEEP` string replaced by an UnreadableValue (in place;
    iterative, as the answer may still be 128 levels deep)."""
    marker = UnreadableValue(f"a value nested deeper than {ANSWER_DEPTH} levels of the answer")
    if data == _TOO_DEEP:
        return marker
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                if child == _TOO_DEEP:
                    value[key] = marker
                elif isinstance(child, dict | list):
                    stack.append(child)
        elif isinstance(value, list):
            for i, child in enumerate(value):
                if child == _TOO_DEEP:
                    value[i] = marker
                elif isinstance(child, dict | list):
                    stack.append(child)
    return data


# A server's Retry-After is honoured up to this: a bogus or hostile header (a day, a date years
# ahead) must not park a daemon's sync for longer than an hour.
MAX_RETRY_AFTER_S = 3600.0


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), capped at
    MAX_RETRY_AFTER_S; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": a date of unknown zone
            return None
        # A date already past asks for no wait.
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    return min(seconds, MAX_RETRY_AFTER_S)


def _http_date(value: str | None) -> float | None:
    """The epoch seconds of an HTTP date header; None when absent, unreadable or of no zone."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() if when.tzinfo is not None else None


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """The wait a response's ``Retry-After`` asks for; an HTTP date is read against the
    response's own ``Date`` (the server's clock) when it has one: a client clock a day behind
    took "retry at 12:00:30" for a day's wait (cut to the hour's cap), one ahead for none."""
    return retry_after_seconds(headers.get("Retry-After"), now=_http_date(headers.get("Date")))


# A response's Date differing from this machine's clock by at most this is taken for agreement:
# the header has a 1-second resolution and arrives a network delay late, and an error of a few
# seconds is well inside the margin expiry is judged with (EXPIRY_MARGIN, 10 s).
CLOCK_AGREES_S = 5.0
# One differing by more is taken for a broken header (a proxy's cached Date, a date of 1970),
# not this clock. A clock's usual errors are far smaller: a time zone (up to 14 h: a dual boot
# keeping the RTC in local time) or drift with NTP off.
MAX_CLOCK_SKEW_S = 7 * 86400.0


class ServerClock:
    """The server's wall clock, as this machine's plus the offset its responses' ``Date`` shows.

    Access tokens expire by the server's clock (``expires_at`` is the JWT's ``exp``). Judged on a
    local clock two hours behind (a dual boot whose RTC keeps local time, NTP off), a token that
    expired an hour ago looked live: realtime rejoined with it and was refused, and the refresh
    guard reused another process's expired session. Two hours ahead, every token looked expired:
    each realtime join and each guarded refresh rotated the session again, and (ahead by more
    than a token's lifetime) supabase_auth armed no refresh timer at all
    (docs/supabase-remote.md, "Clocks")."""

    def __init__(self) -> None:
        # Server minus local seconds; 0 until a response says otherwise. One float, replaced
        # whole: the response hook runs on every calling thread, readers need no lock.
        self.offset = 0.0

    def note(self, date: str | None) -> None:
        """Learn the offset from a response's ``Date`` header (its value, or None)."""
        server = _http_date(date)
        if server is None:
            return
        skew = server - time.time()
        if abs(skew) > MAX_CLOCK_SKEW_S:
            return
        self.offset = skew if abs(skew) > CLOCK_AGREES_S else 0.0

    def now(self) -> float:
        """The server's time now, in epoch seconds (this machine's when they agree)."""
        return time.time() + self.offset

    def expired(self, session: Session) -> bool:
        """Whether ``session``'s access token has expired, or will within EXPIRY_MARGIN, by
        the server's clock (the test supabase_auth makes on the local one)."""
        return (session.expires_at or 0) <= self.now() + EXPIRY_MARGIN


def _with_status(err: SyncError, status: int | None, retry_after: float | None) -> SyncError:
    """Refine a mapped error with the HTTP status and Retry-After of the failed response.

    postgrest's APIError keeps neither: a 429 whose body has no ``code`` (the API gateway's own
    ``{"message": "API rate limit exceeded"}``) was an unclassified error, and no Retry-After
    ever reached the engine, which waits for RateLimitedError.retry_after.
    """
    if status == 429 or (status == 503 and retry_after is not None):
        if not isinstance(err, RateLimitedError):
            if not isinstance(err, TransientError):
                return err  # classified as something else on purpose (an auth error, ...)
            err = RateLimitedError(err.message, code=err.code or str(status))
        if retry_after is not None:
            err.retry_after = retry_after
    return err


class SupabaseRemote:
    """One signed-in user's Remote over a Supabase project (see sync.remote.Remote).

    Build it with :func:`remote_from_settings` (or directly from a storage that holds a session).
    Methods are blocking and thread-safe. ``close()`` stops the refresh timer, realtime and the
    HTTP client.
    """

    def __init__(
        self,
        url: str,
        anon_key: str,
        storage: KeychainSessionStorage,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        realtime_health_s: float = 2.0,
        on_close: Callable[[], None] | None = None,
        marker: session_marker.SessionMarker | None = None,
    ) -> None:
        session = storage.durable_session()
        if session is None:
            raise NotLoggedInError("no cloud session is stored for this home")
        self.url = url.rstrip("/")
        self._marker = marker
        # Set once the stored session is gone or another user's: every call raises it after.
        self._lost: SyncError | None = None
        self._lost_lock = threading.Lock()
        # The last reason realtime's token refresh failed (None: it works): see _realtime_token.
        self._rt_refresh_error: str | None = None
        self._anon_key = anon_key
        self._storage = storage
        self._user_id = session.user.id
        self._timeout_s = timeout_s
        self._health_s = realtime_health_s
        self._on_close = on_close
        self._lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self._closed = False
        self._devices: set[str] = set()
        # The cloud schema was found new enough (_check_schema) as of server epoch
        # _schema_ok_epoch. Each sign that the server may have changed under this remote
        # (_server_may_have_changed) moves the epoch on, and the engine asks server_info again
        # when it moved (see server_epoch). Only success is kept, so a push after the operator
        # applied the migrations asks again and goes through. An epoch, not a flag: a check
        # answered while another thread's call failed would have set the flag that failure had
        # cleared. next() of a count: the auth thread and callers' threads draw.
        self._epochs = itertools.count(1)
        self._epoch = 0
        self._schema_ok_epoch = -1
        # The server epoch at which fetch_rows_page was found missing (a project without
        # migration 20261122001300): fetches then go to fetch_rows until the epoch moves, instead
        # of asking for the missing function before each one.
        self._no_fetch_page_epoch = -1
        self._hints: RealtimeHints | None = None
        self._callbacks: dict[int, HintCallback] = {}
        self._next_cb = 0
        # The status and Retry-After of the last response, per thread (calls run concurrently).
        self._last_response = threading.local()
        self._clock = ServerClock()
        self._http = _http_client(timeout_s, on_response=self._note_response)
        try:
            # Client(), not create_client(): create() calls auth.get_session(), which refreshes
            # an expiring stored session before _guard_refreshes is in place, i.e. without the
            # home's refresh lock. A daemon refreshing the same token at that moment got the
            # session revoked (reuse of a rotated token). initialize_from_storage() below does
            # that refresh under the guard, and its SIGNED_IN/TOKEN_REFRESHED event sets the
            # Authorization header that create() would have set.
            self._client: Client = Client(
                self.url, anon_key, _client_options(storage, self._http, auto_refresh=True)
            )
            keeper = _guard_refreshes(self._client, storage, self._require_own, clock=self._clock)
            self._auth_sub = self._client.auth.on_auth_state_change(self._on_auth_event)
            # A client rebuilt from storage never starts its refresh timer without this.
            self._client.auth.initialize_from_storage()
            if keeper.failing:
                self._keep_session_through_lock(keeper)
        except Exception as exc:
            self._http.close()
            raise map_error(exc, what="open the cloud session") from exc

    # -- identity and auth ---------------------------------------------------------------------

    @property
    def identity(self) -> str:
        """``supabase:<url>:<user id>``."""
        return f"supabase:{self.url}:{self._user_id}"

    @property
    def user_id(self) -> str:
        """The signed-in user's id."""
        return self._user_id

    def _on_auth_event(self, event: AuthChangeEvent, session: Session | None) -> None:
        if session is None:
            return
        # A new session (the refresh timer's, about hourly; refresh_auth; a sign-in) starts a
        # new stretch of work: the next push asks for the schema again, and the engine for
        # server_info, so a server rolled back or reconfigured under a daemon that never saw an
        # error is noticed within the hour.
        self._server_may_have_changed()
        if event in ("SIGNED_IN", "TOKEN_REFRESHED"):
            self._rearm_refresh_timer(session)
        if event == "TOKEN_REFRESHED":
            # The storage already wrote it (unchanged values are skipped); this is the belt to
            # its braces, so a rotated refresh token is never only in memory.
            try:
                self._storage.set_item(STORAGE_KEY, session.model_dump_json())
            except CredentialError as exc:
                log.error("could not store the rotated cloud session: %s", exc.message)
        hints = self._hints
        if hints is not None:
            hints.set_auth(session.access_token)

    @property
    def unsaved_session_hint(self) -> str | None:
        """While the keychain refuses the refreshed session (kept in memory, sync goes on): what
        the status tells the person; None otherwise. The engine shows it, and a keychain watch
        (sync._keychain_watch) syncs at the unlock, whose check_session stores it."""
        return self._storage.unsaved_hint

    def _rearm_refresh_timer(self, session: Session) -> None:
        """Arm supabase_auth's refresh timer for ``session`` by the server's clock.

        The library has just armed it (``_save_session``, before it notifies) for the token's
        expiry minus the local time. On a clock ahead by more than a token's lifetime that is
        negative and no timer was armed at all; on one behind, the timer fired that much late.
        Either way the token expired in the background and only a call's 401 (or a refused
        realtime join) refreshed it. Nothing to do while the clocks agree."""
        if not self._clock.offset or session.expires_at is None:
            return
        expires_in = session.expires_at - self._clock.now()
        # As the library's _save_session does: EXPIRY_MARGIN early, or 0.5 s for a short token.
        early = EXPIRY_MARGIN if expires_in > EXPIRY_MARGIN else 0.5
        # (Milliseconds. A token already expired arms nothing, as in the library: the next
        # call's 401 refreshes. Nothing either once the timer was stopped: auto-refresh is off.)
        self._client.auth._start_auto_refresh_token((expires_in - early) * 1000)

    def _access_token(self) -> str:
        session = self._storage.durable_session()
        if session is None or session.user.id != self._user_id:
            return self._anon_key  # never hand realtime another user's token
        return session.access_token

    def _realtime_token(self) -> str:
        """The access token for a realtime (re)join, refreshed first if it expired.

        Called by the realtime supervisor (off its loop) before every join. After a sleep the
        refresh timer has not fired yet (it counts monotonic time, which stops in suspend), so
        the token realtime was last handed is stale and the join would be refused until a poll
        refreshed it. Expiry is judged on the server's clock (:class:`ServerClock`). Never
        raises: a failed refresh leaves the join to fail and back off."""
        if self._closed or self._lost is not None:
            return self._anon_key
        try:
            session = self._storage.durable_session()
            if session is not None and self._clock.expired(session):
                self.refresh_auth()  # guarded; its TOKEN_REFRESHED also reaches realtime
            self._rt_refresh_error = None
        except (SyncError, CredentialError) as exc:
            # Every retry of realtime's backoff asks again: the same reason once, its repeats
            # at DEBUG. An outage with an expired token (a laptop woken without a network)
            # wrote an INFO per retry, every 5 s and then every 5 min, for as long as it lasted.
            again = str(exc) == self._rt_refresh_error
            self._rt_refresh_error = str(exc)
            log.log(
                logging.DEBUG if again else logging.INFO,
                "realtime: could not refresh the cloud session (%s)",
                exc,
            )
        try:
            return self._access_token()
        except CredentialError:
            return self._anon_key

    def _require_own(self, session: Session | None) -> None:
        """Raise SessionChangedError (for good) unless ``session`` is this remote's user's.

        The keychain holds one session per home. After ``localstore logout`` (no session) or
        another user's ``localstore login`` (their session), going on with whatever is stored
        would sync one user's cursor, bases and files with another user's account.
        """
        if session is not None and session.user.id == self._user_id:
            return
        if session is None:
            err = SessionChangedError(
                "this home was logged out of the cloud (`localstore logout`); sync stopped "
                "using its session",
                code="logged_out",
                hint="log in with `localstore login`; the daemon picks the new session up",
            )
        else:
            err = SessionChangedError(
                f"another user ({session.user.email or session.user.id}) logged in on this home "
                f"since sync started as user {self._user_id}; this sync stopped using the session",
                code="user_changed",
            )
        self._lose(err)
        raise err

    def _lose(self, err: SyncError) -> None:
        # Its own lock: this runs inside the storage's refresh guard, and subscribe() takes
        # self._lock before the storage's lock (reading the token).
        with self._lost_lock:
            if self._lost is None:
                self._lost = err
                log.warning("%s", err.message)
            hints, self._hints = self._hints, None
        # The old session is not this remote's to refresh or listen with any more.
        _stop_refresh_timer(self._client)
        if hints is not None:
            hints.close()

    def check_session(self) -> None:
        """Raise SessionChangedError if the home logged out, or another user logged in, since
        this remote was opened (the engine calls this before every cycle).

        Cheap: one ``os.stat`` of the session marker (:mod:`sync.session_marker`); the keychain
        is read only when the marker changed. A new login of the same user is adopted
        (:meth:`_adopt`). Also the periodic point that stores a rotated session the keychain
        refused earlier.
        """
        if self._lost is not None:
            raise self._lost
        if self._marker is not None and self._marker.changed():
            with self._auth_lock:
                try:
                    before = self._storage.durable_value()
                    raw = self._storage.reload()
                except CredentialError as exc:
                    raise map_error(exc, what="read the cloud session") from exc
                session = _parse_session(raw)
                self._require_own(session)
                if session is not None and raw != before:
                    self._adopt(session)
        self._storage.retry_unsaved()

    def _adopt(self, session: Session) -> None:
        """Use ``session``, a new login of this remote's user, from now on.

        The login a person makes to fix a revoked session. Only reloaded, it reached nobody:
        the client kept sending the old access token (a 401 and a refresh once it expired),
        and realtime, whose joins the revoked session had refused into a backoff of up to
        5 min, kept waiting. SIGNED_IN goes to the client's listener (its Authorization
        header) and to :meth:`_on_auth_event` (realtime's token, which also cuts realtime's
        wait short; a new server epoch). ``_save_session`` arms the library's refresh timer for
        the new session (the revoked one's refresh failed, and a failed refresh arms none) and
        undoes the storage's in-memory forgetting of a session revoked at open (the library
        drops the session when its refresh at open fails)."""
        auth = self._client.auth
        try:
            auth._save_session(session)  # (the storage skips the write: the value is unchanged)
        except CredentialError as exc:
            log.info("could not store the new cloud session again: %s", exc.message)
        auth._notify_all_subscribers("SIGNED_IN", session)

    def refresh_auth(self) -> None:
        """Refresh the session now (the engine calls this for ``refresh_auth``).

        Raises AuthRevokedError ("log in again") when the refresh token is revoked, reused or
        unknown; SessionChangedError when the stored session is gone or another user's (the
        remote is then done); TransientError on network faults.
        """
        with self._auth_lock:
            if self._lost is not None:
                raise self._lost
            try:
                # The newest token first (another process may have rotated it). A keychain
                # locked on resume (macOS on sleep, a wallet closed with the screen) raised
                # its CredentialError raw out of pull(): no SyncError, so the engine logged a
                # traceback every retry. It waits for a person, with the unlock hint.
                self._storage.reload()
            except CredentialError as exc:
                raise map_error(exc, what="read the cloud session to refresh it") from exc
            session = self._storage.durable_session()
            self._require_own(session)
            assert session is not None
            self._forget_response()
            try:
                # Guarded (see _guard_refreshes): never races the timer or another process.
                self._client.auth.refresh_session(session.refresh_token)
            except Exception as exc:
                raise self._map(exc, "refresh the cloud session") from exc

    def _secrets(self) -> list[str | None]:
        """What a failed request may have carried: the anon key and the session's tokens (the
        newest session this process knows, cached: no keychain read after the first)."""
        out: list[str | None] = [self._anon_key]
        with contextlib.suppress(CredentialError):
            session = _parse_session(self._storage.durable_value())
            if session is not None:
                out += [session.access_token, session.refresh_token]
        return out

    def _note_response(self, response: httpx.Response) -> None:
        last = self._last_response
        last.status = response.status_code
        last.retry_after = retry_after_of(response.headers)
        self._clock.note(response.headers.get("Date"))
        last.response = response

    def _forget_response(self) -> None:
        self._last_response.status = None
        self._last_response.retry_after = None
        self._last_response.response = None

    def _answer_body(self) -> bytes | None:
        """The body of this thread's last response if it was a success the client read (the
        answer its JSON decoder failed on), else None."""
        response = getattr(self._last_response, "response", None)
        if not isinstance(response, httpx.Response) or not response.is_success:
            return None
        try:
            return response.content
        except httpx.ResponseNotRead:
            return None

    def _map(self, exc: BaseException, what: str) -> SyncError:
        """map_error, refined by the HTTP status of this thread's last response; the session's
        tokens and the anon key are kept out of its text (a server may echo a request)."""
        last = self._last_response
        if getattr(last, "status", None) == 401 and isinstance(exc, APIError) and not exc.code:
            # A 401 without a code is the API gateway's, not PostgREST's (whose 401s, an expired
            # or bad JWT, all carry a PGRST code): the project refused its key. Hosted Supabase
            # says "Invalid API key", or "Legacy API keys are disabled" once a project turned
            # its legacy keys off. No retry or refresh fixes that; it was an unclassified error,
            # retried every cycle for good with no word about the key.
            refused = RemoteConfigError(
                f"{what}: the project refused its API key: {exc.message or 'HTTP 401'}",
                hint="check the project's anon key (cloud_anon_key): the project may have "
                "rotated it, or disabled its legacy API keys; then log in again with the key "
                "the project's API settings show",
            )
            return map_error(refused, what=what, secrets=self._secrets())
        return _with_status(
            map_error(exc, what=what, secrets=self._secrets()),
            getattr(last, "status", None),
            getattr(last, "retry_after", None),
        )

    # -- RPC -------------------------------------------------------------------------------------

    def _rpc(self, name: str, params: dict[str, Any]) -> Any:
        if self._closed:
            raise SyncError("the remote was used after close()", hint="open a new remote")
        if self._lost is not None:
            raise self._lost
        try:
            data = self._execute(name, params)
        except AuthExpiredError:
            # One refresh and one retry: every RPC is idempotent (push by op id), so a call that
            # failed on an expired token is safe to repeat. A second failure goes to the engine.
            self.refresh_auth()
            data = self._execute(name, params)
        hints = self._hints
        if hints is not None:
            hints.retry_now()  # the network is back: a realtime in a long backoff tries now
        return data

    def _execute(self, name: str, params: dict[str, Any]) -> Any:
        self._forget_response()
        with self._lock:
            # The header this request would go out with (auth events swap it and the postgrest
            # client together, under no lock of ours, so it is read before building).
            if self._client.options.headers.get("Authorization") == f"Bearer {self._anon_key}":
                raise _not_sent_as_anon(name)
        try:
            with self._lock:
                request = self._client.rpc(name, params)
            try:
                return request.execute().data
            except (ValueError, RecursionError):
                # The client's json.loads refused a success's body: an integer of more digits
                # than int() converts, or nesting past the interpreter's recursion limit, in
                # one row's meta (the server takes both). Read again here with those values
                # marked, so that row alone is refused (ServerRow.unreadable), not every pull.
                body = self._answer_body()
                if body is None:
                    raise
                return decode_answer(body)
            finally:
                self._last_response.response = None  # (a page holds up to 16 MiB)
        except Exception as exc:
            err = self._map(exc, name)
            if isinstance(err, OfflineError | TransientError):
                # The server could not be reached or failed: what answers next may be another
                # (restored from a backup, rolled back, upgraded with other limits, another
                # project behind the same name).
                self._server_may_have_changed()
            if err.code == "42501" and not self._holds_session():
                # The session was logged out meanwhile: the refusal is about the session, not
                # the grants. _rpc refreshes once, which says so (SessionChangedError).
                err = AuthExpiredError(err.message, code="42501")
            raise err from exc

    def _keep_session_through_lock(self, keeper: _TimerKeeper) -> None:
        """Undo what the client did when its refresh at open found the keychain locked.

        ``remote_from_settings`` read the session; a keychain locked before the client's
        refresh read it again (a screen lock at that moment) failed that refresh, and the client
        then dropped the session (our storage hides it in memory only) and cancelled the refresh
        timer that ``keeper`` had just armed to try again. Kept, the remote is as after any
        refresh the keychain refused: the timer tries every KEYCHAIN_RETRY_S, and calls refresh
        first (:meth:`_execute` never sends one as anon), which says "locked" until the unlock.
        """
        self._storage.keep()
        keeper.rearm()

    def _holds_session(self) -> bool:
        """Whether a session is stored; True when the keychain cannot say (locked, say): the
        42501 is then left as the grants' refusal it reads as, not replaced by a raw
        CredentialError from inside the error handling."""
        try:
            return self._storage.get_item(STORAGE_KEY) is not None
        except CredentialError:
            return True

    def push(self, changes: Sequence[Change], *, device: str) -> list[PushResult]:
        """Apply changes with compare-and-swap in one transaction; see sync.remote.Remote.push."""
        if len(changes) > MAX_BATCH:
            raise ProtocolError(
                f"too many changes: {len(changes)} > {MAX_BATCH}", hint="push in smaller batches"
            )
        if not changes:
            return []
        # A change the server cannot be sent (a NUL, which jsonb cannot hold; what JSON or
        # UTF-8 cannot carry) is answered here as its own rejection, as MemoryRemote's server
        # answers it: sent, it failed the whole call (22P05, or no request at all), so every
        # change of its batch, on every retry, and one such blueprint stopped the home's uploads.
        refused = {i: r for i, c in enumerate(changes) if (r := unsendable(c)) is not None}
        sent = [c for i, c in enumerate(changes) if i not in refused]
        answers = iter(self._push_sent(sent, device) if sent else [])
        return [
            PushResult(c.op_id, c.id, "rejected", code=refused[i][0], message=refused[i][1])
            if i in refused
            else next(answers)
            for i, c in enumerate(changes)
        ]

    def _push_sent(self, changes: Sequence[Change], device: str) -> list[PushResult]:
        """One push_changes RPC for ``changes``; its results, checked to be in request order."""
        self._check_schema()
        self._devices.add(device)
        data = self._rpc(
            "push_changes", {"changes": [c.to_json() for c in changes], "device": device}
        )
        if not isinstance(data, list) or len(data) != len(changes):
            raise ProtocolError("push_changes: expected one result per change")
        results = [PushResult.from_json(self._without_secrets(r)) for r in data]
        if [r.op_id for r in results] != [c.op_id for c in changes]:
            raise ProtocolError("push_changes: results are not in request order")
        return results

    def _without_secrets(self, result: Any) -> Any:
        """A push result whose rejection text quotes no secret of the request (a server that
        echoes it put the access token in the quarantine record, `localstore status` and the
        log). Before parsing: the parser cuts long texts, and a token cut in two is not found."""
        if not isinstance(result, dict) or result.get("status") != "rejected":
            return result
        redact = _redactor(self._secrets())
        return {k: redact(v) if isinstance(v, str) else v for k, v in result.items()}

    def _server_may_have_changed(self) -> None:
        self._epoch = next(self._epochs)

    @property
    def server_epoch(self) -> int:
        """A number that changes whenever the server answering may have changed since.

        After a call that failed (offline, timeout, 5xx: the server may come back upgraded, or
        restored from a backup with other limits) and after each new session (the refresh
        timer's, about hourly; refresh_auth). The engine asks ``server_info`` again when it
        moved, so a daemon that runs for months uses the limits of the server it talks to now.
        """
        return self._epoch

    def _check_schema(self) -> None:
        """Before the session's first push: refuse a cloud schema older than this client needs.

        One ``localstore_schema_version`` RPC until it passes, then again after a failed call
        (offline, timeout, 5xx: the server that answers next may have been restored to an older
        schema) and after each new session (a refresh, about hourly): never on every push. Raises
        SchemaTooOldError (a RemoteConfigError: the engine quarantines nothing, the edits stay
        pending and the next cycle asks again), or what the RPC raises. Pulls are not checked:
        the migrations the client needs so far change what a push does, not what a pull returns.
        """
        epoch = self._epoch
        if self._schema_ok_epoch == epoch:
            return
        try:
            data = self._rpc(SCHEMA_VERSION_RPC, {})
        except RemoteConfigError as exc:
            # PGRST202: PostgREST has no such function; 42883 (Postgres's own "undefined
            # function") is taken the same way, as for match_revisions.
            if exc.code not in ("PGRST202", "42883"):
                raise
            data = None
        if data is not None and (isinstance(data, bool) or not isinstance(data, int)):
            raise ProtocolError(f"{SCHEMA_VERSION_RPC}: expected an integer, got {data!r}")
        err = _schema_too_old(data)
        if err is not None:
            raise err
        self._schema_ok_epoch = epoch  # as of when it asked: a later sign asks again

    def pull(self, since: int, *, limit: int = DEFAULT_PULL_LIMIT) -> PullPage:
        """Return rows after ``since`` in seq order; see sync.remote.Remote.pull."""
        return PullPage.from_json(self._rpc("pull_changes", {"since": since, "lim": limit}))

    def verify(self, after: str | None = None, *, limit: int = DEFAULT_VERIFY_LIMIT) -> VerifyPage:
        """Return row fingerprints by id after ``after``; see sync.remote.Remote.verify."""
        if after is not None and canonical_uuid(after) is None:
            raise ProtocolError(f"verify: {after!r} is not a uuid")
        return VerifyPage.from_json(self._rpc("verify_rows", {"after": after, "lim": limit}))

    def fetch(self, ids: Sequence[str]) -> list[ServerRow]:
        """Return the user's rows for ``ids``; see sync.remote.Remote.fetch.

        ``fetch_page`` asked again for each answer's rest: one call unless the rows are over
        the server's byte budget."""
        return fetch_in_pages(self.fetch_page, ids)

    def fetch_page(self, ids: Sequence[str]) -> FetchPage:
        """The user's rows for ``ids`` up to the server's byte budget, and the ids left; see
        sync.remote.PagedFetchRemote.fetch_page.

        One ``fetch_rows_page`` RPC. A project without it (migration 20261122001300 not
        deployed: PGRST202) is asked ``fetch_rows`` instead, whose whole answer comes with an
        empty rest (the engine halves one it refuses as too large), until the server may have
        changed (``server_epoch``).
        """
        wanted = checked_fetch_ids(ids)
        if not wanted:
            return FetchPage([], [])
        epoch = self._epoch
        if self._no_fetch_page_epoch != epoch:
            try:
                data = self._rpc("fetch_rows_page", {"ids": wanted})
            except RemoteConfigError as exc:
                if exc.code not in ("PGRST202", "42883"):
                    raise
                self._no_fetch_page_epoch = epoch
            else:
                return FetchPage.from_json(data, wanted)
        data = self._rpc("fetch_rows", {"ids": wanted})
        if not isinstance(data, list):
            raise ProtocolError("fetch_rows: expected an array")
        return FetchPage([ServerRow.from_json(r) for r in data], [])

    def match_revisions(self, probes: Sequence[RevisionProbe]) -> list[RevisionMatch] | None:
        """Find accepted revisions by content hash; see sync.remote.AncestryRemote.

        One ``match_revisions`` RPC for all ``probes``. None when the project's schema predates
        the function (migration 20261122000600 not deployed): PostgREST answers PGRST202.
        """
        wanted = [{**probe.to_json(), "id": rid} for rid, probe in checked_probes(probes)]
        if not wanted:
            return []
        try:
            data = self._rpc("match_revisions", {"probes": wanted})
        except RemoteConfigError as exc:
            if exc.code in ("PGRST202", "42883"):
                return None
            raise
        if not isinstance(data, list):
            raise ProtocolError("match_revisions: expected an array")
        return [RevisionMatch.from_json(m) for m in data]

    def server_info(self) -> ServerInfo:
        """Return the protocol version and limits."""
        return ServerInfo.from_json(self._rpc("server_info", {}))

    def purge_tombstones(self, older_than: str = "0 seconds") -> int:
        """Purge this user's tombstones older than ``older_than`` (an interval); return the count."""
        data = self._rpc("purge_tombstones", {"older_than": older_than})
        if isinstance(data, bool) or not isinstance(data, int):
            raise ProtocolError("purge_tombstones: expected a count")
        return data

    # -- realtime hints ----------------------------------------------------------------------------

    def subscribe(self, callback: HintCallback) -> Unsubscribe:
        """Call ``callback()`` when another device may have written, and after every (re)subscribe.

        Realtime runs on a background asyncio loop; a health check rebuilds a dead channel. Events
        are only hints (they can be lost), so the engine keeps polling. Returns once the first
        subscription is live or failed (the health check keeps retrying a failed one).
        """
        with self._lock:
            if self._closed:
                raise SyncError("the remote was used after close()", hint="open a new remote")
            if self._lost is not None:
                raise self._lost
            handle = self._next_cb
            self._next_cb += 1
            self._callbacks[handle] = callback
            hints = self._hints
            if hints is None:
                hints = self._hints = RealtimeHints(
                    self.url,
                    self._anon_key,
                    user_id=self._user_id,
                    access_token=self._access_token(),
                    on_hint=self._dispatch_hint,
                    token_provider=self._realtime_token,
                    own_devices=self._devices,
                    health_interval_s=self._health_s,
                    timeout_s=min(self._timeout_s, 10.0),
                )
        hints.start()
        hints.wait_subscribed(timeout_s=min(self._timeout_s, 10.0))

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks.pop(handle, None)

        return unsubscribe

    def _dispatch_hint(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks.values())
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a subscriber bug must not kill the hint thread
                log.exception("a sync hint callback failed")

    @property
    def realtime_state(self) -> dict[str, Any]:
        """Realtime health for status displays and tests (``{}`` before subscribe)."""
        hints = self._hints
        return {} if hints is None else hints.state()

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop realtime, the refresh timer and the HTTP client. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            hints, self._hints = self._hints, None
            self._callbacks.clear()
        if hints is not None:
            hints.close()
        _stop_refresh_timer(self._client)
        self._auth_sub.unsubscribe()
        # The last chance for a rotated session the keychain refused: after this process ends,
        # only the token it was rotated from is left, which the server trades for the new one
        # at the next start (the parent of the active token; see _guard_refreshes).
        self._storage.retry_unsaved()
        if self._storage.has_unsaved:
            log.warning(
                "the refreshed cloud session could not be stored in the keychain before "
                "closing; the next start refreshes from the one stored before it (if the "
                "server refuses that one, log in again with `localstore login`)"
            )
        self._http.close()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> SupabaseRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _not_sent_as_anon(name: str) -> AuthExpiredError:
    """Why a call was not sent: the client holds no session (it dropped it when a refresh
    failed), so it would go out with the anon key. Refused by this project's grants (42501),
    such a call would be answered by a project that lets anon read, with no rows (RLS): a pull or
    verify then took "nothing on the server" for the truth. _rpc refreshes first instead."""
    return AuthExpiredError(f"{name}: not sent, the cloud session has to be refreshed first")


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


# -- login / logout / restore -------------------------------------------------------------------


def _credentials(settings: Settings, *, prompt: bool = True) -> tuple[CredentialStore, Index]:
    settings.paths.ensure()
    index = Index(settings.paths.index_db, busy_timeout_ms=settings.busy_timeout_ms)
    return CredentialStore(index, settings, prompt=prompt), index


def _ensure_keychain(creds: CredentialStore) -> None:
    try:
        creds.ensure_backend()
    except CredentialError as exc:
        raise map_error(exc, what="keep the cloud session") from exc


def check_keychain(settings: Settings) -> None:
    """Raise AuthError naming the fix when no keychain can keep a cloud session (for ``login``
    to call before it asks for a password). Stores and reads no secret."""
    creds, index = _credentials(settings)
    try:
        _ensure_keychain(creds)
    finally:
        index.close()


def login(
    settings: Settings,
    url: str,
    anon_key: str,
    email: str,
    password: str,
    *,
    signup: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    switch_user: bool = False,
) -> LoginResult:
    """Sign in (or sign up) and store the session and project in the keychain.

    With ``signup`` the account is created where the project allows sign-ups; an existing account
    falls back to a password sign-in. A home whose blueprints synced with another user of this
    project is refused (AccountMismatchError; nothing is stored and the new session is revoked)
    unless ``switch_user``: then its blueprints are uploaded to the new account at the next sync
    (docs/sync-engine.md, "Identity"). Raises AuthError (wrong password, weak password, e-mail not
    confirmed), RemoteConfigError, TransientError, AuthError for keychain failures, and
    ConfigError for a ``url`` that is no http(s) URL with a host (see check_cloud_url).
    """
    # The url of `localstore login --url` passes no load_settings check; before the keychain
    # is opened, which makes the home's folders.
    check_cloud_url(url, "login", name="url")
    creds, index = _credentials(settings)
    try:
        # Before the sign-in: with no keychain to keep the session in, signing in left a
        # session on the server nobody revokes and the home's account claimed (below), and a
        # server that did not answer hid the keychain's error behind its own.
        _ensure_keychain(creds)
        url = url.rstrip("/")
        session, signed_up = _sign_in(url, anon_key, email, password, signup, timeout_s)
        project = CloudProject(url, anon_key, session.user.id, email)
        identity = f"supabase:{url}:{session.user.id}"
        try:
            note = _claim_home(
                index, identity, email, switch_user, account_record.read(settings.paths.state)
            )
        except AccountMismatchError:
            _revoke(project, session, timeout_s)  # a session nobody will use
            raise
        storage = KeychainSessionStorage(
            creds, session_credential_name(settings), lock_path=refresh_lock_path(settings)
        )
        try:
            # Under the refresh lock: a refresh in flight elsewhere must not write its (old
            # user's) rotated session over this one afterwards.
            with storage.refresh_guard():
                storage.set_item(STORAGE_KEY, session.model_dump_json())
            creds.set(project_credential_name(settings), project.to_json())
        except CredentialError as exc:
            raise map_error(exc, what="store the cloud session") from exc
        _touch_marker(settings)
        return LoginResult(project.url, session.user.id, email, signed_up, note)
    finally:
        index.close()


def _claim_home(
    index: Index,
    identity: str,
    email: str,
    switch_user: bool,
    recorded: account_record.AccountRecord | None = None,
) -> str:
    """Check that ``identity`` may sync this home; returns a note for the person, or "".

    Raises AccountMismatchError when the home synced with another user of the same project and
    ``switch_user`` is not given; with it, that user is accepted (the engine then uploads).
    ``recorded``: the account record kept besides the index, for an index `check --fix` rebuilt.
    """
    index.register_schema("sync", st.SYNC_MIGRATIONS)
    with index.write() as cur:
        if recorded is not None:
            st.restore_identity(cur, recorded.identity, recorded.email)
        known = st.get_state(cur, "identity")
        foreign = st.foreign_identity(cur, identity)
        note = ""
        if foreign is not None and not switch_user:
            raise AccountMismatchError(
                f"this home's blueprints synced with {st.describe_account(cur, foreign)}; "
                f"logging in here as {email} is refused, so that they are not uploaded to "
                "another account",
            )
        if foreign is not None:
            st.accept_identity(cur, identity)
            note = (
                f"this home synced with {st.describe_account(cur, foreign)}; its blueprints will "
                f"be uploaded to {email}'s account at the next sync (blueprints whose ids the "
                "other account owns get new ids here; their files keep their content)"
            )
        elif known is not None and known != identity:
            # Another project: the home's blueprints go there (see docs/sync-engine.md).
            st.accept_identity(cur, None)
            note = (
                f"this home synced with {st.identity_project(known).removeprefix('supabase:')}; "
                f"its blueprints will be uploaded to {identity_url(identity)} at the next sync"
            )
        else:
            st.accept_identity(cur, None)  # the home's own account again: no switch pending
        st.remember_email(cur, identity, email)
        return note


def identity_url(identity: str) -> str:
    """The project URL of a ``supabase:<url>:<user>`` identity."""
    return st.identity_project(identity).removeprefix("supabase:")


def _touch_marker(settings: Settings) -> None:
    try:
        session_marker.touch(settings)
    except OSError as exc:  # the refresh-time check still catches a changed session
        log.warning("could not tell running sync that the session changed: %s", exc)


def _sign_in(
    url: str,
    anon_key: str,
    email: str,
    password: str,
    signup: bool,
    timeout_s: float,
) -> tuple[Session, bool]:
    http = _http_client(timeout_s)
    try:
        # In memory: the session reaches the keychain only once the home may use it (_claim_home).
        client = create_client(
            url.rstrip("/"), anon_key, _client_options(_MemoryStorage(), http, auto_refresh=False)
        )
        creds = {"email": email, "password": password}
        if signup:
            try:
                response = client.auth.sign_up(creds)  # type: ignore[arg-type]
                if response.session is None:
                    raise AuthError(
                        "the account was created but needs e-mail confirmation",
                        hint="confirm the e-mail address, then log in without --signup",
                    )
                return response.session, True
            except auth_errors.AuthApiError as exc:
                if exc.code not in ("user_already_exists", "signup_disabled"):
                    raise
        response = client.auth.sign_in_with_password(creds)  # type: ignore[arg-type]
        if response.session is None:
            raise AuthError("the server returned no session", hint="try logging in again")
        return response.session, False
    except SyncError:
        raise
    except Exception as exc:
        err = map_login_error(exc, url, secrets=(password, anon_key))
        if not signup and err.code == "invalid_credentials":
            # The README's login has no --signup, and every `localstore cloud start` is a new,
            # empty project: "wrong email or password" alone sent a new user to retype them.
            err.hint = "check them and retry; to create the account, add --signup"
        raise err from exc
    finally:
        http.close()


def has_login(settings: Settings) -> bool:
    """Whether this home holds a cloud session or project in the keychain (a login to undo)."""
    creds, index = _credentials(settings)
    try:
        names = (session_credential_name(settings), project_credential_name(settings))
        return any(creds.find(name) is not None for name in names)
    finally:
        index.close()


def logout(
    settings: Settings, *, revoke: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S
) -> bool:
    """Revoke this home's session on the server and delete it from the keychain.

    The local session is deleted even when the server cannot be reached (logging out is about
    this machine); returns whether the server confirmed the revocation (always False with
    ``revoke=False``, which only forgets it locally). Nothing else is touched.
    """
    creds, index = _credentials(settings)
    try:
        storage = KeychainSessionStorage(
            creds, session_credential_name(settings), lock_path=refresh_lock_path(settings)
        )
        revoked = False
        project = _stored_project(creds, settings)
        # Under the refresh lock: a refresh in flight elsewhere must not write the session back,
        # and the revocation (which may refresh first, see _revoke) must not race a daemon's
        # refresh of the same token: it starts from the newest session.
        with storage.refresh_guard():
            session = _parse_session(storage.reload())
            if revoke and session is not None and project is not None:
                revoked = _revoke(project, session, timeout_s)
            storage.forget()
        try:
            creds.delete(project_credential_name(settings))
        except CredentialNotFoundError:
            pass
        # Running sync (daemon, app) stops using the session at its next check (one stat).
        _touch_marker(settings)
        return revoked
    finally:
        index.close()


def _revoke(project: CloudProject, session: Session, timeout_s: float) -> bool:
    http = _http_client(timeout_s)
    # What the requests carry: a server or proxy that echoes a request in its error put the
    # access token in logout's warning (map_error replaces them by ***).
    secrets: list[str | None] = [project.anon_key, session.access_token, session.refresh_token]
    try:
        client = create_client(
            project.url,
            project.anon_key,
            _client_options(_MemoryStorage(), http, auto_refresh=False),
        )

        def live_token() -> str | None:
            """A live access token from the refresh token; None if the session already ended."""
            try:
                fresh = client.auth.refresh_session(session.refresh_token).session
            except auth_errors.AuthApiError as exc:
                if exc.code in _REVOKED_AUTH_CODES:
                    return None  # already ended on the server: nothing left to revoke
                raise
            if fresh is None:
                raise AuthError("the server returned no session")
            secrets.extend([fresh.access_token, fresh.refresh_token])
            return fresh.access_token

        access_token: str | None = session.access_token
        refreshed = (session.expires_at or 0) <= time.time() + EXPIRY_MARGIN
        if refreshed:
            # /logout wants a live access token, and the stored one has usually expired (no
            # sync ran for an hour): it answered 403 bad_jwt and the session, refresh token
            # included, stayed valid on the server. The refresh token gets a live one.
            access_token = live_token()
        if access_token is None:
            return True
        try:
            # scope=local revokes this session only; other devices stay signed in.
            client.auth.admin.sign_out(access_token, "local")
        except auth_errors.AuthApiError as exc:
            # The server judges expiry by its own clock: on a machine whose clock runs behind
            # (NTP off, a dual boot's RTC kept in local time) a token it holds expired looked
            # live here, /logout refused it, and the session stayed valid on the server.
            if refreshed or not (exc.code == "bad_jwt" or exc.status == 401):
                raise
            access_token = live_token()
            if access_token is None:
                return True
            client.auth.admin.sign_out(access_token, "local")
        return True
    except Exception as exc:  # noqa: BLE001 - logout proceeds locally whatever the server says
        # quiet: nothing retries a logout (no "will retry" line, no "sync retries" hint).
        err = map_error(exc, what="revoke the session", quiet=True, secrets=secrets)
        log.warning(
            "logout: the server did not confirm (%s); forgetting the session locally", err.message
        )
        return False
    finally:
        http.close()


class _MemoryStorage(SyncSupportedStorage):
    def __init__(self) -> None:
        self._items: dict[str, str] = {}

    def get_item(self, key: str) -> str | None:
        return self._items.get(key)

    def set_item(self, key: str, value: str) -> None:
        self._items[key] = value

    def remove_item(self, key: str) -> None:
        self._items.pop(key, None)


def _stored_project(creds: CredentialStore, settings: Settings) -> CloudProject | None:
    raw = creds.find(project_credential_name(settings))
    return None if raw is None else CloudProject.from_json(raw)


def remote_from_settings(
    settings: Settings,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    realtime_health_s: float = 2.0,
    keychain_prompt: bool = False,
) -> SupabaseRemote:
    """Open this home's SupabaseRemote from the keychain session written by :func:`login`.

    URL and anon key come from ``settings.cloud_url``/``cloud_anon_key`` when set, else from the
    project stored at login. The remote reads the keychain from background threads (its refresh
    timer, realtime's rejoins, the engine's retries), so a locked keychain is an AuthError
    ("locked") unless ``keychain_prompt``, which lets keyring ask the user to unlock it (a
    prompt at each read that finds it locked: for a process in the foreground). Raises
    NotLoggedInError (no session, or a session for another project), RemoteConfigError, and
    AuthError for keychain failures.
    """
    creds, index = _credentials(settings, prompt=keychain_prompt)
    try:
        try:
            project = _stored_project(creds, settings)
        except CredentialError as exc:
            raise map_error(exc, what="read the cloud project") from exc
        url = (settings.cloud_url or (project.url if project else "")).rstrip("/")
        key = settings.cloud_anon_key or (project.anon_key if project else "")
        if not url or not key:
            raise NotLoggedInError("this home is not logged in to a cloud project")
        if project is not None and project.url != url:
            raise NotLoggedInError(
                f"the stored session is for {project.url}, but cloud_url is {url}",
                hint=f"log in to {url} with `localstore login`",
            )
        storage = KeychainSessionStorage(
            creds, session_credential_name(settings), lock_path=refresh_lock_path(settings)
        )
        # Looked at before the keychain: a login or logout after this read changes the marker.
        marker = session_marker.SessionMarker.for_settings(settings)
        try:
            stored = _parse_session(storage.durable_value())
        except CredentialError as exc:
            raise map_error(exc, what="read the cloud session") from exc
        # login writes the session, then the project: a project write that failed (a keychain
        # locked in between) left one project's session under another's URL, and opening it sent
        # its tokens to the wrong server. (A project stored before user ids were kept has none.)
        if (
            stored is not None
            and project is not None
            and project.user_id not in ("", stored.user.id)
        ):
            raise NotLoggedInError(
                f"the stored cloud session is not the one of the stored project "
                f"({project.url}, {project.email or project.user_id}): a login did not finish",
                hint="log in again with `localstore login`",
            )
        return SupabaseRemote(
            url,
            key,
            storage,
            timeout_s=timeout_s,
            realtime_health_s=realtime_health_s,
            on_close=index.close,
            marker=marker,
        )
    except BaseException:
        index.close()
        raise
