"""Read-only homes: why a store writes nothing, and how its index opens.

A backup snapshot (btrfs, ZFS), a disk mounted ``-o ro``, a restic or borg FUSE mount, another
user's home shared by group: the index there is a WAL-mode database in a folder nobody may write.
SQLite reads such a database (https://www.sqlite.org/wal.html, "Read-Only Databases") only when
its ``-shm`` file exists, or can be made, or the database is opened ``immutable``; and an
``immutable`` open ignores the ``-wal`` file, so the commits a snapshot caught in it (taken while
the daemon or an app had the home open) were silently not there. The ways, tried in order:

``shared``
    ``mode=ro``: SQLite's own read-only open, with its locks; it sees other processes' commits
    as they come. Works where the ``-shm`` exists (SQLite reads a read-only one into private
    memory, and rebuilds it from the WAL when it does not match) or can be created: on a home
    this user may write, SQLite then adds its ``-shm`` and ``-wal`` to data/ as any reader does.
``private-wal``
    The ``-wal`` holds frames but there is no ``-shm`` and none can be made (a backup that left
    it out): ``mode=ro`` on the lockless VFS (``unix-none``) with ``locking_mode=EXCLUSIVE``, so
    SQLite reads the WAL into a wal-index in its own memory and never asks for shared memory.
    Lockless is sound only for files nothing changes: a snapshot, a backup.
``immutable``
    No ``-wal`` (or an empty one) and no ``-shm`` can be made: ``immutable=1``, the main file is
    the whole database. Also lockless: a home another process opens and writes meanwhile is
    read as of the open (a later checkpoint into the main file could make a read fail).

None of them writes a byte into a home this user may not write (tests/store/test_read_only_home.py
compares every file's bytes and times, and the folder listings). A read that fails because a side
file cannot be opened or made moves to the next way; any other error is the index's own and is
raised (mapped).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import apsw

from localstore import files as fs
from localstore.config import home_name
from localstore.errors import IndexStoreError, PermissionDeniedError, ReadOnlyStoreError

if TYPE_CHECKING:
    from localstore.config import Paths, Settings

SHARED = "shared"
PRIVATE_WAL = "private-wal"
IMMUTABLE = "immutable"

# SQLite's built-in VFS without file locks, per platform (always compiled in).
_LOCKLESS_VFS = "win32-none" if os.name == "nt" else "unix-none"


def unwritable_reason(paths: Paths) -> str:
    """Why a store of this home is read-only, in words for a person: a read-only file system,
    the first of data/ and index.db this user may not write, else that the caller asked."""
    return home_read_only(paths) or "opened with read_only=True"


def home_read_only(paths: Paths) -> str | None:
    """Why this user cannot write the home (a read-only file system, data/ or index.db this
    user may not write), in words for a person; None when nothing says so."""
    data = paths.data
    if sys.platform != "win32":  # (no statvfs there)
        try:
            if os.statvfs(data).f_flag & os.ST_RDONLY:
                return f"{data} is on a read-only file system"
        except OSError:  # (missing)
            pass
    for path in (data, paths.index_db):
        # access(), not the modes: it answers for this user (groups, ACLs, capabilities).
        if os.path.exists(path) and not os.access(path, os.W_OK):
            return f"this user may not write {path}"
    return None


def refuse_read_only_home(settings: Settings, action: str) -> ReadOnlyStoreError | None:
    """The refusal of ``action`` (a command that writes: save, watch, sync, the daemon) on a home
    this user cannot write, or None when the home is not read-only. Its words are the CLI's:
    the library's ReadOnlyStoreError speaks of ``read_only=True``, which no command takes."""
    reason = home_read_only(settings.paths)
    if reason is None:
        return None
    return ReadOnlyStoreError(
        f"cannot {action}: the home {home_name(settings)} is read-only ({reason})",
        hint=READ_ONLY_HOME_HINT,
    )


# What to do about a read-only home, for the CLI's commands that cannot run on one.
READ_ONLY_HOME_HINT = (
    "a backup or snapshot: copy it to a folder you may write and use the copy; else make it "
    "writable (remount it read-write; check the owner and modes of its data folder and "
    "index.db). ls, show, search, history, status, conflicts, check, export, doctor, cred ls "
    "and cred get read it as it is"
)


def connect_read_only(path: Path, busy_timeout_ms: int) -> tuple[apsw.Connection, str]:
    """Open ``path`` read-only the first way that reads it; returns the connection and the way.

    Raises IndexStoreError when there is no index (a read-only open cannot build one), the
    mapped storage error when it cannot be read.
    """
    from localstore.index import map_apsw_error

    try:
        os.stat(path)
    except FileNotFoundError as exc:
        raise IndexStoreError(
            f"no index at {path}; a read-only open cannot build one",
            hint="copy the home to a folder you may write and open the copy: the index is "
            "built from the files there",
        ) from exc
    except OSError as exc:
        raise fs.map_os_error(exc, "cannot read the index", path) from exc
    ways = [SHARED, PRIVATE_WAL if _wal_has_frames(path) else IMMUTABLE]
    refused: apsw.Error | None = None
    for way in ways:
        try:
            return _open(path, way, busy_timeout_ms), way
        except (apsw.CantOpenError, apsw.ReadOnlyError) as exc:
            # The -shm (or -wal) could not be opened or made here: the next way needs neither.
            refused = exc
        except apsw.Error as exc:
            raise map_apsw_error(exc, f"open {path} read-only") from exc
    # (Not map_apsw_error's "cannot write the index": nothing was to be written.)
    raise PermissionDeniedError(
        f"cannot read the index {path} ({refused})",
        hint="check that this user may read index.db and the data folder holding it",
    ) from refused


def _wal_has_frames(path: Path) -> bool:
    try:
        return os.stat(f"{path}-wal").st_size > 0
    except OSError:
        return False


def _open(path: Path, way: str, busy_timeout_ms: int) -> apsw.Connection:
    from localstore.index import add_functions, note_os_error

    uri = Path(path).absolute().as_uri() + "?mode=ro"
    if way == PRIVATE_WAL:
        uri += f"&vfs={_LOCKLESS_VFS}"
    elif way == IMMUTABLE:
        uri += "&immutable=1"
    conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        conn.setbusytimeout(busy_timeout_ms)
        if way == PRIVATE_WAL:
            # Before the first read: the wal-index then lives in this connection's memory.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
        # As the writable connection (see index._connect): the same plans, the same functions.
        conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)
        add_functions(conn)
        conn.execute("PRAGMA query_only=ON").fetchall()
        conn.execute("PRAGMA cache_size=-16000").fetchall()
        # The first read: where the side files are missing and cannot be made, it fails here.
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    except BaseException as exc:
        note_os_error(conn, exc)  # (a full or failing disk says so, not "cannot write")
        conn.close()
        raise
    return conn
