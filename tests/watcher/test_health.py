"""The watcher keeps watching through failures: unlistable folders, odd names, a deleted root.

Each of these once ended the worker thread for good while ``state`` still said running, so every
later edit went unseen until a restart.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localstore import files as fs
from localstore.errors import WatcherError
from localstore.store import BlueprintStore
from localstore.watcher import HEALTH_CHECK_S, Watcher, WatcherState
from tests.conftest import eventually

from .conftest import Recorder


def live_paths(store: BlueprintStore) -> list[str]:
    with store.index.read() as cur:
        return sorted(str(r[0]) for r in cur.execute("SELECT path FROM blueprints WHERE deleted=0"))


@pytest.fixture
def unlistable(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path, bool], None]]:
    """Make a folder unlistable (or listable again): mode 0, and a PermissionError injected for
    it (the tests may run as root, which the mode alone does not stop)."""
    blocked: set[Path] = set()
    real_scandir = os.scandir

    def scandir(path: int | str | os.PathLike[str] = ".") -> object:
        if isinstance(path, str | os.PathLike) and Path(path) in blocked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    def block(folder: Path, on: bool = True) -> None:
        folder.chmod(0 if on else 0o755)
        (blocked.add if on else blocked.discard)(folder)

    monkeypatch.setattr(fs.os, "scandir", scandir)
    yield block
    for folder in list(blocked):
        block(folder, False)


def test_unlistable_folder_is_reported_and_its_blueprints_are_not_deleted(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, unlistable
) -> None:
    store.save("a", "name: a\n")
    store.save("private/p", "name: p\n")
    assert watcher.wait_idle(10)
    recorder.take()
    unlistable(store.root / "private")
    watcher.rescan()
    assert watcher.state is WatcherState.DEGRADED
    assert "private/" in (watcher.problem or "")
    assert live_paths(store) == ["a.blueprint.yaml", "private/p.blueprint.yaml"]
    # Everything else is still watched.
    (store.root / "a.blueprint.yaml").write_text("name: a\nedited: true\n")
    (store.root / "b.blueprint.yaml").write_text("name: b\n")
    assert watcher.wait_idle(10)
    assert sorted((e.kind, e.path) for e in recorder.take()) == [
        ("created", "b.blueprint.yaml"),
        ("modified", "a.blueprint.yaml"),
    ]
    # Listable again: the next rescan clears the problem, and the folder is watched as before.
    unlistable(store.root / "private", False)
    watcher.rescan()
    assert watcher.state is WatcherState.RUNNING
    os.remove(store.root / "private" / "p.blueprint.yaml")
    os.remove(store.root / "private" / "p.blueprint.meta.json")
    assert watcher.wait_idle(10)
    assert watcher.state is WatcherState.RUNNING
    assert live_paths(store) == ["a.blueprint.yaml", "b.blueprint.yaml"]


def test_non_utf8_file_name_does_not_stop_the_watcher(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    store.save("a", "name: a\n")
    assert watcher.wait_idle(10)
    recorder.take()
    folder = os.path.join(os.fsencode(store.root), b"imports")
    os.mkdir(folder)
    with open(os.path.join(folder, b"caf\xe9.blueprint.yaml"), "wb") as f:
        f.write(b"name: cafe\n")
    assert watcher.wait_idle(10)
    watcher.rescan()
    (store.root / "a.blueprint.yaml").write_text("name: a\nedited: true\n")
    assert watcher.wait_idle(10)
    assert [(e.kind, e.path) for e in recorder.take()] == [("modified", "a.blueprint.yaml")]
    assert watcher.state is WatcherState.RUNNING


def test_an_unexpected_error_is_counted_and_followed_by_a_rescan(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = watcher._on_fs_event
    calls = {"n": 0}

    def fail_once(ev, now):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected")
        real(ev, now)

    monkeypatch.setattr(watcher, "_on_fs_event", fail_once)
    rescans = watcher.stats.rescans
    (store.root / "x.blueprint.yaml").write_text("name: x\n")
    # The event that failed is lost; the rescan after the back-off finds the file anyway.
    assert eventually(lambda: watcher.stats.rescans > rescans, 10)
    assert watcher.wait_idle(10)
    assert [(e.kind, e.path) for e in recorder.take()] == [("created", "x.blueprint.yaml")]
    assert watcher.stats.errors == 1
    assert watcher.state is WatcherState.RUNNING and watcher.problem is None


def test_dead_worker_is_reported_failed(
    store: BlueprintStore, watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Fatal(BaseException):
        pass

    def die() -> bool:
        raise Fatal("injected")

    monkeypatch.setattr(watcher, "_step", die)
    watcher._q.put(("noop",))  # wake the worker
    assert eventually(lambda: watcher.state is WatcherState.FAILED, 10)
    assert isinstance(watcher.failure, Fatal)
    assert "injected" in (watcher.problem or "")
    with pytest.raises(WatcherError):
        watcher.wait_idle(1)
    with pytest.raises(WatcherError):
        watcher.rescan()


def test_folder_deleted_and_restored_later_is_watched_again(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    store.save("f/a", "name: a\n")
    assert watcher.wait_idle(10)
    backup = tmp_path / "backup"
    shutil.copytree(store.root, backup)
    recorder.take()
    shutil.rmtree(store.root)
    # Missing for longer than a health check: it used to try to watch the missing folder and die.
    assert eventually(lambda: watcher.state is WatcherState.DEGRADED, 10)
    time.sleep(HEALTH_CHECK_S + 0.5)
    assert watcher.state is WatcherState.DEGRADED
    assert "missing" in (watcher.problem or "")
    with pytest.raises(WatcherError):
        watcher.wait_idle(1)
    shutil.copytree(backup, store.root)
    assert eventually(lambda: watcher.state is WatcherState.RUNNING, 10)
    assert watcher.wait_idle(10)
    recorder.take()
    (store.root / "f" / "a.blueprint.yaml").write_text("name: a\nedited: true\n")
    (store.root / "new.blueprint.yaml").write_text("name: new\n")
    assert watcher.wait_idle(10)
    assert sorted((e.kind, e.path) for e in recorder.take()) == [
        ("created", "new.blueprint.yaml"),
        ("modified", "f/a.blueprint.yaml"),
    ]


def test_blueprints_are_not_deleted_while_the_folder_is_away(
    store: BlueprintStore, make_watcher, recorder: Recorder, tmp_path: Path
) -> None:
    """Moved away, unmounted, replaced by an empty folder: a rescan then lists nothing, which
    must not be taken for every blueprint deleted (sync would push the tombstones)."""
    w: Watcher = make_watcher(store, rescan_interval_s=0.2)
    w.start()
    for i in range(3):
        store.save(f"f/b{i}", f"name: b{i}\n")
    assert w.wait_idle(10)
    before = live_paths(store)
    recorder.take()
    away = tmp_path / "away"
    os.rename(store.root, away)
    assert eventually(lambda: w.state is WatcherState.DEGRADED, 10)
    rescans = w.stats.rescans
    time.sleep(1.0)  # several timer rescans are due meanwhile
    with pytest.raises(WatcherError, match="missing"):
        w.rescan()
    assert live_paths(store) == before
    # An empty folder at the same path (the mount point of an unmounted drive) is not the folder.
    store.root.mkdir()
    time.sleep(HEALTH_CHECK_S + 0.5)
    assert w.state is WatcherState.DEGRADED
    assert "replaced" in (w.problem or "")
    assert live_paths(store) == before
    assert w.stats.rescans == rescans
    store.root.rmdir()
    os.rename(away, store.root)
    assert eventually(lambda: w.state is WatcherState.RUNNING, 10)
    assert w.wait_idle(10)
    assert live_paths(store) == before
    assert recorder.take() == []
    (store.root / "f" / "b0.blueprint.yaml").write_text("name: b0\nedited: true\n")
    assert w.wait_idle(10)
    assert [(e.kind, e.path) for e in recorder.take()] == [("modified", "f/b0.blueprint.yaml")]


def test_folder_replaced_by_a_restored_copy_is_adopted(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    store.save("f/a", "name: a\n")
    store.save("f/gone", "name: gone\n")
    assert watcher.wait_idle(10)
    backup = tmp_path / "backup"
    shutil.copytree(store.root, backup)
    os.remove(backup / "f" / "gone.blueprint.yaml")
    os.remove(backup / "f" / "gone.blueprint.meta.json")
    recorder.take()
    shutil.rmtree(store.root)
    shutil.copytree(backup, store.root)
    assert eventually(lambda: watcher.stats.restarts >= 1, 10)
    assert watcher.wait_idle(10)
    # What the restored copy lacks is deleted; the rest is untouched.
    assert [(e.kind, e.path) for e in recorder.take()] == [("deleted", "f/gone.blueprint.yaml")]
    assert watcher.state is WatcherState.RUNNING
