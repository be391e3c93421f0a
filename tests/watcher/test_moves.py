"""Renames and moves keep identity (acceptance 2); deletes wait, are real, and are restorable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from localstore import _inotify, _watch_due, _watch_health
from localstore import files as fs
from localstore import watcher as watcher_mod
from localstore.store import BlueprintStore
from localstore.watcher import Watcher
from tests.conftest import eventually

from .conftest import STRESS, Recorder

FOLDER_SIZE = 500


def test_folder_rename_moves_every_blueprint(make_store, make_watcher) -> None:
    store: BlueprintStore = make_store()
    ids = {store.save(f"team/wf-{i}", f"n: {i}\n").id for i in range(FOLDER_SIZE)}
    rec = Recorder()
    store.subscribe(rec)
    watcher: Watcher = make_watcher(store)
    watcher.start()
    assert watcher.wait_idle()
    assert rec.take() == []
    os.rename(store.root / "team", store.root / "crew")
    assert watcher.wait_idle(120)
    events = rec.take()
    kinds = Recorder.kinds(events)
    assert kinds.count("moved") == FOLDER_SIZE
    assert set(kinds) == {"moved"}
    assert {e.id for e in events} == ids
    assert all(e.old_path and e.old_path.startswith("team/") for e in events)
    assert {i.id for i in store.list()} == ids
    assert all(i.path.startswith("crew/") for i in store.list())
    assert store.check().clean


def test_yaml_moved_without_meta_is_repaired(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    bp = store.save("a/one", "x: 1\n")
    assert watcher.wait_idle()
    recorder.take()
    os.makedirs(store.root / "b")
    os.rename(store.abspath("a/one.blueprint.yaml"), store.root / "b/renamed.blueprint.yaml")
    assert watcher.wait_idle()
    events = recorder.take()
    assert [(e.kind, e.id, e.path) for e in events] == [
        ("moved", bp.id, "b/renamed.blueprint.yaml")
    ]
    assert not store.abspath("a/one.blueprint.meta.json").exists()
    assert (store.root / "b/renamed.blueprint.meta.json").exists()
    assert store.check().clean


def test_copied_pair_gets_a_new_id(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    bp = store.save("orig", "x: 1\n")
    assert watcher.wait_idle()
    recorder.take()
    shutil.copytree(store.root, store.root.parent / "copy-src")
    os.makedirs(store.root / "dup")
    for name in ("orig.blueprint.yaml", "orig.blueprint.meta.json"):
        shutil.copy2(store.root.parent / "copy-src" / name, store.root / "dup" / name)
    assert watcher.wait_idle()
    events = recorder.take()
    assert [e.kind for e in events] == ["created"]
    assert events[0].id != bp.id
    assert store.resolve("orig").id == bp.id
    assert store.check().clean


def test_real_delete_goes_to_history_and_restores(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    bp = store.save("gone", "x: 1\n")
    assert watcher.wait_idle()
    recorder.take()
    os.unlink(store.abspath(bp.path))
    assert watcher.wait_idle()
    assert [(e.kind, e.id) for e in recorder.take()] == [("deleted", bp.id)]
    assert not store.abspath(fs.meta_path_for(bp.path)).exists()
    history = store.history(bp.id)
    assert history[0].deleted and history[0].origin == "external"
    restored = store.restore(bp.id, history[1].rev)
    assert restored.content == "x: 1\n"
    assert watcher.wait_idle()
    assert [e.origin for e in recorder.take()] == ["local"]


def test_move_away_then_create_is_a_modify(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    bp = store.save("dance", "x: 1\n")
    assert watcher.wait_idle()
    recorder.take()
    path = store.abspath(bp.path)
    outside = store.root.parent / "elsewhere.yaml"
    os.rename(path, outside)
    path.write_text("x: 2\n")
    outside.unlink()
    assert watcher.wait_idle()
    assert [(e.kind, e.id) for e in recorder.take()] == [("modified", bp.id)]


def test_folder_moved_out_deletes_and_moved_in_creates(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    ids = {store.save(f"box/b{i}", f"i: {i}\n").id for i in range(5)}
    assert watcher.wait_idle()
    recorder.take()
    trash = tmp_path / "trash"
    os.rename(store.root / "box", trash)
    assert watcher.wait_idle()
    events = recorder.take()
    assert sorted(e.kind for e in events) == ["deleted"] * 5
    assert {e.id for e in events} == ids
    os.rename(trash, store.root / "back")
    assert watcher.wait_idle()
    events = recorder.take()
    # Restored from the trash: the meta files carry the old ids, so history continues.
    assert sorted(e.kind for e in events) == ["created"] * 5
    assert {e.id for e in events} == ids
    assert store.check().clean


def test_a_folder_moved_out_deletes_its_sub_folders_named_from_above_u_ffff(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    # The index compares paths as UTF-8 bytes: an emoji (F0 ...) sorts after U+FFFF (EF BF BF),
    # so a range bounded by "box/\uffff" left the emoji folder's blueprints out of the deletes.
    ids = {
        store.save("box/\U0001f600 sub/b", "i: 1\n").id,
        store.save("box/plain/c", "i: 2\n").id,
        store.save("box/d", "i: 3\n").id,
    }
    kept = store.save("box0/e", "i: 4\n").id  # just past the range: must stay
    assert watcher.wait_idle()
    recorder.take()
    os.rename(store.root / "box", tmp_path / "trash")
    assert watcher.wait_idle()
    events = recorder.take()
    assert sorted(e.kind for e in events) == ["deleted"] * 3
    assert {e.id for e in events} == ids
    assert [i.id for i in store.list()] == [kept]
    assert store.check().clean


def _settled_team(store: BlueprintStore, watcher: Watcher, recorder: Recorder, n: int) -> dict:
    """``n`` blueprints saved under ``team/`` (by index), the watcher idle, no events pending."""
    bps = {i: store.save(f"team/b{i}", f"i: {i}\n") for i in range(n)}
    assert watcher.wait_idle()
    recorder.take()
    return bps


def test_a_folder_replaced_by_a_link_keeps_its_blueprints_and_says_why(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    # `mv team ~/elsewhere && ln -s ~/elsewhere team`: the scan never walks into a link (it could
    # lead out of the folder), so the blueprints are kept, not deleted, and check says why. It
    # said "under a hidden or ignored name", which sent the user looking for an ignore rule.
    ids = {bp.id for bp in _settled_team(store, watcher, recorder, 5).values()}
    os.rename(store.root / "team", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", store.root / "team")
    assert watcher.wait_idle()
    assert recorder.take() == []
    assert {i.id for i in store.list()} == ids
    problems = store.check().problems
    assert len(problems) == 5
    for p in problems:
        assert p["kind"] == "not-scanned"
        assert "'team' is a symbolic link" in p["detail"]
        assert "hidden or ignored" not in p["detail"]


def test_a_folder_moved_out_and_back_within_the_grace_is_nothing(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    ids = {bp.id for bp in _settled_team(store, watcher, recorder, 20).values()}
    os.rename(store.root / "team", tmp_path / "out")
    os.rename(tmp_path / "out", store.root / "team")
    assert watcher.wait_idle()
    assert recorder.take() == []
    assert {i.id for i in store.list()} == ids
    assert store.check().clean


def test_a_folder_deleted_and_recreated_at_once_keeps_ids(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    # `rm -rf team && cp -r backup/team .` (or a checkout of a branch that had the folder):
    # new inodes and mtimes, the same metas: one `modified` for the changed file, nothing else.
    bps = _settled_team(store, watcher, recorder, 20)
    shutil.copytree(store.root / "team", tmp_path / "backup", copy_function=shutil.copy)
    (tmp_path / "backup" / "b3.blueprint.yaml").write_text("i: changed\n")
    shutil.rmtree(store.root / "team")
    shutil.copytree(tmp_path / "backup", store.root / "team", copy_function=shutil.copy)
    assert watcher.wait_idle()
    assert [(e.kind, e.id) for e in recorder.take()] == [("modified", bps[3].id)]
    assert {i.id for i in store.list()} == {bp.id for bp in bps.values()}
    assert store.load(bps[3].id).content == "i: changed\n"
    assert store.check().clean


# Folders (each with a sub-folder) moved out of the tree; many more under LOCALSTORE_STRESS.
MOVED_OUT = 200 if STRESS else 12


def test_folders_moved_out_of_the_tree_let_their_watches_go(
    store: BlueprintStore,
    watcher: Watcher,
    recorder: Recorder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder moved out of the blueprints folder (to the desktop's Trash: what a file
    manager's delete does) kept its inotify watch, and one per sub-folder, for as long as it
    existed elsewhere: the kernel follows the folder wherever it goes, and watchdog lets a watch
    go only when its folder is deleted. A daemon running for months held a watch per folder ever
    trashed until the trash was emptied (they count against the user's max_user_watches, shared
    with IDEs and indexers), and heard of edits made in the trash as edits in the tree."""
    # (Read by the worker loop and by the hold of deletes while the folder is away.)
    monkeypatch.setattr(watcher_mod, "HEALTH_CHECK_S", 0.05)
    monkeypatch.setattr(_watch_due, "HEALTH_CHECK_S", 0.05)
    monkeypatch.setattr(_watch_health, "STALE_WATCHES_S", 0.0)
    trash = tmp_path / "trash"
    trash.mkdir()
    for i in range(MOVED_OUT):
        store.save(f"f{i}/sub/bp", f"i: {i}\n")
    assert watcher.wait_idle()
    assert eventually(lambda: _watches() == 1 + 2 * MOVED_OUT, 10), _watches()
    recorder.take()
    for i in range(MOVED_OUT):
        os.rename(store.root / f"f{i}", trash / f"f{i}")
    assert watcher.wait_idle()
    assert eventually(lambda: _watches() == 1, 10), f"{_watches()} watches for one folder"
    assert sorted(e.kind for e in recorder.take()) == ["deleted"] * MOVED_OUT
    assert store.list() == []
    # Still watching: an edit in a new folder comes as an event (the timer rescan is minutes).
    bp = store.save("new/one", "v: 1\n")
    assert watcher.wait_idle()
    (store.root / "new" / "one.blueprint.yaml").write_text("v: 2\n")
    assert eventually(lambda: store.load(bp.id).content == "v: 2\n", 10)


def _watches() -> int:
    """The inodes this process's inotify instances watch (one watcher runs in this test)."""
    watched = _inotify._inotify_watched()
    assert watched is not None, "the kernel's watch list (/proc/self/fdinfo) cannot be read"
    return len(watched)
