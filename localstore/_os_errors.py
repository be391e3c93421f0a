"""OSError to StorageError: the one mapping of the file layer's system errors to the tree.

Each error names what failed and carries a hint a person can act on (a full disk, a folder's
permissions, a file another program holds open on Windows, a path too long for this system).
"""

from __future__ import annotations

import errno
from pathlib import Path

from localstore._durable import WIN_IN_USE_ERRORS
from localstore.errors import DiskFullError, PermissionDeniedError, StorageError


def map_os_error(exc: OSError, action: str, path: Path | str) -> StorageError:
    """Translate an OSError into the StorageError subclass a caller can act on."""
    what = f"{action} {path}: {exc.strerror or exc}"
    winerror = getattr(exc, "winerror", None)
    if winerror in WIN_IN_USE_ERRORS:
        # Windows: another program has the file open without sharing it (an editor, a previewer,
        # a sync client, an antivirus or search indexer that held on past the retries). Python
        # reports that as EACCES, and "check the folder's permissions" sent the user elsewhere.
        hint = (
            "close the file in the program that has it open (an editor, a previewer, a sync "
            "client) or wait for the antivirus or search indexer to finish with it, then try again"
        )
        if winerror == 5:  # (also a read-only file, or a folder this account may not write)
            return PermissionDeniedError(
                what,
                hint="another program may have it open: close the file there or wait for the "
                "antivirus or search indexer to finish with it; else check that the file is not "
                "read-only and that the folder is writable",
            )
        return StorageError(f"{action} {path}: the file is in use by another program", hint=hint)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(what, hint="free some disk space and try again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDeniedError(
            what, hint="check the folder's permissions and that it is writable"
        )
    if exc.errno == errno.EISDIR:
        # A folder has the name of a file to write (a rename over it fails): "check the disk"
        # sent the user looking for a hardware fault.
        return StorageError(
            f"{action} {path}: a folder has that name",
            hint="move that folder away (or rename it), or use another path",
        )
    if exc.errno == errno.ENAMETOOLONG:
        # The name rules bound a path's parts and characters, not its bytes after this home's
        # own path (PATH_MAX: 4,096 on Linux): a path another device's shorter home holds can be
        # too long here. "Check the disk" named no cause.
        return StorageError(
            f"{action} {path}: the path is too long for this system",
            hint="use shorter folder and file names, or keep the home in a shorter folder",
        )
    return StorageError(what, hint="check the disk and try again")
