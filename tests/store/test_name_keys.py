"""Names that are one name on macOS (APFS) or Windows (NTFS) are one path key (files.path_key).

The key is the Unicode canonical caseless form, stored composed (docs/portability.md, "Case and
Unicode form of names"). The key before core v11, ``casefold(NFC(path))``, gave the Greek pairs
below two keys: both were saved, two files here and one file on a Mac.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from localstore import archive
from localstore import files as fs
from localstore.errors import UnsafePathError
from localstore.store import open_store

# (first, second): one name on APFS; the second pair on NTFS too. Two keys before core v11.
PAIRS = [
    ("greek/\u1fd3", "greek/\u03aa\u0301"),  # ΐ, Ϊ́
    ("greek/\u03aa\u0342", "greek/\u1fd7"),  # Ϊ͂, ῗ
]
IDS = ["dialytika-tonos", "dialytika-perispomeni"]


def _d145(text: str) -> str:
    """The canonical caseless form (Unicode D145), composed: what APFS compares."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).casefold())


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=IDS)
def test_pairs_share_a_key(first: str, second: str) -> None:
    assert fs.path_key(fs.normalize_path(first)) == fs.path_key(fs.normalize_path(second))


# Any character, and often the ones whose forms differ: Greek with stacked marks, the marks
# alone (ypogegrammeni folds to iota), sharp s, the Kelvin sign, upper and lower ASCII.
_CHARS = hs.one_of(
    hs.characters(codec="utf-8"),
    hs.sampled_from("\u0390\u03aa\u03ca\u1fd3\u1fd7\u1fb3\u0301\u0308\u0342\u0345\u00dfK\u212aaA"),
)


# (A list joined: hs.text(alphabet=_CHARS) drew from the first strategy alone.)
@given(hs.lists(_CHARS, max_size=12).map("".join))
def test_key_is_the_caseless_form_in_either_unicode_form(text: str) -> None:
    """The ASCII fast path and the cache give the D145 form; NFC and NFD text get one key."""
    assert fs.path_key(text) == _d145(text)
    assert fs.path_key(unicodedata.normalize("NFD", text)) == fs.path_key(text)


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=IDS)
def test_save_refuses_a_name_one_with_another(tmp_path: Path, first: str, second: str) -> None:
    with open_store(tmp_path / "home") as store:
        store.save(first, "side: first\n")
        with pytest.raises(UnsafePathError, match="differs only by case"):
            store.save(second, "side: second\n")
        assert [i.path for i in store.list()] == [fs.normalize_path(first)]


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=IDS)
def test_move_refuses_a_name_one_with_another(tmp_path: Path, first: str, second: str) -> None:
    with open_store(tmp_path / "home") as store:
        store.save(first, "side: first\n")
        store.save("greek/other", "side: second\n")
        with pytest.raises(UnsafePathError, match="differs only by case"):
            store.move("greek/other", second)
        assert store.load("greek/other").content == "side: second\n"


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=IDS)
def test_import_skips_a_name_one_with_another(tmp_path: Path, first: str, second: str) -> None:
    """An import does not write the bundle's blueprint onto a name that is one with a held one:
    it is skipped as a taken path, and the report says which blueprint holds it."""
    with open_store(tmp_path / "src") as src:
        src.save(second, "side: second\n")
        archive.export_bundle(src, tmp_path / "b.lsbundle")
    with open_store(tmp_path / "dst") as dst:
        held = dst.save(first, "side: first\n")
        report = archive.import_bundle(dst, tmp_path / "b.lsbundle")
        (item,) = report.items
        assert (item.action, item.reason) == ("skip", f"path taken by {held.id}")
        assert [i.path for i in dst.list()] == [fs.normalize_path(first)]
