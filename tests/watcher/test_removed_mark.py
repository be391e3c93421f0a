"""The blueprints folder's mark (``.localstore-folder``) removed while the folder stands with its
blueprints (``rm -rf`` removes it among the first files, or a user cleaning hidden files): every
health check (2 s) and every delete check took the unmarked folder for a new one, restarted the
observer and rescanned, for as long as the mark was missing (a daemon: a rescan every 2 s for
months). The folder is known by the blueprints it still holds at their recorded inodes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from localstore._reconcile import ROOT_MARK_NAME
from localstore.store import BlueprintStore
from localstore.watcher import Watcher, WatcherState
from tests.conftest import eventually


def _fill(store: BlueprintStore, count: int) -> None:
    for i in range(count):
        store.save(f"f{i % 4}/b{i}", f"name: b{i}\n")


def _health_checks(w: Watcher, count: int) -> None:
    """Run the folder's health check ``count`` times (each rescan starts with it)."""
    for _ in range(count):
        w.rescan()
        assert w.wait_idle(10)


def test_a_removed_mark_restarts_nothing_and_comes_back_at_the_next_open(
    store: BlueprintStore, make_watcher, make_store
) -> None:
    w: Watcher = make_watcher(store, delete_grace_ms=50)
    w.start()
    _fill(store, 20)
    assert w.wait_idle(30)
    restarts = w.stats.restarts
    mark = store.root / ROOT_MARK_NAME
    mark.unlink()
    _health_checks(w, 3)
    assert w.stats.restarts == restarts
    assert w.state is WatcherState.RUNNING and w.problem is None
    # Not written back while running: the folder may be the one an `rm -rf` is emptying, and a
    # file put back into it fails that rm ("Directory not empty").
    assert not mark.exists()
    # Still watched as usual: an edit and a delete are recorded.
    (store.root / "f0" / "b0.blueprint.yaml").write_text("name: b0\nv: 2\n")
    (store.root / "f1" / "b1.blueprint.yaml").unlink()
    (store.root / "f1" / "b1.blueprint.meta.json").unlink()
    assert w.wait_idle(30)
    assert eventually(lambda: len(store.list()) == 19, 10)
    assert store.resolve("f0/b0").rev == 2
    assert w.stats.restarts == restarts
    # The next open (another process's, `check --fix`'s) writes the mark back.
    make_store()
    assert mark.is_file()
    _health_checks(w, 1)
    assert w.stats.restarts == restarts


def test_an_unmarked_folder_without_its_recorded_blueprints_is_rescanned_once(
    store: BlueprintStore, make_watcher
) -> None:
    """Same inode, no mark, and none of the recorded YAMLs at their recorded inodes (a copy put
    back in place): watched anew and rescanned, once, not at every health check."""
    _fill(store, 8)
    (store.root / ROOT_MARK_NAME).unlink()
    for yaml in sorted(store.root.glob("*/*.yaml")):
        copy = yaml.with_name("copy.tmp")
        shutil.copy2(yaml, copy)
        os.replace(copy, yaml)  # the same bytes under a new inode
    w: Watcher = make_watcher(store)
    w.start()
    assert w.wait_idle(30)
    assert w.stats.restarts == 1
    _health_checks(w, 3)
    assert w.stats.restarts == 1
    assert w.state is WatcherState.RUNNING and w.problem is None
    assert len(store.list()) == 8


def test_an_unmarked_folder_emptied_is_still_taken_for_a_replaced_one(
    store: BlueprintStore, make_watcher
) -> None:
    """The mark gone, the folder then emptied (or deleted and made again with the old inode
    number): its blueprints are kept as a folder away, as without the mark before."""
    w: Watcher = make_watcher(store, delete_grace_ms=50)
    w.start()
    _fill(store, 6)
    assert w.wait_idle(30)
    (store.root / ROOT_MARK_NAME).unlink()
    _health_checks(w, 1)
    for sub in sorted(store.root.iterdir()):
        shutil.rmtree(sub)
    assert sorted(Path(store.root).iterdir()) == []
    assert eventually(lambda: w.state is WatcherState.DEGRADED, 10)
    assert "replaced" in (w.problem or "")
    assert len(store.list()) == 6
