"""The name a validator is recorded under by default (``validator_name_of``).

Each row records the validator that judged it, and opening a home with a validator of another
name judges the blueprints again. Before session 18 every ``functools.partial`` was named
``functools.partial``, every lambda of a module ``module.<lambda>``, every instance of a callable
class (and every method of one) by the class: an app that switched from lenient to strict rules
built that way kept the lenient verdicts, and sync pushed what the strict rules refuse.
"""

from __future__ import annotations

import enum
import functools
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.config import MAX_VALIDATOR_NAME
from localstore.errors import InvalidInputError
from localstore.store import validator_name_of

REPO = Path(__file__).resolve().parents[2]
Rules = Callable[[Mapping[str, Any]], list[str]]


def check(
    doc: Mapping[str, Any], strict: bool = False, banned: frozenset[str] = frozenset()
) -> list[str]:
    """The app's rules: ``strict`` also refuses ``debug``; ``banned`` keys are refused."""
    problems = [f"{key} is not allowed" for key in sorted(banned) if key in doc]
    return problems + (["debug must be off"] if strict and doc.get("debug") else [])


def make_check(strict: bool) -> Rules:
    """The rules as a closure over their setting."""

    def closed(doc: Mapping[str, Any]) -> list[str]:
        return check(doc, strict=strict)

    return closed


class Mode(enum.Enum):
    LENIENT = "lenient"
    STRICT = "strict"


@dataclass(frozen=True)
class Checker:
    """The rules as a callable instance holding their setting."""

    mode: Mode

    def __call__(self, doc: Mapping[str, Any]) -> list[str]:
        return check(doc, strict=self.mode is Mode.STRICT)

    def validate(self, doc: Mapping[str, Any]) -> list[str]:
        return self(doc)

    @classmethod
    def default(cls, doc: Mapping[str, Any]) -> list[str]:
        return check(doc)

    @staticmethod
    def static(doc: Mapping[str, Any]) -> list[str]:
        return check(doc)


class Stateless:
    """A callable class whose instances hold nothing: every one has the same rules."""

    def __call__(self, doc: Mapping[str, Any]) -> list[str]:
        return check(doc)

    def validate(self, doc: Mapping[str, Any]) -> list[str]:
        return check(doc)


class Slotted:
    """Rules whose setting is in a slot, not in a ``__dict__``."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, doc: Mapping[str, Any]) -> list[str]:
        return ["too many keys"] if len(doc) > self.limit else []


@functools.cache
def cached(doc: Any) -> list[str]:
    return []


# The two rule sets, built each way an app may build them: lenient first, then strict.
KINDS: dict[str, tuple[Rules, Rules]] = {
    "partial": (functools.partial(check, strict=False), functools.partial(check, strict=True)),
    "closure": (make_check(False), make_check(True)),
    "instance": (Checker(Mode.LENIENT), Checker(Mode.STRICT)),
    "bound method": (Checker(Mode.LENIENT).validate, Checker(Mode.STRICT).validate),
}
# Built as the daemon imports it from config.yaml: a module-level attribute.
STRICT = functools.partial(check, strict=True, banned=frozenset({"beta", "gamma", "delta"}))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_app_that_switches_to_stricter_rules_has_its_blueprints_judged_again(
    home: Path, kind: str
) -> None:
    """The regression: the strict rules took the name of the lenient ones, so nothing was judged
    again and the blueprint stayed valid (and would have been pushed)."""
    lenient, strict = KINDS[kind]
    with localstore.open(home=home, validator=lenient) as app:
        assert app.save("a/one", "debug: true\n").valid
    with localstore.open(home=home, validator=strict) as app:
        assert app.load("a/one").problems == ("debug must be off",)
        assert not app.resolve("a/one").valid
        assert app.home_validator() == validator_name_of(strict) != validator_name_of(lenient)
    with localstore.open(home=home, validator=lenient) as app:  # and back
        assert app.resolve("a/one").valid


def test_plain_functions_keep_the_names_homes_recorded(home: Path) -> None:
    """Homes in the field record '<module>.<qualname>' for these: a new name would judge every
    blueprint again at the first open after an upgrade, and hold the daemon's edits."""
    here = __name__
    assert validator_name_of(check) == f"{here}.check"
    assert validator_name_of(Checker.static) == f"{here}.Checker.static"
    assert validator_name_of(Checker(Mode.LENIENT).static) == f"{here}.Checker.static"
    assert validator_name_of(Checker.default) == f"{here}.Checker.default"
    assert validator_name_of(cached) == f"{here}.cached"
    assert validator_name_of(Stateless()) == f"{here}.Stateless"
    assert validator_name_of(Stateless().validate) == f"{here}.Stateless.validate"
    assert validator_name_of(None) == ""
    with localstore.open(home=home, validator=check) as app:
        assert app.validator_name == app.home_validator() == f"{here}.check"


def test_bound_values_are_part_of_the_name() -> None:
    here = __name__
    assert validator_name_of(functools.partial(check)) == f"{here}.check"  # (binds nothing)
    assert validator_name_of(Slotted(3)) == f"{here}.Slotted(limit=3)"
    assert validator_name_of(KINDS["partial"][1]) == f"{here}.check(strict=True)"
    assert (
        validator_name_of(KINDS["closure"][1]) == f"{here}.make_check.<locals>.closed(strict=True)"
    )
    assert validator_name_of(KINDS["instance"][1]) == f"{here}.Checker(mode={here}.Mode.STRICT)"
    assert validator_name_of(KINDS["bound method"][1]) == (
        f"{here}.Checker(mode={here}.Mode.STRICT).validate"
    )
    # A set's order changes with each process's string hashing; the name does not.
    assert validator_name_of(STRICT) == (
        f"{here}.check(banned=frozenset({{'beta', 'delta', 'gamma'}}), strict=True)"
    )


def test_a_name_is_the_same_in_another_process() -> None:
    """The daemon imports the validator config.yaml names, and an app opens the home in run after
    run: a name that changed between processes judged everything again at every open."""
    code = (
        "from tests.store.test_validator_names import STRICT, KINDS; "
        "from localstore.store import validator_name_of as n; "
        "print(n(STRICT)); print(*(n(r) for pair in KINDS.values() for r in pair), sep='\\n')"
    )
    here = [validator_name_of(STRICT)] + [validator_name_of(r) for p in KINDS.values() for r in p]
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == here


def _local_rules() -> Rules:
    lock = threading.Lock()

    def locked(doc: Mapping[str, Any]) -> list[str]:
        with lock:
            return check(doc)

    return locked


@pytest.mark.parametrize(
    ("validator", "why"),
    [
        (lambda doc: [], "a lambda has no name of its own"),
        (functools.partial(check, banned=threading.Lock()), "_thread.lock"),  # type: ignore[arg-type]
        (_local_rules(), "_thread.lock"),
        (functools.partial(lambda doc, strict: [], strict=True), "a lambda"),
    ],
    ids=["lambda", "partial of a lock", "closure over a lock", "partial of a lambda"],
)
def test_a_validator_without_a_stable_name_of_its_own_is_refused_before_anything_opens(
    home: Path, validator: Rules, why: str
) -> None:
    with pytest.raises(InvalidInputError, match="cannot name the validator") as info:
        localstore.open(home=home, validator=validator)
    assert why in info.value.message
    assert "validator_name=" in info.value.hint
    assert not (home / "data").exists()  # refused before anything was opened
    with localstore.open(home=home, validator=validator, validator_name="rules-1") as app:
        assert app.validator_name == app.home_validator() == "rules-1"


def test_a_long_name_is_cut_and_stays_distinct() -> None:
    """A name is recorded in every row its validator judges: a partial of a long list is cut to
    the limit of a configured name, and ends in a hash of the whole."""
    one = validator_name_of(functools.partial(check, banned=frozenset(f"k{i}" for i in range(99))))
    two = validator_name_of(functools.partial(check, banned=frozenset(f"k{i}" for i in range(98))))
    assert one != two
    assert len(one) <= MAX_VALIDATOR_NAME and len(two) <= MAX_VALIDATOR_NAME
    assert one.startswith(f"{__name__}.check(banned=frozenset(") and "...sha256:" in one
