"""An edit landing while the store reads a file is never taken for the version it read.

Reconcile (on open, for ``load``, for the watcher) read a changed pair, then took the stats it
recorded. An edit saved between the two was recorded with the old content's hash and the new
file's stat: the index then held that file for unchanged, nothing read it again while no watcher
ran, and the edit was missing from history and search until a save overwrote it. The stats
recorded are now the ones taken before the read: such an edit leaves them different from the
disk's, and the next look reads the file.

Fault injection only: the real read runs, then the test edits the file before the code goes on
(as an editor saving at that moment would). Real files and a real index.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore._reconcile import Reconciler
from localstore.store import BlueprintStore

V1 = "v: 1\n"
EDITS = 4  # edits made behind the reads, each one after a read of the file


def _version(i: int) -> str:
    return f"v: {'x' * (i + 2)}\n"  # (each one a new size: its stat differs whatever the clock)


@dataclass
class EditAfterRead:
    """Each path in ``watched`` is edited right after a real read of it, ``budget`` times in
    all (the i-th edit writes ``watched[path](i)``), before the reader can take its stat."""

    watched: dict[Path, Callable[[int], str]] = field(default_factory=dict)
    budget: int = EDITS
    made: int = 0


@pytest.fixture
def edit_after_read(monkeypatch: pytest.MonkeyPatch) -> EditAfterRead:
    edits = EditAfterRead()
    real = fs.read_regular

    def read_then_edit(path: Path | str, limit: int | None = None) -> bytes:
        data = real(path, limit)
        versions = edits.watched.get(Path(path))
        if versions is not None and edits.made < edits.budget:
            edits.made += 1
            Path(path).write_text(versions(edits.made))
        return data

    monkeypatch.setattr(fs, "read_regular", read_then_edit)
    return edits


def _assert_index_true_to_disk(store: BlueprintStore, home: Path) -> None:
    """Every pair the index takes as unchanged (stats match) holds the bytes the index says."""
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT path, yaml_size, yaml_mtime_ns, yaml_ctime_ns, yaml_ino, yaml_sha256 "
            "FROM blueprints WHERE deleted = 0"
        ).fetchall()
    for path, size, mtime_ns, ctime_ns, ino, sha in rows:
        yaml_file = home / "blueprints" / path
        if fs.stat_unchanged(os.lstat(yaml_file), size, mtime_ns, ctime_ns, ino):
            assert hashlib.sha256(yaml_file.read_bytes()).hexdigest() == sha, path


def _last_recorded(store: BlueprintStore, ref: str) -> str:
    return store.load_revision(ref, store.history(ref)[0].rev).content


def test_open_does_not_record_an_edit_made_during_its_read(
    home: Path, edit_after_read: EditAfterRead
) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", V1)
    yaml_file = home / "blueprints/plan.blueprint.yaml"
    yaml_file.write_text(_version(0))
    edit_after_read.watched[yaml_file] = _version
    with localstore.open(home=home) as store:
        _assert_index_true_to_disk(store, home)
    edit_after_read.watched.clear()
    with localstore.open(home=home) as store:
        assert _last_recorded(store, bp.id) == yaml_file.read_text() != _version(0)


def test_load_does_not_record_an_edit_made_during_its_read(
    store: BlueprintStore, home: Path, edit_after_read: EditAfterRead
) -> None:
    bp = store.save("plan", V1)
    yaml_file = home / "blueprints/plan.blueprint.yaml"
    yaml_file.write_text(_version(0))
    edit_after_read.watched[yaml_file] = _version
    # One edit, after the ingest's read: load's own read of the text it returns comes later.
    edit_after_read.budget = 1
    store.load(bp.id)
    _assert_index_true_to_disk(store, home)
    edit_after_read.watched.clear()
    loaded = store.load(bp.id)
    assert loaded.content == _last_recorded(store, bp.id) == yaml_file.read_text()
    assert loaded.content != _version(0)


def test_the_watchers_ingest_does_not_record_an_edit_made_during_its_read(
    store: BlueprintStore, home: Path, edit_after_read: EditAfterRead
) -> None:
    bp = store.save("plan", V1)
    yaml_file = home / "blueprints/plan.blueprint.yaml"
    yaml_file.write_text(_version(0))
    edit_after_read.watched[yaml_file] = _version
    rec = Reconciler(store)
    with store.index.write() as cur:  # (as the watcher's batch does for an event's path)
        rec.ingest_locked(cur, "plan.blueprint.yaml", trust_stat=False)
    _assert_index_true_to_disk(store, home)
    edit_after_read.watched.clear()
    store.reconcile()
    assert _last_recorded(store, bp.id) == yaml_file.read_text() != _version(0)


def test_open_does_not_record_a_meta_edit_made_during_its_read(
    home: Path, edit_after_read: EditAfterRead
) -> None:
    with localstore.open(home=home) as store:
        bp = store.save("plan", V1, description="d")
    meta_file = home / "blueprints/plan.blueprint.meta.json"
    first = meta_file.read_text()
    meta_file.write_text(first.replace('"d"', '"d0"'))
    edit_after_read.watched[meta_file] = lambda i: first.replace('"d"', f'"d{i}{"x" * i}"')
    with localstore.open(home=home) as store:
        pass
    edit_after_read.watched.clear()
    with localstore.open(home=home) as store:
        last = json.loads(meta_file.read_text())["description"]
        assert last != "d0" and store.load(bp.id).meta.description == last
        assert store.load_revision(bp.id, store.history(bp.id)[0].rev).meta.description == last
