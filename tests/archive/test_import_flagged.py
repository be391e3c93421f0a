"""An import never writes over a blueprint whose file here does not parse (flagged: an edit in
progress, which the index does not hold). Sync parks such a row and leaves the file as it is; an
import wrote the bundle's version over it and the person's bytes were gone (not in history, which
holds the last good revision, nor anywhere else), even under the default policy, skip, for a
bundle made from the version here. Now that blueprint is skipped, with the reason, and imported
by the next import once the file parses again."""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore import archive
from localstore.store import BlueprintStore

from .conftest import StoreFactory

BROKEN = "steps: [unclosed, my edit in progress\n"


def _flag(store: BlueprintStore, path: str) -> Path:
    file = store.root / path
    file.write_text(BROKEN)
    store.reconcile()  # as opening the store does: flagged, the last good version stays indexed
    assert store.row(path).flagged
    return file


def _skipped(result: archive.ImportResult) -> list[str]:
    return [it.reason for it in result.items if it.action == "skip"]


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_a_bundle_made_from_the_version_here_waits_for_the_file_to_parse(
    stores: StoreFactory, tmp_path: Path, policy: str
) -> None:
    src, dst = stores("src"), stores("dst")
    bp = src.save("team/flow", "steps: [one]\n")
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    src.save("team/flow", "steps: [one, two]\n")  # v1 is among v2's ancestors: an update here
    archive.export_bundle(src, tmp_path / "v2.lsbundle")
    file = _flag(dst, "team/flow.blueprint.yaml")
    merger = (lambda base, mine, theirs: theirs) if policy == "merge" else None

    result = archive.import_bundle(dst, tmp_path / "v2.lsbundle", on_conflict=policy, merger=merger)
    assert file.read_text() == BROKEN
    [reason] = _skipped(result)
    assert "does not parse here" in reason and "import again" in reason
    assert result.conflicts_skipped == 1  # the CLI exits 3: it needs the person

    file.write_text("steps: [one]\n")  # fixed back to the version the bundle was made from
    dst.reconcile()
    result = archive.import_bundle(dst, tmp_path / "v2.lsbundle", on_conflict=policy, merger=merger)
    assert [it.action for it in result.items] == ["update"]
    assert dst.load(bp.id).content == "steps: [one, two]\n"


@pytest.mark.parametrize("same_id", [True, False])
def test_overwrite_leaves_an_unparsable_file_as_it_is(
    stores: StoreFactory, tmp_path: Path, same_id: bool
) -> None:
    src, dst = stores("src"), stores("dst")
    src.save("team/flow", "steps: [theirs]\n")
    archive.export_bundle(src, tmp_path / "b.lsbundle")
    if same_id:  # changed on both sides
        archive.import_bundle(dst, tmp_path / "b.lsbundle")
        dst.save("team/flow", "steps: [mine]\n")
    else:  # another blueprint holds the path here
        dst.save("team/flow", "steps: [mine]\n")
    file = _flag(dst, "team/flow.blueprint.yaml")

    for dry_run in (True, False):
        result = archive.import_bundle(
            dst, tmp_path / "b.lsbundle", on_conflict="overwrite", dry_run=dry_run
        )
        assert [it.action for it in result.items] == ["skip"]
    assert file.read_text() == BROKEN
