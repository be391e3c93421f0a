"""The line step's checks where the structural merge conflicts somewhere, and line-level edit
scripts (Hypothesis).

The line step refuses a diff3 result whose data is not the structural merge's, but only did
so when the structural merge had no conflict at all. One conflict anywhere (two sides editing
different lines of one ``|`` scalar, or of one list without ids: diff3 is all there is there)
let every other path of the line result through unchecked, where a move on one side and a
delete on the other brought the deleted key back. And in such a list, diff3 wrote an item both
sides added, at different places, twice.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.merge import merge3_text

PROFILE = settings.get_profile("localstore-merge")


def _both_ways(base: str, one: str, other: str) -> list[Any]:
    return [merge3_text(base, one, other), merge3_text(base, other, one)]


@pytest.mark.parametrize(
    ("base", "moved", "deleted", "expected"),
    [
        (  # a key moved on one side, deleted on the other, beside a list without ids
            "y: 1\na: 0\nl:\n- p\n- q\n- r\n- s\nz: 2\n",
            "a: 0\nl:\n- P\n- q\n- r\n- s\nz: 2\ny: 1\n",
            "a: 0\nl:\n- p\n- q\n- r\n- S\nz: 2\n",
            {"a": 0, "l": ["P", "q", "r", "S"], "z": 2},
        ),
        (  # the same beside a `|` scalar both sides edit on different lines
            "y: 1\na: 0\ns: |\n  one\n  two\n  three\n  four\nz: 2\n",
            "a: 0\ns: |\n  one\n  TWO\n  three\n  four\nz: 2\ny: 1\n",
            "a: 0\ns: |\n  one\n  two\n  three\n  FOUR\nz: 2\n",
            {"a": 0, "s": "one\nTWO\nthree\nFOUR\n", "z": 2},
        ),
    ],
)
def test_a_delete_against_a_move_stays_deleted_beside_a_conflicting_path(
    base: str, moved: str, deleted: str, expected: dict[str, Any]
) -> None:
    """Both sides edited one list without ids (or one `|` scalar) on lines apart: the structural
    merge conflicts there and diff3's result is all there is for that value; elsewhere the line
    result must still be the structural merge's data."""
    for out in _both_ways(base, moved, deleted):
        # The structural merge conflicts (both sides changed one list or scalar), so this is
        # a conflict, or a merge without y: never y back.
        if out.status == "clean":
            assert yaml.safe_load(out.content) == expected
        else:
            assert out.content is None and out.conflicts


@pytest.mark.parametrize(
    ("base", "one", "other"),
    [
        (  # a scalar item both sides added, at the top and at the end
            "l:\n- a\n- b\n- c\nk: 1\n",
            "l:\n- z\n- a\n- b\n- c\nk: 1\n",
            "l:\n- a\n- b\n- c\n- z\nk: 1\n",
        ),
        (  # a mapping item without id or name
            "l:\n- x: 1\n- x: 2\n- x: 3\n",
            "l:\n- x: 9\n- x: 1\n- x: 2\n- x: 3\n",
            "l:\n- x: 1\n- x: 2\n- x: 3\n- x: 9\n",
        ),
    ],
)
def test_what_both_sides_added_at_different_places_is_not_written_twice(
    base: str, one: str, other: str
) -> None:
    """diff3 takes both insertions: the item was in the result twice (a step run twice) and no
    side had it twice. The sides' data conflicts (a list without ids changed on both), so it is
    a conflict, both versions kept."""
    for out in _both_ways(base, one, other):
        assert out.status == "conflict", out.content


def test_an_item_a_side_already_had_twice_may_stay_twice() -> None:
    # Only a side's addition on both sides is refused: an item present twice on a side already
    # (here in the base) and edited apart on the two sides is a plain line merge.
    base = "l:\n- a\n- b\n- a\n- c\n- d\n"
    out = merge3_text(base, "l:\n- A\n- b\n- a\n- c\n- d\n", "l:\n- a\n- b\n- a\n- c\n- D\n")
    assert (out.status, out.step) == ("clean", "line")
    assert yaml.safe_load(out.content or "") == {"l": ["A", "b", "a", "c", "D"]}


# ---------------------------------------------------------------------------------------------
# Hypothesis: line edit scripts on disjoint regions of a text

# A base is lines of kinds: a top-level comment, a top-level scalar key, a key with a nested
# mapping, a nested comment, a nested scalar key. An edit touches one line: set a value, delete
# the line, insert a new key after it (same indent), or edit a comment.


@st.composite
def base_lines(draw: st.DrawFn) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for i in range(draw(st.integers(2, 7))):
        if draw(st.booleans()):
            lines.append(("comment", f"# about k{i}"))
        if draw(st.booleans()):
            lines.append(("leaf", f"k{i}: {draw(st.integers(0, 9))}"))
            continue
        lines.append(("parent", f"k{i}:"))
        for j in range(draw(st.integers(1, 4))):
            if draw(st.integers(0, 3)) == 0:
                lines.append(("comment", f"  # about c{j}"))
            lines.append(("leaf", f"  c{j}: {draw(st.integers(0, 9))}"))
    return lines


def _ops(lines: list[tuple[str, str]], i: int) -> list[str]:
    kind, text = lines[i]
    if kind == "comment":
        return ["comment", "delete"]
    if kind != "leaf":
        return []
    if not text.startswith(" "):
        return ["set", "insert", "delete"]
    # A nested key may go only while its mapping keeps another one (else the parent's value
    # turns null, a change of another key's value).
    first = next(j for j in range(i, -1, -1) if lines[j][0] == "parent")
    siblings = [
        j
        for j in range(first + 1, len(lines))
        if lines[j][0] == "leaf" and lines[j][1].startswith(" ")
    ]
    end = next((j for j in range(first + 1, len(lines)) if not lines[j][1].startswith(" ")), None)
    siblings = [j for j in siblings if end is None or j < end]
    return ["set", "insert", "delete"] if len(siblings) > 1 else ["set", "insert"]


def _edited(text: str, op: str, side: str, i: int) -> list[str]:
    indent = text[: len(text) - len(text.lstrip())]
    if op == "set":
        return [f"{text.split(':')[0]}: {side}{i}"]
    if op == "insert":
        return [text, f"{indent}{side}new{i}: {i}"]
    if op == "comment":
        return [f"{text} (edited on {side})"]
    return []  # delete


def _apply(lines: list[tuple[str, str]], ops: dict[int, tuple[str, str]]) -> str:
    out: list[str] = []
    for i, (_, text) in enumerate(lines):
        out += _edited(text, *ops[i], i) if i in ops else [text]
    return "".join(f"{line}\n" for line in out)


@st.composite
def disjoint_scripts(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """(base, local, remote, both applied): each side edits its own runs of lines, with an
    untouched line between one side's run and the other's (two after an insertion)."""
    lines = draw(base_lines())
    local: dict[int, tuple[str, str]] = {}
    remote: dict[int, tuple[str, str]] = {}
    i = 0
    while i < len(lines):
        side = draw(st.sampled_from(["L", "R", None]))
        run = draw(st.integers(1, 3))
        for j in range(i, min(i + run, len(lines))):
            ops = _ops(lines, j)
            if side is not None and ops and draw(st.booleans()):
                (local if side == "L" else remote)[j] = (draw(st.sampled_from(ops)), side)
        i += run + 2  # two untouched lines: an insertion after a run's last line touches one
    both = {**local, **remote}
    if any(v is None for v in yaml.safe_load(_apply(lines, both)).values()):
        # Nested deletes on the two sides emptied one mapping between them: a value change
        # neither side made. Keep the other edits.
        both = {j: o for j, o in both.items() if o[0] != "delete"}
        local = {j: o for j, o in local.items() if o[0] != "delete"}
        remote = {j: o for j, o in remote.items() if o[0] != "delete"}
    base = _apply(lines, {})
    return base, _apply(lines, local), _apply(lines, remote), _apply(lines, both)


@settings(PROFILE)
@given(disjoint_scripts())
def test_line_edits_apart_all_survive_verbatim(case: tuple[str, str, str, str]) -> None:
    """Edits on regions with an untouched line between them: the clean result is the base with
    both scripts applied, line for line, whichever side is local (the comment edits, the new
    keys, the changed values and the deletions of both)."""
    base, local, remote, both = case
    for one, other in ((local, remote), (remote, local)):
        out = merge3_text(base, one, other)
        assert out.status == "clean", out.conflicts
        assert out.content == both


@settings(PROFILE)
@given(disjoint_scripts(), st.sampled_from(["local", "remote"]))
def test_an_edit_both_sides_made_plus_one_more_on_a_side_is_that_side(
    case: tuple[str, str, str, str], extra: str
) -> None:
    """One side made every edit the other made, and more: the merge is the fuller side."""
    base, fewer, _, fuller = case
    out = (
        merge3_text(base, fewer, fuller) if extra == "remote" else merge3_text(base, fuller, fewer)
    )
    assert (out.status, out.content) == ("clean", fuller)
