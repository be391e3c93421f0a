"""A version put down with the same size and the recorded mtime is still seen as a change.

Sync tools copy the other device's mtime (Syncthing, Dropbox, ``rsync -t``, ``cp -p``, unzip),
and coarse clocks (FAT 2 s, HFS+ 1 s, SMB) give a quick same-size edit the same mtime. The store
took size + mtime for "unchanged": reconcile on open, ``load`` and a save all passed the new
version by, and the save then overwrote it with no revision holding it. Each pair's change time
(st_ctime_ns, which no tool can set) is recorded beside them now.

Real files and a real index; the replacement is made the way such a tool makes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore._reconcile import Reconciler
from localstore.index import CORE_MIGRATIONS
from localstore.store import BlueprintStore, SaveRequest
from tests.conftest import replace_keeping_stat
from tests.store.older_index import revisions_and_op, set_core_back

V1 = "limit: 1\n"
OTHER = "limit: 2\n"  # another device's version: the same size


def _texts(store: BlueprintStore, ref: str) -> list[tuple[str, str]]:
    return [
        (r.origin, store.load_revision(ref, r.rev).content) for r in reversed(store.history(ref))
    ]


def test_reconcile_on_open_records_a_same_stat_replacement(home: Path) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", V1)
    replace_keeping_stat(home / "blueprints/plan.blueprint.yaml", OTHER)
    with localstore.open(home=home) as store:
        assert store.load(bp.id).content == OTHER
        assert [h.info.id for h in store.search("2")] == [bp.id]
        store.save("plan", "limit: 3\n")
        assert _texts(store, bp.id) == [
            ("local", V1),
            ("external", OTHER),
            ("local", "limit: 3\n"),
        ]


def test_save_records_a_same_stat_replacement_before_overwriting(home: Path) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", V1)
        replace_keeping_stat(home / "blueprints/plan.blueprint.yaml", OTHER)
        store.save("plan", "limit: 3\n")
        assert [t for _, t in _texts(store, bp.id)] == [V1, OTHER, "limit: 3\n"]


def test_load_returns_a_same_stat_replacement(home: Path) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", V1)
        replace_keeping_stat(home / "blueprints/plan.blueprint.yaml", OTHER)
        assert store.load(bp.id).content == OTHER
        assert [o for o, _ in _texts(store, bp.id)] == ["local", "external"]


def test_a_same_stat_meta_replacement_is_recorded_on_open(home: Path) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", V1, description="abc")
    meta = home / "blueprints/plan.blueprint.meta.json"
    replace_keeping_stat(meta, meta.read_text().replace('"abc"', '"xyz"'))
    with localstore.open(home=home) as store:
        assert store.load(bp.id).meta.description == "xyz"


Stats = tuple[int | None, ...]


def _recorded_vs_disk(store: BlueprintStore) -> list[tuple[str, Stats, Stats]]:
    """Each live row whose recorded stats differ from its files' (such a pair is read again)."""
    out: list[tuple[str, Stats, Stats]] = []
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT path, yaml_size, yaml_mtime_ns, yaml_ctime_ns, yaml_ino, meta_size, "
            "meta_mtime_ns, meta_ctime_ns, meta_ino FROM blueprints WHERE deleted = 0"
        ).fetchall()
    for path, *recorded in rows:
        y = os.stat(store.abspath(path))
        m = os.stat(store.abspath(path.removesuffix(".yaml") + ".meta.json"))
        disk = (
            *(y.st_size, y.st_mtime_ns, y.st_ctime_ns, fs.ino_key(y.st_ino)),
            *(m.st_size, m.st_mtime_ns, m.st_ctime_ns, fs.ino_key(m.st_ino)),
        )
        if tuple(recorded) != disk:
            out.append((path, tuple(recorded), disk))
    return out


def test_every_write_records_the_stats_the_files_have_after_it(home: Path) -> None:
    """The rename into place sets the change time: a row holding the temp's would make every
    open read every file again (the reopen of an unchanged store must read nothing)."""
    with localstore.open(home=home) as store:
        a = store.save("f/a", "a: 1\n")
        store.save_many([SaveRequest(f"g/c{i}", f"c: {i}\n") for i in range(5)])
        store.save_many([SaveRequest("f/b", "b: 1\n"), SaveRequest("f/b", "b: 2\n")])
        store.move(a.id, "h/a")
        store.save("h/a", "a: 2\n")
        store.restore(a.id, 1)
        assert _recorded_vs_disk(store) == []


def test_an_index_without_change_times_is_read_once_and_records_nothing_new(home: Path) -> None:
    with localstore.open(home=home) as store:
        for i in range(5):
            store.save(f"p{i}", f"v: {i}\n", tags=["t"])
        before = revisions_and_op(store)
    set_core_back(home, 7, ("yaml_ctime_ns", "meta_ctime_ns"))
    with localstore.open(home=home) as store:
        with store.index.read() as cur:
            assert cur.execute("PRAGMA user_version").fetchall()[0][0] == len(CORE_MIGRATIONS)
        # The pairs were read (their rows had no change times) and found unchanged: no revision,
        # no op id (nothing for sync to push); only the times were recorded.
        assert revisions_and_op(store) == before
        assert _recorded_vs_disk(store) == []
        assert [len(store.history(f"p{i}")) for i in range(5)] == [1] * 5
    # A second open finds every recorded stat on disk: nothing to read.
    with localstore.open(home=home) as store:
        assert _recorded_vs_disk(store) == []
        assert revisions_and_op(store) == before


def test_an_index_set_back_by_hand_with_the_columns_opens(home: Path) -> None:
    """An index that has the v8 columns but says v7 (tests set versions back) opens: the step's
    ADD COLUMN is skipped."""
    with localstore.open(home=home) as store:
        store.save("a", "a: 1\n")
        with store.index.write() as cur:
            cur.execute("UPDATE component_versions SET version = 7 WHERE component = 'core'")
            cur.execute("PRAGMA user_version = 7")
    with localstore.open(home=home) as store:
        assert store.load("a").content == "a: 1\n"
        assert _recorded_vs_disk(store) == []


def _external_edit(store: BlueprintStore, rel: str, text: str) -> None:
    path = store.abspath(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("low_space", [False, True], ids=["renames", "keeps-previous"])
def test_no_write_path_leaves_a_pair_to_read_again(
    home: Path, monkeypatch: pytest.MonkeyPatch, low_space: bool
) -> None:
    """Every way a row's files get written records the stats they have afterwards: a move alone,
    a restore of a deleted one, a batch from sync (origin remote), the watcher's ingest of an
    external edit, reconcile's of an edit and of a YAML dropped in without meta (whose meta it
    writes); on a nearly full disk too (previous versions kept by hard link until the commit).
    Checked after each step, before anything reconciles: the next open's reconcile would record
    the times of a pair left behind (reading it), and hide it."""
    if low_space:
        monkeypatch.setattr(fs, "space_is_low", lambda _folder: True)
    with localstore.open(home=home) as store:
        a = store.save("f/a", "a: 1\n")
        store.move(a.id, "g/a")
        assert _recorded_vs_disk(store) == []
        d = store.save("f/d", "d: 1\n")
        store.delete(d.id)
        store.restore(d.id, 1)
        assert _recorded_vs_disk(store) == []
        store.save_many(
            [SaveRequest("r/x", "x: 1\n"), SaveRequest("r/y", "y: 1\n")], origin="remote"
        )
        assert _recorded_vs_disk(store) == []
        store.save("w/e", "e: 1\n")
        _external_edit(store, "w/e.blueprint.yaml", "e: 22\n")
        Reconciler(store).ingest_path("w/e.blueprint.yaml")  # (what the watcher runs per path)
        assert store.load("w/e").content == "e: 22\n"
        assert _recorded_vs_disk(store) == []
        store.save("c/e", "e: 1\n")
        _external_edit(store, "c/e.blueprint.yaml", "e: 33\n")
        _external_edit(store, "c/new.blueprint.yaml", "n: 1\n")
        store.reconcile()
        assert store.load("c/new").content == "n: 1\n" and store.load("c/e").content == "e: 33\n"
        assert _recorded_vs_disk(store) == []
