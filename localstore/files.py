"""Durable atomic file writes, and the file layer's public names.

A write is temp-file-in-the-same-directory, fsync, ``os.replace``, fsync of the directory: a reader sees
the old bytes or the new bytes, never a mix, and after the call returns the new bytes survive power loss.
Temp files carry the ``.lstmp`` suffix so a crash leftover is recognisably ours and safe to remove.
The fsync, rename and free-space calls are the platform's (``_durable``: F_FULLFSYNC on macOS, a
write-through rename retried past sharing violations on Windows); on Linux they are ``os``'s own.

Here: the writes (``PendingWrites``, ``atomic_write``, ``create_file``, ``write_checked``), the
renames that refuse a taken name or swap with a recorded file (``place_new``, ``rename_new``,
``replace_recorded``), setting files aside, folders, and the flushes (``fsync_dir``, ``syncfs``),
with the platform's calls they read (``_os``, ``_EXCHANGE``, ``_RENAME_NEW``: tests patch them
here). The rest lives in private modules and is re-exported (the ``X as X`` imports): path rules
(``_file_paths``), ignore rules and conflict copies (``_ignore_rules``), stats and the walk
(``_file_scan``), reads of regular files (``_file_reads``), the OSError mapping (``_os_errors``).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from contextlib import suppress
from pathlib import Path
from typing import TypeAlias, cast

from localstore._durable import CURRENT as _PLATFORM
from localstore._durable import O_BINARY, calls_for, statvfs_free
from localstore._file_paths import MAX_NAME_BYTES as MAX_NAME_BYTES
from localstore._file_paths import MAX_PATH_CHARS as MAX_PATH_CHARS
from localstore._file_paths import MAX_SEGMENT_BYTES as MAX_SEGMENT_BYTES
from localstore._file_paths import META_SUFFIX as META_SUFFIX
from localstore._file_paths import TEMP_NAME_OVERHEAD as TEMP_NAME_OVERHEAD
from localstore._file_paths import TEMP_SUFFIX as TEMP_SUFFIX
from localstore._file_paths import YAML_SUFFIX as YAML_SUFFIX
from localstore._file_paths import StrPath as StrPath
from localstore._file_paths import _check_segment as _check_segment
from localstore._file_paths import check_new_name as check_new_name
from localstore._file_paths import display_name as display_name
from localstore._file_paths import folder_of as folder_of
from localstore._file_paths import linked_folder as linked_folder
from localstore._file_paths import meta_path_for as meta_path_for
from localstore._file_paths import normalize_path as normalize_path
from localstore._file_paths import path_key as path_key
from localstore._file_paths import path_text as path_text
from localstore._file_paths import printable as printable
from localstore._file_paths import resolve_inside as resolve_inside
from localstore._file_paths import windows_device_name as windows_device_name
from localstore._file_paths import yaml_path_for as yaml_path_for
from localstore._file_reads import NotAFileError as NotAFileError
from localstore._file_reads import kind_of as kind_of
from localstore._file_reads import read_bytes as read_bytes
from localstore._file_reads import read_regular as read_regular
from localstore._file_reads import read_regular_seen as read_regular_seen
from localstore._file_scan import FileStat as FileStat
from localstore._file_scan import Recorded as Recorded
from localstore._file_scan import changed_within as changed_within
from localstore._file_scan import folder_changed_within as folder_changed_within
from localstore._file_scan import ino_key as ino_key
from localstore._file_scan import recorded_of as recorded_of
from localstore._file_scan import stat_unchanged as stat_unchanged
from localstore._file_scan import walk_blueprint_files as walk_blueprint_files
from localstore._ignore_rules import DEFAULT_IGNORE_PATTERNS as DEFAULT_IGNORE_PATTERNS
from localstore._ignore_rules import IGNORE_FILE_NAME as IGNORE_FILE_NAME
from localstore._ignore_rules import IgnoreRules as IgnoreRules
from localstore._ignore_rules import conflict_copy as conflict_copy
from localstore._ignore_rules import conflict_copy_of as conflict_copy_of
from localstore._os_errors import map_os_error as map_os_error
from localstore.errors import (
    KeptChangingError,  # noqa: F401  (re-exported: it was defined here until it joined the tree)
    NameTakenError,
    StorageError,
    TargetChangedError,
)

log = logging.getLogger("localstore.files")


# This platform's fsync/replace/rename, called as _os.fsync(...): on Linux _os is the os module
# itself (the same lookups and calls as before, nothing added per save), on macOS and Windows an
# object holding _durable's versions.
_os = calls_for(_PLATFORM)
# None where os.statvfs exists (the POSIX code below, as before); Windows' free-space call otherwise.
_free_bytes = None if _PLATFORM.free_bytes is statvfs_free else _PLATFORM.free_bytes
_DIR_FSYNC = _PLATFORM.dir_fsync
_NO_HARD_LINKS = _PLATFORM.no_hard_link_errnos
_RENAME_NEW = _PLATFORM.rename_new
_LINUX = sys.platform.startswith("linux")
# The rename that swaps two names (replace_recorded); None where the OS has none (Windows).
_EXCHANGE = _PLATFORM.exchange
# The files a write placed, with the stats of each just after its rename (None: not the
# write's file by then): PendingWrites.placed.
PlacedFiles: TypeAlias = Mapping[str, Recorded | None]
# What the no-replace rename answers where the filesystem does not support the flag (EINVAL:
# NFS, older FUSE; ENOTSUP on macOS), or a kernel before 3.15 or a sandbox's filter (ENOSYS,
# EPERM): the fallbacks of place_new and rename_new take over.
_NO_RENAME_NEW = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP}
)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_BINARY
# (Not on Windows before Python 3.13, where a file's mode is only its read-only flag.)
_FCHMOD = getattr(os, "fchmod", None)


def fsync_dir(directory: Path | str) -> None:
    """Flush a directory entry change (rename, create) to disk."""
    if not _DIR_FSYNC:
        # Windows: a directory cannot be opened with os.open (EACCES, which failed every save)
        # nor flushed; the renames are written through instead (_durable, MOVEFILE_WRITE_THROUGH)
        # and NTFS journals the creation of a folder.
        return
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except OSError as exc:
        raise map_os_error(exc, "cannot open directory", directory) from exc
    try:
        _os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot fsync directories; that is not a lost write.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise map_os_error(exc, "cannot flush directory", directory) from exc
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (os.write may write less than asked). Raises OSError."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def flush_file(fd: int) -> None:
    """Flush an open file's data to stable storage with this platform's call (F_FULLFSYNC on
    macOS). Raises OSError."""
    _os.fsync(fd)


def flush_dir(directory: Path | str) -> None:
    """``fsync_dir`` for callers whose contract is OSError (the daemon's state files). Raises
    OSError."""
    if not _DIR_FSYNC:
        return  # (Windows: see fsync_dir)
    fd = os.open(directory, _DIR_FLAGS)
    try:
        _os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def rename_file(src: Path | str, dst: Path | str) -> None:
    """Rename a file or folder, as ``os.rename``, with this platform's rename (written through and
    retried past another program's hold on Windows). Raises OSError."""
    _os.rename(os.fspath(src), os.fspath(dst))


def replace_file(src: Path | str, dst: Path | str) -> None:
    """Rename a file over another, as ``os.replace``, with this platform's replace (written
    through and retried past another program's hold on Windows). Raises OSError."""
    _os.replace(os.fspath(src), os.fspath(dst))


def unlink_file(path: Path | str) -> None:
    """Remove a file, as ``os.unlink``, retried on Windows while another program (an antivirus,
    the search indexer, an editor) has it open. Raises OSError."""
    _os.unlink(os.fspath(path))


def _unlink_quiet(path: Path | str) -> None:
    # Not retried: only our own temps and files set aside come here, and a leftover is removed
    # as a stale temp later; 1.4 s of retries would stall the save for a cleanup nobody awaits.
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:  # nothing useful to do: a leftover .lstmp is cleaned by reconcile
        pass


# Below this much free space a save keeps each file it replaces (a hard link, no data written)
# until its index commit is done: a failed commit then puts the previous version back with a
# rename. Without it the put-back rewrote that version from history, which needs the very space
# the commit could not find (on a full disk the new version stayed, the index holding the old).
# Above it a failing commit has room to rewrite, and the 2 links + 2 unlinks (about 50 us)
# stay off the save path; the check costs one statvfs (about 4 us) a batch (GetDiskFreeSpaceExW on
# Windows, which has no statvfs: the AttributeError failed every save there).
LOW_SPACE_BYTES = 256 * 1024 * 1024
# Names of files set aside (a delete's pair, a replaced file kept above): not the target's
# name, so reconcile's recovery of a save's meta temp (".<meta name>.<hex>.lstmp") never
# takes one for a save's; a crash leftover is a temp like any other, removed when stale.
ASIDE_PREFIX = ".lsaside-"


def space_is_low(folder: Path | str) -> bool:
    """True if the filesystem of ``folder`` has less than LOW_SPACE_BYTES free (or is unknown)."""
    try:
        if _free_bytes is not None:
            return _free_bytes(os.fspath(folder)) < LOW_SPACE_BYTES
        if sys.platform == "win32":  # (unreached: Windows always has _free_bytes)
            return True
        st = os.statvfs(folder)
        return st.f_bavail * st.f_frsize < LOW_SPACE_BYTES
    except OSError:
        return True  # (cannot tell: take the safe path)


def aside_name(target: str) -> str:
    """A fresh name in ``target``'s folder for setting it aside, holding the time it was made.

    The time is in the name because the file's own times cannot tell: the rename keeps its
    mtime, and on Windows its "change time" is the creation time, which neither a rename nor a
    hard link sets. Aged by those alone, a file set aside was stale at once (``aside_made_ns``).
    """
    folder = os.path.dirname(target)
    made = f"{time.time_ns():x}-{secrets.token_hex(4)}"
    return os.path.join(folder, f"{ASIDE_PREFIX}{made}{TEMP_SUFFIX}")


_ASIDE_MADE = re.compile(
    re.escape(ASIDE_PREFIX) + r"([0-9a-f]{1,16})-[0-9a-f]+" + re.escape(TEMP_SUFFIX) + "$"
)


def aside_made_ns(name: str) -> int:
    """When a file named by ``aside_name`` was set aside (ns since the epoch); 0 for any other
    name (an older version's aside names held no time)."""
    match = _ASIDE_MADE.search(name)
    return int(match[1], 16) if match else 0


def set_aside(target: str) -> str | None:
    """Rename ``target`` to a fresh temp name beside it (no space needed); None if missing.

    Raises StorageError.
    """
    aside = aside_name(target)
    try:
        _os.rename(target, aside)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise map_os_error(exc, "cannot remove", target) from exc
    return aside


def put_back(aside: str, target: str) -> None:
    """Rename a file set aside (or kept) back over ``target``. Raises OSError."""
    _os.replace(aside, target)


def discard(aside: str) -> None:
    """Remove a file set aside or kept, once it is no longer needed (a leftover is a stale temp)."""
    _unlink_quiet(aside)


def atomic_write_many(items: Sequence[tuple[Path, bytes]], *, mode: int = 0o644) -> None:
    """Durably replace several files: every temp is flushed before the first rename.

    Raises StorageError (DiskFullError, PermissionDeniedError); on error before the renames no target
    changed.
    """
    pending = PendingWrites(expected_files=len(items), mode=mode)
    try:
        for target, data in items:
            pending.add(target, data)
    except StorageError:
        pending.abort()
        raise
    pending.commit()


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux") or _kernel_version() < (5, 8):
        # Before Linux 5.8 syncfs() returned 0 even when writing a file back failed (EIO, ENOSPC
        # on thin storage): a batch would rename temps whose data never reached the disk and
        # acknowledge them. Those kernels get an fsync per file, which does report the error.
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return cast(Callable[[int], int], fn)


def _kernel_version() -> tuple[int, int]:
    """The running kernel's (major, minor); (0, 0) if the release string cannot be read."""
    if sys.platform == "win32":  # (no uname; asked on Linux only)
        return (0, 0)
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(match[1]), int(match[2])) if match else (0, 0)


_SYNCFS = _load_syncfs()


def syncfs(directory: Path | str) -> None:
    """Flush every dirty page of the filesystem holding ``directory`` (Linux), one call for a batch."""
    global _SYNCFS
    fd = os.open(directory, _DIR_FLAGS)
    try:
        if _SYNCFS is None or _SYNCFS(fd) != 0:
            err = ctypes.get_errno() if _SYNCFS is not None else errno.ENOSYS
            if err in _SYNCFS_REFUSED and _SYNCFS is not None:
                # A sandbox's seccomp filter (Flatpak/Snap profiles, gVisor, some containers)
                # refuses the call itself: nothing was flushed, and it would refuse every batch.
                # This process uses an fsync per file from now on (PendingWrites falls back).
                log.warning(
                    "syncfs() is not allowed here (%s): flushing file by file", os.strerror(err)
                )
                _SYNCFS = None
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


# What a seccomp filter answers for a system call it does not allow (ENOSYS: "not implemented",
# the default of most profiles; EPERM). Never an I/O error: those are the disk's answer.
_SYNCFS_REFUSED = frozenset({errno.ENOSYS, errno.EPERM})


# At or above this many files, one syncfs beats an fsync per file (measured: ~0.4 vs ~1 ms a file).
SYNCFS_MIN_FILES = 16


class PendingWrites:
    """Durable replacement of many files with few flushes.

    ``add`` writes a temp file next to its target; ``commit`` makes every temp durable (an fsync each
    for small batches, one ``syncfs`` for large ones on Linux), renames them over their targets in
    order, and fsyncs each directory once. ``abort`` removes the temps. Until ``commit`` returns no
    target has changed unless a rename already happened (the caller undoes those from history).

    With ``keep_previous`` each replaced target is first hard-linked to a name of its own
    (``kept``, in replacement order): ``restore_previous`` renames them back (newest first),
    ``discard_previous`` removes them. Neither writes any data, so both work on a full disk.

    A target added as ``new`` (the caller found nothing at its name) is placed with
    ``place_new``, never renamed over: if another program created the name meanwhile,
    ``commit`` stops there and raises NameTakenError, that file left as it is. A target added
    with ``recorded`` (the stats the index has of the file the caller checked there) is
    replaced with ``replace_recorded``: if another program saved over it meanwhile, ``commit``
    stops there and raises TargetChangedError, that program's file put back.
    """

    def __init__(
        self,
        *,
        expected_files: int = 2,
        mode: int = 0o644,
        flusher: Executor | None = None,
        keep_previous: bool = False,
    ) -> None:
        self._batch = expected_files >= SYNCFS_MIN_FILES and _SYNCFS is not None
        self._mode = mode
        self._temps: list[tuple[str, str]] = []
        self._keep_previous = keep_previous
        self._keep_targets: set[str] = set()  # (see keep_before_replacing)
        self.kept: list[tuple[str, str]] = []  # (kept copy, target)
        # With a flusher, each temp's fsync runs on its thread while the caller goes on (the
        # store's index statements); commit() waits for them before the first rename. (A batch
        # writing its temps on the flusher thread too was measured and dropped: the GIL hand-offs
        # between the two threads cost more main-thread time than the file writes they moved.)
        self._flusher = None if self._batch else flusher
        self._flushes: list[tuple[Future[None], str]] = []
        self._unflushed: list[tuple[int, str]] = []
        # Each temp's inode, and each target's change time once its temp is renamed into place
        # (None: the file there is no longer ours). The rename sets the change time, so the
        # temp's own stat (add's result) would never match the placed file: every open would
        # then read every file again. ``take_placed`` hands them to the caller.
        self._inodes: dict[str, int] = {}
        self._placed: dict[str, int | None] = {}
        # The temps whose target is new (placed with place_new), and every target placed by
        # this object: an undo removes a new file only if it is one of these (not a file that
        # another program put at the name).
        self._create: set[str] = set()
        # Each target placed, with the stats of the file placed there (None: already not ours
        # when looked at just after the rename): the undo of a failed write puts back or
        # removes only that file (see restore_previous, remove_placed, write_checked), not a
        # save another program (an editor) made over it since.
        self.placed: dict[str, Recorded | None] = {}
        # Files an undo took off a target or could not put back (aside name, target): another
        # program's save, or a kept version that program's save now stands over. The caller
        # keeps those no revision holds (keep_set_aside), as for TargetChangedError.
        self.to_keep: list[tuple[str, str]] = []
        # The temps that replace a recorded file: (what the index recorded of it, the temp's
        # own inode, size and mtime), for replace_recorded.
        self._recorded: dict[str, tuple[Recorded, tuple[int, int, int]]] = {}
        # The flusher's job that lets go of what commit() replaced (see _release and settle).
        self._letting_go: Future[None] | None = None
        # The random part of the temps' names, drawn for the expected files at once: a
        # getrandom() per temp (secrets.token_hex) was ~1.5 % of a download's CPU time. The same
        # source (os.urandom) and the same 8 hex digits a name; drawn again when used up.
        self._tokens = ""
        self._token_at = 0
        self._token_count = min(max(expected_files, 2), 512)

    def __len__(self) -> int:
        return len(self._temps)

    def add(
        self,
        target: Path | str,
        data: bytes,
        *,
        new: bool = False,
        recorded: Recorded | None = None,
    ) -> os.stat_result:
        """Write ``data`` to a temp file beside ``target``; returns the stat it will have (but
        for its change time, which the rename sets: see ``take_placed``). ``new``: the caller
        knows nothing is at ``target``: the default mode then, without looking, and ``commit``
        will not replace a file another program puts there meanwhile (see the class).
        ``recorded``: the caller found the file the index recorded at ``target`` (its size,
        mtime, change time and inode), and ``commit`` replaces only that file."""
        target = os.fspath(target)  # strings inside: pathlib cost more than the write itself
        folder, name = os.path.split(target)
        tmp = os.path.join(folder, f".{name}.{self._token()}{TEMP_SUFFIX}")
        try:
            fd = os.open(tmp, _CREATE_FLAGS, self._mode)
        except OSError as exc:
            raise map_os_error(exc, "cannot create", tmp) from exc
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            st = os.fstat(fd)
            if _FCHMOD is not None and not new:
                # The replaced file's permissions, as editors keep them: a blueprint its owner
                # made private (chmod 600) was readable by everyone again after its next save,
                # sync or restore (the new file got the default mode).
                try:
                    kept_mode = os.lstat(target).st_mode & 0o777
                except OSError:
                    kept_mode = None  # (a new file: the default mode)
                if kept_mode is not None and kept_mode != st.st_mode & 0o777:
                    _FCHMOD(fd, kept_mode)
                    st = os.fstat(fd)
            if not self._batch and self._flusher is None:
                _os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            _unlink_quiet(tmp)
            raise map_os_error(exc, "cannot write", target) from exc
        self._temps.append((tmp, target))
        self._inodes[tmp] = st.st_ino
        if new:
            self._create.add(tmp)
        elif recorded is not None:
            self._recorded[tmp] = (recorded, (st.st_ino, st.st_size, st.st_mtime_ns))
        if self._flusher is not None:
            self._unflushed.append((fd, target))  # start_flush() or commit() hands it over
            return st
        os.close(fd)
        return st

    def _token(self) -> str:
        """8 random hex digits for a temp's name (``secrets.token_hex(4)``, drawn in bulk)."""
        at = self._token_at
        if at >= len(self._tokens):
            self._tokens, at = os.urandom(4 * self._token_count).hex(), 0
        self._token_at = at + 8
        return self._tokens[at : at + 8]

    def start_flush(self) -> None:
        """Hand every temp written so far to the flusher; returns at once.

        Call it after the last ``add`` of a group: a file created while another's fsync runs waits
        for that journal commit (ext4), so writing both files first and then flushing is faster.
        """
        while self._unflushed:
            fd, target = self._unflushed.pop(0)
            try:
                assert self._flusher is not None
                self._flushes.append((self._flusher.submit(_fsync_and_close, fd), target))
            except RuntimeError:  # the flusher is shut down (its owner is closing): flush here
                self._flushes.append((_flushed_here(fd), target))

    def _await_flushes(self) -> tuple[OSError, str] | None:
        """Wait for every background fsync (each closes its fd); the first failure, if any."""
        self.start_flush()
        failure: tuple[OSError, str] | None = None
        flushes, self._flushes = self._flushes, []
        for future, target in flushes:
            try:
                future.result()
            except OSError as exc:
                failure = failure or (exc, target)
        return failure

    def commit(self) -> None:
        """Flush, rename every temp over its target, fsync the directories. Raises StorageError."""
        if not self._temps:
            return
        failure = self._await_flushes()
        if failure is not None:
            self.abort()
            raise map_os_error(failure[0], "cannot write", failure[1]) from failure[0]
        if self._batch:
            folder = os.path.dirname(self._temps[0][1])
            try:
                # One flush per filesystem: a folder of the tree may be a mount point, and syncfs
                # flushes only the filesystem of the folder it is given.
                for folder in _one_per_filesystem(os.path.dirname(t) for _, t in self._temps):
                    syncfs(folder)
            except OSError as exc:
                if exc.errno not in _SYNCFS_REFUSED:
                    self.abort()
                    raise map_os_error(exc, "cannot flush", folder) from exc
                self._batch = False  # refused by a sandbox: flush each temp instead
                failure = self._fsync_temps()
                if failure is not None:
                    self.abort()
                    raise map_os_error(failure[0], "cannot write", failure[1]) from failure[0]
        dirs: dict[str, None] = {}
        # The files these renames replace, held open until the flusher closes them (see _hold),
        # and the recorded files swapped out to a temp's name, which it unlinks (see
        # replace_recorded: off the caller's way, as a held file's freeing).
        held: list[int] = []
        swapped: list[str] = []
        try:
            self._replace_all(dirs, held, swapped)
            self._flush_dirs(dirs)
        finally:
            if held or swapped:
                self._release(held, swapped)

    def _replace_all(self, dirs: dict[str, None], held: list[int], swapped: list[str]) -> None:
        """Rename every temp over its target (in order), noting each target's folder."""
        # (A few files only: held all at once, a big batch could take the descriptors the
        # process has left. Where syncfs works, such batches have no flusher anyway.)
        hold = self._flusher is not None and len(self._temps) < SYNCFS_MIN_FILES
        recorded = self._recorded
        for i, (tmp, target) in enumerate(self._temps):
            kept = len(self.kept)
            try:
                if tmp in self._create:
                    # (Nothing to keep or hold: the name was free when the caller looked.)
                    taken = not place_new(tmp, target)
                else:
                    taken = False
                    keep = self._keep_previous or target in self._keep_targets
                    expected = recorded.get(tmp)
                    if expected is not None:
                        # (Nothing to hold: the recorded file the swap brings out is unlinked on
                        # the flusher thread, which frees it there.)
                        replace_recorded(
                            tmp,
                            target,
                            *expected,
                            before=functools.partial(self._keep, target) if keep else None,
                            swapped_out=swapped if hold else None,
                        )
                    else:
                        if keep:
                            self._keep(target)
                        elif hold:
                            _hold(target, held)
                        _os.replace(tmp, target)
            except TargetChangedError as changed:
                self._changed(changed, kept)
                # (A file of that program's left at the temp's name is the store's to keep.)
                self._drop_from(i, spare=changed.set_aside)
                raise
            except OSError as exc:
                self._drop_from(i)
                raise map_os_error(exc, "cannot replace", target) from exc
            if taken:
                self._drop_from(i)
                raise NameTakenError(target)
            now = _placed_stat(target, self._inodes.pop(tmp, None))
            self._placed[target] = None if now is None else now[2]
            self.placed[target] = now
            dirs[os.path.dirname(target)] = None
        self._temps = []
        self._create.clear()
        recorded.clear()

    def _drop_from(self, i: int, spare: Sequence[str] = ()) -> None:
        """Remove the temps from the ``i``-th on (a failed placing: none of them is placed),
        but for those in ``spare``."""
        for later_tmp, _ in self._temps[i:]:
            if later_tmp not in spare:
                _unlink_quiet(later_tmp)
        self._temps = []
        self._create.clear()
        self._recorded.clear()

    def _changed(self, changed: TargetChangedError, kept: int) -> None:
        """A target changed under the commit (its other program's file is back in place): the
        copy ``_keep`` made of it just before is not put back over that file by
        ``restore_previous``. It is the recorded version, or the same file that is back: the
        former goes with the set-aside files (the store keeps it if no revision holds it: an
        edit recorded only in the rolled-back transaction), the latter is only a spare."""
        if len(self.kept) == kept:
            return
        aside, target = self.kept.pop()
        try:
            spare = os.path.samestat(os.lstat(aside), os.lstat(target))
        except OSError:
            spare = False
        if spare:
            discard(aside)
        else:
            changed.set_aside.append(aside)

    def _release(self, held: list[int], swapped: list[str]) -> None:
        """Close the held replaced files and unlink the swapped-out ones on the flusher thread
        (here if it is shut down)."""
        try:
            assert self._flusher is not None
            self._letting_go = self._flusher.submit(_let_go, held, swapped)
        except RuntimeError:  # (the store is closing: its flusher takes no more work)
            _let_go(held, swapped)

    def settle(self) -> None:
        """Wait for the flusher to let go of what commit() replaced: the recorded files swapped
        out to a temp's name are unlinked when this returns.

        The caller calls it once its index commit is over (the unlink runs beside that commit,
        off the save's way): a save that returned, or failed, with its swapped-out files still
        in the folder under a temp's name showed them to whoever looked next (a backup, ``ls
        -a``, a test comparing the folder with the one before a failed save), until the
        flusher got to them; under load that took milliseconds."""
        letting_go, self._letting_go = self._letting_go, None
        if letting_go is not None:
            letting_go.result()  # (_let_go raises nothing: each unlink and close is quiet)

    def _flush_dirs(self, dirs: dict[str, None]) -> None:
        """Make the renames durable: each folder fsynced, or one syncfs for a spread batch."""
        if self._batch and len(dirs) > 1:
            # The renames are durable once their directories are flushed. A batch spread over
            # many folders (a download's 500 blueprints in 50 folders) paid one directory fsync
            # per folder, each a separate wait for the disk; one syncfs per filesystem writes
            # every directory back at once (measured in docs/benchmarks.md, sync download).
            try:
                for folder in _one_per_filesystem(dirs):
                    syncfs(folder)
                return
            except OSError as exc:
                if exc.errno not in _SYNCFS_REFUSED:
                    raise map_os_error(exc, "cannot flush", next(iter(dirs))) from exc
        for d in dirs:
            fsync_dir(d)

    def take_placed(self) -> dict[str, int | None]:
        """The change time of each target renamed into place since the last call (None: the
        file at the target was replaced by someone else at once; it is then read again)."""
        placed, self._placed = self._placed, {}
        return placed

    def keep_before_replacing(self, target: str) -> None:
        """Keep ``target`` (as ``keep_previous`` does) when a temp replaces it: the caller's
        transaction holds its only record (an edit recorded in it), so a kill before the
        commit would leave its bytes nowhere but in the kept file (which reconcile keeps)."""
        self._keep_targets.add(target)

    def _keep(self, target: str) -> None:
        kept = aside_name(target)
        try:
            os.link(target, kept, follow_symlinks=False)
        except FileNotFoundError:
            return  # a new file: nothing to keep
        except OSError as exc:
            if exc.errno in _NO_HARD_LINKS:
                return  # no hard links here (FAT, some network shares): undone from history
            raise
        self.kept.append((kept, target))

    def restore_previous(self) -> list[str]:
        """Put every kept file back over its target, newest first; the targets that failed."""
        failed = []
        kept, self.kept = self.kept, []
        for aside, target in reversed(kept):
            try:
                self._put_back_kept(aside, target)
            except OSError:
                failed.append(target)
                discard(aside)
        return failed

    def restore_latest(self, target: str) -> None:
        """Put back the newest kept file of ``target`` (if any); a failure is logged."""
        for i in range(len(self.kept) - 1, -1, -1):
            aside, kept_target = self.kept[i]
            if kept_target == target:
                del self.kept[i]
                try:
                    self._put_back_kept(aside, target)
                except OSError as exc:
                    log.warning("could not put back %s: %s", target, exc)
                    discard(aside)
                return

    def _put_back_kept(self, aside: str, target: str) -> None:
        """Put the kept file ``aside`` back over ``target`` if the file there is still the one
        this object placed. Raises OSError.

        An editor's save over that file after the rename (the index commit that failed, or a
        sync page's later statements, ran in between) was replaced by ``put_back`` and lost,
        in no revision. Swapped in as a save swaps (replace_recorded): that save stays at its
        name (reconcile records it), and the kept version goes to ``to_keep`` (it may be an
        edit only the rolled-back transaction recorded). A target this object never placed
        holds what it held: nothing goes back over it."""
        placed = self.placed.get(target)
        if placed is None:
            try:
                same = os.path.samestat(os.lstat(aside), os.lstat(target))
            except OSError:
                same = False
            if same:
                discard(aside)
            else:
                self.to_keep.append((aside, target))
            return
        st = os.lstat(aside)
        try:
            replace_recorded(aside, target, placed, (st.st_ino, st.st_size, st.st_mtime_ns))
        except TargetChangedError as changed:
            self.to_keep.extend((kept, target) for kept in changed.set_aside)
            self.to_keep.append((aside, target))
            return
        # (What is at the name now is that kept file: a later undo of it compares with this.)
        self.placed[target] = _placed_stat(target, st.st_ino)

    def discard_previous(self) -> None:
        """Remove the kept files (the change they could undo is committed)."""
        kept, self.kept = self.kept, []
        for aside, _ in kept:
            discard(aside)

    def _fsync_temps(self) -> tuple[OSError, str] | None:
        """An fsync of every temp (a batch whose syncfs a sandbox refused); the first failure."""
        for tmp, target in self._temps:
            try:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    _os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                return exc, target
        return None

    def abort(self) -> None:
        """Remove every temp file not yet renamed."""
        self._await_flushes()
        for tmp, _ in self._temps:
            _unlink_quiet(tmp)
        self._temps = []
        self._inodes.clear()
        self._create.clear()
        self._recorded.clear()


def _placed_stat(target: str, inode: int | None) -> Recorded | None:
    """The stats of the file at ``target`` if it is still the temp with ``inode``."""
    try:
        st = os.lstat(target)
    except OSError:
        return None
    return recorded_of(st) if st.st_ino == inode else None


def _one_per_filesystem(folders: Iterable[str]) -> list[str]:
    """One folder of each filesystem among ``folders`` (in first-seen order). Raises OSError."""
    by_device: dict[int, str] = {}
    for folder in dict.fromkeys(folders):
        by_device.setdefault(os.stat(folder).st_dev, folder)
    return list(by_device.values())


def _flushed_here(fd: int) -> Future[None]:
    done: Future[None] = Future()
    try:
        _fsync_and_close(fd)
        done.set_result(None)
    except OSError as exc:
        done.set_exception(exc)
    return done


# Linux: a descriptor that pins a file without opening it for reading (no permission needed).
_O_HOLD = getattr(os, "O_PATH", None)


def _hold(target: str, held: list[int]) -> None:
    """Keep the file a rename is about to replace open, so the rename does not free it.

    Renaming over a file whose last link that is frees its inode and blocks inside the rename,
    on the caller's way to the acknowledgement: 80-90 us of the ~95 us such a rename took on
    the benchmark VM (ext4), 8-10 us with the old file held open (bench/bench_rename_hold.py).
    Held, the file is freed when the flusher thread closes it, beside the index commit. Linux
    only (``O_PATH``); elsewhere, or when it cannot be opened (a new file), nothing is held.
    """
    if sys.platform == "win32" or _O_HOLD is None:
        return
    try:
        held.append(os.open(target, _O_HOLD | os.O_NOFOLLOW | os.O_CLOEXEC))
    except OSError:
        pass  # (nothing there yet, or not ours to pin: the rename frees it as before)


def _let_go(fds: list[int], paths: list[str]) -> None:
    for path in paths:
        _unlink_quiet(path)
    _close_all(fds)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:  # (EINTR and the like: the descriptor is released anyway on Linux)
            pass


def _fsync_and_close(fd: int) -> None:
    try:
        _os.fsync(fd)
    finally:
        os.close(fd)


def write_checked(path: Path | str, data: bytes, seen: Recorded | None) -> None:
    """Durably write ``data`` to ``path`` only if the file there is still the one ``seen``
    describes (``recorded_of`` of it when the caller read it; None: there was none).

    For the rare writers that rewrite a blueprint file they read (reconcile making a meta
    file whole again, a new id given to a meta, an undo putting back a version): an editor's
    save between that read and ``atomic_write``'s rename was replaced, in no revision. Here
    the file is swapped in and checked (replace_recorded), or placed as a new name
    (place_new). Raises TargetChangedError (a NameTakenError) if that file changed, the
    other program's file left at the name (its ``set_aside``: versions to keep);
    NameTakenError if a name found free was taken; StorageError.
    """
    pending = PendingWrites(expected_files=1)
    try:
        pending.add(path, data, new=seen is None, recorded=seen)
    except StorageError:
        pending.abort()
        raise
    pending.commit()


def remove_placed(target: str, placed: Recorded | None) -> str | None:
    """Remove the file a failed write placed at ``target``, unless another program saved over
    it since; the name of such a file this had to take off ``target`` and could not put back
    (the caller keeps it), else None. Raises OSError.

    ``unlink`` of the name removed whatever was there: an editor's save made after the write's
    rename, lost. The file is renamed aside first, then judged by its stats (``placed``: the
    file the write placed, see PendingWrites.placed); another program's goes back as a new
    name (place_new), or stays aside if that program made the name again meanwhile."""
    if placed is None:
        return None  # (not ours already when the write looked after its rename)
    aside = aside_name(target)
    try:
        _os.rename(target, aside)
    except FileNotFoundError:
        return None
    st = os.lstat(aside)
    if _same_but_ctime(st, placed):
        _unlink_quiet(aside)
        return None
    return None if place_new(aside, target) else aside


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Durably replace one file (temp, fsync, rename, fsync dir)."""
    atomic_write_many([(path, data)], mode=mode)


def create_file(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
    """Durably create ``path`` unless a file of that name exists: False then, changing nothing.

    The temp is placed with ``place_new`` (which fails if the name is taken) instead of renamed
    over it: reconcile writing a meta for a YAML that had none must not replace the pair's own
    meta, landing between the read that found none and the write (a tool writing the pair file
    by file); the rename replaced it and its id was lost. Raises StorageError.
    """
    target = os.fspath(path)
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        fd = os.open(tmp, _CREATE_FLAGS, mode)
    except OSError as exc:
        raise map_os_error(exc, "cannot create", tmp) from exc
    try:
        try:
            write_all(fd, data)
        finally:
            _fsync_and_close(fd)
        if not place_new(tmp, target):
            return False
    except OSError as exc:
        raise map_os_error(exc, "cannot write", target) from exc
    finally:
        _unlink_quiet(tmp)
    fsync_dir(folder)
    return True


def replace_recorded(
    tmp: str,
    target: str,
    recorded: Recorded,
    mine: tuple[int, int, int],
    *,
    before: Callable[[], object] | None = None,
    swapped_out: list[str] | None = None,
) -> None:
    """Rename the temp file ``tmp`` over ``target`` if ``target`` is the file the index recorded;
    else raise TargetChangedError, ``target`` holding the other program's file. Raises OSError.

    The caller checked ``target`` against ``recorded`` when it reached the item, but places its
    files later (a batch of 500: a second or more): an editor's save in between, renamed in or
    written in place, was replaced by ``os.replace`` and lost, in no revision. Here the temp is
    swapped in (``_EXCHANGE``, one call like the rename): its name then holds exactly the file
    that was at ``target`` at that instant. The recorded one (its inode, size and mtime; not
    its change time, which the swap itself sets) is unlinked. Another one is swapped back if the
    name still holds ours (``mine``: the temp's inode, size and mtime): if that program saved
    yet again between the two swaps, its newest version stays at the name, and the earlier one
    (at the temp's name) is set aside for the store to keep; one it saves just after that check
    is the file the second swap brings out instead, set aside the same way.
    A target that is gone is placed as a new name (place_new). Without the swap (Windows, a
    filesystem that refuses the flag) ``target`` is checked by the full rule of
    stat_unchanged just before ``os.replace``: a window of microseconds instead of the batch's.
    ``before`` runs just before the file is replaced (PendingWrites keeps it then): after the
    check, as a hard link of the file sets its change time. ``swapped_out``: where to note the
    recorded file's new name instead of unlinking it here (PendingWrites has its flusher
    thread unlink it, off the caller's way: that unlink frees the file, 5 us of a save's two).
    """
    exchange = _EXCHANGE
    ran_before = False
    if exchange is not None:
        try:
            if before is not None:
                before()
                before, ran_before = None, True
            exchange(tmp, target)
        except FileNotFoundError:
            return _place_anew(tmp, target)
        except OSError as exc:
            if exc.errno not in _NO_RENAME_NEW:
                raise
        else:
            return _settle_swap(exchange, tmp, target, recorded, mine, swapped_out)
    return _replace_checked(tmp, target, recorded, before=before, ran_before=ran_before)


def _settle_swap(
    exchange: Callable[[str, str], None],
    tmp: str,
    target: str,
    recorded: Recorded,
    mine: tuple[int, int, int],
    swapped_out: list[str] | None,
) -> None:
    """After replace_recorded's swap: let go of the recorded file, now at the temp's name; raise
    TargetChangedError when it was another file, swapped back (see _swap_back)."""
    try:
        st = os.lstat(tmp)
    except FileNotFoundError:
        return  # (nothing was there after all: a name no one else knows)
    if _same_but_ctime(st, recorded):
        # (Quietly: our file is in place. A leftover holds a recorded version, which
        # reconcile removes as a stale temp.)
        if swapped_out is None:
            _unlink_quiet(tmp)
        else:
            swapped_out.append(tmp)
        return
    raise TargetChangedError(target, _swap_back(exchange, tmp, target, mine))


def _replace_checked(
    tmp: str,
    target: str,
    recorded: Recorded,
    *,
    before: Callable[[], object] | None,
    ran_before: bool,
) -> None:
    """replace_recorded without the swap: check ``target`` against ``recorded`` just before
    ``os.replace`` (a target that is gone is placed as a new name)."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return _place_anew(tmp, target)
    # (Where the filesystem refused the swap after ``before`` ran, the hard link that keeps the
    # file set its change time: the other three decide then.)
    if not (_same_but_ctime(st, recorded) if ran_before else stat_unchanged(st, *recorded)):
        raise TargetChangedError(target)
    if before is not None:
        before()
    _os.replace(tmp, target)


def _same_but_ctime(st: os.stat_result, recorded: Recorded) -> bool:
    """stat_unchanged but for the change time, which a swap (or a hard link) sets."""
    size, mtime_ns, ctime_ns, ino = recorded
    return (
        ctime_ns is not None
        and st.st_size == size
        and st.st_mtime_ns == mtime_ns
        and (not ino or not st.st_ino or ino_key(st.st_ino) == ino)
    )


def swapped_out(src: str, dest: str) -> bool:
    """Whether a rename of ``src`` to ``dest`` is the second half of replace_recorded's swap: the
    replaced file moved to the save's temp name (``.<name>.<8 hex digits>.lstmp`` beside it).
    The file at ``src`` did not go away (the new version took its place in the same step),
    which a watcher must not take for a delete (it waited out its delete grace)."""
    folder, name = os.path.split(src)
    dest_folder, temp = os.path.split(dest)
    body = temp[len(name) + 1 : -len(TEMP_SUFFIX)]
    return (
        folder == dest_folder
        and temp.startswith(name, 1)
        and temp.startswith(".")
        and temp.endswith(TEMP_SUFFIX)
        and len(body) == 9
        and body[0] == "."
        and all(c in "0123456789abcdef" for c in body[1:])
    )


def _place_anew(tmp: str, target: str) -> None:
    """The recorded file was gone from ``target`` (an editor deleting it, or mid-save): placed
    as a new name, never over a file that program puts there meanwhile."""
    if not place_new(tmp, target):
        raise TargetChangedError(target)


def _swap_back(
    exchange: Callable[[str, str], None], tmp: str, target: str, mine: tuple[int, int, int]
) -> list[str]:
    """Put back the file a swap took off ``target`` (now at ``tmp``), which is not the one the
    index recorded, unless that program saved again meanwhile; the files of that program's this
    had to set aside (see replace_recorded)."""
    set_aside: list[str] = []
    if not _still_ours(target, mine):
        # It saved again between the two swaps (renamed over our file, or written into it): the
        # name holds its newest version, which the store records as any unrecorded edit. The
        # swap back put its older one there instead, and took the newest off to be kept
        # aside; now the older, at the temp's name, is the one set aside (and kept).
        set_aside.append(_set_aside(tmp, target))
        with suppress(OSError, StorageError):
            fsync_dir(os.path.dirname(target))  # (as below)
        return set_aside
    try:
        exchange(tmp, target)
    except FileNotFoundError:
        # That program moved or removed ``target`` (our file) meanwhile: its earlier file goes
        # back to the name, unless that program has made the name again.
        try:
            placed = place_new(tmp, target)
        except OSError:
            placed = False
        if not placed:
            set_aside.append(_set_aside(tmp, target))
    except OSError:
        # (The second swap failed where the first worked: an I/O error. That program's file
        # is kept all the same; ours stays at the name, which the store then records.)
        set_aside.append(_set_aside(tmp, target))
    else:
        try:
            st = os.lstat(tmp)
            ours = (st.st_ino, st.st_size, st.st_mtime_ns) == mine
        except FileNotFoundError:
            ours = True  # (gone: nothing to keep)
        if ours:
            _unlink_quiet(tmp)
        else:
            # It saved again between the two swaps (renamed in: another file; written in
            # place: ours, changed). The file back at ``target`` is a version of its, and so
            # is this one: neither is lost.
            set_aside.append(_set_aside(tmp, target))
    with suppress(OSError, StorageError):
        # (Best effort: that program's own rename was not flushed either, and the write's
        # error, with the files to keep, must reach the store.)
        fsync_dir(os.path.dirname(target))
    return set_aside


def _still_ours(target: str, mine: tuple[int, int, int]) -> bool:
    """Whether ``target`` is still the file replace_recorded swapped in (``mine``: its inode,
    size and mtime; a name in the same folder, so the same device), or cannot be looked at:
    the swap back then meets what is wrong (gone, an I/O error) and keeps every file, see
    _swap_back."""
    try:
        st = os.lstat(target)
    except OSError:
        return True
    return (st.st_ino, st.st_size, st.st_mtime_ns) == mine


def _set_aside(tmp: str, target: str) -> str:
    """Move another program's file from our temp's name to an aside name of ``target``'s (which
    reconcile keeps, if a kill comes before the store does); where it is now."""
    aside = aside_name(target)
    try:
        if rename_new(tmp, aside):
            return aside
    except OSError:
        pass
    return tmp  # (left at the temp's name, which reconcile keeps too: see clear_stale_temp)


def _rename_new_native(src: str, dst: str) -> bool | None:
    """The platform's rename that refuses a taken name: True if renamed, False if ``dst`` is
    taken, None if this OS or filesystem has none (or a sandbox refuses it)."""
    if _RENAME_NEW is None:
        return None
    try:
        _RENAME_NEW(src, dst)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno in _NO_RENAME_NEW:
            return None
        raise
    return True


def rename_new(src: Path | str, dst: Path | str) -> bool:
    """Rename ``src`` to ``dst`` unless something has that name: False then, nothing changed.

    A name that is ``src``'s own (a case-only rename on a case-insensitive filesystem, where
    the no-replace rename finds it taken) is renamed. Without a no-replace rename the name is
    checked just before the rename (a far smaller window than the caller's look). Raises
    OSError.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    done = _rename_new_native(src, dst)
    if done is None:
        if os.path.lexists(dst) and not _same_file(src, dst):
            return False
        _os.rename(src, dst)
        return True
    if not done and _same_file(src, dst):
        _os.rename(src, dst)
        return True
    return done


def rename_case(src: Path | str, dst: Path | str) -> None:
    """Rename ``src`` to ``dst``, a name differing from it only by letter case (one file or
    folder on a case-insensitive disk), and flush the folder.

    One rename where the file system takes it (APFS, NTFS, ext4). A file system that answers a
    case-only rename with success and no change (some FAT drivers and network shares) gets it
    in two steps, through a temporary name beside it: a name that is no temp or hidden name,
    so a crash between the steps leaves the folder where reconcile records a move, not where it
    looks away. Raises OSError.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    folder, name = os.path.split(dst)
    rename_file(src, dst)
    if name not in os.listdir(folder):
        step = os.path.join(folder, f"{name}-case-{secrets.token_hex(4)}")
        rename_file(src, step)
        rename_file(step, dst)
    fsync_dir(folder)


def same_file(a: Path | str, b: Path | str) -> bool:
    """Whether two names are one file or folder (as both spellings of a name on a
    case-insensitive disk); False if either is missing."""
    return _same_file(os.fspath(a), os.fspath(b))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samestat(os.lstat(a), os.lstat(b))
    except OSError:
        return False


def place_new(tmp: str, target: str) -> bool:
    """Move the temp file ``tmp`` to ``target`` unless something has that name: False then
    (``tmp`` stays, the caller removes it).

    A file another program (an editor) created at a name the caller found free must not be
    renamed over: ``os.replace`` would lose it unrecorded. The no-replace rename where there is
    one; else a hard link, which fails on a taken name (then the temp's name is removed); else
    (FAT, some network shares) the name is checked just before the rename. Raises OSError.
    """
    done = _rename_new_native(tmp, target)
    if done is not None:
        return done
    try:
        os.link(tmp, target, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(target):
            return False
        replace_file(tmp, target)
        return True
    _unlink_quiet(tmp)
    if _LINUX:
        # A new hard link is a create with no close-write to inotify: the watcher took the file
        # for one still being written and waited its write-quiet time (seconds) before the
        # echo's check, holding a `sync`'s wait for the watcher back as long (for every new file
        # of a save or a download here). Opened for writing and closed (nothing written: content
        # and times unchanged) it is complete, as a rename into place says. Only here: after a
        # rename it was an open and an event for nothing.
        with suppress(OSError):
            os.close(os.open(target, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)))
    return True


# The mode of the folders LocalStore makes for the user's blueprints and for a home's parents
# (less the umask, as mkdir applies it): never group or world writable, like the 0644 of a new
# blueprint file. With mkdir's 0777, a daemon started under umask 000 (a service manager's) made
# them 0777: another local user could then rename over or unlink any blueprint in them (a
# file's own mode does not stop that, its folder's write bit does), put a link to a folder
# outside the home in the place of one between a save's check and its write, or put their own
# data/ or state/ in the home's place.
FOLDER_MODE = 0o755


def ensure_dir(directory: Path, *, mode: int = FOLDER_MODE, parents: bool = True) -> None:
    """Create a directory and its parents durably (``mode`` is the last one's, as mkdir's; the
    parents get FOLDER_MODE).

    ``parents=False``: only the directory itself, in a parent that must exist (a home's
    ``state/``, written by a running process: a home deleted or moved away meanwhile must not
    be made again at its old path). Raises StorageError."""
    try:
        # (Inside the try: a path over the system's limit (ENAMETOOLONG, a deep home under a
        # long path a shorter home synced) fails already in this stat, and an untyped OSError
        # from here ended every sync pass at that one row.)
        missing = missing_dirs(directory)
    except OSError as exc:
        raise map_os_error(exc, "cannot create folder", directory) from exc
    if not missing:
        return
    try:
        if parents:
            make_parents(missing)
        directory.mkdir(mode=mode, exist_ok=True)
    except OSError as exc:
        raise map_os_error(exc, "cannot create folder", directory) from exc
    for created in reversed(missing):
        fsync_dir(created.parent)


def make_dirs(directory: Path, *, mode: int = FOLDER_MODE) -> None:
    """``ensure_dir`` for callers whose contract is OSError. Raises OSError."""
    missing = missing_dirs(directory)
    make_parents(missing)
    directory.mkdir(mode=mode, exist_ok=True)
    # A new folder is an entry in its parent: until the parent is flushed a power cut can take
    # it away with everything written in it since, however durably (so each parent, upwards).
    for created in reversed(missing):
        flush_dir(created.parent)


def make_parents(missing: Sequence[Path]) -> None:
    """Make the parents among ``missing`` (``missing_dirs``' answer: the folder itself first,
    not made here) with FOLDER_MODE, outermost first. (Path.mkdir(parents=True) makes them with
    mkdir's 0777 whatever mode it is given.) Raises OSError."""
    for parent in reversed(missing[1:]):
        parent.mkdir(mode=FOLDER_MODE, exist_ok=True)


def missing_dirs(directory: Path) -> list[Path]:
    """``directory`` and those of its parents that do not exist, deepest first."""
    missing: list[Path] = []
    d = directory
    while not d.exists() and d.parent != d:
        missing.append(d)
        d = d.parent
    return missing


def remove_file(path: Path) -> None:
    """Unlink a file if present (durably). A folder with the name is not a file: left alone.

    Raises StorageError ("in use by another program" when Windows' sharing violation outlasts
    the retries)."""
    try:
        _os.unlink(os.fspath(path))
    except (FileNotFoundError, IsADirectoryError):
        # (IsADirectoryError: the undo of a save refused because a folder took its meta file's
        # name removed the YAML, then failed here and logged that it could not clean up.)
        return
    except OSError as exc:
        raise map_os_error(exc, "cannot remove", path) from exc
    fsync_dir(path.parent)
