"""A newer localstore upgrades the home's index while this engine's loop runs (an app updated
while the daemon, or an older app syncing in-process, goes on): its writes are refused from then
on, so its loop stops with the status saying what to do, rather than retrying for ever."""

from __future__ import annotations

import logging
from collections.abc import Callable

import apsw
import pytest

from localstore.index import CORE_MIGRATIONS
from sync.engine import WorkerState
from sync.memory_remote import MemoryServer

from .conftest import Device

WAIT = 20.0


def _upgrade_as_a_newer_localstore(dev: Device) -> None:
    """What a newer localstore's open does to the index: one core version more, from its own
    connection."""
    conn = apsw.Connection(str(dev.store.settings.paths.index_db))
    conn.setbusytimeout(10_000)
    newer = len(CORE_MIGRATIONS) + 1
    with conn:
        conn.execute("UPDATE component_versions SET version = ? WHERE component = 'core'", (newer,))
        conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()


def test_the_loop_stops_once_a_newer_localstore_upgraded_the_index(
    make_device: Callable[..., Device], server: MemoryServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: each cycle was an "unexpected failure" logged with its traceback and retried
    with backoff, for as long as the process ran (days, for a daemon), and the status showed
    the old code's "upgrade localstore" though the upgrade was what had happened."""
    a, b = make_device("a"), make_device("b", poll_interval_s=3600, backoff_base_s=0.01)
    b.store.save("mine/x", "v: 1\n")
    b.sync()
    b.engine.start()
    _upgrade_as_a_newer_localstore(b)
    caplog.set_level(logging.DEBUG, logger="sync")
    a.store.save("theirs/y", "v: 1\n")
    a.sync()  # b's realtime hint: a cycle that must apply a pulled row, in a refused write

    assert b.engine.join(WAIT), "the loop kept retrying"
    assert b.engine.worker_state is WorkerState.STOPPED
    status = b.engine.status()
    assert status.state == "error"
    assert status.last_error is not None
    assert "a newer localstore upgraded this home's index" in status.last_error
    assert "restart this program (or the daemon) with the newer localstore" in status.last_error
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage()[:16] for r in errors] == ["sync stopped: a "], errors
    assert not any(r.exc_info for r in caplog.records)
    # Nothing parked or marked failed by the refusal: the next version syncs it as it is.
    assert status.quarantined == 0 and status.conflicts == 0
    assert not b.store.abspath("theirs/y.blueprint.yaml").exists()
