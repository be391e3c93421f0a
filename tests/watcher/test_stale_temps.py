"""The watcher's rescan keeps a stale temp that holds an interrupted save's only copy."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from localstore._kept_edits import unacknowledged_kept
from localstore.store import BlueprintStore
from localstore.watcher import Watcher


def test_a_rescan_keeps_an_interrupted_saves_version(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A save killed between flushing its temps and renaming them left the new version only in
    # its temp; the watcher's rescan removed it as a leftover a minute later.
    store.save("a", "steps: [old]\n")
    root = Path(store.root)
    (root / ".a.blueprint.yaml.0badf00d.lstmp").write_text("steps: [new]\n")
    later = time.time_ns() + 3600 * 10**9  # (a change time cannot be set back)
    monkeypatch.setattr("localstore._reconcile_leftovers.time.time_ns", lambda: later)
    watcher: Watcher = make_watcher(store)
    watcher.start()
    assert watcher.wait_idle(30)
    watcher.rescan()
    assert not list(root.glob(".*.lstmp"))
    (kept,) = (store.paths.data / "recovered").rglob("a.blueprint.yaml")
    assert kept.read_text() == "steps: [new]\n"
    # ... and doctor lists it until the person deletes the copy (the rescan's report is the
    # watcher's own: nobody reads it); check stays clean: that save never returned.
    assert store.check().clean
    assert unacknowledged_kept(store) == [kept.relative_to(store.paths.data).as_posix()]
    kept.unlink()
    assert unacknowledged_kept(store) == []
    assert store.check(fix=True).clean
