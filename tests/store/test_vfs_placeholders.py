"""Nextcloud's and ownCloud's virtual-file placeholders are evictions, not deletes.

With the desktop client's "virtual files" in suffix mode (the mode it offers on Linux, and on any
system as an option), "Free up local space" replaces a file by an empty placeholder named
``<name>.nextcloud`` (ownCloud and its branded clients: ``<name>.owncloud``): the client writes the
placeholder, then removes the file. Opening the placeholder, or "Always keep on this device",
brings the file back. A blueprints folder inside a Nextcloud folder had its freed pairs recorded
deleted, by the watcher and by the reconcile at open, and sync pushed the deletes to every device;
the placeholder was passed over (no blueprint suffix). They are kept and reported as iCloud
Drive's evicted files are (``test_icloud_evicted.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

CLIENTS = [("nextcloud", "Nextcloud"), ("owncloud", "ownCloud")]


def _free_up(folder: Path, name: str, suffix: str) -> None:
    """Replace ``folder/name`` by the client's placeholder, in the client's order."""
    (folder / f"{name}.{suffix}").write_bytes(b"")
    (folder / name).unlink()


def _evicted(store: BlueprintStore) -> list[dict[str, str]]:
    return [p for p in store.check().problems if p["kind"] == "evicted"]


@pytest.mark.parametrize(("suffix", "client"), CLIENTS)
def test_a_freed_pair_is_kept_at_open_and_reported(home: Path, suffix: str, client: str) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("notes/plan", "title: plan\n", description="mine")
    folder = home / "blueprints/notes"
    _free_up(folder, "plan.blueprint.yaml", suffix)
    _free_up(folder, "plan.blueprint.meta.json", suffix)
    with localstore.open(home=home) as store:
        assert [b.id for b in store.list()] == [bp.id]
        assert [r.rev for r in store.history(bp.id)] == [1]  # no deleted revision
        assert store.load(bp.id).content == "title: plan\n"
        # No meta written beside the placeholder: the client would keep both once it
        # downloads the real one.
        assert not (folder / "plan.blueprint.meta.json").exists()
        (problem,) = _evicted(store)
        assert problem["path"] == "notes/plan.blueprint.yaml"
        assert f"plan.blueprint.yaml.{suffix}" in problem["detail"]
        assert client in problem["detail"]
    # The client brings the files back (the placeholder goes): read as any file.
    for name in ("plan.blueprint.yaml", "plan.blueprint.meta.json"):
        (folder / f"{name}.{suffix}").unlink()
    (folder / "plan.blueprint.yaml").write_text("title: plan\n")
    with localstore.open(home=home) as store:
        assert [b.id for b in store.list()] == [bp.id]
        assert store.row(bp.id).meta.description == "mine"  # its meta written back from the index
        assert _evicted(store) == []


@pytest.mark.parametrize(("suffix", "client"), CLIENTS)
def test_the_watcher_keeps_a_freed_pair(home: Path, suffix: str, client: str) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", "title: plan\n")
        watcher = Watcher(store)
        watcher.start()
        try:
            assert watcher.wait_idle(30)
            _free_up(home / "blueprints", "plan.blueprint.yaml", suffix)
            _free_up(home / "blueprints", "plan.blueprint.meta.json", suffix)
            assert watcher.wait_idle(30)  # past the vanished files' grace and their re-check
            watcher.rescan()
            assert watcher.wait_idle(30)
        finally:
            watcher.stop()
            watcher.join(10)
        assert [b.id for b in store.list()] == [bp.id]
        assert [r.rev for r in store.history(bp.id)] == [1]
        assert [p["path"] for p in _evicted(store)] == ["plan.blueprint.yaml"]


def test_a_placeholder_of_another_name_keeps_nothing(home: Path) -> None:
    """Only the placeholder of the blueprint's own file name keeps it."""
    with localstore.open(home=home) as store:
        bp = store.save("plan", "title: plan\n")
        store.save("other", "title: other\n")
    root = home / "blueprints"
    (root / "other.blueprint.yaml.nextcloud").write_bytes(b"")
    for name in ("plan.blueprint.yaml", "plan.blueprint.meta.json"):
        (root / name).unlink()
    with localstore.open(home=home) as store:
        assert [b.path for b in store.list()] == ["other.blueprint.yaml"]
        assert store.history(bp.id)[0].deleted
