"""Replays of how real editors and tools save a file, syscall for syscall.

Each function replaces the content of ``path`` with ``data`` the way the named tool does it, including
its temp, backup and lock files, so the watcher sees the same event sequence as in real use.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path


def _write_new(path: Path, data: bytes, *, fsync: bool = True, excl: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if excl else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def vim_rename(path: Path, data: bytes) -> None:
    """vim with backupcopy=no: probe file 4913, rename X -> X~, write new X, fsync, unlink X~."""
    probe = path.with_name("4913")
    _write_new(probe, b"", fsync=False, excl=True)
    os.unlink(probe)
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    _write_new(path, data, excl=True)
    os.unlink(backup)


def vim_inplace(path: Path, data: bytes) -> None:
    """vim with backupcopy=yes: copy X to X~, then open X with O_TRUNC, write, fsync; unlink X~."""
    backup = path.with_name(path.name + "~")
    _write_new(backup, path.read_bytes())
    _write_new(path, data)
    os.unlink(backup)


def emacs(path: Path, data: bytes) -> None:
    """emacs: lock symlink .#X, rename X -> X~ (backup by rename), create X, drop the lock."""
    lock = path.with_name(".#" + path.name)
    os.symlink(f"user@host.{os.getpid()}:0", lock)
    backup = path.with_name(path.name + "~")
    if backup.exists():
        os.unlink(backup)
    os.rename(path, backup)
    _write_new(path, data, excl=True)
    os.unlink(lock)


def jetbrains(path: Path, data: bytes) -> None:
    """JetBrains safe write: X___jb_tmp___, rename X -> X___jb_old___, tmp -> X, delete old."""
    tmp = path.with_name(path.name + "___jb_tmp___")
    old = path.with_name(path.name + "___jb_old___")
    _write_new(tmp, data)
    os.rename(path, old)
    os.rename(tmp, path)
    os.unlink(old)


def vscode_inplace(path: Path, data: bytes) -> None:
    """VS Code's default save: truncate and write in place."""
    _write_new(path, data, fsync=False)


def vscode_atomic(path: Path, data: bytes) -> None:
    """VS Code with atomic save: write a temp file next to X, then rename it over X."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(3)}.tmp")
    _write_new(tmp, data)
    os.replace(tmp, path)


def gedit(path: Path, data: bytes) -> None:
    """gedit / GLib g_file_replace: write .goutputstream-XXXXXX, fsync, rename over X."""
    tmp = path.with_name(".goutputstream-" + secrets.token_hex(3).upper())
    _write_new(tmp, data)
    os.rename(tmp, path)


def git_checkout(path: Path, data: bytes) -> None:
    """git checkout of a changed file: unlink, then create with O_EXCL and write."""
    os.unlink(path)
    _write_new(path, data, fsync=False, excl=True)


def rsync(path: Path, data: bytes, *, mtime: float | None = None) -> None:
    """rsync -a: write ``.NAME.XXXXXX`` beside NAME, set the source's mode and (older) mtime on
    it, rename it over NAME."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(3)}")
    _write_new(tmp, data, fsync=False, excl=True)
    os.chmod(tmp, 0o644)
    when = time.time() - 3600 if mtime is None else mtime
    os.utime(tmp, (when, when))
    os.rename(tmp, path)


def sed_inplace(path: Path, data: bytes) -> None:
    """GNU sed -i: write ``sedXXXXXX`` in the same folder, copy the mode, rename over NAME."""
    tmp = path.with_name("sed" + secrets.token_hex(3))
    _write_new(tmp, data, fsync=False, excl=True)
    os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    os.rename(tmp, path)


def chunked_slow(path: Path, data: bytes, *, chunk: int = 4096, pause_s: float = 0.004) -> None:
    """A slow writer: open with O_TRUNC, write in chunks with pauses, close."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        for i in range(0, len(data), chunk):
            os.write(fd, data[i : i + chunk])
            time.sleep(pause_s)  # the point of this replay: a writer slower than the settle window
    finally:
        os.close(fd)


def case_rename(path: Path, new_path: Path) -> None:
    """A file manager renaming the YAML only (its meta file stays where it was)."""
    os.rename(path, new_path)


SAVERS: dict[str, Callable[[Path, bytes], None]] = {
    "vim-rename": vim_rename,
    "vim-inplace": vim_inplace,
    "emacs": emacs,
    "jetbrains": jetbrains,
    "vscode-inplace": vscode_inplace,
    "vscode-atomic": vscode_atomic,
    "gedit": gedit,
    "git-checkout": git_checkout,
    "rsync": rsync,
    "sed-inplace": sed_inplace,
    "chunked-slow": chunked_slow,
}
