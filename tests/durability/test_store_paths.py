"""Power-loss ordering of the store's acknowledged writes, checked with the durability recorder.

Each test records the file-system calls of one acknowledged change and asserts that nothing it
did under the home is still volatile when the call returns (tests/durability_recorder.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from localstore import files as fs
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


def test_save_many_into_one_folder(store, home: Path, recorder: DurabilityRecorder) -> None:
    # A syncfs batch (16 files or more) whose renames all land in one folder flushes that folder
    # alone after them: the files' own data must have been made durable by the first syncfs
    # (a batch over several folders has a second syncfs after the renames that hides its loss).
    from localstore.store import SaveRequest

    reqs = [SaveRequest(path=f"one/p{i}", content=DOC) for i in range(20)]
    with recorder.acknowledged(under=home, what="save_many of 20 into one folder"):
        store.save_many(reqs)
    if fs._SYNCFS is not None:  # (where syncfs is refused, each file is fsynced instead)
        assert any(line.startswith("syncfs") for line in recorder.log), "not a syncfs batch"


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


@pytest.mark.parametrize("write", ["save", "delete"])
def test_write_over_a_file_that_does_not_parse(
    store, home: Path, recorder: DurabilityRecorder, write: str
) -> None:
    # The person's unparsable bytes are copied to data/recovered/ first: that copy (and its new
    # folders) must be as durable as the write that replaced them.
    store.save("a/plan", DOC)
    (home / "blueprints/a/plan.blueprint.yaml").write_text("steps: [half\n")
    with recorder.acknowledged(under=home, what=f"{write} over an unparsable file"):
        if write == "save":
            store.save("a/plan", "steps: [b]\n")
        else:
            store.delete("a/plan")
    assert list((home / "data/recovered").rglob("plan.blueprint.yaml"))
