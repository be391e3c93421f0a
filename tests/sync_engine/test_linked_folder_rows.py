"""A server row at a path whose folder is a symbolic link on this device (to a folder inside its
blueprints folder) is parked as ``unscanned_path``, as one in a hidden or ignored folder is.

Written through the link, its files landed in the link's target, where the next open found them
as a new blueprint with a new id (pushed: the blueprint twice on every device).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .conftest import Device


def test_a_server_row_under_a_linked_folder_is_parked(
    make_device: Callable[..., Device],
) -> None:
    a, b = make_device("a"), make_device("b")
    b.store.save("real/first", "a: 1\n")
    b.sync()
    a.sync()
    os.symlink("real", b.store.root / "alias")
    linked = a.store.save("alias/second", "a: 2\n").id
    plain = a.store.save("plain", "p: 1\n").id
    a.sync()

    report = b.sync()
    assert report.quarantined == 1 and b.store.load(plain).content == "p: 1\n"
    (entry,) = b.engine.quarantined()
    assert (entry.id, entry.code) == (linked, "unscanned_path")
    assert "replace the link 'alias' by a folder" in entry.message
    assert sorted(os.listdir(b.store.root / "real")) == [
        "first.blueprint.meta.json",
        "first.blueprint.yaml",
    ]
    assert b.store.check().clean
