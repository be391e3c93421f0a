"""Which file keeps a blueprint's identity when reconcile finds the same blueprint twice.

Real homes, real files; the changes are made while no store is open, as a file manager or a
shell would make them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore.errors import StorageError

DOC = "steps: [a]\n"


def _open(home: Path) -> localstore.BlueprintStore:
    return localstore.open(home=home, maintenance=False)


def _history(store: localstore.BlueprintStore, ref: str) -> list[tuple[str, bool]]:
    return [(r.path, r.deleted) for r in reversed(store.history(ref))]


@pytest.mark.parametrize("with_meta", [True, False], ids=["pair", "yaml-alone"])
def test_a_copy_made_before_the_original_moved_does_not_take_its_identity(
    home: Path, with_meta: bool
) -> None:
    """``cp m.* backup/; mv m.* z/`` while nothing ran: both pairs carry the blueprint's id
    (or, YAML alone, its content), and the old path is gone. The pass ingested in path order,
    so the copy (``backup/``) claimed the identity as a move, and the original, moved, got a
    new id: the history, and sync's record of the blueprint, went to the copy. The original
    kept its inode; a copy never has it."""
    with _open(home) as s:
        bp = s.save("m", DOC, tags=["mine"])
    root = home / "blueprints"
    (root / "backup").mkdir()
    (root / "z").mkdir()
    names = ["m.blueprint.yaml", "m.blueprint.meta.json"] if with_meta else ["m.blueprint.yaml"]
    for name in names:
        shutil.copy2(root / name, root / "backup" / name)
        os.rename(root / name, root / "z" / name)
    with _open(home) as s:
        assert s.resolve(bp.id).path == "z/m.blueprint.yaml"
        assert _history(s, bp.id) == [("m.blueprint.yaml", False), ("z/m.blueprint.yaml", False)]
        copy = s.resolve("backup/m")
        assert copy.id != bp.id
        assert s.check().clean


def test_a_deleted_blueprints_meta_pasted_over_an_unchanged_pair_keeps_its_identity(
    home: Path,
) -> None:
    """Another pair's meta pasted over a pair whose YAML did not change is replaced by that
    pair's own (the blueprint there keeps its id), as when the meta's blueprint is live. When
    that blueprint was deleted, the pair's own blueprint was recorded deleted (a delete sync
    pushes to every device) and the deleted one came back under its id with this pair's YAML."""
    with _open(home) as s:
        gone = s.save("d", "v: d\n", tags=["d"])
        b = s.save("b", "v: b\n", tags=["b"])
        pasted = s.abspath("d.blueprint.meta.json").read_bytes()
        s.delete(gone.id)
    s.abspath("b.blueprint.meta.json").write_bytes(pasted)
    with _open(home) as s:
        assert s.resolve("b").id == b.id
        assert s.load(b.id).meta.tags == ("b",)
        assert _history(s, b.id) == [("b.blueprint.yaml", False)]
        assert s.row(gone.id, include_deleted=True).deleted
        assert _history(s, gone.id) == [("d.blueprint.yaml", False), ("d.blueprint.yaml", True)]
        assert s.check().clean
    meta = (home / "blueprints" / "b.blueprint.meta.json").read_text(encoding="utf-8")
    assert b.id in meta and gone.id not in meta


def test_a_yaml_moved_alone_whose_ingest_fails_keeps_its_old_meta_and_its_identity(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mv i.blueprint.yaml j.blueprint.yaml`` while nothing ran, after tags were changed by
    hand in ``i``'s meta; the next open cannot write ``j``'s meta (injected: a disk refusing
    the name). The pass removed ``i``'s meta before the ingest failed, and the rollback did not
    bring it back; the blueprint was then recorded deleted, and once the disk took the name,
    ``j`` got a new id without the hand-made tags. Now the old meta goes only once the move is
    committed, and a blueprint whose move failed is not recorded deleted."""
    with _open(home) as s:
        bp = s.save("i", DOC, tags=["mine"])
    root = home / "blueprints"
    old_meta = root / "i.blueprint.meta.json"
    by_hand = json.loads(old_meta.read_text())
    by_hand["tags"] = ["by-hand"]
    old_meta.write_text(json.dumps(by_hand))
    os.rename(root / "i.blueprint.yaml", root / "j.blueprint.yaml")
    create_file = fs.create_file

    def refused(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
        if path.name == "j.blueprint.meta.json":
            raise StorageError("cannot create j.blueprint.meta.json: refused (injected)")
        return create_file(path, data, mode=mode)

    monkeypatch.setattr(fs, "create_file", refused)
    with _open(home) as s:
        assert s.resolve(bp.id).path == "i.blueprint.yaml"  # kept, not recorded deleted
    assert json.loads(old_meta.read_text())["tags"] == ["by-hand"]
    monkeypatch.setattr(fs, "create_file", create_file)
    with _open(home) as s:
        moved = s.resolve("j")
        assert moved.id == bp.id
        assert moved.tags == ("by-hand",)
        assert not old_meta.exists()
        assert s.check().clean


def _ids(store: localstore.BlueprintStore) -> list[str]:
    """Every id the index holds, deleted ones too."""
    with store.index.read() as cur:
        return [str(r[0]) for r in cur.execute("SELECT id FROM blueprints").fetchall()]


def _pair_files(root: Path, rel: str) -> dict[str, bytes]:
    return {s: (root / (rel + s)).read_bytes() for s in (".blueprint.yaml", ".blueprint.meta.json")}


@pytest.mark.parametrize("edited", [False, True], ids=["unchanged", "edited"])
@pytest.mark.parametrize("opened_between", [True, False], ids=["delete-recorded", "both-closed"])
def test_a_pair_whose_meta_names_a_deleted_blueprint_brings_it_back_at_its_new_path(
    home: Path, edited: bool, opened_between: bool
) -> None:
    """A sync tool's move applied as "delete the old pair", then "create the new one", while
    nothing ran; with an open in between, the delete was recorded first. The new pair's meta
    names the blueprint: it is that blueprint moved (or back from deleted) with its id, tags and
    history, not a new blueprint, whatever its YAML holds."""
    with _open(home) as s:
        bp = s.save("n/plan", DOC, tags=["mine"])
    root = home / "blueprints"
    files = _pair_files(root, "n/plan")
    if edited:
        files[".blueprint.yaml"] = b"steps: [a, b]\n"
    shutil.rmtree(root / "n")
    expected = [("n/plan.blueprint.yaml", False)]
    if opened_between:
        with _open(home) as s:
            assert s.row(bp.id, include_deleted=True).deleted
        expected.append(("n/plan.blueprint.yaml", True))
    (root / "m").mkdir()
    for suffix, data in files.items():
        (root / ("m/plan" + suffix)).write_bytes(data)
    with _open(home) as s:
        info = s.resolve("m/plan")
        assert (info.id, info.tags) == (bp.id, ("mine",))
        assert s.load(bp.id).content == files[".blueprint.yaml"].decode()
        assert _history(s, bp.id) == [*expected, ("m/plan.blueprint.yaml", False)]
        assert _ids(s) == [bp.id]
        assert s.check().clean
    assert _pair_files(root, "m/plan") == files  # (its meta left as it came)


def test_a_yaml_alone_after_its_blueprint_was_recorded_deleted_is_a_new_blueprint(
    home: Path,
) -> None:
    """The limit (docs/architecture.md, "Identity across a pass"): a YAML that comes without a
    meta after its blueprint was recorded deleted is not matched by content to the deleted one;
    it is a new blueprint, and the deleted one keeps its whole history, restorable."""
    with _open(home) as s:
        bp = s.save("n/plan", DOC)
    root = home / "blueprints"
    shutil.rmtree(root / "n")
    with _open(home):
        pass
    (root / "m").mkdir()
    (root / "m/plan.blueprint.yaml").write_text(DOC, encoding="utf-8")
    with _open(home) as s:
        assert s.resolve("m/plan").id != bp.id
        assert _history(s, bp.id) == [
            ("n/plan.blueprint.yaml", False),
            ("n/plan.blueprint.yaml", True),
        ]
        assert s.load_revision(bp.id, 1).content == DOC
        assert s.check().clean
