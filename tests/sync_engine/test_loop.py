"""The background loop: local changes, remote hints, polling, timer-driven backoff, lifecycle."""

from __future__ import annotations

import logging
import random
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from localstore.errors import StorageError
from localstore.events import Event
from sync import _engine_core as engine_core  # (status() reads read_status there)
from sync import _timefmt
from sync.engine import SyncEngine, WorkerState
from sync.errors import EngineStateError, NotLoggedInError, SyncLockedError, TransientError
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import HintCallback, Unsubscribe
from tests.suspend_clock import SleepsBetweenReadings

from .conftest import Device

WAIT = 20.0


def _pushed_signal(server: MemoryServer) -> tuple[threading.Event, MemoryRemote]:
    """An event set whenever any device writes to the server (another handle's hint)."""
    seen = threading.Event()
    observer = MemoryRemote(server, user="u")
    observer.subscribe(seen.set)
    return seen, observer


def test_local_change_is_pushed_by_the_loop(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a", debounce_s=0.05)
    seen, observer = _pushed_signal(server)
    try:
        a.engine.start()
        assert a.engine.worker_state is WorkerState.RUNNING
        a.store.save("loop/x", "v: 1\n")
        assert seen.wait(WAIT)
    finally:
        observer.close()


def test_remote_hint_triggers_a_pull(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b", poll_interval_s=3600)
    arrived = threading.Event()

    def on_event(event: Event) -> None:
        if event.origin == "remote" and event.path == "hint/x.blueprint.yaml":
            arrived.set()

    b.store.subscribe(on_event)
    b.engine.start()
    a.store.save("hint/x", "v: 1\n")
    a.sync()  # b's realtime hint fires from this push
    assert arrived.wait(WAIT)


class NoRealtimeRemote(MemoryRemote):
    """A backend without realtime: only polling finds remote changes."""

    def subscribe(self, callback: HintCallback) -> Unsubscribe:
        return lambda: None


def test_polling_finds_changes_without_hints(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b", poll_interval_s=0.05)
    b.engine.remote = NoRealtimeRemote(server, user="u")
    arrived = threading.Event()
    b.store.subscribe(lambda e: arrived.set() if e.origin == "remote" else None)
    b.engine.start()
    a.store.save("poll/x", "v: 1\n")
    a.sync()
    assert arrived.wait(WAIT)
    b.engine.stop()
    b.engine.join(WAIT)
    b.engine.remote.close()


def test_failures_are_retried_by_a_timer_not_by_new_writes(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a", backoff_base_s=0.01, backoff_cap_s=0.05, poll_interval_s=3600)
    a.remote.fail_next(3, TransientError("connection reset"), method="push")
    seen, observer = _pushed_signal(server)
    try:
        a.store.save("retry/x", "v: 1\n")  # the only write
        a.engine.start()
        assert seen.wait(WAIT)
        assert a.remote.calls["push"] >= 4
    finally:
        observer.close()


def test_an_outage_is_one_warning_and_its_end_one_info_line_for_an_embedding_app(
    make_device: Callable[..., Device], server: MemoryServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the daemon's log filter quieted the INFO line the engine wrote per retry: an app
    logging at INFO got one a minute for as long as the laptop was offline."""
    a = make_device("a", backoff_base_s=0.01, backoff_cap_s=0.02, poll_interval_s=3600)
    a.remote.fail_next(6, TransientError("connection refused"), method="push")
    seen, observer = _pushed_signal(server)
    try:
        with caplog.at_level(logging.INFO, logger="sync.engine"):
            a.store.save("outage/x", "v: 1\n")
            a.engine.start()
            assert seen.wait(WAIT)
            a.engine.stop()
            a.engine.join(WAIT)
        assert a.remote.calls["push"] >= 7
    finally:
        observer.close()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "sync.engine"]
    assert not [m for _, m in lines if "retrying in" in m], lines
    assert [lvl for lvl, m in lines if "cannot be reached" in m] == ["WARNING"], lines
    assert [lvl for lvl, m in lines if "answers again, after" in m] == ["INFO"], lines


@pytest.mark.skipif(sys.platform == "win32", reason="time.monotonic() counts sleep on Windows")
def test_a_night_offline_is_logged_as_a_night(
    make_device: Callable[..., Device],
    server: MemoryServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The outage's length was measured on the engine's monotonic clock, which stands still
    while a laptop sleeps: a night offline with the lid closed was "after 2 min offline"."""
    monkeypatch.setattr(_timefmt, "time", SleepsBetweenReadings())
    a = make_device("a", backoff_base_s=0.01, backoff_cap_s=0.02, poll_interval_s=3600)
    a.remote.fail_next(1, TransientError("connection refused"), method="push")
    seen, observer = _pushed_signal(server)
    try:
        with caplog.at_level(logging.INFO, logger="sync.engine"):
            a.store.save("outage/x", "v: 1\n")
            a.engine.start()
            assert seen.wait(WAIT)
            a.engine.stop()
            a.engine.join(WAIT)
    finally:
        observer.close()
    ends = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
    assert ends == ["sync: the cloud answers again, after 10.0 h offline"], ends


def test_pause_and_resume(make_device: Callable[..., Device], server: MemoryServer) -> None:
    a = make_device("a", poll_interval_s=3600)
    states: list[str] = []
    a.engine.subscribe_status(lambda s: states.append(s.state))
    a.engine.start()
    a.engine.pause()
    assert a.engine.status().state == "paused"
    seen, observer = _pushed_signal(server)
    try:
        a.store.save("pause/x", "v: 1\n")
        a.engine.resume()
        assert seen.wait(WAIT)
        assert "paused" in states
    finally:
        observer.close()


def test_resume_wakes_the_loop_when_publishing_its_status_fails(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resume() published its status (a listener makes it read the counts from the index) before
    waking the loop; that read failing (a locked or damaged index) skipped the wake-up, and the
    engine slept, un-paused, until some later trigger: an edit made while paused was not pushed."""
    # Nothing but a wake-up syncs within the test: not the timer, not a local edit.
    a = make_device("a", poll_interval_s=3600, debounce_s=3600)
    idle = threading.Event()
    # (A listener, as a daemon with a control client has, makes each state change read status.)
    a.engine.subscribe_status(lambda s: idle.set() if s.state == "idle" else None)
    a.engine.start()
    assert idle.wait(WAIT)  # the first cycle is over: none still running pushes the edit below
    a.engine.pause()
    seen, observer = _pushed_signal(server)
    caller = threading.get_ident()
    real_read_status = engine_core.read_status

    def read_status(*args: Any, **kwargs: Any) -> Any:
        # Fault injection: the index read fails on the thread calling resume() only, so the
        # loop's own cycle (another thread) reads the counts as usual.
        if threading.get_ident() == caller:
            raise StorageError("cannot read the index: disk I/O error")
        return real_read_status(*args, **kwargs)

    try:
        a.store.save("pause/x", "v: 1\n")
        monkeypatch.setattr(engine_core, "read_status", read_status)
        with pytest.raises(StorageError, match="disk I/O error"):  # still the caller's to hear
            a.engine.resume()
        monkeypatch.undo()
        assert seen.wait(WAIT)
        assert a.engine.status().state != "paused"
    finally:
        observer.close()


def test_lifecycle_refuses_misuse(make_device: Callable[..., Device]) -> None:
    a = make_device("a")
    a.engine.start()
    with pytest.raises(EngineStateError):
        a.engine.start()
    a.engine.stop()
    assert a.engine.join(WAIT)
    assert a.engine.worker_state is WorkerState.STOPPED
    with pytest.raises(EngineStateError):
        a.engine.start()
    a.engine.stop()  # idempotent


def test_a_held_lock_refuses_a_second_syncer(make_device: Callable[..., Device]) -> None:
    lock = threading.Lock()
    a = make_device("a", lock=lock)
    a.engine.start()
    other = SyncEngine(a.store, a.remote, lock=lock)
    with pytest.raises(SyncLockedError):
        other.sync_once()
    with pytest.raises(SyncLockedError):
        other.start()
    a.engine.stop()
    a.engine.join(WAIT)
    assert not lock.locked()
    assert other.sync_once().pushed == 0


def test_backoff_is_exponential_with_jitter_and_capped(make_device: Callable[..., Device]) -> None:
    a = make_device("a", rng=random.Random(7))
    delays = [a.engine.backoff_delay(n) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(60.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= d <= ceiling
    assert delays[-1] >= 30.0


def test_run_blocks_in_the_callers_thread_until_stop(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    lock = threading.Lock()
    a = make_device("a", lock=lock, debounce_s=0.0)
    seen, observer = _pushed_signal(server)
    runner = threading.Thread(target=a.engine.run, name="localstore-test-run")
    try:
        runner.start()
        a.store.save("run/x", "v: 1\n")
        assert seen.wait(WAIT)
        assert lock.locked()
    finally:
        a.engine.stop()
        runner.join(WAIT)
        observer.close()
    assert not runner.is_alive() and not lock.locked()
    assert a.engine.worker_state is WorkerState.STOPPED
    with pytest.raises(EngineStateError):
        a.engine.run()


def test_after_an_error_for_the_user_request_sync_retries_at_once(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a", poll_interval_s=3600)
    failed = threading.Event()
    a.engine.subscribe_status(lambda s: failed.set() if s.state == "error" else None)
    a.remote.fail_next(1, NotLoggedInError("no session stored"), method="server_info")
    a.store.save("login/x", "v: 1\n")
    seen, observer = _pushed_signal(server)
    try:
        a.engine.start()
        assert failed.wait(WAIT)  # now waiting a minute for a person to log in...
        a.engine.request_sync()  # ...who did, and said so (e.g. `localstore sync` via the daemon)
        assert seen.wait(WAIT)
    finally:
        observer.close()


def test_a_stop_for_the_same_reason_is_logged_once(
    make_device: Callable[..., Device], server: MemoryServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A locked keychain failed two cycles 0.7 s apart (a hint, or a request_sync, started the
    # second): "sync stopped until fixed" twice for the one reason a person has to fix.
    a = make_device("a", poll_interval_s=3600)
    failures = threading.Semaphore(0)
    a.engine.subscribe_status(lambda s: failures.release() if s.state == "error" else None)
    a.remote.fail_next(2, NotLoggedInError("no session stored"), method="server_info")
    a.store.save("login/x", "v: 1\n")
    seen, observer = _pushed_signal(server)
    try:
        with caplog.at_level(logging.DEBUG, logger="sync.engine"):
            a.engine.start()
            assert failures.acquire(timeout=WAIT)
            a.engine.request_sync()  # the same reason again
            assert failures.acquire(timeout=WAIT)
            a.remote.fail_next(1, NotLoggedInError("another reason"), method="server_info")
            a.engine.request_sync()
            assert failures.acquire(timeout=WAIT)
            a.remote.fail_next(1, NotLoggedInError("no session stored"), method="server_info")
            a.engine.request_sync()  # the first reason again: news after the other one
            assert failures.acquire(timeout=WAIT)
            a.engine.request_sync()
            assert seen.wait(WAIT)
    finally:
        observer.close()
    stops = [
        r.getMessage().split(" (")[0]
        for r in caplog.records
        if r.levelno >= logging.WARNING and "stopped until fixed" in r.getMessage()
    ]
    assert stops == [
        "sync stopped until fixed: no session stored",
        "sync stopped until fixed: another reason",
        "sync stopped until fixed: no session stored",
    ], caplog.text
