"""Every document the store would refuse refuses the whole bundle, before anything is written.

Import checks the YAML it will write with the store's own check (``check_yaml``: the verdicts of
``parse_yaml`` without building the document), not a lighter one: a refusal that only
construction finds (an impossible date, an unknown tag, an unhashable key) must stop the bundle
too, not fail one blueprint halfway through an import.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore import archive
from localstore.errors import BundleFormatError, BundleLimitError

from . import zipcraft as z
from .conftest import StoreFactory, tree

GOOD = b"name: fine\nsteps: [a, b]\n"


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (b"a: [1, 2\n", BundleFormatError),
        (b"- a list\n- at the top\n", BundleFormatError),
        (b"# nothing but a comment\n", BundleFormatError),
        (b"when: 2024-13-45\n", BundleFormatError),
        (b"x: !unknown-tag value\n", BundleFormatError),
        (b"? [a, b]\n: unhashable key\n", BundleFormatError),
        (b"a: &a [*a]\n", BundleLimitError),
        (b"a: " + b"[" * 80 + b"]" * 80 + b"\n", BundleLimitError),
    ],
)
def test_one_bad_document_refuses_the_bundle(
    stores: StoreFactory, tmp_path: Path, bad: bytes, error: type[Exception]
) -> None:
    bps = [z.Blueprint(f"f/ok-{i}.blueprint.yaml", yaml=GOOD) for i in range(5)]
    bps.append(z.Blueprint("f/last.blueprint.yaml", yaml=bad))
    bundle = tmp_path / "b.lsbundle"
    bundle.write_bytes(z.build(z.bundle_entries(bps)))
    dst = stores("dst")
    with pytest.raises(error, match=r"last\.blueprint\.yaml"):
        archive.import_bundle(dst, bundle)
    assert dst.count() == 0 and tree(dst) == {}
    with pytest.raises(error):
        archive.import_bundle(dst, bundle, dry_run=True)  # the plan says so as well


def test_the_same_documents_import_when_good(stores: StoreFactory, tmp_path: Path) -> None:
    bps = [z.Blueprint(f"f/ok-{i}.blueprint.yaml", yaml=GOOD) for i in range(6)]
    bundle = tmp_path / "b.lsbundle"
    bundle.write_bytes(z.build(z.bundle_entries(bps)))
    dst = stores("dst")
    assert archive.import_bundle(dst, bundle).counts() == {"create": 6}
    assert dst.count() == 6
