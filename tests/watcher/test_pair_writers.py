"""Tools that write a pair file by file (unzip, scp, a git checkout or rebase) put the YAML down a
moment before its meta. The watcher ingested the lone YAML after the settle window: it got a new
id and a meta written by the watcher, the tool's meta then replaced that one, and the store
recorded a junk blueprint created and deleted (sync pushes both) before the real one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import localstore
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder


def _pair_from_another_store(tmp_path: Path) -> tuple[str, bytes, bytes]:
    with localstore.open(home=tmp_path / "other", maintenance=False) as other:
        bp = other.save("x", "steps: [x]\n")
        root = other.root
        return (
            bp.id,
            (root / "x.blueprint.yaml").read_bytes(),
            (root / "x.blueprint.meta.json").read_bytes(),
        )


def test_yaml_written_before_its_meta_keeps_the_meta_id_and_makes_no_junk(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    bp_id, yaml_bytes, meta_bytes = _pair_from_another_store(tmp_path)
    (store.root / "x.blueprint.yaml").write_bytes(yaml_bytes)
    time.sleep(0.2)  # the tool's next file; far longer than the settle window
    (store.root / "x.blueprint.meta.json").write_bytes(meta_bytes)
    assert watcher.wait_idle(10)
    assert [(e.kind, e.id) for e in recorder.take()] == [("created", bp_id)]
    assert [i.id for i in store.list()] == [bp_id]
    assert json.loads((store.root / "x.blueprint.meta.json").read_bytes())["id"] == bp_id


def _put_as_a_sync_tool(root: Path, name: str, data: bytes, mtime_ns: int) -> None:
    """Write ``name`` as Syncthing, Dropbox or ``rsync -t`` do: a hidden temp file given the
    source's modification time, renamed into place."""
    temp = root / f".syncthing.{name}.tmp"
    temp.write_bytes(data)
    os.utime(temp, ns=(mtime_ns, mtime_ns))
    os.replace(temp, root / name)


def test_yaml_synced_before_its_meta_with_the_source_mtime_makes_no_junk(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    """A sync tool gives each file the other device's (older) modification time, and pulls a
    pair's files in any order. The lone YAML's wait for its meta measured the YAML's age by its
    mtime: an hour "old", it was ingested at once with a new id and a meta written by the
    watcher, which the tool's meta then replaced (created, deleted, created; the tool, finding a
    file it did not write in its way, made a conflict copy of one of the two metas)."""
    bp_id, yaml_bytes, meta_bytes = _pair_from_another_store(tmp_path)
    an_hour_ago = time.time_ns() - 3600 * 10**9
    _put_as_a_sync_tool(store.root, "x.blueprint.yaml", yaml_bytes, an_hour_ago)
    time.sleep(0.2)  # the tool's next file; far longer than the settle window
    _put_as_a_sync_tool(store.root, "x.blueprint.meta.json", meta_bytes, an_hour_ago)
    assert watcher.wait_idle(10)
    assert [(e.kind, e.id) for e in recorder.take()] == [("created", bp_id)]
    assert [i.id for i in store.list()] == [bp_id]
    assert (store.root / "x.blueprint.meta.json").read_bytes() == meta_bytes


def test_yaml_synced_from_a_device_whose_clock_is_ahead_makes_no_junk(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    """The other device's clock is ahead (by more than the transfer took): the synced YAML's
    mtime is in this machine's future. Its age, counted from the later of mtime and ctime, was
    negative, which the wait takes for "no age to trust": the lone YAML was ingested at once,
    the same junk blueprint as with an older mtime. A future mtime says nothing of when the file
    changed here; its status change does."""
    bp_id, yaml_bytes, meta_bytes = _pair_from_another_store(tmp_path)
    an_hour_ahead = time.time_ns() + 3600 * 10**9
    _put_as_a_sync_tool(store.root, "x.blueprint.yaml", yaml_bytes, an_hour_ahead)
    time.sleep(0.2)  # the tool's next file; far longer than the settle window
    _put_as_a_sync_tool(store.root, "x.blueprint.meta.json", meta_bytes, an_hour_ahead)
    assert watcher.wait_idle(10)
    assert [(e.kind, e.id) for e in recorder.take()] == [("created", bp_id)]
    assert [i.id for i in store.list()] == [bp_id]
    assert (store.root / "x.blueprint.meta.json").read_bytes() == meta_bytes
