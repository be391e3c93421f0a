"""A save that creates a blueprint where only a meta file sits keeps that file as reconcile would.

A meta file without its YAML (the YAML deleted by hand while nothing ran, another blueprint's
meta copied there) is an orphan. Reconcile removes one only when its blueprint lives at another
path and its bytes are a version the store has (the leftover of an interrupted move); any other
it keeps: in place and reported, or (its blueprint living elsewhere, edited by hand) in
<data>/recovered/. A save creating a blueprint at that path wrote its new meta over the orphan:
no revision, no report, its bytes gone. Now the save keeps what reconcile would keep in
<data>/recovered/ first, logs a warning and says so in its event, and check reports the copy
(``edit-kept``) until it is deleted; a leftover is replaced quietly.

Real homes and files; the orphans are made as a person leaves them (the store open, no watcher);
only a failing rename injects a fault.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from localstore import files as fs
from localstore.errors import StorageError
from localstore.events import Event
from localstore.store import BlueprintStore, SaveRequest

REL = "personal/plan"
META = "personal/plan.blueprint.meta.json"
DOC = "steps: [1]\n"
FOREIGN_ID = "11111111-1111-4111-8111-111111111111"
FOREIGN = {
    "id": FOREIGN_ID,
    "name": "Written by hand",
    "tags": ["mine"],
}


def _save(store: BlueprintStore) -> None:
    store.save(REL, DOC)


def _save_many(store: BlueprintStore) -> None:
    first, second = store.save_many([SaveRequest("other/b", "b: 1\n"), SaveRequest(REL, DOC)])
    assert not isinstance(first, Exception) and not isinstance(second, Exception), second


SAVES: dict[str, Callable[[BlueprintStore], None]] = {"save": _save, "save_many": _save_many}


def _put_orphan(store: BlueprintStore, data: bytes) -> Path:
    """A meta file at REL's meta path with no YAML beside it, put there behind the store's back."""
    path = store.abspath(META)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _kept(home: Path) -> list[Path]:
    return sorted((home / "data" / "recovered").glob(f"*/{META}"))


def _kept_problems(store: BlueprintStore) -> list[dict[str, str]]:
    return [p for p in store.check().problems if p["kind"] == "edit-kept"]


def _saved_over(store: BlueprintStore, save: str) -> list[Event]:
    events: list[Event] = []
    store.subscribe(events.append)
    SAVES[save](store)
    assert store.load(REL).content == DOC
    assert json.loads(store.abspath(META).read_text())["id"] == store.load(REL).id
    return events


@pytest.mark.parametrize("save", list(SAVES))
def test_an_orphan_meta_of_no_live_blueprint_is_kept_before_a_save_creates_one_there(
    store: BlueprintStore, home: Path, caplog: pytest.LogCaptureFixture, save: str
) -> None:
    orphan = json.dumps(FOREIGN).encode()
    _put_orphan(store, orphan)
    with caplog.at_level(logging.WARNING):
        events = _saved_over(store, save)
    (kept,) = _kept(home)
    assert kept.read_bytes() == orphan
    assert any(str(kept) in r.getMessage() for r in caplog.records), caplog.text
    assert any(str(kept) in e.detail for e in events if e.path == REL + fs.YAML_SUFFIX), [
        e.to_dict() for e in events
    ]
    (problem,) = _kept_problems(store)
    assert problem["path"] == META and str(kept) in problem["detail"]
    assert FOREIGN_ID in problem["detail"]
    # Reported until the person deletes the copy.
    kept.unlink()
    assert store.check(fix=True).clean


@pytest.mark.parametrize("save", list(SAVES))
def test_an_orphan_meta_that_does_not_parse_is_kept(
    store: BlueprintStore, home: Path, save: str
) -> None:
    _put_orphan(store, b'{"id": "half typed')
    _saved_over(store, save)
    (kept,) = _kept(home)
    assert kept.read_bytes() == b'{"id": "half typed'
    assert [p["path"] for p in _kept_problems(store)] == [META]


@pytest.mark.parametrize("save", list(SAVES))
def test_an_edited_meta_of_a_blueprint_living_elsewhere_is_kept(
    store: BlueprintStore, home: Path, save: str
) -> None:
    other = store.save("elsewhere/x", DOC, tags=["one"])
    edited = store.abspath("elsewhere/x.blueprint.meta.json").read_bytes()
    edited = edited.replace(b'"one"', b'"one", "edited"')
    _put_orphan(store, edited)
    _saved_over(store, save)
    (kept,) = _kept(home)
    assert kept.read_bytes() == edited
    (problem,) = _kept_problems(store)
    assert "elsewhere/x.blueprint.yaml" in problem["detail"]
    assert store.load(other.id).meta.tags == ("one",)


@pytest.mark.parametrize("save", list(SAVES))
def test_the_leftover_meta_of_a_move_is_replaced_quietly(
    store: BlueprintStore, home: Path, caplog: pytest.LogCaptureFixture, save: str
) -> None:
    # Reconcile removes it (its bytes are the live meta of a blueprint at another path): a
    # copy kept of it would only be a spare for the person to delete.
    store.save("elsewhere/x", DOC)
    _put_orphan(store, store.abspath("elsewhere/x.blueprint.meta.json").read_bytes())
    with caplog.at_level(logging.WARNING):
        _saved_over(store, save)
    assert _kept(home) == []
    assert not caplog.records, caplog.text
    assert store.check().clean


def test_a_save_that_fails_puts_the_orphan_meta_back(
    store: BlueprintStore, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan = json.dumps(FOREIGN).encode()
    path = _put_orphan(store, orphan)
    _fail_after_placing(monkeypatch)
    with pytest.raises(StorageError):
        store.save(REL, DOC)
    monkeypatch.undo()
    assert path.read_bytes() == orphan
    assert not store.exists(REL)
    # (The copy made first is only a spare now: check does not report it.)
    assert not _kept_problems(store)


def _fail_after_placing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault: a write's files placed, then its folder's flush fails (the write is undone)."""
    real = fs.PendingWrites.commit

    def then_fail(self: fs.PendingWrites) -> None:
        real(self)
        raise StorageError("injected: the folder's flush failed")

    monkeypatch.setattr(fs.PendingWrites, "commit", then_fail)
