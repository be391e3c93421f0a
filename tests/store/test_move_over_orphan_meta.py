"""A move (or restore to a path) onto a name where only a meta file sits keeps that file as a
save does.

A meta file without its YAML at a move's destination made the move's rename of the pair's meta
find its name taken: NameTakenError ("created by another program while it was being written,
try again"), and trying again never helped. Now the move decides by reconcile's rule, as a save
creating a pair there (see test_save_over_orphan_meta): the leftover of an interrupted move is
replaced quietly, any other is kept in <data>/recovered/ first (check reports the copy until it
is deleted), and the move goes ahead.

Real homes and files; the orphans are made as a person leaves them. Only a failing flush
injects a fault.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from localstore import files as fs
from localstore.errors import StorageError
from localstore.events import Event
from localstore.store import BlueprintStore

from .test_save_over_orphan_meta import (
    DOC,
    META,
    REL,
    _fail_after_placing,
    _kept,
    _kept_problems,
    _put_orphan,
)

SRC = "work/a"
FOREIGN = {"id": "11111111-1111-4111-8111-111111111111", "name": "By hand", "tags": ["mine"]}


def _moved_there(store: BlueprintStore, blueprint_id: str) -> None:
    """The blueprint is at REL, its own meta file in the orphan's place, nothing at SRC."""
    assert store.load(REL).id == blueprint_id
    assert json.loads(store.abspath(META).read_text())["id"] == blueprint_id
    assert not store.abspath(SRC + fs.YAML_SUFFIX).exists()
    assert not store.abspath(fs.meta_path_for(SRC + fs.YAML_SUFFIX)).exists()


def test_a_move_onto_an_orphan_meta_keeps_it_and_moves(
    store: BlueprintStore, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved = store.save(SRC, DOC)
    orphan = json.dumps(FOREIGN).encode()
    _put_orphan(store, orphan)
    events: list[Event] = []
    store.subscribe(events.append)
    with caplog.at_level(logging.WARNING):
        store.move(SRC, REL)
    _moved_there(store, moved.id)
    (kept,) = _kept(home)
    assert kept.read_bytes() == orphan
    assert any(str(kept) in r.getMessage() for r in caplog.records), caplog.text
    assert any(str(kept) in e.detail for e in events), [e.to_dict() for e in events]
    (problem,) = _kept_problems(store)
    assert problem["path"] == META and str(kept) in problem["detail"]
    kept.unlink()
    assert store.check(fix=True).clean


def test_a_move_onto_the_leftover_meta_of_a_move_replaces_it_quietly(
    store: BlueprintStore, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved = store.save(SRC, DOC)
    store.save("elsewhere/x", DOC)
    _put_orphan(store, store.abspath("elsewhere/x.blueprint.meta.json").read_bytes())
    with caplog.at_level(logging.WARNING):
        store.move(SRC, REL)
    _moved_there(store, moved.id)
    assert _kept(home) == []
    assert not caplog.records, caplog.text
    assert store.check().clean


def test_a_move_onto_its_own_old_meta_replaces_it_quietly(
    store: BlueprintStore, home: Path
) -> None:
    # Its own meta, left at REL by an earlier move away from there: a version the store has.
    moved = store.save(REL, DOC)
    old_meta = store.abspath(META).read_bytes()
    store.move(REL, SRC)
    _put_orphan(store, old_meta)
    store.move(SRC, REL)
    _moved_there(store, moved.id)
    assert _kept(home) == []
    assert store.check().clean


def test_a_move_that_fails_puts_the_pair_and_the_orphan_meta_back(
    store: BlueprintStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = store.save(SRC, DOC)
    orphan = json.dumps(FOREIGN).encode()
    path = _put_orphan(store, orphan)
    _fail_after_placing(monkeypatch)
    with pytest.raises(StorageError):
        store.move(SRC, REL)
    monkeypatch.undo()
    assert path.read_bytes() == orphan
    assert not store.abspath(REL + fs.YAML_SUFFIX).exists()
    assert store.load(SRC).id == moved.id
    assert store.load(SRC).content == DOC
    assert not _kept_problems(store)


def test_a_restore_to_an_orphan_meta_keeps_it(store: BlueprintStore, home: Path) -> None:
    first = store.save(SRC, DOC)
    store.save(SRC, "steps: [2]\n")
    orphan = json.dumps(FOREIGN).encode()
    _put_orphan(store, orphan)
    store.restore(SRC, first.rev, path=REL)
    assert store.load(REL).content == DOC
    _moved_there(store, first.id)
    (kept,) = _kept(home)
    assert kept.read_bytes() == orphan
    assert [p["path"] for p in _kept_problems(store)] == [META]


def test_a_restore_of_a_deleted_blueprint_to_an_orphan_meta_keeps_it(
    store: BlueprintStore, home: Path
) -> None:
    first = store.save(SRC, DOC)
    store.delete(SRC)
    orphan = json.dumps(FOREIGN).encode()
    _put_orphan(store, orphan)
    store.restore(first.id, first.rev, path=REL)
    _moved_there(store, first.id)
    (kept,) = _kept(home)
    assert kept.read_bytes() == orphan
