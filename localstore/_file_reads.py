"""Reads of blueprint files: only regular files (never through a link, a folder, a device or a
pipe with the name), bounded, with the stats ``write_checked`` compares.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from localstore._durable import O_BINARY
from localstore._file_scan import Recorded, recorded_of
from localstore._os_errors import map_os_error


def read_bytes(path: Path, *, limit: int | None = None) -> bytes:
    """Read a file, refusing more than ``limit`` bytes. Raises FileNotFoundError or StorageError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read() if limit is None else fh.read(limit + 1)
    except FileNotFoundError:
        raise
    except IsADirectoryError as exc:
        raise map_os_error(exc, "cannot read", path) from exc
    except OSError as exc:
        raise map_os_error(exc, "cannot read", path) from exc
    return data


class NotAFileError(FileNotFoundError):
    """Something other than a regular file has a blueprint file's name: a folder, a symbolic
    link, a device, pipe or socket. It is never read (nor written through): callers that catch
    FileNotFoundError treat it as missing; ``what`` names it for a message."""

    def __init__(self, path: Path | str, what: str) -> None:
        super().__init__(errno.ENOENT, f"a {what}, not a regular file", os.fspath(path))
        self.what = what


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words ("folder", "symbolic link", ...)."""
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return "special file (device, pipe or socket)"


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# A pipe with a blueprint's name would block open() for reading until a writer came.
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | O_BINARY


def read_regular(path: Path | str, limit: int | None = None) -> bytes:
    """A blueprint file's bytes (up to ``limit`` + 1), only if it is a regular file (see
    read_regular_seen). Raises NotAFileError, FileNotFoundError, StorageError."""
    return _read_regular(path, limit)[0]


def read_regular_seen(path: Path | str, limit: int | None = None) -> tuple[bytes, Recorded]:
    """read_regular, with what write_checked compares of the file read (its stats taken just
    before the read: a change during the read shows as one after it). Raises as read_regular."""
    data, st = _read_regular(path, limit)
    return data, recorded_of(st)


def _read_regular(path: Path | str, limit: int | None = None) -> tuple[bytes, os.stat_result]:
    """A blueprint file's bytes (up to ``limit`` + 1), only if it is a regular file.

    Raises NotAFileError (a FileNotFoundError) for a folder, a link or a special file in its
    place, FileNotFoundError if there is nothing, StorageError for other errors. The watcher and
    the scan never follow a link; a read that did took a file elsewhere (a link that git checked
    out, to ~/.ssh/id_rsa or another store's meta) as the blueprint's content or meta, kept in
    history and synced.
    """
    try:
        if not _NOFOLLOW:  # (no O_NOFOLLOW: Windows) ask first, then open
            mode = os.lstat(path).st_mode
            if not stat.S_ISREG(mode):
                raise NotAFileError(path, kind_of(mode))
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW: the last part is a link
            raise NotAFileError(path, "symbolic link") from None
        raise map_os_error(exc, "cannot read", path) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFileError(path, kind_of(st.st_mode))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return (fh.read() if limit is None else fh.read(limit + 1)), st
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise map_os_error(exc, "cannot read", path) from exc
    finally:
        os.close(fd)
