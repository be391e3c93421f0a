"""Replication of a LocalStore home to a cloud tier (Supabase), and its public API.

Typical use::

    import localstore
    from sync import SyncEngine, MemoryRemote

    store = localstore.open("/tmp/home")
    engine = SyncEngine(store, remote)
    report = engine.sync_once()        # or engine.start() ... engine.stop(); engine.join()

An app logs its user in from code with ``sync.login(settings, url, anon_key, email, password)``
(what ``localstore login`` does) and out with ``sync.logout(settings)``; see
docs/supabase-remote.md, "Public API".

Everything not listed in ``__all__`` is private to the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

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

if _TYPE_CHECKING:
    # For type checkers only: they type a name served by __getattr__ as its return type, object.
    from sync.supabase_remote import LoginResult, has_login, login, logout

# Imported on first use: the official Supabase client adds about 0.2 s to `import sync`, which
# an app that syncs through the daemon (or not at all yet) would pay at every start.
_LAZY = {name: "sync.supabase_remote" for name in ("LoginResult", "has_login", "login", "logout")}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sync' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


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
    "LoginResult",
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
    "has_login",
    "list_conflicts",
    "list_flagged",
    "list_quarantine",
    "local_status",
    "login",
    "logout",
    "resolve_conflict",
    "start_sync",
]
