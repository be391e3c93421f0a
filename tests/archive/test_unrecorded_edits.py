"""An import into a store whose files hold an edit the index has not recorded yet.

A store kept open through the Python API with no watcher learns of an edit on disk only when
something reads or writes that blueprint. The plan compared the bundle with the index alone: a
bundle holding the indexed version was "unchanged (identical)" under every policy, so overwrite
did not apply it and the report said so; a bundle made from the indexed version was an "update",
whose save recorded the edit first and then failed "changed here during the import" although the
edit came before it. The import now records such edits before it plans, and a dry run, which
writes nothing, plans against the files as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from localstore import archive
from localstore._cli_bundle import _sync_merger
from localstore.store import BlueprintStore

from .conftest import StoreFactory, tree
from .test_dry_run import _index_rows

PATH = "personal/plan"
YAML = f"{PATH}.blueprint.yaml"
V1 = "name: plan\nsteps: 1\n"
EDIT = "name: plan\nsteps: 2  # my edit\n"
SOURCE = "name: plan\nsteps: 1\nextra: from the source\n"


def _edit_on_disk(store: BlueprintStore, text: str) -> None:
    """Change the YAML behind the store's back (no watcher runs: the index does not know)."""
    f = store.abspath(YAML)
    f.write_text(text)
    os.utime(f, ns=(1, 10**18))  # (its size differs too: no timestamp granularity matters)


def _state(store: BlueprintStore) -> tuple[Any, dict[str, bytes]]:
    with store.index.read() as cur:
        return _index_rows(cur), tree(store)


def _merger_from(base: str) -> archive.Merger:
    """The sync ladder's merger (what the CLI uses) given ``base``: import passes it none."""
    ladder = _sync_merger()
    assert ladder is not None, "the sync package ships with localstore's distribution"
    return lambda _, mine, theirs: ladder(base, mine, theirs)


def _plan_and_import(
    store: BlueprintStore, bundle: Path, policy: str
) -> tuple[archive.ImportResult, archive.ImportResult]:
    """A dry run (which must change nothing), then the import; both results."""
    merger = _merger_from(V1) if policy == "merge" else None
    before = _state(store)
    dry = archive.import_bundle(store, bundle, on_conflict=policy, merger=merger, dry_run=True)
    assert _state(store) == before, "the dry run changed the index or the files"
    real = archive.import_bundle(store, bundle, on_conflict=policy, merger=merger)
    assert [(i.action, i.reason) for i in dry.items] == [(i.action, i.reason) for i in real.items]
    assert [(i.status, i.error) for i in real.items] == [("done", "")]
    return dry, real


def _origins(store: BlueprintStore, ref: str) -> list[str]:
    return [r.origin for r in store.history(ref)]


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_bundle_of_the_indexed_version_is_planned_against_the_edit(
    stores: StoreFactory, tmp_path: Path, policy: str
) -> None:
    """The bundle holds what the index holds; the file holds a newer edit. Recorded first, that
    edit makes the bundle's version an older one: overwrite puts it back (the edit stays in
    history), every other policy leaves the edit as it is and says why."""
    store = stores("home")
    bp_id = store.save(PATH, V1).id
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(store, bundle)
    _edit_on_disk(store, EDIT)

    _, real = _plan_and_import(store, bundle, policy)

    item = real.items[0]
    if policy == "overwrite":
        assert (item.action, item.reason) == ("overwrite", "")
        assert store.abspath(YAML).read_text() == V1
        assert _origins(store, bp_id) == ["import", "external", "local"]
        assert store.load_revision(bp_id, 2).content == EDIT  # nothing lost
    else:
        assert (item.action, item.reason) == ("unchanged", "this version is already in history")
        assert store.abspath(YAML).read_text() == EDIT
        assert _origins(store, bp_id) == ["external", "local"]


@pytest.fixture
def made_from_here(stores: StoreFactory, tmp_path: Path) -> tuple[BlueprintStore, str, Path]:
    """A home holding V1 (imported), edited on disk to EDIT, and a bundle whose version the
    source made from V1."""
    src, here = stores("src"), stores("here")
    bp_id = src.save(PATH, V1).id
    archive.export_bundle(src, tmp_path / "b0.lsbundle")
    archive.import_bundle(here, tmp_path / "b0.lsbundle")
    src.save(PATH, SOURCE)
    archive.export_bundle(src, tmp_path / "b1.lsbundle")
    _edit_on_disk(here, EDIT)
    return here, bp_id, tmp_path / "b1.lsbundle"


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_bundle_made_from_the_indexed_version_conflicts_with_the_edit(
    made_from_here: tuple[BlueprintStore, str, Path], policy: str
) -> None:
    """The edit here and the source's change both came from V1: changed on both sides, decided by
    the policy, not an update whose save then failed blaming the import."""
    store, bp_id, bundle = made_from_here

    _, real = _plan_and_import(store, bundle, policy)

    item = real.items[0]
    disk = store.abspath(YAML).read_text()
    if policy == "skip":
        assert (item.action, item.skip_cause) == ("skip", "conflict")
        assert item.reason == "changed on both sides"
        assert disk == EDIT
    elif policy == "overwrite":
        assert item.action == "overwrite" and disk == SOURCE
        assert store.load_revision(bp_id, 2).content == EDIT  # the edit stays in history
    elif policy == "keep-both":
        assert (item.action, item.reason) == ("keep-both", "changed on both sides")
        assert disk == EDIT
        assert store.load(item.target_id).content == SOURCE
    else:  # both sides changed other lines of V1: the merge of the edit keeps both changes
        assert (item.action, item.reason) == ("merge", "changed on both sides")
        assert disk == "name: plan\nsteps: 2  # my edit\nextra: from the source\n"
    assert _origins(store, bp_id)[-2:] == ["external", "import"]


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_an_edit_that_does_not_parse_is_left_as_it_is(
    made_from_here: tuple[BlueprintStore, str, Path], policy: str
) -> None:
    """An edit in progress (it does not parse) is not replaced, nor merged with: the dry run
    says so as the import does, from the file, without recording it."""
    store, bp_id, bundle = made_from_here
    _edit_on_disk(store, "name: plan\nsteps: [2, unfinished\n")

    _, real = _plan_and_import(store, bundle, policy)

    item = real.items[0]
    assert (item.action, item.skip_cause) == ("skip", "unparsable")
    assert item.reason.startswith(f"{YAML} does not parse here")
    assert store.abspath(YAML).read_text() == "name: plan\nsteps: [2, unfinished\n"
    assert _origins(store, bp_id) == ["import"]  # its last good revision, as before


@pytest.mark.parametrize(
    ("policy", "action"),
    [("skip", "skip"), ("overwrite", "overwrite"), ("keep-both", "keep-both")],
)
def test_a_file_not_recorded_yet_at_the_bundles_path_is_a_path_conflict(
    stores: StoreFactory, tmp_path: Path, policy: str, action: str
) -> None:
    """A file written where the bundle puts a new blueprint is recorded first (a new blueprint,
    as a save records it) and the policy decides; the save of a "create" failed on it, "already
    taken", whatever the policy."""
    src, here = stores("src"), stores("here")
    src.save(PATH, V1)
    archive.export_bundle(src, tmp_path / "b.lsbundle")
    mine = here.abspath(YAML)
    mine.parent.mkdir(parents=True)
    mine.write_text(EDIT)

    result = archive.import_bundle(here, tmp_path / "b.lsbundle", on_conflict=policy)

    [item] = result.items
    assert (item.action, item.status, item.error) == (action, "done", "")
    assert item.reason.startswith("path taken by ")
    ours = here.load(PATH)
    assert ours.content == (V1 if policy == "overwrite" else EDIT)
    assert here.load_revision(ours.id, 1).content == EDIT  # recorded, so nothing is lost
