"""The one exception tree of the ``sync`` package, a branch of localstore's.

``SyncError`` is a ``localstore.LocalStoreError``, so that one ``except LocalStoreError``
catches everything the library raises on purpose (``store.start_sync()`` raised
``NotLoggedInError`` past it before session 22). Catch ``SyncError`` for sync's alone.

Every error says what went wrong (``message``), how a person can fix it (``hint``) and what the
sync engine should do about it (``action``), so the engine never guesses from a class name or a
status code. Third-party exceptions (postgrest, gotrue, httpx, websockets) are translated at the
remote's boundary with ``raise ... from exc`` and never leak out.

::

    SyncError                   action        (a localstore.errors.LocalStoreError)
    ├── TransientError          retry         network fault, 5xx, timeout, serialization failure
    │   ├── OfflineError        retry         the server cannot be reached at all
    │   └── RateLimitedError    retry         429: slow down (retry_after seconds)
    ├── AuthError               tell_user
    │   ├── AuthExpiredError    refresh_auth  401 / PGRST301 / PGRST303: refresh, then retry
    │   ├── AuthRevokedError    tell_user     refresh token revoked, expired or reused: log in
    │   ├── NotLoggedInError    tell_user     no session stored for this profile
    │   │   └── SessionChangedError tell_user logged out, or another user logged in, since
    │   │                                     this remote was opened: it stops; open a new one
    │   └── AccountMismatchError tell_user    this home synced with another user of the project
    ├── RejectedChangeError     quarantine    the server refused one change permanently
    ├── ProtocolError           tell_user     a reply or request breaks the sync contract
    ├── RemoteConfigError       tell_user     wrong URL or key, schema not deployed, old protocol
    │   └── SchemaTooOldError   tell_user     the cloud lacks a migration this client needs:
    │                                         pushes wait (nothing quarantined) until applied
    ├── ConflictError           tell_user     an operation needs an open conflict resolved first
    │   └── ConflictNotFoundError tell_user   no conflict with that number (also localstore's
    │                                         NotFoundError: the CLI exits 4)
    ├── MergeError              tell_user     the merge machinery was misused (e.g. a bad policy)
    ├── EngineStateError        tell_user     the engine was used out of order (started twice...)
    └── SyncLockedError         tell_user     another process already syncs this home (also
                                              localstore's LockHeldError: one ``except`` for
                                              "someone else holds this home")

Actions: ``retry`` = back off with jitter and try again, nothing is lost; ``refresh_auth`` =
refresh the session once and retry, never quarantine; ``quarantine`` = park that one change with
the server's error and go on with the rest of the queue; ``tell_user`` = stop syncing and show the
message and hint.

Conflicts found while pushing are *results* (``PushResult.status == "conflict"``), not
exceptions: they are how optimistic concurrency reports a lost race, and the engine merges them.
"""

from __future__ import annotations

from typing import Literal

from localstore.errors import LocalStoreError, LockHeldError, NotFoundError

Action = Literal["retry", "refresh_auth", "quarantine", "tell_user"]

ACTIONS: tuple[Action, ...] = ("retry", "refresh_auth", "quarantine", "tell_user")


class SyncError(LocalStoreError):
    """Base of every error raised by sync (a LocalStoreError: one ``except`` for the library)."""

    action: Action = "tell_user"
    hint: str = ""

    def __init__(self, message: str, *, hint: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class TransientError(SyncError):
    """A temporary failure (network, 5xx, timeout); retrying later will succeed."""

    action: Action = "retry"
    hint = "sync retries by itself; check the network if this persists"


class OfflineError(TransientError):
    """The server cannot be reached (DNS, refused connection, no route)."""

    hint = "sync resumes when the server is reachable again"


class RateLimitedError(TransientError):
    """The server asked the client to slow down."""

    hint = "sync retries by itself after the server's delay"

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.retry_after = retry_after


class AuthError(SyncError):
    """Authentication failed."""

    hint = "run `localstore login` again"


class AuthExpiredError(AuthError):
    """The access token expired or was rejected; refreshing the session fixes it."""

    action: Action = "refresh_auth"
    hint = "sync refreshes the session by itself"


class AuthRevokedError(AuthError):
    """The stored refresh token is revoked, expired or already used."""

    hint = "log in again with `localstore login`"


class NotLoggedInError(AuthError):
    """No cloud session is stored for this profile."""

    hint = "log in with `localstore login --url URL --anon-key KEY --email E`"


class SessionChangedError(NotLoggedInError):
    """The home's stored session changed (logout, or another user's login) under an open remote."""

    # The remote never goes on with another user's session, nor with one that was logged out: it
    # refuses every call from then on. The daemon opens a new remote from the new session itself.

    hint = "sync stopped using the old session; it starts again from the new login"


class AccountMismatchError(AuthError):
    """This home's synced blueprints belong to another user of the same project."""

    # A home's synced data belongs to the account it synced with: signing in as someone else on it
    # must not upload that data to the new account (docs/sync-engine.md, "Identity").

    hint = (
        "use another home for this account (`localstore --home DIR login ...`), log in again as "
        "the account this home synced with, or run `localstore login --switch-user ...` to "
        "upload this home's blueprints to the new account"
    )


class RejectedChangeError(SyncError):
    """The server refused one change permanently (invalid id/path, too large, not owner)."""

    action: Action = "quarantine"
    hint = (
        "fix the blueprint locally (see `localstore status`); it is kept and retried after a change"
    )

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        code: str | None = None,
        op_id: int | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.op_id = op_id
        self.id = id


class ProtocolError(SyncError):
    """A request or reply breaks the sync contract (malformed, out of order, too many changes)."""

    hint = "update localstore and the cloud schema to matching versions"


class RemoteConfigError(SyncError):
    """The cloud is misconfigured: wrong URL or key, schema not deployed, or an old protocol."""

    hint = "check the project URL and anon key, and deploy sync/supabase/migrations"


class SchemaTooOldError(RemoteConfigError):
    """The cloud schema lacks a migration this client needs; pushes wait until it is applied."""

    # Pushing anyway is not safe: against a schema without op fingerprints (migration
    # 20261122000800) a restored or copied home's edits were answered as replays and silently
    # never applied. Nothing is quarantined: the edits stay pending and go up once the operator
    # has applied the migrations (the engine retries a tell_user error about once a minute).

    # (SupabaseRemote's errors name the first missing file and this client's own folder.)
    hint = (
        "apply the migrations of the sync package's supabase/migrations folder, in order "
        "(`supabase --workdir <that sync folder> db push`, or psql); local edits wait and sync "
        "resumes by itself"
    )

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        code: str | None = None,
        missing: str | None = None,
        server_version: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.missing = missing
        self.server_version = server_version


class ConflictError(SyncError):
    """The operation needs an open conflict resolved first (or the conflict moved on)."""

    hint = "see `localstore conflicts` and resolve it with `localstore conflicts resolve`"


class ConflictNotFoundError(ConflictError, NotFoundError):
    """There is no conflict with that number (also a NotFoundError: the CLI exits 4)."""

    # Also localstore's NotFoundError, so the CLI exits 4 as for any other missing thing
    # (blueprint, revision, bundle, credential).

    hint = "see `localstore conflicts`"


class MergeError(SyncError):
    """The merge machinery was misused: an unknown policy or a policy returning a bad resolution."""

    hint = "fix the conflict policy passed to the sync engine"


class EngineStateError(SyncError):
    """The sync engine was used out of order (started twice, restarted, used after stop)."""

    hint = "create a new SyncEngine; start() it once and stop() it once"


class SyncLockedError(SyncError, LockHeldError):
    """Another process (usually the daemon) already syncs this home (also a LockHeldError)."""

    # Also localstore's LockHeldError (and so a LocalStoreError): store.start_sync() promises
    # LockHeldError, and an app catching the localstore tree must not miss this one.

    hint = "see `localstore status`; the running daemon syncs this home"
