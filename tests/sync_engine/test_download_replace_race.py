"""An editor's save over a file a download is replacing, while it replaces it, is kept.

B's download of A's updates (store.save_many, origin "remote") checked each file it replaces
against the index when it reached it; the editor saved over one of them before the batch placed
its files. The batch renamed the update over the editor's save: the person's work gone, in no
revision. Now the write finds the file changed as it swaps its own in (files.replace_recorded),
puts the editor's file back, records it and refuses that row; the engine applies the row through
its merging path, as for any edit found unrecorded before the write (a conflict copy).

Real homes, real files, the memory server; the editor is a real process, its timing the one
injected fault (it saves just before the batch places its files).
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
EDITOR = "steps: [typed in an editor while the update came down]\n"


@pytest.mark.parametrize("how", ["rename", "in place"])
def test_a_download_keeps_an_edit_saved_over_a_file_it_is_replacing(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    a, b = make_device("A"), make_device("B")
    for i in range(N):
        a.store.save(f"d/n{i}", f"steps: [v1-{i}]\n")
    a.sync()
    b.sync()
    for i in range(N):
        a.store.save(f"d/n{i}", f"steps: [v2-{i}]\n")
    a.sync()
    target = b.store.abspath("d/n3.blueprint.yaml")
    real = fs.PendingWrites.commit
    calls: list[int] = []
    script = (
        "import os, sys\n"
        "path, text, how = sys.argv[1:4]\n"
        "if how == 'rename':\n"
        "    open(path + '.swp', 'w', encoding='utf-8').write(text)\n"
        "    os.replace(path + '.swp', path)\n"
        "else:\n"
        "    fh = open(path, 'r+', encoding='utf-8'); fh.truncate(0); fh.write(text); fh.close()\n"
    )

    def editor_first(self: fs.PendingWrites) -> None:
        # The download's batch (its 2 N files), once: the editor saves inside its window.
        if len(self) >= 2 * N and not calls:
            calls.append(1)
            subprocess.run([sys.executable, "-c", script, str(target), EDITOR, how], check=True)
        real(self)

    monkeypatch.setattr(fs.PendingWrites, "commit", editor_first)
    report: Any = b.sync()
    monkeypatch.undo()

    assert calls  # (the download did come through the batch)
    assert report.quarantined == 0
    # The editor's bytes are in a live blueprint on B, and in its history.
    editors = [i for i in b.store.list() if b.text(i.id) == EDITOR]
    assert len(editors) == 1, editors
    history = b.store.history(editors[0].id)
    assert EDITOR in {b.store.load_revision(editors[0].id, r.rev).content for r in history}
    # (A conflict copy beside the update: the engine's way with a local edit in its way.)
    assert "(conflict B " in editors[0].path, editors[0].path
    # Every update came down, the one the editor raced included.
    assert {b.text(i.id) for i in b.store.list()} == {f"steps: [v2-{i}]\n" for i in range(N)} | {
        EDITOR
    }
    assert b.store.check().clean
    # And the next passes carry the editor's version to A: nothing lost on either side.
    b.sync()
    a.sync()
    assert EDITOR in {a.text(i.id) for i in a.store.list()}
