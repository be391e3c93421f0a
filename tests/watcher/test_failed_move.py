"""A YAML moved alone whose ingest keeps failing, with the watcher running: its blueprint is not
recorded deleted at its old path (its id and hand-edited meta kept) until the move is resolved.

Real files, a running watcher, real inotify events; the fault (a disk refusing the new meta's
name) is injected into ``files.create_file``, as in ``tests/store/test_reconcile_identity.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from localstore import _watch_due, _watch_ingest
from localstore import files as fs
from localstore.errors import StorageError
from localstore.store import BlueprintStore
from localstore.watcher import Watcher
from tests.conftest import eventually


def _refuse(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    create_file = fs.create_file

    def refused(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
        if path.name == name:
            raise StorageError(f"cannot create {name}: refused (injected)")
        return create_file(path, data, mode=mode)

    monkeypatch.setattr(fs, "create_file", refused)


def test_a_moved_yaml_whose_ingest_keeps_failing_keeps_its_blueprint_at_the_old_path(
    make_store, make_watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mv i.blueprint.yaml j.blueprint.yaml`` (its meta, with tags changed by hand, left
    behind) while ``j``'s meta cannot be written. The failed ingest kept ``i``'s meta, but once
    ``i``'s delete grace (and the hold behind the retries) was over, ``i`` was recorded deleted
    and its meta removed; when the disk took the name, ``j`` got a new id without the tags."""
    # (Short back-offs and hold: the give-up comes in about a second, not half a minute.)
    monkeypatch.setattr(_watch_ingest, "RETRY_S", (0.05, 0.1))
    monkeypatch.setattr(_watch_due, "MAX_DELETE_HOLD_S", 0.2)
    monkeypatch.setattr(_watch_ingest, "GIVE_UP_RESCAN_S", (600.0, 600.0))
    store: BlueprintStore = make_store()
    bp = store.save("i", "steps: [a]\n", tags=["mine"])
    root = store.root
    old_meta = root / "i.blueprint.meta.json"
    by_hand = json.loads(old_meta.read_text())
    by_hand["tags"] = ["by-hand"]
    old_meta.write_text(json.dumps(by_hand))
    w: Watcher = make_watcher(
        store, delete_grace_ms=100, write_quiet_ms=100, rescan_interval_s=3600
    )
    w.start()
    assert w.wait_idle()
    assert store.resolve(bp.id).tags == ("by-hand",)
    _refuse(monkeypatch, "j.blueprint.meta.json")
    os.rename(root / "i.blueprint.yaml", root / "j.blueprint.yaml")
    # Given up on j (off the pending list): i's grace and every hold are long over by then.
    assert eventually(lambda: "next rescan" in (w.problem or ""), 30)
    assert not w.wait_idle()  # (idle, with j not indexed: False)
    assert store.resolve(bp.id).path == "i.blueprint.yaml"  # kept, not recorded deleted
    assert json.loads(old_meta.read_text())["tags"] == ["by-hand"]
    monkeypatch.undo()
    w.rescan()
    assert w.wait_idle()
    moved = store.resolve("j")
    assert moved.id == bp.id
    assert moved.tags == ("by-hand",)
    assert not old_meta.exists()
    assert store.check().clean
