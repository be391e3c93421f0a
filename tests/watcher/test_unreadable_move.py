"""A YAML renamed while it cannot be read (chmod 000): its blueprint is not recorded deleted at
its old path (its id and hand-edited meta kept) but moves once the file is readable again.

The ingest of the moved YAML failed before its content could say whose it was (a YAML moved
alone is matched by hash, a pair by its meta's id), so nothing held the old path's delete back:
after its grace the blueprint was recorded deleted (a delete sync pushes) and its meta removed,
and the YAML, readable again, got a new id without the meta's edits. Its inode tells, unread.

Real files throughout, and a running watcher's inotify events: first with real permissions, in a
child process that they apply to (see test_permissions.py); then, in this process (root here,
which reads any file), with the read error injected into ``files._read_regular``, for the
variants (a pair moved, its meta the unreadable file) and for a reconcile pass.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from localstore import _file_reads, _watch_due, _watch_ingest
from localstore import files as fs
from localstore.store import BlueprintStore
from localstore.watcher import Watcher
from tests.conftest import eventually
from tests.watcher.test_permissions import run_child

CHILD = Path(__file__).with_name("unreadable_move_child.py")


@pytest.mark.parametrize("which", ["alone", "pair"])
def test_a_yaml_renamed_unreadable_keeps_its_blueprint_with_real_permissions(
    tmp_path: Path, which: str
) -> None:
    steps = run_child(tmp_path / "home", which, CHILD)
    start = steps["start"]
    assert start["tags"] == ["by-hand"]
    unreadable = steps["unreadable"]
    assert "cannot index j.blueprint.yaml" in (unreadable["problem"] or ""), unreadable
    assert unreadable["history"] == start["history"], unreadable  # (not recorded deleted)
    if which == "alone":  # (its meta, with the edits, stays at the old name meanwhile)
        assert "i.blueprint.meta.json" in unreadable["files"], unreadable
    after = steps["readable"]
    assert after["idle"] is True and after["id"] is True, after
    assert after["tags"] == ["by-hand"], after
    top = start["history"][0][0]
    assert after["history"] == [[top + 1, "j.blueprint.yaml", False], *start["history"]], after
    assert after["files"] == ["j.blueprint.meta.json", "j.blueprint.yaml"], after


def _unreadable(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Reads of files called ``name`` fail as a chmod 000 file's do (EACCES)."""
    read = _file_reads._read_regular  # (under read_regular and read_regular_seen, there)

    def refused(path: Path | str, limit: int | None = None) -> tuple[bytes, os.stat_result]:
        if Path(path).name == name:
            denied = PermissionError(errno.EACCES, "Permission denied")
            raise fs.map_os_error(denied, "cannot read", Path(path)) from denied
        return read(path, limit)

    monkeypatch.setattr(_file_reads, "_read_regular", refused)


def _saved_with_tags_by_hand(store: BlueprintStore) -> str:
    ident = store.save("i", "steps: [a]\n", tags=["mine"]).id
    meta = store.root / "i.blueprint.meta.json"
    by_hand = json.loads(meta.read_text())
    by_hand["tags"] = ["by-hand"]
    meta.write_text(json.dumps(by_hand))
    return ident


def _name(stem: str, kind: str) -> str:
    return f"{stem}.blueprint.{'yaml' if kind == 'yaml' else 'meta.json'}"


@pytest.mark.parametrize(
    ("moved", "refused"),
    [
        (["yaml"], "j.blueprint.yaml"),
        (["yaml", "meta"], "j.blueprint.yaml"),
        (["yaml", "meta"], "j.blueprint.meta.json"),  # (its YAML read, its meta not)
    ],
)
def test_a_move_that_cannot_be_read_keeps_its_blueprint_in_the_watcher(
    make_store, make_watcher, monkeypatch: pytest.MonkeyPatch, moved: list[str], refused: str
) -> None:
    monkeypatch.setattr(_watch_ingest, "RETRY_S", (0.05, 0.1))
    monkeypatch.setattr(_watch_due, "MAX_DELETE_HOLD_S", 0.2)
    monkeypatch.setattr(_watch_ingest, "GIVE_UP_RESCAN_S", (600.0, 600.0))
    store: BlueprintStore = make_store()
    ident = _saved_with_tags_by_hand(store)
    root = store.root
    w: Watcher = make_watcher(
        store, delete_grace_ms=100, write_quiet_ms=100, rescan_interval_s=3600
    )
    w.start()
    assert w.wait_idle()
    assert store.resolve(ident).tags == ("by-hand",)
    before = [(r.rev, r.path, r.deleted) for r in store.history(ident)]
    _unreadable(monkeypatch, refused)
    for kind in moved:
        os.rename(root / _name("i", kind), root / _name("j", kind))
    # Given up on j: i's delete grace and every hold are long over by then.
    assert eventually(lambda: "next rescan" in (w.problem or ""), 30)
    assert [(r.rev, r.path, r.deleted) for r in store.history(ident)] == before
    monkeypatch.undo()
    w.rescan()
    assert w.wait_idle()
    moved_bp = store.resolve("j")
    assert moved_bp.id == ident and moved_bp.tags == ("by-hand",)
    history = [(r.rev, r.path, r.deleted) for r in store.history(ident)]
    assert history == [(before[0][0] + 1, "j.blueprint.yaml", False), *before]
    assert store.check().clean


def test_a_reconcile_pass_keeps_the_blueprint_of_a_yaml_moved_unreadable(
    make_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same move found by a reconcile pass (an open of the store, ``check --fix``): the
    pass's delete of the old path waits for the failed path as well."""
    store: BlueprintStore = make_store()
    ident = _saved_with_tags_by_hand(store)
    root = store.root
    store.close()
    os.rename(root / "i.blueprint.yaml", root / "j.blueprint.yaml")
    _unreadable(monkeypatch, "j.blueprint.yaml")
    store = make_store()  # (its open reconciles: j is skipped, reported)
    assert [r.deleted for r in store.history(ident)] == [False] * len(store.history(ident))
    assert store.resolve(ident).path == "i.blueprint.yaml"
    assert (root / "i.blueprint.meta.json").exists()
    monkeypatch.undo()
    store.reconcile()
    moved = store.resolve("j")
    assert moved.id == ident and moved.tags == ("by-hand",)
    assert store.check().clean
