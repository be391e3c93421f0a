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
