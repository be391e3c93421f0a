"""An unexpected error in the daemon's 0.5 s checks is logged once and the daemon keeps running;
only an error while the home's index is gone stops it."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from localstore._daemon_state import EXIT_HOME_GONE

from .conftest import eventually

TICKS = 6  # 3 s of checks


def _denied(*_args: Any) -> bool:
    raise PermissionError(13, "Permission denied", "state/cloud-session.changed")


def _tick_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The daemon's ERROR records about the injected error."""
    return [
        r
        for r in caplog.records
        if r.name == "sync.daemon"
        and r.levelno >= logging.ERROR
        and "Permission denied" in r.getMessage()
    ]


def test_an_unexpected_error_in_a_check_is_logged_once_and_the_daemon_keeps_running(
    inproc_daemon: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A permission error reading the login marker (state/ restored by root, say) went out of
    the tick loop: the daemon shut down, though only one of its checks could not run."""
    caplog.set_level(logging.DEBUG)
    d = inproc_daemon()
    monkeypatch.setattr(d.daemon._session_marker, "changed", _denied)
    time.sleep(TICKS * 0.5)
    assert d.thread.is_alive() and not d.errors
    with d.client() as c:
        assert c.status()["daemon"]["pid"] > 0
    errors = _tick_errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "cloud-session.changed" in errors[0].getMessage()
    assert errors[0].exc_info is not None  # (unexpected: the traceback, once)
    assert d.daemon.exit_code == 0

    # It works again: said once at INFO; the same error later is news again.
    monkeypatch.setattr(d.daemon._session_marker, "changed", lambda: False)
    assert eventually(lambda: any("works again" in r.getMessage() for r in caplog.records), 5), [
        r.getMessage() for r in caplog.records[-5:]
    ]
    monkeypatch.setattr(d.daemon._session_marker, "changed", _denied)
    assert eventually(lambda: len(_tick_errors(caplog)) == 2, 5)
    assert d.thread.is_alive()


def test_an_error_while_the_homes_index_is_gone_stops_the_daemon(
    inproc_daemon: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The index deleted with the data folder (or its disk unmounted): every write goes to a
    file that is gone at exit. That is not an error to keep running with."""
    d = inproc_daemon()
    monkeypatch.setattr(d.daemon._session_marker, "changed", _denied)
    index = d.daemon.settings.paths.index_db
    for path in index.parent.glob(index.name + "*"):
        path.unlink()
    d.thread.join(10)
    assert not d.thread.is_alive() and not d.errors
    assert d.daemon.exit_code == EXIT_HOME_GONE
    gone = [r.getMessage() for r in caplog.records if "is gone" in r.getMessage()]
    assert gone and str(index) in gone[0]
