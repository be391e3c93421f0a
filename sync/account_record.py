"""The account a home belongs to, kept in a small file besides the index.

A home's synced blueprints belong to the account they synced with (docs/sync-engine.md,
"Identity"): that record (``sync_state.identity``) lives in the index, and ``localstore check
--fix`` rebuilds a damaged index from the files without it. The refusal of another user of the
project (``AccountMismatchError``, ``login --switch-user``) then no longer applied: a rebuilt
home could be logged into, and uploaded to, any account. So the engine also writes the record
to ``state/sync-account.json`` (durably: temp file, fsync, rename, fsync of the folder) whenever
the home's account is set, and the engine and ``login`` take it back into an index that has no
account (:func:`sync._state.restore_identity`). The index stays the authority whenever it has
one; the file is only read for an index without.

The file holds no secret: the identity (``<kind>:<server>:<user id>``) and the e-mail the
home's logins used (only to name the account in messages). It is private to the user anyway
(mode 0600, in the home's state folder).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from localstore import files as fs
from localstore._state_temps import replace_state_record
from localstore.errors import StorageError

__all__ = ["RECORD_FILE", "AccountRecord", "read", "record_path", "write", "write_quietly"]

log = logging.getLogger("sync.engine")

RECORD_FILE = "sync-account.json"


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """The account a home synced with: its identity and, if a login noted one, its e-mail."""

    identity: str
    email: str | None = None


def record_path(state_dir: Path) -> Path:
    """The record file in a home's state folder."""
    return state_dir / RECORD_FILE


def read(state_dir: Path) -> AccountRecord | None:
    """The recorded account, or None (no file, or one that cannot be read: logged).

    An unreadable record is no reason to stop syncing: the index, when it has an account, is
    the authority anyway.
    """
    path = record_path(state_dir)
    try:
        raw = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        log.warning("sync: cannot read the home's account record %s (%s); ignored", path, exc)
        return None
    identity = raw.get("identity") if isinstance(raw, dict) else None
    email = raw.get("email") if isinstance(raw, dict) else None
    if not isinstance(identity, str) or not identity:
        log.warning("sync: the home's account record %s names no account; ignored", path)
        return None
    return AccountRecord(identity, email if isinstance(email, str) and email else None)


def write(state_dir: Path, record: AccountRecord) -> None:
    """Durably replace the record. Raises StorageError (DiskFullError, PermissionDeniedError)."""
    # state/ only: with the home deleted or moved away, its folders are not made again here.
    fs.ensure_dir(state_dir, mode=0o700, parents=False)
    body = {"identity": record.identity, "email": record.email}
    data = (json.dumps(body, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    replace_state_record(record_path(state_dir), data)


def write_quietly(state_dir: Path, record: AccountRecord) -> bool:
    """:func:`write`, logging a failure instead of raising it; True when written.

    A sync must not fail because this copy could not be written: the index still holds the
    account, and the next cycle tries again.
    """
    try:
        write(state_dir, record)
    except (StorageError, OSError) as exc:
        log.warning("sync: could not record the home's account in %s: %s", state_dir, exc)
        return False
    return True
