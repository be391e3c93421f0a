"""The durability recorder itself: it reports a flush a write path leaves out (injected here by
turning one off), and takes a syncfs of the filesystem for every flush it stands for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore.store import SaveRequest
from tests.durability_recorder import DurabilityRecorder

DOC = "steps: [a]\n"


def _batch(n: int) -> list[SaveRequest]:
    return [SaveRequest(path=f"f{i % 5}/g{i}/p{i}", content=DOC) for i in range(n)]


def test_a_missing_directory_flush_is_reported(
    home: Path, recorder: DurabilityRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with localstore.open(home=home, maintenance=False) as s:
        monkeypatch.setattr(fs, "fsync_dir", lambda directory: None)
        recorder.reset()
        s.save_many(_batch(3))
        left = recorder.volatile(under=home)
    new = home / "blueprints" / "f0" / "g0"
    assert left.entries[os.path.realpath(new)] == [
        "rename-in p0.blueprint.yaml",
        "rename-in p0.blueprint.meta.json",
    ]
    assert left.entries[os.path.realpath(new.parent)] == ["mkdir g0"]


def test_a_missing_file_flush_is_reported(
    home: Path, recorder: DurabilityRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with localstore.open(home=home, maintenance=False) as s:
        monkeypatch.setattr(fs, "_fsync_and_close", os.close)
        recorder.reset()
        s.save("a/p", DOC)
        left = recorder.volatile(under=home)
    folder = os.path.realpath(home / "blueprints" / "a")
    assert left.content == {
        os.path.join(folder, "p.blueprint.yaml"),
        os.path.join(folder, "p.blueprint.meta.json"),
    }
    assert not left.entries


@pytest.mark.skipif(fs._EXCHANGE is None, reason="no rename that swaps names on this system")
def test_an_update_swapped_in_without_a_directory_flush_is_reported(
    home: Path, recorder: DurabilityRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A save replaces a recorded file by swapping its temp in (files.replace_recorded, a C
    # call): the recorder sees it, and the directory entries it changed need a flush.
    with localstore.open(home=home, maintenance=False) as s:
        s.save("a/p", DOC)
        monkeypatch.setattr(fs, "fsync_dir", lambda directory: None)
        recorder.reset()
        s.save("a/p", "steps: [b]\n")
        left = recorder.volatile(under=home, temps=True)
        swaps = [line for line in recorder.log if line.startswith("exchange ")]
    folder = os.path.realpath(home / "blueprints" / "a")
    assert len(swaps) == 2, recorder.log
    ops = left.entries[folder]
    assert "exchange p.blueprint.yaml" in ops and "exchange p.blueprint.meta.json" in ops, ops
    assert not left.content


@pytest.mark.skipif(fs._SYNCFS is None, reason="no syncfs on this kernel")
def test_a_batch_flushed_by_syncfs_needs_no_directory_fsync(
    home: Path, recorder: DurabilityRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch over SYNCFS_MIN_FILES in many folders flushes with one syncfs after its renames.
    with localstore.open(home=home, maintenance=False) as s:
        monkeypatch.setattr(fs, "fsync_dir", lambda directory: None)
        with recorder.acknowledged(under=home, what="a batch flushed by syncfs"):
            s.save_many(_batch(40))
    assert any(line.startswith("syncfs") for line in recorder.log)
