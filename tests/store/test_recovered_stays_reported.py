"""What reconcile moves into <data>/recovered/ stays reported until the person deletes it.

Two of reconcile's own repairs move bytes nothing else holds there: a save's temp left by a kill
between flushing and renaming (its version differs from the file in place), and a meta file
without its YAML whose blueprint lives elsewhere, edited by hand. Each was told once, in that
pass's report (the orphan meta not even logged): an app's open, which reconciles, shows its
report to no one, and later ``check`` runs listed nothing, so the person never learned their
bytes had moved. Now each such move records a note, as a save over an unparsable file does,
and ``check`` reports it as ``edit-kept`` until the copy is deleted, but for an interrupted
save's version: no one was told it was saved, so doctor lists it and check stays clean (as the
crash harness requires after every kill). A copy whose note a kill rolled back is reported too
(unless it is only a spare).

Real homes; the files are made as a crash or a person leaves them; only the clock is moved
(a file's change time cannot be set back, and a temp is swept once a minute old).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

import localstore
from localstore._kept_edits import NOTE_PREFIX, unacknowledged_kept

OLD = "steps: [old]\n"
NEW = "steps: [the new work]\n"


def _an_hour_later(monkeypatch: pytest.MonkeyPatch) -> None:
    later = time.time_ns() + 3600 * 10**9
    monkeypatch.setattr("localstore._reconcile_leftovers.time.time_ns", lambda: later)


def _kept_problems(report: localstore.CheckReport) -> list[dict[str, str]]:
    return [p for p in report.problems if p["kind"] == "edit-kept"]


def _notes(store: localstore.BlueprintStore) -> list[str]:
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT key FROM settings WHERE key >= ? AND key < ?", (NOTE_PREFIX, "kept-edit;")
        ).fetchall()
    return [str(r[0]) for r in rows]


def _warnings_naming(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


def test_an_interrupted_saves_kept_version_is_kept_and_listed_but_leaves_check_clean(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A save killed between flushing its temp and renaming it never returned: its version is
    kept (the person may want it) and listed for doctor until deleted, but check stays clean,
    as after every crash (tests/store/test_crash.py): nothing acknowledged is missing."""
    with localstore.open(home=home) as s:
        s.save("a", OLD)
    root = home / "blueprints"
    # A save killed after flushing its temp and before renaming it over the file.
    (root / ".a.blueprint.yaml.0badf00d.lstmp").write_text(NEW)
    _an_hour_later(monkeypatch)
    with caplog.at_level(logging.WARNING), localstore.open(home=home):
        pass  # an app's open: it reconciles, and shows the report to no one
    (kept,) = (home / "data" / "recovered").rglob("a.blueprint.yaml")
    assert kept.read_text() == NEW
    assert len(_warnings_naming(caplog, str(kept))) == 1, caplog.text

    with localstore.open(home=home, reconcile=False) as s:
        assert s.check().clean, s.check().problems  # (not an unnoted file either)
        listed = unacknowledged_kept(s)
        assert listed == [kept.relative_to(home / "data").as_posix()]
        assert s.check(fix=True).clean
    with localstore.open(home=home) as s:  # (and a later open does not lose it either)
        assert unacknowledged_kept(s) == listed
        kept.unlink()
        assert unacknowledged_kept(s) == []
        assert _notes(s)  # (forgotten by check --fix, as for a save's kept edit)
        assert s.check(fix=True).clean
        assert not _notes(s)


def test_an_orphan_meta_edited_by_hand_is_reported_until_deleted(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with localstore.open(home=home) as s:
        s.save("a", OLD, tags=["one"])
        meta_bytes = s.abspath("a.blueprint.meta.json").read_bytes()
    root = home / "blueprints"
    # The person copied the pair's meta beside it and changed its tags; no YAML with it.
    edited = meta_bytes.replace(b'"one"', b'"one", "edited"')
    assert edited != meta_bytes
    (root / "z.blueprint.meta.json").write_bytes(edited)
    with caplog.at_level(logging.WARNING), localstore.open(home=home):
        pass
    assert not (root / "z.blueprint.meta.json").exists()
    (kept,) = (home / "data" / "recovered").rglob("z.blueprint.meta.json")
    assert kept.read_bytes() == edited
    assert len(_warnings_naming(caplog, str(kept))) == 1, caplog.text

    with localstore.open(home=home, reconcile=False) as s:
        problems = _kept_problems(s.check())
        assert [p["path"] for p in problems] == ["z.blueprint.meta.json"]
        assert str(kept) in problems[0]["detail"]
        assert "a.blueprint.yaml" in problems[0]["detail"]  # (the blueprint it belongs to)
        assert _kept_problems(s.check(fix=True)) == problems

        kept.unlink()
        report = s.check(fix=True)
        assert not _kept_problems(report) and report.clean
        assert not _notes(s)


def test_a_pass_that_fails_after_keeping_leaves_the_temp_to_keep_again(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp goes only once its note is committed. Removed at once (as before), a pass that
    rolled back after the keep (the index failing, a kill) lost the note with it: the copy sat in
    data/recovered/ unnoted and the temp was gone, so nothing ever told of it again."""
    with localstore.open(home=home) as s:
        s.save("a", OLD)
    temp = home / "blueprints" / ".a.blueprint.yaml.0badf00d.lstmp"
    temp.write_text(NEW)
    _an_hour_later(monkeypatch)
    from localstore._reconcile import Reconciler
    from localstore.errors import IndexStoreError

    real = Reconciler.clear_stale_temp

    def then_the_index_fails(self: Reconciler, rel: str, report: localstore.CheckReport) -> None:
        real(self, rel, report)
        raise IndexStoreError("disk I/O error")  # (the fault: the pass rolls back whole)

    with localstore.open(home=home, reconcile=False) as s:
        monkeypatch.setattr(Reconciler, "clear_stale_temp", then_the_index_fails)
        with pytest.raises(IndexStoreError):
            s.check(fix=True)
        assert temp.read_text() == NEW and not _notes(s)
        monkeypatch.setattr(Reconciler, "clear_stale_temp", real)
        s.check(fix=True)
        assert not temp.exists()
        (note,) = _notes(s)
        noted = home / "data" / "recovered" / note[len(NOTE_PREFIX) :]
        assert noted.read_text() == NEW
        assert unacknowledged_kept(s) == [noted.relative_to(home / "data").as_posix()]
        # (The failed pass's unnoted copy is a spare of the noted one: not reported either.)
        assert s.check().clean, s.check().problems


_KILLED_SAVE = """
import os, sys
from localstore.store import BlueprintStore
import localstore

real = BlueprintStore._place_files

def placed_then_killed(cur, batch):
    real(cur, batch)
    os._exit(9)  # (the fault: killed after the renames, before the index commit)

with localstore.open(home=sys.argv[1]) as s:
    BlueprintStore._place_files = staticmethod(placed_then_killed)
    s.save("a", "steps: [the app's version]\\n")
"""


def test_a_copy_whose_note_a_kill_lost_is_still_reported(home: Path) -> None:
    """A save over an unparsable file keeps it, then renames the new version over it; killed
    before the index commits, its note is rolled back while the file is already replaced. The
    copy is then the only one, and nothing noted it: check lists what is in data/recovered/
    without a note too."""
    with localstore.open(home=home) as s:
        s.save("a", OLD)
    bad = b"steps: [half-typed\n"
    yaml = home / "blueprints" / "a.blueprint.yaml"
    yaml.write_bytes(bad)
    with localstore.open(home=home) as s:  # (flags it)
        assert s.row("a").flagged
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE, str(home)], capture_output=True, timeout=120
    )
    assert child.returncode == 9, child.stderr
    assert yaml.read_bytes() != bad
    (kept,) = (home / "data" / "recovered").rglob("a.blueprint.yaml")
    assert kept.read_bytes() == bad
    with localstore.open(home=home) as s:
        assert not _notes(s)  # (rolled back with the save)
        problems = _kept_problems(s.check())
        assert [p["path"] for p in problems] == ["a.blueprint.yaml"]
        assert str(kept) in problems[0]["detail"]
        assert _kept_problems(s.check(fix=True)) == problems
        kept.unlink()
        assert s.check(fix=True).clean
