"""A download that creates a blueprint where only a meta file sits keeps that file first.

A meta file without its YAML at a downloaded blueprint's path (its YAML deleted by hand, another
blueprint's meta copied there) was written over by the download's batch (store.save_many, origin
"remote"): its bytes gone, in no revision and no report. Now it is kept as reconcile keeps one
(in <data>/recovered/, reported by check until deleted), and the download goes ahead.

Real homes and files, the memory server; the orphan is made as a person leaves it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from .conftest import Device

ORPHAN = {"id": "11111111-1111-4111-8111-111111111111", "name": "Mine", "tags": ["by-hand"]}


@pytest.mark.parametrize("count", [1, 12])
def test_a_download_keeps_an_orphan_meta_at_its_path(
    make_device: Callable[..., Device], count: int
) -> None:
    a, b = make_device("A"), make_device("B")
    for i in range(count):
        a.store.save(f"d/n{i}", f"steps: [remote-{i}]\n")
    a.sync()
    meta_rel = "d/n0.blueprint.meta.json"
    orphan = json.dumps(ORPHAN).encode()
    path = b.store.abspath(meta_rel)
    path.parent.mkdir(parents=True)
    path.write_bytes(orphan)

    report = b.sync()

    assert report.quarantined == 0
    downloaded = a.store.load("d/n0")
    assert b.store.load("d/n0").id == downloaded.id
    assert json.loads(path.read_text())["id"] == downloaded.id
    (kept,) = (b.home / "data" / "recovered").glob(f"*/{meta_rel}")
    assert kept.read_bytes() == orphan
    problems = [p for p in b.store.check().problems if p["kind"] == "edit-kept"]
    assert [p["path"] for p in problems] == [meta_rel]
    assert str(kept) in problems[0]["detail"]
    assert len(b.store.list()) == count


def test_a_pulled_move_onto_an_orphan_meta_keeps_it_and_moves(
    make_device: Callable[..., Device],
) -> None:
    # A move pulled from the server renames the pair here (store.save_many with its id): the
    # meta's rename found its name taken, and every sync after failed the same way.
    a, b = make_device("A"), make_device("B")
    moved = a.store.save("d/old", "steps: [1]\n")
    a.sync()
    b.sync()
    a.store.move("d/old", "d/new")
    a.sync()
    meta_rel = "d/new.blueprint.meta.json"
    orphan = json.dumps(ORPHAN).encode()
    path = b.store.abspath(meta_rel)
    path.write_bytes(orphan)

    report = b.sync()

    assert report.quarantined == 0
    assert b.store.load("d/new").id == moved.id
    assert json.loads(path.read_text())["id"] == moved.id
    assert not b.store.exists("d/old")
    (kept,) = (b.home / "data" / "recovered").glob(f"*/{meta_rel}")
    assert kept.read_bytes() == orphan
    problems = [p for p in b.store.check().problems if p["kind"] == "edit-kept"]
    assert [p["path"] for p in problems] == [meta_rel]
