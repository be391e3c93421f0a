"""Every public path that judges a blueprint runs the app's validator outside the index's write
lock: one case per path (a save, an import, a restore, reconcile, the watcher, a sync pass, a
conflict's resolution, ...).

The validator is the app's code and may be slow or hang; run while the calling thread holds the
write transaction, it holds every other process's writes to the home (the daemon, the CLI,
another app) for as long as it runs. The probe (tests/store/validator_probe.py) records, at each
call, whether the calling thread held the lock. Each case also asserts that the document it
makes was judged at all, so a path that stopped judging cannot pass for one judged outside.
What is still judged inside, and why, is in docs/architecture.md ("The app's validator").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore import files as fs
from localstore.archive import export_bundle, import_bundle
from localstore.config import load_settings
from localstore.errors import ChangedOnDiskError
from localstore.store import BlueprintStore, SaveRequest
from localstore.watcher import Watcher
from sync.engine import SyncEngine
from sync.memory_remote import MemoryRemote, MemoryServer
from tests.store.validator_probe import LockProbe
from tests.sync_engine.conftest import Device, close_device, converge

# The document every case has judged: "ok: false" makes the probe report a problem, so the
# case can also check that the verdict reached the index.
BAD = {"v": "edited", "ok": False}
BAD_TEXT = "v: edited\nok: false\n"


@dataclass
class World:
    """The homes of one case: ``app`` judges with ``probe``; ``other`` devices sync beside it."""

    tmp_path: Path
    server: MemoryServer
    probe: LockProbe
    opened: list[Device]

    def device(self, name: str, *, judged: bool = False) -> Device:
        """A device of the same user; ``judged``: its store has the probe for validator."""
        home = self.tmp_path / name
        store = BlueprintStore(
            load_settings(home=home, device_name=name),
            maintenance=False,
            validator=self.probe if judged else None,
            validator_name="probe" if judged else None,
        )
        if judged:
            self.probe.watch(store)
        remote = MemoryRemote(self.server, user="u")
        dev = Device(name, home, store, remote, SyncEngine(store, remote))
        self.opened.append(dev)
        return dev

    def app(self) -> Device:
        return self.device("app", judged=True)

    def cli(self, home: Path) -> BlueprintStore:
        """Another process's store on ``home``, with no validator (the CLI): what it records is
        judged by none, so nothing this app remembers or its rows hold stands for it."""
        return BlueprintStore(load_settings(home=home), maintenance=False, reconcile=False)


def _edit_on_disk(store: BlueprintStore, rel: str, text: str) -> None:
    """An editor's save no watcher records: an mtime the index cannot hold."""
    path = store.abspath(rel if rel.endswith(".blueprint.yaml") else f"{rel}.blueprint.yaml")
    path.write_text(text, encoding="utf-8")
    _bump(path)


def _bump(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _recorded_by_cli(w: World, dev: Device, rel: str, text: str) -> str:
    """Save ``rel`` from another process without a validator; its id."""
    cli = w.cli(dev.home)
    try:
        return cli.save(rel, text).id
    finally:
        cli.close()


# -- the paths -------------------------------------------------------------------------------------


def save(w: World) -> None:
    w.app().store.save("a/one", BAD_TEXT)


def save_many_of_one_template(w: World) -> None:
    w.app().store.save_many([SaveRequest(f"t/{i}", BAD_TEXT) for i in range(3)])


def meta_only_save(w: World) -> None:
    app = w.app()
    _recorded_by_cli(w, app, "a/one", BAD_TEXT)
    app.store.save("a/one", None, description="described")


def move(w: World) -> None:
    app = w.app()
    _recorded_by_cli(w, app, "a/one", BAD_TEXT)
    app.store.move("a/one", "b/one")


def restore(w: World) -> None:
    app = w.app()
    _recorded_by_cli(w, app, "a/one", BAD_TEXT)
    _recorded_by_cli(w, app, "a/one", "v: 2\n")
    app.store.restore("a/one", 1)


def save_over_an_unrecorded_edit(w: World) -> None:
    app = w.app()
    app.store.save("a/one", "v: 1\n")
    _edit_on_disk(app.store, "a/one", BAD_TEXT)
    app.store.save("a/one", "v: 3\n")


def delete_of_an_unrecorded_edit(w: World) -> None:
    app = w.app()
    app.store.save("a/one", "v: 1\n")
    _edit_on_disk(app.store, "a/one", BAD_TEXT)
    app.store.delete("a/one")


def remote_save_over_an_unrecorded_edit(w: World) -> None:
    """What a sync pass's batched takes do, called on its own (save_many origin="remote")."""
    app = w.app()
    bp = app.store.save("a/one", "v: 1\n")
    _edit_on_disk(app.store, "a/one", BAD_TEXT)
    (refused,) = app.store.save_many(
        [SaveRequest("a/one", "v: remote\n", id=bp.id)], origin="remote"
    )
    assert isinstance(refused, ChangedOnDiskError)


def remote_save_meeting_a_file_created_during_it(w: World) -> None:
    """An editor creates a file at a name the remote batch found free, just before it places
    its files (the one fault injected: the editor's timing). The batch runs again, and that
    attempt records the file and refuses its item, inside its transaction."""
    app = w.app()
    target = app.store.abspath("d/n1.blueprint.yaml")
    real = fs.PendingWrites.commit
    calls: list[int] = []

    def commit(self: fs.PendingWrites, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            with open(target, "x", encoding="utf-8") as editor:  # (an editor's "save as")
                editor.write(BAD_TEXT)
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fs.PendingWrites, "commit", commit)
        results = app.store.save_many(
            [SaveRequest(f"d/n{i}.blueprint.yaml", "v: remote\n") for i in range(3)],
            origin="remote",
        )
    assert len(calls) == 2 and isinstance(results[1], ChangedOnDiskError)
    assert target.read_text(encoding="utf-8") == BAD_TEXT


def remote_delete_of_an_unrecorded_edit(w: World) -> None:
    app = w.app()
    app.store.save("a/one", "v: 1\n")
    _edit_on_disk(app.store, "a/one", BAD_TEXT)
    with pytest.raises(ChangedOnDiskError):
        app.store.delete("a/one", origin="remote")


def load_of_an_unrecorded_edit(w: World) -> None:
    app = w.app()
    app.store.save("a/one", "v: 1\n")
    _edit_on_disk(app.store, "a/one", BAD_TEXT)
    assert app.store.load("a/one").content == BAD_TEXT


def import_of_a_bundle(w: World) -> None:
    with localstore.open(home=w.tmp_path / "source", maintenance=False) as source:
        source.save_many([SaveRequest(f"t/{i}", BAD_TEXT) for i in range(3)])
        export_bundle(source, w.tmp_path / "b.zip")
    import_bundle(w.app().store, w.tmp_path / "b.zip")


def revalidate(w: World) -> None:
    app = w.app()
    _recorded_by_cli(w, app, "a/one", BAD_TEXT)
    app.store.revalidate(every=True)


def check_fix(w: World) -> None:
    app = w.app()
    app.store.save("a/one", "v: 1\n")
    _edit_on_disk(app.store, "a/one", BAD_TEXT)
    app.store.check(fix=True)


def reconcile_at_open(w: World) -> None:
    home = w.tmp_path / "app"
    with localstore.open(home=home, maintenance=False) as first:
        first.save("a/one", "v: 1\n")
        _edit_on_disk(first, "a/one", BAD_TEXT)
    w.app()  # its open reconciles the edit


def watcher_edit(w: World) -> None:
    app = w.app()
    app.store.save("a/one", "v: 1\n")
    _edit_on_disk(app.store, "a/one", BAD_TEXT)
    Watcher(app.store).rescan()


def watcher_meta_edit_of_a_blueprint_the_cli_recorded(w: World) -> None:
    """A hand edit of the meta file alone (a name typed in) of a blueprint another process
    recorded: the YAML is the one recorded, so the watcher judged nothing ahead, and its ingest
    judged that YAML inside (the row holds no verdict of this validator's)."""
    app = w.app()
    _recorded_by_cli(w, app, "a/one", BAD_TEXT)
    meta = app.store.abspath("a/one.blueprint.meta.json")
    meta.write_text(meta.read_text().replace('"name": "one"', '"name": "renamed"'))
    _bump(meta)
    Watcher(app.store).rescan()
    assert app.store.resolve("a/one").name == "renamed"


def sync_pull(w: World) -> None:
    writer = w.device("writer")
    writer.store.save_many([SaveRequest(f"t/{i}", BAD_TEXT) for i in range(3)])
    writer.sync()
    w.app().sync()


def sync_merge(w: World) -> dict[str, Any]:
    app, other = w.app(), w.device("other")
    app.store.save("a/doc", "x: 1\nw: 0\ny: 1\n")
    app.sync()
    other.sync()
    other.store.save("a/doc", "x: 1\nw: 0\ny: 2\n")
    other.sync()
    app.store.save("a/doc", "x: 2\nw: 0\ny: 1\n")
    assert app.sync().merged == 1
    return {"x": 2, "w": 0, "y": 2}  # the merge's result


def sync_path_taken(w: World) -> None:
    app, other = w.app(), w.device("other")
    other.store.save("p/x", "v: a\n")
    other.sync()
    app.store.save("p/x", BAD_TEXT)
    converge(app, other)


def sync_edit_found_unrecorded(w: World) -> None:
    app, other = w.app(), w.device("other")
    app.store.save("a/doc", "x: 1\nw: 0\ny: 1\n")
    app.sync()
    other.sync()
    other.store.save("a/doc", "x: 1\nw: 0\ny: 2\n")
    other.sync()
    _edit_on_disk(app.store, "a/doc", BAD_TEXT)
    app.sync()


def sync_vanished_row_over_an_unrecorded_edit(w: World) -> None:
    """The server purged a tombstone this device never pulled (the horizon moved past it): the
    full reconcile deletes what the server no longer has, and met an editor's unrecorded edit
    of it, which it ingested (judged) inside the pass's transaction."""
    app, other = w.app(), w.device("other")
    ident = app.store.save("h/gone", "v: 1\n").id
    app.sync()
    other.sync()
    other.store.delete(ident)
    other.sync()
    assert w.server.purge_tombstones("u") == 1
    _edit_on_disk(app.store, "h/gone", BAD_TEXT)
    assert app.sync().reset
    assert app.text(ident) == BAD_TEXT  # an edit beats a delete


def sync_pull_onto_an_unindexed_file(w: World) -> None:
    """An editor's new file, not indexed yet, at the path of a pulled row: the save of the row
    records it first (it is moved aside, a conflict), inside the pass's transaction."""
    app, other = w.app(), w.device("other")
    app.sync()
    other.store.save("p", "from: other\n")
    other.sync()
    (app.store.root / "p.blueprint.yaml").write_text(BAD_TEXT)  # no watcher here
    app.sync()
    (record,) = app.engine.conflicts()
    assert record.reason == "path_taken" and record.local == BAD_TEXT


def late_meta_of_a_described_blueprint(w: World) -> None:
    """A YAML copied alone got a meta made up for it, which the person then described; when
    its own meta comes, the described one is kept beside it under a path of its own (saved
    inside reconcile's transaction: it takes the verdict judged ahead on the same bytes)."""
    home = w.tmp_path / "app"
    with localstore.open(home=w.tmp_path / "source", maintenance=False) as source:
        source.save("x", BAD_TEXT)
        meta = (source.root / "x.blueprint.meta.json").read_bytes()
    app = w.app()
    (app.store.root / "x.blueprint.yaml").write_text(BAD_TEXT)
    app.store.reconcile()  # made up: a meta of its own
    app.store.save("x", None, description="mine")  # described
    close_device(w.opened.pop())
    (home / "blueprints" / "x.blueprint.meta.json").write_bytes(meta)
    w.probe.calls.clear()
    app = w.app()  # (a new process: nothing remembered) its open reconciles the meta
    (kept,) = [i for i in app.store.list() if i.description == "mine"]
    assert kept.path != "x.blueprint.yaml" and not kept.valid


def _conflict(w: World) -> tuple[Device, Any]:
    app, other = w.app(), w.device("other")
    app.store.save("a/doc", "v: 1\n")
    app.sync()
    other.sync()
    other.store.save("a/doc", "v: theirs\n")
    other.sync()
    app.store.save("a/doc", "v: mine\n")
    app.sync()
    (record,) = app.engine.conflicts()
    assert record.copy_id is not None
    return app, record


def resolve_with_content(w: World) -> None:
    app, record = _conflict(w)
    app.engine.resolve_conflict(record.cid, content=BAD_TEXT)


def resolve_over_an_unrecorded_edit(w: World) -> None:
    """The blueprint was edited in an editor after the conflict (no watcher): the resolve
    reads it to say what it replaces, which records the edit, inside its transaction."""
    app, record = _conflict(w)
    _edit_on_disk(app.store, "a/doc", BAD_TEXT)
    resolved = app.engine.resolve_conflict(record.cid, content="v: both\n")
    assert resolved.replaced_rev is not None  # the edit's revision: history keeps it
    assert app.store.load_revision(record.id, resolved.replaced_rev).content == BAD_TEXT


def resolve_deleting_an_edited_copy(w: World) -> None:
    """Taking the remote side deletes the conflict copy, which an editor changed since: the
    delete records that edit first, inside the resolve's transaction."""
    app, record = _conflict(w)
    assert record.copy_path is not None
    _edit_on_disk(app.store, record.copy_path, BAD_TEXT)
    app.engine.resolve_conflict(record.cid, take="remote")


PATHS: list[Callable[[World], dict[str, Any] | None]] = [
    save,
    save_many_of_one_template,
    meta_only_save,
    move,
    restore,
    save_over_an_unrecorded_edit,
    delete_of_an_unrecorded_edit,
    remote_save_over_an_unrecorded_edit,
    remote_save_meeting_a_file_created_during_it,
    remote_delete_of_an_unrecorded_edit,
    load_of_an_unrecorded_edit,
    import_of_a_bundle,
    revalidate,
    check_fix,
    reconcile_at_open,
    watcher_edit,
    watcher_meta_edit_of_a_blueprint_the_cli_recorded,
    sync_pull,
    sync_merge,
    sync_path_taken,
    sync_edit_found_unrecorded,
    sync_vanished_row_over_an_unrecorded_edit,
    sync_pull_onto_an_unindexed_file,
    late_meta_of_a_described_blueprint,
    resolve_with_content,
    resolve_over_an_unrecorded_edit,
    resolve_deleting_an_edited_copy,
]


@pytest.fixture
def world(tmp_path: Path, server: MemoryServer) -> Iterator[World]:
    w = World(tmp_path, server, LockProbe(), [])
    yield w
    for dev in reversed(w.opened):
        close_device(dev)


@pytest.mark.parametrize("path", PATHS, ids=[p.__name__ for p in PATHS])
def test_the_validator_never_runs_under_the_write_lock(
    world: World, path: Callable[[World], dict[str, Any] | None]
) -> None:
    judged = path(world) or BAD  # (what the path must have judged)
    assert world.probe.under_lock() == []
    assert judged in [doc for doc, _ in world.probe.calls]
