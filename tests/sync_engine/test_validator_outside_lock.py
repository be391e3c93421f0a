"""What a sync pass (and a conflict's resolution) saves is judged by the app's validator before
the index's write lock, also on the rarer paths: a pulled page holding one text twice, a
blueprint moved off a path the server gave to another, a conflict copy, a resolution, an editor's
edit the pass finds unrecorded, a blueprint given a new id.

Inside the lock a slow validator (the app's code: schema checks, even the network) held every
other process's writes to the home up. The validator here records whether its store's thread
held the lock at each call (tests/store/validator_probe.py); each test failed before the change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localstore.config import load_settings
from localstore.store import BlueprintStore, SaveRequest
from sync.engine import SyncEngine
from sync.memory_remote import MemoryRemote, MemoryServer
from tests.store.validator_probe import LockProbe
from tests.sync_engine.conftest import Device, close_device, converge, foreign_id


@pytest.fixture
def app_device(
    tmp_path: Path, server: MemoryServer
) -> Iterator[Callable[[str, LockProbe], Device]]:
    """Devices whose store has a LockProbe for validator (closed at teardown)."""
    opened: list[Device] = []

    def make(name: str, probe: LockProbe) -> Device:
        home = tmp_path / name
        store = BlueprintStore(
            load_settings(home=home, device_name=name),
            maintenance=False,
            validator=probe,
            validator_name="probe",
        )
        probe.watch(store)
        remote = MemoryRemote(server, user="u")
        dev = Device(name, home, store, remote, SyncEngine(store, remote))
        opened.append(dev)
        return dev

    yield make
    for dev in reversed(opened):
        close_device(dev)


def _edit_on_disk(dev: Device, rel: str, text: str) -> None:
    """An editor's save no watcher records (none runs here): an mtime the index cannot hold."""
    path = dev.store.abspath(f"{rel}.blueprint.yaml")
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_pulled_page_holding_one_text_twice_is_judged_once_ahead(
    make_device: Callable[..., Device], app_device: Callable[[str, LockProbe], Device]
) -> None:
    """The first save took the verdict out of the memo: every other copy was judged inside."""
    writer = make_device("writer")
    writer.store.save_many([SaveRequest(f"t/{i}", "kind: template\n") for i in range(4)])
    writer.sync()
    probe = LockProbe()
    app = app_device("app", probe)
    assert app.sync().pulled == 4
    assert probe.under_lock() == []
    assert probe.calls == [({"kind": "template"}, False)]


def test_a_blueprint_moved_off_a_path_another_device_took_keeps_its_verdict(
    make_device: Callable[..., Device], app_device: Callable[[str, LockProbe], Device]
) -> None:
    """Both devices create new/thing; the app's push meets the other's row: its blueprint is
    moved aside inside the pass's transaction, and the move judged its YAML there."""
    other = make_device("other")
    probe = LockProbe()
    app = app_device("app", probe)
    other.store.save("new/thing", "v: a\n")
    other.sync()
    app.store.save("new/thing", "v: b\nok: false\n")
    app.sync()
    (record,) = app.engine.conflicts()
    assert record.reason == "path_taken" and record.copy_path
    assert app.store.load(record.copy_path).problems == ("ok is false",)
    assert probe.under_lock() == []


def test_a_pulled_row_at_a_path_taken_here_moves_the_local_one_outside_the_lock(
    make_device: Callable[..., Device], app_device: Callable[[str, LockProbe], Device]
) -> None:
    other = make_device("other")
    probe = LockProbe()
    app = app_device("app", probe)
    other.store.save("p/x", "v: a\n")
    other.sync()
    app.store.save("p/x", "v: b\n")  # never pushed: the pull meets it first
    converge(app, other)
    assert sorted(t for _, t in app.snapshot().values()) == ["v: a\n", "v: b\n"]
    assert probe.under_lock() == []


def test_a_conflict_copy_and_its_resolution_are_judged_outside_the_lock(
    make_device: Callable[..., Device], app_device: Callable[[str, LockProbe], Device]
) -> None:
    probe = LockProbe()
    app = app_device("app", probe)
    other = make_device("other")
    app.store.save("a/doc", "v: 1\n")
    app.sync()
    other.sync()
    other.store.save("a/doc", "v: theirs\n")
    other.sync()
    app.store.save("a/doc", "v: mine\n")
    app.sync()  # the same line on both sides: a conflict, both kept
    (record,) = app.engine.conflicts()
    assert record.copy_id is not None
    probe.calls.clear()
    resolved = app.engine.resolve_conflict(record.cid, content="v: both\nok: false\n")
    assert resolved.resolution
    assert app.store.load("a/doc").problems == ("ok is false",)
    assert ({"v": "both", "ok": False}, False) in probe.calls
    assert probe.under_lock() == []


def _edited_here_and_there(
    make_device: Callable[..., Device],
    app_device: Callable[[str, LockProbe], Device],
    probe: LockProbe,
) -> Device:
    """An app device whose a/doc another device edited (pushed) while an editor edited it here,
    unrecorded (no watcher): its next sync ingests that edit and merges it with the pull."""
    app = app_device("app", probe)
    other = make_device("other")
    app.store.save("a/doc", "x: 1\nw: 0\ny: 1\n")
    app.sync()
    other.sync()
    other.store.save("a/doc", "x: 1\nw: 0\ny: 2\n")
    other.sync()
    _edit_on_disk(app, "a/doc", "x: 2\nw: 0\ny: 1\n")
    return app


def test_an_edit_the_pass_finds_unrecorded_is_judged_and_merged_ahead(
    make_device: Callable[..., Device], app_device: Callable[[str, LockProbe], Device]
) -> None:
    """apply_row ingests an editor's edit no watcher recorded before it decides: that ingest,
    and the merge of the edit with the pulled row, judged inside the lock."""
    probe = LockProbe()
    app = _edited_here_and_there(make_device, app_device, probe)
    report = app.sync()
    assert report.merged == 1 and report.conflicts == 0 and not report.errors
    assert app.text("a/doc") == "x: 2\nw: 0\ny: 2\n"
    assert [r.origin for r in app.store.history("a/doc")][-2] == "external"  # the edit kept
    assert probe.under_lock() == []


def test_an_edit_the_pass_finds_unrecorded_under_a_remote_delete_is_judged_ahead(
    make_device: Callable[..., Device], app_device: Callable[[str, LockProbe], Device]
) -> None:
    """A delete pulled over an editor's unrecorded edit: the edit is recorded first (and beats
    the delete); its ingest judged it inside the lock."""
    probe = LockProbe()
    app = app_device("app", probe)
    other = make_device("other")
    x = app.store.save("x", "v: 1\n").id
    app.sync()
    other.sync()
    other.store.delete(x)
    other.sync()
    _edit_on_disk(app, "x", "v: 1\nlocal: important\n")
    report = app.sync()
    assert not report.errors and app.text(x) == "v: 1\nlocal: important\n"
    assert ({"v": 1, "local": "important"}, False) in probe.calls
    assert probe.under_lock() == []


def test_a_raising_validator_on_an_unrecorded_edit_loses_nothing(
    make_device: Callable[..., Device], app_device: Callable[[str, LockProbe], Device]
) -> None:
    """Raising ahead of the lock counts as a problem, as inside: the edit is recorded, the merge
    is refused (a conflict, both versions kept), and the store is whole."""
    probe = LockProbe()
    app = _edited_here_and_there(make_device, app_device, probe)
    probe.fail = True
    report = app.sync()
    assert not report.errors
    texts = sorted(t for _, t in app.snapshot().values())
    assert texts == ["x: 1\nw: 0\ny: 2\n", "x: 2\nw: 0\ny: 1\n"]  # the edit and the server's
    assert app.store.check().clean
    assert probe.under_lock() == []


def test_a_blueprint_given_a_new_id_is_judged_before_its_ingest(
    tmp_path: Path,
    server: MemoryServer,
    make_device: Callable[..., Device],
    app_device: Callable[[str, LockProbe], Device],
) -> None:
    """A bundle from another user keeps its ids; the server refuses them (not_owner), and the
    pass gives the blueprint a new id by rewriting its meta and ingesting the pair again."""
    foreign = foreign_id(tmp_path, server)
    probe = LockProbe()
    app = app_device("app", probe)
    # Recorded by another process (the CLI: judged by none), so no verdict is remembered here.
    cli = BlueprintStore(load_settings(home=app.home), maintenance=False)
    try:
        cli.save("imported/recipe", "v: 1\n", id=foreign)
    finally:
        cli.close()
    app.sync()
    info = app.store.resolve("imported/recipe")
    assert info.id != foreign and info.valid
    assert probe.under_lock() == []
