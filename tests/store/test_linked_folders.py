"""A new path whose folder is a symbolic link (to a folder inside the blueprints folder).

resolve_inside lets such a link through (it leads nowhere outside), but the walk of reconcile and
the watcher follows no link: a blueprint saved or moved there had its files written in the
link's target, where the next open found them as new blueprints with new ids (every one twice,
both pushed), and kept the saved one, reported not-scanned. A server row at such a path was
written there the same way (tests/sync_engine/test_linked_folder_rows.py). Both are refused
now, as a hidden or ignored folder is.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import localstore
from localstore.errors import UnsafePathError


def _listing(home: Path) -> list[tuple[str, str]]:
    with localstore.open(home=home, maintenance=False) as store:
        return sorted((b.path, b.id) for b in store.list())


def test_a_save_or_move_into_a_linked_folder_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with localstore.open(home=home, maintenance=False) as store:
        first = store.save("real/first", "a: 1\n").id
        os.symlink("real", store.root / "alias")
        with pytest.raises(UnsafePathError, match="'alias' is a symbolic link") as caught:
            store.save("alias/second", "a: 2\n")
        assert caught.value.hint and "link" in caught.value.hint
        with pytest.raises(UnsafePathError, match="symbolic link"):
            store.move(first, "alias/moved")
        assert sorted(os.listdir(store.root / "real")) == [
            "first.blueprint.meta.json",
            "first.blueprint.yaml",
        ]
        assert store.check().clean
    # Reopened, every blueprint is there once, under the id it was saved with.
    assert _listing(home) == [("real/first.blueprint.yaml", first)]
