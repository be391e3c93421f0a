"""A bundle's meta files are hostile JSON: whatever Python's json makes of them, import refuses
them with a BundleFormatError naming the file, before anything is written, and a store whose
folder holds such a meta file still opens (the blueprint is flagged, as for any bad meta file).

Found by crafting: a meta of 100,000 nested brackets raised RecursionError, an integer of 5,000
digits a ValueError, and a lone surrogate escape a UnicodeEncodeError while hashing, each
reported by the CLI as an unexpected error to report; the first two also stopped
``localstore.open`` when such a file lay in the blueprints folder. NaN and Infinity were taken,
and neither the cloud tier nor its client (``allow_nan=False``) can carry them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from localstore import archive
from localstore.errors import BundleFormatError

from . import zipcraft as z
from .conftest import StoreFactory

BAD_VALUES = {
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "deep-but-under-the-interpreter-limit": b"[" * 900 + b"]" * 900,
    "long-integer": b"1" * 5000,
    "lone-surrogate": b'"a\\ud800b"',
    "nan": b"NaN",
    "infinity": b"-Infinity",
    "overflowing-float": b"1e999",
}


class _OddMeta(z.Blueprint):
    """A blueprint whose meta file holds ``extra`` as the value of an extra key."""

    def __init__(self, path: str, extra: bytes) -> None:
        super().__init__(path)
        self.extra = extra

    def meta_bytes(self) -> bytes:
        head = f'{{"id": "{self.id}", "name": "odd", "x": '.encode()
        return head + self.extra + b"}"


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
def test_a_bundle_meta_json_cannot_escape_the_error_tree(
    stores: StoreFactory, tmp_path: Path, kind: str
) -> None:
    store = stores("home")
    bundle = tmp_path / "odd.lsbundle"
    good = z.Blueprint("f/good.blueprint.yaml")
    odd = _OddMeta("f/odd.blueprint.yaml", BAD_VALUES[kind])
    bundle.write_bytes(z.build(z.bundle_entries([good, odd])))
    with pytest.raises(BundleFormatError, match=r"f/odd\.blueprint\.meta\.json"):
        archive.import_bundle(store, bundle)
    assert store.count() == 0


def test_fine_json_in_a_bundle_meta_is_kept(stores: StoreFactory, tmp_path: Path) -> None:
    # The checks above take nothing JSON allows: an escaped pair (an emoji), nesting to the
    # limit, big but convertible numbers.
    store = stores("home")
    bundle = tmp_path / "fine.lsbundle"
    nested = b"[" * 62 + b"1" + b"]" * 62  # levels 2..63 under the meta object
    fine = _OddMeta(
        "f/fine.blueprint.yaml", b'{"e": "\\ud83d\\ude00", "n": ' + nested + b', "b": 1e300}'
    )
    bundle.write_bytes(z.build(z.bundle_entries([fine])))
    archive.import_bundle(store, bundle)
    meta = store.load("f/fine").meta
    assert meta.extra["x"]["e"] == "\N{GRINNING FACE}"
    assert meta.extra["x"]["b"] == 1e300


@pytest.mark.parametrize("kind", ["deep", "long-integer", "lone-surrogate", "nan"])
def test_a_store_opens_with_such_a_meta_file_in_its_folder(tmp_path: Path, kind: str) -> None:
    home = tmp_path / "home"
    with localstore.open(home=home) as store:
        bp = store.save("a/x", "a: 1\n")
        store.save("a/y", "b: 1\n")
        meta_file = store.root / "a" / "x.blueprint.meta.json"
    odd = f'{{"id": "{bp.id}", "name": "x", "x": '.encode() + BAD_VALUES[kind] + b"}"
    meta_file.write_bytes(odd)
    with localstore.open(home=home) as store:
        assert store.load("a/y").content == "b: 1\n"
        problems = [p for p in store.check().problems if p["path"] == "a/x.blueprint.yaml"]
        assert problems and "invalid meta file" in problems[0]["detail"], problems
    assert meta_file.read_bytes() == odd  # reported, never rewritten
