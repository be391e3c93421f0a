"""Core v11 recomputes every path key (files.path_key, the Unicode canonical caseless form).

The fixture (fixtures/name-keys-72e8b8d.tar.gz, made by make_name_key_fixture.py with the last
build before v11) holds a home with two pairs of names that build took for two names and that
are one name on macOS and Windows, and a home whose keys change without any pair.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import apsw
import pytest

from localstore import archive
from localstore import files as fs
from localstore.errors import UnsafePathError
from localstore.index import CORE_MIGRATIONS
from localstore.store import BlueprintStore, open_store

FIXTURE = Path(__file__).parent / "fixtures" / "name-keys-72e8b8d.tar.gz"
# (held, kept): the first of each pair keeps the key (the older row); the second is kept at its
# own path under a key of its own. NFC, as the old build stored them.
PAIRS = [
    ("greek/\u0390.blueprint.yaml", "greek/\u03aa\u0301.blueprint.yaml"),
    ("greek/\u03aa\u0342.blueprint.yaml", "greek/\u1fd7.blueprint.yaml"),
]


@pytest.fixture
def unpacked(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path, json.loads((tmp_path / "expected.json").read_text(encoding="utf-8"))


def _raw(home: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows read straight from the index file (before or after an open)."""
    conn = apsw.Connection(str(home / "data" / "index.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def _as_said(store: BlueprintStore, said: dict[str, Any]) -> None:
    """Every live blueprint loads with the old build's id, content and history."""
    assert sorted(i.path for i in store.list()) == sorted(said["live"])
    for path, old in said["live"].items():
        bp = store.load(path)
        assert (bp.path, bp.id, bp.content) == (path, old["id"], old["content"])
        history = [[r.rev, r.path, r.origin, r.deleted] for r in store.history(old["id"])]
        assert history == old["history"]


def test_a_pair_one_name_now_is_kept_loadable_and_reported(
    unpacked: tuple[Path, dict[str, Any]],
) -> None:
    root, expected = unpacked
    home = root / "pairs"
    assert _raw(home, "PRAGMA user_version") == [(10,)]
    with open_store(home) as store:
        _as_said(store, expected["pairs"])
        problems = [p for p in store.check().problems if p["kind"] == "case-collision"]
        assert problems == [
            {
                "kind": "case-collision",
                "path": kept,
                "detail": f"differs only by case from {held}; rename one of them",
            }
            for held, kept in sorted(PAIRS, key=lambda p: p[1])
        ]
        assert store.index.integrity_check() == []
        held, kept = PAIRS[0]
        # Saved by its exact path, the kept blueprint is updated where it is, not refused as a
        # case twin of the held one (nor written over it).
        kept_id = expected["pairs"]["live"][kept]["id"]
        assert store.save(kept, "side: second\nedited: true\n").id == kept_id
        assert store.load(kept).content == "side: second\nedited: true\n"
        assert store.load(held).content == expected["pairs"]["live"][held]["content"]
        # Any other name of the pair is still refused.
        with pytest.raises(UnsafePathError, match="differs only by case"):
            store.save("greek/\u1fd3".upper(), "third: true\n")
        # Once the held one is renamed, the kept one gets the key back at the next check ...
        store.move(held, "greek/renamed")
    with open_store(home) as store:
        assert [p["path"] for p in store.check().problems if p["kind"] == "case-collision"] == [
            PAIRS[1][1]
        ]
        # ... and blocks the names it is one with, like any blueprint.
        with pytest.raises(UnsafePathError, match=f"differs only by case from {kept}"):
            store.save(held, "taken: again\n")
    keys = dict(_raw(home, "SELECT path, path_key FROM blueprints WHERE deleted = 0"))
    assert keys[kept] == fs.path_key(kept)
    assert _raw(home, "PRAGMA user_version") == [(len(CORE_MIGRATIONS),)]


def test_an_old_index_without_pairs_migrates_with_no_visible_change(
    unpacked: tuple[Path, dict[str, Any]],
) -> None:
    root, expected = unpacked
    home = root / "plain"
    count = "SELECT count(*) FROM revisions"
    op = "SELECT value FROM counters WHERE name = 'op_id'"
    before = (_raw(home, count), _raw(home, op))
    with open_store(home) as store:
        _as_said(store, expected["plain"])
        report = store.check()
        assert (report.problems, report.fixed) == ([], [])
        (gone_path,) = expected["plain"]["deleted"]
        assert (
            store.resolve(gone_path, include_deleted=True).id
            == (expected["plain"]["deleted"][gone_path])
        )
        # The recomputed keys are in effect: the name one with the held Ϊ́ is refused now.
        with pytest.raises(UnsafePathError, match="differs only by case"):
            store.save("greek/\u1fd3", "pair: no\n")
    # Nothing recorded, nothing for sync to push; every key is the new one.
    assert (_raw(home, count), _raw(home, op)) == before
    for path, key in _raw(home, "SELECT path, path_key FROM blueprints"):
        assert key == fs.path_key(path)


def test_an_export_holding_a_pair_is_refused_with_the_pair_named(
    unpacked: tuple[Path, dict[str, Any]],
) -> None:
    """A bundle cannot hold both names of a pair (an import refuses such a bundle whole). The
    export said "the store changed during the export (export again)", which no retry cures:
    it names the pair now, before anything is written, and exports once one is renamed."""
    root, _ = unpacked
    dest = root / "all.lsbundle"
    with open_store(root / "pairs") as store:
        held, kept = PAIRS[0]
        with pytest.raises(UnsafePathError, match="one name on macOS and Windows") as refused:
            archive.export_bundle(store, dest)
        assert f"{kept} and {held}" in refused.value.message
        assert "rename one of them" in (refused.value.hint or "")
        assert not dest.exists()
        # (The same before a passphrase is asked for.)
        with pytest.raises(UnsafePathError, match="one name on macOS and Windows"):
            archive.check_export(store, dest)
        # One of a pair alone is a bundle like any other.
        assert archive.export_bundle(store, dest, refs=[kept]).count == 1
        for _, second in PAIRS:
            store.move(second, second.replace("greek/", "greek/renamed-"))
        exported = archive.export_bundle(store, dest)
    with open_store(root / "imported") as other:
        report = archive.import_bundle(other, dest)
        assert report.failed == 0
        assert len(other.list()) == exported.count
