"""Reconcile on open: files are the truth; every difference found while nothing ran is repaired."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore._reconcile import Reconciler

DOC = "steps: [a]\n"


def _open(home: Path) -> localstore.BlueprintStore:
    return localstore.open(home=home)


def test_file_changed_while_closed_gets_a_revision(home: Path) -> None:
    with _open(home) as s:
        bp = s.save("a", DOC)
    (home / "blueprints/a.blueprint.yaml").write_text("steps: [b]\n")
    with _open(home) as s:
        assert s.load(bp.id).content == "steps: [b]\n"
        hist = s.history(bp.id)
        assert [(r.rev, r.origin) for r in hist] == [(2, "external"), (1, "local")]


def test_new_yaml_without_meta_gets_one(home: Path) -> None:
    _open(home).close()
    (home / "blueprints/new").mkdir()
    (home / "blueprints/new/x.blueprint.yaml").write_text(DOC)
    with _open(home) as s:
        info = s.resolve("new/x")
        meta = json.loads((home / "blueprints/new/x.blueprint.meta.json").read_text())
        assert meta["id"] == info.id and meta["name"] == "x"
        assert s.history(info.id)[0].origin == "external"


def test_moved_while_closed_keeps_identity(home: Path) -> None:
    with _open(home) as s:
        bp = s.save("old/place", DOC)
    root = home / "blueprints"
    (root / "new").mkdir()
    for suffix in (fs.YAML_SUFFIX, fs.META_SUFFIX):
        os.rename(root / f"old/place{suffix}", root / f"new/spot{suffix}")
    with _open(home) as s:
        assert s.resolve(bp.id).path == "new/spot.blueprint.yaml"
        assert s.count() == 1


def test_yaml_moved_without_meta_is_repaired_by_hash(home: Path) -> None:
    with _open(home) as s:
        bp = s.save("one", DOC)
    root = home / "blueprints"
    os.rename(root / "one.blueprint.yaml", root / "two.blueprint.yaml")
    with _open(home) as s:
        assert s.resolve(bp.id).path == "two.blueprint.yaml"
        assert not (root / "one.blueprint.meta.json").exists()
        assert (root / "two.blueprint.meta.json").exists()
        assert s.check().clean


def test_deleted_while_closed_goes_to_history(home: Path) -> None:
    with _open(home) as s:
        bp = s.save("gone", DOC)
    for suffix in (fs.YAML_SUFFIX, fs.META_SUFFIX):
        (home / f"blueprints/gone{suffix}").unlink()
    with _open(home) as s:
        assert s.count() == 0
        assert s.history(bp.id)[0].deleted
        assert s.restore(bp.id, 1).content == DOC


def test_index_behind_files_after_crash_is_caught_up(home: Path) -> None:
    """Simulates a kill between the file write and the index commit."""
    with _open(home) as s:
        bp = s.save("c", DOC)
        meta = s.load(bp.id).meta
    fs.atomic_write(home / "blueprints/c.blueprint.yaml", b"steps: [crash]\n")
    fs.atomic_write(
        home / "blueprints/c.blueprint.meta.json",
        json.dumps({**meta.to_dict(), "description": "new"}).encode(),
    )
    with _open(home) as s:
        got = s.load(bp.id)
        assert got.content == "steps: [crash]\n" and got.meta.description == "new"
        assert s.check().clean


def test_orphan_meta_is_reported(home: Path) -> None:
    with _open(home) as s:
        s.save("o", DOC)
    (home / "blueprints/o.blueprint.yaml").unlink()
    (home / "blueprints/lonely.blueprint.meta.json").write_text("{}")
    with _open(home) as s:
        report = s.check()
        assert {p["kind"] for p in report.problems} == {"orphan-meta"}
        assert s.count() == 0


def test_an_orphan_meta_of_no_live_blueprint_is_kept(home: Path) -> None:
    # A meta file whose YAML is not there (a copy or a checkout not finished yet, a YAML moved
    # away by hand) holds the blueprint's id, name and tags and nothing else has them: reconcile
    # reports it and leaves it alone. Only the leftover of an interrupted move (its id lives at
    # another path) is removed.
    _open(home).close()
    lonely = home / "blueprints/lonely.blueprint.meta.json"
    meta = {"id": "6f1c2d0e-1b7a-4c55-9d7e-2a8f3b4c5d6e", "name": "Lonely", "tags": ["keep"]}
    lonely.write_text(json.dumps(meta))
    with _open(home) as s:
        report = s.check(fix=True)
        assert [p["kind"] for p in report.problems] == ["orphan-meta"]
        assert s.count() == 0
    assert json.loads(lonely.read_text()) == meta


def test_stale_temp_files_are_removed(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _open(home).close()
    fresh = home / "blueprints/.y.blueprint.yaml.abcd.lstmp"
    fresh.write_text("in flight")
    with _open(home) as s:
        assert fresh.exists()
        assert s.count() == 0
    # An hour later (a file's change time cannot be set back: the clock is moved instead).
    later = time.time_ns() + 3600 * 10**9
    monkeypatch.setattr("localstore._reconcile_leftovers.time.time_ns", lambda: later)
    with _open(home) as s:
        assert not fresh.exists()
        assert s.count() == 0


def test_a_file_just_set_aside_is_not_stale(home: Path) -> None:
    # A delete renames its pair aside first and unlinks it after the index commit; the rename
    # keeps the file's old mtime. Aged by mtime alone, an old blueprint's aside file was stale at
    # once, and a rescan then removed it before the commit: a failing commit could not put it
    # back. Its change time (set by the rename) keeps it young.
    with _open(home) as s:
        s.save("old", DOC)
        path = s.root / "old.blueprint.yaml"
        an_hour_ago = time.time() - 3600
        os.utime(path, (an_hour_ago, an_hour_ago))
        aside = fs.set_aside(str(path))
        assert aside is not None
        rec = Reconciler(s)
        assert rec._stale_temps(rec.scan()) == []
        fs.put_back(aside, str(path))


def test_unchanged_store_reopen_does_not_write(home: Path) -> None:
    with _open(home) as s:
        for i in range(50):
            s.save(f"u/{i}", DOC)
    wal = home / "data/index.db-wal"
    size = wal.stat().st_size if wal.exists() else 0
    with _open(home) as s:
        assert s.reconcile().fixed == []
    assert (wal.stat().st_size if wal.exists() else 0) <= size


def test_touch_without_change_records_nothing(home: Path) -> None:
    with _open(home) as s:
        bp = s.save("t", DOC)
    p = home / "blueprints/t.blueprint.yaml"
    os.utime(p, (time.time() + 5, time.time() + 5))
    with _open(home) as s:
        assert len(s.history(bp.id)) == 1
        assert s.check().clean


def test_check_fix_cli_exit_codes(home: Path) -> None:
    from click.testing import CliRunner

    from localstore.cli import cli

    with _open(home) as s:
        s.save("k", DOC)
    (home / "blueprints/k.blueprint.yaml").write_text("steps: [z]\n")
    runner = CliRunner()
    r = runner.invoke(cli, ["--home", str(home), "check"])
    assert r.exit_code == 3, r.output
    r = runner.invoke(cli, ["--home", str(home), "--json", "check", "--fix"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["fixed"][0]["kind"] == "modified"
    assert runner.invoke(cli, ["--home", str(home), "check"]).exit_code == 0


def test_kill_between_yaml_and_meta_rename_keeps_the_id(home: Path) -> None:
    """A create killed after its YAML rename: the flushed meta temp is renamed into place."""
    from localstore.blueprint import BlueprintMeta, encode_meta, new_id, utc_now

    _open(home).close()
    ident = new_id()
    meta = BlueprintMeta(id=ident, name="pulled", created=utc_now(), modified=utc_now())
    root = home / "blueprints"
    (root / "p").mkdir()
    (root / "p/pulled.blueprint.yaml").write_text(DOC)
    (root / "p/.pulled.blueprint.meta.json.1a2b3c4d.lstmp").write_bytes(encode_meta(meta))
    with _open(home) as s:
        assert s.resolve("p/pulled").id == ident
        assert s.check().clean
    assert not list(root.rglob("*.lstmp"))


def test_a_meta_longer_than_max_yaml_bytes_is_read_whole(home: Path) -> None:
    """max_yaml_bytes limits the YAML, not the meta: a long description is a valid meta.

    Reconcile read the meta with the YAML limit: cut short, it was "not valid JSON", the edit
    beside it was flagged instead of recorded, and the hint (delete the meta) lost the id.
    """
    description = "d" * 1500
    with localstore.open(home=home, max_yaml_bytes=1024) as s:
        bp = s.save("m/long", "name: m\n", description=description)
    meta_file = home / "blueprints/m/long.blueprint.meta.json"
    assert meta_file.stat().st_size > 1024
    (home / "blueprints/m/long.blueprint.yaml").write_text("name: m2\n")
    with localstore.open(home=home, max_yaml_bytes=1024) as s:
        assert s.check().clean, s.check().problems
        assert s.load(bp.id).content == "name: m2\n"
        assert s.resolve("m/long").id == bp.id
        assert s.load(bp.id).meta.description == description
        assert json.loads(meta_file.read_text())["id"] == bp.id


def test_a_failed_delete_puts_a_long_meta_back_whole(home: Path) -> None:
    """The files of a delete whose commit fails are put back as they were, not cut at the limit.

    The delete read the pair with max_yaml_bytes: the put-back wrote a truncated meta file.
    """
    import pytest

    from localstore.errors import StorageError

    with localstore.open(home=home, max_yaml_bytes=1024) as s:
        bp = s.save("m/long", "name: m\n", description="d" * 1500)
        meta_file = home / "blueprints/m/long.blueprint.meta.json"
        before = meta_file.read_bytes()
        s.index.conn.setcommithook(lambda: True)  # fault: SQLite turns the COMMIT into a rollback
        try:
            with pytest.raises(StorageError):
                s.delete(bp.id)
        finally:
            s.index.conn.setcommithook(None)
        assert meta_file.read_bytes() == before
        assert s.check().clean
        assert s.load(bp.id).meta.description == "d" * 1500


def test_an_aside_file_is_aged_by_the_time_its_name_holds(home: Path) -> None:
    # On Windows st_ctime_ns is the creation time, which neither the rename nor a hard link
    # sets: an old blueprint's file set aside had old times both ways and was stale at once.
    # The scan is given the stats such a file has there (both times an hour old).
    with _open(home) as s:
        s.save("old", DOC)
        path = str(s.root / "old.blueprint.yaml")
        aside = fs.aside_name(path)
        assert abs(fs.aside_made_ns(os.path.basename(aside)) - time.time_ns()) < 60 * 10**9
        assert fs.aside_made_ns(".lsaside-0123456789abcdef.lstmp") == 0  # an older version's
        rec = Reconciler(s)
        scan = rec.scan()
        hour_ago = time.time_ns() - 3600 * 10**9
        rel = os.path.relpath(aside, s.root)
        scan.temps[rel] = fs.FileStat(10, hour_ago, hour_ago, 1)
        assert rec._stale_temps(scan) == []
        scan.temps[".x.blueprint.yaml.0badf00d.lstmp"] = fs.FileStat(10, hour_ago, hour_ago, 1)
        assert rec._stale_temps(scan) == [".x.blueprint.yaml.0badf00d.lstmp"]
