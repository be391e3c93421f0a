"""Per-platform primitives of the durable-write layer, chosen once at import from ``sys.platform``.

Linux is where the layer was written, measured and crash-tested: its primitives are the plain ``os``
functions themselves (no wrapper, so the save path makes no extra Python call). The other systems
differ here (docs/portability.md says what is verified where):

- macOS: ``fsync()`` hands the data to the drive but does not flush the drive's write cache, so a
  power cut can still lose an acknowledged save. ``fcntl(F_FULLFSYNC)`` flushes it; a filesystem
  that refuses it (SMB, FAT) gets the plain fsync, as SQLite's ``full_fsync()`` does.
- Windows: a directory cannot be opened with ``os.open`` (EACCES) and has no fsync; the rename is
  made durable by itself instead (``MoveFileExW`` with ``MOVEFILE_WRITE_THROUGH``). A rename onto a
  file that another program (antivirus, search indexer, an editor, a sync client) holds open fails
  with a sharing violation for a moment: it is retried for a bounded time, as SQLite's
  ``winRetryIoerr`` does. There is no ``statvfs`` (free space comes from ``GetDiskFreeSpaceExW``
  via ``shutil.disk_usage``), no ``fcntl`` (the home lock is a byte-range lock, ``msvcrt.locking``)
  and ``os.kill(pid, 0)`` sends a Ctrl-C instead of probing (``OpenProcess`` does that).
- Everywhere but Linux: no ``syncfs`` (files.py then flushes file by file).

``primitives_for(platform)`` builds a platform's set, so tests can check another platform's choices
and inject its errors as faults; the module-level names are this machine's.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ParamSpec, Protocol

PLATFORM = sys.platform

# Windows opens files in text mode unless told otherwise: os.write would turn every "\n" into
# "\r\n" (the bytes on disk would not be the bytes hashed into the meta) and a read would stop at
# the first Ctrl-Z. 0 on POSIX, so OR-ing it into a flag constant changes nothing there.
O_BINARY: int = getattr(os, "O_BINARY", 0)

# The Windows errors a rename meets while another process has the file open: ERROR_ACCESS_DENIED
# (also a file pending delete), ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION. Python maps all
# three to EACCES (PermissionError), which alone cannot tell them from a real permission problem.
WIN_IN_USE_ERRORS = frozenset({5, 32, 33})
# SQLite's winRetryIoerr waits 25 ms x (1 + attempt) for 10 attempts (about 1.4 s): long enough for
# a virus scanner or indexer to let go of a file it just opened, short enough for a save to report
# a file an editor keeps open.
REPLACE_RETRY_DELAYS: tuple[float, ...] = tuple(0.025 * (n + 1) for n in range(10))

MOVEFILE_REPLACE_EXISTING = 0x1
MOVEFILE_WRITE_THROUGH = 0x8
F_FULLFSYNC_DARWIN = 51  # <sys/fcntl.h>; fcntl.F_FULLFSYNC exists only in a macOS build of Python

ReplaceFn = Callable[[str, str], None]
UnlinkFn = Callable[[str], None]
_P = ParamSpec("_P")


@dataclass(frozen=True)
class Primitives:
    """One platform's durable-write primitives (see the module docstring)."""

    platform: str
    fsync: Callable[[int], None]  # flush a file's data to stable storage; raises OSError
    dir_fsync: bool  # whether a directory can be opened and flushed (not on Windows)
    replace: ReplaceFn  # rename over an existing file, durably where the OS can say so
    rename: ReplaceFn  # rename to a name that does not exist
    # Rename unless the new name exists (FileExistsError then, nothing changed); None where the
    # OS has no such call (files.py then checks the name first, or links: see place_new).
    rename_new: ReplaceFn | None
    # Swap two existing names in one step (each then names the other's file); None where the OS
    # has no such call (files.replace_recorded then checks the target just before a replace).
    exchange: ReplaceFn | None
    unlink: UnlinkFn  # remove a file
    free_bytes: Callable[[str], int]  # bytes free to this user on the folder's filesystem
    no_hard_link_errnos: frozenset[int]  # os.link errors that mean "no hard links here"


def full_fsync(
    fd: int,
    *,
    fcntl_call: Callable[[int, int], object] | None = None,
    command: int = F_FULLFSYNC_DARWIN,
) -> None:
    """fsync that also flushes the drive's write cache (macOS ``F_FULLFSYNC``). Raises OSError.

    A filesystem that does not support F_FULLFSYNC (SMB and other network shares, FAT, exFAT)
    refuses it; the plain fsync then does what can be done there and reports any real error.
    """
    if fcntl_call is None:
        if sys.platform == "win32":  # (no fcntl: the plain fsync, as where F_FULLFSYNC is refused)
            os.fsync(fd)
            return
        import fcntl

        fcntl_call = fcntl.fcntl
    try:
        fcntl_call(fd, command)
    except OSError:
        os.fsync(fd)


def retrying(
    call_once: Callable[_P, None],
    *,
    delays: Sequence[float] = REPLACE_RETRY_DELAYS,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[_P, None]:
    """``call_once`` (a rename, replace or unlink) retried while Windows says another process has
    the file open.

    Only PermissionError with winerror 5, 32 or 33 is retried, after each of ``delays``; the error
    of the last attempt is raised (files.map_os_error turns it into an error with a hint).
    """

    def call(*args: _P.args, **kwargs: _P.kwargs) -> None:
        for delay in delays:
            try:
                call_once(*args, **kwargs)
                return
            except PermissionError as exc:
                if getattr(exc, "winerror", None) not in WIN_IN_USE_ERRORS:
                    raise
            sleep(delay)
        call_once(*args, **kwargs)

    return call


def statvfs_free(folder: str) -> int:
    """Bytes free to this user on the filesystem of ``folder`` (POSIX). Raises OSError."""
    if sys.platform == "win32":  # (no statvfs there)
        return disk_usage_free(folder)
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def disk_usage_free(folder: str) -> int:
    """Bytes free to this user on the volume of ``folder`` (Windows). Raises OSError."""
    return shutil.disk_usage(folder).free


if sys.platform == "win32":
    import msvcrt
    from ctypes import wintypes

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _kernel32.MoveFileExW.argtypes = (wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.DWORD)
    _kernel32.MoveFileExW.restype = wintypes.BOOL

    def _move_file_ex(src: str, dst: str, flags: int) -> None:
        # os.replace/os.rename are MoveFileExW without MOVEFILE_WRITE_THROUGH: they may return
        # before the new directory entry is on disk, and a directory cannot be fsynced here.
        if not _kernel32.MoveFileExW(os.fspath(src), os.fspath(dst), flags):
            raise ctypes.WinError(ctypes.get_last_error())

    def _native_replace(src: str, dst: str) -> None:
        _move_file_ex(src, dst, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)

    def _native_rename(src: str, dst: str) -> None:
        _move_file_ex(src, dst, MOVEFILE_WRITE_THROUGH)  # (fails if dst exists, as os.rename)

else:
    # (MoveFileExW exists only on Windows: the Windows set built elsewhere, by tests, renames with
    # os.replace/os.rename underneath its retry.)
    _native_replace = os.replace
    _native_rename = os.rename


# renameat2(2)'s flag (<linux/fs.h>) and renamex_np(2)'s (<stdio.h>, macOS 10.12+): fail with
# EEXIST instead of replacing the new name. Linux's AT_FDCWD: paths relative to the working folder.
RENAME_NOREPLACE_LINUX = 1
RENAME_EXCL_DARWIN = 0x4
# And the flags that swap the two names (both must exist; ENOENT otherwise).
RENAME_EXCHANGE_LINUX = 2
RENAME_SWAP_DARWIN = 0x2
AT_FDCWD_LINUX = -100


def c_rename_new(platform: str) -> ReplaceFn | None:
    """The C library's rename that refuses an existing new name (renameat2 with
    RENAME_NOREPLACE on Linux, renamex_np with RENAME_EXCL on macOS), if this machine is
    ``platform`` and its C library has it; else None.

    Python has no such call: ``os.rename`` replaces the new name on POSIX. A hard link also fails
    on a taken name, but a new link is a create with no close-write for inotify (the watcher
    waits out its write-quiet time), and it needs an unlink after: one call keeps a save's
    placing exactly the rename it was (bench: within noise of os.rename).
    """
    return _c_rename(platform, RENAME_NOREPLACE_LINUX, RENAME_EXCL_DARWIN)


def c_exchange(platform: str) -> ReplaceFn | None:
    """The C library's rename that swaps two existing names atomically (renameat2 with
    RENAME_EXCHANGE on Linux 3.15+, renamex_np with RENAME_SWAP on macOS 10.12+), if this
    machine is ``platform`` and its C library has it; else None.

    A save replacing a recorded file swaps its temp in: the temp's name then holds exactly the
    file that was at the target at that instant, so the save can tell whether it was the file
    the index recorded or one another program put there since (files.replace_recorded).
    ``os.replace`` gives no such answer: the file it replaced is gone.
    """
    return _c_rename(platform, RENAME_EXCHANGE_LINUX, RENAME_SWAP_DARWIN)


def _c_rename(platform: str, linux_flag: int, darwin_flag: int) -> ReplaceFn | None:
    """renameat2(``linux_flag``) or renamex_np(``darwin_flag``) as a ReplaceFn (see above)."""
    if platform != sys.platform or not (platform.startswith("linux") or platform == "darwin"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if platform == "darwin":
            darwin = libc.renamex_np
            darwin.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint)
            darwin.restype = ctypes.c_int

            def call(src: bytes, dst: bytes) -> int:
                return int(darwin(src, dst, darwin_flag))

        else:
            linux = libc.renameat2  # (glibc 2.28+; musl 1.2.5+)
            linux.argtypes = (
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_uint,
            )
            linux.restype = ctypes.c_int

            def call(src: bytes, dst: bytes) -> int:
                return int(linux(AT_FDCWD_LINUX, src, AT_FDCWD_LINUX, dst, linux_flag))

    except (OSError, AttributeError):
        return None

    def rename_flagged(src: str, dst: str) -> None:
        if call(os.fsencode(src), os.fsencode(dst)) != 0:
            err = ctypes.get_errno()
            # (OSError picks the subclass from the number: FileExistsError for EEXIST.)
            raise OSError(err, os.strerror(err), src, None, dst)

    return rename_flagged


def primitives_for(
    platform: str,
    *,
    replace_once: ReplaceFn | None = None,
    unlink_once: UnlinkFn | None = None,
) -> Primitives:
    """The durable-write primitives of ``platform`` (a ``sys.platform`` value).

    ``replace_once`` stands in for the platform's single rename, ``unlink_once`` for its single
    unlink (tests inject faults with them).
    """
    if platform == "win32":
        return Primitives(
            platform=platform,
            fsync=os.fsync,  # _commit(): FlushFileBuffers, which flushes the drive cache too
            dir_fsync=False,
            replace=retrying(replace_once or _native_replace),
            rename=retrying(replace_once or _native_rename),
            # MoveFileExW without MOVEFILE_REPLACE_EXISTING fails on a taken name already.
            rename_new=retrying(replace_once or _native_rename),
            # No atomic swap: ReplaceFileW moves the replaced file to a backup name, but in
            # several steps (and merges its attributes and ACL into the new file); the target
            # is checked just before the replace instead (files.replace_recorded).
            exchange=None,
            # DeleteFileW meets the same sharing violation while a scanner or an editor holds
            # the file open.
            unlink=retrying(unlink_once or os.unlink),
            free_bytes=disk_usage_free,
            # CreateHardLinkW on FAT/exFAT or a share without links: ERROR_INVALID_FUNCTION or
            # ERROR_NOT_SUPPORTED, both EINVAL in Python.
            no_hard_link_errnos=frozenset({errno.EINVAL, errno.EPERM, errno.EMLINK}),
        )
    no_links = frozenset({errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP})
    if platform == "darwin":
        return Primitives(
            platform=platform,
            fsync=full_fsync,
            dir_fsync=True,
            replace=replace_once or os.replace,
            rename=replace_once or os.rename,
            rename_new=c_rename_new(platform),
            exchange=c_exchange(platform),
            unlink=unlink_once or os.unlink,
            free_bytes=statvfs_free,
            no_hard_link_errnos=no_links,
        )
    # Linux and the other POSIX systems: the os functions as they are (nothing added per save).
    return Primitives(
        platform=platform,
        fsync=os.fsync,
        dir_fsync=True,
        replace=replace_once or os.replace,
        rename=replace_once or os.rename,
        rename_new=c_rename_new(platform),
        exchange=c_exchange(platform),
        unlink=unlink_once or os.unlink,
        free_bytes=statvfs_free,
        no_hard_link_errnos=no_links,
    )


class FileCalls(Protocol):
    """The calls of the save path that differ by platform, as files.py makes them."""

    @property
    def fsync(self) -> Callable[[int], None]: ...

    @property
    def replace(self) -> ReplaceFn: ...

    @property
    def rename(self) -> ReplaceFn: ...

    @property
    def unlink(self) -> UnlinkFn: ...


class _Calls:
    """A platform's FileCalls where they are not the os module's own."""

    def __init__(self, primitives: Primitives) -> None:
        self.fsync = primitives.fsync
        self.replace = primitives.replace
        self.rename = primitives.rename
        self.unlink = primitives.unlink


def calls_for(primitives: Primitives) -> FileCalls:
    """What files.py calls as ``_os.fsync``/``_os.replace``/``_os.rename``/``_os.unlink``.

    The os module itself when the platform uses os's functions (Linux): a save then makes exactly
    the calls it made before this module existed (one attribute lookup each, no wrapper), and a
    test that injects a fault by patching ``os.fsync`` or ``os.replace`` still reaches them.
    """
    if (primitives.fsync, primitives.replace, primitives.rename, primitives.unlink) == (
        os.fsync,
        os.replace,
        os.rename,
        os.unlink,
    ):
        return os
    return _Calls(primitives)


CURRENT = primitives_for(PLATFORM)


# ---------------------------------------------------------------------------------------------------
# Whole-file locks and process probes (the home's daemon lock, stale-temp sweeps)

# Windows' byte-range locks are mandatory: a locked byte cannot be read by anyone else. The lock
# sits on one byte far past the end of the (tiny) lock file, as SQLite's PENDING_BYTE does, so the
# pid written at its start stays readable.
_WIN_LOCK_OFFSET = 0x40000000
_WIN_LOCK_POLL = 0.05


class ByteRangeLock:
    """Windows' whole-file lock: ``msvcrt.locking`` on the one byte at ``_WIN_LOCK_OFFSET``.

    ``locking`` and the two modes are msvcrt's; tests on Linux pass a stand-in that behaves as
    Windows documents (a lock belongs to the handle; one left to the close of its handle is freed
    "eventually", when the system gets to it), which is why ``unlock`` exists at all.
    """

    def __init__(
        self,
        locking: Callable[[int, int, int], None],
        *,
        nb_lock: int,
        unlock: int,
        poll: float = _WIN_LOCK_POLL,
    ) -> None:
        self._locking = locking
        self._nb_lock = nb_lock
        self._unlock = unlock
        self._poll = poll

    def _once(self, fd: int, mode: int) -> bool:
        pos = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        try:
            self._locking(fd, mode, 1)
        except OSError as exc:
            # msvcrt reports EDEADLOCK, EDEADLK's other name (which macOS's errno lacks).
            if exc.errno in (errno.EACCES, errno.EDEADLK):
                return False
            raise
        finally:
            os.lseek(fd, pos, os.SEEK_SET)  # (the pid is written at the start)
        return True

    def try_lock(self, fd: int, *, blocking: bool) -> bool:
        """Take the file's exclusive lock; False if another handle holds it (not ``blocking``)."""
        while not self._once(fd, self._nb_lock):
            if not blocking:
                return False
            # (LK_LOCK gives up after 10 s: poll instead, like flock without LOCK_NB waits.)
            time.sleep(self._poll)
        return True

    def lock_taken(self, fd: int) -> bool:
        """Whether any handle (this process's included) holds the file's lock. No side effects."""
        if not self._once(fd, self._nb_lock):
            return True
        self._once(fd, self._unlock)
        return False

    def unlock(self, fd: int) -> None:
        """Free the lock this handle holds, now (call before closing it). Raises OSError."""
        # Closing a handle frees its locks only when the system gets to it: a daemon restarted
        # at once, or the next writer of the credentials file, found the home still locked.
        # (False, a refusal, means this handle held no lock: nothing to free.)
        self._once(fd, self._unlock)


if sys.platform == "win32":
    _WIN_LOCKS = ByteRangeLock(msvcrt.locking, nb_lock=msvcrt.LK_NBLCK, unlock=msvcrt.LK_UNLCK)
    try_lock = _WIN_LOCKS.try_lock
    lock_taken = _WIN_LOCKS.lock_taken
    unlock = _WIN_LOCKS.unlock

    _PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
    _STILL_ACTIVE = 259
    _ERROR_ACCESS_DENIED = 5

    def pid_alive(pid: int) -> bool:
        """Whether a process with this pid is running (os.kill(pid, 0) would send it a Ctrl-C)."""
        if pid <= 0:
            return False
        handle = _kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            # Access denied: it exists (another user's, or protected). Else (invalid parameter)
            # there is no such process.
            return ctypes.get_last_error() == _ERROR_ACCESS_DENIED
        try:
            code = wintypes.DWORD()
            if not _kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == _STILL_ACTIVE
        finally:
            _kernel32.CloseHandle(handle)

else:
    import fcntl

    def try_lock(fd: int, *, blocking: bool) -> bool:
        """Take the file's exclusive flock; False if another holder has it (not ``blocking``)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        return True

    def lock_taken(fd: int) -> bool:
        """Whether any open file description holds the file's flock. Closing ``fd`` afterwards
        drops the probe's shared lock at once."""
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        return False

    def unlock(fd: int) -> None:
        """Nothing to do: closing the descriptor frees the flock at once (a LOCK_UN would also
        take it from a forked child still sharing the description)."""

    # (No pid_alive here: on POSIX os.kill(pid, 0) probes, and the callers keep their own logic.)


# Open flags of lock files: close-on-exec where it exists (Python's descriptors are not inherited
# anyway, PEP 446; Windows has no O_CLOEXEC).
O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def holding_lock(fd: int) -> Iterator[None]:
    """Hold the file's exclusive lock (waiting for it) for the with-block, freed before the
    caller closes ``fd``: Windows frees a lock at its handle's close only "eventually"."""
    try_lock(fd, blocking=True)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            unlock(fd)
