"""Fixing a folder's letter case with move.

A new folder differing only by case from one beside it is refused (one folder on macOS and
Windows). The check took the folder a blueprint leaves for such a neighbour: ``move("team/flow",
"Team/flow")`` was refused when ``flow`` was all ``team`` held, so a folder's case could not be
fixed at all. The clash with the folder the move leaves is its own once nothing else stays there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from localstore import files as fs
from localstore.errors import NotFoundError, UnsafePathError
from tests.conftest import run_cli


def _tree(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".localstore")
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [("team/flow", "Team/flow"), ("a/b/flow", "A/b/flow"), ("a/b/flow", "a/B/flow")],
)
def test_a_blueprint_alone_in_its_folder_moves_to_the_folders_other_case(
    store: Any, old: str, new: str
) -> None:
    saved = store.save(old, "v: 1\n")
    moved = store.move(old, new)
    assert (moved.id, moved.path) == (saved.id, f"{new}.blueprint.yaml")
    assert _tree(store.paths.blueprints) == [f"{new}.blueprint.meta.json", f"{new}.blueprint.yaml"]
    assert store.load(new).content == "v: 1\n"
    assert store.reconcile().clean
    store.save(f"{new.rpartition('/')[0]}/next", "v: 2\n")  # the new spelling is the folder's now
    with pytest.raises(UnsafePathError, match="differs only by case from the folder"):
        store.save(f"{old.rpartition('/')[0]}/next2", "v: 2\n")


@pytest.mark.parametrize(
    ("other", "named"),
    [
        ("team/other.blueprint.yaml", "team/other.blueprint.meta.json"),
        ("team/notes.txt", "team/notes.txt"),
        ("team/d/x.txt", "team/d"),
    ],
)
def test_the_folders_other_case_is_refused_while_something_else_stays_in_it(
    store: Any, other: str, named: str
) -> None:
    store.save("team/flow", "v: 1\n")
    if other.endswith(fs.YAML_SUFFIX):
        store.save(other, "v: 1\n")
    else:
        store.abspath(other).parent.mkdir(exist_ok=True)
        store.abspath(other).write_text("x")
    before = _tree(store.paths.blueprints)
    with pytest.raises(UnsafePathError, match=f"'team' beside it, which holds {named} too") as e:
        store.move("team/flow", "Team/flow")
    assert "move the rest of 'team' elsewhere first" in (e.value.hint or "")
    assert _tree(store.paths.blueprints) == before
    assert store.load("team/flow").path == "team/flow.blueprint.yaml"


def test_moving_into_the_other_case_of_a_folder_it_does_not_leave_is_refused(store: Any) -> None:
    store.save("team/flow", "v: 1\n")
    store.save("elsewhere/flow2", "v: 1\n")
    with pytest.raises(UnsafePathError, match="differs only by case from the folder 'team'"):
        store.move("elsewhere/flow2", "Team/flow2")


def test_cli_mv_fixes_a_folders_case_and_explains_a_folder_given_as_ref(home: Path) -> None:
    assert run_cli(home, "save", "team/flow", "-f", "-", stdin="v: 1\n").returncode == 0
    done = run_cli(home, "mv", "team/flow", "Team/flow")
    assert done.returncode == 0, done.stderr
    assert "moved team/flow.blueprint.yaml to Team/flow.blueprint.yaml" in done.stdout
    folder = run_cli(home, "mv", "Team", "team")
    assert folder.returncode == 4
    assert "'Team' is a folder" in folder.stderr
    assert "localstore mv Team/flow team/flow" in folder.stderr


def test_a_folder_given_to_move_names_how_to_rename_it(store: Any) -> None:
    for path in ("team/a", "team/sub/b"):
        store.save(path, "v: 1\n")
    with pytest.raises(NotFoundError, match="'team' is a folder, not a blueprint") as e:
        store.move("team", "Team")
    assert "move the blueprints in it one by one" in (e.value.hint or "")
    assert "through a folder of another name" in (e.value.hint or "")
    with pytest.raises(NotFoundError, match="no blueprint matches 'nothing'"):
        store.move("nothing", "Team")


def test_rename_case_renames_a_folder_with_what_is_in_it(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "a.txt").write_text("x")
    fs.rename_case(tmp_path / "team", tmp_path / "Team")
    assert [p.name for p in tmp_path.iterdir()] == ["Team"]
    assert (tmp_path / "Team" / "a.txt").read_text() == "x"


def test_rename_case_goes_through_a_temporary_name_where_a_rename_keeps_the_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some FAT drivers and network shares answer a case-only rename with success and no change
    (injected: the first rename does nothing)."""
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "a.txt").write_text("x")
    real, calls = os.rename, []

    def keeps_the_case(src: str, dst: str) -> None:
        calls.append((os.path.basename(src), os.path.basename(dst)))
        if len(calls) > 1:
            real(src, dst)

    monkeypatch.setattr(os, "rename", keeps_the_case)
    fs.rename_case(tmp_path / "team", tmp_path / "Team")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["Team"]
    assert (tmp_path / "Team" / "a.txt").read_text() == "x"
    assert len(calls) == 3 and calls[1][1].startswith("Team-case-") and calls[2][1] == "Team"


def test_same_file_tells_one_folder_from_two(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    assert fs.same_file(tmp_path / "team", tmp_path / "team")
    assert not fs.same_file(tmp_path / "team", tmp_path / "Team")  # (this disk: bytes)
    (tmp_path / "Team").mkdir()
    assert not fs.same_file(tmp_path / "team", tmp_path / "Team")
