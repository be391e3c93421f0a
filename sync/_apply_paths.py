"""Paths and ids of what an apply writes: conflict copies' paths and ids, the 3-way merge of a
path, which paths this device cannot hold, and whether a blocked path is free again."""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from localstore import files as fs
from localstore.errors import (
    DiskFullError,
    IndexStoreError,
    LocalStoreError,
    PermissionDeniedError,
    StorageError,
)

if TYPE_CHECKING:
    from localstore.store import BlueprintStore


# Conflict copies get a deterministic id (same main id, local content, server rev and device):
# if a pass is killed after writing the copy but before the commit, the retry moves that same
# copy instead of making a second one.
_COPY_NAMESPACE = uuid.UUID("9c6d1f0e-3b7a-4e55-9a8e-5c2f4b1d7e21")
_MAX_DEVICE_CHARS = 40


def utc_stamp(now: datetime) -> str:
    """A UTC timestamp that is safe in a file name on every OS (no colons)."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")


def _safe_device(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".- ")
    return (cleaned or "device")[:_MAX_DEVICE_CHARS]


def conflict_path(
    path: str, device: str, stamp: str, taken: Callable[[str], bool], *, word: str = "conflict"
) -> str:
    """A free sibling path: ``folder/stem (conflict <device> <stamp>).blueprint.yaml``.

    ``word`` replaces "conflict" (a rename cycle's passing path says "moving").
    """
    folder = fs.folder_of(path)
    stem = fs.display_name(path)
    dev = _safe_device(device)
    n = 1
    while True:
        tail = f" ({word} {dev} {stamp}{'' if n == 1 else f' {n}'})" + fs.YAML_SUFFIX
        where = folder
        # The name is cut to fit both a part's bytes and the whole path's characters (the
        # server's limit too): a path near 1,024 characters with its tail added was refused by
        # normalize_path, and that error ended every pass at the same collision.
        chars = fs.MAX_PATH_CHARS - len(tail) - (len(where) + 1 if where else 0)
        if chars < 1:
            # Its folders alone leave no room for the tail: the copy goes to the top folder
            # (the conflict record names where it is).
            where, chars = "", fs.MAX_PATH_CHARS - len(tail)
        room = fs.MAX_SEGMENT_BYTES - len(tail.encode("utf-8"))
        short = stem.encode("utf-8")[: max(room, 1)].decode("utf-8", "ignore")[:chars]
        name = short.rstrip(" .") + tail
        candidate = fs.normalize_path(f"{where}/{name}" if where else name)
        if not taken(candidate):
            return candidate
        n += 1


def merge_path(base_path: str | None, local_path: str, remote_path: str) -> str:
    """3-way merge of a path: a side that renamed wins; both renamed: the server's rename wins."""
    if local_path == remote_path:
        return local_path
    if base_path is not None and local_path == base_path:
        return remote_path
    if base_path is not None and remote_path == base_path:
        return local_path
    return remote_path


# OS errors that say a path's shape cannot exist here (a file where a folder must be, or the other
# way round; a name too long or not encodable for this file system): retrying never helps.
_PATH_SHAPE_ERRNOS = frozenset({errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EILSEQ})


def is_path_shape_error(exc: BaseException) -> bool:
    """True for a StorageError caused by the shape of the path written, not by the disk.

    Such a server row can never be written on this device (e.g. the server holds both
    ``d.blueprint.yaml`` and ``d.blueprint.yaml/e.blueprint.yaml``): it is quarantined like an
    invalid row. A full disk, missing permissions or a failing index are not: the cycle stops
    and retries, and nothing is skipped.
    """
    if not isinstance(exc, StorageError) or isinstance(
        exc, DiskFullError | PermissionDeniedError | IndexStoreError
    ):
        return False
    cause: BaseException | None = exc.__cause__
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _PATH_SHAPE_ERRNOS:
            return True
        cause = cause.__cause__
    return False


def copy_id_for(blueprint_id: str, local_hash: str, rev: int, device_id: str) -> str:
    """The id of the conflict copy of ``blueprint_id``'s local version ``local_hash`` kept against
    server rev ``rev`` on this device: derived, not random, so an apply run again after a kill
    writes the same copy (not a second one), and the apply journal's recovery finds it
    (``SyncEngine._recover_copy``)."""
    return str(uuid.uuid5(_COPY_NAMESPACE, f"{blueprint_id}:{local_hash}:{rev}:{device_id}"))


def path_unblocked(store: BlueprintStore, cur: Any, path: str) -> bool:
    """Whether a server row parked as ``path_blocked`` at ``path`` would be stored now.

    It was parked because the save found a file there that the index cannot record (its YAML or
    meta does not parse, so writing over it would lose it) or that is no regular file (a link,
    a special file), and refused the path (AlreadyExistsError). The same checks, read-only: the
    path is free once nothing is there, or once an indexed blueprint holds it (the file was
    fixed and recorded: it moves aside as any local blueprint in a pulled row's way). A link or
    special file at either name, or an unindexed file, still blocks it, and so does an indexed
    blueprint whose files do not parse now (flagged: :class:`UnparsedInTheWay`). A few lstats
    and one indexed lookup per parked row, so a cycle asks the server only when this changed (a fetch
    that is refused again parks the row again, and this says "blocked" again).

    A file fixed but not recorded yet (no watcher) waits for the reconcile that records it,
    as an ``unparsable_local`` row waits for its file's. A path that does not normalize (a
    stored path ``sync._shown`` escaped or cut names no file here) is left to a retry.
    """
    try:
        rel = fs.normalize_path(path)
    except LocalStoreError:
        return False
    for name in (rel, fs.meta_path_for(rel)):
        try:
            mode = os.lstat(store.root.joinpath(*name.split("/"))).st_mode
        except FileNotFoundError:
            continue
        except OSError:
            return False  # (unreadable, or a file where a folder of the path must be)
        if not stat.S_ISREG(mode):
            return False
    holder = store._live_at(cur, rel)
    if holder is not None:
        # An indexed blueprint whose files do not parse (flagged) is not moved aside either
        # (sync._apply.UnparsedInTheWay): the row waits until they parse.
        return holder.flagged is None
    return not os.path.lexists(store.root.joinpath(*rel.split("/")))


def canonical_path(path: str) -> bool:
    """True when ``fs.normalize_path(path)`` can only return ``path`` itself or raise.

    normalize_path changes nothing else than the Unicode form (NFC) and the suffix; everything
    else it checks and refuses. A canonical remote path can therefore go to ``save_many``
    unnormalized: the store validates it there (once) and a bad one comes back as that item's
    error, which the engine quarantines. tests/sync_engine/test_apply_batch.py checks this
    against normalize_path itself.
    """
    return path.endswith(fs.YAML_SUFFIX) and unicodedata.is_normalized("NFC", path)
