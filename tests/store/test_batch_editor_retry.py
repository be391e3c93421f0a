"""A local batch meeting an editor that keeps saving one of its files succeeds, every save kept.

A ``save_many`` checks each file it replaces when it reaches that item and places its files at
the end; an editor's save in between is swapped back, recorded, and the batch runs again
(tests/store/test_replaced_file_race.py). That run again happened once a file: an editor
autosaving every second during a batch of a second or more met it again, and the batch failed
("try again") where it had succeeded before the swap (by overwriting the edit). Now it runs again
while that program keeps saving, each version recorded as an external revision below the
batch's, that file placed right after its item (a window of one item, not the rest of the
batch), once, and then up to ``_store_save._RACE_REPEATS_MAX`` more times; past that it fails with KeptChangingError,
naming the file, nothing of the batch written and every version in history.

Real home, real files; the editor is a real process. The one fault injected is its timing: the
swap that places the file (``files.replace_recorded``) is wrapped so that the editor saves just
before it, on as many attempts as the test says.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import localstore
import localstore._store_save as store_save
from localstore import files as fs
from localstore.store import BlueprintStore, SaveRequest
from tests.editor_race import revision_contents

N = 40
RACED = "n3.blueprint.yaml"

# The editor's two ways of saving: a temp renamed over the file (vim, VS Code, most), or the
# file truncated and written in place (nano, some IDEs).
_EDITOR_SCRIPT = """
import os, sys
path, text, how = sys.argv[1], sys.argv[2], sys.argv[3]
if how == "rename":
    with open(path + ".editor-swp", "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(path + ".editor-swp", path)
else:
    with open(path, "r+", encoding="utf-8") as fh:
        fh.truncate(0)
        fh.write(text)
"""


def _editor_save(k: int, rel: str = RACED) -> str:
    return f"steps: [autosave {k} of {rel.split('.')[0]}, typed in an editor]\n"


def _editor_saves_before_each_swap(
    monkeypatch: pytest.MonkeyPatch, store: BlueprintStore, how: str, times: dict[str, int | None]
) -> dict[str, list[int]]:
    """Before each of the first ``times[rel]`` swaps of ``rel`` (every one if None), another
    program saves it. Returns, per swap of each, how many temps of the batch were in the folder
    then."""
    targets = {str(store.abspath(rel)): rel for rel in times}
    real = fs.replace_recorded
    temps_then: dict[str, list[int]] = {rel: [] for rel in times}

    def editor_first(tmp: str, dst: str, *args: Any, **kwargs: Any) -> Any:
        rel = targets.get(dst)
        if rel is not None:
            seen = temps_then[rel]
            seen.append(len(list(store.root.glob("*" + fs.TEMP_SUFFIX))))
            limit = times[rel]
            if limit is None or len(seen) <= limit:
                text = _editor_save(len(seen), rel)
                subprocess.run([sys.executable, "-c", _EDITOR_SCRIPT, dst, text, how], check=True)
        return real(tmp, dst, *args, **kwargs)

    monkeypatch.setattr(fs, "replace_recorded", editor_first)
    return temps_then


def _recovered(store: BlueprintStore) -> list[Path]:
    return sorted(p for p in (store.paths.data / "recovered").rglob("*") if p.is_file())


@pytest.mark.parametrize("how", ["rename", "in place"])
def test_a_batch_outlasts_an_editor_saving_one_of_its_files_on_every_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    saves = 1 + store_save._RACE_REPEATS_MAX  # (the most a batch outlasts)
    with localstore.open(home=tmp_path / "home") as store:
        store.save_many([SaveRequest(f"n{i}", f"steps: [old-{i}]\n") for i in range(N)])
        temps_then = _editor_saves_before_each_swap(monkeypatch, store, how, {RACED: saves})[RACED]
        results = store.save_many([SaveRequest(f"n{i}", f"steps: [app-{i}]\n") for i in range(N)])
        monkeypatch.undo()

        assert all(not isinstance(r, Exception) for r in results), results
        # Each of the editor's saves is in history, then the batch's version on top.
        assert revision_contents(store, RACED) == [
            "steps: [old-3]\n",
            *(_editor_save(k) for k in range(1, saves + 1)),
            "steps: [app-3]\n",
        ]
        assert [r.origin for r in reversed(store.history(RACED))] == [
            "local",
            *["external"] * saves,
            "local",
        ]
        for i in range(N):
            assert store.load(f"n{i}").content == f"steps: [app-{i}]\n"
        assert store.count() == N
        # The first attempt placed the raced file after every item was written (the temps of
        # the items after it waiting beside it); each run again placed it right after its own
        # item, with at most its own two temps (YAML and meta) in the folder.
        assert len(temps_then) == saves + 1
        assert temps_then[0] > 2 * (N - 4)
        assert all(n <= 2 for n in temps_then[1:]), temps_then
        assert not _recovered(store)
        assert store.check().clean


def test_an_editor_that_never_stops_fails_the_batch_clearly_with_nothing_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        store.save_many([SaveRequest(f"n{i}", f"steps: [old-{i}]\n") for i in range(N)])
        swaps = _editor_saves_before_each_swap(monkeypatch, store, "rename", {RACED: None})
        # Caught as an app does: by its name in the error tree, or as the StorageError it is.
        with pytest.raises(localstore.errors.KeptChangingError) as failed:
            store.save_many([SaveRequest(f"n{i}", f"steps: [app-{i}]\n") for i in range(N)])
        monkeypatch.undo()

        saves = 2 + store_save._RACE_REPEATS_MAX
        assert len(swaps[RACED]) == saves  # (bounded: it did not try for ever)
        error = failed.value
        assert (error.rel, error.saves) == (RACED, saves)
        assert f"{RACED} kept changing while it was being saved" in str(error)
        assert f"saved it {saves} times in a row" in str(error)
        assert f"close {RACED} in the program editing it" in error.hint
        assert "each version it saved is in the blueprint's history" in error.hint
        # Nothing of the batch was written; every save of the editor's is in history, its last
        # one on disk.
        for i in range(N):
            if i != 3:
                assert revision_contents(store, f"n{i}") == [f"steps: [old-{i}]\n"]
        assert revision_contents(store, RACED) == [
            "steps: [old-3]\n",
            *(_editor_save(k) for k in range(1, saves + 1)),
        ]
        assert store.abspath(RACED).read_text(encoding="utf-8") == _editor_save(saves)
        assert not list(store.root.glob("*" + fs.TEMP_SUFFIX))
        assert not _recovered(store)
        assert store.check().clean


def test_the_bound_counts_the_runs_again_of_every_file_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first race of each file is free (as before); the runs again for files met again
    count together: a program rewriting file after file must not run a batch of N 5N times.
    Here n3 is saved on 3 attempts (2 runs again after its first), then n7 on as many as the
    rest of the bound allows, plus one: the batch fails on n7, nothing of it written."""
    first = 3
    second = 1 + store_save._RACE_REPEATS_MAX - (first - 1) + 1
    with localstore.open(home=tmp_path / "home") as store:
        store.save_many([SaveRequest(f"n{i}", f"steps: [old-{i}]\n") for i in range(N)])
        other = "n7.blueprint.yaml"
        _editor_saves_before_each_swap(monkeypatch, store, "rename", {RACED: first, other: second})
        with pytest.raises(fs.KeptChangingError) as failed:
            store.save_many([SaveRequest(f"n{i}", f"steps: [app-{i}]\n") for i in range(N)])
        monkeypatch.undo()

        assert (failed.value.rel, failed.value.saves) == (other, second)
        assert revision_contents(store, RACED) == [
            "steps: [old-3]\n",
            *(_editor_save(k) for k in range(1, first + 1)),
        ]
        assert revision_contents(store, other) == [
            "steps: [old-7]\n",
            *(_editor_save(k, other) for k in range(1, second + 1)),
        ]
        assert store.load("n0").content == "steps: [old-0]\n"
        assert not list(store.root.glob("*" + fs.TEMP_SUFFIX))
        assert store.check().clean


def test_a_name_taken_again_with_nothing_new_there_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name the no-replace rename finds taken on both attempts with nothing there the folder's
    listing shows (a Windows 8.3 short name; fault injection: the rename refuses a free name) is
    no editor saving again: the batch fails on the second attempt, as before, nothing changed."""
    with localstore.open(home=tmp_path / "home") as store:
        target = str(store.abspath("new.blueprint.yaml"))
        real = fs.place_new
        refusals: list[int] = []

        def refused_there(tmp: str, dst: str) -> bool:
            if dst == target:
                refusals.append(1)
                return False
            return real(tmp, dst)

        monkeypatch.setattr(fs, "place_new", refused_there)
        with pytest.raises(fs.NameTakenError) as failed:
            store.save_many([SaveRequest("a", "steps: [a]\n"), SaveRequest("new", "steps: [n]\n")])
        monkeypatch.undo()

        assert not isinstance(failed.value, fs.KeptChangingError)
        assert len(refusals) == 2
        assert store.count() == 0
        assert not list(store.root.glob("*" + fs.TEMP_SUFFIX))
        assert store.check().clean
