""".localstoreignore saved by an editor: its rules are never taken from a half-done save.

vim (backupcopy=no) renames the ignore file to ``.localstoreignore~`` and writes a new one (its
fsync keeps the name missing for a moment); VS Code truncates it in place and then writes. The
watcher re-read the rules at the first event of the save: from a missing or empty file, which
leaves only the default patterns, and the rescan it asked for took every pair under an ignored
folder for a new blueprint (a ``created`` event each, which sync pushes, and a meta file written
beside each lone YAML). Seen with real vim editing the file beside an ignored ``archive`` folder.

Real watcher, real files. The replays stop after the save's first step until the worker has
handled its event (no timing: a condition on the worker), as a slow disk's fsync or a pausing
editor makes it; then they finish the save.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from localstore import files as fs
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder

RULES = b"# user rules\narchive\n"
NEW_RULES = RULES + b"scratch-*\n"


def _worker_took(watcher: Watcher, seen: int) -> None:
    """Wait until the worker has taken a raw event after the first ``seen`` and finished its next
    round (any rescan the event asked for runs at the start of that round)."""
    deadline = time.monotonic() + 30
    with watcher._cond:
        while watcher.stats.raw_events <= seen:
            assert time.monotonic() < deadline, "the watcher did not take the save's first event"
            watcher._cond.wait(0.05)
        # Each round ends by notifying this condition (Watcher._update_idle); a round that ended
        # during the polls above is followed by another within a health check (2 s).
        watcher._cond.wait(10)


def _rename_away_then_write(path: Path, data: bytes, pause: Callable[[], None]) -> None:
    """vim with backupcopy=no: X -> X~, (pause: the new X's write and fsync), new X, unlink X~."""
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    pause()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.unlink(backup)


def _truncate_then_write(path: Path, data: bytes, pause: Callable[[], None]) -> None:
    """An in-place save (VS Code, vim backupcopy=yes): open with O_TRUNC, write, close."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        pause()
        os.write(fd, data)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "save", [_rename_away_then_write, _truncate_then_write], ids=["rename-away", "in-place"]
)
def test_an_ignore_file_mid_save_imports_nothing_it_ignores(
    store: BlueprintStore,
    make_watcher,
    recorder: Recorder,
    save: Callable[[Path, bytes, Callable[[], None]], None],
) -> None:
    root = store.root
    (root / fs.IGNORE_FILE_NAME).write_bytes(RULES)
    kept = store.save("keep/plan", "v: 1\n")
    # An ignored folder of blueprints the user keeps out of the store: lone YAMLs and pairs
    # (a pair copied from another home keeps its meta file).
    archive = root / "archive"
    archive.mkdir()
    meta = (root / fs.meta_path_for(kept.path)).read_bytes()
    for i in range(3):
        (archive / f"old{i}{fs.YAML_SUFFIX}").write_text(f"old: {i}\n")
        (archive / f"pair{i}{fs.YAML_SUFFIX}").write_text(f"pair: {i}\n")
        (archive / f"pair{i}{fs.META_SUFFIX}").write_bytes(
            meta.replace(kept.id.encode(), kept.id[:-4].encode() + f"{i:04d}".encode())
        )
    before = sorted(p.name for p in archive.iterdir())
    recorder.take()
    # (A grace and a quiet period longer than the replay's pause: the save is not taken for a
    # deleted or abandoned ignore file while it waits on the worker.)
    watcher: Watcher = make_watcher(store, delete_grace_ms=3000, write_quiet_ms=3000)
    watcher.start()
    assert watcher.wait_idle(30)
    assert recorder.take() == []

    seen = watcher.stats.raw_events
    save(root / fs.IGNORE_FILE_NAME, NEW_RULES, lambda: _worker_took(watcher, seen))
    assert watcher.wait_idle(30)
    assert [(e.kind, e.path) for e in recorder.take()] == []
    assert sorted(p.name for p in archive.iterdir()) == before  # no meta written there
    assert [i.path for i in store.list()] == [kept.path]
    # The saved rules are the ones in force once the save is done.
    (root / f"scratch-1{fs.YAML_SUFFIX}").write_text("x: 1\n")
    (root / f"new{fs.YAML_SUFFIX}").write_text("x: 1\n")
    assert watcher.wait_idle(30)
    assert [(e.kind, e.path) for e in recorder.take()] == [("created", f"new{fs.YAML_SUFFIX}")]


def test_a_deleted_ignore_file_lets_its_blueprints_in(
    store: BlueprintStore, make_watcher, recorder: Recorder
) -> None:
    """The other side: an ignore file really deleted (or emptied) is taken at its word."""
    root = store.root
    (root / fs.IGNORE_FILE_NAME).write_bytes(RULES)
    (root / "archive").mkdir()
    (root / "archive" / f"old{fs.YAML_SUFFIX}").write_text("old: 1\n")
    watcher: Watcher = make_watcher(store)
    watcher.start()
    assert watcher.wait_idle(30)
    assert recorder.take() == []
    (root / fs.IGNORE_FILE_NAME).unlink()
    assert watcher.wait_idle(30)
    assert [(e.kind, e.path) for e in recorder.take()] == [
        ("created", f"archive/old{fs.YAML_SUFFIX}")
    ]
