"""Which processes have a home's store open: a mark each open store holds (standard library only).

Every open ``BlueprintStore`` holds a shared ``flock`` on ``state/store-open.lock`` for its whole
life (the kernel drops it when the process dies, even by SIGKILL). ``check --fix`` must not move
a damaged index aside under another open store: that store keeps its SQLite connection to the
moved file and goes on writing its history there. The daemon's lock (``state/daemon.lock``) only
shows the daemon and an app syncing in-process; an app that opened the store without syncing
holds none, and the rebuild went ahead under it. SQLite has no documented way to ask whether other
connections have a database open, so the stores say so themselves.

flock, not ``fcntl`` record locks: a record lock belongs to the process (two stores of one app
would be one holder, and closing any descriptor of the file drops it: the field-notes trap), while
an flock belongs to one open file description, so a second store in the same process is seen too.
Windows has no shared lock in ``msvcrt``; there the mark is not taken, and Windows itself refuses
to rename an index another process has open (SQLite opens it without FILE_SHARE_DELETE), so the
rebuild fails there with a storage error instead of losing history.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from localstore import _durable

OPEN_LOCK_FILE = "store-open.lock"

log = logging.getLogger("localstore.store")


class OpenMark:
    """This store's shared flock on ``state/store-open.lock`` (see the module doc)."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def take(cls, state_dir: Path) -> OpenMark:
        """Open (creating) the mark file and take its shared lock; waits only while a
        ``check --fix`` rebuild holds it exclusively (a rename and an empty index's creation).

        A mark that cannot be taken (a read-only state folder, Windows) is no reason to refuse
        the open: the store opens unmarked, and a rebuild then cannot see it (as before marks).
        """
        path = Path(state_dir) / OPEN_LOCK_FILE
        if os.name == "nt":  # pragma: no cover - see the module doc
            return cls(path, None)
        import fcntl

        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _durable.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.debug("cannot take the open-store mark %s: %s", path, exc)
            return cls(path, None)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError as exc:  # (a filesystem without flock: NFS without local locks, say)
            os.close(fd)
            log.debug("cannot lock the open-store mark %s: %s", path, exc)
            return cls(path, None)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        """Whether this store holds its mark (False: unmarked, see take())."""
        return self._fd is not None

    def try_exclusive(self) -> bool:
        """Turn this store's shared lock exclusive without waiting; False when another open
        store holds the mark. After False this store no longer holds it at all (Linux drops
        the old lock before it tries the new one): the caller is to fail its open and close."""
        if self._fd is None:
            return True
        import fcntl

        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        return True

    def share(self) -> None:
        """Back to a shared lock after try_exclusive(): other stores may open again."""
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def holders(self) -> list[int]:
        """The other processes holding the mark, by pid (Linux's /proc/locks; [] elsewhere or
        when it cannot be read). For messages only: never a reason to refuse or allow."""
        try:
            st = os.stat(self.path)
            text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
        except OSError:
            return []
        ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        pids: set[int] = set()
        for line in text.splitlines():
            # "1: FLOCK  ADVISORY  READ  1234 fe:00:5678 0 EOF"; a waiter's line has "->" second.
            f = line.split()
            if len(f) >= 6 and f[1] == "FLOCK" and f[5] == ident and f[4].isdigit():
                pids.add(int(f[4]))
        pids.discard(os.getpid())
        pids.discard(0)  # (a holder outside this pid namespace)
        return sorted(pids)

    def close(self) -> None:
        """Let go of the mark (idempotent). The file stays: removing it would race a new store."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def describe_pid(pid: int) -> str:
    """``pid N`` with the process's name where /proc tells it (``pid N (python3)``)."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        name = ""
    return f"pid {pid} ({name})" if name else f"pid {pid}"
