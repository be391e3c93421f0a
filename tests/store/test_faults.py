"""I/O faults injected at each step of a save: a typed error reaches the caller, the previous version
stays intact on disk and in the index, and no temp file is left behind.

Mocks only inject the fault; the files, the directories and the index are real.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from localstore import files as fs
from localstore.errors import (
    DiskFullError,
    LocalStoreError,
    PermissionDeniedError,
    StorageError,
)

OLD = "version: 1\nsteps: [a]\n"
NEW = "version: 2\nsteps: [a, zebra]\n"


class Injector:
    """Fail the n-th call of an os function with an OSError."""

    def __init__(
        self,
        name: str,
        n: int,
        err: int,
        when: Callable[..., bool] | None = None,
        real: Callable[..., object] | None = None,
    ) -> None:
        self.name, self.n, self.err, self.when = name, n, err, when
        self.real = real or getattr(os, name)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        if self.when is None or self.when(*args):
            self.calls += 1
            if self.calls == self.n:
                raise OSError(self.err, os.strerror(self.err))
        return self.real(*args, **kwargs)


def _is_dir(*args) -> bool:
    return bool(args) and isinstance(args[0], str | Path) and os.path.isdir(args[0])


def _not_dir_fd(*args) -> bool:
    return True


FAULTS = [
    ("fsync-yaml-temp", "fsync", 1, errno.EIO, StorageError, None),
    ("fsync-meta-temp", "fsync", 2, errno.EIO, StorageError, None),
    ("fsync-dir", "fsync", 3, errno.EIO, StorageError, None),
    ("enospc-write-yaml", "write", 1, errno.ENOSPC, DiskFullError, None),
    ("enospc-write-meta", "write", 2, errno.ENOSPC, DiskFullError, None),
    ("eacces-create-temp", "open", 1, errno.EACCES, PermissionDeniedError, None),
    ("erofs-create-meta-temp", "open", 2, errno.EROFS, PermissionDeniedError, None),
    ("replace-yaml", "replace", 1, errno.EIO, StorageError, None),
    ("replace-meta", "replace", 2, errno.EACCES, PermissionDeniedError, None),
    ("edquot-write", "write", 1, errno.EDQUOT, DiskFullError, None),
]


def _inject_rename_new(
    monkeypatch: pytest.MonkeyPatch, n: int, err: int, fallback: str
) -> Injector:
    """Fail the n-th rename that refuses a taken name (files.place_new, files.rename_new: a new
    file's placing, a move). The platform's call (renameat2 on Linux: not an ``os`` function),
    or where there is none the ``os`` call files.py falls back to (``fallback``)."""
    if fs._RENAME_NEW is None:
        injector = Injector(fallback, n, err)
        monkeypatch.setattr(os, fallback, injector)
    else:
        injector = Injector("rename_new", n, err, real=fs._RENAME_NEW)
        monkeypatch.setattr(fs, "_RENAME_NEW", injector)
    return injector


def _inject_replace(monkeypatch: pytest.MonkeyPatch, n: int, err: int) -> Injector:
    """Fail the n-th replace of a recorded file (files.replace_recorded): the platform's swap
    (renameat2 RENAME_EXCHANGE on Linux: not an ``os`` function), or ``os.replace`` where there
    is none."""
    if fs._EXCHANGE is None:
        injector = Injector("replace", n, err)
        monkeypatch.setattr(os, "replace", injector)
    else:
        injector = Injector("exchange", n, err, real=fs._EXCHANGE)
        monkeypatch.setattr(fs, "_EXCHANGE", injector)
    return injector


def _state(home: Path) -> dict[str, bytes]:
    root = home / "blueprints"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("label", "func", "n", "err", "expected", "when"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_fault_during_update_keeps_previous_version(
    store, home: Path, monkeypatch, label, func, n, err, expected, when
) -> None:
    bp = store.save("w/flow", OLD)
    before = _state(home)
    if func == "replace":
        # A recorded file is replaced by a swap that shows what it replaced (see files.py).
        injector = _inject_replace(monkeypatch, n, err)
    else:
        injector = Injector(func, n, err, when)
        monkeypatch.setattr(os, func, injector)
    with pytest.raises(expected) as info:
        store.save("w/flow", NEW)
    monkeypatch.undo()
    assert injector.calls >= n, "the fault was never reached"
    assert isinstance(info.value, LocalStoreError) and info.value.hint
    assert _state(home) == before
    loaded = store.load(bp.id)
    assert loaded.content == OLD and loaded.rev == 1
    # The search index went back too (a save writes its search entries before it renames).
    assert [h.info.id for h in store.search("version")] == [bp.id]
    assert store.search("zebra") == []
    assert store.check().clean
    assert not list((home / "blueprints").rglob("*" + fs.TEMP_SUFFIX))
    assert store.save("w/flow", NEW).rev == 2


@pytest.mark.parametrize(
    ("label", "func", "n", "err", "expected", "when"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_fault_during_create_leaves_nothing(
    store, home: Path, monkeypatch, label, func, n, err, expected, when
) -> None:
    store.save("other", OLD)
    before = _state(home)
    if func == "replace":
        # A new name is placed with a rename that refuses a taken one (files.place_new).
        _inject_rename_new(monkeypatch, n, err, "link")
    else:
        monkeypatch.setattr(os, func, Injector(func, n, err, when))
    with pytest.raises(expected):
        store.save("w/new", NEW)
    monkeypatch.undo()
    assert {k: v for k, v in _state(home).items()} == before
    assert not store.exists("w/new")
    assert store.check().clean


def test_fault_in_index_transaction_after_files_restores_files(store, home: Path) -> None:
    bp = store.save("w/flow", OLD)
    before = _state(home)

    def failing_hook(cur, blueprint) -> None:
        raise DiskFullError("simulated: the index commit failed")

    with pytest.raises(DiskFullError):
        store.save("w/flow", NEW, tx_hook=failing_hook)
    assert _state(home) == before
    assert store.load(bp.id).content == OLD
    with pytest.raises(DiskFullError):
        store.move(bp.id, "elsewhere/flow", tx_hook=failing_hook)
    assert _state(home) == before
    assert store.check().clean


def test_fault_during_move(store, home: Path, monkeypatch) -> None:
    bp = store.save("a/flow", OLD)
    before = _state(home)
    # (A move's destination was found free: renamed with files.rename_new, never over a file.)
    _inject_rename_new(monkeypatch, 2, errno.EIO, "rename")
    with pytest.raises(StorageError):
        store.move(bp.id, "b/flow")
    monkeypatch.undo()
    store.reconcile()
    loaded = store.load(bp.id)
    assert loaded.content == OLD
    assert store.check().clean
    assert len(_state(home)) == len(before)


def test_fault_during_delete(store, home: Path, monkeypatch) -> None:
    bp = store.save("d/flow", OLD)
    # (A delete renames the pair aside before its commit and unlinks it after.)
    monkeypatch.setattr(os, "rename", Injector("rename", 1, errno.EACCES))
    with pytest.raises(PermissionDeniedError):
        store.delete(bp.id)
    monkeypatch.undo()
    assert store.load(bp.id).content == OLD
    assert store.check().clean


def _failing_hook(cur, blueprint) -> None:
    raise DiskFullError("simulated: the index commit failed")


@pytest.mark.parametrize("fault", ["hook", "rename-meta", "commit"])
def test_failed_delete_leaves_the_pair_and_the_unrecorded_edit(
    store, home: Path, monkeypatch, fault: str
) -> None:
    bp = store.save("d/flow", OLD)
    yaml_file = home / "blueprints/d/flow.blueprint.yaml"
    yaml_file.write_text(NEW)  # an edit no watcher has recorded yet
    os.utime(yaml_file, ns=(0, yaml_file.stat().st_mtime_ns + 1_000_000_000))
    before = _state(home)
    hook = None
    if fault == "hook":
        hook = _failing_hook
    elif fault == "commit":  # both files set aside, then SQLite turns the COMMIT into a rollback
        store.index.conn.setcommithook(lambda: True)
    else:  # the YAML is set aside, then the meta file's rename fails
        monkeypatch.setattr(os, "rename", Injector("rename", 2, errno.EACCES))
    with pytest.raises(StorageError):
        store.delete(bp.id, tx_hook=hook)
    monkeypatch.undo()
    store.index.conn.setcommithook(None)
    assert _state(home) == before
    assert not store.row(bp.id).deleted
    # Nothing of the failed delete is recorded; the edit is still on disk for reconcile to record.
    store.reconcile()
    assert store.load(bp.id).content == NEW
    assert [r.deleted for r in store.history(bp.id)] == [False, False]
    assert store.check().clean
