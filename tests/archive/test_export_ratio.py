"""Export never writes a bundle that import refuses as a zip bomb: real blueprints can be
repetitive enough to deflate past the reader's ratio cap."""

from __future__ import annotations

import zipfile
from pathlib import Path

from localstore import archive
from localstore.blueprint import MAX_META_BYTES, encode_meta
from tests.archive.conftest import StoreFactory, tree


def test_a_repetitive_blueprint_and_a_meta_at_the_limit_round_trip(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    # A 2 MiB script of one repeated line deflates ~400 times; a description filling the meta to
    # exactly its 1 MiB limit with one letter, ~1000 times. Import caps the ratio at 200.
    steps = "run: |\n" + "  echo hi\n" * (2 * 1024 * 1024 // 10)
    big = src.save("p/steps", steps)
    meta = src.save("p/meta", "a: 1\n", description="d")
    room = MAX_META_BYTES - len(encode_meta(src.load(meta.id).meta))
    src.save("p/meta", "a: 1\n", description="d" * (room + 1), id=meta.id)
    assert len((src.root / "p/meta.blueprint.meta.json").read_bytes()) == MAX_META_BYTES
    small = src.save("p/small", "".join(f"k{i}: v{i}\n" for i in range(20)))
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    dst = stores("dst")
    result = archive.import_bundle(dst, bundle)  # before: BundleLimitError, "a zip bomb?"
    assert result.counts() == {"create": 3}
    assert tree(dst) == tree(src)
    assert {big.id, meta.id, small.id} == {i.id for i in dst.list()}
    with zipfile.ZipFile(bundle) as zf:
        methods = {i.filename: i.compress_type for i in zf.infolist()}
    # Only what would pass the cap is stored uncompressed; the rest is still deflated.
    assert methods["blueprints/p/steps.blueprint.yaml"] == zipfile.ZIP_STORED
    assert methods["blueprints/p/meta.blueprint.meta.json"] == zipfile.ZIP_STORED
    assert methods["blueprints/p/small.blueprint.yaml"] == zipfile.ZIP_DEFLATED
    assert methods["manifest.json"] == zipfile.ZIP_DEFLATED
