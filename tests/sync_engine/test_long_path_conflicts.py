"""A path collision on a path near the 1,024 characters the name rules (and the server) allow.

The conflict copy's name adds " (conflict <device> <stamp>)" to the blueprint's: it was cut to
fit a part's bytes only, so on a long path the copy's path came out over 1,024 characters,
normalize_path refused it, and that error ended the pass, every pass: nothing of the home synced.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from localstore.files import MAX_PATH_CHARS, YAML_SUFFIX

from .conftest import Device

FOLDERS = "/".join(["d" * 200] * 4)  # 803 characters


@pytest.mark.parametrize(
    ("folder", "name_chars", "copy_folder"),
    [
        # The whole path at the limit: the copy's name is cut to fit beside it.
        (FOLDERS, MAX_PATH_CHARS - len(FOLDERS) - 1 - len(YAML_SUFFIX), FOLDERS),
        # Folders leaving no room for the copy's tail at all: the copy goes to the top folder.
        (FOLDERS + "/" + "e" * 190, 8, ""),
    ],
    ids=["long-name", "deep-folder"],
)
def test_a_collision_on_a_long_path_moves_the_local_one_to_a_copy_that_fits(
    make_device: Callable[..., Device], folder: str, name_chars: int, copy_folder: str
) -> None:
    a, b = make_device("a"), make_device("b")
    path = f"{folder}/{'n' * name_chars}"
    x = a.store.save(path, "x: 0\n").id
    y = b.store.save(path, "y: 0\n").id
    other = b.store.save("other", "o: 1\n").id
    a.sync()

    report = b.sync()
    assert not report.errors
    (record,) = b.engine.conflicts()
    assert (record.id, record.copy_id, record.reason) == (x, y, "path_taken")
    copy_path = record.copy_path
    assert copy_path is not None and len(copy_path) <= MAX_PATH_CHARS
    assert copy_path.rpartition("/")[0] == copy_folder
    assert copy_path.rpartition("/")[2].startswith("n")
    assert b.store.row(y).path == copy_path
    assert b.store.load(y).content == "y: 0\n"
    assert b.store.load(x).content == "x: 0\n"
    assert b.engine.status().pending == 0
    a.sync()
    assert a.store.load(y).content == "y: 0\n" and a.store.load(other).content == "o: 1\n"
