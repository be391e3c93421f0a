"""Signing a home in and out of a cloud project: ``login`` (the session and project stored in
the keychain, the home's account checked), ``logout`` (the session revoked, then forgotten),
``has_login`` and ``check_keychain``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from supabase import create_client
from supabase_auth import SyncSupportedStorage
from supabase_auth import errors as auth_errors
from supabase_auth.constants import EXPIRY_MARGIN, STORAGE_KEY
from supabase_auth.types import Session

from localstore.config import Settings, check_cloud_url
from localstore.credentials import CredentialStore
from localstore.errors import CredentialError, CredentialNotFoundError
from localstore.index import Index
from sync import _state as st
from sync import account_record, session_marker
from sync._supabase_errors import _REVOKED_AUTH_CODES, map_error, map_login_error
from sync._supabase_http import DEFAULT_TIMEOUT_S, _client_options, _http_client
from sync._supabase_session import KeychainSessionStorage, _parse_session, refresh_lock_path
from sync.errors import (
    AccountMismatchError,
    AuthError,
    NotLoggedInError,
    SyncError,
)
from sync.login_names import project_credential_name, session_credential_name

log = logging.getLogger("sync.supabase_remote")

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
