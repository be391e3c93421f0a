"""A file an editor creates at a path a download is writing, while it writes, is kept.

The download's batch (store.save_many, origin "remote") found the name free when it listed the
folder; the editor created it before the batch placed its files. The batch used to rename its
file over the editor's: the person's work gone, in no revision. Now the store leaves the
editor's file, records it, and refuses that row; the engine applies the row through its
single-row path, which keeps both (the remote blueprint moved aside, as for any local file in
a downloaded blueprint's way).

Real homes, real files, the memory server; the editor is a real process, its timing the one
injected fault (it writes just before the batch places its files).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from localstore import files as fs

from .conftest import Device

N = 12
EDITOR = "steps: [typed in an editor]\n"


def test_a_download_keeps_a_file_an_editor_creates_at_its_path_meanwhile(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = make_device("A"), make_device("B")
    for i in range(N):
        a.store.save(f"d/n{i}", f"steps: [remote-{i}]\n")
    a.sync()
    target = b.store.abspath("d/n3.blueprint.yaml")
    real = fs.PendingWrites.commit
    calls: list[int] = []

    def editor_first(self: fs.PendingWrites) -> None:
        # The download's batch (its 2 N files), once: the editor saves inside its window.
        if len(self) >= 2 * N and not calls:
            calls.append(1)
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; open(sys.argv[1], 'x', encoding='utf-8').write(sys.argv[2])",
                    str(target),
                    EDITOR,
                ],
                check=True,
            )
        real(self)

    monkeypatch.setattr(fs.PendingWrites, "commit", editor_first)
    report: Any = b.sync()
    monkeypatch.undo()

    assert calls  # (the download did come through the batch)
    assert report.quarantined == 0
    # The editor's bytes are in a live blueprint on B, and in its history.
    editors = [i for i in b.store.list() if b.text(i.id) == EDITOR]
    assert len(editors) == 1, editors
    # (Recorded where the editor saved it, then moved aside for the downloaded blueprint,
    # as the engine does for any local file in a download's way.)
    history = b.store.history(editors[0].id)
    assert (history[-1].origin, history[-1].path) == ("external", "d/n3.blueprint.yaml")
    assert {b.store.load_revision(editors[0].id, r.rev).content for r in history} == {EDITOR}
    # Every downloaded blueprint is there too, the one in the editor's way included.
    remote = {i.id for i in a.store.list()}
    assert remote <= {i.id for i in b.store.list()}
    assert {b.text(ident) for ident in remote} == {f"steps: [remote-{i}]\n" for i in range(N)}
    assert b.store.check().clean
    # And the next passes carry the editor's blueprint to A: nothing lost on either side.
    b.sync()
    a.sync()
    assert EDITOR in {a.text(i.id) for i in a.store.list()}
