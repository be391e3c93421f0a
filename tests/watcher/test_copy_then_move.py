"""A blueprint copied and then moved while the watcher runs: the moved original keeps its id.

Real files, a running watcher, real inotify events.
"""

from __future__ import annotations

import os
import shutil

import pytest

from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder


@pytest.mark.parametrize("with_meta", [True, False], ids=["pair", "yaml-alone"])
def test_a_copy_made_just_before_the_original_moved_does_not_take_its_identity(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, with_meta: bool
) -> None:
    """``cp m.* backup/; mv m.* z/`` with the watcher running: the copy and the move settle
    together. Taken in path order, ``backup/m`` found the original's path gone and claimed
    its identity as a move (its history, tags and sync record), and the original, moved to
    ``z/``, got a new id. The moved original kept its inode; a copy never has it."""
    bp = store.save("m", "steps: [a]\n", tags=["mine"])
    os.makedirs(store.root / "backup")
    os.makedirs(store.root / "z")
    assert watcher.wait_idle()
    recorder.take()
    names = ["m.blueprint.yaml", "m.blueprint.meta.json"] if with_meta else ["m.blueprint.yaml"]
    for name in names:
        shutil.copy2(store.root / name, store.root / "backup" / name)
    for name in names:
        os.rename(store.root / name, store.root / "z" / name)
    assert watcher.wait_idle()
    events = recorder.take()
    assert ("moved", bp.id, "z/m.blueprint.yaml") in [(e.kind, e.id, e.path) for e in events]
    assert store.resolve(bp.id).path == "z/m.blueprint.yaml"
    assert store.resolve(bp.id).tags == ("mine",)
    assert [r.path for r in reversed(store.history(bp.id))] == [
        "m.blueprint.yaml",
        "z/m.blueprint.yaml",
    ]
    assert store.resolve("backup/m").id != bp.id
    assert store.check().clean


def test_a_rescan_gives_the_identity_to_the_moved_original_not_the_copy(
    make_store, make_watcher
) -> None:
    """The same, found by a rescan of a watcher not started (``Watcher.rescan()``): its
    differences went in path order too."""
    store: BlueprintStore = make_store(reconcile=False)
    bp = store.save("m", "steps: [a]\n", tags=["mine"])
    for folder in ("backup", "z"):
        os.makedirs(store.root / folder)
    for name in ("m.blueprint.yaml", "m.blueprint.meta.json"):
        shutil.copy2(store.root / name, store.root / "backup" / name)
        os.rename(store.root / name, store.root / "z" / name)
    watcher: Watcher = make_watcher(store)
    watcher.rescan()
    assert store.resolve(bp.id).path == "z/m.blueprint.yaml"
    assert store.resolve("backup/m").id != bp.id
    assert store.check().clean
