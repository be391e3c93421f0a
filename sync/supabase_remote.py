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

The parts are private modules: ``_supabase_errors`` (the error mapping), ``_supabase_http``
(the httpx client, decoding answers, Retry-After, the server's clock), ``_supabase_session``
(the keychain session and its guarded refreshes), ``_supabase_client`` (the signed-in client
``SupabaseRemote`` builds on: auth and one RPC) and ``_supabase_login`` (login, logout). This
module holds ``SupabaseRemote`` (the Remote calls, the cloud schema check, realtime, close) and
``remote_from_settings``, and re-exports the names callers import from here (the ``X as X``
imports and ``__all__``). Every part logs as ``sync.supabase_remote``, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supabase_auth.types import Session

from localstore.config import Settings
from localstore.errors import CredentialError, LocalStoreError
from localstore.index import Index
from sync import session_marker
from sync._realtime import RealtimeHints
from sync._supabase_client import _SignedInClient
from sync._supabase_errors import MAPPED_EXCEPTIONS, _redactor, map_error
from sync._supabase_errors import map_login_error as map_login_error
from sync._supabase_http import DEFAULT_TIMEOUT_S
from sync._supabase_http import MAX_RETRY_AFTER_S as MAX_RETRY_AFTER_S
from sync._supabase_http import ServerClock as ServerClock
from sync._supabase_http import decode_answer as decode_answer
from sync._supabase_http import retry_after_of as retry_after_of
from sync._supabase_http import retry_after_seconds as retry_after_seconds
from sync._supabase_login import (
    CloudProject,
    LoginResult,
    _credentials,
    _stored_project,
    has_login,
    login,
    logout,
)
from sync._supabase_login import check_keychain as check_keychain
from sync._supabase_session import KeychainSessionStorage, _parse_session, _stop_refresh_timer
from sync._supabase_session import refresh_lock_path as refresh_lock_path
from sync.errors import (
    NotLoggedInError,
    ProtocolError,
    RemoteConfigError,
    SchemaTooOldError,
    SyncError,
)
from sync.login_names import login_listed, session_credential_name
from sync.remote import (
    DEFAULT_PULL_LIMIT,
    DEFAULT_VERIFY_LIMIT,
    MAX_BATCH,
    Change,
    FetchPage,
    HintCallback,
    PullPage,
    PushResult,
    RevisionMatch,
    RevisionProbe,
    ServerInfo,
    ServerRow,
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


class SupabaseRemote(_SignedInClient):
    """One signed-in user's Remote over a Supabase project (see sync.remote.Remote).

    Build it with :func:`remote_from_settings` (or directly from a storage that holds a session).
    Methods are blocking and thread-safe. ``close()`` stops the refresh timer, realtime and the
    HTTP client.
    """

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
        subscription is live or failed (the health check keeps retrying a failed one). Raises
        SyncError after close() and in a child forked from the process that opened the remote.
        """
        self._check_process()
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
        """Stop realtime, the refresh timer and the HTTP client. Idempotent.

        In a child forked from the process that opened the remote it only marks the child's
        copy closed: realtime, the session and the connections are the parent's, and go on."""
        if self._process.forked:
            # An app's ``with remote:`` around a multiprocessing fork, or its atexit handler.
            # Closing as usual waited out realtime's shutdown (10 s) on a loop whose thread only
            # the parent has, stored the parent's unsaved rotated session from here (the keychain
            # retry, under the home's refresh lock), and closed the parent's credentials index
            # (on_close); and it hung for good on self._lock if a parent thread held it at the
            # fork. The child's HTTP connections are the parent's sockets: left open, not shut.
            self._closed = True
            return
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
            raise _unreadable_project(exc, index, settings) from exc
        url, key = _project_address(settings, project)
        storage = KeychainSessionStorage(
            creds, session_credential_name(settings), lock_path=refresh_lock_path(settings)
        )
        # Looked at before the keychain: a login or logout after this read changes the marker.
        marker = session_marker.SessionMarker.for_settings(settings)
        try:
            stored = _parse_session(storage.durable_value())
        except CredentialError as exc:
            raise map_error(exc, what="read the cloud session") from exc
        _check_session_of_project(stored, project)
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


def _unreadable_project(exc: CredentialError, index: Index, settings: Settings) -> Exception:
    """The error for a keychain that could not be read for the stored project.

    A home never logged in, on a machine whose keychain is missing or locked, is not logged in:
    `localstore sync` (and the daemon's offline reason) named the keychain's fix instead, while
    `status` said "not logged in". The index lists every stored credential name, so a home it
    lists none for has no login to read; a home it lists one for gets the keychain's error."""
    try:
        listed = login_listed(index, settings)
    except LocalStoreError:
        listed = True  # (cannot tell: the keychain's error, as before)
    if not listed:
        return NotLoggedInError("this home is not logged in to a cloud project")
    return map_error(exc, what="read the cloud project")


def _project_address(settings: Settings, project: CloudProject | None) -> tuple[str, str]:
    """The URL and anon key to open: the settings' when set, else the stored project's.

    Raises NotLoggedInError when there is none, or the stored project is another URL's."""
    url = (settings.cloud_url or (project.url if project else "")).rstrip("/")
    key = settings.cloud_anon_key or (project.anon_key if project else "")
    if not url or not key:
        raise NotLoggedInError("this home is not logged in to a cloud project")
    if project is not None and project.url != url:
        raise NotLoggedInError(
            f"the stored session is for {project.url}, but cloud_url is {url}",
            hint=f"log in to {url} with `localstore login`",
        )
    return url, key


def _check_session_of_project(stored: Session | None, project: CloudProject | None) -> None:
    """Raise NotLoggedInError when the stored session is not the stored project's user's."""
    # login writes the session, then the project: a project write that failed (a keychain
    # locked in between) left one project's session under another's URL, and opening it sent
    # its tokens to the wrong server. (A project stored before user ids were kept has none.)
    if stored is not None and project is not None and project.user_id not in ("", stored.user.id):
        raise NotLoggedInError(
            f"the stored cloud session is not the one of the stored project "
            f"({project.url}, {project.email or project.user_id}): a login did not finish",
            hint="log in again with `localstore login`",
        )
