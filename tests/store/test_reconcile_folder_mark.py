"""A blueprints folder deleted and made again empty is not the old folder emptied, even when the
file system hands the new folder the old one's inode number (ext4 does, often at once)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import localstore
from localstore._reconcile import ROOT_ID_SETTING, ROOT_MARK_NAME
from localstore.config import load_settings
from localstore.errors import StorageError
from localstore.index import Index

DOC = "steps: [a]\n"


def _open(home: Path, *, reconcile: bool = True) -> localstore.BlueprintStore:
    return localstore.open(home=home, maintenance=False, reconcile=reconcile)


def _set_setting(home: Path, key: str, value: str | None) -> None:
    index = Index(load_settings(home=home, environ={}).paths.index_db)
    try:
        if value is None:
            index.conn.execute("DELETE FROM settings WHERE key = ?", (key,))
        else:
            index.set_setting(key, value)
    finally:
        index.close()


def recreate_with_same_identity(home: Path) -> None:
    """``rm -rf blueprints; mkdir blueprints`` where the new folder gets the old inode number.

    ext4 reuses the number often but not always; when it did not, the index is told the new
    folder's identity, which is exactly the state a reuse leaves (nothing else is touched).
    """
    root = home / "blueprints"
    shutil.rmtree(root)
    root.mkdir()
    st = os.stat(root)
    _set_setting(home, ROOT_ID_SETTING, f"{st.st_dev}:{st.st_ino}")


def test_folder_recreated_empty_with_the_same_inode_is_refused_not_emptied(home: Path) -> None:
    with _open(home) as s:
        ids = [s.save(f"f/b{i}", DOC).id for i in range(3)]
    recreate_with_same_identity(home)
    for reconcile in (True, False):
        with pytest.raises(StorageError, match="holds no blueprints"):
            _open(home, reconcile=reconcile)
    # The user's answer still works: confirmed, the blueprints are recorded deleted.
    (home / "blueprints" / ".localstore-confirm-empty").touch()
    with _open(home) as s:
        assert s.count() == 0
        assert all(s.history(i)[0].deleted for i in ids)


def test_emptying_the_marked_folder_is_an_ordinary_delete(home: Path) -> None:
    with _open(home) as s:
        s.save("a", DOC)
        s.save("f/b", DOC)
    root = home / "blueprints"
    assert (root / ROOT_MARK_NAME).is_file()
    for p in root.rglob("*.blueprint.*"):
        p.unlink()
    with _open(home) as s:
        assert s.count() == 0


def test_a_store_from_before_marks_gets_its_folder_marked(home: Path) -> None:
    with _open(home) as s:
        s.save("a", DOC)
    root = home / "blueprints"
    os.remove(root / ROOT_MARK_NAME)
    _set_setting(home, "blueprints_folder_mark", None)
    with _open(home) as s:
        assert s.count() == 1
    assert (root / ROOT_MARK_NAME).is_file()
    # From now on a recreated folder is told apart.
    recreate_with_same_identity(home)
    with pytest.raises(StorageError, match="holds no blueprints"):
        _open(home)


@pytest.mark.parametrize("away", ["moved", "recreated-empty"])
def test_a_save_into_a_folder_gone_while_open_is_refused(
    home: Path, tmp_path: Path, away: str
) -> None:
    """An app saving while the folder is away made it again with that one blueprint in it; a
    watcher took it for a restored copy and recorded every other blueprint deleted (which sync
    pushes). The save is refused and nothing is made at the folder's path."""
    with _open(home) as s:
        s.save("team/a", DOC)
        root = s.root
        os.rename(root, tmp_path / "away")
        if away == "recreated-empty":
            root.mkdir()
        for path in ("team/b", "c"):
            with pytest.raises(StorageError, match=r"blueprints folder .* 1 blueprint"):
                s.save(path, DOC)
        assert not root.exists() or os.listdir(root) == []
        if away == "recreated-empty":
            root.rmdir()
        os.rename(tmp_path / "away", root)
        s.save("c", DOC)  # the folder is back: saves go on
        assert sorted(b.path for b in s.list()) == ["c.blueprint.yaml", "team/a.blueprint.yaml"]
