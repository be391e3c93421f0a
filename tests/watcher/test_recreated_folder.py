"""The blueprints folder deleted and made again, empty, while the watcher runs: ext4 often gives
the new folder the old inode number, and the watcher took it for the old folder emptied (every
blueprint recorded deleted, and sync would push the deletes)."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from localstore._reconcile import CONFIRM_EMPTY_NAME, ROOT_ID_SETTING, ROOT_MARK_NAME
from localstore.store import BlueprintStore
from localstore.watcher import HEALTH_CHECK_S, Watcher, WatcherState
from tests.conftest import eventually

from .conftest import Recorder


def live_paths(store: BlueprintStore) -> list[str]:
    return sorted(i.path for i in store.list())


def test_folder_recreated_empty_with_the_old_inode_keeps_its_blueprints(
    store: BlueprintStore, make_watcher, recorder: Recorder
) -> None:
    w: Watcher = make_watcher(store, rescan_interval_s=0.2)
    w.start()
    for i in range(3):
        store.save(f"f/b{i}", f"name: b{i}\n")
    assert w.wait_idle(10)
    before = live_paths(store)
    recorder.take()
    old = os.stat(store.root)
    shutil.rmtree(store.root)
    store.root.mkdir()
    new = os.stat(store.root)
    if (new.st_dev, new.st_ino) != (old.st_dev, old.st_ino):
        # Not reused this time (ext4 usually does here): the state a reuse leaves is the
        # watcher's remembered identity equal to the new folder's.
        w._root_id = (new.st_dev, new.st_ino)
    time.sleep(HEALTH_CHECK_S + 1.5)  # health checks, timer rescans and delete graces pass
    assert live_paths(store) == before
    assert [e for e in recorder.take() if e.kind == "deleted"] == []
    assert w.state is WatcherState.DEGRADED
    assert "replaced" in (w.problem or "")
    # Blueprints copied back in (without the mark): adopted, marked, and watched as usual.
    (store.root / "f").mkdir()
    (store.root / "f" / "b0.blueprint.yaml").write_text("name: b0\n")
    assert eventually(lambda: w.state is WatcherState.RUNNING, 10)
    assert w.wait_idle(10)
    assert (store.root / ROOT_MARK_NAME).is_file()
    assert live_paths(store) == ["f/b0.blueprint.yaml"]


def test_a_folder_replaced_by_a_file_deletes_its_blueprints(
    store: BlueprintStore, make_watcher
) -> None:
    """A stat of the vanished YAML fails with NotADirectoryError when one of its folders is a
    file now: it was taken for a file present but unreadable, so the delete was never recorded
    (the ingest failed and was retried, or found nothing and the path was checked again at once,
    for ever)."""
    w: Watcher = make_watcher(store, delete_grace_ms=50)
    w.start()
    bp = store.save("team/sub/deploy", "name: deploy\n")
    assert w.wait_idle(10)
    shutil.rmtree(store.root / "team")
    (store.root / "team").write_text("not a folder\n", encoding="utf-8")
    assert w.wait_idle(10)
    assert not store.exists(bp.id)
    assert w.problem is None


@pytest.mark.parametrize("away", ["recreated-empty", "missing"])
def test_a_confirmed_empty_folder_records_the_deletes_while_running(
    store: BlueprintStore, make_watcher, recorder: Recorder, away: str
) -> None:
    """Every blueprint deleted on purpose (the folder with them): the refusal's hint says to
    create the confirmation file. A running watcher (the daemon's) ignored it and stayed
    DEGRADED, the blueprints kept, until it was restarted."""
    w: Watcher = make_watcher(store, delete_grace_ms=50)
    w.start()
    for i in range(3):
        store.save(f"f/b{i}", f"name: b{i}\n")
    assert w.wait_idle(10)
    recorder.take()
    shutil.rmtree(store.root)
    if away == "recreated-empty":
        store.root.mkdir()
    assert eventually(lambda: w.state is WatcherState.DEGRADED, 10)
    assert CONFIRM_EMPTY_NAME in (w.problem or "")
    store.root.mkdir(exist_ok=True)
    (store.root / CONFIRM_EMPTY_NAME).touch()
    assert eventually(lambda: w.state is WatcherState.RUNNING, 10), w.problem
    assert w.wait_idle(10)
    assert live_paths(store) == []
    assert sorted((e.kind, e.path) for e in recorder.take()) == [
        ("deleted", f"f/b{i}.blueprint.yaml") for i in range(3)
    ]
    # The confirmation answered (removed, as an open's check does); the folder is this one now.
    assert not (store.root / CONFIRM_EMPTY_NAME).exists()
    assert (store.root / ROOT_MARK_NAME).is_file()
    st = os.stat(store.root)
    assert store.index.get_setting(ROOT_ID_SETTING) == f"{st.st_dev}:{st.st_ino}"
    store.save("new", "name: new\n")
    assert w.wait_idle(10)
    assert w.state is WatcherState.RUNNING and live_paths(store) == ["new.blueprint.yaml"]
