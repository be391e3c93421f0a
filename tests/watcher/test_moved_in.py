"""A file moved in from outside the blueprints folder is complete: no wait for a writer.

A rename is atomic: the file that lands has all its bytes. One whose source is outside the
watched tree (``mv ~/Downloads/plan.blueprint.yaml``, a tool that writes its temp file in
another folder of the same disk and renames it over the blueprint) reaches inotify as a lone
IN_MOVED_TO, which watchdog reported as a plain create: the watcher took the file for one being
written and waited ``write_quiet_ms`` (1 s) for a close that never comes, instead of the settle
window (40 ms). Real watcher, real renames; the quiet period is made longer than the waits
here, so a move-in taken for a write is not indexed by the time ``wait_idle`` gives up.
"""

from __future__ import annotations

import os
from pathlib import Path

from localstore import files as fs
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder

QUIET_MS = 600_000  # far beyond wait_idle's timeout below


def test_a_file_moved_in_from_outside_is_taken_at_once(
    store: BlueprintStore, make_watcher, recorder: Recorder, tmp_path: Path
) -> None:
    outside = tmp_path / "downloads"  # same file system as the store, outside its folder
    outside.mkdir()
    bp = store.save("team/plan", "v: 1\n")
    other = store.save("team/other", "w: 1\n")
    recorder.take()
    watcher: Watcher = make_watcher(store, write_quiet_ms=QUIET_MS)
    watcher.start()
    assert watcher.wait_idle(30)

    # An edit saved elsewhere and moved over the blueprint's YAML.
    (outside / "plan.yaml").write_text("v: 2\n")
    os.rename(outside / "plan.yaml", store.abspath(bp.path))
    assert watcher.wait_idle(20), watcher.problem
    assert [(e.kind, e.id) for e in recorder.take()] == [("modified", bp.id)]
    assert store.load(bp.id).content == "v: 2\n"

    # A pair moved in (both files): one blueprint with its meta's id. The pair is another
    # blueprint's, taken out of the folder first (moved out: deleted after the grace).
    for name in (other.path, fs.meta_path_for(other.path)):
        os.rename(store.abspath(name), outside / Path(name).name)
    assert watcher.wait_idle(20), watcher.problem
    assert [(e.kind, e.id) for e in recorder.take()] == [("deleted", other.id)]
    # Back in under another name, meta first (as rsync and sync tools bring a pair).
    for name, new in (
        (fs.meta_path_for(other.path), f"team/again{fs.META_SUFFIX}"),
        (other.path, f"team/again{fs.YAML_SUFFIX}"),
    ):
        os.rename(outside / Path(name).name, store.abspath(new))
    assert watcher.wait_idle(20), watcher.problem
    assert [(e.id, e.path) for e in recorder.take()] == [(other.id, f"team/again{fs.YAML_SUFFIX}")]
    assert store.load(other.id).content == "w: 1\n"
