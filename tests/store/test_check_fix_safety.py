"""check --fix (and the open's reconcile) never throws away bytes that exist nowhere else."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import localstore
from localstore._kept_edits import unacknowledged_kept

OLD = "steps: [old]\n"
NEW = "steps: [the new work]\n"


def _an_hour_later(monkeypatch: pytest.MonkeyPatch) -> None:
    # A file's change time cannot be set back: the clock is moved instead.
    later = time.time_ns() + 3600 * 10**9
    monkeypatch.setattr("localstore._reconcile_leftovers.time.time_ns", lambda: later)


def test_a_save_killed_before_its_renames_keeps_its_version(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A save flushes both temps, then renames them. Killed in between (a crash, a power cut),
    # the new version is only in the temps: the index rolled back and the files in place are
    # the old ones. The next open removed them as leftovers, without a word: the edit was gone.
    with localstore.open(home=home) as s:
        bp = s.save("a", OLD)
        meta_bytes = s.abspath("a.blueprint.meta.json").read_bytes()
    root = home / "blueprints"
    (root / ".a.blueprint.yaml.0badf00d.lstmp").write_text(NEW)
    new_meta = meta_bytes.replace(b'"tags": []', b'"tags": ["new"]')
    (root / ".a.blueprint.meta.json.0badf00d.lstmp").write_bytes(new_meta)
    # A temp whose bytes are the file's at its name holds nothing new: removed as before.
    (root / ".a.blueprint.yaml.1badf00d.lstmp").write_text(OLD)
    _an_hour_later(monkeypatch)
    with localstore.open(home=home, reconcile=False) as s:
        report = s.check(fix=True)
        assert s.load(bp.id).content == OLD  # (the interrupted save is not applied)
        kept = {f["path"]: f["detail"] for f in report.fixed if f["kind"] == "temp-kept"}
        removed = [f["path"] for f in report.fixed if f["kind"] == "temp-file"]
        assert sorted(kept) == [
            ".a.blueprint.meta.json.0badf00d.lstmp",
            ".a.blueprint.yaml.0badf00d.lstmp",
        ]
        assert removed == [".a.blueprint.yaml.1badf00d.lstmp"]
        # Nothing else differs. That save never returned: check is clean (as after every
        # crash), and doctor lists the two kept files until the person removes them.
        assert s.check().clean, s.check().problems
        assert len(unacknowledged_kept(s)) == 2
    assert not list(root.glob(".*.lstmp"))
    # Both kept under their files' names in one folder: the pair can be put back as it is.
    (folder,) = (home / "data/recovered").iterdir()
    assert (folder / "a.blueprint.yaml").read_text() == NEW
    assert (folder / "a.blueprint.meta.json").read_bytes() == new_meta
    assert str(folder / "a.blueprint.yaml") in kept[".a.blueprint.yaml.0badf00d.lstmp"]


def test_a_new_blueprint_killed_before_its_renames_is_kept_in_a_subfolder(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first save of a blueprint: nothing at its name yet, the temps are all there is.
    localstore.open(home=home).close()
    (home / "blueprints/p").mkdir()
    (home / "blueprints/p/.b.blueprint.yaml.abcdef01.lstmp").write_text(NEW)
    _an_hour_later(monkeypatch)
    with localstore.open(home=home) as s:  # (the open's own reconcile)
        assert s.count() == 0
    (folder,) = (home / "data/recovered").iterdir()
    assert (folder / "p/b.blueprint.yaml").read_text() == NEW
    assert not list((home / "blueprints/p").iterdir())


def test_a_yaml_moved_alone_keeps_its_meta_edited_by_hand(home: Path) -> None:
    # The meta was edited by hand (tags) while nothing ran, then the YAML alone was renamed.
    # Reconcile re-paired the YAML with its blueprint by hash, wrote the new meta from the
    # index (the old tags) and removed the edited meta file: the edit was gone.
    with localstore.open(home=home) as s:
        bp = s.save("a", OLD, tags=["old"])
    root = home / "blueprints"
    meta_file = root / "a.blueprint.meta.json"
    meta_file.write_bytes(meta_file.read_bytes().replace(b'"old"', b'"edited"'))
    (root / "a.blueprint.yaml").rename(root / "b.blueprint.yaml")
    with localstore.open(home=home, reconcile=False) as s:
        s.check(fix=True)
        got = s.load(bp.id)
        assert (got.path, got.meta.tags) == ("b.blueprint.yaml", ("edited",))
        assert s.check().clean
    assert not meta_file.exists()
    assert b'"edited"' in (root / "b.blueprint.meta.json").read_bytes()


def test_a_copied_meta_edited_by_hand_without_its_yaml_is_kept(home: Path) -> None:
    # A meta file whose id lives at another path was removed as the leftover of an interrupted
    # move, whatever it held: a copy of a pair's meta with tags changed by hand lost them.
    with localstore.open(home=home) as s:
        s.save("a", OLD, tags=["one"])
        meta_bytes = s.abspath("a.blueprint.meta.json").read_bytes()
    root = home / "blueprints"
    edited = meta_bytes.replace(b'"one"', b'"one", "edited"')
    assert edited != meta_bytes
    (root / "z.blueprint.meta.json").write_bytes(edited)
    # The same bytes as the live meta: a leftover, removed as before.
    (root / "y.blueprint.meta.json").write_bytes(meta_bytes)
    with localstore.open(home=home, reconcile=False) as s:
        report = s.check(fix=True)
        # Nothing else differs; the kept one stays reported until the person removes it.
        assert [(p["kind"], p["path"]) for p in s.check().problems] == [
            ("edit-kept", "z.blueprint.meta.json")
        ]
    assert not (root / "z.blueprint.meta.json").exists()
    assert not (root / "y.blueprint.meta.json").exists()
    fixed = {f["path"]: f["detail"] for f in report.fixed if f["kind"] == "orphan-meta"}
    assert fixed["y.blueprint.meta.json"] == "removed"
    assert fixed["z.blueprint.meta.json"].startswith("kept: ")
    kept = list((home / "data" / "recovered").rglob("z.blueprint.meta.json"))
    assert [p.read_bytes() for p in kept] == [edited]
