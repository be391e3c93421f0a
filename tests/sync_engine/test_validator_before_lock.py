"""A sync pass runs the app's validator on what it applies before it takes the write lock.

Inside the pass's transaction, a slow validator held every other process's writes to the home
(the daemon, the CLI, an editor's save through the watcher) for as long as it ran, and past their
busy timeout they failed. Each test parks the validator on an event while another connection
with a short busy timeout saves: the assertion is on that save's outcome, never on a duration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.engine import SyncEngine, SyncReport
from sync.memory_remote import MemoryRemote, MemoryServer


class _Gate:
    """A validator that stops inside its call on the documents ``parks`` picks, until released
    (no timing: two events), and counts what it judged."""

    def __init__(self, parks: Callable[[Mapping[str, Any]], bool]) -> None:
        self.parks = parks
        self.entered = threading.Event()
        self.release = threading.Event()
        self.judged: list[dict[str, Any]] = []

    def __call__(self, doc: Mapping[str, Any]) -> list[str]:
        self.judged.append(dict(doc))
        if self.parks(doc):
            self.entered.set()
            assert self.release.wait(30), "the test never released the validator"
        return [] if doc.get("ok", True) else ["ok is false"]


@pytest.fixture
def stores() -> Iterator[list[Any]]:
    """Stores, remotes and gates the test opens: closed (and released) at teardown."""
    opened: list[Any] = []
    yield opened
    for thing in reversed(opened):
        if isinstance(thing, _Gate):
            thing.release.set()  # a failing test must not leave a thread parked in it
        else:
            thing.close()


def _open(home: Path, stores: list[Any], **kwargs: Any) -> BlueprintStore:
    store = BlueprintStore(load_settings(home=home), maintenance=False, **kwargs)
    stores.append(store)
    return store


def _engine(store: BlueprintStore, server: MemoryServer, stores: list[Any]) -> SyncEngine:
    remote = MemoryRemote(server, user="u")
    stores.append(remote)
    return SyncEngine(store, remote)


def _sync_while_parked(engine: SyncEngine, gate: _Gate, home: Path) -> SyncReport:
    """Run a pass on a thread; once the validator is parked in it, save from another connection
    to the home with a short busy timeout (it must not wait for the validator)."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(engine.sync_once())
        except BaseException as exc:  # handed to the test thread to assert on
            out.append(exc)

    worker = threading.Thread(target=run, name="sync-pass")
    worker.start()
    try:
        assert gate.entered.wait(30), "the pass never ran the validator"
        with localstore.open(home=home, busy_timeout_ms=200, reconcile=False) as other:
            other.save("b/meanwhile", "x: 1\n")  # before: IndexStoreError, the index is locked
    finally:
        gate.release.set()
        worker.join()
    report = out[0]
    assert isinstance(report, SyncReport), report
    return report


def test_a_pulled_blueprint_is_judged_before_the_pass_takes_the_lock(
    tmp_path: Path, server: MemoryServer, stores: list[Any]
) -> None:
    writer = _open(tmp_path / "other-device", stores)
    writer.save("a/slow", "slow: true\nok: false\n")
    assert _engine(writer, server, stores).sync_once().pushed == 1

    gate = _Gate(lambda doc: bool(doc.get("slow")))
    stores.append(gate)
    home = tmp_path / "app"
    app = _open(home, stores, validator=gate, validator_name="gate")
    report = _sync_while_parked(_engine(app, server, stores), gate, home)

    assert report.pulled == 1 and not report.errors
    got = app.load("a/slow")
    # Recorded as before: the validator's verdict, one revision.
    assert got.content == "slow: true\nok: false\n" and got.problems == ("ok is false",)
    assert [r.rev for r in app.history("a/slow")] == [1]
    assert {i.path for i in app.list()} == {"a/slow.blueprint.yaml", "b/meanwhile.blueprint.yaml"}
    # Judged once, ahead: the save inside the pass took that verdict.
    assert sum(1 for doc in gate.judged if doc.get("slow")) == 1


def test_a_merge_result_is_judged_before_the_pass_takes_the_lock(
    tmp_path: Path, server: MemoryServer, stores: list[Any]
) -> None:
    """Both devices edit one blueprint: the app's pass merges them line by line, and judges the
    merged text (neither side's) before its write lock; the merge and the save inside reuse it."""
    merged = {"x": 2, "w": 0, "y": 2}
    gate = _Gate(lambda doc: doc == merged)
    stores.append(gate)
    home = tmp_path / "app"
    app = _open(home, stores, validator=gate, validator_name="gate")
    app_engine = _engine(app, server, stores)
    app.save("a/doc", "x: 1\nw: 0\ny: 1\n")
    assert app_engine.sync_once().pushed == 1

    writer = _open(tmp_path / "other-device", stores)
    writer_engine = _engine(writer, server, stores)
    assert writer_engine.sync_once().pulled == 1
    writer.save("a/doc", "x: 1\nw: 0\ny: 2\n")
    assert writer_engine.sync_once().pushed == 1

    app.save("a/doc", "x: 2\nw: 0\ny: 1\n")  # its push meets the other device's edit: a merge
    report = _sync_while_parked(app_engine, gate, home)

    assert report.merged == 1 and report.conflicts == 0 and not report.errors
    got = app.load("a/doc")
    assert got.content == "x: 2\nw: 0\ny: 2\n" and got.valid
    assert [r.rev for r in app.history("a/doc")] == [3, 2, 1]
    # The merged text was judged once, ahead: neither the merge inside nor its save ran the
    # validator on it again.
    assert gate.judged.count(merged) == 1
