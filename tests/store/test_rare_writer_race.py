"""The rarer writers never rename over, or remove, a save another program made since they looked.

A save, a download and a move place their files with the checked rename (files.place_new,
files.replace_recorded). Other writers still replaced or removed a blueprint file with a plain
rename or unlink after looking at it: the undo of a failed write (putting back the committed
version, a low-space save's kept copy, or removing a new pair), reconcile rewriting a meta file
another pair's meta was pasted over, and the pair a late meta keeps beside (_late_meta). An
editor's save between the look and the rename was lost, in no revision. Now each of them
checks the file it replaces (the swap), places new names with the no-replace rename, and
renames a file aside before judging it: the person's file stays at its name and is recorded.

Real home, real files; the editor is a real process. The faults injected are its timing (just
before the files are placed, or just after a failed write placed them) and the failure itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore import files as fs
from localstore.blueprint import encode_meta
from localstore.store import BlueprintStore

EDITOR = "steps: [typed in an editor while LocalStore was writing]\n"

_EDITOR_SCRIPT = """
import os, sys
path, text = sys.argv[1], sys.argv[2]
tmp = path + ".editor-swp"
with open(tmp, "w", encoding="utf-8") as fh:
    fh.write(text)
os.replace(tmp, path)
"""


def _editor_saves(path: Path, text: str) -> None:
    """Another program (no lock of ours) saves ``text`` at ``path``, as most editors do."""
    subprocess.run([sys.executable, "-c", _EDITOR_SCRIPT, str(path), text], check=True)


class _Injected(Exception):
    """The fault a test injects after a save placed its files (its index commit failing)."""


def _fail_after_placing(monkeypatch: pytest.MonkeyPatch, act: Callable[[], None]) -> None:
    """The next save places its files, then ``act`` runs (the editor), then the save fails."""
    real = BlueprintStore._place_files

    def failing(cur: Any, batch: Any) -> None:
        real(cur, batch)
        monkeypatch.setattr(BlueprintStore, "_place_files", staticmethod(real))
        act()
        raise _Injected

    monkeypatch.setattr(BlueprintStore, "_place_files", staticmethod(failing))


def _contents(store: BlueprintStore, ref: str) -> list[str]:
    return [store.load_revision(ref, r.rev).content for r in reversed(store.history(ref))]


@pytest.mark.parametrize("low_space", [False, True], ids=["rewritten", "kept-copy"])
def test_a_failed_saves_undo_leaves_an_edit_saved_over_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, low_space: bool
) -> None:
    """The undo put the committed version back over the file the save placed: from history
    (atomic_write_many), or on a nearly full disk the kept copy (put_back): either renamed
    over an editor's save made after the save's rename, lost."""
    home = tmp_path / "home"
    with localstore.open(home=home, maintenance=False) as store:
        bp = store.save("x", "steps: [old]\n")
        target = store.abspath("x.blueprint.yaml")
        monkeypatch.setattr(fs, "space_is_low", lambda folder: low_space)
        _fail_after_placing(monkeypatch, lambda: _editor_saves(target, EDITOR))
        with pytest.raises(_Injected):
            store.save("x", "steps: [app]\n")
        monkeypatch.undo()
        assert target.read_text() == EDITOR  # left at its name, not written over
        assert store.check(fix=True).fixed
        assert _contents(store, bp.id) == ["steps: [old]\n", EDITOR]
        assert not list((store.root).glob(".*.lstmp"))
        assert not (store.paths.data / "recovered").exists()
        assert store.check().clean


def test_a_failed_saves_undo_leaves_an_edit_saved_over_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new pair's files are removed by the undo: the unlink removed an editor's save made
    over the new YAML after the save's rename."""
    with localstore.open(home=tmp_path / "home", maintenance=False) as store:
        target = store.abspath("n.blueprint.yaml")
        _fail_after_placing(monkeypatch, lambda: _editor_saves(target, EDITOR))
        with pytest.raises(_Injected):
            store.save("n", "steps: [app]\n")
        monkeypatch.undo()
        assert target.read_text() == EDITOR
        assert not store.abspath("n.blueprint.meta.json").exists()  # (ours: removed)
        store.check(fix=True)
        [info] = store.list()
        assert store.load(info.id).content == EDITOR
        assert store.check().clean


def _before_commit_to(
    monkeypatch: pytest.MonkeyPatch, marker: str, act: Callable[[], None]
) -> list[int]:
    """Run ``act`` once, just before the first PendingWrites.commit placing a file whose path
    holds ``marker``; returns a list that gets an item when it ran."""
    real = fs.PendingWrites.commit
    ran: list[int] = []

    def commit(self: fs.PendingWrites) -> None:
        if not ran and any(marker in target for _, target in self._temps):
            ran.append(1)
            act()
        real(self)

    monkeypatch.setattr(fs.PendingWrites, "commit", commit)
    return ran


def test_reconcile_rewriting_a_pasted_meta_keeps_an_edit_saved_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another pair's meta pasted over b's: reconcile writes b's own meta back. A name the
    person typed into b's meta file between reconcile's read and its write was replaced."""
    home = tmp_path / "home"
    with localstore.open(home=home, maintenance=False) as store:
        store.save("a", "v: a\n", tags=["a"])
        b = store.save("b", "v: b\n", tags=["b"])
        root = store.root
    meta_b = root / "b.blueprint.meta.json"
    meta_b.write_bytes((root / "a.blueprint.meta.json").read_bytes())
    typed = encode_meta(b.meta.replace(name="Typed by hand")).decode()
    ran = _before_commit_to(
        monkeypatch, "b.blueprint.meta.json", lambda: _editor_saves(meta_b, typed)
    )
    with localstore.open(home=home, maintenance=False) as store:
        monkeypatch.undo()
        assert ran
        assert meta_b.read_text() == typed
        assert store.load(b.id).meta.name == "Typed by hand"
        assert store.check().clean


def test_a_late_metas_kept_pair_never_replaces_a_file_made_at_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A made-up blueprint the person described is kept beside the arriving one at a name
    found free; a file another program made there before the pair was placed was replaced."""
    with localstore.open(home=tmp_path / "other", maintenance=False) as other:
        arriving = other.save("x", "steps: [x]\n", tags=["from-a"])
        yaml_bytes = (other.root / "x.blueprint.yaml").read_bytes()
        meta_bytes = (other.root / "x.blueprint.meta.json").read_bytes()
    with localstore.open(home=tmp_path / "home", maintenance=False) as store:
        (store.root / "x.blueprint.yaml").write_bytes(yaml_bytes)
        store.check(fix=True)
        [made_up] = [i.id for i in store.list()]
        store.save("x.blueprint.yaml", None, id=made_up, tags=["mine"], name="My plan")
        (store.root / "x.blueprint.meta.json").write_bytes(meta_bytes)
        first = store.root / f"x (kept {made_up[:8]}).blueprint.yaml"
        ran = _before_commit_to(monkeypatch, "(kept ", lambda: _editor_saves(first, EDITOR))
        store.check(fix=True)
        monkeypatch.undo()
        assert ran
        assert first.read_text() == EDITOR  # the newcomer stays at its name
        store.check(fix=True)
        by_id = {i.id: i for i in store.list()}
        assert by_id[arriving.id].path == "x.blueprint.yaml"
        kept = store.load(made_up)
        assert (kept.meta.name, kept.meta.tags) == ("My plan", ("mine",))
        assert kept.path == f"kept {made_up[:8]}.blueprint.yaml"
        [newcomer] = [i for i in by_id if i not in (arriving.id, made_up)]
        assert store.load(newcomer).content == EDITOR
        kept_meta = store.abspath(fs.meta_path_for(kept.path))
        assert json.loads(kept_meta.read_text())["id"] == made_up
        assert store.check().clean


def test_a_late_metas_kept_pair_finds_a_name_when_every_candidate_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files made at all three of the kept pair's names (the last one the id's own) after the
    look: the pass raised NameTakenError, and so did every later one while those files stayed.
    The pair takes a name with a random mark beside the id; the newcomers stay and are kept."""
    with localstore.open(home=tmp_path / "other", maintenance=False) as other:
        other.save("x", "steps: [x]\n", tags=["from-a"])
        yaml_bytes = (other.root / "x.blueprint.yaml").read_bytes()
        meta_bytes = (other.root / "x.blueprint.meta.json").read_bytes()
    with localstore.open(home=tmp_path / "home", maintenance=False) as store:
        (store.root / "x.blueprint.yaml").write_bytes(yaml_bytes)
        store.check(fix=True)
        [made_up] = [i.id for i in store.list()]
        store.save("x.blueprint.yaml", None, id=made_up, tags=["mine"], name="My plan")
        (store.root / "x.blueprint.meta.json").write_bytes(meta_bytes)
        names = [f"x (kept {made_up[:8]})", f"kept {made_up[:8]}", made_up]
        taken = [store.root / f"{name}.blueprint.yaml" for name in names]

        def editor_takes_all() -> None:
            for path in taken:
                _editor_saves(path, EDITOR)

        ran = _before_commit_to(monkeypatch, "(kept ", editor_takes_all)
        store.check(fix=True)
        monkeypatch.undo()
        assert ran
        assert [p.read_text() for p in taken] == [EDITOR] * 3  # the newcomers stay
        store.check(fix=True)
        kept = store.load(made_up)
        assert (kept.meta.name, kept.meta.tags) == ("My plan", ("mine",))
        assert kept.path.startswith(f"{made_up} ") and kept.path not in [
            f"{n}.blueprint.yaml" for n in names
        ]
        assert store.check().clean
