"""Bad arguments to save, list and search are refused with InvalidInputError (or
LimitExceededError) and a hint, never a builtin exception from deep inside or a silent misreading."""

from __future__ import annotations

from typing import Any

import pytest

from localstore.errors import InvalidInputError, LimitExceededError


def _deep_mapping(levels: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    inner = top
    for _ in range(levels):
        inner["a"] = {}
        inner = inner["a"]
    return top


def test_saving_a_mapping_nested_beyond_the_recursion_limit_is_a_limit_error(store) -> None:
    with pytest.raises(LimitExceededError, match="nested too deeply") as info:
        store.save("deep/x", _deep_mapping(50_000))
    assert "max_depth" in info.value.hint
    assert store.count() == 0


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda s: s.list(tag=["x"]), "tag"),
        (lambda s: s.list(folder=5), "folder"),
        (lambda s: s.list(limit=-1), "limit"),
        (lambda s: s.list(limit=5, offset=-5), "offset"),
        (lambda s: s.list(limit=2.5), "limit"),
        (lambda s: s.list(limit=True), "limit"),
        (lambda s: s.search("deploy", limit=None), "limit"),
        (lambda s: s.search("deploy", limit=-1), "limit"),
        (lambda s: s.search("deploy", limit=2.9), "limit"),
        (lambda s: s.search("deploy", folder=5), "folder"),
        (lambda s: s.search("deploy", tag=["x"]), "tag"),
    ],
)
def test_bad_paging_and_filter_arguments_are_invalid_input(store, call: Any, word: str) -> None:
    store.save("a/deploy", "deploy: 1\n", tags=["x"])
    with pytest.raises(InvalidInputError, match=word) as info:
        call(store)
    assert info.value.hint


def test_paging_arguments_in_range_still_page(store) -> None:
    for i in range(5):
        store.save(f"a/deploy{i}", f"deploy: {i}\n")
    assert len(store.list(limit=0)) == 0
    assert [i.path for i in store.list(limit=2, offset=1)] == [
        "a/deploy1.blueprint.yaml",
        "a/deploy2.blueprint.yaml",
    ]
    assert len(store.list(offset=3)) == 2  # an offset without a limit skips too
    assert len(store.search("deploy", limit=3)) == 3
