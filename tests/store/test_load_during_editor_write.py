"""load() while an editor rewrites the YAML in place (open with O_TRUNC, write, close).

Between the truncate and the write the file is empty. load() ingests a file that changed on disk
before it answers; an app's UI thread loading at that instant recorded the empty file: an
``invalid`` event ("YAML document is empty") and a flagged row (``SyncStatus.flagged``) for an
edit that was half a millisecond from complete (found by tests/test_embedding_app.py). An empty
YAML is never a revision, and load of a flagged row returns the last good revision anyway, so
load leaves an empty file to the watcher (which waits for the close) and the next reconcile.
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest

import localstore
from localstore.events import Event
from localstore.watcher import Watcher


def test_load_of_a_file_an_editor_has_just_truncated_records_nothing(
    store: localstore.BlueprintStore,
) -> None:
    bp = store.save("team/deploy", "steps:\n  - run: make\n")
    heard: list[Event] = []
    store.subscribe(heard.append)
    path = store.abspath(bp.path)
    with open(path, "r+", encoding="utf-8") as f:
        f.truncate(0)  # (an editor's O_TRUNC; its write has not come yet)
        f.flush()
        os.fsync(f.fileno())
        during = store.load(bp.id)
        assert (during.content, during.rev) == (bp.content, bp.rev)
        assert heard == []
        assert [i.valid for i in store.list()] == [True]
        f.write("steps:\n  - run: make deploy\n")
    after = store.load(bp.id)  # the editor closed the file: its edit is taken
    assert after.content == "steps:\n  - run: make deploy\n"
    assert [(e.kind, e.origin) for e in heard] == [("modified", "external")]
    assert store.check().clean


def test_a_file_left_empty_is_still_flagged_by_check(store: localstore.BlueprintStore) -> None:
    bp = store.save("team/deploy", "steps: []\n")
    store.abspath(bp.path).write_text("")
    assert store.load(bp.id).content == "steps: []\n"
    report = store.check(fix=True)
    assert [p["path"] for p in report.problems] == [bp.path]
    assert [i.valid for i in store.list()] == [False]


def test_load_between_an_editors_delete_and_create_keeps_the_blueprint(
    store: localstore.BlueprintStore,
) -> None:
    """vim (backupcopy=auto renames the file away, then writes a new one) and IDEs that delete
    and create: for a moment the YAML is gone. The watcher gives a vanished file a grace period
    for that dance; load() recorded the delete at once, and the file written a moment later
    became a new blueprint with a new id (history split, a delete and a create for sync to
    push, another device's edits of the old id now conflicting with a delete)."""
    watcher = Watcher(store)
    watcher.start()
    try:
        assert watcher.wait_idle(30)
        bp = store.save("team/deploy", "steps: []\n", tags=["ops"])
        heard: list[Event] = []
        store.subscribe(heard.append)
        path = store.abspath(bp.path)
        path.unlink()
        during = store.load(bp.id)  # the UI thread, in the middle of the editor's save
        assert (during.id, during.content, during.rev) == (bp.id, bp.content, bp.rev)
        path.write_text("steps:\n  - run: make\n")
        assert watcher.wait_idle(30)
        assert [(i.id, i.path, i.tags) for i in store.list()] == [(bp.id, bp.path, ("ops",))]
        assert store.load(bp.id).content == "steps:\n  - run: make\n"
        assert [(e.kind, e.id) for e in heard] == [("modified", bp.id)]
        # A file that stays gone is still a delete: the watcher's, after its grace.
        heard.clear()
        path.unlink()
        assert store.load(bp.id).content == "steps:\n  - run: make\n"
        assert watcher.wait_idle(30)
        assert [(e.kind, e.id) for e in heard] == [("deleted", bp.id)]
        assert not store.exists(bp.id)
    finally:
        watcher.stop()
        watcher.join(10)


def test_without_a_watcher_load_of_a_vanished_file_records_the_delete(
    store: localstore.BlueprintStore,
) -> None:
    """Nothing else would notice it until the next open: load decides at once, as before."""
    bp = store.save("team/deploy", "steps: []\n")
    store.abspath(bp.path).unlink()
    with pytest.raises(localstore.NotFoundError) as info:
        store.load(bp.id)
    assert "restore" in (info.value.hint or "")
    assert not store.exists(bp.id)


def test_load_of_a_file_whose_folder_became_a_file_records_the_delete(
    store: localstore.BlueprintStore,
) -> None:
    """A folder of its path replaced by a file: the blueprint is gone as when its file is. The
    lstat failed with NotADirectoryError, which load let out raw (no LocalStoreError)."""
    bp = store.save("team/sub/deploy", "steps: []\n")
    shutil.rmtree(store.root / "team")
    (store.root / "team").write_text("not a folder\n", encoding="utf-8")
    with pytest.raises(localstore.NotFoundError):
        store.load(bp.id)
    assert not store.exists(bp.id)


OLD = "name: deploy\nsteps:\n  - run: make\n"
HALF = "name: deploy\nsteps:\n  - run: make\n  - run: make test\n"  # parses on its own
FULL = HALF + "  - run: make deploy\nowner: ops\n"


def _in_place_save(
    path: os.PathLike[str], half_written: threading.Event, go_on: threading.Event
) -> None:
    """An editor's in-place save in two chunks: truncate, write a part, pause, write the rest."""
    with open(path, "r+", encoding="utf-8") as f:
        f.truncate(0)
        f.write(HALF)
        f.flush()
        os.fsync(f.fileno())
        half_written.set()
        assert go_on.wait(30)
        f.write(FULL[len(HALF) :])


def test_load_of_half_a_save_that_parses_leaves_the_revision_to_the_watcher(
    store: localstore.BlueprintStore,
) -> None:
    """Half an in-place save, cut at a line, often parses. load() in the pause recorded it as a
    revision (a `modified` event, history and sync got a blueprint its author never saved); the
    watcher then recorded the whole file as the next. While a watcher runs, a change that fresh is
    the watcher's to record (it waits for the close): load returns what the file holds now and
    records nothing."""
    bp = store.save("team/deploy", OLD)
    # A long write-quiet: the watcher records only on the close (no timing in this test).
    watcher = Watcher(store, write_quiet_ms=120_000)
    watcher.start()
    try:
        assert watcher.wait_idle(30)
        heard: list[Event] = []
        store.subscribe(heard.append)
        half_written, go_on = threading.Event(), threading.Event()
        writer = threading.Thread(
            target=_in_place_save, args=(store.abspath(bp.path), half_written, go_on)
        )
        writer.start()
        try:
            assert half_written.wait(30)
            during = store.load(bp.id)  # the app's UI thread, in the editor's pause
            assert (during.content, during.rev) == (HALF, bp.rev)
            assert heard == []
            assert [r.rev for r in store.history(bp.id)] == [bp.rev]
        finally:
            go_on.set()
            writer.join(30)
        assert watcher.wait_idle(30)
        after = store.load(bp.id)
        assert (after.content, after.rev) == (FULL, bp.rev + 1)
        assert [(e.kind, e.origin, e.rev) for e in heard] == [("modified", "external", bp.rev + 1)]
        texts = [store.load_revision(bp.id, r.rev).content for r in store.history(bp.id)]
        assert texts == [FULL, OLD]  # newest first: no half save in between
    finally:
        watcher.stop()
        watcher.join(10)


def test_a_save_in_the_pause_still_records_the_unseen_half_first(
    store: localstore.BlueprintStore,
) -> None:
    """load leaves the half to the watcher; a save cannot: it must never overwrite content
    nobody recorded, so the half is recorded (external) before the app's version."""
    bp = store.save("team/deploy", OLD)
    watcher = Watcher(store, write_quiet_ms=120_000)
    watcher.start()
    try:
        assert watcher.wait_idle(30)
        half_written, go_on = threading.Event(), threading.Event()
        writer = threading.Thread(
            target=_in_place_save, args=(store.abspath(bp.path), half_written, go_on)
        )
        writer.start()
        try:
            assert half_written.wait(30)
            assert store.load(bp.id).rev == bp.rev  # left to the watcher
            saved = store.save("team/deploy", "name: deploy\nsteps: []\n")
        finally:
            go_on.set()
            writer.join(30)
        assert saved.rev == bp.rev + 2
        kinds = [(r.rev, r.origin) for r in store.history(bp.id)]
        assert kinds[:2] == [(bp.rev + 2, "local"), (bp.rev + 1, "external")]
        assert store.load_revision(bp.id, bp.rev + 1).content == HALF
    finally:
        watcher.stop()
        watcher.join(10)
