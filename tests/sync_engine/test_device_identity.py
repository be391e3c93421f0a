"""A home copied, moved or restored from a backup: one device id per live home, no lost edit.

The server deduplicates pushes by (device, op id), and the engine takes a row written under its
own device id for one of its own writes. Both break when two live homes share a device id (a
home copied to a second machine or folder, used beside the original) or when one home's op
counter goes back (its index restored from a backup): a new change then carries an op id the
server already answered for another change. Real homes in temp dirs, real files and SQLite,
MemoryRemote for the server.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.memory_remote import MemoryServer

from .conftest import (
    Device,
    assert_converged,
    assert_watermark_kept,
    close_device,
    converge,
    open_device,
    server_snapshot,
)
from .homes import restore_in_place

BASE = "a: 1\nkeep: [1, 2, 3]\nmiddle: here\nmore: [4, 5, 6]\nb: 1\n"


def _close(dev: Device) -> None:
    assert_watermark_kept(dev)
    close_device(dev)


def _device_id(home: Path) -> str:
    store = BlueprintStore(load_settings(home=home), maintenance=False)
    try:
        return store.device_id
    finally:
        store.close()


def test_a_copied_home_takes_a_device_id_of_its_own_and_keeps_everything_else(
    tmp_path: Path, server: MemoryServer
) -> None:
    a = open_device(tmp_path, "a", server)
    x = a.store.save("flows/x", BASE).id
    y = a.store.save("flows/y", "y: 1\n").id
    a.sync()
    a.store.save("flows/y", "y: 2\n")  # dirty when copied: its mark must survive the copy
    original = a.store.device_id
    _close(a)
    shutil.copytree(tmp_path / "a", tmp_path / "b")

    a = open_device(tmp_path, "a", server)
    b = open_device(tmp_path, "b", server)
    try:
        assert a.store.device_id == original  # the home that stayed where it was keeps its id
        assert b.store.device_id != original
        assert _device_id(tmp_path / "b") == b.store.device_id  # and the copy keeps its new one
        assert b.engine.status().pending == 1
        report = b.sync()
        assert report.pushed == 1 and report.conflicts == 0  # only the dirty edit goes up
        assert server_snapshot(server)[y][1] == "y: 2\n"
        assert server_snapshot(server)[x][1] == BASE
    finally:
        _close(a)
        _close(b)


def test_a_copied_home_and_its_original_both_sync_every_edit(
    tmp_path: Path, server: MemoryServer
) -> None:
    a = open_device(tmp_path, "a", server)
    x = a.store.save("flows/x", BASE).id
    y = a.store.save("flows/y", "y: 1\n").id
    a.sync()
    _close(a)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a = open_device(tmp_path, "a", server)
    b = open_device(tmp_path, "b", server)
    c = open_device(tmp_path, "c", server)
    try:
        # The same op counter on both sides: each draws the same next op ids.
        a.store.save("flows/x", BASE.replace("a: 1", "a: 2"))
        b.store.save("flows/y", "y: 2\n")
        b.store.save("flows/x", BASE.replace("b: 1", "b: 3"))
        a.sync()
        b.sync()
        converge(a, b, c)
        rows = server_snapshot(server)
        assert rows[x][1] == BASE.replace("a: 1", "a: 2").replace("b: 1", "b: 3")
        assert rows[y][1] == "y: 2\n"
        assert_converged(server, a, b, c)
    finally:
        for dev in (a, b, c):
            _close(dev)


def test_a_copy_hears_of_the_originals_later_edits(tmp_path: Path, server: MemoryServer) -> None:
    a = open_device(tmp_path, "a", server)
    x = a.store.save("flows/x", BASE).id
    a.sync()
    _close(a)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a = open_device(tmp_path, "a", server)
    b = open_device(tmp_path, "b", server)
    try:
        b.store.delete(x)  # made on the copy, not pushed yet
        a.store.save("flows/x", BASE.replace("a: 1", "a: 2"))
        a.sync()
        b.sync()  # an edit beats a delete: the original's edit must not be taken for the copy's
        converge(a, b)
        assert server_snapshot(server)[x][1] == BASE.replace("a: 1", "a: 2")
        assert b.text(x) == BASE.replace("a: 1", "a: 2")
    finally:
        _close(a)
        _close(b)


def _forget_fingerprint(home: Path) -> None:
    """Make the index look as a version before fingerprints left it."""
    db = sqlite3.connect(home / "data" / "index.db")
    try:
        with db:
            db.execute("DELETE FROM settings WHERE key = 'device_fingerprint'")
    finally:
        db.close()


def test_a_copy_made_before_fingerprints_parts_from_its_original_at_its_first_push(
    tmp_path: Path, server: MemoryServer
) -> None:
    a = open_device(tmp_path, "a", server)
    x = a.store.save("flows/x", BASE).id
    a.sync()
    _close(a)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for name in ("a", "b"):
        _forget_fingerprint(tmp_path / name)
    a = open_device(tmp_path, "a", server)
    b = open_device(tmp_path, "b", server)
    try:
        assert a.store.device_id == b.store.device_id  # nothing tells them apart at open
        b.store.delete(x)
        a.store.save("flows/x", BASE.replace("a: 1", "a: 2"))
        a.sync()
        b.sync()  # its op id was used by a's edit: it takes a new id, then merges as another device
        assert b.store.device_id != a.store.device_id
        assert b.store.index.get_setting("device_id") == b.store.device_id
        converge(a, b)
        assert server_snapshot(server)[x][1] == BASE.replace("a: 1", "a: 2")  # edit beats delete
        assert_converged(server, a, b)
    finally:
        _close(a)
        _close(b)


def test_a_home_moved_on_this_machine_uploads_nothing_again(
    tmp_path: Path, server: MemoryServer
) -> None:
    a = open_device(tmp_path, "a", server)
    for i in range(5):
        a.store.save(f"flows/f{i}", f"v: {i}\n")
    a.sync()
    y = a.store.save("flows/f0", "v: edited before the move\n").id
    before = a.store.device_id
    _close(a)
    os.rename(tmp_path / "a", tmp_path / "moved")
    moved = open_device(tmp_path, "moved", server)
    other = open_device(tmp_path, "other", server)
    try:
        assert moved.store.device_id != before  # harmless: nothing else about the home changed
        assert moved.engine.status().pending == 1
        revisions = {i.id: len(moved.store.history(i.id)) for i in moved.store.list()}
        report = moved.sync()
        assert (report.pushed, report.conflicts, report.merged) == (1, 0, 0)
        assert moved.sync().pushed == 0
        # Nothing came down again either: no blueprint got a new revision.
        assert {i.id: len(moved.store.history(i.id)) for i in moved.store.list()} == revisions
        assert moved.engine.status().conflicts == 0
        assert server_snapshot(server)[y][1] == "v: edited before the move\n"
        converge(moved, other)
        assert_converged(server, moved, other)
    finally:
        _close(moved)
        _close(other)


def test_a_home_restored_in_place_from_a_backup_loses_no_edit(
    tmp_path: Path, server: MemoryServer, make_device: Callable[..., Device]
) -> None:
    a = open_device(tmp_path, "a", server)
    x = a.store.save("flows/x", BASE).id
    a.sync()
    _close(a)
    shutil.copytree(tmp_path / "a", tmp_path / "backup")

    a = open_device(tmp_path, "a", server)
    a.store.save("flows/x", BASE.replace("a: 1", "a: 2"))  # pushed, then rolled back here
    w = a.store.save("flows/w", "w: 1\n").id
    a.sync()
    _close(a)
    restore_in_place(tmp_path / "backup", tmp_path / "a")

    a = open_device(tmp_path, "a", server)
    try:
        # The op counter went back: these draw the op ids the server answered above.
        a.store.save("flows/x", BASE.replace("b: 1", "b: 3"))
        z = a.store.save("flows/z", "z: 1\n").id
        a.sync()
        c = make_device("c")
        converge(a, c)
        rows = server_snapshot(server)
        assert rows[x][1] == BASE.replace("a: 1", "a: 2").replace("b: 1", "b: 3")
        assert rows[z][1] == "z: 1\n"
        assert rows[w][1] == "w: 1\n"  # what was pushed before the restore comes back down
        assert_converged(server, a, c)
    finally:
        _close(a)


def test_a_home_restored_from_a_copied_backup_loses_no_edit(
    tmp_path: Path, server: MemoryServer, make_device: Callable[..., Device]
) -> None:
    a = open_device(tmp_path, "a", server)
    x = a.store.save("flows/x", BASE).id
    a.sync()
    _close(a)
    shutil.copytree(tmp_path / "a", tmp_path / "backup")
    a = open_device(tmp_path, "a", server)
    a.store.save("flows/x", BASE.replace("a: 1", "a: 2"))
    a.sync()
    _close(a)
    shutil.rmtree(tmp_path / "a")
    shutil.copytree(tmp_path / "backup", tmp_path / "a")  # a restore that writes new files

    a = open_device(tmp_path, "a", server)
    try:
        a.store.save("flows/x", BASE.replace("b: 1", "b: 3"))
        a.sync()
        c = make_device("c")
        converge(a, c)
        assert server_snapshot(server)[x][1] == BASE.replace("a: 1", "a: 2").replace("b: 1", "b: 3")
        assert_converged(server, a, c)
    finally:
        _close(a)
