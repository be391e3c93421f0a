"""An app's conflict policy (a callable) that raises, or returns something unusable, on one
blueprint: sync stopped for the whole home. Each cycle failed at that conflict ("unexpected
failure; retrying with backoff"), so no other blueprint was ever pulled again. The conflict is
now kept as both versions (the default's fallback: nothing lost), with the policy's error in the
conflict record's reason, and the cycle goes on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sync.merge import ConflictCase, Resolution

from .conftest import Device


def _raises(case: ConflictCase) -> Resolution:
    raise ValueError("the app's merge has a bug")


def _returns_none(case: ConflictCase) -> Any:
    return None  # (the app's bug under test)


# A Resolution the engine cannot carry out: each of these stopped every cycle at this row (an
# AssertionError, AttributeError or TypeError inside the pass), or parked the server's valid row
# as "invalid_remote" and left the conflict unrecorded, retried and refused again every cycle.
def _unknown_action(case: ConflictCase) -> Any:
    return Resolution("take_both")  # type: ignore[arg-type]


def _merged_yaml_does_not_parse(case: ConflictCase) -> Resolution:
    return Resolution.take_merged("a: [1\n", case.local.meta)


def _merged_yaml_is_a_list(case: ConflictCase) -> Resolution:
    return Resolution.take_merged("- a: 1\n", case.local.meta)


def _merged_content_not_text(case: ConflictCase) -> Any:
    return Resolution.take_merged(123, case.local.meta)  # type: ignore[arg-type]


def _merged_meta_invalid(case: ConflictCase) -> Resolution:
    return Resolution.take_merged("a: 30\nb: 2\n", {**case.local.meta, "name": 5})


def _merged_meta_of_another_blueprint(case: ConflictCase) -> Resolution:
    other = "00000000-0000-4000-8000-000000000001"
    return Resolution.take_merged("a: 30\nb: 2\n", {**case.local.meta, "id": other})


def _conflicts_not_text(case: ConflictCase) -> Any:
    return Resolution.keep_both([1, 2])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (_raises, "ValueError: the app's merge has a bug"),
        (_returns_none, "returned NoneType, not a Resolution"),
        (_unknown_action, "unknown action 'take_both'"),
        (_merged_yaml_does_not_parse, "YAML does not parse"),
        (_merged_yaml_is_a_list, "must be a mapping, not a list"),
        (_merged_content_not_text, "content that is int, not str"),
        (_merged_meta_invalid, "'name' must be a string"),
        (_merged_meta_of_another_blueprint, "meta of blueprint 00000000-0000-4000-8000"),
        (_conflicts_not_text, "conflicts that are not all str"),
    ],
)
def test_a_failing_policy_keeps_both_and_sync_goes_on(
    make_device: Callable[..., Device],
    policy: Callable[[ConflictCase], Any],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = make_device("a")
    b = make_device("b", policy=policy)
    ident = a.store.save("x/y", "a: 1\nb: 2\n").id
    a.sync()
    b.sync()
    a.store.save("x/y", "a: 10\nb: 2\n")
    a.store.save("x/other", "o: 1\n")
    a.sync()
    b.store.save("x/y", "a: 20\nb: 2\n")  # both changed the same line: the policy is asked

    b.sync()

    assert b.engine.quarantined() == []  # the server's row is fine: not parked as invalid
    assert b.store.exists("x/other")  # the rest of the pull went on
    assert b.text(ident) == "a: 10\nb: 2\n"  # the server's version keeps the id and path
    [record] = b.engine.conflicts()
    assert record.id == ident
    assert reason in record.reason
    assert record.copy_id is not None
    assert b.text(record.copy_id) == "a: 20\nb: 2\n"  # the local edit is kept, as a copy
    assert any(
        "conflict policy" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records
    )
    b.sync()
    a.sync()
    assert a.store.exists(record.copy_id)  # the copy syncs like any other blueprint
