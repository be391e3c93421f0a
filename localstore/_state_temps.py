"""The writes of the home's small ``state/`` files, and the sweep of the temps a killed one left.

The writes there are rare and small, each a temp file renamed over its target
(:func:`write_state_file`, the one writer): ``daemon.json`` (it holds the daemon's control
token), the sync pause, the cloud session's marker, the sync account and base records and the
local cloud stack's state. A process killed (or a power cut) between the write and the rename
left the temp for ever: data/ and the blueprints folder have the reconcile's sweep of stale
temps, ``state/watchers/`` and ``state/merges/`` theirs; nothing looked here. (Older versions
named the temps ``.daemon-*.lstmp``, ``.paused-*``, ``.session-*``, ``.sync-account.json.*``,
``.sync-bases.jsonl.*`` and ``.localcloud-*.tmp``.)

The rules are the reconcile's for data/ temps: only our own temp names (a dot, then the
``.lstmp`` suffix, or the local stack's one name), only regular files, and only once
``STALE_TEMP_SECONDS`` old by the later of their modification and change times. Each writer
renames its temp within milliseconds of making it (and a writer still writing moves the mtime),
so a temp that old is no live writer's. Run at every writable store open (the daemon opens one at
start), where it costs one listing of a folder of a few files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from localstore import files as fs
from localstore._reconcile import STALE_TEMP_SECONDS

log = logging.getLogger(__name__)

# sync/localcloud/service.py's temp: it predates TEMP_SUFFIX and is named apart.
_LOCALCLOUD_TEMP = (".localcloud-", ".tmp")
# (Not on Windows before Python 3.13, where a file's mode is only its read-only flag.)
_FCHMOD = getattr(os, "fchmod", None)


def write_state_file(
    path: Path, data: bytes, *, mode: int = 0o600, flush: bool = True, flush_dir: bool = False
) -> None:
    """Replace ``path`` (a small file in state/, its folder made) with ``data`` atomically: a
    reader, or a crash, finds the old file or the new one, never a part.

    ``mode``: the new file's, whatever the umask (its temp has no more from the start: a token is
    never readable by others). ``flush``: fsync the file before its rename (else a power cut may
    leave it empty); ``flush_dir``: fsync the folder after it (else a power cut may bring the old
    file back). Raises OSError, the temp removed.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=fs.TEMP_SUFFIX)
    try:
        try:
            if _FCHMOD is not None:
                _FCHMOD(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if flush:
                fs.flush_file(fd)
        finally:
            os.close(fd)
        fs.replace_file(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if flush_dir:
        fs.flush_dir(path.parent)


def replace_state_record(path: Path, data: bytes) -> None:
    """:func:`write_state_file` (0600, flushed with its folder) for the sync records, whose
    callers take StorageError (DiskFullError, PermissionDeniedError), as files.atomic_write
    raised it."""
    try:
        write_state_file(path, data, flush_dir=True)
    except OSError as exc:
        raise fs.map_os_error(exc, "cannot write", path) from exc


def is_state_temp(name: str) -> bool:
    """Whether ``name`` (in state/) is one of our writers' temp names."""
    if not name.startswith("."):
        return False
    prefix, suffix = _LOCALCLOUD_TEMP
    return name.endswith(fs.TEMP_SUFFIX) or (name.startswith(prefix) and name.endswith(suffix))


def sweep_state_temps(state_dir: Path, *, now: float | None = None) -> list[Path]:
    """Remove the stale temps of state/'s writers (see the module doc); the paths removed.

    ``now``: epoch seconds (default: the clock). Never raises OSError: a folder that cannot be
    listed (none yet, a read-only home) sweeps nothing, a temp that cannot be removed is left for
    the next open (logged).
    """
    try:
        names = os.listdir(state_dir)
    except OSError:
        return []
    cutoff = (time.time() if now is None else now) - STALE_TEMP_SECONDS
    removed: list[Path] = []
    for name in sorted(names):
        if not is_state_temp(name):
            continue
        path = Path(state_dir) / name
        try:
            st = os.lstat(path)
        except OSError:  # (renamed into place, or swept by another open, since the listing)
            continue
        # (Change time too: a rename keeps the mtime. A symlink or folder is not ours.)
        if not stat.S_ISREG(st.st_mode) or max(st.st_mtime, st.st_ctime) > cutoff:
            continue
        try:
            fs.unlink_file(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove the stale temp file %s: %s", path, exc)
            continue
        removed.append(path)
    if removed:
        # (Not flushed: a removal a power cut undoes is swept again at the next open.)
        log.info("removed %d stale temp file(s) a killed write left in %s", len(removed), state_dir)
    return removed
