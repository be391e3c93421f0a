"""Planning an import looks blueprints up by index, never by scanning the table per blueprint.

The plan asked ``store.row()`` for each id and free path it probed. A reference that misses is
looked for among deleted blueprints at that path, a query no index serves (a scan of every row,
for an error message the plan never showed): a keep-both copy's id and its new path each missed,
so 20,000 copies into a home of 20,000 blueprints spent minutes planning. And an id not here was
tried as a path too: a blueprint at ``<that id>.blueprint.yaml`` answered for it.

Counted, not timed: every statement the plan runs is traced, and its query plan asked of SQLite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localstore import _bundle_plan, archive
from localstore.store import SaveRequest
from tests.store.query_plans import blueprint_scans

from .conftest import StoreFactory

N = 40


def _scans_while_planning(store: Any, bundle: Path, on_conflict: str) -> list[str]:
    """The statements run by the plan that scan the whole blueprints table, one per run."""
    with archive.open_bundle(bundle, staging_root=store.paths.cache) as verified:
        items: list[Any] = []
        scans = blueprint_scans(
            store,
            lambda: items.extend(archive.plan_import(store, verified, on_conflict=on_conflict)),
        )
    assert len(items) == N
    return scans


def test_a_keep_both_plan_does_not_scan_the_table_per_blueprint(
    stores: StoreFactory, tmp_path: Path
) -> None:
    source, here = stores("source"), stores("here")
    paths = [f"f/bp-{i}" for i in range(N)]
    source.save_many([SaveRequest(path=p, content=f"name: {p}\n") for p in paths])
    # Other blueprints at the same paths, with other content: each is a path conflict, and
    # keep-both probes a copy id and a free path for every one.
    here.save_many([SaveRequest(path=p, content=f"name: {p}\nhere: 1\n") for p in paths])
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(source, bundle)
    scans = _scans_while_planning(here, bundle, "keep-both")
    assert len(scans) < N, scans[:3]


def test_an_id_missing_here_is_not_found_at_a_path_named_after_it(
    stores: StoreFactory, tmp_path: Path
) -> None:
    """A blueprint at ``<id>.blueprint.yaml`` is not the blueprint with that id."""
    source, here = stores("source"), stores("here")
    source.save("notes/plan", "name: plan\n")
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(source, bundle)
    # The copy keep-both would make of it (its id is derived from the bundle's): a blueprint
    # here named after that id must not pass for the copy, already made.
    with archive.open_bundle(bundle, staging_root=here.paths.cache) as verified:
        copy_id = _bundle_plan._copy_id(verified.entries[0])
    here.save("notes/plan", "name: mine\n")
    here.save(copy_id, "name: named after an id\n")
    result = archive.import_bundle(here, bundle, on_conflict="keep-both")
    [item] = result.items
    assert item.action == "keep-both", (item.action, item.reason)
    assert item.target_id != here.resolve(copy_id).id
    assert here.load(item.target_id).content == "name: plan\n"
