"""The structural step, table-driven.

Every document is one line of flow YAML, so any edit on both sides is a line conflict and the
structural step decides.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from sync.merge import merge3_text

S = [{"id": "a", "run": "x"}, {"id": "b", "run": "y"}, {"id": "c", "run": "z"}]
N = [{"name": "a", "run": "x"}, {"name": "b", "run": "y"}]

# (name, base, local, remote, expected merged document or list of conflicting paths)
CASES: list[tuple[str, Any, Any, Any, Any]] = [
    ("disjoint keys", {"a": 1, "b": 2}, {"a": 9, "b": 2}, {"a": 1, "b": 8}, {"a": 9, "b": 8}),
    ("same key differently", {"a": 1}, {"a": 2, "k": 0}, {"a": 3, "k": 0}, ["a"]),
    ("same change both", {"a": 1, "b": 1}, {"a": 2, "b": 1}, {"a": 2, "b": 2}, {"a": 2, "b": 2}),
    (
        "nested disjoint",
        {"m": {"x": 1, "y": 1}},
        {"m": {"x": 2, "y": 1}},
        {"m": {"x": 1, "y": 2}},
        {"m": {"x": 2, "y": 2}},
    ),
    (
        "nested conflict path",
        {"m": {"n": {"x": 1}}, "k": 0},
        {"m": {"n": {"x": 2}}, "k": 0},
        {"m": {"n": {"x": 3}}, "k": 1},
        ["m.n.x"],
    ),
    ("delete vs untouched", {"a": 1, "b": 2}, {"b": 2}, {"a": 1, "b": 3}, {"b": 3}),
    ("delete vs edit", {"a": 1, "b": 2}, {"b": 2}, {"a": 5, "b": 2}, ["a"]),
    ("both add equal", {"a": 1}, {"a": 1, "n": [1]}, {"a": 2, "n": [1]}, {"a": 2, "n": [1]}),
    ("both add different", {"a": 1}, {"a": 1, "n": 1}, {"a": 1, "n": 2}, ["n"]),
    (
        "keys added both sides",
        {"a": 1},
        {"a": 1, "l": 1},
        {"a": 1, "r": 2},
        {"a": 1, "l": 1, "r": 2},
    ),
    (
        "list by id: disjoint items",
        {"steps": S},
        {"steps": [S[0] | {"run": "X"}, S[1], S[2]]},
        {"steps": [S[0], S[1], S[2] | {"run": "Z"}]},
        {"steps": [S[0] | {"run": "X"}, S[1], S[2] | {"run": "Z"}]},
    ),
    (
        "list by id: add and delete",
        {"steps": S},
        {"steps": [S[0], S[1], {"id": "d", "run": "w"}, S[2]]},
        {"steps": [S[0], S[2]]},
        {"steps": [S[0], {"id": "d", "run": "w"}, S[2]]},
    ),
    (
        "list by id: same field differently",
        {"steps": S},
        {"steps": [S[0] | {"run": "L"}, S[1], S[2]]},
        {"steps": [S[0] | {"run": "R"}, S[1], S[2]]},
        ["steps[id='a'].run"],
    ),
    (
        "list by id: delete vs edit",
        {"steps": S},
        {"steps": [S[1], S[2]]},
        {"steps": [S[0] | {"run": "R"}, S[1], S[2]]},
        ["steps[id='a']"],
    ),
    (
        "list by id: reorder vs edit",
        {"steps": S},
        {"steps": [S[2], S[0], S[1]]},
        {"steps": [S[0], S[1] | {"run": "Y"}, S[2]]},
        {"steps": [S[2], S[0], S[1] | {"run": "Y"}]},
    ),
    (
        "list by id: two different reorders",
        {"steps": S},
        {"steps": [S[2], S[0], S[1]]},
        {"steps": [S[1], S[0], S[2]]},
        ["steps: both sides reordered the list differently"],
    ),
    (
        "list by id: both insert at one place",
        {"steps": S[:1]},
        {"steps": [S[0], {"id": "l"}]},
        {"steps": [S[0], {"id": "r"}]},
        {"steps": [S[0], {"id": "l"}, {"id": "r"}]},
    ),
    (
        "list by id: integer ids",
        {"s": [{"id": 1, "v": 1}, {"id": 2, "v": 1}]},
        {"s": [{"id": 1, "v": 2}, {"id": 2, "v": 1}]},
        {"s": [{"id": 1, "v": 1}, {"id": 2, "v": 3}]},
        {"s": [{"id": 1, "v": 2}, {"id": 2, "v": 3}]},
    ),
    (
        "list by name when no ids",
        {"jobs": N},
        {"jobs": [N[0] | {"run": "X"}, N[1]]},
        {"jobs": [N[0], N[1] | {"run": "Y"}]},
        {"jobs": [N[0] | {"run": "X"}, N[1] | {"run": "Y"}]},
    ),
    (
        "id missing on one item falls back to name",
        {"jobs": [{"name": "a", "id": 1}, {"name": "b"}]},
        {"jobs": [{"name": "a", "id": 1, "v": 1}, {"name": "b"}]},
        {"jobs": [{"name": "a", "id": 1}, {"name": "b", "v": 2}]},
        {"jobs": [{"name": "a", "id": 1, "v": 1}, {"name": "b", "v": 2}]},
    ),
    (
        "duplicate ids are not matchable",
        {"s": [{"id": "a", "v": 1}, {"id": "a", "v": 2}]},
        {"s": [{"id": "a", "v": 9}, {"id": "a", "v": 2}]},
        {"s": [{"id": "a", "v": 1}, {"id": "a", "v": 8}]},
        ["s"],
    ),
    (
        "scalar lists both changed",
        {"t": [1, 2, 3]},
        {"t": [0, 1, 2, 3]},
        {"t": [1, 2, 3, 4]},
        ["t"],
    ),
    (
        "scalar list one side",
        {"t": [1], "k": 0},
        {"t": [1, 2], "k": 0},
        {"t": [1], "k": 1},
        {"t": [1, 2], "k": 1},
    ),
    ("true is not 1", {"x": 1, "k": 0}, {"x": True, "k": 0}, {"x": 1, "k": 1}, {"x": True, "k": 1}),
    ("1.0 is not 1", {"x": 1, "k": 0}, {"x": 1.0, "k": 0}, {"x": 1, "k": 1}, {"x": 1.0, "k": 1}),
    ("null vs missing", {"x": None, "k": 0}, {"k": 0}, {"x": None, "k": 1}, {"k": 1}),
    ("scalar to two mappings", {"x": 1}, {"x": {"a": 1}}, {"x": {"b": 1}}, ["x"]),
    ("mapping vs scalar", {"x": {"a": 1}}, {"x": {"a": 2}}, {"x": 5}, ["x"]),
    (
        "several conflicts are all named",
        {"a": 1, "b": 1},
        {"a": 2, "b": 2},
        {"a": 3, "b": 3},
        ["a", "b"],
    ),
]


def flow(doc: Any) -> str:
    return json.dumps(doc) + "\n"  # JSON is one-line flow YAML


@pytest.mark.parametrize("name,base,local,remote,expected", CASES, ids=[c[0] for c in CASES])
def test_structural_table(name: str, base: Any, local: Any, remote: Any, expected: Any) -> None:
    out = merge3_text(flow(base), flow(local), flow(remote))
    if isinstance(expected, list):
        assert (out.status, out.content) == ("conflict", None)
        assert out.conflicts == expected
        return
    assert (out.status, out.step) == ("clean", "structural"), out.conflicts
    merged = yaml.safe_load(out.content or "")
    assert merged == expected
    assert json.dumps(merged) == json.dumps(expected)  # order and types too (True vs 1)


@pytest.mark.parametrize("name,base,local,remote,expected", CASES, ids=[c[0] for c in CASES])
def test_structural_table_is_symmetric_in_outcome(
    name: str, base: Any, local: Any, remote: Any, expected: Any
) -> None:
    forward = merge3_text(flow(base), flow(local), flow(remote))
    backward = merge3_text(flow(base), flow(remote), flow(local))
    assert forward.status == backward.status
    if forward.status == "clean":
        # Values agree; only the placement of two insertions at one spot may differ.
        a, b = yaml.safe_load(forward.content or ""), yaml.safe_load(backward.content or "")
        assert _sorted_lists(a) == _sorted_lists(b)


def _sorted_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_sorted_lists(v) for v in value), key=json.dumps)
    return value
