"""A home restored from a backup, or copied, on the local stack (real RPCs, the official client).

The server deduplicates pushes by (device, op id). A home whose index went back in time draws
op ids the server already answered for other changes; those changes must still reach the server
and every other device (migration 20261122000800 tells a reused op id from a replay).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sync.localcloud.stack import LocalCloud
from tests.sync_engine.homes import restore_in_place

from .conftest import new_email
from .devices import open_device

BASE = "name: x\na: 1\nkeep: [1, 2, 3]\nmiddle: here\nmore: [4, 5, 6]\nb: 1\n"


def test_edits_made_after_an_in_place_restore_reach_every_device(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    alice = new_email()
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, alice)
    x = a.store.save("notes/x", BASE).id
    assert a.sync() is None
    a.close()
    shutil.copytree(tmp_path / "a", tmp_path / "backup")

    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, alice)
    a.store.save("notes/x", BASE.replace("a: 1", "a: 2"))
    w = a.store.save("notes/w", "name: w\n").id
    assert a.sync() is None
    a.close()
    restore_in_place(tmp_path / "backup", tmp_path / "a")

    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, alice)
    c = open_device(tmp_path, "c", cloud.url, cloud.anon_key, alice)
    try:
        # The op counter went back: these draw op ids the server answered above.
        a.store.save("notes/x", BASE.replace("b: 1", "b: 3"))
        z = a.store.save("notes/z", "name: z\n").id
        assert a.sync() is None
        assert c.sync() is None
        assert a.sync() is None
        merged = BASE.replace("a: 1", "a: 2").replace("b: 1", "b: 3")
        for dev in (a, c):
            assert dev.store.load(x).content == merged, dev.name
            assert dev.store.load(z).content == "name: z\n", dev.name
            assert dev.store.load(w).content == "name: w\n", dev.name
            assert dev.engine.status().pending == 0, dev.name
            assert dev.engine.verify().clean, dev.name
        assert a.snapshot() == c.snapshot()
    finally:
        a.close()
        c.close()


def test_a_copied_home_and_its_original_both_sync_every_edit(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    alice = new_email()
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, alice)
    x = a.store.save("notes/x", BASE).id
    y = a.store.save("notes/y", "name: y\n").id
    assert a.sync() is None
    a.close()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, alice)
    b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, alice)
    try:
        assert a.store.device_id != b.store.device_id
        a.store.save("notes/x", BASE.replace("a: 1", "a: 2"))
        b.store.save("notes/y", "name: y\nk: 2\n")
        b.store.save("notes/x", BASE.replace("b: 1", "b: 3"))
        for dev in (a, b, a, b):
            assert dev.sync() is None, dev.name
        for dev in (a, b):
            assert dev.store.load(x).content == BASE.replace("a: 1", "a: 2").replace("b: 1", "b: 3")
            assert dev.store.load(y).content == "name: y\nk: 2\n"
            assert dev.engine.verify().clean, dev.name
    finally:
        a.close()
        b.close()
