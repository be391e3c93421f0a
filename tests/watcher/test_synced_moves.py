"""A blueprint moved (and edited) on another device, brought here by a file-sync tool.

Syncthing (and other sync clients) apply a rename as "write the pair at its new path, then delete
the old pair", the delete often well past the watcher's settle window. The new pair was taken at
once: its meta's id was still live at the old path, whose meta still held it, so the copy rule
gave it a new id and rewrote its meta; the old id was then recorded deleted. History split, sync
pushed a delete and a create, and the rewritten meta went back to the other device.

Real files, a running watcher, real inotify events; the files are put down the way Syncthing
does it (a hidden ``.syncthing.*.tmp`` with the other device's mtime, renamed into place).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import localstore
from localstore.blueprint import Blueprint
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder

OLD, NEW = "n/plan", "m/plan"
YAML, META = ".blueprint.yaml", ".blueprint.meta.json"
# Wide enough that the old pair's delete, 0.3 s after the new pair (well past the 40 ms settle
# window that used to decide), falls inside it on a loaded machine.
GRACE_MS = 1500
# Imports first, says so, then opens the store when told (a line on its stdin).
_OPEN = (
    "import sys, localstore; print('ready', flush=True); sys.stdin.readline(); "
    "localstore.open(home=sys.argv[1]).close()"
)


def _syncthing_put(root: Path, rel: str, data: bytes) -> None:
    """Put a file down as Syncthing does: a temp with the other device's (older) mtime,
    renamed over the name."""
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".syncthing.{target.name}.tmp"
    tmp.write_bytes(data)
    old = time.time() - 3600
    os.utime(tmp, (old, old))
    os.rename(tmp, target)


def _watching_old_pair(
    store: BlueprintStore,
    make_watcher,
    recorder: Recorder,
    *,
    tags: Sequence[str] | None = None,
    **watcher_kwargs: int,
) -> tuple[Blueprint, Watcher]:
    """The old pair saved, the new pair's folder made (Syncthing makes the folder first, so it
    is watched before the pair comes) and a watcher with the wide ``GRACE_MS`` running, its
    start's events taken: the set-up of every synced move here."""
    bp = store.save(OLD, "v: 1\n", tags=tags)
    (store.root / "m").mkdir()
    watcher: Watcher = make_watcher(store, **{"delete_grace_ms": GRACE_MS, **watcher_kwargs})
    watcher.start()
    assert watcher.wait_idle(30)
    recorder.take()
    return bp, watcher


@contextlib.contextmanager
def _command_in_another_process(home: Path) -> Iterator[Callable[[], None]]:
    """A command in another process (the CLI beside the daemon), started and its imports done;
    the call it yields makes it open the store (its open reconciles, beside this process's
    watcher) and waits for it to finish.

    Started before the files its open is to find: started after them, its interpreter's start
    (3 s on a loaded machine) put the open past the watcher's write_quiet (1 s) or delete
    grace, where the files are no longer the watcher's to judge, and the tests failed under
    load for what they did not test."""
    child = subprocess.Popen(
        [sys.executable, "-c", _OPEN, str(home)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None

    def open_now() -> None:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.close()
        assert child.wait(timeout=120) == 0

    try:
        assert child.stdout.readline() == "ready\n"
        yield open_now
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=120)
        child.stdout.close()
        if child.stdin and not child.stdin.closed:
            child.stdin.close()


@pytest.mark.parametrize(
    ("edited", "first_new", "first_gone"),
    [(True, YAML, YAML), (True, META, META), (False, YAML, META)],
    ids=["edited-yaml-first", "edited-meta-first", "unchanged"],
)
def test_a_move_a_sync_tool_applies_as_create_then_delete_keeps_the_identity(
    store: BlueprintStore,
    make_watcher,
    recorder: Recorder,
    edited: bool,
    first_new: str,
    first_gone: str,
) -> None:
    bp, watcher = _watching_old_pair(store, make_watcher, recorder, tags=["mine"])
    root = store.root
    # The other device moved n/plan to m/plan (and edited it): same id, its own 'modified'.
    meta = json.loads((root / (OLD + META)).read_bytes())
    meta["modified"] = "2026-11-24T15:00:00.000000Z"
    files = {
        YAML: b"v: 2\n" if edited else (root / (OLD + YAML)).read_bytes(),
        META: json.dumps(meta, indent=2).encode(),
    }
    second_new = META if first_new == YAML else YAML
    for suffix in (first_new, second_new):
        _syncthing_put(root, NEW + suffix, files[suffix])
    time.sleep(0.3)  # (Syncthing deletes at the end of its pull, after the new files)
    second_gone = META if first_gone == YAML else YAML
    for suffix in (first_gone, second_gone):
        os.unlink(root / (OLD + suffix))
    assert watcher.wait_idle(30)

    events = [(e.kind, e.id, e.path) for e in recorder.take()]
    moved = [("moved", bp.id, NEW + YAML)]
    assert events == moved + ([("modified", bp.id, NEW + YAML)] if edited else [])
    info = store.resolve(NEW)
    assert (info.id, info.tags) == (bp.id, ("mine",))
    assert store.load(bp.id).content == files[YAML].decode()
    history = [(r.path, store.load_revision(bp.id, r.rev).content) for r in store.history(bp.id)]
    assert history[-1] == (OLD + YAML, "v: 1\n")
    assert history[0] == (NEW + YAML, files[YAML].decode())
    # The arriving meta is left as it came (not rewritten, so nothing syncs back).
    assert (root / (NEW + META)).read_bytes() == files[META]
    recovered = store.paths.data / "recovered"
    assert not recovered.exists() or not any(recovered.rglob("*"))
    assert store.check().clean


def test_a_copy_still_gets_a_new_id_once_the_original_has_stayed(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    """``cp -r n m`` and both stay: the copy waits out the delete grace, then gets a new id."""
    bp = store.save(OLD, "v: 1\n")
    assert watcher.wait_idle()
    recorder.take()
    shutil.copytree(store.root / "n", store.root / "m")
    assert watcher.wait_idle()
    events = recorder.take()
    assert [(e.kind, e.path) for e in events] == [("created", NEW + YAML)]
    copy = events[0].id
    assert copy != bp.id
    assert json.loads((store.root / (NEW + META)).read_bytes())["id"] == copy
    assert store.resolve(OLD).id == bp.id
    # The original deleted later (past the grace): a delete of its own id; the copy stays.
    shutil.rmtree(store.root / "n")
    assert watcher.wait_idle()
    assert [(e.kind, e.id) for e in recorder.take()] == [("deleted", bp.id)]
    assert store.resolve(NEW).id == copy
    assert store.check().clean


def test_a_command_opening_the_store_while_the_pair_arrives_leaves_it_to_the_watcher(
    store: BlueprintStore, make_watcher, recorder: Recorder, home: Path
) -> None:
    """A command's open (the CLI beside the daemon) between the arriving meta and its YAML:
    the meta, alone and its id live at the old path, was taken for a hand-edited copy and moved
    to data/recovered (``check``: ``edit-kept``); its YAML then came alone and got a new id."""
    bp, watcher = _watching_old_pair(store, make_watcher, recorder)
    root = store.root
    with _command_in_another_process(home) as open_there:
        _syncthing_put(root, NEW + META, (root / (OLD + META)).read_bytes())
        open_there()  # (within the watcher's write_quiet of the meta's arrival)
    assert (root / (NEW + META)).exists()
    _syncthing_put(root, NEW + YAML, b"v: 2\n")
    time.sleep(0.3)
    for suffix in (YAML, META):
        os.unlink(root / (OLD + suffix))
    assert watcher.wait_idle(30)
    events = [(e.kind, e.id) for e in recorder.take()]
    assert events == [("moved", bp.id), ("modified", bp.id)]
    assert store.resolve(NEW).id == bp.id
    assert store.check().clean


def test_a_command_opening_the_store_within_the_delete_grace_leaves_the_move_to_the_watcher(
    store: BlueprintStore, make_watcher, recorder: Recorder, home: Path
) -> None:
    """A command's open while the moved pair is held (both files in place, older than the
    watcher's write_quiet but younger than its delete grace, the old pair still there) took it
    for a copy: a new id written into the arriving meta, and the old id recorded deleted once
    the old pair went. It is the watcher's: its copy hold decides when the grace is over."""
    bp, watcher = _watching_old_pair(
        store, make_watcher, recorder, delete_grace_ms=4000, write_quiet_ms=100
    )
    root = store.root
    files = {s: (root / (OLD + s)).read_bytes() for s in (YAML, META)}
    with _command_in_another_process(home) as open_there:
        for suffix, data in files.items():
            _syncthing_put(root, NEW + suffix, data)
        time.sleep(0.2)  # (past the watcher's write_quiet: the open used to decide then)
        open_there()  # (and within its delete grace)
    assert (root / (NEW + META)).read_bytes() == files[META]
    for suffix in (YAML, META):
        os.unlink(root / (OLD + suffix))
    assert watcher.wait_idle(30)
    assert [(e.kind, e.id, e.path) for e in recorder.take()] == [("moved", bp.id, NEW + YAML)]
    assert store.check().clean


def test_a_copy_taken_back_as_the_old_id_would_bounce_between_devices(tmp_path: Path) -> None:
    """Why a late delete is not turned back into a move (docs/watcher.md, "Limit"): the copy's
    rewritten meta (new id) reaches the other device, which takes the new id and deletes the old
    one; the old id's meta written back here and carried there is put back to the new id at
    once, and would be carried back here again. The split as it is converges on the new id."""
    device_a, device_b = tmp_path / "a", tmp_path / "b"
    a = localstore.open(home=device_a)
    old = a.save(OLD, "v: 1\n").id
    a.close()
    shutil.copytree(device_a, device_b)  # (both devices hold the pair and know its id)
    a = localstore.open(home=device_a)
    a.move(old, NEW)  # (the move made on device A)
    a.close()
    root_a, root_b = device_a / "blueprints", device_b / "blueprints"
    (root_b / "m").mkdir()
    for suffix in (YAML, META):  # B's sync tool writes the new pair; the old one stays a while
        shutil.copy2(root_a / (NEW + suffix), root_b / (NEW + suffix))
    b = localstore.open(home=device_b)
    copy = b.resolve(NEW).id
    b.close()
    assert copy != old
    shutil.copy2(root_b / (NEW + META), root_a / (NEW + META))  # carried back to A
    a = localstore.open(home=device_a)
    assert a.resolve(NEW).id == copy  # A takes the new id: converged
    a.close()
    taken_back = {**json.loads((root_a / (NEW + META)).read_bytes()), "id": old}
    (root_a / (NEW + META)).write_text(json.dumps(taken_back))  # B's meta turned back, carried
    a = localstore.open(home=device_a)
    assert a.resolve(NEW).id == copy
    a.close()
    assert json.loads((root_a / (NEW + META)).read_bytes())["id"] == copy  # and back it goes


def test_a_moved_pair_whose_meta_comes_late_retires_the_made_up_id_with_a_reason(
    store: BlueprintStore, make_watcher, recorder: Recorder
) -> None:
    """The sync tool brings the moved pair's meta after the watcher's write_quiet (the YAML got
    a made-up id), while the old pair is still there: the copy hold lets the old pair go, and
    the move takes the path. The made-up id was recorded deleted for no reason given (a UI
    showed a file deleted for nothing), where a lone YAML's own meta come late retires it
    naming the id that replaced it (docs/watcher.md, "A meta that comes later still")."""
    bp, watcher = _watching_old_pair(store, make_watcher, recorder)
    root = store.root
    _syncthing_put(root, NEW + YAML, b"v: 1\n")
    assert watcher.wait_idle(30)  # (the lone YAML, 1 s old, gets a made-up id)
    made_up = [e.id for e in recorder.take() if e.kind == "created"]
    assert len(made_up) == 1
    _syncthing_put(root, NEW + META, (root / (OLD + META)).read_bytes())
    time.sleep(0.3)
    for suffix in (YAML, META):
        os.unlink(root / (OLD + suffix))
    assert watcher.wait_idle(30)
    events = [(e.kind, e.id, e.path, bp.id in e.detail) for e in recorder.take()]
    assert events == [
        ("deleted", made_up[0], NEW + YAML, True),
        ("moved", bp.id, NEW + YAML, False),
    ]
    assert store.resolve(NEW).id == bp.id
    assert store.check().clean


def _ids(store: BlueprintStore) -> list[str]:
    """Every id the index holds, deleted ones too."""
    with store.index.read() as cur:
        return [str(r[0]) for r in cur.execute("SELECT id FROM blueprints").fetchall()]


def test_a_command_opening_the_store_between_the_old_pairs_two_deletes_makes_up_no_id(
    store: BlueprintStore, make_watcher, recorder: Recorder, home: Path
) -> None:
    """A sync tool deletes the old pair file by file, its meta first. A command's open in
    between took the old YAML, now alone, for a new blueprint: a made-up id, a meta written
    beside it (which the sync tool could carry to the other device), recorded deleted once
    the YAML went; sync pushed both. A YAML whose meta went within the grace is the watcher's."""
    bp, watcher = _watching_old_pair(
        store, make_watcher, recorder, delete_grace_ms=4000, write_quiet_ms=100
    )
    root = store.root
    with _command_in_another_process(home) as open_there:
        for suffix in (YAML, META):
            _syncthing_put(root, NEW + suffix, (root / (OLD + suffix)).read_bytes())
        time.sleep(0.2)  # (past the watcher's write_quiet: the open records the move itself)
        os.unlink(root / (OLD + META))
        open_there()  # (within the watcher's delete grace of the meta's delete)
    assert not (root / (OLD + META)).exists()
    os.unlink(root / (OLD + YAML))
    assert watcher.wait_idle(30)
    assert all(e.id == bp.id for e in recorder.take())
    assert _ids(store) == [bp.id]
    assert store.resolve(NEW).id == bp.id
    assert store.check().clean


@pytest.mark.parametrize("edited", [False, True], ids=["unchanged", "edited"])
def test_a_move_a_sync_tool_applies_as_delete_then_create_brings_the_blueprint_back(
    store: BlueprintStore, make_watcher, recorder: Recorder, edited: bool
) -> None:
    """The other order, slowly: the old pair is deleted first and recorded deleted (its grace
    over), then the pair arrives at its new path, its meta naming the deleted blueprint. It is
    that blueprint back at the new path (id, tags and history kept, one revision recording the
    move), not a new blueprint; the arriving meta is left as it came."""
    bp, watcher = _watching_old_pair(store, make_watcher, recorder, tags=["mine"])
    root = store.root
    files = {suffix: (root / (OLD + suffix)).read_bytes() for suffix in (YAML, META)}
    if edited:
        files[YAML] = b"v: 2\n"
    for suffix in (YAML, META):
        os.unlink(root / (OLD + suffix))
    assert watcher.wait_idle(30)
    assert [(e.kind, e.id) for e in recorder.take()] == [("deleted", bp.id)]
    for suffix in (YAML, META):
        _syncthing_put(root, NEW + suffix, files[suffix])
    assert watcher.wait_idle(30)

    assert [(e.kind, e.id, e.path) for e in recorder.take()] == [("created", bp.id, NEW + YAML)]
    info = store.resolve(NEW)
    assert (info.id, info.tags) == (bp.id, ("mine",))
    assert store.load(bp.id).content == files[YAML].decode()
    history = [(r.path, r.deleted) for r in reversed(store.history(bp.id))]
    assert history == [(OLD + YAML, False), (OLD + YAML, True), (NEW + YAML, False)]
    assert (root / (NEW + META)).read_bytes() == files[META]
    assert _ids(store) == [bp.id]
    assert store.check().clean


def test_a_meta_of_a_deleted_blueprint_coming_after_its_yaml_retires_the_made_up_id(
    store: BlueprintStore, make_watcher, recorder: Recorder
) -> None:
    """The old pair deleted and recorded so; the new YAML comes alone and gets a made-up id
    (past the watcher's write_quiet); then its meta, naming the deleted blueprint, comes: the
    made-up id is retired and the deleted blueprint is back at the path with its id."""
    bp, watcher = _watching_old_pair(store, make_watcher, recorder, tags=["mine"])
    root = store.root
    files = {suffix: (root / (OLD + suffix)).read_bytes() for suffix in (YAML, META)}
    shutil.rmtree(root / "n")
    assert watcher.wait_idle(30)
    assert [(e.kind, e.id) for e in recorder.take()] == [("deleted", bp.id)]
    _syncthing_put(root, NEW + YAML, files[YAML])
    assert watcher.wait_idle(30)
    made_up = [e.id for e in recorder.take() if e.kind == "created"]
    assert len(made_up) == 1 and made_up[0] != bp.id
    _syncthing_put(root, NEW + META, files[META])
    assert watcher.wait_idle(30)
    events = [(e.kind, e.id, bp.id in e.detail) for e in recorder.take()]
    assert events == [("deleted", made_up[0], True), ("created", bp.id, False)]
    assert (store.resolve(NEW).id, store.resolve(NEW).tags) == (bp.id, ("mine",))
    assert store.check().clean
