"""The durable-write layer's platform primitives (localstore._durable), selected by platform.

No macOS or Windows machine runs these: each test builds another platform's primitives with
``primitives_for(platform)`` and runs them here on real files, a real store and a real index,
injecting that platform's errors as faults (a rename refused with Windows' sharing violation, a
directory that cannot be opened, a refused F_FULLFSYNC). docs/portability.md lists what only a
run on those systems can show.
"""

from __future__ import annotations

import ast
import errno
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localstore import _durable
from localstore import files as fs
from localstore.errors import PermissionDeniedError, StorageError
from localstore.index import _connect

OLD = "version: 1\nsteps: [a]\n"
NEW = "version: 2\nsteps: [a, b]\n"
REPO = Path(__file__).resolve().parents[2]


def _win_error(winerror: int) -> PermissionError:
    """A PermissionError as Python raises it on Windows (errno EACCES, the Windows code beside)."""
    exc = PermissionError(errno.EACCES, "The process cannot access the file")
    exc.winerror = winerror  # type: ignore[attr-defined]  # (set only by Windows' OSError)
    return exc


class FlakyReplace:
    """os.replace that fails ``failures`` times (forever with None) with a Windows error."""

    def __init__(self, winerror: int, failures: int | None) -> None:
        self.winerror = winerror
        self.failures = failures
        self.calls = 0
        self.times: list[float] = []

    def __call__(self, src: str, dst: str) -> None:
        self.calls += 1
        self.times.append(time.monotonic())
        if self.failures is None or self.calls <= self.failures:
            raise _win_error(self.winerror)
        os.replace(src, dst)


def _as_platform(
    monkeypatch: pytest.MonkeyPatch,
    platform: str,
    replace_once: Callable[[str, str], None] | None = None,
) -> _durable.Primitives:
    """Make files.py use ``platform``'s primitives (what its import does on that system)."""
    prims = _durable.primitives_for(platform, replace_once=replace_once)
    monkeypatch.setattr(fs, "_os", _durable.calls_for(prims))
    monkeypatch.setattr(fs, "_DIR_FSYNC", prims.dir_fsync)
    # (None off its own system: a recorded file is then checked just before the replace.)
    monkeypatch.setattr(fs, "_EXCHANGE", prims.exchange)
    free = None if prims.free_bytes is _durable.statvfs_free else prims.free_bytes
    monkeypatch.setattr(fs, "_free_bytes", free)
    return prims


def _state(home: Path) -> dict[str, bytes]:
    root = home / "blueprints"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- selection -------------------------------------------------------------------------------------


def test_linux_uses_the_os_functions_themselves() -> None:
    prims = _durable.primitives_for("linux")
    assert (prims.fsync, prims.replace, prims.rename) == (os.fsync, os.replace, os.rename)
    assert prims.dir_fsync and prims.free_bytes is _durable.statvfs_free
    # (the save path calls os.fsync/os.replace exactly as before: no wrapper on Linux)
    assert _durable.calls_for(prims) is os
    if sys.platform.startswith("linux"):
        assert fs._os is os and fs._free_bytes is None and fs._DIR_FSYNC


def test_macos_flushes_the_drive_cache_and_windows_retries_renames() -> None:
    mac = _durable.primitives_for("darwin")
    assert mac.fsync is _durable.full_fsync and mac.dir_fsync
    assert mac.replace is os.replace
    win = _durable.primitives_for("win32")
    assert win.fsync is os.fsync  # (_commit: FlushFileBuffers flushes the drive cache itself)
    assert not win.dir_fsync  # a directory cannot be opened or flushed there
    assert win.replace is not os.replace and win.free_bytes is _durable.disk_usage_free
    assert errno.EINVAL in win.no_hard_link_errnos  # CreateHardLinkW on FAT/exFAT
    assert _durable.calls_for(win) is not os


# -- Windows: a rename onto a file another program holds open ---------------------------------------


@pytest.mark.parametrize("winerror", [32, 33, 5])
def test_windows_save_waits_out_a_briefly_held_file(
    store, home: Path, monkeypatch: pytest.MonkeyPatch, winerror: int
) -> None:
    bp = store.save("w/flow", OLD)
    flaky = FlakyReplace(winerror, failures=2)  # an indexer opened the file, then let go
    _as_platform(monkeypatch, "win32", flaky)
    assert store.save("w/flow", NEW).rev == 2
    monkeypatch.undo()
    assert flaky.calls >= 3  # (two refused, then the YAML's rename, then the meta's)
    assert store.load(bp.id).content == NEW
    assert (home / "blueprints/w/flow.blueprint.yaml").read_text() == NEW
    assert store.check().clean


def test_windows_delete_waits_out_a_briefly_held_file(
    store, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bp = store.save("w/flow", OLD)
    flaky = FlakyReplace(32, failures=2)  # (a delete first renames the pair aside)
    _as_platform(monkeypatch, "win32", flaky)
    store.delete(bp.id)
    monkeypatch.undo()
    assert flaky.calls >= 3
    assert not (home / "blueprints/w/flow.blueprint.yaml").exists()
    assert store.check().clean


def test_windows_save_gives_up_on_a_file_kept_open_with_a_hint(
    store, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bp = store.save("w/flow", OLD)
    before = _state(home)
    stuck = FlakyReplace(32, failures=None)  # an editor keeps it open without sharing
    _as_platform(monkeypatch, "win32", stuck)
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        store.save("w/flow", NEW)
    waited = time.monotonic() - start
    monkeypatch.undo()
    assert not isinstance(info.value, PermissionDeniedError)
    assert "in use by another program" in str(info.value)
    assert "close the file in the program that has it open" in info.value.hint
    # Bounded: every retry delay once (SQLite's 25 ms x n, about 1.4 s), then the error.
    assert stuck.calls == len(_durable.REPLACE_RETRY_DELAYS) + 1
    assert sum(_durable.REPLACE_RETRY_DELAYS) <= waited < 10
    assert _state(home) == before
    assert store.load(bp.id).content == OLD
    assert store.check().clean


def test_windows_access_denied_that_lasts_names_both_causes(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save("w/flow", OLD)
    _as_platform(monkeypatch, "win32", FlakyReplace(5, failures=None))
    with pytest.raises(PermissionDeniedError) as info:
        store.save("w/flow", NEW)
    assert "read-only" in info.value.hint and "another program" in info.value.hint


def test_a_plain_permission_error_is_not_retried(tmp_path: Path) -> None:
    calls: list[str] = []

    def denied(src: str, dst: str) -> None:
        calls.append(dst)
        raise PermissionError(errno.EACCES, "Permission denied")  # (no winerror: not in use)

    replace = _durable.primitives_for("win32", replace_once=denied).replace
    with pytest.raises(PermissionError):
        replace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert len(calls) == 1


def test_map_os_error_tells_a_file_in_use_from_a_permission_problem() -> None:
    in_use = fs.map_os_error(_win_error(32), "cannot replace", "x.yaml")
    assert type(in_use) is StorageError and "in use by another program" in str(in_use)
    assert "antivirus" in in_use.hint
    plain = fs.map_os_error(PermissionError(errno.EACCES, "denied"), "cannot replace", "x")
    assert isinstance(plain, PermissionDeniedError) and "permissions" in plain.hint


# -- Windows: directories cannot be opened, there is no statvfs -------------------------------------


@pytest.fixture
def windows_directories(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """os.open of a directory fails with EACCES, as it does on Windows."""
    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    yield


def test_windows_save_does_not_open_directories(
    store, home: Path, monkeypatch: pytest.MonkeyPatch, windows_directories: None
) -> None:
    # (On main every save failed here: fsync_dir's os.open(directory) became a StorageError.)
    _as_platform(monkeypatch, "win32")
    bp = store.save("new/folder/flow", OLD)
    assert store.save("new/folder/flow", NEW).rev == 2
    store.delete(bp.id)
    assert not (home / "blueprints/new/folder/flow.blueprint.yaml").exists()


def test_windows_space_check_asks_windows(
    store, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Windows has no os.statvfs: on main every save raised AttributeError from space_is_low.)
    prims = _as_platform(monkeypatch, "win32")
    assert fs._free_bytes is prims.free_bytes is _durable.disk_usage_free
    assert fs.space_is_low(home) is (_durable.disk_usage_free(str(home)) < fs.LOW_SPACE_BYTES)
    monkeypatch.setattr(fs, "_free_bytes", lambda folder: 0)  # a full disk, as Windows says it
    assert fs.space_is_low(home)
    bp = store.save("w/flow", OLD)
    assert store.save("w/flow", NEW).rev == 2  # (keeps the previous file by a hard link)
    assert store.load(bp.id).content == NEW and store.check().clean


# -- macOS: F_FULLFSYNC ----------------------------------------------------------------------------


def test_full_fsync_asks_for_f_fullfsync(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        _durable.full_fsync(fd, fcntl_call=lambda f, cmd: seen.append((f, cmd)))
    finally:
        os.close(fd)
    assert seen == [(fd, _durable.F_FULLFSYNC_DARWIN)]


def test_full_fsync_falls_back_to_fsync_where_refused(tmp_path: Path) -> None:
    def refused(fd: int, cmd: int) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")  # an SMB share, FAT

    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    _durable.full_fsync(fd, fcntl_call=refused)  # the plain fsync succeeds
    os.close(fd)
    # ... and the plain fsync's own error is what the caller sees (EBADF, not the refusal).
    with pytest.raises(OSError) as info:
        _durable.full_fsync(fd, fcntl_call=refused)
    assert info.value.errno == errno.EBADF


def test_macos_save_path_works_through_full_fsync(
    store, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Here Linux refuses command 51 with EINVAL: the fallback fsync runs for every flush.)
    _as_platform(monkeypatch, "darwin")
    bp = store.save("m/flow", OLD)
    assert store.save("m/flow", NEW).rev == 2
    assert store.load(bp.id).content == NEW and store.check().clean


@pytest.mark.parametrize(("platform", "expected"), [("darwin", 1), ("linux", 0)])
def test_index_connection_uses_fullfsync_on_macos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, expected: int
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    conn = _connect(tmp_path / "index.db", 1000)
    monkeypatch.undo()
    try:
        assert conn.execute("PRAGMA fullfsync").fetchall()[0][0] == expected
        assert conn.execute("PRAGMA checkpoint_fullfsync").fetchall()[0][0] == expected
    finally:
        conn.close()


# -- imports ---------------------------------------------------------------------------------------

# Modules a Windows Python does not have (and msvcrt/winreg, which POSIX ones do not).
_PLATFORM_ONLY = {"fcntl", "pwd", "grp", "termios", "resource", "posix", "msvcrt", "winreg"}


def _unguarded_imports(tree: ast.Module) -> list[str]:
    """Platform-only modules imported by a module's top-level statements (not under an if)."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name in _PLATFORM_ONLY]
        elif isinstance(node, ast.ImportFrom) and node.module in _PLATFORM_ONLY:
            found.append(node.module)
        elif isinstance(node, ast.Expr) and "register_at_fork" in ast.unparse(node):
            found.append("os.register_at_fork")
    return found


def test_no_module_imports_a_platform_only_module_unguarded() -> None:
    # On main `import localstore` raised ModuleNotFoundError on Windows (fcntl, via
    # _daemon_state), and so did `import sync.embed` (fcntl, os.register_at_fork).
    offenders = {}
    for folder in ("localstore", "sync"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if "localcloud" in path.parts:  # (the POSIX-only dev stack, loaded by `cloud` only)
                continue
            found = _unguarded_imports(ast.parse(path.read_text(encoding="utf-8")))
            if found:
                offenders[str(path.relative_to(REPO))] = found
    assert offenders == {}
