"""A new pair (YAML and meta file, never recorded) that cannot be indexed gets an ``invalid``
event, whichever of its two files is refused: one whose meta file was invalid got none, so the
app's UI showed nothing of a file the user could see was refused (a new pair with an invalid
YAML got its event)."""

from __future__ import annotations

import pytest

from localstore._reconcile import reason_of
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder

YAML = "wide.blueprint.yaml"
META = "wide.blueprint.meta.json"
GOOD_ID = "6f1c2b1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"

PAIRS = {
    "bad-json": (b"steps: [a]\n", b"{not json"),
    "id-shape": (b"steps: [a]\n", b'{"id": "not-a-uuid", "name": "wide"}'),
    "not-an-object": (b"steps: [a]\n", b"[1, 2]"),
    "bad-yaml": (b"steps: [a\n", b'{"id": "' + GOOD_ID.encode() + b'", "name": "wide"}'),
}


@pytest.mark.parametrize("meta_first", [True, False], ids=["meta-first", "yaml-first"])
@pytest.mark.parametrize("case", PAIRS, ids=list(PAIRS))
def test_a_new_pair_it_cannot_index_gets_an_invalid_event_with_what_to_do(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, case: str, meta_first: bool
) -> None:
    yaml, meta = PAIRS[case]
    writes = [(META, meta), (YAML, yaml)] if meta_first else [(YAML, yaml), (META, meta)]
    for rel, data in writes:
        store.abspath(rel).write_bytes(data)
    assert watcher.wait_idle()
    events = recorder.take()
    (problem,) = store.check().problems
    assert [(e.kind, e.id, e.path, e.rev) for e in events] == [("invalid", "", YAML, 0)]
    # (What status lists of the file: check's reason for it, with its hint.)
    assert events[0].detail == reason_of(problem)
    assert events[0].detail.endswith(")")  # (the hint: what to do with the file)
    assert store.count() == 0
    assert store.abspath(META).read_bytes() == meta  # (nothing written over the user's file)
