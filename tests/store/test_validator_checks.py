"""An app's validator: what it returns is read as problems; one that cannot be called is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.blueprint import MAX_PROBLEM_CHARS, MAX_PROBLEMS
from localstore.errors import InvalidInputError


@pytest.mark.parametrize(
    ("validator", "problems"),
    [
        (lambda doc: "steps missing", ("steps missing",)),
        (lambda doc: "", ()),
        (lambda doc: None, ()),
        (lambda doc: 5, ("validator returned int, not a list of problems",)),
        (lambda doc: {"steps": "missing"}, ("validator returned dict, not a list of problems",)),
        (lambda doc: (p for p in ["a", "b"]), ("a", "b")),
    ],
)
def test_what_a_validator_returns_is_read_as_problems(
    home: Path, validator: Any, problems: tuple[str, ...]
) -> None:
    # (A lambda has no name of its own: the test names it.)
    with localstore.open(home=home, validator=validator, validator_name="returns") as s:
        bp = s.save("v/one", "x: 1\n")
        assert bp.problems == problems and bp.valid is (not problems)


def test_a_validator_that_is_not_callable_is_refused_at_open(home: Path) -> None:
    with pytest.raises(InvalidInputError, match="validator must be callable") as info:
        # The wrong type is the point: the check at open is what is tested.
        localstore.open(home=home, validator="not-callable")  # type: ignore[arg-type]
    assert info.value.hint
    assert not (home / "data").exists()  # refused before anything was opened


def test_a_validators_problems_are_bounded(home: Path) -> None:
    """A validator that reports a problem per node of a big document, or one huge text, would
    put megabytes in every index row it marks (read by each list) and in every `invalid` event
    the daemon sends apps (its control API refuses frames over 256 KiB)."""

    def flood(doc: Any) -> list[str]:
        return [f"problem {i}: " + "x" * 100_000 for i in range(10_000)]

    with localstore.open(home=home, validator=flood) as s:
        bp = s.save("v/flood", "x: 1\n")
    assert not bp.valid
    assert len(bp.problems) == MAX_PROBLEMS + 1
    assert bp.problems[-1] == f"... and {10_000 - MAX_PROBLEMS:,} more problems"
    assert all(len(p) < MAX_PROBLEM_CHARS + 40 for p in bp.problems)
    assert bp.problems[0].startswith("problem 0: xxx")
    assert bp.problems[0].endswith(f"... ({100_011 - MAX_PROBLEM_CHARS:,} more characters)")


def test_a_raising_validators_message_is_bounded(home: Path) -> None:
    def boom(doc: Any) -> list[str]:
        raise ValueError("y" * 1_000_000)

    with localstore.open(home=home, validator=boom) as s:
        (problem,) = s.save("v/boom", "x: 1\n").problems
    assert problem.startswith("validator raised ValueError: yyy")
    assert len(problem) < MAX_PROBLEM_CHARS + 40


def test_a_single_long_problem_string_is_bounded(home: Path) -> None:
    with localstore.open(home=home, validator=lambda doc: "z" * 100_000, validator_name="z") as s:
        (problem,) = s.save("v/one", "x: 1\n").problems
    assert len(problem) < MAX_PROBLEM_CHARS + 40
