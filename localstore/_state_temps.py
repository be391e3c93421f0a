"""The writes of the home's small ``state/`` files, and the sweep of the temps a killed one left.

The writes there are rare and small, each a temp file renamed over its target
(:func:`write_state_file`, the one writer): ``daemon.json`` (it holds the daemon's control
token), the sync pause, the cloud session's marker, the sync account and base records and the
local cloud stack's state. A process killed (or a power cut) between the write and the rename
left the temp for ever: data/ and the blueprints folder have the reconcile's sweep of stale
temps, ``state/watchers/`` and ``state/merges/`` theirs; nothing looked here. (Older versions
named the temps ``.daemon-*.lstmp``, ``.paused-*``, ``.session-*``, ``.sync-account.json.*``,
``.sync-bases.jsonl.*`` and ``.localcloud-*.tmp``.)

Each write holds its temp: it makes a private folder ``state/.lswrite-<pid>-XXXX/`` with
``_held_temps.make_held_folder`` (its ``.held`` locked by the writer), writes the new file in it,
renames it out over the target and removes the folder, the lock held until then. The sweep
removes a folder whose lock it gets (``_held_temps.remove_if_dead``): its writer is dead, however
recent or however far in the future its times. A writer alive but stopped between its write and
its rename (SIGSTOP, ``docker pause``, a suspended laptop) holds the lock, and its temp stays.
The times decided before: a temp a minute old was taken for a dead writer's, so a writer stopped
that long, or a clock stepped forward, lost its write (its rename failed: ENOENT), and a dead
writer's temp dated in the future (a clock stepped back) was kept until the clock got there.
Wall-clock file times cannot tell a stopped writer from a dead one; its lock can. The lock is on
a file of its own, not on the temp, because Windows cannot rename a file that is open (and its
byte-range lock goes with the handle): the temp is closed before its rename, ``.held`` is not.

The temps of older versions (named as above) have no lock: for them the reconcile's rule for
data/ temps stays, only our own temp names (a dot, then the ``.lstmp`` suffix, or the local
stack's one name), only regular files, and only once ``STALE_TEMP_SECONDS`` old by the later of
their modification and change times. Run at every writable store open (the daemon opens one at
start), where it costs one listing of a folder of a few files.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from pathlib import Path

from localstore import _durable
from localstore import files as fs
from localstore._held_temps import make_held_folder, remove_if_dead
from localstore._reconcile import STALE_TEMP_SECONDS
from localstore.errors import StorageError

log = logging.getLogger(__name__)

# The held folder a write makes its temp in: ".lswrite-<pid>-XXXX" (see the module doc).
WRITE_PREFIX = ".lswrite-"
# An older sync/localcloud/service.py's temp: it predated TEMP_SUFFIX and was named apart.
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
    try:
        held = make_held_folder(path.parent, WRITE_PREFIX)
    except StorageError as exc:  # (OSError is these writers' contract)
        raise OSError(errno.EAGAIN, str(exc), os.fspath(path.parent)) from exc
    try:
        temp = held.path / path.name
        _write_new(temp, data, mode=mode, flush=flush)
        fs.replace_file(temp, path)
    finally:
        held.remove()  # (the temp too, if it was not renamed)
    if flush_dir:
        fs.flush_dir(path.parent)


def _write_new(path: Path, data: bytes, *, mode: int, flush: bool) -> None:
    """Create ``path`` with ``data``, exactly ``mode`` (see write_state_file). Raises OSError."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _durable.O_BINARY | _durable.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        if _FCHMOD is not None:
            _FCHMOD(fd, mode)
        fs.write_all(fd, data)
        if flush:
            fs.flush_file(fd)
    finally:
        # (Closed before its rename: Windows cannot rename an open file.)
        os.close(fd)


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
    """Remove the temps dead writers of state/ left (see the module doc); the paths removed.

    ``now``: epoch seconds (default: the clock), for the unheld temps of older versions only.
    Never raises OSError: a folder that cannot be listed (none yet, a read-only home) sweeps
    nothing, a temp that cannot be removed is left for the next open (logged).
    """
    try:
        names = os.listdir(state_dir)
    except OSError:
        return []
    cutoff = (time.time() if now is None else now) - STALE_TEMP_SECONDS
    removed: list[Path] = []
    for name in sorted(names):
        path = Path(state_dir) / name
        if name.startswith(WRITE_PREFIX):
            gone = _remove_if_writer_dead(path)
        elif is_state_temp(name):
            gone = _remove_if_stale(path, cutoff)
        else:
            continue
        if gone:
            removed.append(path)
    if removed:
        # (Not flushed: a removal a power cut undoes is swept again at the next open.)
        log.info("removed %d temp(s) a killed write left in %s", len(removed), state_dir)
    return removed


def _remove_if_writer_dead(folder: Path) -> bool:
    """Remove a write's held folder if its writer is dead (its lock free); True if removed."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return False  # (a symlink or a file of that name is not ours)
        return remove_if_dead(folder, WRITE_PREFIX)
    except OSError as exc:  # (gone since the listing; a filesystem refusing locks: kept)
        if exc.errno != errno.ENOENT:
            log.warning("cannot tell whether a write still holds %s: %s", folder, exc)
        return False


def _remove_if_stale(path: Path, cutoff: float) -> bool:
    """Remove an older version's temp once older than ``cutoff`` (epoch seconds); True if
    removed."""
    try:
        st = os.lstat(path)
    except OSError:  # (renamed into place, or swept by another open, since the listing)
        return False
    # (Change time too: a rename keeps the mtime. A symlink or folder is not ours.)
    if not stat.S_ISREG(st.st_mode) or max(st.st_mtime, st.st_ctime) > cutoff:
        return False
    try:
        fs.unlink_file(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot remove the stale temp file %s: %s", path, exc)
        return False
    return True
