"""What a scan sees of files: ``FileStat``, the recorded stats a write or a reconcile compares
(``Recorded``, ``stat_unchanged``, ``ino_key``), how recently files changed, and
``walk_blueprint_files``, the one walk of a blueprints folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Protocol, TypeAlias

from localstore._file_paths import TEMP_SUFFIX
from localstore._ignore_rules import IgnoreRules, _maybe_conflict_copy
from localstore._os_errors import map_os_error

# What the index recorded of a file a write replaces: size, mtime, change time (ns) and inode
# (ino_key; 0 or None: unknown), as stat_unchanged takes them.
Recorded: TypeAlias = tuple[int, int, int | None, int | None]


def recorded_of(st: os.stat_result) -> Recorded:
    """What replace_recorded compares of a file: its size, mtime, change time and inode."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, ino_key(st.st_ino)


class FileStat(NamedTuple):
    """What a scan keeps of a file's stat: its size, modification and change times, inode.

    A whole ``os.stat_result`` is about 650 bytes with its fields: a reconcile or rescan of a
    100,000-blueprint home holds 200,000 of them at once (130 MB); this is about 225 bytes
    (tracemalloc, its four ints included: 45 MB).
    """

    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_ino: int

    @property
    def st_mtime(self) -> float:
        """Seconds, as ``os.stat_result.st_mtime``."""
        return self.st_mtime_ns / 1e9

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        """Keep what a scan needs of ``st``."""
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def changed_within(stats: Iterable[FileStat | os.stat_result], seconds: float) -> bool:
    """Whether any of these files changed less than ``seconds`` ago (by the wall clock).

    As a watcher ages a file being written: a rename sets the change time; an mtime in the
    future (a sync tool's clock) says nothing of when the file changed here.
    """
    wall_ns = time.time_ns()
    for st in stats:
        changed = (
            st.st_ctime_ns if st.st_mtime_ns > wall_ns else max(st.st_mtime_ns, st.st_ctime_ns)
        )
        if 0 <= wall_ns - changed < seconds * 1e9:
            return True
    return False


def folder_changed_within(root: Path, rel: str, seconds: float) -> bool:
    """Whether the folder that held the vanished file ``rel`` (or the nearest one of its
    folders still there, up to ``root``) changed less than ``seconds`` ago.

    A file gone has no times of its own; its removal or rename set its folder's. That ages a
    vanish as a watcher's delete grace does, from another process (a busier folder only waits
    longer: the watcher records the delete then).
    """
    folder = (root / rel).parent
    while True:
        try:
            st = os.lstat(folder)
        except (FileNotFoundError, NotADirectoryError):
            # (NotADirectoryError: a folder above it is a file now; that file is the nearest.)
            if folder == root or folder == folder.parent:
                return False
            folder = folder.parent
            continue
        return changed_within([st], seconds)


class _Stat(Protocol):
    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ctime_ns(self) -> int: ...
    @property
    def st_ino(self) -> int: ...


_INO_BITS = (1 << 64) - 1


def ino_key(st_ino: int) -> int:
    """``st_ino`` as the index stores it: a signed 64-bit integer (SQLite's INTEGER).

    Inode numbers are unsigned 64-bit (overlayfs with xino, NFS file ids and 9p use the top
    bits; Windows' 128-bit ReFS ids are folded): one above 2**63 would not bind at all.
    Idempotent: a stored key gives itself back.
    """
    ino = st_ino & _INO_BITS
    return ino - (1 << 64) if ino >> 63 else ino


def stat_unchanged(
    st: _Stat, size: int, mtime_ns: int, ctime_ns: int | None, ino: int | None
) -> bool:
    """True if ``st`` is the stat the index recorded: the file can be taken as unread-unchanged.

    Size and mtime alone are not enough: sync tools (Syncthing, Dropbox, ``rsync -t``,
    ``cp -p``, unzip) put another device's version down with that version's mtime, and disks
    with coarse clocks (FAT's 2 s, HFS+'s 1 s, SMB) give a same-size edit the same mtime. A
    version the same size with the recorded mtime was taken as unchanged: search showed the
    old text, and the next save recorded history as if the new version never existed. The
    change time is set by the kernel at every write, rename, chmod or link and no tool can set
    it back (POSIX); on Windows ``st_ctime_ns`` is the creation time (settable, and unchanged
    by a write), which only ever adds strictness there. A row without a recorded change time
    (an index from before core v8) never matches: its pair is read once and the times recorded.

    The inode must match too (core v9). A change time is only as fine as the kernel's clock
    (one jiffy, 1-4 ms, before Linux 6.13; 2 s on FAT): a same-size version with the recorded
    mtime renamed in within the tick of our own save had all three, was taken as unchanged,
    and the next save overwrote it unrecorded. Whatever renames a file into place made it as
    a new file while the old one still existed, so it has another inode. An inode that is
    unknown matches any: 0 (Windows' ``scandir`` gives no file index, some filesystems none at
    all) or None (a row from before core v9 whose pair the first open has not stamped yet: see
    ``Reconciler._stamp_inodes``); the other three still decide there, as before. The device
    is not compared: a rename never crosses filesystems, and device numbers change across
    reboots and remounts (btrfs subvolumes, USB disks, network mounts): every pair would be
    read again.
    """
    return (
        ctime_ns is not None
        and st.st_size == size
        and st.st_mtime_ns == mtime_ns
        and st.st_ctime_ns == ctime_ns
        and (not ino or not st.st_ino or ino_key(st.st_ino) == ino)
    )


@contextmanager
def _scandir(
    path: Path, prefix: str, unlistable: list[tuple[str, OSError]] | None
) -> Iterator[Iterator[os.DirEntry[str]]]:
    try:
        it = os.scandir(path)
    except (FileNotFoundError, NotADirectoryError):
        yield iter(())
        return
    except OSError as exc:
        if unlistable is None:
            raise map_os_error(exc, "cannot list", path) from exc
        unlistable.append((prefix, exc))
        yield iter(())
        return
    with it:
        yield it


def walk_blueprint_files(
    root: Path,
    rules: IgnoreRules,
    *,
    unlistable: list[tuple[str, OSError]] | None = None,
    conflicts: list[str] | None = None,
) -> Iterator[tuple[str, FileStat]]:
    """Yield (relative posix path, FileStat) of every blueprint YAML/meta and our temp files.

    Hidden and ignored folders are skipped; symbolic links are not followed (a link could lead
    outside the root or loop). A folder that cannot be listed (permissions, I/O error) raises
    StorageError, unless ``unlistable`` is given: then its ``(prefix, error)`` is appended and the
    walk goes on. The blueprints under such a folder are unknown, not missing: a caller that
    compares with the index must not delete them (the default raises so that a caller which does
    not know this cannot). With ``conflicts``, the relative paths of sync tools' conflict copies
    of blueprint files (``conflict_copy``) are appended to it.
    """
    stack = [("", str(root))]
    while stack:
        prefix, directory = stack.pop()
        with _scandir(Path(directory), prefix, unlistable) as entries:
            for entry in entries:
                name = entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if rules.walks_into(prefix, name):
                            stack.append((prefix + name + "/", entry.path))
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    if name.endswith(TEMP_SUFFIX) or rules.takes_file(prefix, name):
                        st = entry.stat(follow_symlinks=False)
                        yield (
                            prefix + name,
                            FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino),
                        )
                    elif conflicts is not None and _maybe_conflict_copy(name):
                        conflicts.append(prefix + name)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    # Listable but not searchable (mode r--): nothing in it can be stat'ed.
                    if unlistable is None:
                        raise map_os_error(exc, "cannot read", entry.path) from exc
                    unlistable.append((prefix, exc))
                    break
