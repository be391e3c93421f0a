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


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (_raises, "ValueError: the app's merge has a bug"),
        (_returns_none, "returned NoneType, not a Resolution"),
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
