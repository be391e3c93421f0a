"""A blueprint whose meta is at its 1 MiB limit: a keep-both copy (whose name grows) cannot be
saved, and the plan says so before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore import archive
from localstore.blueprint import MAX_META_BYTES, encode_meta
from tests.archive.conftest import StoreFactory


@pytest.mark.parametrize("policy", ["keep-both", "merge"])
def test_a_copy_whose_meta_cannot_fit_is_refused_in_the_plan(
    stores: StoreFactory, tmp_path: Path, policy: str
) -> None:
    src = stores("src")
    bp = src.save("p/x", "a: 1\n", description="d")
    room = MAX_META_BYTES - len(encode_meta(src.load(bp.id).meta))
    src.save("p/x", "a: 1\n", description="d" * (room + 1), id=bp.id)
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    dst = stores("dst")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    src.save("p/x", "a: source\n", id=bp.id)
    dst.save("p/x", "a: here\n", id=bp.id)
    archive.export_bundle(src, tmp_path / "v2.lsbundle")
    # Before: the plan (and a dry run) promised a keep-both copy, which then failed to save.
    (planned,) = archive.import_bundle(
        dst, tmp_path / "v2.lsbundle", on_conflict=policy, dry_run=True
    ).items
    assert (planned.action, planned.status) == ("refused", "failed")
    assert "meta file would be over" in planned.error
    result = archive.import_bundle(dst, tmp_path / "v2.lsbundle", on_conflict=policy)
    assert [(i.action, i.status) for i in result.items] == [("refused", "failed")]
    assert result.failed == 1 and dst.count() == 1
    assert dst.load(bp.id).content == "a: here\n"
