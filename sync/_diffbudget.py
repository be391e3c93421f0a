"""A deterministic bound on the line diffs one merge may run (``difflib.SequenceMatcher``).

``merge3`` aligns each side with the base through ``difflib.SequenceMatcher``, whose
``find_longest_match`` walks, for every line of a range of the base, every place that line occurs
in the side. Documents of thousands of keys with many repeated lines (``- name: x``,
``steps:``) and thousands of edits on each side made that quadratic: 30 to 140 seconds for one
merge, run inline in the sync cycle, so nothing else synced meanwhile.

The matcher here is ``difflib``'s own, unchanged (so every merge that fits the budget has exactly
the result it had), with each ``find_longest_match`` call first charged an upper bound of the work
its loop can do: the range's lines plus, for each, the places it occurs in the side (prefix sums
make that charge constant time). When one merge's charges pass the budget, ``DiffBudgetExceeded``
is raised and the merge gives up: a conflict, kept both ways, never a result that depends on how
far a diff got. The charge depends only on the texts, never on a clock, so every device decides
the same for the same versions, and it is the same with local and remote swapped (each side is
diffed against the base alone).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

# About two seconds of find_longest_match's loop on the development VM (docs/merge.md, "Limits and
# choices"). A 15,000-key document with 2,500 edits a side charges under 1,000,000 units
# (tests/merge/test_budget.py checks that such a merge stays far from the edge).
DIFF_BUDGET = 10_000_000


class DiffBudgetExceeded(Exception):
    """The line diffs of one merge would take more work than its budget allows."""


class DiffBudget:
    """The work one merge's line diffs may still do; ``matcher`` gives the matcher charging it."""

    def __init__(self, units: int = DIFF_BUDGET) -> None:
        self.units = units
        self.spent = 0

    def charge(self, units: int) -> None:
        self.spent += units
        if self.spent > self.units:
            raise DiffBudgetExceeded(f"the line diffs need over {self.units} units of work")

    def matcher(self) -> Any:
        """A ``difflib.SequenceMatcher`` subclass charging this budget (for ``merge3.Merge3``)."""
        budget = self

        class _Matcher(difflib.SequenceMatcher[Any]):
            _prefix: list[int] | None = None
            a: Sequence[Any]  # (set by difflib; not in its stubs)
            b2j: dict[Any, list[int]]

            def find_longest_match(
                self, alo: int = 0, ahi: int | None = None, blo: int = 0, bhi: int | None = None
            ) -> difflib.Match:
                a = self.a
                if ahi is None:
                    ahi = len(a)
                if self._prefix is None:
                    # (b2j is built once per matcher, with autojunk's popular lines removed: they
                    # are never walked, so they cost nothing here either.)
                    get = self.b2j.get
                    self._prefix = [0, *accumulate(len(get(line, ())) for line in a)]
                prefix = self._prefix
                budget.charge(1 + (ahi - alo) + prefix[ahi] - prefix[alo])
                return super().find_longest_match(alo, ahi, blo, bhi)

        return _Matcher
