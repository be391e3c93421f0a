"""An editor's save over a recorded file while a write is replacing it is never lost.

A write checks each file it replaces against the index row (``_edited_on_disk``) when it reaches
that item, and places its files later: at the end of a ``save_many`` batch (a download of 500
updates takes a second or more), after the temps' fsyncs for a single save. An editor takes no
lock of ours: its save in between (renamed over the file, as most editors do, or written in
place) was renamed over by ``os.replace``, the person's version lost, in no revision. Now the
write swaps its temp in (files.replace_recorded): the file the swap brings out is checked, and
one that is not the recorded version is swapped back and recorded before the write runs again
(both versions in history). If the editor saves yet again between the two swaps, that newest
version stays at the name (recorded), and the earlier one is kept in <data>/recovered/ and
reported by ``check``: neither is lost.

Real home, real files; the editor is a real process. The one fault injected is its timing: the
batch's placing (``PendingWrites.commit``) or the write's swap is wrapped so that the editor
saves just before it.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore.errors import ChangedOnDiskError
from localstore.store import BlueprintStore, SaveRequest
from tests.editor_race import before_first, revision_contents

EDITOR = "steps: [typed in an editor, a longer line than the app's]\n"
AGAIN = "steps: [typed again, saved while the write put the first one back]\n"

# The editor's two ways of saving: a temp renamed over the file (vim, VS Code, most), or the
# file truncated and written in place (nano, some IDEs): the same inode, a new size and mtime.
_EDITOR_SCRIPT = """
import os, sys
path, text, how = sys.argv[1], sys.argv[2], sys.argv[3]
if how == "rename":
    tmp = path + ".editor-swp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
else:
    with open(path, "r+", encoding="utf-8") as fh:
        fh.truncate(0)
        fh.write(text)
"""


def _editor_saves(path: Path, text: str, how: str) -> None:
    """Another program (no lock of ours) saves ``text`` at ``path``, ``how`` it does."""
    subprocess.run([sys.executable, "-c", _EDITOR_SCRIPT, str(path), text, how], check=True)


def _recovered(store: BlueprintStore) -> list[Path]:
    return sorted(p for p in (store.paths.data / "recovered").rglob("*") if p.is_file())


@pytest.mark.parametrize("how", ["rename", "in place"])
def test_save_many_keeps_an_edit_saved_over_a_file_it_is_replacing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        store.save_many([SaveRequest(f"n{i}", f"steps: [old-{i}]\n") for i in range(12)])
        target = store.abspath("n3.blueprint.yaml")
        calls = before_first(
            monkeypatch, fs.PendingWrites, "commit", lambda: _editor_saves(target, EDITOR, how)
        )
        results = store.save_many([SaveRequest(f"n{i}", f"steps: [app-{i}]\n") for i in range(12)])
        monkeypatch.undo()

        assert calls  # (the batch did reach its placing: the editor saved inside the window)
        assert all(not isinstance(r, Exception) for r in results), results
        # The editor's version was recorded, then the app's save went over it: all three kept.
        assert revision_contents(store, "n3.blueprint.yaml") == [
            "steps: [old-3]\n",
            EDITOR,
            "steps: [app-3]\n",
        ]
        for i in range(12):
            assert store.load(f"n{i}").content == f"steps: [app-{i}]\n"
        assert store.count() == 12
        assert not _recovered(store)
        assert store.check().clean


@pytest.mark.parametrize("how", ["rename", "in place"])
def test_a_single_save_keeps_an_edit_saved_over_its_file_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        store.save("x", "steps: [old]\n")
        target = store.abspath("x.blueprint.yaml")
        # (After the temps are written and flushing: the ~0.5 ms a single save leaves.)
        before_first(
            monkeypatch, fs.PendingWrites, "commit", lambda: _editor_saves(target, EDITOR, how)
        )
        saved = store.save("x", "steps: [app]\n")
        monkeypatch.undo()

        assert saved.content == "steps: [app]\n"
        assert revision_contents(store, "x.blueprint.yaml") == [
            "steps: [old]\n",
            EDITOR,
            "steps: [app]\n",
        ]
        assert target.read_text(encoding="utf-8") == "steps: [app]\n"
        assert store.check().clean


def test_an_edit_to_the_meta_file_meanwhile_is_kept_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The YAML is swapped in (and put back by the undo); the meta file's swap finds the edit."""
    with localstore.open(home=tmp_path / "home") as store:
        bp = store.save("x", "steps: [old]\n", tags=["old"])
        meta = store.abspath("x.blueprint.meta.json")
        edited = meta.read_text(encoding="utf-8").replace('"old"', '"by-hand"')
        before_first(
            monkeypatch, fs.PendingWrites, "commit", lambda: _editor_saves(meta, edited, "rename")
        )
        store.save("x", "steps: [app]\n")
        monkeypatch.undo()

        tags = [store.load_revision(bp.id, r.rev).meta.tags for r in reversed(store.history(bp.id))]
        assert tags == [("old",), ("by-hand",), ("by-hand",)]
        assert store.load(bp.id).content == "steps: [app]\n"
        assert store.check().clean


@pytest.mark.parametrize("origin", ["local", "remote"])
@pytest.mark.parametrize("how", ["rename", "in place"])
def test_an_editor_saving_again_between_the_two_swaps_keeps_its_newest_at_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, origin: str
) -> None:
    """The second-order case: the editor saved before the write's swap (its first version was
    swapped out), then again before the swap that puts that version back (renamed over the name,
    or written in place into the write's file there). That swap exchanged the newest version
    with the first: the older was put back at the name and recorded, the newest taken off it to
    <data>/recovered/. The file at the name is now checked first: not the write's any more, it
    stays (the newest, recorded before the write runs again, or refused by a download), and the
    first version goes to <data>/recovered/ (reported by check until the person removes it):
    neither is lost."""
    with localstore.open(home=tmp_path / "home") as store:
        bp = store.save("x", "steps: [old]\n")
        target = store.abspath("x.blueprint.yaml")
        before_first(
            monkeypatch, fs.PendingWrites, "commit", lambda: _editor_saves(target, EDITOR, "rename")
        )
        swaps: list[int] = []
        real_swap = getattr(fs, "_EXCHANGE", None)

        def second_save_before_the_put_back(src: str, dst: str) -> None:
            # (The fault injected: the editor's second save at this moment. The swaps are real.)
            if dst == str(target):
                swaps.append(1)
                if len(swaps) == 1:  # (after the first swap, before the code that follows it)
                    assert real_swap is not None
                    real_swap(src, dst)
                    _editor_saves(target, AGAIN, how)
                    return
            assert real_swap is not None
            real_swap(src, dst)

        monkeypatch.setattr(fs, "_EXCHANGE", second_save_before_the_put_back)
        if origin == "local":
            saved = store.save("x", "steps: [app]\n")
        else:
            with store.index.write():  # (a sync pass's download)
                [result] = store.save_many(
                    [SaveRequest("x", "steps: [remote]\n", id=bp.id)], origin="remote"
                )
        monkeypatch.undo()

        if origin == "local":
            assert saved.content == "steps: [app]\n"
            assert revision_contents(store, "x.blueprint.yaml") == [
                "steps: [old]\n",
                AGAIN,
                "steps: [app]\n",
            ]
        else:
            # Refused (an edit beats a download): the person's newest save is at its name.
            assert isinstance(result, ChangedOnDiskError), result
            assert revision_contents(store, "x.blueprint.yaml") == ["steps: [old]\n", AGAIN]
            assert target.read_text(encoding="utf-8") == AGAIN
        kept = _recovered(store)
        assert [p.read_text(encoding="utf-8") for p in kept] == [EDITOR]
        assert kept[0].name == "x.blueprint.yaml"
        report = store.check()
        assert [(p["kind"], p["path"]) for p in report.problems] == [
            ("edit-kept", "x.blueprint.yaml")
        ]
        # Nothing of it is left in the blueprints folder; once the person has taken the kept
        # version, check is clean.
        assert sorted(p.name for p in store.root.iterdir() if p.name != ".localstore-folder") == [
            "x.blueprint.meta.json",
            "x.blueprint.yaml",
        ]
        kept[0].unlink()
        assert store.check().clean


def test_a_file_deleted_meanwhile_is_saved_as_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editor's delete (or the first half of a save that moves the file away) between the
    check and the placing: nothing to keep, the write places its file at the free name."""
    with localstore.open(home=tmp_path / "home") as store:
        store.save("x", "steps: [old]\n")
        target = store.abspath("x.blueprint.yaml")
        before_first(monkeypatch, fs.PendingWrites, "commit", target.unlink)
        store.save("x", "steps: [app]\n")
        monkeypatch.undo()
        assert revision_contents(store, "x.blueprint.yaml") == ["steps: [old]\n", "steps: [app]\n"]
        assert target.read_text(encoding="utf-8") == "steps: [app]\n"
        assert store.check().clean


def test_without_a_swap_the_target_is_checked_just_before_the_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the system has no swap (Windows) or the filesystem refuses it, the file is checked
    by the full rule (size, mtime, change time, inode) just before ``os.replace``."""
    monkeypatch.setattr(fs, "_EXCHANGE", None)
    with localstore.open(home=tmp_path / "home") as store:
        store.save("x", "steps: [old]\n")
        target = store.abspath("x.blueprint.yaml")
        before_first(
            monkeypatch, fs.PendingWrites, "commit", lambda: _editor_saves(target, EDITOR, "rename")
        )
        store.save("x", "steps: [app]\n")
        assert revision_contents(store, "x.blueprint.yaml") == [
            "steps: [old]\n",
            EDITOR,
            "steps: [app]\n",
        ]
        assert store.check().clean


@pytest.mark.parametrize("low_space", [False, True])
def test_a_filesystem_that_refuses_the_swap_gets_the_last_moment_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, low_space: bool
) -> None:
    """EINVAL from the swap (NFS, older FUSE): the file is checked just before ``os.replace``,
    also when the save keeps the replaced file first (a nearly full disk: its hard link sets
    the change time, which the check then leaves out)."""

    def refused(src: str, dst: str) -> None:
        raise OSError(errno.EINVAL, "not supported by this filesystem")

    monkeypatch.setattr(fs, "_EXCHANGE", refused)
    if low_space:
        monkeypatch.setattr(fs, "space_is_low", lambda folder: True)
    with localstore.open(home=tmp_path / "home") as store:
        store.save("x", "steps: [old]\n")
        assert store.save("x", "steps: [plain]\n").rev == 2  # (nothing raced: replaced)
        target = store.abspath("x.blueprint.yaml")
        before_first(
            monkeypatch, fs.PendingWrites, "commit", lambda: _editor_saves(target, EDITOR, "rename")
        )
        store.save("x", "steps: [app]\n")
        assert revision_contents(store, "x.blueprint.yaml") == [
            "steps: [old]\n",
            "steps: [plain]\n",
            EDITOR,
            "steps: [app]\n",
        ]
        assert not list(store.root.glob("*" + fs.TEMP_SUFFIX))
        assert store.check().clean


@pytest.mark.parametrize("swap", [True, False])
@pytest.mark.parametrize("how", ["rename", "in place"])
def test_an_edit_saved_just_before_a_move_is_not_taken_for_the_recorded_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, swap: bool
) -> None:
    """A save that moves a blueprint checks the pair at its old name, renames it, then swaps
    its new files in over the moved ones. The stats those swaps compare with were taken again
    after the renames (which set the change time): an editor's save at the old name between the
    check and the renames moved with the pair, was taken for the recorded file, and was
    unlinked, in no revision. Where there is no swap, the same stats are checked just before
    the replace."""
    if not swap:
        monkeypatch.setattr(fs, "_EXCHANGE", None)
    with localstore.open(home=tmp_path / "home") as store:
        bp = store.save("x", "steps: [old]\n")
        old = store.abspath("x.blueprint.yaml")
        before_first(
            monkeypatch, BlueprintStore, "_rename_pair", lambda: _editor_saves(old, EDITOR, how)
        )
        saved = store.save("y", "steps: [app]\n", id=bp.id)
        monkeypatch.undo()  # (the swap, when made absent, too: the check below reads only)

        assert saved.path == "y.blueprint.yaml"
        assert saved.content == "steps: [app]\n"
        assert EDITOR in revision_contents(store, "y.blueprint.yaml")
        assert not old.exists()
        assert store.check().clean


# An editor's in-place save with a pause after its truncate: it truncates when told, then holds
# the file open and empty until told to write (as a slow editor, or one preempted there).
_PAUSING_EDITOR = """
import sys
path, text = sys.argv[1], sys.argv[2]
assert sys.stdin.readline() == "truncate\\n"
with open(path, "r+", encoding="utf-8") as fh:
    fh.truncate(0)
    fh.flush()
    print("truncated", flush=True)
    if sys.stdin.readline() == "write\\n":
        fh.write(text)
"""


class _PausingEditor:
    """The editor of _PAUSING_EDITOR, a real process, told when to truncate and when to write."""

    def __init__(self, path: Path, text: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PAUSING_EDITOR, str(path), text],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.wrote = False

    def truncate(self) -> None:
        """Truncate the file; returns once it is empty (and held open)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("truncate\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == "truncated\n"

    def write(self) -> None:
        """Write the text and close the file (once); returns when the editor has exited."""
        if self.wrote:
            return
        self.wrote = True
        assert self.process.stdin is not None
        if self.process.poll() is None:
            self.process.stdin.write("write\n")
            self.process.stdin.close()
        assert self.process.wait(30) == 0

    def writes_in(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Have the editor write while a write waits for the file to settle (its first pause),
        which is the only moment it writes: a write that does not wait records it truncated."""
        import localstore._store_unrecorded as store_unrecorded

        real_pause = getattr(store_unrecorded, "_settle_pause", None)

        def editor_writes_while_the_save_waits(seconds: float) -> None:
            self.write()
            assert real_pause is not None
            real_pause(seconds)

        monkeypatch.setattr(store_unrecorded, "_settle_pause", editor_writes_while_the_save_waits)

    def close(self) -> None:
        """Let the editor finish (if the test did not) and release its pipes."""
        try:
            if self.process.poll() is None:
                self.write()
        finally:
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.mark.parametrize("origin", ["local", "remote"])
def test_a_save_meeting_an_editor_mid_save_records_its_finished_file_not_the_truncated_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, origin: str
) -> None:
    """The write's swap finds the file changed by the editor's truncate, before its write: the
    write recorded that empty file first (an invalid revision, an ``invalid`` event) the moment
    it met it. With a watcher running it now waits, as the watcher does, for the file to settle
    (here: the editor's close, which the watcher records), and records the finished edit.

    No timing: a watcher with a long write-quiet records only on the close; the editor truncates
    just before the write's swap and writes only once the write waits for it."""
    from localstore.events import Event
    from localstore.watcher import Watcher

    with localstore.open(home=tmp_path / "home") as store:
        bp = store.save("x", "steps: [old]\n")
        target = store.abspath("x.blueprint.yaml")
        watcher = Watcher(store, write_quiet_ms=120_000)
        watcher.start()
        editor = _PausingEditor(target, EDITOR)
        try:
            assert watcher.wait_idle(30)
            heard: list[Event] = []
            store.subscribe(heard.append)
            before_first(monkeypatch, fs, "replace_recorded", editor.truncate)
            editor.writes_in(monkeypatch)
            if origin == "local":
                saved = store.save("x", "steps: [app]\n")
            else:
                # A sync download, inside the engine's transaction (its lock held: the watcher
                # cannot record meanwhile): the item is refused, the edit recorded, then merged.
                with store.index.write():
                    [result] = store.save_many(
                        [SaveRequest("x", "steps: [remote]\n", id=bp.id)], origin="remote"
                    )
            monkeypatch.undo()
        finally:
            editor.close()
        assert watcher.wait_idle(30)
        watcher.stop()
        watcher.join(10)

        assert [e.kind for e in heard if e.kind == "invalid"] == []
        if origin == "remote":
            assert isinstance(result, ChangedOnDiskError), result
            assert [r.origin for r in reversed(store.history(bp.id))] == ["local", "external"]
            assert revision_contents(store, "x.blueprint.yaml") == ["steps: [old]\n", EDITOR]
            assert target.read_text(encoding="utf-8") == EDITOR
        else:
            assert saved.content == "steps: [app]\n"
            assert [r.origin for r in reversed(store.history(bp.id))] == [
                "local",
                "external",
                "local",
            ]
            assert revision_contents(store, "x.blueprint.yaml") == [
                "steps: [old]\n",
                EDITOR,
                "steps: [app]\n",
            ]
            assert target.read_text(encoding="utf-8") == "steps: [app]\n"
        assert not _recovered(store)
        assert store.check().clean
        assert editor.wrote  # (the save waited for the editor)


@pytest.mark.parametrize("origin", ["remote", "local"])
def test_a_batch_whose_first_look_meets_an_editor_mid_save_records_its_finished_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, origin: str
) -> None:
    """A batch inside a caller's transaction (a sync pass's download: ``save_many``, origin
    remote; or an app's own transaction) looks at each item's file before writing it
    (``_edited_on_disk``) and records an unrecorded edit it finds there, inside, at once: the
    editor had truncated the file and not yet written it, so the empty file was recorded (an
    invalid revision), and the finished edit after it. It now waits for the file to settle
    there, as the swap does (_await_settled): the edit is recorded once, whole.

    No timing: the editor truncates before the batch and writes only once the batch waits."""
    from localstore.events import Event
    from localstore.watcher import Watcher

    with localstore.open(home=tmp_path / "home") as store:
        saved = store.save_many([SaveRequest(f"n{i}", f"steps: [old-{i}]\n") for i in range(3)])
        ids = [bp.id for bp in saved if not isinstance(bp, Exception)]
        requests = [SaveRequest(f"n{i}", f"steps: [{origin}-{i}]\n", id=ids[i]) for i in range(3)]
        target = store.abspath("n1.blueprint.yaml")
        watcher = Watcher(store, write_quiet_ms=120_000)
        watcher.start()
        editor = _PausingEditor(target, EDITOR)
        try:
            assert watcher.wait_idle(30)
            heard: list[Event] = []
            store.subscribe(heard.append)
            editor.truncate()
            editor.writes_in(monkeypatch)
            with store.index.write():
                results = store.save_many(requests, origin=origin)
            monkeypatch.undo()
        finally:
            editor.close()
        assert watcher.wait_idle(30)
        watcher.stop()
        watcher.join(10)

        assert [e.kind for e in heard if e.kind == "invalid"] == []
        if origin == "remote":
            # The download's item is refused (an edit beats it; the pass merges it later).
            assert isinstance(results[1], ChangedOnDiskError), results
            assert revision_contents(store, "n1.blueprint.yaml") == ["steps: [old-1]\n", EDITOR]
            assert target.read_text(encoding="utf-8") == EDITOR
        else:
            assert not isinstance(results[1], Exception), results
            assert revision_contents(store, "n1.blueprint.yaml") == [
                "steps: [old-1]\n",
                EDITOR,
                "steps: [local-1]\n",
            ]
        assert [r.origin for r in reversed(store.history(ids[1]))][:2] == ["local", "external"]
        for i in (0, 2):
            assert store.load(f"n{i}").content == f"steps: [{origin}-{i}]\n"
        assert not _recovered(store)
        assert store.check().clean
        assert editor.wrote  # (the batch waited for the editor)
