"""Pause and resume against an engine that is starting (offline -> a login is picked up)."""

from __future__ import annotations

from typing import Any

import pytest

import sync.daemon as daemon_module
from sync.errors import NotLoggedInError
from sync.memory_remote import MemoryRemote, MemoryServer


@pytest.mark.parametrize("first", [False, True], ids=["pause", "resume"])
def test_a_pause_or_resume_while_the_engine_starts_is_kept(
    inproc_daemon: Any, monkeypatch: pytest.MonkeyPatch, first: bool
) -> None:
    """_attach_engine read the pause flag before starting the engine and published the engine
    after: a `pause` handled in between saw no engine, only set the flag, and the daemon said
    'paused' while its engine synced (a `resume` was lost the same way)."""
    server = MemoryServer()
    logged_in = False

    def remote_factory(settings: Any) -> MemoryRemote:
        if not logged_in:
            raise NotLoggedInError("not logged in")
        return MemoryRemote(server)

    d = inproc_daemon(remote_factory=remote_factory)
    assert d.daemon.engine is None  # offline
    d.daemon._op_pause(first)  # the state before the login: paused for the "resume" case
    real_start = daemon_module._MeteredEngine.start

    def start_with_a_request_in_between(engine: Any) -> None:
        d.daemon._op_pause(not first)  # the control op, handled while the engine starts
        real_start(engine)

    monkeypatch.setattr(daemon_module._MeteredEngine, "start", start_with_a_request_in_between)
    logged_in = True
    assert d.daemon._attach_engine()
    assert d.daemon._paused is (not first)
    assert d.daemon.engine is not None and d.daemon.engine._paused is (not first)
