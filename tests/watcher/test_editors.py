"""Acceptance 1: every editor's save dance is ingested exactly once, whole, with its identity kept.

Each replay repeats REPEATS times (20; 1,000 with LOCALSTORE_STRESS=1) and waits for the watcher to be
idle instead of sleeping.
"""

from __future__ import annotations

import pytest

from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from . import editors
from .conftest import REPEATS, STRESS, Recorder

# 1,000 chunked-slow replays (60 KB each, parsed and kept in history) take ~5-10 min on a loaded
# 2-core machine: more than the suite's default 300 s per test.
pytestmark = pytest.mark.timeout(3600 if STRESS else 300)


def _content(tag: str, i: int, *, big: bool = False) -> bytes:
    lines = [f"# {tag} edit {i}", f"edit: {i}", "steps:"]
    count = 1500 if big else 3
    lines += [f"  - name: step-{n}-{i}\n    run: echo {tag} {n}" for n in range(count)]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("editor", sorted(editors.SAVERS))
def test_save_dance_is_one_modify(
    editor: str, store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    big = editor == "chunked-slow"
    bp = store.save(f"edits/{editor}", _content(editor, 0, big=big).decode())
    assert watcher.wait_idle()
    recorder.take()
    path = store.abspath(bp.path)
    written = {_content(editor, 0, big=big)}
    for i in range(1, REPEATS + 1):
        data = _content(editor, i, big=big)
        written.add(data)
        editors.SAVERS[editor](path, data)
        assert watcher.wait_idle(), f"not idle after edit {i}"
        events = recorder.take()
        assert [(e.kind, e.id, e.origin) for e in events] == [("modified", bp.id, "external")], (
            f"edit {i}: {[(e.kind, e.path) for e in events]}"
        )
        assert store.load(bp.id).content.encode() == data
    history = store.history(bp.id)
    assert len(history) == REPEATS + 1
    assert not any(r.deleted for r in history)
    # No torn ingest: every recorded revision is one of the complete versions written.
    for r in history:
        assert store.load_revision(bp.id, r.rev).content.encode() in written
    assert store.check().clean


def test_case_only_rename_keeps_identity(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    bp = store.save("Case/report", "kind: report\n")
    assert watcher.wait_idle()
    recorder.take()
    names = ["report", "REPORT"]
    current = bp.path
    for i in range(1, REPEATS + 1):
        new = f"Case/{names[i % 2]}.blueprint.yaml"
        editors.case_rename(store.abspath(current), store.abspath(new))
        assert watcher.wait_idle()
        events = recorder.take()
        assert [(e.kind, e.id, e.path, e.old_path) for e in events] == [
            ("moved", bp.id, new, current)
        ]
        # The meta file followed the YAML; the old one is gone.
        assert store.abspath(new.replace(".yaml", ".meta.json")).exists()
        assert not store.abspath(current.replace(".yaml", ".meta.json")).exists()
        current = new
    assert store.resolve(bp.id).path == current
    assert store.check().clean
