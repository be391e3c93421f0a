"""Writes whose texts are known ahead run the app's validator before the index's write lock.

The validator is the app's code (schema checks, even the network): run inside the write lock, it
held every other process's writes to the home (the daemon, the CLI, another app) for as long as
it ran. Each test records, for every call, whether the calling thread held the lock then
(tests/store/validator_probe.py) and asserts none did; each failed before the change it names.
"""

from __future__ import annotations

import os
from pathlib import Path

import localstore
from localstore.archive import export_bundle, import_bundle
from localstore.store import SaveRequest
from tests.store.validator_probe import LockProbe


def _open(home: Path, probe: LockProbe) -> localstore.BlueprintStore:
    return probe.watch(localstore.open(home=home, validator=probe, validator_name="probe"))


def test_a_batch_of_identical_texts_is_judged_once_before_the_lock(tmp_path: Path) -> None:
    """Blueprints made from one template: the verdict judged ahead was taken out of the memo by
    the first save, and every other copy was judged again inside the lock."""
    probe = LockProbe()
    with _open(tmp_path / "home", probe) as app:
        saved = app.save_many(
            [SaveRequest(f"t/{i}", "kind: template\nok: false\n") for i in range(4)]
        )
        assert all(isinstance(b, localstore.Blueprint) and not b.valid for b in saved)
        assert probe.under_lock() == []
        assert len(probe.calls) == 1


def test_an_import_of_identical_texts_judges_them_before_the_lock(tmp_path: Path) -> None:
    with localstore.open(home=tmp_path / "source") as source:
        source.save_many([SaveRequest(f"t/{i}", "kind: template\n") for i in range(3)])
        export_bundle(source, tmp_path / "b.zip")
    probe = LockProbe()
    with _open(tmp_path / "home", probe) as app:
        result = import_bundle(app, tmp_path / "b.zip")
        assert len(result.items) == 3 and len(app.list()) == 3
        assert probe.under_lock() == []


def test_a_restore_judges_the_revision_before_the_lock(tmp_path: Path) -> None:
    """restore saves inside its own write transaction (read where the blueprint is, then save)."""
    home = tmp_path / "home"
    probe = LockProbe()
    with _open(home, probe) as app:
        with localstore.open(home=home, reconcile=False) as cli:  # no verdict remembered here
            cli.save("a/one", "v: 1\nok: false\n")
            cli.save("a/one", "v: 2\n")
        restored = app.restore("a/one", 1)
        assert restored.content == "v: 1\nok: false\n" and restored.problems == ("ok is false",)
        assert probe.under_lock() == []


def test_a_move_keeps_the_rows_verdict_and_judges_nothing_inside(tmp_path: Path) -> None:
    """The row holds this validator's verdict on the very bytes a move keeps: nothing to judge
    (a sync pass moves a blueprint off a path inside its transaction; the YAML was judged
    there). Reopened, so that no verdict is remembered from the save."""
    home = tmp_path / "home"
    with _open(home, LockProbe()) as app:
        app.save("a/one", "v: 1\nok: false\n")
    probe = LockProbe()
    with _open(home, probe) as app:
        with app.index.write():  # the way sync moves a blueprint: inside its transaction
            moved = app.move("a/one", "b/one")
        assert moved.problems == ("ok is false",)
        assert probe.calls == []


def test_an_unrecorded_edit_a_save_finds_is_judged_before_the_lock(tmp_path: Path) -> None:
    """A save finds an editor's change no watcher recorded and records it first, in a
    transaction of its own: that ingest judged the edit inside the lock."""
    probe = LockProbe()
    with _open(tmp_path / "home", probe) as app:
        app.save("a/one", "v: 1\n")
        path = app.abspath("a/one.blueprint.yaml")
        path.write_text("v: 2\nedited: true\nok: false\n", encoding="utf-8")
        st = path.stat()  # an mtime the index cannot already hold, as an editor's save
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        app.save("a/one", "v: 3\n")
        assert [r.origin for r in app.history("a/one")] == ["local", "external", "local"]
        assert ({"v": 2, "edited": True, "ok": False}, False) in probe.calls
        assert probe.under_lock() == []


def test_a_raising_validator_in_a_restore_keeps_the_blueprint_and_says_why(
    tmp_path: Path,
) -> None:
    """A validator that raises ahead of the lock counts as one problem, as inside: the restore
    is recorded (invalid), nothing half-written."""
    home = tmp_path / "home"
    probe = LockProbe()
    with _open(home, probe) as app:
        with localstore.open(home=home, reconcile=False) as cli:  # not judged by this store
            cli.save("a/one", "v: 1\n")
            cli.save("a/one", "v: 2\n")
        probe.fail = True
        restored = app.restore("a/one", 1)
        assert restored.content == "v: 1\n" and restored.rev == 3
        assert restored.problems == ("validator raised RuntimeError: the rules service is down",)
        assert app.check().clean
        assert probe.under_lock() == []
