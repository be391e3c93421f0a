"""Sync of a blueprint a file-sync tool moved slowly: the old pair deleted (and that delete
recorded, and perhaps pushed) before the new pair came, its meta naming the blueprint. Sync
pushes the blueprint back at its new path under its id (an un-delete, or a plain move when the
delete was not pushed yet), never a create of a new id; another device follows it there.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest

from sync.memory_remote import MemoryServer

from .conftest import Device, assert_converged, converge, server_snapshot

SUFFIXES = (".blueprint.yaml", ".blueprint.meta.json")


@pytest.mark.parametrize("pushed_delete", [True, False], ids=["delete-pushed", "delete-pending"])
def test_a_pair_back_from_deleted_at_a_new_path_syncs_as_the_same_blueprint(
    make_device: Callable[..., Device], server: MemoryServer, pushed_delete: bool
) -> None:
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("n/plan", "v: 1\n", tags=["mine"]).id
    converge(a, b)
    root = a.store.root
    files = {s: (root / ("n/plan" + s)).read_bytes() for s in SUFFIXES}
    shutil.rmtree(root / "n")
    a.store.check(fix=True)  # (the watcher's delete, its grace over)
    if pushed_delete:
        a.sync()
        with server.lock:
            assert server.rows[ident].row.deleted
    (root / "m").mkdir()
    for suffix, data in files.items():
        (root / ("m/plan" + suffix)).write_bytes(data)
    a.store.check(fix=True)
    converge(a, b)
    assert server_snapshot(server) == {ident: ("m/plan.blueprint.yaml", "v: 1\n")}
    assert list(server.rows) == [ident]
    assert a.engine.conflicts() == [] and b.engine.conflicts() == []
    assert b.store.resolve("m/plan").tags == ("mine",)
    assert_converged(server, a, b)
