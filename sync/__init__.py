"""Replication of a LocalStore home to a cloud tier (Supabase), and its public API.

Typical use::

    import localstore
    from sync import SyncEngine, MemoryRemote

    store = localstore.open("/tmp/home")
    engine = SyncEngine(store, remote)
    report = engine.sync_once()        # or engine.start() ... engine.stop(); engine.join()

Everything not listed in ``__all__`` is private to the package.
"""

from __future__ import annotations

from sync._state import ConflictRecord, QuarantineEntry
from sync.control import ControlClient, ControlError, ControlRequestError, DaemonNotRunningError
from sync.embed import EmbeddedSync, daemon_running, start_sync
from sync.engine import (
    FlaggedFile,
    SyncEngine,
    SyncReport,
    SyncStatus,
    VerifyReport,
    WorkerState,
    conflict_diff,
    get_conflict,
    list_conflicts,
    list_flagged,
    list_quarantine,
    local_status,
    resolve_conflict,
)
from sync.errors import (
    AccountMismatchError,
    AuthError,
    AuthExpiredError,
    AuthRevokedError,
    ConflictError,
    ConflictNotFoundError,
    EngineStateError,
    MergeError,
    NotLoggedInError,
    OfflineError,
    ProtocolError,
    RateLimitedError,
    RejectedChangeError,
    RemoteConfigError,
    SchemaTooOldError,
    SessionChangedError,
    SyncError,
    SyncLockedError,
    TransientError,
)
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.merge import ConflictCase, Resolution, Version
from sync.remote import Change, PullPage, PushResult, Remote, ServerInfo, ServerRow, VerifyPage

__all__ = [
    "AccountMismatchError",
    "AuthError",
    "AuthExpiredError",
    "AuthRevokedError",
    "Change",
    "ConflictCase",
    "ConflictError",
    "ConflictNotFoundError",
    "ConflictRecord",
    "ControlClient",
    "ControlError",
    "ControlRequestError",
    "DaemonNotRunningError",
    "EmbeddedSync",
    "EngineStateError",
    "FlaggedFile",
    "MemoryRemote",
    "MemoryServer",
    "MergeError",
    "NotLoggedInError",
    "OfflineError",
    "ProtocolError",
    "PullPage",
    "PushResult",
    "QuarantineEntry",
    "RateLimitedError",
    "RejectedChangeError",
    "Remote",
    "RemoteConfigError",
    "Resolution",
    "SchemaTooOldError",
    "ServerInfo",
    "ServerRow",
    "SessionChangedError",
    "SyncEngine",
    "SyncError",
    "SyncLockedError",
    "SyncReport",
    "SyncStatus",
    "TransientError",
    "VerifyPage",
    "VerifyReport",
    "Version",
    "WorkerState",
    "conflict_diff",
    "daemon_running",
    "get_conflict",
    "list_conflicts",
    "list_flagged",
    "list_quarantine",
    "local_status",
    "resolve_conflict",
    "start_sync",
]
