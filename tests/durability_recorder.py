"""A recorder of the file-system calls that decide what survives a power loss.

After a power cut, data written but not fsynced may be gone, and a create, rename, unlink or
mkdir not followed by an fsync of its directory may be undone (ext4, XFS, APFS all allow it).
``DurabilityRecorder`` wraps ``os.open``/``os.write``/``os.fsync``/``os.rename``/..., the
platform's rename that refuses a taken name (``files._RENAME_NEW``, a C call: how a save places
a new file), its rename that swaps two names (``files._EXCHANGE``: how a save replaces a
recorded file) and the built-in ``open`` purely to RECORD: every real call still runs, nothing is faked. It keeps what
is still volatile:

- ``content``: a file written (``os.write``, ``os.ftruncate``, ``open`` for writing) since its
  last fsync/fdatasync;
- ``entries``: the name changes (create, rename in or out, unlink, mkdir, rmdir, link) in a
  directory since that directory's last fsync.

A ``syncfs`` (files.syncfs) or ``os.sync`` makes everything on its filesystem durable. A rename
carries a file's (or a folder's) volatile content to its new name; an unlink drops it.

Use it as a context manager around the call that acknowledges something to a user, then assert
``rec.volatile(under=home)`` is empty (``assert_durable``): what is left there is what a power
cut right after the acknowledgement could undo. Temp names (``.lstmp``) are left out by default:
a leftover temp is removed by reconcile, and a vanished one was never acknowledged.

Not recorded: SQLite's own I/O (in C, it keeps its own ordering), and fd-relative calls
(``dir_fd=``, shutil.rmtree's) which are resolved through /proc when possible.
"""

from __future__ import annotations

import builtins
import io
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localstore import files as fs

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC | os.O_CREAT


def _fd_path(fd: int) -> str | None:
    """The path an open descriptor names (Linux /proc); None when unknown or deleted."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    if target.endswith(" (deleted)") or not target.startswith("/"):
        return None
    return target


def _abs(path: Any, dir_fd: int | None = None) -> str:
    p = os.fsdecode(os.fspath(path))
    if dir_fd is not None and not os.path.isabs(p):
        base = _fd_path(dir_fd) or ""
        p = os.path.join(base, p)
    # The parent is resolved (a symlinked tmp dir), the last name kept as given.
    parent, name = os.path.split(os.path.abspath(p))
    return os.path.join(os.path.realpath(parent), name)


@dataclass
class Volatile:
    """What a power cut now could undo: volatile file contents and directory entries."""

    content: set[str] = field(default_factory=set)
    entries: dict[str, list[str]] = field(default_factory=dict)  # dir -> ["create name", ...]

    def __bool__(self) -> bool:
        return bool(self.content or self.entries)

    def __str__(self) -> str:
        lines = [f"content not fsynced: {p}" for p in sorted(self.content)]
        for d, ops in sorted(self.entries.items()):
            lines.append(f"directory not fsynced: {d} after {', '.join(ops)}")
        return "\n".join(lines) or "nothing volatile"


class DurabilityRecorder:
    """Records file-system calls (see the module docstring). Thread-safe."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._mp = monkeypatch
        self._lock = threading.RLock()
        self.content: set[str] = set()
        self.entries: dict[str, list[tuple[str, str]]] = {}  # dir -> [(op, name)]
        self.log: list[str] = []  # every recorded call, in order (for messages)

    # -- the state ---------------------------------------------------------------------------

    def _entry(self, op: str, path: str) -> None:
        d, name = os.path.split(path)
        self.entries.setdefault(d, []).append((op, name))

    def _moved(self, src: str, dst: str) -> None:
        if src in self.content:
            self.content.discard(src)
            self.content.add(dst)
        prefix = src + os.sep
        for p in [p for p in self.content if p.startswith(prefix)]:
            self.content.discard(p)
            self.content.add(dst + p[len(src) :])
        for d in [d for d in self.entries if d == src or d.startswith(prefix)]:
            self.entries[dst + d[len(src) :]] = self.entries.pop(d)

    def _swapped(self, a: str, b: str) -> None:
        """Two files swapped names (each carries its volatile content to the other name)."""
        in_a, in_b = a in self.content, b in self.content
        self.content.difference_update((a, b))
        if in_a:
            self.content.add(b)
        if in_b:
            self.content.add(a)

    def _synced_fs(self, dev: int | None) -> None:
        def on_fs(p: str) -> bool:
            if dev is None:
                return True
            q = p
            while True:
                try:
                    return os.stat(q).st_dev == dev
                except OSError:
                    parent = os.path.dirname(q)
                    if parent == q:
                        return False
                    q = parent

        self.content = {p for p in self.content if not on_fs(p)}
        self.entries = {d: ops for d, ops in self.entries.items() if not on_fs(d)}

    # -- the wrappers --------------------------------------------------------------------------

    def install(self) -> None:
        """Wrap the calls (undone by the monkeypatch fixture at the test's end)."""
        mp, real = self._mp, {n: getattr(os, n) for n in _OS_NAMES}
        real_open = builtins.open
        real_syncfs = fs.syncfs

        def rec(msg: str) -> None:
            self.log.append(msg)

        def os_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            p = _abs(path, dir_fd)
            existed = os.path.lexists(p)
            fd = real["open"](path, flags, mode, dir_fd=dir_fd)
            with self._lock:
                if flags & os.O_CREAT and not existed:
                    self._entry("create", p)
                    rec(f"create {p}")
                if flags & os.O_TRUNC and existed:
                    self.content.add(p)
            return fd

        def os_write(fd: int, data: Any) -> int:
            n = real["write"](fd, data)
            p = _fd_path(fd)
            if p is not None and os.path.isfile(p):
                with self._lock:
                    self.content.add(p)
            return n

        def os_ftruncate(fd: int, length: int) -> None:
            real["ftruncate"](fd, length)
            p = _fd_path(fd)
            if p is not None:
                with self._lock:
                    self.content.add(p)

        def flush(fd: int, name: str) -> None:
            real[name](fd)
            p = _fd_path(fd)
            if p is None:
                return
            with self._lock:
                rec(f"{name} {p}")
                if os.path.isdir(p):
                    self.entries.pop(p, None)
                else:
                    self.content.discard(p)

        def os_fsync(fd: Any) -> None:
            flush(fd if isinstance(fd, int) else fd.fileno(), "fsync")

        def os_fdatasync(fd: Any) -> None:
            flush(fd if isinstance(fd, int) else fd.fileno(), "fdatasync")

        def renamer(name: str) -> Callable[..., None]:
            def call(
                src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None
            ) -> None:
                s, d = _abs(src, src_dir_fd), _abs(dst, dst_dir_fd)
                real[name](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
                with self._lock:
                    rec(f"{name} {s} -> {d}")
                    self._entry("rename-out", s)
                    self._entry("rename-in", d)
                    self._moved(s, d)

            return call

        def remover(name: str, op: str) -> Callable[..., None]:
            def call(path: Any, *, dir_fd: int | None = None) -> None:
                p = _abs(path, dir_fd)
                real[name](path, dir_fd=dir_fd)
                with self._lock:
                    rec(f"{op} {p}")
                    self._entry(op, p)
                    self.content.discard(p)
                    # A removed folder's own pending entries go with it: once its removal is
                    # flushed in the parent there is nothing left to undo in it.
                    self.entries.pop(p, None)

            return call

        def os_mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
            p = _abs(path, dir_fd)
            real["mkdir"](path, mode, dir_fd=dir_fd)
            with self._lock:
                rec(f"mkdir {p}")
                self._entry("mkdir", p)

        def os_link(src: Any, dst: Any, **kw: Any) -> None:
            d = _abs(dst, kw.get("dst_dir_fd"))
            real["link"](src, dst, **kw)
            with self._lock:
                rec(f"link {d}")
                self._entry("link", d)

        real_rename_new = fs._RENAME_NEW

        def files_rename_new(src: str, dst: str) -> None:
            s, d = _abs(src), _abs(dst)
            assert real_rename_new is not None
            real_rename_new(src, dst)
            with self._lock:
                rec(f"rename_new {s} -> {d}")
                self._entry("rename-out", s)
                self._entry("rename-in", d)
                self._moved(s, d)

        real_exchange = fs._EXCHANGE

        def files_exchange(src: str, dst: str) -> None:
            s, d = _abs(src), _abs(dst)
            assert real_exchange is not None
            real_exchange(src, dst)
            with self._lock:
                rec(f"exchange {s} <-> {d}")
                self._entry("exchange", s)
                self._entry("exchange", d)
                self._swapped(s, d)

        def os_sync() -> None:
            real["sync"]()
            with self._lock:
                rec("sync")
                self._synced_fs(None)

        def files_syncfs(directory: Any) -> None:
            real_syncfs(directory)
            dev = os.stat(directory).st_dev
            with self._lock:
                rec(f"syncfs {directory}")
                self._synced_fs(dev)

        def b_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if not any(c in mode for c in "wxa+"):
                return real_open(file, mode, *args, **kwargs)
            if isinstance(file, int):  # os.fdopen: writes to a descriptor os.open made
                fh = real_open(file, mode, *args, **kwargs)
                p = _fd_path(file)
                if p is not None:
                    with self._lock:
                        self.content.add(p)
                return fh
            p = _abs(file)
            existed = os.path.lexists(p)
            fh = real_open(file, mode, *args, **kwargs)
            with self._lock:
                if not existed:
                    rec(f"create {p}")
                    self._entry("create", p)
                # (Writes through a file object are not seen one by one: opened for writing is
                # taken as written.)
                self.content.add(p)
            return fh

        mp.setattr(os, "open", os_open)
        mp.setattr(os, "write", os_write)
        mp.setattr(os, "ftruncate", os_ftruncate)
        mp.setattr(os, "fsync", os_fsync)
        mp.setattr(os, "fdatasync", os_fdatasync)
        mp.setattr(os, "rename", renamer("rename"))
        mp.setattr(os, "replace", renamer("replace"))
        mp.setattr(os, "unlink", remover("unlink", "unlink"))
        mp.setattr(os, "remove", remover("remove", "unlink"))
        mp.setattr(os, "rmdir", remover("rmdir", "rmdir"))
        mp.setattr(os, "mkdir", os_mkdir)
        mp.setattr(os, "link", os_link)
        mp.setattr(os, "sync", os_sync)
        mp.setattr(fs, "syncfs", files_syncfs)
        if real_rename_new is not None:
            mp.setattr(fs, "_RENAME_NEW", files_rename_new)
        if real_exchange is not None:
            mp.setattr(fs, "_EXCHANGE", files_exchange)
        mp.setattr(builtins, "open", b_open)
        mp.setattr(io, "open", b_open)

    # -- questions -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything recorded so far (call before the call under test)."""
        with self._lock:
            self.content.clear()
            self.entries.clear()
            self.log.clear()

    def volatile(
        self, *, under: Path | str, temps: bool = False, ignore: Sequence[Path | str] = ()
    ) -> Volatile:
        """What is still volatile under ``under`` (temp names left out unless ``temps``; nothing
        under a folder of ``ignore``, such as a cache whose loss costs nothing)."""
        root = _abs(under)
        skipped = [_abs(p) for p in ignore]

        def below(p: str, top: str) -> bool:
            return p == top or p.startswith(top + os.sep)

        def inside(p: str) -> bool:
            return below(p, root) and not any(below(p, s) for s in skipped)

        def counted(name: str) -> bool:
            return temps or not name.endswith(fs.TEMP_SUFFIX)

        with self._lock:
            out = Volatile()
            out.content = {p for p in self.content if inside(p) and counted(p)}
            for d, ops in self.entries.items():
                kept = [
                    f"{op} {name}"
                    for op, name in ops
                    if counted(name) and inside(os.path.join(d, name))
                ]
                if kept:
                    out.entries[d] = kept
            return out

    def assert_durable(
        self,
        *,
        under: Path | str,
        what: str,
        temps: bool = False,
        ignore: Sequence[Path | str] = (),
    ) -> None:
        """Fail when a power cut now could undo something recorded under ``under``."""
        left = self.volatile(under=under, temps=temps, ignore=ignore)
        assert not left, f"{what}: acknowledged, but a power cut now could undo it:\n{left}"

    @contextmanager
    def acknowledged(
        self, *, under: Path | str, what: str, ignore: Sequence[Path | str] = ()
    ) -> Iterator[None]:
        """Record the block; on its normal exit assert everything under ``under`` is durable."""
        self.reset()
        yield
        self.assert_durable(under=under, what=what, ignore=ignore)


_OS_NAMES = (
    "open",
    "write",
    "ftruncate",
    "fsync",
    "fdatasync",
    "rename",
    "replace",
    "unlink",
    "remove",
    "rmdir",
    "mkdir",
    "link",
    "sync",
)
