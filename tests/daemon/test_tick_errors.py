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


def test_an_error_whose_text_changes_every_time_is_not_logged_every_tick(
    inproc_daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Each distinct error of a check is remembered (to log it once), at most 32 of them. Past
    those, every new text was logged in full: an error that names something changing (a count,
    a temporary file, a time) was an ERROR with its traceback twice a second for as long as it
    lasted (months, for a daemon), rotating everything else out of daemon.log."""
    caplog.set_level(logging.DEBUG)
    d = inproc_daemon()
    calls = iter(range(1_000_000))

    def changing() -> None:
        raise RuntimeError(f"failed on attempt {next(calls)}")

    # The tick's own code path, driven directly: 1,000 ticks (over 8 minutes of real ticks).
    for _ in range(1000):
        d.daemon._guarded("a check under test", changing)
    logged = [
        r
        for r in caplog.records
        if r.name == "sync.daemon"
        and r.levelno >= logging.WARNING
        and "a check under test" in r.getMessage()
    ]
    # The first 32 texts in full, then one line saying the rest go to DEBUG.
    assert len(logged) == 33, len(logged)
    assert "logged at DEBUG" in logged[-1].getMessage()
    assert len(d.daemon._tick_errors["a check under test"]) <= 33  # (32 and a marker)
    # Recovery forgets them all: the next failure is news again.
    d.daemon._guarded("a check under test", lambda: None)
    assert "a check under test" not in d.daemon._tick_errors
    d.daemon._guarded("a check under test", changing)
    assert (
        [r for r in caplog.records if r.levelno >= logging.ERROR][-1]
        .getMessage()
        .endswith("failed on attempt 1000")
    )
