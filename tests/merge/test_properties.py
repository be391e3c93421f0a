"""Hypothesis properties of the merge ladder.

Documents are block YAML with a comment above every top-level key, the way people write them;
each side is the base with some keys changed, deleted or added.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.merge import MISSING, Version, merge, merge3_text

PROFILE = settings.get_profile("localstore-merge")
KEYS = [f"k{i}" for i in range(8)]

scalars = st.one_of(
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
    st.text(alphabet="abxyz ", max_size=6).map(str.strip),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["p", "q", "r"]), scalars, max_size=3),
)
docs = st.dictionaries(st.sampled_from(KEYS), values, min_size=1, max_size=6)
scalar_docs = st.dictionaries(st.sampled_from(KEYS), scalars, min_size=1, max_size=6)


def render(doc: dict[str, Any]) -> str:
    """Block YAML with a comment line above each top-level key (and a fixed first key, so that
    no side is ever an empty document)."""
    parts = ["# a blueprint\nkind: test\n"]
    for key, value in doc.items():
        body = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False)
        parts.append(f"# about {key}\n{body}")
    return "".join(parts)


@st.composite
def edits_of(draw: st.DrawFn, base: dict[str, Any], vals: st.SearchStrategy[Any]) -> dict:
    """The base with some keys changed or deleted and some new keys added."""
    out: dict[str, Any] = {}
    for key, value in base.items():
        action = draw(st.sampled_from(["keep", "keep", "change", "delete"]))
        if action == "keep":
            out[key] = value
        elif action == "change":
            out[key] = draw(vals)
    for key in draw(st.lists(st.sampled_from([f"n{i}" for i in range(4)]), max_size=2)):
        out[key] = draw(vals)
    return out


def parsed(text: str | None) -> Any:
    assert text is not None
    doc = yaml.safe_load(text)
    assert doc.pop("kind") == "test"
    return doc


@settings(PROFILE)
@given(st.data(), docs)
def test_both_sides_equal_gives_that_side(data: st.DataObject, base: dict) -> None:
    side = render(data.draw(edits_of(base, values)))
    out = merge3_text(render(base), side, side)
    assert (out.status, out.content) == ("clean", side)


@settings(PROFILE)
@given(st.data(), docs)
def test_only_one_side_changed_gives_that_side(data: st.DataObject, base: dict) -> None:
    b = render(base)
    side = render(data.draw(edits_of(base, values)))
    assert merge3_text(b, b, side).content == side
    assert merge3_text(b, side, b).content == side


@settings(PROFILE)
@given(st.data(), docs)
def test_changes_to_disjoint_keys_all_survive(data: st.DataObject, base: dict) -> None:
    local = data.draw(edits_of(base, values))
    remote = data.draw(edits_of(base, values))
    keys = set(base) | set(local)
    touched_l = {k for k in keys if not _eq(base.get(k, MISSING), local.get(k, MISSING))}
    # The remote may only touch keys the local left alone; keep the base's key order so that
    # undoing a remote edit does not turn into a move.
    remote = {
        k: base[k] if k in touched_l else remote[k]
        for k in [*base, *remote]
        if (k in touched_l and k in base) or (k not in touched_l and k in remote)
    }
    expected = {k: v for k, v in base.items()}
    for side in (local, remote):
        for key in set(base) | set(side):
            if key not in side:
                expected.pop(key, None)
            elif not _eq(base.get(key, MISSING), side[key]):
                expected[key] = side[key]
    out = merge3_text(render(base), render(local), render(remote))
    assert out.status == "clean", out.conflicts
    assert parsed(out.content) == expected


@settings(PROFILE)
@given(st.data(), scalar_docs)
def test_nothing_is_silently_lost(data: st.DataObject, base: dict) -> None:
    local = data.draw(edits_of(base, scalars))
    remote = data.draw(edits_of(base, scalars))
    out = merge3_text(render(base), render(local), render(remote))
    if out.status == "conflict":
        assert out.content is None and out.conflicts
        return
    result = parsed(out.content)
    for key in set(base) | set(local) | set(remote):
        b, lv, rv = (d.get(key, MISSING) for d in (base, local, remote))
        got = result.get(key, MISSING)
        if _eq(lv, rv):
            assert _eq(got, lv), key
        elif _eq(lv, b):
            assert _eq(got, rv), key
        elif _eq(rv, b):
            assert _eq(got, lv), key
        else:
            raise AssertionError(f"{key}: both sides changed differently, yet merged cleanly")


@settings(PROFILE)
@given(st.data(), docs)
def test_outcome_does_not_depend_on_which_side_is_local(data: st.DataObject, base: dict) -> None:
    local = render(data.draw(edits_of(base, scalars)))
    remote = render(data.draw(edits_of(base, scalars)))
    forward = merge3_text(render(base), local, remote)
    backward = merge3_text(render(base), remote, local)
    assert forward.status == backward.status
    if forward.status == "clean":
        assert parsed(forward.content) == parsed(backward.content)


@settings(PROFILE)
@given(st.data(), docs.filter(lambda d: len(d) >= 2))
def test_the_line_step_keeps_every_comment(data: st.DataObject, base: dict) -> None:
    keys = list(base)
    i = data.draw(st.integers(0, len(keys) - 2))
    j = data.draw(st.integers(i + 1, len(keys) - 1))
    local = {**base, keys[i]: "local edit"}
    remote = {**base, keys[j]: ["remote", "edit"]}
    out = merge3_text(render(base), render(local), render(remote))
    assert (out.status, out.step) == ("clean", "line")
    assert out.content == render({**local, keys[j]: ["remote", "edit"]})


@settings(PROFILE)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=6, unique=True),
    st.data(),
)
def test_list_items_matched_by_id_merge_disjoint_edits(ids: list[int], data: st.DataObject) -> None:
    base = {"steps": [{"id": f"s{i}", "run": "x", "n": 0} for i in ids]}
    split = data.draw(st.integers(0, len(ids)))
    local = {"steps": [dict(s, run="L") if j < split else s for j, s in enumerate(base["steps"])]}
    remote = {"steps": [dict(s, n=1) if j >= split else s for j, s in enumerate(base["steps"])]}
    out = merge3_text(render(base), render(local), render(remote))
    assert out.status == "clean", out.conflicts
    steps = parsed(out.content)["steps"]
    assert [s["id"] for s in steps] == [f"s{i}" for i in ids]
    assert [(s["run"], s["n"]) for s in steps] == [
        ("L", 0) if j < split else ("x", 1) for j in range(len(ids))
    ]


@settings(PROFILE)
@given(
    st.lists(st.text(alphabet="abc", min_size=1, max_size=2), max_size=5, unique=True),
    st.lists(st.text(alphabet="abcd", min_size=1, max_size=2), max_size=5, unique=True),
    st.lists(st.text(alphabet="abce", min_size=1, max_size=2), max_size=5, unique=True),
)
def test_tags_keep_every_addition_and_removal(b: list, lo: list, ro: list) -> None:
    out = merge(
        Version("a: 1\n", {"tags": b}),
        Version("a: 1\n", {"tags": lo}),
        Version("a: 1\n", {"tags": ro}),
    )
    assert out.meta is not None
    tags = out.meta["tags"]
    assert len(tags) == len(set(tags))
    expected = (set(b) & set(lo) & set(ro)) | (set(lo) - set(b)) | (set(ro) - set(b))
    assert set(tags) == expected


def _eq(a: Any, b: Any) -> bool:
    """Equality that tells False from 0 (YAML does)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_eq(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
