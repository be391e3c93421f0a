"""Mapping keys that a Python dict takes for one: ``1``, ``1.0`` and ``true`` (``1 == 1.0 == True``).

In YAML they are three different keys (an int, a float, a bool: a YAML 1.2 reader or a JSON
export tells them apart), but one dict slot once loaded. The merge compared mappings by
``a.keys() == b.keys()``, so a side that respelled ``1:`` as ``true:`` had changed nothing: with
the other side's edit of that value the structural merge took the other side, and the respelling
was lost without a conflict. Now a key's type is part of the data the merge compares and merges:
one side's respelling is kept with the other side's edit, two different ones conflict.
"""

from __future__ import annotations

from typing import Any

import pytest

from localstore.blueprint import parse_yaml
from sync.merge import _same, merge3_text


def _typed(data: Any) -> Any:
    """The loaded data with each key's type spelled out (``==`` alone takes 1 for True)."""
    if isinstance(data, dict):
        return [(type(k).__name__, k, _typed(v)) for k, v in data.items()]
    if isinstance(data, list):
        return [_typed(v) for v in data]
    return (type(data).__name__, data)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({1: "x"}, {True: "x"}),
        ({1: "x"}, {1.0: "x"}),
        ({0: "x"}, {False: "x"}),
        ({"m": {1: "x"}}, {"m": {True: "x"}}),
        ([{1: "x"}], [{True: "x"}]),
        ({1: "x", "a": 2}, {"a": 2, True: "x"}),  # (another key order too)
    ],
)
def test_keys_of_another_type_are_not_the_same(a: Any, b: Any) -> None:
    assert not _same(a, b)
    assert not _same(b, a)
    assert _same(a, a)


@pytest.mark.parametrize(
    ("respelled", "want"),
    [("true", "bool"), ("1.0", "float")],
)
@pytest.mark.parametrize("local_respells", [True, False])
def test_a_respelled_key_is_kept_with_the_other_sides_edit_of_its_value(
    respelled: str, want: str, local_respells: bool
) -> None:
    base = "# header\n1: x\na: 1\n"
    spelled = base.replace("1: x", f"{respelled}: x")
    edited = base.replace("1: x", "1: y")
    local, remote = (spelled, edited) if local_respells else (edited, spelled)
    out = merge3_text(base, local, remote)
    assert out.status == "clean", out.conflicts
    assert _typed(parse_yaml(out.content or "")) == [
        (want, 1, ("str", "y")),
        ("str", "a", ("int", 1)),
    ]


def test_a_respelled_nested_key_survives_a_clean_line_merge() -> None:
    base = "k:\n  1: x\n  z: 1\nb: 1\n"
    local = "k:\n  true: x\n  z: 1\nb: 1\n"
    remote = "k:\n  1: x\n  z: 1\nb: 2\n"
    for lo, re_ in ((local, remote), (remote, local)):
        out = merge3_text(base, lo, re_)
        assert out.status == "clean", out.conflicts
        assert _typed(parse_yaml(out.content or ""))[0] == (
            "str",
            "k",
            [("bool", True, ("str", "x")), ("str", "z", ("int", 1))],
        )


@pytest.mark.parametrize(
    ("base", "local", "remote"),
    [
        # Two different respellings of one key.
        ("1: x\na: 1\n", "true: x\na: 1\n", "1.0: x\na: 1\n"),
        # A respelling against a delete (an edit against a delete).
        ("1: x\na: 1\n", "true: x\na: 1\n", "a: 1\n"),
        # Both sides added the key, spelled differently.
        ("a: 1\n", "a: 1\n1: x\n", "a: 1\ntrue: x\n"),
    ],
)
def test_key_types_changed_on_both_sides_conflict(base: str, local: str, remote: str) -> None:
    for lo, re_ in ((local, remote), (remote, local)):
        out = merge3_text(base, lo, re_)
        assert out.status == "conflict", out.content


def test_a_respelling_keeps_the_comments_of_both_sides() -> None:
    """Both sides gave the key a new value, one also respelled it: the block text takes the
    respelling side's block, not the other side's (which a check then refused, and the dump
    dropped every comment)."""
    base = "# header\n1: x  # one\n# about a\na: 1\n"
    local = base.replace("1: x", "true: y")
    remote = base.replace("1: x  # one", "1: y  # one, now y").replace("a: 1", "a: 2")
    for lo, re_ in ((local, remote), (remote, local)):
        out = merge3_text(base, lo, re_)
        assert out.status == "clean", out.conflicts
        assert out.content == "# header\ntrue: y  # one\n# about a\na: 2\n"


def test_a_key_type_conflict_is_named_once() -> None:
    out = merge3_text("1: x\na: 1\n", "true: y\na: 1\n", "1.0: z\na: 1\n")
    assert out.status == "conflict"
    assert len(out.conflicts) == 1, out.conflicts  # (the key, as local spells it)
