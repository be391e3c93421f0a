"""An editor save landing between the engine's planning of a batched run and the run's write is
merged, never overwritten: the store refuses that item (ChangedOnDiskError, after recording the
edit) and the engine re-applies the row through its single-row, merging path."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from .conftest import Device


def test_an_edit_during_a_planned_run_is_merged_not_overwritten(
    make_device: Callable[..., Device], monkeypatch: Any
) -> None:
    a, b = make_device("A"), make_device("B")
    ids = [a.store.save(f"f{i}", f"v: {i}\n").id for i in range(3)]
    a.sync()
    b.sync()
    for i, ident in enumerate(ids):
        b.store.save(f"f{i}", f"v: {i}\nremote: edit\n", id=ident)
    b.sync()

    real = a.store.save_many

    def editor_saves_first(requests: Any, **kw: Any) -> Any:
        # Fault injection: the editor's save lands inside the window (after planning).
        path = a.store.abspath("f0.blueprint.yaml")
        path.write_text("v: 0\nuser: precious unsaved work\n")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        return real(requests, **kw)

    monkeypatch.setattr(a.store, "save_many", editor_saves_first)
    report = a.sync()
    monkeypatch.undo()
    assert report.quarantined == 0
    assert a.text(ids[0]) == "v: 0\nuser: precious unsaved work\nremote: edit\n"
    assert [a.text(ident) for ident in ids[1:]] == ["v: 1\nremote: edit\n", "v: 2\nremote: edit\n"]
    assert any(r.origin == "external" for r in a.store.history(ids[0]))
    a.sync()
    b.sync()
    assert b.text(ids[0]) == a.text(ids[0])
