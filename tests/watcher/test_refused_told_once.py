"""A new file the watcher cannot index (no row: an invalid YAML, or a new pair with an invalid
meta file) gets one ``invalid`` event per change of the file, not one per rescan.

The rescan took every path without a row for changed, read it again and told subscribers the
same refusal every 600 s (30 s on a network file system): an app's UI re-notified its user of a
file nobody had touched. A rescan now passes such a file by while its stats are the ones it was
refused with (no read); an edit, or a refusal for another reason, is told again. A new watcher
(a daemon's restart) tells it once more: what it has told is kept in memory, not in the index.
"""

from __future__ import annotations

import os

import pytest

from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder

YAML = "x.blueprint.yaml"
META = "x.blueprint.meta.json"
GOOD_YAML = b"steps: [a]\n"

PAIRS = {
    "bad-yaml": ((YAML, b"steps: [a\n"),),
    "bad-meta": ((META, b"{not json"), (YAML, GOOD_YAML)),
}


def _invalid(events: list) -> list[tuple[str, str, str]]:
    return [(e.kind, e.id, e.path) for e in events]


@pytest.mark.parametrize("case", PAIRS, ids=list(PAIRS))
def test_a_running_watchers_rescans_do_not_tell_an_untouched_refused_file_again(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, case: str
) -> None:
    for rel, data in PAIRS[case]:
        store.abspath(rel).write_bytes(data)
    assert watcher.wait_idle()
    assert _invalid(recorder.take()) == [("invalid", "", YAML)]
    for _ in range(3):
        report = watcher.rescan()
        assert report.changed == 0  # (passed by: not read again)
    assert recorder.take() == []


def test_a_stopped_watchers_rescans_tell_a_refused_file_once(
    store: BlueprintStore, make_watcher, recorder: Recorder
) -> None:
    store.abspath(YAML).write_bytes(b"steps: [a\n")
    w: Watcher = make_watcher(store)
    assert w.rescan().changed == 1
    assert _invalid(recorder.take()) == [("invalid", "", YAML)]
    for _ in range(3):
        assert w.rescan().changed == 0
    assert recorder.take() == []


def test_an_edit_of_a_refused_file_is_told_again_and_a_new_watcher_tells_it_once(
    store: BlueprintStore, make_watcher, recorder: Recorder
) -> None:
    path = store.abspath(YAML)
    path.write_bytes(b"steps: [a\n")
    w: Watcher = make_watcher(store)
    w.rescan()
    first = recorder.take()
    path.write_bytes(b"steps: {a\n")  # (still refused, for another reason)
    w.rescan()
    (second,) = recorder.take()
    assert second.kind == "invalid" and second.detail != first[0].detail
    # The same bytes written again: a change of the file all the same (its stats say so).
    path.write_bytes(b"steps: {a\n")
    w.rescan()
    assert _invalid(recorder.take()) == [("invalid", "", YAML)]
    w.rescan()
    assert recorder.take() == []
    # A new watcher (the daemon restarted it) has told nothing yet: once more.
    w2: Watcher = make_watcher(store)
    w2.rescan()
    w2.rescan()
    assert _invalid(recorder.take()) == [("invalid", "", YAML)]


def test_a_refused_file_fixed_then_broken_again_is_told_again(
    store: BlueprintStore, make_watcher, recorder: Recorder
) -> None:
    path = store.abspath(YAML)
    path.write_bytes(b"steps: [a\n")
    w: Watcher = make_watcher(store)
    w.rescan()
    recorder.take()
    os.unlink(path)
    w.rescan()
    path.write_bytes(b"steps: [a\n")  # (the same refusal, a new file)
    w.rescan()
    assert _invalid(recorder.take()) == [("invalid", "", YAML)]
    path.write_bytes(GOOD_YAML)
    w.rescan()
    assert [e.kind for e in recorder.take()] == ["created"]
