"""The structural side of the ladder, adversarially: edits against deletes that moved the key,
nested documents and lists of steps with ids edited on both sides (Hypothesis).

The line step takes diff3's value at a path where the structural merge conflicts, because for
two sides' edits of different lines of one ``|`` scalar or one list without ids diff3 is all
there is. It took it at every conflicting path, and an edit against a delete is one: a key (or
a step) deleted on one side and moved *and* edited on the other is, for diff3, two agreeing
deletions and one added line, so the deleted key came back with the edit in a clean merge.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.merge import merge3_text

PROFILE = settings.get_profile("localstore-merge")


def _steps(*items: tuple[str, str]) -> str:
    return "steps:\n" + "".join(f"  - id: {i}\n    run: {run}\n" for i, run in items)


@pytest.mark.parametrize(
    ("base", "deleted", "moved_and_edited", "path"),
    [
        (  # a top-level key
            "a: 1\nb: 1\nc: 1\nd: 1\ne: 1\n",
            "a: 1\nb: 1\nd: 1\ne: 1\n",
            "a: 1\nb: 1\nd: 1\ne: 1\nc: 2\n",
            "c",
        ),
        (  # a nested key
            "a: 1\nb:\n  x: 1\n  y: 1\n  z: 1\nc: 1\n",
            "a: 1\nb:\n  y: 1\n  z: 1\nc: 1\n",
            "a: 1\nb:\n  y: 1\n  z: 1\n  x: 2\nc: 1\n",
            "b.x",
        ),
        (  # a step of a list matched by id
            _steps(("a", "1"), ("b", "1"), ("c", "1")),
            _steps(("a", "1"), ("c", "1")),
            _steps(("a", "1"), ("c", "1"), ("b", "2")),
            "steps[id='b']",
        ),
    ],
)
def test_an_edit_against_a_delete_is_a_conflict_when_the_edit_also_moved_it(
    base: str, deleted: str, moved_and_edited: str, path: str
) -> None:
    """Before session 16 the line step merged these cleanly, with the deleted value back."""
    for out in (
        merge3_text(base, deleted, moved_and_edited),
        merge3_text(base, moved_and_edited, deleted),
    ):
        assert (out.status, out.content, out.conflicts) == ("conflict", None, [path])


def test_different_lines_of_one_block_scalar_still_merge_line_by_line() -> None:
    """The line result's value stands where diff3 merged one value's lines (both sides present)."""
    base = "k: |\n  one\n  two\n  three\n  four\nz: 1\n"
    local = "k: |\n  ONE\n  two\n  three\n  four\nz: 1\n"
    remote = "k: |\n  one\n  two\n  three\n  FOUR\nz: 1\n"
    out = merge3_text(base, local, remote)
    assert (out.status, out.step) == ("clean", "line")
    assert yaml.safe_load(out.content or "") == {"k": "ONE\ntwo\nthree\nFOUR\n", "z": 1}


_DEFAULTS = "defaults: &d\n  timeout: 10\n  retries: 1\n\nnote: x\n\njob:\n  <<: *d\n"


@pytest.mark.parametrize(
    ("base", "anchor_edited", "aliases_changed"),
    [
        (  # a merged key pinned to the value it had, beside `<<: *d`
            _DEFAULTS + "  name: x\n",
            _DEFAULTS.replace("timeout: 10", "timeout: 20") + "  name: x\n",
            _DEFAULTS + "  timeout: 10\n  name: x\n",
        ),
        (  # an alias written out as the value it had
            "a: &x\n  - 1\n  - 2\nm: 1\nb: *x\n",
            "a: &x\n  - 1\n  - 2\n  - 5\nm: 1\nb: *x\n",
            "a: &x\n  - 1\n  - 2\nm: 1\nb: [1, 2]\n",
        ),
        (  # a copy made an alias of the value it equals
            "a:\n  - 1\n  - 2\nm: 1\nb: [1, 2]\n",
            "a:\n  - 1\n  - 2\n  - 5\nm: 1\nb: [1, 2]\n",
            "a: &x\n  - 1\n  - 2\nm: 1\nb: *x\n",
        ),
    ],
)
def test_a_change_of_what_follows_an_anchor_is_not_dropped(
    base: str, anchor_edited: str, aliases_changed: str
) -> None:
    """The aliases' side changed no loaded data, so the data merge took the other side's anchor
    edit into that place too and dropped the change (before session 16, a clean merge)."""
    for out in (
        merge3_text(base, anchor_edited, aliases_changed),
        merge3_text(base, aliases_changed, anchor_edited),
    ):
        assert (out.status, out.content) == ("conflict", None)


def test_an_anchor_edit_beside_unchanged_aliases_still_merges() -> None:
    base = _DEFAULTS + "  name: x\n"
    out = merge3_text(base, base.replace("timeout: 10", "timeout: 20"), base + "other: 1\n")
    assert (out.status, out.step) == ("clean", "line")
    assert out.content == _DEFAULTS.replace("timeout: 10", "timeout: 20") + "  name: x\nother: 1\n"


# ---------------------------------------------------------------------------------------------------
# Hypothesis: random edits of a nested document with lists of steps, by both sides

Path = tuple[Any, ...]  # mapping keys, and ("#", id) for a list item

scalars = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "x y", "", None, True]))
STEP_IDS = ["s1", "s2", "s3", "s4", "s5"]


@st.composite
def _node(draw: st.DrawFn, depth: int) -> Any:
    kind = draw(st.sampled_from(["scalar", "scalar", "map", "steps"] if depth < 3 else ["scalar"]))
    if kind == "scalar":
        return draw(scalars)
    if kind == "steps":
        ids = draw(st.lists(st.sampled_from(STEP_IDS), unique=True, max_size=4))
        return [{"id": i, "run": f"r{i}", "n": 0} for i in ids]
    keys = draw(
        st.lists(st.sampled_from(["p", "q", "r", "t"]), unique=True, min_size=1, max_size=3)
    )
    return {k: draw(_node(depth + 1)) for k in keys}


@st.composite
def _docs(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from("abcde"), unique=True, min_size=2, max_size=5))
    return {k: draw(_node(1)) for k in keys}


def _get(doc: Any, path: Path) -> Any:
    for k in path:
        doc = next(i for i in doc if i["id"] == k[1]) if isinstance(k, tuple) else doc[k]
    return doc


def _places(doc: Any, pre: Path = ()) -> list[tuple[str, Path]]:
    """Where an edit can go: ("key", path), ("map", path), ("list", path), ("item", path)."""
    out: list[tuple[str, Path]] = []
    if isinstance(doc, dict):
        out.append(("map", pre))
        for k, v in doc.items():
            out.append(("key", (*pre, k)))
            out += _places(v, (*pre, k))
    elif isinstance(doc, list):
        out.append(("list", pre))
        out += [("item", (*pre, ("#", item["id"]))) for item in doc]
    return out


def _apart(p: Path, q: Path) -> bool:
    n = min(len(p), len(q))
    return p[:n] != q[:n]


@st.composite
def _edits(
    draw: st.DrawFn, base: dict[str, Any], taken: list[tuple[str, Path]], tag: str
) -> tuple[dict[str, Any], list[tuple[str, Path]]]:
    """The base with 1-3 edits on paths apart from ``taken`` (and from each other): a value
    set or deleted, a key added, a step added, edited, deleted, or the list of steps reordered.
    Returns the edited document and the edits as (kind, path)."""
    doc = copy.deepcopy(base)
    mine: list[tuple[str, Path]] = []
    for _ in range(draw(st.integers(1, 3))):
        free = [c for c in _places(doc) if all(_apart(c[1], t[1]) for t in taken + mine)]
        if not free:
            break
        kind, path = draw(st.sampled_from(free))
        if kind == "key":
            parent = _get(doc, path[:-1])
            if draw(st.booleans()):
                parent[path[-1]] = draw(_node(len(path)))
            else:
                del parent[path[-1]]
            mine.append(("key", path))
        elif kind == "map":
            key = draw(st.sampled_from(["new1", "new2"]))
            parent = _get(doc, path)
            if key not in parent:
                parent[key] = draw(scalars)
                mine.append(("key", (*path, key)))
        elif kind == "list":
            steps = _get(doc, path)
            if draw(st.booleans()):
                new = f"{draw(st.sampled_from(['x1', 'x2']))}{tag}"  # never the other side's id
                if all(i["id"] != new for i in steps):
                    steps.insert(draw(st.integers(0, len(steps))), {"id": new, "run": "n", "n": 1})
                    mine.append(("item", (*path, ("#", new))))
            elif len(steps) >= 2:
                i, j = draw(st.integers(0, len(steps) - 1)), draw(st.integers(0, len(steps) - 1))
                steps.insert(j, steps.pop(i))
                mine.append(("order", path))
        else:
            steps, item = _get(doc, path[:-1]), _get(doc, path)
            if draw(st.booleans()):
                item["run"] = f"{draw(st.sampled_from(['e1', 'e2']))}{tag}"
            else:
                steps.remove(item)
            mine.append(("item", path))
    return doc, mine


def _replay(onto: dict[str, Any], side: dict[str, Any], edits: list[tuple[str, Path]]) -> None:
    """Apply a side's edits (read from its document) onto another document, in place."""
    for kind, path in edits:
        if kind == "key":
            src, dst = _get(side, path[:-1]), _get(onto, path[:-1])
            if path[-1] in src:
                dst[path[-1]] = copy.deepcopy(src[path[-1]])
            else:
                dst.pop(path[-1], None)
        elif kind == "item":
            src, dst = _get(side, path[:-1]), _get(onto, path[:-1])
            item = next((i for i in src if i["id"] == path[-1][1]), None)
            at = next((n for n, i in enumerate(dst) if i["id"] == path[-1][1]), None)
            if item is None and at is not None:
                dst.pop(at)
            elif item is not None and at is None:
                dst.append(copy.deepcopy(item))
            elif item is not None and at is not None:
                dst[at] = copy.deepcopy(item)
        # ("order", path): a reorder; _unordered compares lists of steps as sets of items.


def _unordered(doc: Any) -> Any:
    """The data with lists of steps as sorted items: where a side reordered a list and the other
    added to it, where the added step goes is the merge's choice, not a change either made."""
    if isinstance(doc, dict):
        return {k: _unordered(v) for k, v in doc.items()}
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        return sorted((_unordered(i) for i in doc), key=repr)
    return doc


def _render(doc: dict[str, Any]) -> str:
    return "# a blueprint\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


@settings(PROFILE)
@given(st.data(), _docs())
def test_edits_on_paths_apart_all_survive_in_a_nested_document(
    data: st.DataObject, base: dict[str, Any]
) -> None:
    local, local_edits = data.draw(_edits(base, [], "L"))
    remote, remote_edits = data.draw(_edits(base, local_edits, "R"))
    expected = copy.deepcopy(local)
    _replay(expected, remote, remote_edits)
    b, lo, ro = _render(base), _render(local), _render(remote)
    for out in (merge3_text(b, lo, ro), merge3_text(b, ro, lo)):
        assert out.status == "clean", out.conflicts
        assert _unordered(yaml.safe_load(out.content or "")) == _unordered(expected)


@settings(PROFILE)
@given(st.data(), _docs())
def test_an_edit_against_a_delete_or_another_edit_is_a_conflict(
    data: st.DataObject, base: dict[str, Any]
) -> None:
    """One side deletes a key or a step; the other edits it (moving it to the end of its mapping
    or list too, or not), or both set it to different values: never a clean merge."""
    places = [p for p in _places(base) if p[0] in ("key", "item")]
    kind, path = data.draw(st.sampled_from(places)) if places else ("key", ("a",))
    mode = data.draw(st.sampled_from(["delete", "both"]))
    move = data.draw(st.booleans())
    one, other = copy.deepcopy(base), copy.deepcopy(base)
    parent_one, parent_other = _get(one, path[:-1]), _get(other, path[:-1])
    if kind == "key":
        if mode == "delete":
            del parent_one[path[-1]]
        else:
            parent_one[path[-1]] = "one side"
        # Popped and set again, the key is now last in its mapping (moved), unless put back.
        parent_other[path[-1]] = ["edited", parent_other.pop(path[-1])]
        if not move:  # back in its place: rebuild the mapping in the base's key order
            rebuilt = {k: parent_other[k] for k in _get(base, path[:-1])}
            parent_other.clear()
            parent_other.update(rebuilt)
    else:
        item_one = _get(one, path)
        if mode == "delete":
            parent_one.remove(item_one)
        else:
            item_one["run"] = "one side"
        item = _get(other, path)
        item["run"] = "other side"
        if move:
            parent_other.remove(item)
            parent_other.append(item)
    b, x, y = _render(base), _render(one), _render(other)
    for out in (merge3_text(b, x, y), merge3_text(b, y, x)):
        assert out.status == "conflict", out.content
