"""Power-loss ordering of what a sync cycle writes on this device: pulled blueprints in new
folders, a conflict copy beside a blueprint both sides created, the record of synced bases
(tests/durability_recorder.py). A cycle's report is its acknowledgement: what it says it
applied must survive a power cut right after."""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.engine import SyncEngine
from sync.memory_remote import MemoryRemote, MemoryServer
from tests.durability_recorder import DurabilityRecorder


class _Device:
    def __init__(self, root: Path, name: str, server: MemoryServer) -> None:
        self.home = root / name
        self.store = BlueprintStore(
            load_settings(home=self.home, device_name=name), maintenance=False
        )
        self.remote = MemoryRemote(server, user="u")
        self.engine = SyncEngine(self.store, self.remote)

    def close(self) -> None:
        self.engine.stop()
        self.engine.join(10)
        self.remote.close()
        self.store.close()


@pytest.fixture
def devices(tmp_path: Path):
    server = MemoryServer()
    a, b = _Device(tmp_path, "a", server), _Device(tmp_path, "b", server)
    try:
        yield a, b
    finally:
        b.close()
        a.close()


@pytest.mark.parametrize("n", [2, 30])
def test_pulled_blueprints_in_new_folders(
    devices: tuple[_Device, _Device], recorder: DurabilityRecorder, n: int
) -> None:
    a, b = devices
    for i in range(n):
        a.store.save(f"team/p{i % 3}/deep{i}/plan{i}", f"v: {i}\n")
    a.engine.sync_once()
    with recorder.acknowledged(under=b.home, what=f"a pull of {n} blueprints"):
        b.engine.sync_once()
    assert b.store.count() == n


def test_conflict_copy_of_a_blueprint_both_created(
    devices: tuple[_Device, _Device], recorder: DurabilityRecorder
) -> None:
    a, b = devices
    a.store.save("x/y/thing", "v: a\n")
    b.store.save("x/y/thing", "v: b\n")
    a.engine.sync_once()
    with recorder.acknowledged(under=b.home, what="a conflict copy made by a pull"):
        b.engine.sync_once()
    assert b.engine.conflicts()
    assert sorted(b.store.load(i.id).content for i in b.store.list()) == ["v: a\n", "v: b\n"]
