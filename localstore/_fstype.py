"""Which file system a folder is on, and whether inotify sees every change there.

A network or FUSE file system (NFS, SMB, sshfs, a VM's shared folder) sends no event for an edit
made on another machine: the watcher rescans such a folder on a timer (``remote_fs_notice`` says
so for ``localstore doctor``). The type comes from /proc/self/mountinfo, else statfs(2).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localstore.config import Settings

# statfs f_type magic numbers (linux/magic.h and the file systems' own headers) of file systems
# whose files other machines (or another kernel: a VM's host) change: inotify reports only the
# changes made through this kernel. FUSE covers sshfs, rclone, gvfs, virtiofs and the like.
_REMOTE_MAGIC = {
    0x6969: "nfs",
    0x517B: "smbfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x65735546: "fuse",
    0x01021997: "9p",
    0x00C36400: "ceph",
    0x5346414F: "afs",
    0x6B414653: "afs",
    0x73757245: "coda",
    0x564C: "ncpfs",
    0x786F4256: "vboxsf",
    0x7461636F: "ocfs2",
    0x01161970: "gfs2",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
    0x19830326: "beegfs",
    0x20030528: "orangefs",
}
_LOCAL_MAGIC = {
    0xEF53: "ext4",
    0x9123683E: "btrfs",
    0x58465342: "xfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlay",
    0x2FC12FC1: "zfs",
    0xF2F52010: "f2fs",
    0x4D44: "vfat",
    0x2011BAB0: "exfat",
    0x5346544E: "ntfs",
    0x7366746E: "ntfs3",
    0x9FA0: "proc",
    0x62656572: "sysfs",
    0x3434: "nilfs2",
    0xCA451A4E: "bcachefs",
}
# File system type names as /proc/self/mountinfo gives them; "fuse.<name>" (sshfs, rclone,
# gvfsd-fuse...) counts too, except fuseblk, a FUSE driver of a local disk (ntfs-3g).
_REMOTE_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "smb2",
        "9p",
        "virtiofs",
        "fuse",
        "ceph",
        "afs",
        "coda",
        "ncpfs",
        "vboxsf",
        "vmhgfs",
        "davfs",
        "glusterfs",
        "lustre",
        "gpfs",
        "ocfs2",
        "gfs2",
        "beegfs",
        "orangefs",
        "pvfs2",
    }
)
_MOUNTINFO = Path("/proc/self/mountinfo")


def filesystem_type(path: Path) -> str | None:
    """The type of the file system ``path`` is on ("ext4", "nfs4", "fuse.sshfs"...), or None.

    From /proc/self/mountinfo (the mount that holds ``path``: its device, else the longest mount
    point above it), which names FUSE file systems by their driver; else from statfs(2)'s magic
    number (no /proc); None when neither tells (not Linux, or ``path`` is gone).
    """
    try:
        real = os.path.realpath(path)
        dev = os.stat(real).st_dev
    except OSError:
        return None
    found = _mount_fstype(real, dev)
    if found is not None:
        return found
    magic = _statfs_magic(real)
    if magic is None:
        return None
    return _REMOTE_MAGIC.get(magic) or _LOCAL_MAGIC.get(magic) or f"0x{magic:x}"


def is_remote_filesystem(fstype: str | None) -> bool:
    """Whether files on ``fstype`` can change without an inotify event (edits made by other
    machines, or by a VM's host). ``fuseblk`` (ntfs-3g on a local disk) is local."""
    if fstype is None:
        return False
    return fstype in _REMOTE_TYPES or fstype.startswith("fuse.")


def remote_fs_notice(settings: Settings) -> str | None:
    """What a watcher of this home will say about its folder's file system (for ``doctor``):
    None when inotify sees every change there (or ``remote_fs`` is ``local``)."""
    root = settings.paths.blueprints
    while not root.exists() and root != root.parent:
        root = root.parent  # not created yet: it will be made on the file system above it
    fstype = filesystem_type(root)
    setting = settings.remote_fs
    remote = is_remote_filesystem(fstype) if setting == "auto" else setting == "remote"
    if not remote:
        return None
    interval = min(settings.rescan_interval_s, settings.remote_rescan_interval_s)
    return _remote_notice(settings.paths.blueprints, fstype, setting, interval)


def _remote_notice(root: Path, fstype: str | None, setting: str, interval: float) -> str:
    why = (
        f"on a network or FUSE file system ({fstype})"
        if setting == "auto"
        else f"on {fstype or 'a file system'} set as remote (remote_fs: remote)"
    )
    return (
        f"the blueprints folder {root} is {why}: inotify does not report edits made on other "
        f"machines, so they are found by a rescan every {interval:.3g} s "
        "(remote_rescan_interval_s; remote_fs: local if only this machine edits it)"
    )


def _mount_fstype(real: str, dev: int) -> str | None:
    """The mountinfo type of the mount holding ``real`` (an absolute, resolved path)."""
    if sys.platform == "win32":  # (no /proc there)
        return None
    try:
        text = _MOUNTINFO.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None
    by_dev: tuple[int, str] | None = None
    by_prefix: tuple[int, str] | None = None
    for line in text.splitlines():
        # 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            mount_point = _unescape_mount(fields[4])
            major, minor = (int(n) for n in fields[2].split(":"))
            fstype = fields[sep + 1]
        except (ValueError, IndexError):
            continue
        if not (
            real == mount_point
            or mount_point == "/"
            or real.startswith(mount_point.rstrip("/") + "/")
        ):
            continue
        # Later lines mount over earlier ones at the same point: >= keeps the last.
        if by_prefix is None or len(mount_point) >= by_prefix[0]:
            by_prefix = (len(mount_point), fstype)
        if os.makedev(major, minor) == dev and (by_dev is None or len(mount_point) >= by_dev[0]):
            by_dev = (len(mount_point), fstype)
    # A btrfs sub-volume has a device number of its own, unlike its mount: the prefix then.
    best = by_dev or by_prefix
    return best[1] if best is not None else None


def _unescape_mount(field: str) -> str:
    """A mountinfo path field with its octal escapes (space, tab, newline, backslash) undone."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _statfs_magic(path: str) -> int | None:
    """statfs(2)'s f_type for ``path`` (via ctypes: os.statvfs does not give it), or None."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        statfs = libc.statfs
    except (OSError, AttributeError):
        return None
    # struct statfs starts with f_type (a long on every Linux ABI but s390x); 256 bytes hold it all.
    buf = ctypes.create_string_buffer(256)
    if statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF
