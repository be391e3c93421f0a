"""What inotify (the watcher's source) sees when files.place_new puts a file at a free name.

The watcher takes a file for complete on a close-write or a move-in; a create without either is
a file still being written, due only after ``write_quiet_ms`` (docs/watcher.md). place_new
renames (one move-in) where the filesystem has a no-replace rename, and hard-links where it has
none (ZFS before 2.2, NFS, older FUSE: a create, no close-write). Real inotify, real files; the
only fault injected is the missing no-replace rename.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from pathlib import Path

import pytest

from localstore import files as fs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100
SENTINEL = "zz-sentinel"


def _events(folder: Path, act: object) -> dict[str, int]:
    """Run ``act()`` and return, per name in ``folder``, the OR of the inotify masks it got."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    try:
        mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        assert libc.inotify_add_watch(fd, os.fsencode(folder), mask) >= 0
        act()  # type: ignore[operator]
        # (Events come in order: the sentinel's close-write ends what act() caused.)
        (folder / SENTINEL).write_bytes(b"")
        seen: dict[str, int] = {}
        while not seen.get(SENTINEL, 0) & IN_CLOSE_WRITE:
            buf = os.read(fd, 65536)
            at = 0
            while at < len(buf):
                _wd, ev_mask, _cookie, size = struct.unpack_from("iIII", buf, at)
                name = buf[at + 16 : at + 16 + size].rstrip(b"\0").decode()
                seen[name] = seen.get(name, 0) | ev_mask
                at += 16 + size
        return seen
    finally:
        os.close(fd)


def _no_rename_new(*_args: object) -> None:
    raise OSError(22, "no RENAME_NOREPLACE on this filesystem")  # (EINVAL: NFS, ZFS < 2.2)


def test_a_file_placed_by_a_hard_link_is_complete_to_the_watcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a no-replace rename, a new file of a save or a download (PendingWrites) was a
    create with no close-write: the watcher waited its write-quiet time for each."""
    monkeypatch.setattr(fs, "_RENAME_NEW", _no_rename_new)
    target = tmp_path / "n.blueprint.yaml"

    def save() -> None:
        pending = fs.PendingWrites()
        pending.add(target, b"steps: [a]\n", new=True)
        pending.commit()

    seen = _events(tmp_path, save)
    assert target.read_bytes() == b"steps: [a]\n"
    assert seen[target.name] & (IN_CLOSE_WRITE | IN_MOVED_TO), hex(seen[target.name])


def test_a_file_renamed_into_place_gets_no_extra_close_write(tmp_path: Path) -> None:
    """create_file opened and closed every file it made on Linux, for a hard link's sake: after
    a rename (the move-in says complete) that was one open and one more event for nothing."""
    if fs._RENAME_NEW is None:
        pytest.skip("this C library has no renameat2 (glibc < 2.28): place_new hard-links")
    target = tmp_path / "n.blueprint.meta.json"
    seen = _events(tmp_path, lambda: fs.create_file(target, b"{}"))
    assert target.read_bytes() == b"{}"
    assert seen[target.name] == IN_MOVED_TO, hex(seen[target.name])
