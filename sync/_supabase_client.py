"""The signed-in client ``SupabaseRemote`` builds on: opening it from a stored session, its
auth (refresh, a new login adopted, a session lost to a logout or another user), the mapping of
a failed call's errors, and one RPC with its single retry after a refresh.

``sync.supabase_remote.SupabaseRemote`` adds the Remote protocol's calls, realtime hints and
closing; its docstring describes the arguments ``__init__`` here takes.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx
from postgrest.exceptions import APIError
from supabase import Client
from supabase_auth.constants import EXPIRY_MARGIN, STORAGE_KEY
from supabase_auth.types import AuthChangeEvent, Session

from localstore._process_owner import ProcessOwner
from localstore.errors import CredentialError
from sync import session_marker
from sync._realtime import RealtimeHints
from sync._supabase_errors import _with_status, map_error
from sync._supabase_http import (
    DEFAULT_TIMEOUT_S,
    ServerClock,
    _client_options,
    _http_client,
    decode_answer,
    retry_after_of,
)
from sync._supabase_session import (
    KeychainSessionStorage,
    _guard_refreshes,
    _parse_session,
    _stop_refresh_timer,
    _TimerKeeper,
)
from sync.errors import (
    AuthExpiredError,
    NotLoggedInError,
    OfflineError,
    RemoteConfigError,
    SessionChangedError,
    SyncError,
    TransientError,
)
from sync.remote import (
    HintCallback,
)

log = logging.getLogger("sync.supabase_remote")


class _SignedInClient:
    """The client, the session and one RPC under SupabaseRemote (see the module docstring)."""

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
        # The process that opened it: a child forked from it holds a copy whose threads,
        # connections and keychain session are the parent's (see SupabaseRemote.close).
        self._process = ProcessOwner()
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
            self._open_client()
        except Exception as exc:
            self._http.close()
            raise map_error(exc, what="open the cloud session") from exc

    def _open_client(self) -> None:
        """Build the client on the stored session with its refreshes guarded, and start its
        refresh timer (which refreshes an expiring session first)."""
        # Client(), not create_client(): create() calls auth.get_session(), which refreshes
        # an expiring stored session before _guard_refreshes is in place, i.e. without the
        # home's refresh lock. A daemon refreshing the same token at that moment got the
        # session revoked (reuse of a rotated token). initialize_from_storage() below does
        # that refresh under the guard, and its SIGNED_IN/TOKEN_REFRESHED event sets the
        # Authorization header that create() would have set.
        storage = self._storage
        self._client: Client = Client(
            self.url, self._anon_key, _client_options(storage, self._http, auto_refresh=True)
        )
        keeper = _guard_refreshes(self._client, storage, self._require_own, clock=self._clock)
        self._auth_sub = self._client.auth.on_auth_state_change(self._on_auth_event)
        # A client rebuilt from storage never starts its refresh timer without this.
        self._client.auth.initialize_from_storage()
        if keeper.failing:
            self._keep_session_through_lock(keeper)

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
        self._check_process()
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
        self._check_process()  # (before the lock: a parent thread's refresh may hold it)
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

    def _check_process(self) -> None:
        """Raise SyncError in a child forked from the process that opened the remote.

        Its HTTP connections are the parent's sockets: a call from the child went out on one
        the parent may be using at the same moment, and either process could read the other's
        answer. Its locks may be held by a parent thread at the fork (taken here: for ever)."""
        if self._process.forked:
            raise SyncError(
                f"this cloud remote was opened by process {self._process.pid}; a child forked "
                "from it cannot use it",
                hint="open a remote in the child with remote_from_settings() (or start the "
                "child with the spawn method)",
            )

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
        self._check_process()
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

    def _server_may_have_changed(self) -> None:
        self._epoch = next(self._epochs)


def _not_sent_as_anon(name: str) -> AuthExpiredError:
    """Why a call was not sent: the client holds no session (it dropped it when a refresh
    failed), so it would go out with the anon key. Refused by this project's grants (42501),
    such a call would be answered by a project that lets anon read, with no rows (RLS): a pull or
    verify then took "nothing on the server" for the truth. _rpc refreshes first instead."""
    return AuthExpiredError(f"{name}: not sent, the cloud session has to be refreshed first")
