"""An app's validator: what it returns is read as problems; one that cannot be called is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import localstore
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
    with localstore.open(home=home, validator=validator) as s:
        bp = s.save("v/one", "x: 1\n")
        assert bp.problems == problems and bp.valid is (not problems)


def test_a_validator_that_is_not_callable_is_refused_at_open(home: Path) -> None:
    with pytest.raises(InvalidInputError, match="validator must be callable") as info:
        # The wrong type is the point: the check at open is what is tested.
        localstore.open(home=home, validator="not-callable")  # type: ignore[arg-type]
    assert info.value.hint
    assert not (home / "data").exists()  # refused before anything was opened
