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
