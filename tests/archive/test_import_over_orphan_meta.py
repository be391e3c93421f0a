"""An import that creates a blueprint where only a meta file sits keeps that file, and says so.

A meta file without its YAML at a bundle path (its YAML deleted by hand while nothing ran,
another blueprint's meta copied there) was written over by the import's save: its bytes gone,
in no revision and no report, and the dry run planned a plain "create". Now the save keeps it
as reconcile would (in <data>/recovered/, reported by check until deleted), and the plan's
reason, the dry run's too, says it will; the leftover of an interrupted move (its blueprint
lives elsewhere, its bytes a version the store has) is replaced quietly, as reconcile removes it.

Real homes, bundles and files; the orphans are made as a person leaves them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localstore import archive
from localstore.store import BlueprintStore

from .conftest import StoreFactory
from .test_unrecorded_edits import PATH, V1, YAML
from .test_unrecorded_new_files import _dry_then_real

META = f"{PATH}.blueprint.meta.json"
ORPHAN = {"id": "11111111-1111-4111-8111-111111111111", "name": "Mine", "tags": ["by-hand"]}


@pytest.fixture
def bundle(stores: StoreFactory, tmp_path: Path) -> Path:
    src = stores("src")
    src.save(PATH, V1)
    out = tmp_path / "b.lsbundle"
    archive.export_bundle(src, out)
    return out


def _put_orphan(store: BlueprintStore, data: bytes) -> Path:
    path = store.abspath(META)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_an_import_keeps_an_orphan_meta_at_a_path_it_creates(
    stores: StoreFactory, bundle: Path, policy: str
) -> None:
    here = stores("here")
    orphan = json.dumps(ORPHAN).encode()
    path = _put_orphan(here, orphan)
    dry, real = _dry_then_real(here, bundle, policy)
    assert (real.action, real.status, real.target_path) == ("create", "done", YAML)
    assert (dry.action, dry.reason, dry.target_path) == (real.action, real.reason, YAML)
    assert META in real.reason and "data/recovered/" in real.reason
    assert json.loads(path.read_text())["id"] == here.load(PATH).id
    (kept,) = (here.paths.data / "recovered").glob(f"*/{META}")
    assert kept.read_bytes() == orphan
    problems = [p for p in here.check().problems if p["kind"] == "edit-kept"]
    assert [p["path"] for p in problems] == [META]
    assert str(kept) in problems[0]["detail"]


def test_an_import_replaces_the_leftover_of_a_move_quietly(
    stores: StoreFactory, bundle: Path
) -> None:
    here = stores("here")
    here.save("elsewhere/x", "x: 1\n")
    _put_orphan(here, here.abspath("elsewhere/x.blueprint.meta.json").read_bytes())
    dry, real = _dry_then_real(here, bundle, "skip")
    assert (dry.action, dry.reason) == (real.action, real.reason) == ("create", "")
    assert not (here.paths.data / "recovered").exists()
    assert here.check().clean


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_an_import_moving_a_blueprint_onto_an_orphan_meta_keeps_it(
    stores: StoreFactory, tmp_path: Path, policy: str
) -> None:
    # The bundle has the blueprint at PATH, this home at another path: the import moves it
    # there (store.save with its id), whose meta's rename found the orphan and failed.
    src, here = stores("src"), stores("here")
    bp = src.save("elsewhere/x", V1)
    archive.import_bundle(here, _exported(src, tmp_path / "one.lsbundle"))
    src.move("elsewhere/x", PATH)
    bundle = _exported(src, tmp_path / "two.lsbundle")
    orphan = json.dumps(ORPHAN).encode()
    path = _put_orphan(here, orphan)
    dry, real = _dry_then_real(here, bundle, policy)
    assert (real.status, real.target_path) == ("done", YAML), real
    assert (dry.action, dry.reason) == (real.action, real.reason)
    assert META in real.reason and "data/recovered/" in real.reason
    assert here.load(PATH).id == bp.id
    assert json.loads(path.read_text())["id"] == bp.id
    (kept,) = (here.paths.data / "recovered").glob(f"*/{META}")
    assert kept.read_bytes() == orphan


def _exported(store: BlueprintStore, out: Path) -> Path:
    archive.export_bundle(store, out)
    return out
