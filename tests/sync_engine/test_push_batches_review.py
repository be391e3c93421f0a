"""Adversarial review of push batching (session 7): reproducers that became regression tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sync.engine import LONE_TIMEOUTS
from sync.errors import TransientError
from sync.memory_remote import MemoryServer

from .conftest import Device, server_snapshot


def _timeout() -> TransientError:
    return TransientError(
        "push_changes: canceling statement due to statement timeout [57014]", code="57014"
    )


def test_a_small_change_is_not_parked_because_a_busy_server_timed_out(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    # A busy server (another device's push holding the owner lock, a slow instance) times out
    # every call, whatever its size. A 20-byte change is not "too large": parking it as such
    # would need a person to run --retry-quarantined for a change that never was the cause.
    a = make_device("a")
    small = a.store.save("notes/tiny", "name: tiny\n").id
    for _ in range(LONE_TIMEOUTS + 2):
        a.remote.fail_next(1, _timeout(), method="push")
        with pytest.raises(TransientError):
            a.sync()
        assert a.engine.quarantined() == []
    assert a.sync().pushed == 1
    assert small in server_snapshot(server)
