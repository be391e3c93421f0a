"""apsw errors translated into the localstore tree, and what a damaged or forked index gets.

map_apsw_error is the boundary every index caller maps through; _WriteLost is the refusal of a
write SQLite rolled back by itself (Index.write); set_aside moves a damaged index out of the way.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

import apsw

from localstore import files as fs
from localstore._durable import WIN_IN_USE_ERRORS
from localstore.errors import (
    DiskFullError,
    IndexStoreError,
    LocalStoreError,
    PermissionDeniedError,
    StoreClosedError,
)

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def note_os_error(conn: apsw.Connection, exc: BaseException) -> None:
    """Note on an apsw I/O error the OS error behind it (``os_errno``, for map_apsw_error).

    SQLite reports ENOSPC as SQLITE_FULL only where it writes a file; growing the WAL index
    (-shm) or opening the WAL on a full disk fails as a plain SQLITE_IOERR, which said "disk
    I/O error" (check the hardware) to a user whose disk was only full.
    """
    if isinstance(exc, apsw.IOError) and not hasattr(exc, "os_errno"):
        try:
            exc.os_errno = conn.system_errno  # type: ignore[attr-defined]
        except apsw.Error:
            pass


def map_apsw_error(exc: apsw.Error, action: str = "index operation") -> LocalStoreError:
    """Translate an apsw exception into the localstore tree."""
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return IndexStoreError(
            f"{action}: the index stayed locked by another process",
            hint="another localstore process is busy; try again",
        )
    if isinstance(exc, apsw.FullError) or getattr(exc, "os_errno", None) in _FULL_ERRNOS:
        return DiskFullError(f"{action}: the disk is full", hint="free some disk space")
    if isinstance(exc, apsw.ReadOnlyError | apsw.PermissionsError | apsw.CantOpenError):
        return PermissionDeniedError(
            f"{action}: cannot write the index ({exc})",
            hint="check that this user may write index.db, its -wal and -shm files and the data "
            "folder holding them",
        )
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return IndexStoreError(
            f"{action}: the index is damaged ({exc})",
            hint="run 'localstore check --fix': it moves the damaged index aside and rebuilds it "
            "from the files",
        )
    return IndexStoreError(f"{action}: {exc}", hint="run 'localstore check' for details")


# apsw errors that say nothing about the state of the data (access, locks, space).
_NOT_DAMAGE = (
    apsw.ReadOnlyError,
    apsw.PermissionsError,
    apsw.CantOpenError,
    apsw.BusyError,
    apsw.LockedError,
    apsw.FullError,
)


def index_damaged(exc: BaseException) -> bool:
    """True when ``exc`` (from opening or reading the index) says the file itself is damaged:
    not a database, or corrupted pages. Not for a lock, a full disk or a permission."""
    return isinstance(exc, IndexStoreError) and isinstance(
        exc.__cause__, apsw.CorruptError | apsw.NotADBError
    )


def set_aside(path: Path) -> Path:
    """Move a damaged index (and its -wal and -shm) aside to a timestamped name next to it.

    Never deleted: it holds the revision history, which the files do not, and may be salvageable.
    Returns the new path of the main file."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        # The -wal and -shm first: a main file moved alone would leave a WAL that SQLite might
        # replay into the fresh index.
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                fs.replace_file(side, target.with_name(target.name + suffix))
        fs.replace_file(path, target)
    except OSError as exc:
        if getattr(exc, "winerror", None) in WIN_IN_USE_ERRORS:  # (a backup tool, a scanner)
            raise fs.map_os_error(exc, "cannot move the damaged index aside", path) from exc
        raise PermissionDeniedError(
            f"cannot move the damaged index {path} aside: {exc.strerror or exc}",
            hint="check the permissions of the data folder, or move index.db aside by hand",
        ) from exc
    return target


class _WriteLost(IndexStoreError):
    """SQLite rolled back the whole open write transaction by itself; nothing of it is saved.

    Raised by every level of that write still open but the outermost (which raises the error
    that lost it), by a new level, and by any statement that would write: an IndexStoreError,
    so the per-item handlers of batches (reconcile, sync, the watcher) stop instead of going on
    in autocommit mode, each later item committing alone.
    """

    def __init__(self, cause: BaseException | None) -> None:
        why = f" ({_describe_cause(cause)})" if cause is not None else ""
        super().__init__(
            f"SQLite rolled back the whole write after an error inside it{why}; nothing of "
            "it was saved",
            hint="free some disk space if the disk is full, then try again; 'localstore check' "
            "shows whether the index is healthy",
        )


def _describe_cause(cause: BaseException) -> str:
    if isinstance(cause, apsw.Error):
        return str(map_apsw_error(cause, "write"))
    return str(cause)


def forked_error(pid: int) -> StoreClosedError:
    """The refusal of a store (or index) used in a child forked from the process that opened it.

    SQLite forbids carrying a connection across fork(), the store's threads exist only in the
    parent, and a lock a parent thread held at the fork stays taken in the child: the child's
    save hung for ever.
    """
    return StoreClosedError(
        f"this store was opened by process {pid}; a child forked from it cannot use it",
        hint="open the home again in the child with localstore.open() (or start the child with "
        "the spawn method)",
    )
