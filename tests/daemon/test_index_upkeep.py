"""The daemon while another process holds the index's write lock, and with failing maintenance.

In-process daemon (offline), a real second process holding BEGIN IMMEDIATE on index.db; mocks only
inject faults (a maintenance round failing with apsw.FullError, as on a full disk).
"""

from __future__ import annotations

import threading

import apsw
import pytest

from localstore.index import Maintainer
from sync.cli_daemon import check_daemon
from sync.memory_remote import MemoryRemote
from tests.store.lockholder import LockHolder, waiting_for_lock

from .conftest import eventually, write_external


def test_status_answers_and_stop_is_prompt_while_another_process_writes(inproc_daemon) -> None:
    """The watcher waits for the lock with the index's own lock released: status and metrics
    answer meanwhile (they timed out after 10 s), and stop does not wait out the busy timeout."""
    # Online: its status reads the index (the sync engine's counts).
    d = inproc_daemon(remote_factory=lambda _settings: MemoryRemote())
    holder = LockHolder(d.daemon.settings.paths.index_db)
    try:
        write_external(d.daemon.settings.paths.blueprints, "notes.blueprint.yaml", "name: n\n")
        assert eventually(lambda: any(waiting_for_lock(t) for t in threading.enumerate()), 20)
        with d.client() as c:
            status = c.status()
            gauges = c.metrics()["gauges"]
        assert status["sync"]["logged_in"] is True
        assert status["index"]["maintainer"]["running"] is True
        assert "index_wal_bytes" in gauges and gauges["index_maintainer_running"] == 1
        d.daemon.stop()
        d.thread.join(20)
        stopped_while_held = not d.thread.is_alive() and holder.holding
    finally:
        holder.release()
    assert stopped_while_held, "stop waited for another process's write lock"
    assert d.errors == []


def test_doctor_reports_failing_index_maintenance(
    inproc_daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = inproc_daemon()
    store = d.daemon.store
    assert store is not None

    def full(self: Maintainer, conn: apsw.Connection) -> None:
        raise apsw.FullError("database or disk is full")

    monkeypatch.setattr(Maintainer, "_round", full)
    for _ in range(256):  # enough commits to wake the maintainer at once
        store.index.set_setting("wake", "x")
    assert eventually(lambda: store.index_health()["maintainer"]["failed_rounds"] >= 1, 20)
    finding = check_daemon(d.daemon.settings)
    assert finding.status == "problem"
    assert "index maintenance is failing" in finding.detail and "FullError" in finding.detail
    monkeypatch.undo()
    for _ in range(256):  # it recovers by itself at its next round; the doctor says so
        store.index.set_setting("wake", "y")
    assert eventually(lambda: store.index_health()["maintainer"]["failed_rounds"] == 0, 30)
    assert check_daemon(d.daemon.settings).status == "ok"
