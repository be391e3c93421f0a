"""LocalStore: local-first storage for blueprints (YAML workflow documents).

Files on disk are the truth; an SQLite index makes them fast to find; every change is kept in history.

>>> import localstore
>>> store = localstore.open(home="/tmp/demo-home")          # doctest: +SKIP
>>> store.save("personal/hello", "steps: []\\n", tags=["demo"])   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

from localstore._daemon_state import daemon_running
from localstore.blueprint import Blueprint, BlueprintInfo, BlueprintMeta, Validator
from localstore.config import Settings, load_settings
from localstore.errors import (
    AlreadyExistsError,
    AmbiguousRefError,
    BundleError,
    ConfigError,
    CredentialError,
    CryptoError,
    InvalidInputError,
    InvalidMetaError,
    InvalidYAMLError,
    LimitExceededError,
    LocalStoreError,
    LockHeldError,
    NotFoundError,
    ReadOnlyStoreError,
    RevisionConflictError,
    StorageError,
    StoreClosedError,
    UnsafePathError,
)
from localstore.events import Event
from localstore.store import (
    BlueprintStore,
    CheckReport,
    RevalidateReport,
    Revision,
    SaveRequest,
    SearchHit,
)
from localstore.store import open_store as open

__version__ = "0.1.0"

if _TYPE_CHECKING:
    # For type checkers only: they type a name served by __getattr__ as its return type,
    # object, so an app's `localstore.KVStore(index)` was "object" not callable.
    from localstore.credentials import CredentialStore
    from localstore.kv import KVStore

# Imported on first use: the keychain and crypto stacks cost start-up time every CLI call would pay.
_LAZY = {
    "CredentialStore": "localstore.credentials",
    "KVStore": "localstore.kv",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'localstore' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "AlreadyExistsError",
    "AmbiguousRefError",
    "Blueprint",
    "BlueprintInfo",
    "BlueprintMeta",
    "BlueprintStore",
    "BundleError",
    "CheckReport",
    "ConfigError",
    "CredentialError",
    "CredentialStore",
    "CryptoError",
    "Event",
    "InvalidInputError",
    "InvalidMetaError",
    "InvalidYAMLError",
    "KVStore",
    "LimitExceededError",
    "LocalStoreError",
    "LockHeldError",
    "NotFoundError",
    "ReadOnlyStoreError",
    "RevalidateReport",
    "Revision",
    "RevisionConflictError",
    "SaveRequest",
    "SearchHit",
    "Settings",
    "StorageError",
    "StoreClosedError",
    "UnsafePathError",
    "Validator",
    "__version__",
    "daemon_running",
    "load_settings",
    "open",
]
