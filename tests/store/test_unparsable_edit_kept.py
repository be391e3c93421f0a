"""A file that does not parse (a half-done edit saved in an editor) is never replaced unkept.

The index keeps such a blueprint's last good revision and flags the row; the bytes on disk are in no
revision. Every write that replaces or removes the pair (save, save_many, restore, move, delete)
goes ahead, but first copies those bytes durably to <data>/recovered/<UTC time>/<path>; its event
says where, and check reports each kept file as ``edit-kept`` until the person removes it.

Both ways the store can meet such a file: unrecorded (no watcher ran yet: the write's stat check
finds it) and already flagged (a reconcile or watcher saw it first: the stats match the row).
Real files and a real index; only a failing hook injects a fault.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from localstore.errors import ChangedOnDiskError, DiskFullError, InvalidYAMLError
from localstore.events import Event
from localstore.store import BlueprintStore, SaveRequest

REL = "team/deploy"
YAML = "team/deploy.blueprint.yaml"
META = "team/deploy.blueprint.meta.json"
V1 = "steps: [build]\n"
APP = "steps: [build, test, ship]\n"
BAD_YAML = b"steps: [build,\n  test: [half-typed\n"


def _edit(path: Path, data: bytes) -> None:
    """Write like an editor would, with an mtime the index cannot already hold."""
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _break(store: BlueprintStore, home: Path, which: str, state: str) -> tuple[str, bytes]:
    """Save REL, then leave its YAML or meta file unparsable on disk; returns (file, its bytes).

    ``state`` "flagged": a reconcile recorded the file as flagged before the write (so the
    write's stat check finds nothing new); "unrecorded": nothing has seen it yet.
    """
    store.save(REL, V1, tags=["ops"])
    rel = YAML if which == "yaml" else META
    path = home / "blueprints" / rel
    bad = BAD_YAML if which == "yaml" else path.read_bytes()[:-7]  # a JSON object cut short
    _edit(path, bad)
    if state == "flagged":
        store.reconcile()
        assert store.row(REL).flagged
    return rel, bad


def _kept(home: Path, rel: str) -> list[bytes]:
    return [p.read_bytes() for p in (home / "data" / "recovered").rglob(Path(rel).name)]


def _save(store: BlueprintStore) -> None:
    store.save(REL, APP)


def _save_many(store: BlueprintStore) -> None:
    (result,) = store.save_many([SaveRequest(REL, APP)])
    assert not isinstance(result, Exception), result


def _restore(store: BlueprintStore) -> None:
    store.restore(REL, 1)


def _delete(store: BlueprintStore) -> None:
    store.delete(REL)


def _move(store: BlueprintStore) -> None:
    store.move(REL, "team/moved")


WRITES: dict[str, Callable[[BlueprintStore], None]] = {
    "save": _save,
    "save_many": _save_many,
    "restore": _restore,
    "delete": _delete,
}


@pytest.mark.parametrize("state", ["unrecorded", "flagged"])
@pytest.mark.parametrize("which", ["yaml", "meta"])
@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_over_an_unparsable_file_keeps_its_bytes_first(
    store: BlueprintStore, home: Path, write: str, which: str, state: str
) -> None:
    rel, bad = _break(store, home, which, state)
    events: list[Event] = []
    store.subscribe(events.append)
    WRITES[write](store)
    # The write went ahead (it is what the app asked for) ...
    if write == "delete":
        assert not store.exists(REL) and not (home / "blueprints" / YAML).exists()
    else:
        assert store.load(REL).content == (APP if write.startswith("save") else V1)
        assert (home / "blueprints" / rel).read_bytes() != bad
    # ... and the person's bytes are in <data>/recovered/<time>/<its path>, nowhere else.
    assert _kept(home, rel) == [bad]
    (kept,) = (home / "data" / "recovered").glob(f"*/{rel}")
    assert any(str(kept) in e.detail for e in events), [e.to_dict() for e in events]
    problems = [p for p in store.check().problems if p["kind"] == "edit-kept"]
    assert [p["path"] for p in problems] == [rel]
    assert str(kept) in problems[0]["detail"]
    # Reported until the person removes it; check --fix then forgets it.
    kept.unlink()
    assert not [p for p in store.check(fix=True).problems if p["kind"] == "edit-kept"]
    assert not [p for p in store.check().problems if p["kind"] == "edit-kept"]


@pytest.mark.parametrize("state", ["unrecorded", "flagged"])
def test_a_move_keeps_an_unparsable_meta_file(
    store: BlueprintStore, home: Path, state: str
) -> None:
    rel, bad = _break(store, home, "meta", state)
    _move(store)
    assert store.load("team/moved").content == V1
    assert _kept(home, rel) == [bad]
    assert [p["path"] for p in store.check().problems if p["kind"] == "edit-kept"] == [rel]


@pytest.mark.parametrize("state", ["unrecorded", "flagged"])
def test_a_move_of_an_unparsable_yaml_changes_nothing(
    store: BlueprintStore, home: Path, state: str
) -> None:
    """A move keeps the content on disk, which cannot be stored: refused, the file untouched."""
    rel, bad = _break(store, home, "yaml", state)
    with pytest.raises(InvalidYAMLError):
        _move(store)
    assert (home / "blueprints" / rel).read_bytes() == bad
    assert not (home / "data" / "recovered").exists()


@pytest.mark.parametrize("state", ["unrecorded", "flagged"])
def test_a_failed_save_puts_the_unparsable_bytes_back(
    store: BlueprintStore, home: Path, state: str
) -> None:
    """The undo of a failed save put back the last good revision over the person's file."""
    rel, bad = _break(store, home, "yaml", state)

    def failing_hook(cur: object, blueprint: object) -> None:
        raise DiskFullError("simulated: the index commit failed")

    with pytest.raises(DiskFullError):
        store.save(REL, APP, tx_hook=failing_hook)
    assert (home / "blueprints" / rel).read_bytes() == bad
    assert store.load(REL).content == V1
    # The spare copy is not reported: the file itself is back, and still flagged.
    kinds = {p["kind"] for p in store.check().problems}
    assert "edit-kept" not in kinds and kinds & {"flagged", "invalid-yaml"}


def test_expected_rev_does_not_hold_a_save_back_from_a_flagged_file(
    store: BlueprintStore, home: Path
) -> None:
    """An unparsable file is no revision: the app's rev is still current, its save lands (a
    conflict here would come back on every retry, as load gives the same revision)."""
    rel, bad = _break(store, home, "yaml", "flagged")
    loaded = store.load(REL)
    assert store.save(REL, APP, expected_rev=loaded.rev).rev == loaded.rev + 1
    assert _kept(home, rel) == [bad]


def test_a_plain_save_keeps_nothing(store: BlueprintStore, home: Path) -> None:
    store.save(REL, V1)
    _edit(home / "blueprints" / YAML, b"steps: [edited]\n")  # parses: recorded as a revision
    store.save(REL, APP)
    assert not (home / "data" / "recovered").exists()
    assert store.check().clean
    meta = json.loads((home / "blueprints" / META).read_text())
    assert store.load(REL).meta.id == meta["id"]


def test_a_remote_save_over_an_unrecorded_unparsable_edit_writes_nothing(
    store: BlueprintStore, home: Path
) -> None:
    """Sync's way stays as it was: refused (the row waits), the file left exactly as it is."""
    rel, bad = _break(store, home, "yaml", "unrecorded")
    with pytest.raises(ChangedOnDiskError):
        store.save(REL, APP, origin="remote")
    assert (home / "blueprints" / rel).read_bytes() == bad
    assert store.row(REL).flagged
    assert not (home / "data" / "recovered").exists()
