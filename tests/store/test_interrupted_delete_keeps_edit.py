"""A write killed between its renames and its index commit loses no edit the index never held.

A delete (or a save, move, restore) of a blueprint whose file holds an edit nobody recorded yet
(the person saved in an editor; no watcher ran, or it was still settling) records that edit
first, inside its own transaction. Killed after it set the pair aside (or renamed the new
version over the file) and before the commit, that transaction rolled back with the edit's
revision in it: the next open recorded the delete with the older version, and its sweep
removed the file set aside (the edit's only copy) as a stale temp. Now the edit is committed
as a revision before any file is touched, and the sweep removes a file set aside only when
its bytes are a version the store has (or the file in place): anything else is kept in
<data>/recovered/, noted, and reported by ``check`` until the person deletes it.

Real homes and real kills (a child process that ``os._exit``s at the chosen step); only the
clock is moved (a temp is swept once a minute old, and a change time cannot be set back).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import localstore

OLD = "steps: [old]\n"
EDIT = "steps: [the person's edit, made in an editor]\n"
LATER = "steps: [edited again, between the delete's two transactions]\n"


def _an_hour_later(monkeypatch: pytest.MonkeyPatch) -> None:
    later = time.time_ns() + 3600 * 10**9
    monkeypatch.setattr("localstore._reconcile_leftovers.time.time_ns", lambda: later)


def _run(script: str, home: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", script, str(home)], capture_output=True, timeout=120
    )
    assert child.returncode == 9, child.stderr.decode()


def _contents(store: localstore.BlueprintStore, ref: str) -> list[str]:
    """The content of every revision of ``ref`` (deleted or not), oldest first."""
    return [store.load_revision(ref, r.rev).content for r in reversed(store.history(ref))]


def _recovered(home: Path) -> dict[str, str]:
    folder = home / "data" / "recovered"
    return {p.name: p.read_text() for p in folder.rglob("*") if p.is_file()}


_PRELUDE = """
import os, sys
import localstore
from localstore.store import BlueprintStore

home = sys.argv[1]
EDIT = {edit!r}
LATER = {later!r}
"""

_KILLED_DELETE = (
    _PRELUDE
    + """
real = BlueprintStore._set_pair_aside

def aside_then_killed(self, rel, aside):
    real(self, rel, aside)
    os._exit(9)  # (the fault: killed after the renames, before the index commit)

with localstore.open(home=home) as s:
    # The person's editor saves after the open's reconcile: nothing has recorded this edit.
    s.abspath("a.blueprint.yaml").write_text(EDIT)
    BlueprintStore._set_pair_aside = aside_then_killed
    s.delete("a")
"""
)


def test_a_delete_killed_before_its_commit_keeps_the_unrecorded_edit_in_history(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with localstore.open(home=home) as s:
        s.save("a", OLD)
        bp_id = s.load("a").id
    _run(_KILLED_DELETE.format(edit=EDIT, later=LATER), home)
    assert not (home / "blueprints" / "a.blueprint.yaml").exists()
    _an_hour_later(monkeypatch)
    with localstore.open(home=home) as s:  # reconciles: records the vanished pair, sweeps
        assert not s.exists("a")
        contents = _contents(s, bp_id)
        assert EDIT in contents, contents
        # The delete is recorded with what the person last had, not the older version.
        assert s.history(bp_id)[0].deleted and contents[-1] == EDIT
        assert not list((home / "blueprints").glob(".*.lstmp"))  # (in history: swept)
        assert not [p for p in s.check().problems if p["kind"] == "edit-kept"]


_KILLED_SAVE = (
    _PRELUDE
    + """
real = BlueprintStore._place_files

def placed_then_killed(cur, batch):
    real(cur, batch)
    os._exit(9)  # (the fault: killed after the renames, before the index commit)

with localstore.open(home=home) as s:
    s.abspath("a.blueprint.yaml").write_text(EDIT)
    BlueprintStore._place_files = staticmethod(placed_then_killed)
    if sys.argv[2] == "save":
        s.save("a", "steps: [the app's version]\\n")
    elif sys.argv[2] == "restore":
        s.restore("a", 1)
    else:  # a save inside a caller's transaction (as sync applies a page): no commit of its own
        with s.index.write():
            s.save("a", "steps: [the app's version]\\n")
"""
)


def _run_with(script: str, home: Path, *args: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", script, str(home), *args], capture_output=True, timeout=120
    )
    assert child.returncode == 9, child.stderr.decode()


@pytest.mark.parametrize("write", ["save", "restore"])
def test_a_save_or_restore_killed_before_its_commit_keeps_the_unrecorded_edit(
    home: Path, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """The save's new version replaced the edited file by a rename: with the edit's revision
    rolled back, no copy of the edit was left anywhere (not even a temp)."""
    with localstore.open(home=home) as s:
        s.save("a", OLD)
        s.save("a", "steps: [second]\n")
        bp_id = s.load("a").id
    _run_with(_KILLED_SAVE.format(edit=EDIT, later=LATER), home, write)
    _an_hour_later(monkeypatch)
    with localstore.open(home=home) as s:
        contents = _contents(s, bp_id)
        assert EDIT in contents, contents
        assert contents[-1] != EDIT  # (the write itself is recorded by reconcile, after it)
        assert not [p for p in s.check().problems if p["kind"] == "edit-kept"]


def test_a_save_inside_a_callers_transaction_killed_keeps_the_edit_in_recovered(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a caller's transaction a save cannot commit the edit first: it keeps the file it
    replaces, and reconcile keeps that file's bytes (a version the store does not have)."""
    with localstore.open(home=home) as s:
        s.save("a", OLD)
        bp_id = s.load("a").id
    _run_with(_KILLED_SAVE.format(edit=EDIT, later=LATER), home, "inside")
    _an_hour_later(monkeypatch)
    with localstore.open(home=home) as s:
        assert EDIT not in _contents(s, bp_id)  # (rolled back with the caller's transaction)
        assert list(_recovered(home).values()) == [EDIT]
        problems = [p for p in s.check().problems if p["kind"] == "edit-kept"]
        assert len(problems) == 1 and "set aside" in problems[0]["detail"]
        assert not list((home / "blueprints").glob(".*.lstmp"))


_RACED_DELETE = (
    _PRELUDE
    + """
real_record = BlueprintStore._record_before_delete
real_aside = BlueprintStore._set_pair_aside

def edited_again(self, cur, row, events):
    # The editor saves again between the delete's first commit (the edit) and its own
    # transaction: this version is recorded in the delete's transaction only.
    self.abspath("a.blueprint.yaml").write_text(LATER)
    return real_record(self, cur, row, events)

def aside_then_killed(self, rel, aside):
    real_aside(self, rel, aside)
    os._exit(9)

with localstore.open(home=home) as s:
    s.abspath("a.blueprint.yaml").write_text(EDIT)
    BlueprintStore._record_before_delete = edited_again
    BlueprintStore._set_pair_aside = aside_then_killed
    s.delete("a")
"""
)


def test_a_file_set_aside_with_a_version_nowhere_else_is_kept_not_swept(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a delete could not commit first (an editor saving again in between) is only in the
    file set aside when the kill comes: the sweep keeps it in data/recovered/, noted, reported
    by every check until the person deletes it."""
    with localstore.open(home=home) as s:
        s.save("a", OLD)
        bp_id = s.load("a").id
    _run(_RACED_DELETE.format(edit=EDIT, later=LATER), home)
    _an_hour_later(monkeypatch)
    with localstore.open(home=home) as s:
        contents = _contents(s, bp_id)
        assert EDIT in contents and LATER not in contents, contents  # (the first, committed)
        recovered = _recovered(home)
        assert list(recovered.values()) == [LATER], recovered
        (kept,) = (home / "data" / "recovered").rglob("*.blueprint.yaml")
        problems = [p for p in s.check().problems if p["kind"] == "edit-kept"]
        assert len(problems) == 1 and str(kept) in problems[0]["detail"]
        assert not list((home / "blueprints").glob(".*.lstmp"))  # (kept, then removed)
    with localstore.open(home=home) as s:  # (a later open neither loses nor repeats it)
        assert [p for p in s.check(fix=True).problems if p["kind"] == "edit-kept"] == problems
        kept.unlink()
        assert s.check(fix=True).clean


def test_a_killed_save_whose_swapped_out_file_was_not_unlinked_yet_keeps_the_edit_once(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save inside a caller's transaction swaps the edited file out to its temp's name
    (files.replace_recorded), after keeping it aside by a hard link; the flusher thread unlinks
    that temp name. Killed before the flusher got to it (a race the CI lost), the same file was
    at two names, each a stale temp: reconcile kept it twice in data/recovered/. Kept once now
    (under the set-aside name, which check reports), and no temp is left."""
    with localstore.open(home=home) as s:
        s.save("a", OLD)
        bp_id = s.load("a").id
    # (The fault: the flusher never lets go of the swapped-out file before the kill.)
    never_let_go = _KILLED_SAVE.replace(
        "with localstore.open(home=home) as s:",
        "import localstore.files\n"
        "localstore.files._let_go = lambda fds, paths: None\n"
        "with localstore.open(home=home) as s:",
        1,
    )
    _run_with(never_let_go.format(edit=EDIT, later=LATER), home, "inside")
    # (The race, made certain: each file swapped out is still at its temp's name too.)
    asides = list((home / "blueprints").glob(".lsaside-*.lstmp"))
    swapped = list((home / "blueprints").glob(".a.blueprint.*.lstmp"))
    assert swapped and all(any(t.samefile(a) for a in asides) for t in swapped), swapped
    _an_hour_later(monkeypatch)
    with localstore.open(home=home) as s:
        assert EDIT not in _contents(s, bp_id)
        assert list(_recovered(home).values()) == [EDIT]
        problems = [p for p in s.check().problems if p["kind"] == "edit-kept"]
        assert len(problems) == 1 and "set aside" in problems[0]["detail"]
        assert not list((home / "blueprints").glob(".*.lstmp"))
