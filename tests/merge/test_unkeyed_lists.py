"""Lists without ids (or names): a move on one side against a delete on the other.

diff3 sees a moved item as a deleted line and an added one. With the item moved on one side and
deleted on the other, both deletions agree and the added line stays: the line merge was clean and
the deleted step came back, run again. For a key or a keyed item the line step's data check
refuses such a result (the structural merge says where it belongs); in a list without ids the
structural merge conflicts, and the line result's value was taken there as diff3 wrote it,
checked only for an item written more often than either side has it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.merge import merge3_text

PROFILE = settings.get_profile("localstore-merge")


@pytest.mark.parametrize(
    ("base", "moved", "deleted"),
    [
        (  # steps without ids: the first moved to the end on one side, deleted on the other
            "name: x\nsteps:\n- run: a\n- run: b\n- run: c\nafter: 1\n",
            "name: x\nsteps:\n- run: b\n- run: c\n- run: a\nafter: 1\n",
            "name: x\nsteps:\n- run: b\n- run: c\nafter: 1\n",
        ),
        (  # a list of scalars, the item moved up on one side
            "l:\n- p\n- q\n- r\n- s\n",
            "l:\n- s\n- p\n- q\n- r\n",
            "l:\n- p\n- q\n- r\n",
        ),
    ],
)
def test_a_step_moved_on_one_side_and_deleted_on_the_other_does_not_come_back(
    base: str, moved: str, deleted: str
) -> None:
    for one, other in ((moved, deleted), (deleted, moved)):
        out = merge3_text(base, one, other)
        # No merge holds the step once (the delete undone) and none without it (the move
        # undone) settles both: a conflict, both versions kept.
        assert out.status == "conflict", out.content


def test_a_move_beside_another_items_edit_still_merges() -> None:
    # The count check does not refuse what diff3 merges right: one side moved an item, the
    # other edited another, far from it.
    base = "l:\n- a\n- b\n- c\n- d\n- e\n- f\n"
    out = merge3_text(
        base, "l:\n- b\n- c\n- a\n- d\n- e\n- f\n", "l:\n- a\n- b\n- c\n- d\n- e\n- F\n"
    )
    assert (out.status, out.step) == ("clean", "line")
    assert yaml.safe_load(out.content or "") == {"l": ["b", "c", "a", "d", "e", "F"]}


# ---------------------------------------------------------------------------------------------
# Hypothesis: each side deletes, moves, inserts and edits items of one list without ids.


@st.composite
def _side(draw: st.DrawFn, base: list[str], tag: str, target: str) -> list[str]:
    """The base with 1-3 random edits; half of those that pick an item pick ``target`` (both
    sides then often change one item: a move against a delete, or against an edit)."""
    items = list(base)
    for n in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "move", "insert", "edit"]))
        if op == "insert" or not items:
            items.insert(draw(st.integers(0, len(items))), f"{tag}{n}")
            continue
        aimed = target in items and draw(st.booleans())
        i = items.index(target) if aimed else draw(st.integers(0, len(items) - 1))
        if op == "delete":
            del items[i]
        elif op == "edit":
            items[i] = f"{tag}{n}"
        else:
            item = items.pop(i)
            items.insert(draw(st.integers(0, len(items))), item)
    return items


def _text(items: list[str], mapping: bool) -> str:
    lines = [f"- run: {v}" if mapping else f"- {v}" for v in items]
    return "name: n\nsteps:\n" + "".join(line + "\n" for line in lines) + "tail: 1\n"


def _values(text: str, mapping: bool) -> list[str]:
    steps = yaml.safe_load(text)["steps"] or []
    return [s["run"] if mapping else s for s in steps]


@settings(PROFILE)
@given(st.data(), st.integers(2, 5), st.booleans())
def test_every_delete_insert_and_edit_of_both_sides_is_in_a_clean_merge(
    data: st.DataObject, size: int, mapping: bool
) -> None:
    """A clean result holds a base item exactly when both sides kept it, and each side's new
    item (inserted, or an edit's new value) exactly once: nothing a side deleted comes back,
    nothing a side added is lost or doubled. Order is not checked (diff3 decides it)."""
    base = [f"b{i}" for i in range(size)]
    target = data.draw(st.sampled_from(base))
    local = data.draw(_side(base, "l", target))
    remote = data.draw(_side(base, "r", target))
    for one, other in ((local, remote), (remote, local)):
        out = merge3_text(_text(base, mapping), _text(one, mapping), _text(other, mapping))
        if out.status != "clean":
            continue
        got = Counter(_values(out.content or "", mapping))
        want: Counter[Any] = Counter(v for v in base if v in local and v in remote)
        want.update(v for v in (*local, *remote) if v not in base)
        assert got == want, (base, one, other, out.content)
