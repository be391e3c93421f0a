"""The loop's local, expected failures: each classified, logged briefly, shown in the status.

An index another process keeps locked, a full disk and a store closed under a running loop are
conditions of this machine, not bugs: they get no traceback, the status says what to do, and a
closed store ends the loop. Real components throughout: a second process holding the index's write
lock, an index that cannot grow (``PRAGMA max_page_count`` on the store's own connection), a real
``store.close()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localstore.errors import DiskFullError
from localstore.store import SaveRequest
from sync.cli_daemon import check_daemon
from sync.daemon import Daemon
from sync.embed import lock_holder
from sync.engine import SyncEngine, SyncStatus, WorkerState
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Remote
from tests.conftest import eventually
from tests.daemon.conftest import InProcessDaemon, home_settings, run_on_thread
from tests.store.lockholder import LockHolder, holders, waiting_for_lock

from .conftest import Device, close_device, open_device

WAIT = 20.0
holder_factory = pytest.fixture(holders)

# Small so that each lock wait is short, and failures repeat quickly.
FAST = {"backoff_base_s": 0.02, "backoff_cap_s": 0.05, "poll_interval_s": 3600.0}


class Attempts:
    """Counts cycles started (each begins in ``connecting``) and failed (each ends in ``error``)."""

    def __init__(self, engine: SyncEngine) -> None:
        self.started = 0
        self.failed = 0
        self.last_failure: SyncStatus | None = None
        self.states: list[SyncStatus] = []
        self._lock = threading.Lock()
        self.unsubscribe = engine.subscribe_status(self._on_status)

    def _on_status(self, status: SyncStatus) -> None:
        with self._lock:
            self.states.append(status)
            if status.state == "connecting":
                self.started += 1
            elif status.state == "error":
                self.failed += 1
                self.last_failure = status


def engine_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sync.engine"]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    loud = [
        r.getMessage()
        for r in engine_records(caplog)
        if r.exc_info or r.levelno >= logging.ERROR or "unexpected" in r.getMessage()
    ]
    assert loud == [], loud


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="sync.engine"):
        yield caplog


def fill_index(dev: Device) -> None:
    """Let the store's index use no page more than it has now: the next growth is SQLITE_FULL."""
    with dev.store.index.read() as cur:
        pages = int(cur.execute("PRAGMA page_count").fetchall()[0][0])
        cur.execute(f"PRAGMA max_page_count = {pages}")


def free_index(dev: Device) -> None:
    with dev.store.index.read() as cur:
        cur.execute("PRAGMA max_page_count = 1073741823")


def upload(make_device: Callable[..., Device], n: int) -> None:
    """Another device of the user puts ``n`` blueprints of a few KB on the server."""
    other = make_device("other")
    other.store.save_many(
        [SaveRequest(f"many/b{i}", f"v: {i}\nbody: {'x' * 3000}\n") for i in range(n)]
    )
    other.sync()


# -- another process holds the index's write lock ------------------------------------------------


def test_a_locked_index_is_retried_with_a_short_warning_and_shown_in_the_status(
    make_device: Callable[..., Device],
    holder_factory: Callable[[Path], LockHolder],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    a = make_device("a", **FAST)
    a.store.save("k/x", "v: 1\n")
    a.store.index.busy_timeout_ms = 200  # each write gives up on the lock after 0.2 s
    attempts = Attempts(a.engine)
    holder = holder_factory(a.store.index.path)
    a.engine.start()
    assert eventually(lambda: attempts.failed >= 3, WAIT)
    # What a UI saw (the loop may be in its next attempt by now), and what status() says.
    assert attempts.last_failure is not None
    assert attempts.last_failure.last_error == a.engine.status().last_error
    status = attempts.last_failure
    assert status.last_error is not None
    assert "index is locked by another process" in status.last_error
    assert "retries by itself" in status.last_error  # the hint
    assert_no_traceback(debug_logs)
    warnings = [r for r in engine_records(debug_logs) if r.levelno == logging.WARNING]
    # One short warning for the condition, not one per attempt.
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "index is locked by another process" in warnings[0].getMessage()
    holder.release()
    a.engine.request_sync()
    assert eventually(lambda: a.engine.status().state == "idle", WAIT)
    assert a.engine.status().pending == 0 and a.engine.status().last_error is None
    assert eventually(
        lambda: any("index is free again" in r.getMessage() for r in engine_records(debug_logs)),
        WAIT,
    )
    assert a.engine.worker_state is WorkerState.RUNNING


def test_sync_once_on_a_locked_index_does_not_wait_twice_to_record_it(
    make_device: Callable[..., Device],
    holder_factory: Callable[[Path], LockHolder],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """Recording the error needs the same lock: it is shown in the status, not written, and
    the caller gets the store's error with its hint."""
    a = make_device("a")
    a.store.save("k/x", "v: 1\n")
    a.store.index.busy_timeout_ms = 200
    holder_factory(a.store.index.path)
    with pytest.raises(Exception) as caught:
        a.sync()
    assert "stayed locked by another process" in str(caught.value)
    assert "index is locked by another process" in (a.engine.status().last_error or "")
    assert not any("could not record" in r.getMessage() for r in engine_records(debug_logs))


# -- a full disk -----------------------------------------------------------------------------------


def test_a_full_index_says_disk_full_retries_and_logs_once(
    make_device: Callable[..., Device],
    server: MemoryServer,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    upload(make_device, 40)
    b = make_device("b", **FAST)
    b.sync()  # settled (identity, watermark): what is left to write is the pulled rows
    upload_more = make_device("more")
    upload_more.store.save_many(
        [SaveRequest(f"more/m{i}", f"body: {'y' * 3000}\n") for i in range(40)]
    )
    upload_more.sync()
    fill_index(b)
    attempts = Attempts(b.engine)
    b.engine.start()
    assert eventually(lambda: attempts.failed >= 4, WAIT)
    assert attempts.last_failure is not None
    assert attempts.last_failure.last_error == b.engine.status().last_error
    status = attempts.last_failure
    assert status.last_error is not None and status.last_error.startswith("disk full: free space")
    assert "sync retries by itself" in status.last_error
    assert_no_traceback(debug_logs)
    full = [r for r in engine_records(debug_logs) if "disk full" in r.getMessage()]
    assert [r.levelno for r in full if r.levelno >= logging.INFO] == [logging.WARNING], [
        r.getMessage() for r in full
    ]
    free_index(b)
    b.engine.request_sync()
    assert eventually(lambda: b.engine.status().state == "idle", WAIT)
    assert len(b.store.list()) == 80
    assert eventually(
        lambda: any(
            "there is disk space again" in r.getMessage() for r in engine_records(debug_logs)
        ),
        WAIT,
    )


def test_disk_full_from_the_files_is_classified_too(
    make_device: Callable[..., Device],
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """Fault injection (a full disk while writing blueprint files): the same classification."""
    upload(make_device, 3)
    b = make_device("b", **FAST)
    real = b.store.save_many

    def full(*args: object, **kwargs: object) -> object:
        raise DiskFullError(
            "write many/b0.blueprint.yaml", hint="free some disk space and try again"
        )

    monkeypatch.setattr(b.store, "save_many", full)
    attempts = Attempts(b.engine)
    b.engine.start()
    assert eventually(lambda: attempts.failed >= 3, WAIT)
    assert (b.engine.status().last_error or "").startswith("disk full: free space")
    assert_no_traceback(debug_logs)
    monkeypatch.setattr(b.store, "save_many", real)
    b.engine.request_sync()
    assert eventually(lambda: b.engine.status().state == "idle", WAIT)
    assert len(b.store.list()) == 3


# -- the store closes under the loop ---------------------------------------------------------------


def test_closing_the_store_ends_the_loop_quietly(
    make_device: Callable[..., Device], debug_logs: pytest.LogCaptureFixture
) -> None:
    a = make_device("a", debounce_s=0.0, poll_interval_s=0.01)
    attempts = Attempts(a.engine)
    runner = threading.Thread(target=a.engine.run, name="localstore-test-run")
    runner.start()
    try:
        assert eventually(lambda: attempts.started >= 2, WAIT)  # looping
        a.store.close()
        runner.join(WAIT)
        assert not runner.is_alive(), "run() went on after the store closed"
    finally:
        a.engine.stop()
        runner.join(WAIT)
    assert a.engine.worker_state is WorkerState.STOPPED
    assert_no_traceback(debug_logs)
    assert not [r for r in engine_records(debug_logs) if r.levelno >= logging.WARNING]


def test_closing_the_store_while_the_loop_waits_for_a_lock_ends_it_quietly(
    make_device: Callable[..., Device],
    holder_factory: Callable[[Path], LockHolder],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """close() cuts the lock wait short (interrupt_lock_waits): that failure is the close's, not
    a locked index to warn about."""
    a = make_device("a", **FAST)
    a.store.save("k/x", "v: 1\n")
    holder_factory(a.store.index.path)
    a.engine.start()
    thread = a.engine._thread
    assert thread is not None
    assert eventually(lambda: waiting_for_lock(thread), WAIT)
    a.store.close()
    assert a.engine.join(WAIT)
    assert a.engine.worker_state is WorkerState.STOPPED
    assert_no_traceback(debug_logs)
    assert not [r for r in engine_records(debug_logs) if r.levelno >= logging.WARNING]


# -- the daemon shows it ---------------------------------------------------------------------------


@pytest.fixture
def online_daemon(tmp_path: Path) -> Iterator[Callable[[Remote], InProcessDaemon]]:
    """A Daemon syncing through ``remote``, run() on a thread; stopped and joined after the test."""
    made: list[InProcessDaemon] = []

    def start(remote: Remote) -> InProcessDaemon:
        settings = home_settings(tmp_path / "daemon-home")
        daemon = Daemon(settings, install_signals=False, remote_factory=lambda _s: remote)
        made.append(run_on_thread(daemon))
        return made[-1]

    yield start
    for d in made:
        d.daemon.stop()
        d.thread.join(WAIT)
        assert not d.thread.is_alive(), "the daemon did not stop"
        assert lock_holder(d.daemon.settings.paths.state) is None


def test_the_daemon_status_and_doctor_say_disk_full(
    tmp_path: Path,
    server: MemoryServer,
    online_daemon: Callable[[Remote], InProcessDaemon],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    d = online_daemon(MemoryRemote(server, user="u"))
    store, engine = d.daemon.store, d.daemon.engine
    assert store is not None and engine is not None
    assert eventually(lambda: engine.status().state == "idle", WAIT)
    with store.index.read() as cur:  # the daemon's own connection cannot grow the index
        pages = int(cur.execute("PRAGMA page_count").fetchall()[0][0])
        cur.execute(f"PRAGMA max_page_count = {pages}")
    other = open_device(tmp_path, "other", server)
    try:
        other.store.save_many([SaveRequest(f"d/b{i}", f"body: {'z' * 3000}\n") for i in range(40)])
        other.sync()  # the daemon's engine hears the hint and pulls
    finally:
        close_device(other)
    with d.client() as client:
        assert eventually(lambda: client.status()["sync"]["state"] == "error", WAIT)
        sync = client.status()["sync"]
    assert sync["last_error"].startswith("disk full: free space")
    assert "sync retries by itself" in sync["last_error"]
    finding = check_daemon(d.daemon.settings)
    assert finding.status == "problem"
    assert "disk full: free space" in finding.detail
    assert_no_traceback(debug_logs)


def test_a_daemon_stopping_while_sync_waits_for_the_index_lock_is_quiet(
    holder_factory: Callable[[Path], LockHolder],
    online_daemon: Callable[[Remote], InProcessDaemon],
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    """The shutdown cuts the engine's lock wait short: an expected end, not a locked index."""
    d = online_daemon(MemoryRemote())
    engine = d.daemon.engine
    assert engine is not None
    assert eventually(lambda: engine.status().state == "idle", WAIT)
    holder_factory(d.daemon.settings.paths.index_db)
    engine.request_sync()
    thread = engine._thread
    assert thread is not None
    assert eventually(lambda: waiting_for_lock(thread), WAIT)
    d.daemon.stop()
    d.thread.join(WAIT)
    assert not d.thread.is_alive() and d.errors == []
    assert_no_traceback(debug_logs)
    assert not [r for r in engine_records(debug_logs) if r.levelno >= logging.WARNING]
