"""The one exception tree of the ``localstore`` package.

Every error carries a message that says what went wrong and, where a person can act, a ``hint`` that
says how to fix it. Third-party exceptions (apsw, keyring, watchdog, yaml, cryptography, zipfile) are
translated at the boundary with ``raise ... from exc`` and never leak out of the public API.

::

    LocalStoreError
    ├── ConfigError
    ├── InvalidInputError
    │   ├── InvalidYAMLError
    │   ├── InvalidMetaError
    │   ├── LimitExceededError
    │   ├── UnsafePathError
    │   └── InvalidRefError
    ├── NotFoundError
    │   └── RevisionNotFoundError
    ├── AmbiguousRefError
    ├── AlreadyExistsError
    ├── RevisionConflictError
    │   └── ChangedOnDiskError
    ├── StoreClosedError
    ├── StorageError
    │   ├── DiskFullError
    │   ├── FolderAwayError (the blueprints folder missing or emptied, blueprints indexed)
    │   ├── PermissionDeniedError
    │   │   └── ReadOnlyStoreError (a write to a store opened read-only)
    │   ├── NameTakenError (another program took a file's name during a write)
    │   │   ├── TargetChangedError
    │   │   └── KeptChangingError (a save_many met an editor saving again and again)
    │   └── IndexStoreError
    │       └── NewerIndexError (written by a newer localstore: upgrade)
    ├── CredentialError
    │   ├── KeychainUnavailableError
    │   └── CredentialNotFoundError
    ├── CryptoError
    │   ├── DecryptionError
    │   └── KeyNotFoundError
    ├── KVError
    │   ├── KVFormatError
    │   └── KVNotFoundError (also a NotFoundError)
    ├── WatcherError
    ├── BundleError
    │   ├── BundleFormatError
    │   ├── BundleIntegrityError
    │   ├── BundleLimitError
    │   └── UnsafeBundleError
    └── LockHeldError          (sync's SyncLockedError is one too)

The sync package's tree (``sync.errors``) hangs below it: ``SyncError`` is a ``LocalStoreError``,
so one ``except LocalStoreError`` catches everything the library raises on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence


class LocalStoreError(Exception):
    """Base of every error raised by localstore (sync's SyncError included)."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(LocalStoreError):
    """A setting or config file is invalid."""


class InvalidInputError(LocalStoreError):
    """Input was rejected; nothing was changed."""


def wrong_type(what: str, value: object, expected: str, *, hint: str) -> InvalidInputError:
    """The refusal of an argument of the wrong type: "<what> must be <expected>, not <type>".

    ``raise wrong_type("prefix", prefix, "a string", hint=...)``: one wording for the API's many
    type checks (the message names the type given, never its value, which may be a secret).
    """
    return InvalidInputError(f"{what} must be {expected}, not {type(value).__name__}", hint=hint)


def methods_arg(
    what: str, value: object, methods: tuple[str, ...], expected: str, *, hint: str
) -> None:
    """Refuse ``value`` (:func:`wrong_type`) unless each of ``methods`` is a callable of it.

    For arguments taken by what they do (a credential store, a secret backend, a remote): a
    wrong one, a string say, failed later, deep in the first call (or on another thread).
    """
    if not all(callable(getattr(value, m, None)) for m in methods):
        raise wrong_type(what, value, expected, hint=hint)


class InvalidYAMLError(InvalidInputError):
    """The blueprint's YAML does not parse or its top level is not a mapping."""


class InvalidMetaError(InvalidInputError):
    """The companion .meta.json is malformed or has fields of the wrong type."""


class LimitExceededError(InvalidInputError):
    """A size, depth, alias or count limit was exceeded."""


class UnsafePathError(InvalidInputError):
    """A path is absolute, escapes the root, uses reserved names or collides by case."""


class InvalidRefError(InvalidInputError):
    """A reference (id, id prefix or path) is malformed."""


class NotFoundError(LocalStoreError):
    """Nothing matches the reference (a blueprint, an app-data key, a credential)."""


class RevisionNotFoundError(NotFoundError):
    """The blueprint exists but has no such revision."""


class AmbiguousRefError(LocalStoreError):
    """An id prefix matches more than one blueprint."""


class AlreadyExistsError(LocalStoreError):
    """The target path is taken by another blueprint."""


class RevisionConflictError(LocalStoreError):
    """The blueprint changed since the revision the caller expected."""


class ChangedOnDiskError(RevisionConflictError):
    """A remote save found an unrecorded edit on disk: it recorded the edit and wrote nothing."""


class StoreClosedError(LocalStoreError):
    """The store was used after close()."""


class StorageError(LocalStoreError):
    """Reading or writing files failed; the previous version is intact."""


class DiskFullError(StorageError):
    """No space left on the device."""


class FolderAwayError(StorageError):
    """The blueprints folder is missing, or another folder without blueprints, while blueprints
    are indexed: put it back, or confirm it empty (the hint names the file)."""


class PermissionDeniedError(StorageError):
    """The operating system refused access to a file or folder."""


class ReadOnlyStoreError(PermissionDeniedError):
    """A write was asked of a store opened read-only; nothing was changed.

    A PermissionDeniedError too: what refused it is the home's (a snapshot, a read-only disk,
    another user's folder) or the app's own ``read_only=True``; its message says which.
    """


class NameTakenError(StorageError):
    """A name a write believed free was taken (by another program) before the file could be
    placed there; nothing was replaced (the store finds the newcomer and writes again)."""

    def __init__(self, target: str, message: str = "", *, hint: str = "") -> None:
        super().__init__(
            message or f"{target} was created by another program while it was being written",
            hint=hint or "try again (the file that appeared is kept)",
        )
        self.target = target


class TargetChangedError(NameTakenError):
    """A file a write was replacing was no longer the one the index recorded: another program
    (an editor) saved over it after the write checked it. That program's file is in place
    again (nothing of it replaced), and the store records it and writes again, as for a name
    found taken. ``set_aside``: files of that program's the write had to take off the name (it
    saved again between the write's two swaps, see files.replace_recorded) or had kept beside it;
    the store keeps those whose bytes no revision holds in <data>/recovered/."""

    def __init__(self, target: str, set_aside: Sequence[str] = ()) -> None:
        super().__init__(
            target,
            f"{target} was changed by another program while it was being written",
            hint="try again (the version that program saved is kept)",
        )
        self.set_aside = list(set_aside)


class KeptChangingError(NameTakenError):
    """A local batch met another program's save of the same file (an autosaving editor) at
    its placing on attempt after attempt, recording each version, until the store's bound
    (``store._RACE_REPEATS_MAX`` runs again after the first): nothing of the batch was
    written, the file is left as that program last saved it. ``rel``: the blueprint's path;
    ``saves``: how many of that program's saves the batch met."""

    def __init__(self, target: str, rel: str, saves: int, *, recorded: bool = True) -> None:
        kept = (
            "each version it saved is in the blueprint's history"
            if recorded
            else "its last version is left in the file"
        )
        super().__init__(
            target,
            f"{rel} kept changing while it was being saved: another program (an editor's "
            f"autosave?) saved it {saves} times in a row, each time just before the save could "
            "replace it; nothing of this save was written",
            hint=f"close {rel} in the program editing it (or pause its autosave), then save "
            f"again; {kept}",
        )
        self.rel = rel
        self.saves = saves


class IndexStoreError(StorageError):
    """The SQLite index failed (corrupt, locked for too long, or unreadable)."""


class NewerIndexError(IndexStoreError):
    """The index was written by a newer localstore; it is left untouched (upgrade to open it).

    Its own type so a caller can tell "upgrade" from a failure that may heal: the daemon exits
    with a code its service files do not restart (a restart cannot help until the upgrade).
    """


class CredentialError(LocalStoreError):
    """A keychain operation failed."""


class KeychainUnavailableError(CredentialError):
    """No usable OS keychain backend is available."""


class CredentialNotFoundError(CredentialError):
    """No credential with that name is stored."""


class CryptoError(LocalStoreError):
    """Encryption or decryption failed."""


class DecryptionError(CryptoError):
    """The key or passphrase is wrong, or the data was tampered with."""


class KeyNotFoundError(CryptoError):
    """The data key needed to decrypt is not in the keychain."""


class KVError(LocalStoreError):
    """An app-data store operation failed."""


class KVFormatError(KVError):
    """A value cannot be encoded or decoded in the requested format."""


class KVNotFoundError(KVError, NotFoundError):
    """No live (unexpired) app-data item has that key."""


class WatcherError(LocalStoreError):
    """The file watcher cannot run (lifecycle misuse or OS watch limits)."""


class BundleError(LocalStoreError):
    """Exporting or importing a bundle failed; nothing was imported."""


class BundleFormatError(BundleError):
    """The bundle is not a readable .lsbundle of a supported version."""


class BundleIntegrityError(BundleError):
    """A file in the bundle does not match its manifest hash or size."""


class BundleLimitError(BundleError):
    """The bundle exceeds an import limit (entries, sizes, ratio, nesting)."""


class UnsafeBundleError(BundleError):
    """The bundle contains unsafe entries (absolute, '..', links, devices, collisions)."""


class LockHeldError(LocalStoreError):
    """Another process holds the lock (a running daemon or sync engine)."""
