"""Power-loss ordering of the store's acknowledged writes, checked with the durability recorder.

Each test records the file-system calls of one acknowledged change and asserts that nothing it
did under the home is still volatile when the call returns (tests/durability_recorder.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from tests.durability_recorder import DurabilityRecorder

DOC = "steps: [a]\n"


@pytest.fixture
def store(home: Path):
    with localstore.open(home=home, maintenance=False) as s:
        yield s


def test_save_in_new_nested_folders(store, home: Path, recorder: DurabilityRecorder) -> None:
    with recorder.acknowledged(under=home, what="save in a new nested folder"):
        store.save("a/b/c/plan", DOC)


def test_save_update(store, home: Path, recorder: DurabilityRecorder) -> None:
    store.save("a/plan", DOC)
    with recorder.acknowledged(under=home, what="update"):
        store.save("a/plan", "steps: [b]\n")


@pytest.mark.parametrize("n", [3, 40])
def test_save_many(store, home: Path, recorder: DurabilityRecorder, n: int) -> None:
    from localstore.store import SaveRequest

    reqs = [SaveRequest(path=f"f{i % 5}/g{i}/p{i}", content=DOC) for i in range(n)]
    with recorder.acknowledged(under=home, what=f"save_many of {n}"):
        store.save_many(reqs)


def test_move_across_folders(store, home: Path, recorder: DurabilityRecorder) -> None:
    store.save("a/x/plan", DOC)
    with recorder.acknowledged(under=home, what="move into a new folder"):
        store.move("a/x/plan", "b/y/z/plan")


def test_delete_and_restore(store, home: Path, recorder: DurabilityRecorder) -> None:
    info = store.save("a/x/plan", DOC)
    with recorder.acknowledged(under=home, what="delete"):
        store.delete("a/x/plan")
    with recorder.acknowledged(under=home, what="restore"):
        store.restore(info.id, 1)
