"""Translating what the supabase client raises into the ``sync.errors`` tree (``map_error``).

Postgrest's ``APIError`` by code, httpx transport and status errors, ``supabase_auth`` errors,
keychain failures and malformed answers each become a classified SyncError (the table is in
``sync.supabase_remote``'s docstring), with the request's secrets replaced by ``***`` and the
server's text escaped and cut. Login's one-shot variant is ``map_login_error``.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Iterable

import httpx
import pydantic
from postgrest.exceptions import APIError
from supabase import SupabaseException
from supabase_auth import errors as auth_errors

from localstore.errors import CredentialError
from sync._shown import MAX_CODE, MAX_SHOWN, shown
from sync.errors import (
    AuthError,
    AuthExpiredError,
    AuthRevokedError,
    NotLoggedInError,
    OfflineError,
    ProtocolError,
    RateLimitedError,
    RemoteConfigError,
    SyncError,
    TransientError,
)
from sync.remote import (
    SPLIT_CODES,
)

log = logging.getLogger("sync.supabase_remote")

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
