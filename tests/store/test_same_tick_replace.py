"""A version renamed in within the clock tick of our own save is still seen as a change.

A change time is only as fine as the kernel's clock: one jiffy (1-4 ms) on Linux before 6.13,
2 s on FAT. A sync tool (``rsync -t``, ``cp -p``, Syncthing) that renames a same-size version
with the recorded mtime over a blueprint within the tick of the store's own save gives it the
size, mtime *and* change time the index recorded: with no watcher running it was taken as
unchanged at the next open, search showed the old text, and the next save overwrote the
version with no revision. A rename always puts down another inode (the temp existed beside the
old file), so each file's inode is recorded too (core v9).

Real files, a real index, a real rename. The one thing no test can make on demand is the
kernel handing out the same change time twice: after the rename, the row's recorded change time
is set to the new file's (``tests.conftest.rename_in_same_tick`` says why that is the index the
race leaves). ``read_regular`` is wrapped only to count reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore.index import CORE_MIGRATIONS
from localstore.store import BlueprintStore
from localstore.watcher import Watcher, WatcherState
from tests.conftest import rename_in_same_tick
from tests.store.older_index import revisions_and_op, set_core_back

V1 = "limit: 1\n"
OTHER = "limit: 2\n"  # the other version: the same size


def _texts(store: BlueprintStore, ref: str) -> list[tuple[str, str]]:
    return [
        (r.origin, store.load_revision(ref, r.rev).content) for r in reversed(store.history(ref))
    ]


def test_reopen_records_a_version_renamed_in_within_the_save_tick(home: Path) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", V1)
        rename_in_same_tick(store, "plan.blueprint.yaml", OTHER)
    with localstore.open(home=home) as store:  # no watcher: only the open's reconcile looks
        assert [h.info.id for h in store.search("2")] == [bp.id]
        assert store.load(bp.id).content == OTHER
        store.save("plan", "limit: 3\n")
        assert _texts(store, bp.id) == [
            ("local", V1),
            ("external", OTHER),
            ("local", "limit: 3\n"),
        ]


@pytest.mark.parametrize("look", ["load", "save"])
def test_load_and_save_see_a_version_renamed_in_within_the_save_tick(home: Path, look: str) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", V1)
        rename_in_same_tick(store, "plan.blueprint.yaml", OTHER)
        if look == "load":
            assert store.load(bp.id).content == OTHER
        else:
            store.save("plan", "limit: 3\n")
        assert [t for _, t in _texts(store, bp.id)][:2] == [V1, OTHER]


def test_a_rescan_sees_a_version_renamed_in_within_the_save_tick(home: Path) -> None:
    """The watcher's rescan (at start, periodic, after an overflow) compares the same stats."""
    with localstore.open(home=home) as store:
        bp = store.save("plan", V1)
        watcher = Watcher(store)  # not started: rescan() applies at once
        try:
            rename_in_same_tick(store, "plan.blueprint.yaml", OTHER)
            assert watcher.rescan().changed == 1
            assert [t for _, t in _texts(store, bp.id)] == [V1, OTHER]
            assert watcher.rescan().changed == 0  # its inode is recorded: not read again
        finally:
            watcher.stop()
            watcher.join(10)
        assert watcher.state is WatcherState.STOPPED


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real: Callable[..., bytes] = fs.read_regular

    def counted(path: Path | str, limit: int | None = None) -> bytes:
        reads.append(os.fspath(path))
        return real(path, limit)

    monkeypatch.setattr(fs, "read_regular", counted)
    return reads


def _recorded_inodes(store: BlueprintStore) -> dict[str, tuple[int | None, int | None]]:
    with store.index.read() as cur:
        rows = cur.execute("SELECT path, yaml_ino, meta_ino FROM blueprints WHERE deleted = 0")
        return {str(p): (y, m) for p, y, m in rows}


def _disk_inodes(store: BlueprintStore) -> dict[str, tuple[int | None, int | None]]:
    return {
        p: (
            fs.ino_key(os.lstat(store.abspath(p)).st_ino),
            fs.ino_key(os.lstat(store.abspath(fs.meta_path_for(p))).st_ino),
        )
        for p in _recorded_inodes(store)
    }


def _v8_home_of_five(home: Path) -> tuple[int, int]:
    """Five saved blueprints, the index then set back to core v8 (no inodes recorded); returns
    their revisions and op ids."""
    with localstore.open(home=home) as store:
        for i in range(5):
            store.save(f"p{i}", f"v: {i}\n")
        before = revisions_and_op(store)
    set_core_back(home, 8, ("yaml_ino", "meta_ino"))
    return before


def test_a_v8_index_gets_its_inodes_from_the_scan_without_reading_a_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _v8_home_of_five(home)
    reads = _count_reads(monkeypatch)
    with localstore.open(home=home) as store:
        with store.index.read() as cur:
            assert cur.execute("PRAGMA user_version").fetchall()[0][0] == len(CORE_MIGRATIONS)
        # Stamped from the open's own lstats: nothing read, no revision, no op id.
        assert reads == []
        assert _recorded_inodes(store) == _disk_inodes(store)
        assert None not in {i for pair in _recorded_inodes(store).values() for i in pair}
        assert revisions_and_op(store) == before
        # And from now on a same-tick rename is caught.
        rename_in_same_tick(store, "p1.blueprint.yaml", "v: 9\n")
    with localstore.open(home=home) as store:
        assert store.load("p1").content == "v: 9\n"
        assert [o for o, _ in _texts(store, "p1")] == ["local", "external"]


@pytest.mark.parametrize("running", [False, True], ids=["rescan", "start-up rescan"])
def test_a_v8_index_opened_without_reconcile_gets_its_inodes_from_the_watchers_rescan(
    home: Path, monkeypatch: pytest.MonkeyPatch, running: bool
) -> None:
    """Only the open's reconcile stamped a v8 row's inodes: a store opened with
    reconcile=False (`localstore watch`) rescanned without stamping, and its rows stayed
    without the inode check, a same-tick rename over them unseen, until an open reconciled."""
    before = _v8_home_of_five(home)
    reads = _count_reads(monkeypatch)
    with localstore.open(home=home, reconcile=False) as store:
        assert set(_recorded_inodes(store).values()) == {(None, None)}
        watcher = Watcher(store)
        try:
            if running:
                watcher.start()  # (its start-up rescan)
                assert watcher.wait_idle(30)
            else:
                assert watcher.rescan().changed == 0
        finally:
            watcher.stop()
            watcher.join(10)
        # Stamped from the rescan's own lstats: nothing read, no revision, no op id.
        assert reads == []
        assert _recorded_inodes(store) == _disk_inodes(store)
        assert None not in {i for pair in _recorded_inodes(store).values() for i in pair}
        assert revisions_and_op(store) == before
        # And from now on a same-tick rename is caught by the next rescan.
        rename_in_same_tick(store, "p1.blueprint.yaml", "v: 9\n")
        watcher = Watcher(store)
        try:
            assert watcher.rescan().changed == 1
        finally:
            watcher.stop()
            watcher.join(10)
        assert store.load("p1").content == "v: 9\n"


def test_an_unknown_inode_matches_and_is_not_read_again(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0 is "unknown" (Windows' scandir gives no file index; some filesystems have none): such a
    row is decided by size, mtime and change time as before, and never read over it."""
    with localstore.open(home=home) as store:
        store.save("a", "a: 1\n")
        with store.index.write() as cur:
            cur.execute("UPDATE blueprints SET yaml_ino = 0, meta_ino = 0")
    reads = _count_reads(monkeypatch)
    for _ in range(2):
        with localstore.open(home=home) as store:
            assert [h.info.path for h in store.search("a")] == ["a.blueprint.yaml"]
            assert _recorded_inodes(store) == {"a.blueprint.yaml": (0, 0)}
    assert reads == []


def test_the_reopen_of_an_unchanged_store_reads_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with localstore.open(home=home) as store:
        for i in range(20):
            store.save(f"f{i % 3}/b{i}", f"b: {i}\n")
        assert _recorded_inodes(store) == _disk_inodes(store)
    reads = _count_reads(monkeypatch)
    with localstore.open(home=home) as store:
        assert len(store.list()) == 20
    assert reads == []


@pytest.mark.parametrize(
    ("st_ino", "recorded", "unchanged"),
    [
        (5, 5, True),
        (6, 5, False),
        (0, 5, True),  # Windows' scandir: no file index
        (5, 0, True),  # recorded as unknown
        (5, None, True),  # a core v8 row not stamped yet
        (2**64 - 1, -1, True),  # above SQLite's signed 64 bits: stored folded
        (2**64 - 1, 2**63 - 1, False),
    ],
)
def test_stat_unchanged_compares_known_inodes(
    st_ino: int, recorded: int | None, unchanged: bool
) -> None:
    st = fs.FileStat(9, 100, 200, st_ino)
    assert fs.stat_unchanged(st, 9, 100, 200, recorded) is unchanged
    assert fs.ino_key(fs.ino_key(st_ino)) == fs.ino_key(st_ino)
    assert -(2**63) <= fs.ino_key(st_ino) < 2**63


def test_inodes_numbered_anew_cost_one_read_and_no_revision(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAT and exFAT on Linux number a file when the kernel first looks it up (``iunique``),
    so every number changes at each mount; CIFS ``noserverino`` and FUSE without ``use_ino``
    do the same. Such a pair is read once (its bytes are the row's: no revision, no op id) and
    its new numbers are recorded: not read again at every open. (The numbers are set apart in
    the index here: a test cannot remount a disk.)"""
    with localstore.open(home=home) as store:
        for i in range(3):
            store.save(f"p{i}", f"v: {i}\n")
        before = revisions_and_op(store)
        with store.index.write() as cur:
            cur.execute("UPDATE blueprints SET yaml_ino = yaml_ino + 7, meta_ino = meta_ino + 7")
    reads = _count_reads(monkeypatch)
    with localstore.open(home=home) as store:
        assert len(reads) == 6  # each pair once
        assert _recorded_inodes(store) == _disk_inodes(store)
        assert revisions_and_op(store) == before
    reads.clear()
    with localstore.open(home=home) as store:
        assert len(store.list()) == 3
    assert reads == []
