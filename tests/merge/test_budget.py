"""The merge's work budget: a pathological merge is a conflict (both kept), not minutes of diffing.

A document of thousands of keys whose lines repeat (``- name: x`` in every job) with thousands of
edits on each side made ``difflib.SequenceMatcher`` quadratic: the merge below took 30 to 75
seconds, inline in the sync cycle. Now the line diffs are charged a deterministic bound of their
work; past the budget the merge is a conflict and the engine keeps both versions. Merges within
the budget have exactly the result they had (the matcher is difflib's own).
"""

from __future__ import annotations

import random

import merge3
import pytest

from sync._diffbudget import DIFF_BUDGET, DiffBudget, DiffBudgetExceeded
from sync.merge import TOO_LARGE, Version, merge3_text, resolve


def _jobs(count: int, seed: int) -> list[str]:
    """A workflow of ``count`` jobs, each with steps whose lines repeat in every job."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        lines += [f"job_{i:05d}:\n", "  steps:\n"]
        lines += ["  - name: x\n", "    run: echo hi\n"] * 3
        lines.append(f"  timeout: {rng.randrange(100)}\n")
    return lines


def _flat(count: int, seed: int) -> list[str]:
    """An ordinary large document: one key a line, a comment every 50 keys."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        if i % 50 == 0:
            lines.append(f"# section {i // 50}\n")
        lines.append(f"key_{i:05d}: value {rng.randrange(1000)}\n")
    return lines


def _edited(lines: list[str], edits: int, every: int, at: int, tag: str, seed: int) -> str:
    """Change the value of ``edits`` scalar lines among those at index ``at`` modulo ``every``
    (local and remote take different residues, so their edits never touch)."""
    rng = random.Random(seed)
    out = list(lines)
    pool = [i for i in range(len(out)) if i % every == at]
    for i in rng.sample(pool, min(edits, len(pool))):
        head, _, rest = out[i].partition(":")
        if rest.strip() and not out[i].startswith("#"):
            out[i] = f"{head}: {tag}{rng.randrange(10**6)}\n"
    return "".join(out)


def pathological() -> tuple[str, str, str]:
    lines = _jobs(3000, seed=1)  # 27,000 lines, 363 KB
    return "".join(lines), _edited(lines, 2500, 4, 0, "L", 2), _edited(lines, 2500, 4, 2, "R", 3)


def test_a_pathological_merge_is_a_conflict_over_the_budget_both_ways() -> None:
    base, local, remote = pathological()
    for lo, re_ in ((local, remote), (remote, local)):  # every device decides the same
        outcome = merge3_text(base, lo, re_)
        assert outcome.status == "conflict" and outcome.content is None
        assert outcome.conflicts == [TOO_LARGE]


def test_over_the_budget_the_policy_keeps_both_versions() -> None:
    base, local, remote = pathological()
    resolution = resolve("merge", Version(base), Version(local), Version(remote))
    assert resolution.action == "keep_both" and resolution.conflicts == [TOO_LARGE]
    # Policies that do not run the ladder decide as before.
    prefer = resolve("prefer-remote", Version(base), Version(local), Version(remote))
    assert prefer.action == "take_remote"


def test_a_large_ordinary_merge_fits_the_budget_with_the_plain_diff3_result() -> None:
    lines = _flat(15000, seed=1)  # 15,300 lines, 2,500 edits a side
    base = "".join(lines)
    local, remote = _edited(lines, 2500, 4, 0, "L", 2), _edited(lines, 2500, 4, 2, "R", 3)
    outcome = merge3_text(base, local, remote)
    assert outcome.status == "clean" and outcome.step == "line"
    plain = merge3.Merge3(base.splitlines(True), local.splitlines(True), remote.splitlines(True))
    assert outcome.content == "".join(plain.merge_lines())
    budget = DiffBudget()
    groups = merge3.Merge3(
        base.splitlines(True),
        local.splitlines(True),
        remote.splitlines(True),
        sequence_matcher=budget.matcher(),
    ).merge_groups()
    assert "".join(line for g in groups for line in g[1]) == outcome.content
    assert budget.spent * 5 < DIFF_BUDGET  # far from the edge, not just under it


def test_the_charge_depends_on_the_texts_only_and_not_on_which_side_is_local() -> None:
    base, local, remote = pathological()
    spent = []
    for lo, re_ in ((local, remote), (remote, local), (local, remote)):
        budget = DiffBudget(units=10**12)
        m = merge3.Merge3(
            base.splitlines(True)[:4000],
            lo.splitlines(True)[:4000],
            re_.splitlines(True)[:4000],
            sequence_matcher=budget.matcher(),
        )
        list(m.merge_groups())
        spent.append(budget.spent)
    assert spent[0] == spent[1] == spent[2] > 0


def test_a_budget_refuses_work_past_its_units() -> None:
    budget = DiffBudget(units=10)
    matcher = budget.matcher()(None, ["a", "b"] * 20, ["b", "a"] * 20)
    with pytest.raises(DiffBudgetExceeded):
        matcher.get_matching_blocks()
