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

import localstore
from localstore.events import Event


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
