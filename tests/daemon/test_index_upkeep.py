"""The daemon while another process holds the index's write lock.

In-process daemon (with a memory remote), a real second process holding BEGIN IMMEDIATE on index.db.
"""

from __future__ import annotations

import threading

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
        assert "threads" in gauges
        d.daemon.stop()
        d.thread.join(20)
        stopped_while_held = not d.thread.is_alive() and holder.holding
    finally:
        holder.release()
    assert stopped_while_held, "stop waited for another process's write lock"
    assert d.errors == []
