"""A server path that fits the name rules but not this device's PATH_MAX under its home.

The rules bound a path's characters (1,024) and each part's bytes (234), not its bytes after
the home's own folder: a path a device with a short home synced can be too long on a device
whose home sits deeper. Its row is parked; every other row still syncs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from localstore.errors import StorageError
from localstore.files import ensure_dir

from .conftest import Device

# 18 folders of 54 four-byte characters: 989 characters (the rules allow 1,024), 3,906 bytes.
LONG = "/".join(["\U0001f600" * 54] * 18)
# Two 200-byte folders put the second home about 400 bytes deeper than the first: over 4,096.
DEEP = "/".join(["d" * 200] * 2)


def test_a_path_too_long_under_this_home_parks_its_row_and_the_rest_syncs(
    make_device: Callable[..., Device],
) -> None:
    a, b = make_device("a"), make_device(f"{DEEP}/b")
    assert len((b.store.root / LONG).as_posix().encode()) > os.pathconf("/", "PC_PATH_MAX")
    long_id = a.store.save(LONG, "n: 1\n").id
    plain = a.store.save("plain", "n: 2\n").id
    a.sync()

    # Before: the untyped OSError of the folder's stat ended the pass, every pass: nothing
    # pulled, nothing of b's pushed, the device stuck in "error".
    report = b.sync()
    assert report.quarantined == 1
    assert b.store.load(plain).content == "n: 2\n"
    (entry,) = b.engine.quarantined()
    assert (entry.id, entry.code) == (long_id, "unwritable_path")
    mine = b.store.save("mine", "n: 3\n").id
    b.sync()
    a.sync()
    assert a.store.load(mine).content == "n: 3\n"
    assert b.engine.status().state != "error"


def test_ensure_dir_says_the_path_is_too_long(make_device: Callable[..., Device]) -> None:
    b = make_device(f"{DEEP}/b")
    folder = b.store.root.joinpath(*LONG.split("/"))
    with pytest.raises(StorageError) as caught:
        ensure_dir(folder)
    assert "too long" in caught.value.message
    assert caught.value.hint is not None and "shorter" in caught.value.hint
