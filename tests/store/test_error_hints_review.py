"""Errors an app meets for bad input say how to fix it (``hint``), as the rest of the tree does.

Three carried none: YAML bytes that are not UTF-8, a mapping holding a value YAML cannot
represent (a Decimal, an object), and a str given to app data's ``binary`` format.
"""

from __future__ import annotations

import decimal
from pathlib import Path

import pytest

import localstore
from localstore.errors import LocalStoreError


def test_bad_content_errors_carry_a_hint(tmp_path: Path) -> None:
    with localstore.open(home=tmp_path / "h") as store:
        kv = localstore.KVStore(store.index)
        calls = {
            "non-UTF-8 YAML": lambda: store.save("a/u", b"\xff\xfe"),
            "a Decimal in a mapping": lambda: store.save("a/d", {"x": decimal.Decimal("1.5")}),
            "a str as binary": lambda: kv.save("k", "text", format="binary"),
        }
        for name, call in calls.items():
            with pytest.raises(LocalStoreError) as info:
                call()
            assert info.value.hint, name
        assert store.list() == [] and kv.keys() == []  # nothing written
        kv.close()
