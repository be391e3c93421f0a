"""A save that replaces a recorded file swaps it out (files.replace_recorded): not a vanish.

The swap renames the new file over the target and, in the same step, the old file to the
temp's name: inotify reports both moves, the second one *from* the blueprint's path. Taken for a
move-away, every saved path was held for the delete grace (400 ms) instead of the settle window
(40 ms) before the echo's check, and so was a ``sync`` waiting for the watcher. Real watcher,
real saves; ``_vanish`` is only spied on.
"""

from __future__ import annotations

import pytest

from localstore import files as fs
from localstore.store import BlueprintStore
from localstore.watcher import Watcher


@pytest.mark.skipif(fs._EXCHANGE is None, reason="no rename that swaps names on this system")
def test_a_save_over_a_recorded_file_is_no_vanish(
    store: BlueprintStore, watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    bp = store.save("plan", "value: 0\n")
    assert watcher.wait_idle(30)
    vanished: list[str | None] = []
    real = watcher._vanish

    def spy(key: str | None, now: float) -> None:
        vanished.append(key)
        real(key, now)

    monkeypatch.setattr(watcher, "_vanish", spy)
    swaps: list[str] = []
    real_swap = fs._EXCHANGE

    def counted(src: str, dst: str) -> None:
        swaps.append(dst)
        real_swap(src, dst)  # type: ignore[misc]  # (not None: see the skip)

    monkeypatch.setattr(fs, "_EXCHANGE", counted)
    store.save("plan", "value: 1\n")
    assert watcher.wait_idle(30)
    assert len(swaps) == 2  # (the save did swap its two files in)
    assert "plan.blueprint.yaml" not in vanished, vanished
    assert store.load(bp.id).content == "value: 1\n"
    # A real move-away is still one.
    store.abspath("plan.blueprint.yaml").rename(store.root / "elsewhere.txt")
    assert watcher.wait_idle(30)
    assert "plan.blueprint.yaml" in vanished
