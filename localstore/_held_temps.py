"""Private temp folders their maker holds, and the sweep of those a killed maker left.

An import stages a bundle (decrypted, for an encrypted one) in ``cache/import-staging-<pid>-*/``;
an encrypted export writes its plaintext zip in ``cache/export-<pid>-*/``, or, for a read-only
home, in ``$TMPDIR/localstore-export-<pid>-*/``. A ``finally`` cannot run after SIGKILL or a
power cut, so the next import or export removes what a dead one left.

Which maker is dead was told by the pid in the name alone. A pid means nothing in another pid
namespace: two containers sharing /tmp (or a home: a daemon in a container, the CLI outside it)
each number their processes apart, so a live export's pid could be no process here (its
plaintext folder was removed under it, and the export failed) or another, live process here (a
killed export's plaintext was kept for good). So each folder holds a lock file, ``.held``, that
its maker locks (flock; a byte-range lock on Windows) as soon as the folder is made and keeps
locked until it has removed the folder. Locks are the kernel's, the same for every pid namespace
(and every process) that opens the file. The sweep takes the lock itself before it removes
anything: a folder whose lock it gets is a dead maker's. A maker that was waiting for it then
finds its ``.held`` gone, and makes another folder.

A folder without ``.held`` was made by an older version, or a moment ago by a maker that has not
opened it yet: for those the pid decides, as before (a maker that loses its folder that way makes
another one too).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from localstore import _durable
from localstore._daemon_state import pid_alive
from localstore.errors import StorageError

HOLD_FILE = ".held"
# Folders a maker makes before it holds one (each lost to a sweep between mkdtemp and its lock).
_MAKE_TRIES = 5


class HeldFolder:
    """A private temp folder (0700) whose ``.held`` this process holds locked until remove()."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def __repr__(self) -> str:
        return f"HeldFolder({str(self.path)!r})"

    def remove(self) -> None:
        """Remove the folder with what is in it, then let go of its lock. Never raises OSError
        (what cannot be removed is a dead maker's folder to the next sweep)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if os.name == "nt":
            # (An open file cannot be removed there: the lock goes first, then the folder.)
            _release(fd)
            shutil.rmtree(self.path, ignore_errors=True)
            return
        # Held while it goes: no sweep takes it for a dead maker's half-removed folder.
        shutil.rmtree(self.path, ignore_errors=True)
        _release(fd)


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):
        _durable.unlock(fd)
    os.close(fd)


def make_held_folder(root: Path, prefix: str) -> HeldFolder:
    """Make ``root/<prefix><pid>-XXXX/`` (mkdtemp: 0700, a random name) and lock its ``.held``.

    Raises OSError as mkdtemp does; StorageError when sweeps took every folder made.
    """
    for _ in range(_MAKE_TRIES):
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))
        held = folder / HOLD_FILE
        try:
            fd = os.open(held, os.O_RDWR | os.O_CREAT | _durable.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            continue  # (swept before it was held: its pid looked dead from another namespace)
        try:
            # Blocking: a sweep that opened .held first holds it only while it removes the folder.
            _durable.try_lock(fd, blocking=True)
            if _same_file(fd, held):
                return HeldFolder(folder, fd)
        except BaseException:
            os.close(fd)
            raise
        _release(fd)  # (the sweep removed it meanwhile)
    raise StorageError(
        f"cannot make a temporary folder in {root}: another process removed each one made",
        hint="another LocalStore sweeping that folder took them; try again",
    )


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def remove_if_dead(folder: Path, prefix: str) -> bool:
    """Remove ``folder`` (named ``<prefix><pid>-...``) when its maker is gone; True if removed.

    A folder with ``.held`` goes when this process gets its lock (held while it goes), whatever
    pid namespace the maker ran in; one without, when no process has its pid here. One named
    with this process's pid is left: where flock is a per-process record lock (Linux's NFS
    client emulates it so) this process would get the lock of a folder it holds itself, and
    removed it under a live export. (Another namespace's dead maker with that pid number waits
    for another process's sweep.)
    """
    pid_text = folder.name[len(prefix) :].split("-", 1)[0]
    if pid_text == str(os.getpid()):
        return False
    try:
        fd = os.open(folder / HOLD_FILE, os.O_RDWR | _durable.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            return False  # (not this user's to judge, or unreadable: left as it is)
        if pid_text.isdigit() and not process_alive(int(pid_text)):
            shutil.rmtree(folder, ignore_errors=True)
            return True
        return False
    try:
        if not _durable.try_lock(fd, blocking=False):
            return False  # its maker holds it: live
        if os.name != "nt":  # (see HeldFolder.remove)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        _release(fd)
    if os.name == "nt":
        shutil.rmtree(folder, ignore_errors=True)
    return True


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs in this process's pid namespace (this process
    included; one of another user's is taken to be running, a zombie is not)."""
    return pid == os.getpid() or pid_alive(pid)
