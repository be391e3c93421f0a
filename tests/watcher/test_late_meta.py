"""A YAML whose meta file comes later than the lone YAML's wait (a sync client that pulls the
YAML seconds before its meta, ``cp *.yaml`` then ``cp *.meta.json``, a big unzip): the store has
already given it an id and written a meta of its own when the real meta lands over that one.

The arriving meta is the blueprint's identity: one blueprint with its id, name, tags and created
time is kept. The id the store made up is retired (a delete of it, which sync pushes only if it
had pushed that id, so no ghost is left on the server). What happened to the blueprint in between
is not lost: an edit of its YAML carries on under the arriving id, after the version that arrived
(so sync finds the server's version in its history and merges the edit cleanly); a name, tags or
description the user gave the made-up identity keep that blueprint beside the arriving one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder

YAML = "x.blueprint.yaml"
META = "x.blueprint.meta.json"


def _pair_from_another_store(tmp_path: Path) -> tuple[str, bytes, bytes]:
    with localstore.open(home=tmp_path / "other", maintenance=False) as other:
        bp = other.save("x", "steps: [x]\n", tags=["from-a"], description="made on A")
        return bp.id, (other.root / YAML).read_bytes(), (other.root / META).read_bytes()


def _yaml_alone(store: BlueprintStore, watcher: Watcher, recorder: Recorder, data: bytes) -> str:
    """Put the YAML down alone and let the watcher give it a meta of its own; its id."""
    (store.root / YAML).write_bytes(data)
    assert watcher.wait_idle(30)  # (waits out the lone YAML's wait: it is pending until then)
    made_up = str(json.loads((store.root / META).read_bytes())["id"])
    assert [(e.kind, e.id) for e in recorder.take()] == [("created", made_up)]
    return made_up


def test_a_late_meta_is_adopted_and_the_made_up_id_retired(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    bp_id, yaml_bytes, meta_bytes = _pair_from_another_store(tmp_path)
    made_up = _yaml_alone(store, watcher, recorder, yaml_bytes)
    (store.root / META).write_bytes(meta_bytes)
    assert watcher.wait_idle(30)
    events = recorder.take()
    assert [(e.kind, e.id) for e in events] == [("deleted", made_up), ("created", bp_id)]
    # The delete says why, so a UI or `localstore watch` does not show a file deleted for nothing.
    assert bp_id in events[0].detail and "meta" in events[0].detail
    [info] = store.list()
    assert (info.id, info.path) == (bp_id, YAML)
    bp = store.load(bp_id)
    assert bp.meta.tags == ("from-a",) and bp.meta.description == "made on A"
    assert (store.root / META).read_bytes() == meta_bytes
    assert [(r.rev, r.deleted) for r in store.history(bp_id)] == [(1, False)]


def test_an_edit_made_before_the_meta_came_follows_the_version_that_arrived(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    """The YAML is edited while it has the made-up id. The arriving id's history holds the
    version that arrived, then the edit: sync then finds the server's version of that id in this
    device's history and pushes the edit on it, instead of merging without a base (a conflict
    copy of the user's own edit on every device). Before, the history began with the edit."""
    bp_id, yaml_bytes, meta_bytes = _pair_from_another_store(tmp_path)
    made_up = _yaml_alone(store, watcher, recorder, yaml_bytes)
    edited = yaml_bytes + b"# edited here before the meta came\n"
    (store.root / YAML).write_bytes(edited)
    assert watcher.wait_idle(30)
    assert [(e.kind, e.id) for e in recorder.take()] == [("modified", made_up)]
    (store.root / META).write_bytes(meta_bytes)
    assert watcher.wait_idle(30)
    assert [(e.kind, e.id) for e in recorder.take()] == [
        ("deleted", made_up),
        ("created", bp_id),
        ("modified", bp_id),
    ]
    assert [i.id for i in store.list()] == [bp_id]
    assert (store.root / YAML).read_bytes() == edited  # the user's file is left as it is
    assert store.load(bp_id).content.encode() == edited
    assert [(r.rev, r.deleted) for r in store.history(bp_id)] == [(2, False), (1, False)]
    assert store.load_revision(bp_id, 1).content.encode() == yaml_bytes
    # The made-up id keeps its own history (nothing is lost), deleted.
    assert [(r.rev, r.deleted) for r in store.history(made_up)] == [
        (3, True),
        (2, False),
        (1, False),
    ]


def test_a_made_up_identity_the_user_described_is_kept_beside_the_arriving_one(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder, tmp_path: Path
) -> None:
    """The app tagged and renamed the blueprint while it had the made-up id; then its meta came.
    Both are kept: the arriving identity at the path, the described one as a copy beside it
    (its id, name, tags and content), and the copy's event says why."""
    bp_id, yaml_bytes, meta_bytes = _pair_from_another_store(tmp_path)
    made_up = _yaml_alone(store, watcher, recorder, yaml_bytes)
    store.save(YAML, None, id=made_up, tags=["mine"], name="My plan")
    assert watcher.wait_idle(30)
    recorder.take()
    (store.root / META).write_bytes(meta_bytes)
    assert watcher.wait_idle(30)
    events = recorder.take()
    assert sorted((e.kind, e.id) for e in events) == sorted(
        [("moved", made_up), ("created", bp_id)]
    )
    moved = next(e for e in events if e.kind == "moved")
    assert moved.old_path == YAML and bp_id in moved.detail
    by_id = {i.id: i for i in store.list()}
    assert set(by_id) == {bp_id, made_up}
    assert by_id[bp_id].path == YAML
    mine = store.load(made_up)
    assert (mine.meta.name, mine.meta.tags) == ("My plan", ("mine",))
    assert mine.content.encode() == yaml_bytes
    copy_meta = store.root / mine.path.replace(".blueprint.yaml", ".blueprint.meta.json")
    assert json.loads(copy_meta.read_bytes())["id"] == made_up
    assert store.load(bp_id).meta.tags == ("from-a",)
    assert (store.root / META).read_bytes() == meta_bytes


def test_a_home_copied_piecewise_adopts_the_metas_at_the_next_open(
    home: Path, make_store, tmp_path: Path
) -> None:
    """No watcher: the YAMLs were copied first and the store opened (its reconcile gave each a
    meta), then the metas were copied and the store opened again."""
    bp_id, yaml_bytes, meta_bytes = _pair_from_another_store(tmp_path)
    first = make_store()
    (first.root / YAML).write_bytes(yaml_bytes)
    first.close()
    second = make_store()
    [made_up] = [i.id for i in second.list()]
    edited = yaml_bytes + b"# edited\n"
    (second.root / YAML).write_bytes(edited)
    second.close()
    third = make_store()
    assert [i.id for i in third.list()] == [made_up]
    third.close()
    (home / "blueprints" / META).write_bytes(meta_bytes)
    last = make_store()
    assert [i.id for i in last.list()] == [bp_id]
    assert [r.rev for r in last.history(bp_id)] == [2, 1]
    assert last.load_revision(bp_id, 1).content.encode() == yaml_bytes
    assert last.load(bp_id).content.encode() == edited


def test_a_meta_landing_while_reconcile_writes_one_is_not_replaced(
    make_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tool's meta lands between reconcile's read (no meta) and its write of a made-up one.
    That write replaced it: the real id was gone for good, and the blueprint lived on under the
    made-up one (a duplicate of the other device's, once synced)."""
    bp_id, yaml_bytes, meta_bytes = _pair_from_another_store(tmp_path)
    store = make_store()
    (store.root / YAML).write_bytes(yaml_bytes)
    real_prepare = BlueprintStore._prepare

    def prepare(self: BlueprintStore, rel: str, content: Any, meta: Any, *rest: Any) -> Any:
        prepared = real_prepare(self, rel, content, meta, *rest)
        if not (self.root / META).exists():
            (self.root / META).write_bytes(meta_bytes)  # (the tool's write, injected here)
        return prepared

    monkeypatch.setattr(BlueprintStore, "_prepare", prepare)
    store.check(fix=True)
    monkeypatch.undo()
    assert (store.root / META).read_bytes() == meta_bytes
    assert [i.id for i in store.list()] == [bp_id]
    assert [r.rev for r in store.history(bp_id)] == [1]
    assert not [p for p in store.root.iterdir() if p.name.endswith(".lstmp")]


def test_a_copy_of_a_live_pair_put_over_a_made_up_one_is_not_its_meta_come_late(
    make_store,
) -> None:
    """The user copies another blueprint's pair (YAML and meta) over a YAML typed in an editor
    (its meta made up by the store). That meta is a live pair's: the copy gets a new id, as any
    copy. It was taken for the typed YAML's own meta come late: the copy's history began with
    the typed YAML (another blueprint's text as its first revision), and the typed one's delete
    said its own meta had come and made it the copy."""
    store = make_store()
    other = store.save("b", "steps: [b]\n")
    (store.root / YAML).write_bytes(b"steps: [typed]\n")
    store.check(fix=True)
    [typed] = [i.id for i in store.list() if i.path == YAML]
    recorder = Recorder()
    store.subscribe(recorder)
    (store.root / YAML).write_bytes((store.root / "b.blueprint.yaml").read_bytes())
    (store.root / META).write_bytes((store.root / "b.blueprint.meta.json").read_bytes())
    store.check(fix=True)
    [copy] = [i.id for i in store.list() if i.path == YAML]
    assert copy not in (typed, other.id)
    events = recorder.take()
    assert [(e.kind, e.id) for e in events] == [("deleted", typed), ("created", copy)]
    assert "meta" not in events[0].detail
    assert [(r.rev, store.load_revision(copy, r.rev).content) for r in store.history(copy)] == [
        (1, "steps: [b]\n")
    ]
    assert store.load(other.id).path == "b.blueprint.yaml"


_KILL_AT_KEEP_BESIDE = """
import os, signal, sys
from pathlib import Path
from localstore import files
from localstore.config import load_settings
from localstore.store import BlueprintStore

real = files.PendingWrites.commit

def write_then_die(self):
    real(self)
    if any("(kept " in path for path in self.placed):
        os.kill(os.getpid(), signal.SIGKILL)  # the kept pair is on disk, nothing recorded

files.PendingWrites.commit = write_then_die
BlueprintStore(load_settings(home=Path(sys.argv[1]), environ={}))  # its reconcile keeps beside
"""


def _described_then_meta(make_store: Any, tmp_path: Path) -> tuple[str, str, bytes]:
    """A made-up blueprint the user named and tagged, its own meta come late over it (not yet
    recorded, the store closed); (the arriving id, the made-up id, the meta)."""
    bp_id, yaml_bytes, meta_bytes = _pair_from_another_store(tmp_path)
    store = make_store()
    (store.root / YAML).write_bytes(yaml_bytes)
    store.check(fix=True)
    [made_up] = [i.id for i in store.list()]
    store.save(YAML, None, id=made_up, tags=["mine"], name="My plan")
    store.close()
    (store.root / META).write_bytes(meta_bytes)
    return bp_id, made_up, meta_bytes


@pytest.mark.parametrize("killed", [False, True], ids=["uninterrupted", "killed"])
def test_a_kill_while_keeping_beside_is_recovered_with_the_same_explanation(
    home: Path, make_store: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, killed: bool
) -> None:
    """Keeping a described made-up blueprint beside the arriving one writes the kept pair, then
    records it. Killed in between, the next reconcile found the pair moved to the kept name and
    recorded a plain move: no WARNING, no ``late-meta`` problem, a ``moved`` event with no
    detail. Nothing said why the user's blueprint had moved, nor to merge the two. The recovery
    now says what the uninterrupted path says."""
    bp_id, made_up, meta_bytes = _described_then_meta(make_store, tmp_path)
    if killed:
        child = subprocess.run(
            [sys.executable, "-c", _KILL_AT_KEEP_BESIDE, str(home)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
            timeout=120,
        )
        assert child.returncode == -signal.SIGKILL
        kept = [p.name for p in (home / "blueprints").iterdir() if "(kept " in p.name]
        assert len(kept) == 2  # (both files of the kept pair, nothing recorded)
    store = make_store(reconcile=False)
    assert [i.id for i in store.list()] == [made_up]
    recorder = Recorder()
    store.subscribe(recorder)
    with caplog.at_level("WARNING", logger="localstore.reconcile"):
        report = store.check(fix=True)
    by_id = {i.id: i for i in store.list()}
    assert set(by_id) == {bp_id, made_up}
    kept_path = by_id[made_up].path
    assert by_id[bp_id].path == YAML and kept_path == f"x (kept {made_up[:8]}).blueprint.yaml"
    events = recorder.take()
    assert sorted((e.kind, e.id) for e in events) == sorted(
        [("moved", made_up), ("created", bp_id)]
    )
    moved = next(e for e in events if e.kind == "moved")
    assert moved.old_path == YAML and moved.path == kept_path
    assert bp_id in moved.detail and "merge them" in moved.detail
    [problem] = [p for p in report.problems if p["kind"] == "late-meta"]
    assert problem["path"] == kept_path and problem["detail"] == moved.detail
    assert moved.detail in caplog.text
    assert [(r.rev, r.origin, r.path, r.deleted) for r in store.history(made_up)] == [
        (3, "external", kept_path, False),
        (2, "local", YAML, False),
        (1, "external", YAML, False),
    ]
    mine = store.load(made_up)
    assert (mine.meta.name, mine.meta.tags) == ("My plan", ("mine",))
    assert (store.root / META).read_bytes() == meta_bytes
    assert store.check().problems == []  # (said once, in the pass that kept it beside)
