"""An external edit that leaves size and mtime as the index recorded them is still picked up.

On a file system with coarse timestamps (FAT's 2 s, exFAT's 10 ms, an SMB share's 1 s, kernels
before 6.13 with one jiffy) an editor that changes one character right after a save keeps both the
size and the mtime the store recorded. The watcher trusted that pair and skipped the file, so the
edit was never recorded (and never synced) until the file changed again. The test puts the
recorded mtime back after the edit, which is what such a clock does by itself (this machine's
kernel stamps every change apart).
"""

from __future__ import annotations

import os

from localstore.store import BlueprintStore
from localstore.watcher import Watcher
from tests.conftest import replace_keeping_stat

from .conftest import Recorder


def _edit_keeping_size_and_mtime(path: os.PathLike[str], old: bytes, new: bytes) -> None:
    assert len(old) == len(new)
    before = os.stat(path)
    with open(path, "r+b") as f:  # in place, as vim with backupcopy=yes or a 'save' in place
        assert f.read() == old
        f.seek(0)
        f.write(new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_same_size_edit_within_the_clock_tick_after_a_save_is_recorded(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    bp = store.save("note", "value: 1\n")
    assert watcher.wait_idle(10)
    recorder.take()
    path = store.root / "note.blueprint.yaml"
    _edit_keeping_size_and_mtime(path, b"value: 1\n", b"value: 2\n")
    assert watcher.wait_idle(10)
    assert store.load(bp.id).content == "value: 2\n"
    assert [(e.kind, e.origin) for e in recorder.take()] == [("modified", "external")]
    assert [r.rev for r in store.history(bp.id)] == [2, 1]


def test_a_meta_edited_alone_within_the_clock_tick_is_recorded(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    bp = store.save("note", "value: 1\n", description="abc")
    assert watcher.wait_idle(10)
    recorder.take()
    meta = store.root / "note.blueprint.meta.json"
    raw = meta.read_bytes()
    _edit_keeping_size_and_mtime(meta, raw, raw.replace(b'"abc"', b'"xyz"'))
    assert watcher.wait_idle(10)
    assert store.load(bp.id).meta.description == "xyz"
    assert [(e.kind, e.origin) for e in recorder.take()] == [("modified", "external")]


def test_a_rescan_records_a_same_stat_replacement(store: BlueprintStore, make_watcher) -> None:
    """The rescan (start, periodic, after an overflow: when no event told of the change)
    compared size and mtime only, and passed such a version by for good."""
    bp = store.save("note", "value: 1\n")
    watcher = make_watcher(store)  # not started: rescan() applies at once
    replace_keeping_stat(store.root / "note.blueprint.yaml", "value: 2\n")
    report = watcher.rescan()
    assert report.changed == 1
    assert [(r.rev, r.origin) for r in store.history(bp.id)] == [(2, "external"), (1, "local")]
    assert store.load_revision(bp.id, 2).content == "value: 2\n"
    assert watcher.rescan().changed == 0  # its stats are recorded: nothing read again
