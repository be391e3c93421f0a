"""Bad arguments to save, list and search are refused with InvalidInputError (or
LimitExceededError) and a hint, never a builtin exception from deep inside or a silent misreading."""

from __future__ import annotations

from typing import Any

import pytest

from localstore.errors import InvalidInputError, LimitExceededError, UnsafePathError


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


@pytest.mark.parametrize(
    ("requests", "words"),
    [
        ([{"path": "a", "content": {"i": 1}}], "item 0 is a dict, not a SaveRequest"),
        ({"path": "a"}, "not a dict"),
        ("a.yaml", "not a str"),
        (None, "not a NoneType"),
    ],
)
def test_save_many_refuses_what_is_not_a_list_of_save_requests(
    store, requests: Any, words: str
) -> None:
    """A dict of save()'s arguments reached the save path and failed there with an
    AttributeError ('dict' object has no attribute 'fields')."""
    with pytest.raises(InvalidInputError, match=words) as info:
        store.save_many(requests)
    assert "SaveRequest(path=" in info.value.hint
    assert store.count() == 0


def test_save_many_takes_any_iterable_of_save_requests(store) -> None:
    from localstore import SaveRequest

    results = store.save_many(SaveRequest(path=f"g/{i}", content={"i": i}) for i in range(3))
    assert [r.path for r in results] == [
        "g/0.blueprint.yaml",
        "g/1.blueprint.yaml",
        "g/2.blueprint.yaml",
    ]


@pytest.mark.parametrize(
    "path",
    [
        "a" * 1100,  # longer than MAX_PATH_CHARS
        "team/tab\there",  # a control character
        "team/trailing. /x",  # a part ending with a space
        "team/trailing./x",  # ... or a dot
        "team/con.yaml",  # a reserved device name
        "../x",
        "/abs",
        "team\\x",
    ],
)
def test_every_unsafe_path_says_how_to_fix_it(store, path: str) -> None:
    """Four of the path refusals had no hint (length, control characters, a trailing space or
    dot, a Windows device name): the person saw what was wrong, not what to do."""
    with pytest.raises(UnsafePathError) as info:
        store.save(path, "steps: []\n")
    assert info.value.hint, info.value.message
    assert store.count() == 0


@pytest.mark.parametrize(
    "meta",
    [
        {"name": "a\x00b"},
        {"description": "x\x00"},
        {"author": "\x00"},
        {"tags": ["ok", "t\x00"]},
    ],
)
def test_a_nul_in_a_meta_mapping_is_refused_like_one_in_the_keywords(store, meta: dict) -> None:
    """save(name="a\\x00b") is refused (it could never sync: jsonb holds no NUL), but the same
    text given through meta= was saved."""
    from localstore.errors import InvalidMetaError

    with pytest.raises(InvalidMetaError, match="NUL") as info:
        store.save(
            "w/a", "steps: []\n", meta={"id": "6f1c0f0e-0000-4000-8000-000000000001", **meta}
        )
    assert info.value.hint
    assert store.count() == 0
