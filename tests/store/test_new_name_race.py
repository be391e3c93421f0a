"""A file another program creates at a name a write found free is never written over.

A batch lists each folder once, under the write lock, and takes a name no entry has for new;
it places its files at the end. An editor takes no lock of ours: a file it created at such a
name in between (a batch of 500 can take a second) was renamed over by the batch's
``os.replace``, the person's edit lost with no revision anywhere. The same for a single save
of a new name, and for a move's destination. Now such a name is placed with a no-replace
rename (files.place_new / rename_new): the newcomer stays, is recorded, and the write runs
again as it does for any unrecorded file at its target.

Real home, real files; the editor is a real process. The only fault injected is its timing:
the store's own step (the batch's placing, a move's rename) is wrapped so that the editor
writes just before it.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore import files as fs
from localstore.errors import AlreadyExistsError, ChangedOnDiskError
from localstore.store import BlueprintStore, SaveRequest
from tests.editor_race import before_first, revision_contents

EDITOR = "steps: [typed in an editor]\n"


def _editor_creates(path: Path, text: str) -> None:
    """Another program (no lock of ours) creates ``path`` as an editor's "save as" does."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; open(sys.argv[1], 'x', encoding='utf-8').write(sys.argv[2])",
            str(path),
            text,
        ],
        check=True,
    )


def test_save_many_keeps_a_file_an_editor_creates_at_a_new_name_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        target = store.abspath("n3.blueprint.yaml")
        before_first(
            monkeypatch, fs.PendingWrites, "commit", lambda: _editor_creates(target, EDITOR)
        )
        results = store.save_many(
            [SaveRequest(f"n{i}.blueprint.yaml", f"steps: [app-{i}]\n") for i in range(12)]
        )
        monkeypatch.undo()

        assert all(not isinstance(r, Exception) for r in results), results
        # The editor's file was recorded first, then the app's save went over it: both kept.
        assert revision_contents(store, "n3.blueprint.yaml") == [EDITOR, "steps: [app-3]\n"]
        for i in range(12):
            assert store.load(f"n{i}.blueprint.yaml").content == f"steps: [app-{i}]\n"
        assert store.count() == 12
        assert store.check().clean


def test_a_remote_batch_leaves_the_editors_new_file_and_refuses_that_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a download does: the editor's file is recorded and the row refused (the engine then
    applies it through its merging path), never renamed over."""
    with localstore.open(home=tmp_path / "home") as store:
        target = store.abspath("d/n3.blueprint.yaml")
        before_first(
            monkeypatch, fs.PendingWrites, "commit", lambda: _editor_creates(target, EDITOR)
        )
        ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(12)]
        results = store.save_many(
            [
                SaveRequest(f"d/n{i}.blueprint.yaml", f"steps: [remote-{i}]\n", id=ids[i])
                for i in range(12)
            ],
            origin="remote",
        )
        monkeypatch.undo()

        assert isinstance(results[3], ChangedOnDiskError), results[3]
        assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i != 3)
        assert target.read_text(encoding="utf-8") == EDITOR
        assert revision_contents(store, "d/n3.blueprint.yaml") == [EDITOR]
        assert store.load("d/n3.blueprint.yaml").id != ids[3]
        assert store.count() == 12
        assert store.check().clean


def test_a_single_save_of_a_new_name_keeps_the_editors_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        target = store.abspath("new.blueprint.yaml")
        before_first(
            monkeypatch, fs.PendingWrites, "commit", lambda: _editor_creates(target, EDITOR)
        )
        saved = store.save("new.blueprint.yaml", "steps: [app]\n")
        monkeypatch.undo()

        assert saved.content == "steps: [app]\n"
        assert revision_contents(store, "new.blueprint.yaml") == [EDITOR, "steps: [app]\n"]
        assert store.check().clean


def test_a_move_keeps_a_file_an_editor_creates_at_its_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        moving = store.save("a.blueprint.yaml", "steps: [a]\n")
        target = store.abspath("b.blueprint.yaml")
        calls = before_first(
            monkeypatch, BlueprintStore, "_rename_pair", lambda: _editor_creates(target, EDITOR)
        )
        with pytest.raises(AlreadyExistsError):
            store.move("a.blueprint.yaml", "b.blueprint.yaml")
        monkeypatch.undo()

        assert calls  # (the move did reach its rename: the editor wrote inside the window)
        # The blueprint stays where it was; the editor's file is recorded as its own.
        assert store.load(moving.id).path == "a.blueprint.yaml"
        assert store.abspath("a.blueprint.yaml").read_text(encoding="utf-8") == "steps: [a]\n"
        assert target.read_text(encoding="utf-8") == EDITOR
        assert revision_contents(store, "b.blueprint.yaml") == [EDITOR]
        assert store.check().clean


def test_a_move_still_goes_when_nothing_is_at_its_destination(tmp_path: Path) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        bp = store.save("a.blueprint.yaml", "steps: [a]\n")
        moved = store.move("a.blueprint.yaml", "sub/b.blueprint.yaml")
        assert (moved.id, moved.path) == (bp.id, "sub/b.blueprint.yaml")
        assert not store.abspath("a.blueprint.yaml").exists()
        assert store.check().clean


def _unsupported(*_args: object, **_kwargs: object) -> None:
    # (EPERM: what Linux's FAT driver answers for a hard link, and a sandbox for renameat2.)
    raise OSError(errno.EPERM, "not supported here")


@pytest.mark.parametrize("how", ["native", "hard link", "checked rename"])
def test_place_new_never_replaces_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Each way place_new can place a file (fault injection: the faster ways made unsupported)."""
    if how != "native":
        monkeypatch.setattr(fs, "_RENAME_NEW", _unsupported)
    if how == "checked rename":
        monkeypatch.setattr(fs.os, "link", _unsupported)
    taken, free = tmp_path / "taken.yaml", tmp_path / "free.yaml"
    taken.write_text("theirs\n")
    tmp1, tmp2 = tmp_path / ".t1.lstmp", tmp_path / ".t2.lstmp"
    tmp1.write_text("ours 1\n")
    tmp2.write_text("ours 2\n")

    assert fs.place_new(str(tmp1), str(taken)) is False
    assert taken.read_text() == "theirs\n"
    assert fs.place_new(str(tmp2), str(free)) is True
    assert free.read_text() == "ours 2\n"
    assert not tmp2.exists()


@pytest.mark.parametrize("native", [True, False])
def test_rename_new_refuses_a_taken_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    if not native:
        monkeypatch.setattr(fs, "_RENAME_NEW", _unsupported)
    src, taken = tmp_path / "a.yaml", tmp_path / "b.yaml"
    src.write_text("ours\n")
    taken.write_text("theirs\n")
    assert fs.rename_new(src, taken) is False
    assert (src.read_text(), taken.read_text()) == ("ours\n", "theirs\n")
    assert fs.rename_new(src, tmp_path / "c.yaml") is True
    assert not src.exists()


def test_a_failed_move_never_puts_its_pair_back_over_a_file_made_at_the_old_name(
    tmp_path: Path,
) -> None:
    """The undo of a move that failed after its rename (here: the app's tx_hook raises) puts the
    pair back at its old name only while that name is free. An editor's file made there since
    (a "save as" onto the name the move just freed) had the committed revision written over it,
    its bytes in no revision; it stays, and reconcile records both."""
    home = tmp_path / "home"
    with localstore.open(home=home) as store:
        bp = store.save("a.blueprint.yaml", "steps: [a]\n")
        old = store.abspath("a.blueprint.yaml")

        def editor_then_failure(_cur: Any, _bp: Any) -> None:
            _editor_creates(old, EDITOR)  # (the move has renamed the pair away by now)
            raise RuntimeError("the app's hook failed")

        with pytest.raises(RuntimeError):
            store.save("b.blueprint.yaml", "steps: [a2]\n", id=bp.id, tx_hook=editor_then_failure)
        assert old.read_text(encoding="utf-8") == EDITOR

    with localstore.open(home=home) as store:
        texts = {
            store.load_revision(b.id, r.rev).content
            for b in store.list()
            for r in store.history(b.id)
        }
        assert EDITOR in texts
        assert "steps: [a]\n" in texts
        assert store.check().clean
