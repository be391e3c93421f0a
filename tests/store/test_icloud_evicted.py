"""iCloud Drive's evicted files are kept, not deleted.

On macOS before 14 with "Optimize Mac Storage", iCloud frees space by replacing a file with a
hidden stub ``.<name>.icloud`` (a small binary plist) in the same folder; opening the file (or
``brctl download``) brings it back. Reconcile and the watcher took the vanished pair for a delete,
and sync pushed the delete to every device. The stub is made here as iCloud makes it.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import localstore
from localstore.store import BlueprintStore
from localstore.watcher import Watcher


def _evict(folder: Path, name: str) -> None:
    """Replace ``folder/name`` with iCloud's stub, as "Optimize Mac Storage" does."""
    path = folder / name
    stub = {
        "NSURLNameKey": name,
        "NSURLFileSizeKey": path.stat().st_size,
        "NSURLFileResourceTypeKey": "NSURLFileResourceTypeRegular",
    }
    (folder / f".{name}.icloud").write_bytes(plistlib.dumps(stub, fmt=plistlib.FMT_BINARY))
    path.unlink()


def _evicted(store: BlueprintStore) -> list[tuple[str, str]]:
    return [(p["kind"], p["path"]) for p in store.check().problems if p["kind"] == "evicted"]


def test_an_evicted_pair_is_kept_at_open_and_reported(home: Path) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("notes/plan", "title: plan\n")
    folder = home / "blueprints/notes"
    _evict(folder, "plan.blueprint.yaml")
    _evict(folder, "plan.blueprint.meta.json")
    with localstore.open(home=home) as store:
        assert [b.id for b in store.list()] == [bp.id]
        assert [r.rev for r in store.history(bp.id)] == [1]  # no deleted revision
        assert store.load(bp.id).content == "title: plan\n"  # from history
        assert _evicted(store) == [("evicted", "notes/plan.blueprint.yaml")]
        hint = next(p for p in store.check().problems if p["kind"] == "evicted")["detail"]
        assert "brctl download" in hint
    # The download brings the files back: nothing was lost, nothing is reported.
    for name in ("plan.blueprint.yaml", "plan.blueprint.meta.json"):
        (folder / f".{name}.icloud").unlink()
    (folder / "plan.blueprint.yaml").write_text("title: plan\n")
    with localstore.open(home=home) as store:
        assert store.list()[0].id == bp.id
        assert _evicted(store) == []


def test_an_evicted_yaml_alone_is_kept(home: Path) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", "title: plan\n")
    _evict(home / "blueprints", "plan.blueprint.yaml")
    with localstore.open(home=home) as store:
        assert [b.id for b in store.list()] == [bp.id]
        assert _evicted(store) == [("evicted", "plan.blueprint.yaml")]


def test_an_evicted_meta_alone_is_not_rewritten(home: Path) -> None:
    """Writing a new meta where iCloud holds the real one would make iCloud keep both (a
    duplicate meta) once it downloads it."""
    with localstore.open(home=home) as store:
        bp = store.save("plan", "title: plan\n", description="mine")
    _evict(home / "blueprints", "plan.blueprint.meta.json")
    with localstore.open(home=home) as store:
        assert not (home / "blueprints/plan.blueprint.meta.json").exists()
        assert store.row(bp.id).meta.description == "mine"
        assert _evicted(store) == [("evicted", "plan.blueprint.yaml")]


def test_a_pair_deleted_without_a_stub_is_still_deleted(home: Path) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", "title: plan\n")
    for name in ("plan.blueprint.yaml", "plan.blueprint.meta.json"):
        (home / "blueprints" / name).unlink()
    with localstore.open(home=home) as store:
        assert store.list() == []
        assert store.history(bp.id)[0].deleted


def test_the_watcher_keeps_an_evicted_pair(home: Path) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", "title: plan\n")
        watcher = Watcher(store)
        watcher.start()
        try:
            assert watcher.wait_idle(30)
            _evict(home / "blueprints", "plan.blueprint.yaml")
            _evict(home / "blueprints", "plan.blueprint.meta.json")
            watcher.rescan()  # waits for the vanished files' grace and their ingest
            assert watcher.wait_idle(30)
        finally:
            watcher.stop()
            watcher.join(10)
        assert [b.id for b in store.list()] == [bp.id]
        assert [r.rev for r in store.history(bp.id)] == [1]
