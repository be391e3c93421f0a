"""A dry run over a file nobody recorded yet at a bundle path says what the import then does.

An import records such a file (an editor's, made while no watcher ran) before it plans, and the
file then holds the path: the --on-conflict policy decides. A dry run may not record it, and
planned a "create" there; one beside a file of another case, or over a file that does not parse,
said "create" too, and the import's save then failed on it.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from localstore import archive
from localstore.store import BlueprintStore

from .conftest import StoreFactory
from .test_unrecorded_edits import EDIT, PATH, V1, YAML, _merger_from, _state

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UNRECORDED = f"a file not recorded yet ({YAML})"


def _put(store: BlueprintStore, rel: str, text: str) -> Path:
    """Write a file into the store's folder behind its back (no watcher runs)."""
    f = store.abspath(rel)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f


@pytest.fixture
def bundle(stores: StoreFactory, tmp_path: Path) -> Path:
    src = stores("src")
    src.save(PATH, V1)
    out = tmp_path / "b.lsbundle"
    archive.export_bundle(src, out)
    return out


def _dry_then_real(
    store: BlueprintStore, bundle: Path, policy: str
) -> tuple[archive.ImportItem, archive.ImportItem]:
    """The dry run's item (it must change nothing), then the import's, on the same home."""
    merger = _merger_from(V1) if policy == "merge" else None
    before = _state(store)
    dry = archive.import_bundle(store, bundle, on_conflict=policy, merger=merger, dry_run=True)
    assert _state(store) == before, "the dry run changed the index or the files"
    real = archive.import_bundle(store, bundle, on_conflict=policy, merger=merger)
    [d], [r] = dry.items, real.items
    return d, r


def _unstamped(path: str | None) -> str | None:
    return None if path is None else re.sub(r" \(import \d{8}T\d{6}Z\)", " (import STAMP)", path)


def _same_plan(dry: archive.ImportItem, real: archive.ImportItem, made_up: str = "") -> None:
    """The dry run planned what the import did; a holder's id the recording made up (unknown
    to a dry run, which records nothing) is named as the file it was."""
    reason = real.reason.replace(made_up, UNRECORDED) if made_up else real.reason
    target = "" if made_up and real.target_id == made_up else real.target_id
    # A copy's name holds the second its import planned it: the dry run's may be a second
    # before the import's (CI failed on 000501Z against 000502Z).
    want = (real.action, reason, _unstamped(real.target_path), real.skip_cause, real.error, target)
    got = (
        dry.action,
        dry.reason,
        _unstamped(dry.target_path),
        dry.skip_cause,
        dry.error,
        dry.target_id,
    )
    assert got == want
    assert real.status == ("failed" if real.action == "refused" else "done"), real.error


@pytest.mark.parametrize(
    ("policy", "action"),
    [
        ("skip", "skip"),
        ("overwrite", "overwrite"),
        ("keep-both", "keep-both"),
        ("merge", "keep-both"),
    ],
)
def test_a_new_file_at_the_bundles_path_is_planned_as_a_path_conflict(
    stores: StoreFactory, bundle: Path, policy: str, action: str
) -> None:
    here = stores("here")
    _put(here, YAML, EDIT)

    dry, real = _dry_then_real(here, bundle, policy)

    mine = here.load(PATH)  # recorded by the import, with an id it made up
    assert dry.action == action and dry.reason.startswith(f"path taken by {UNRECORDED}")
    _same_plan(dry, real, made_up=mine.id)
    assert mine.content == (V1 if policy == "overwrite" else EDIT)
    assert here.load_revision(mine.id, 1).content == EDIT  # nothing lost


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_new_file_holding_the_bundles_version_is_unchanged(
    stores: StoreFactory, bundle: Path, policy: str
) -> None:
    here = stores("here")
    _put(here, YAML, V1)

    dry, real = _dry_then_real(here, bundle, policy)

    assert (dry.action, dry.reason) == ("unchanged", "same content at path")
    _same_plan(dry, real, made_up=here.load(PATH).id)


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_pair_copied_in_by_hand_is_the_bundles_own_blueprint(
    stores: StoreFactory, bundle: Path, policy: str
) -> None:
    """The bundle's YAML and meta put here by hand (unzipped, say): identical, not a create."""
    here = stores("here")
    _put(here, YAML, V1)
    with zipfile.ZipFile(bundle) as zf:
        meta = zf.read(f"blueprints/{PATH}.blueprint.meta.json").decode()
    _put(here, f"{PATH}.blueprint.meta.json", meta)

    dry, real = _dry_then_real(here, bundle, policy)

    assert (dry.action, dry.reason, dry.target_id) == ("unchanged", "identical", real.id)
    _same_plan(dry, real)


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_file_of_the_paths_name_in_another_case_is_refused_in_the_plan(
    stores: StoreFactory, bundle: Path, policy: str
) -> None:
    here = stores("here")
    theirs = _put(here, "personal/Plan.blueprint.yaml", EDIT)

    dry, real = _dry_then_real(here, bundle, policy)

    assert dry.action == "refused" and "case from personal/Plan.blueprint.yaml, a file" in dry.error
    _same_plan(dry, real)
    assert theirs.read_text() == EDIT and not here.abspath(YAML).exists()


def test_the_refusal_names_the_other_file_and_the_ways_on(
    stores: StoreFactory, bundle: Path
) -> None:
    """It said "... from the file Plan.blueprint.yaml in the same folder (rename one of them)":
    no folder, and no word that the file is not recorded yet, nor that once it is the bundle's
    blueprint is a path conflict its --on-conflict decides (as for a file at the very path)."""
    here = stores("here")
    _put(here, "personal/Plan.blueprint.yaml", EDIT)
    [item] = archive.import_bundle(here, bundle).items
    assert item.error == (
        f"{YAML} differs only by case from personal/Plan.blueprint.yaml, a file here not "
        "recorded yet (move or rename that file; or import again once it is recorded "
        "('localstore check --fix' records it): it then holds the path, and --on-conflict "
        "decides, as for a blueprint here at the bundle's path)"
    )
    assert here.check(fix=True).fixed  # (what the hint says to do, then:)
    [item] = archive.import_bundle(here, bundle, on_conflict="keep-both").items
    assert item.action == "keep-both" and item.status == "done", item


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_folder_of_the_paths_name_in_another_case_is_refused_in_the_plan(
    stores: StoreFactory, bundle: Path, policy: str
) -> None:
    here = stores("here")
    here.save("Personal/other", "a: 1\n")

    dry, real = _dry_then_real(here, bundle, policy)

    assert dry.action == "refused" and "differs only by case from the folder" in dry.error
    _same_plan(dry, real)


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_new_file_that_does_not_parse_is_refused_in_the_plan(
    stores: StoreFactory, bundle: Path, policy: str
) -> None:
    here = stores("here")
    _put(here, YAML, "steps: [1, unfinished\n")

    dry, real = _dry_then_real(here, bundle, policy)

    assert dry.action == "refused" and "not a valid blueprint" in dry.error
    _same_plan(dry, real)
    assert here.abspath(YAML).read_text() == "steps: [1, unfinished\n"


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_rename_onto_a_new_file_waits(stores: StoreFactory, tmp_path: Path, policy: str) -> None:
    """The source renamed a blueprint to a path where a file sits here, unrecorded: the import
    records it, and the move is skipped (the path is held), not planned as a move."""
    src, here = stores("src"), stores("here")
    bp = src.save("personal/old", V1)
    archive.export_bundle(src, tmp_path / "b0.lsbundle")
    archive.import_bundle(here, tmp_path / "b0.lsbundle")
    src.move(bp.id, PATH)
    archive.export_bundle(src, tmp_path / "b1.lsbundle")
    _put(here, YAML, EDIT)

    dry, real = _dry_then_real(here, tmp_path / "b1.lsbundle", policy)

    assert (dry.action, dry.skip_cause) == ("skip", "path-held")
    _same_plan(dry, real, made_up=here.load(PATH).id)
    assert here.load(bp.id).path == "personal/old.blueprint.yaml"
