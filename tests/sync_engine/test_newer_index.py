"""A newer localstore upgrades the home's index while this engine's loop runs (an app updated
while the daemon, or an older app syncing in-process, goes on): its writes are refused from then
on, so its loop stops with the status saying what to do, rather than retrying for ever."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import apsw
import pytest

from localstore.errors import NewerIndexError
from localstore.index import CORE_MIGRATIONS
from sync import _state as st
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


def _upgrade_sync_tables_as_a_newer_localstore(dev: Device) -> None:
    """A newer localstore's first sync use of the home (its `status`, say) when only the sync
    tables changed: one sync version more (a column this engine does not fill), core unchanged."""
    conn = apsw.Connection(str(dev.store.settings.paths.index_db))
    conn.setbusytimeout(10_000)
    with conn:
        conn.execute("ALTER TABLE sync_items ADD COLUMN newer_mark INTEGER NOT NULL DEFAULT 0")
        conn.execute(
            "UPDATE component_versions SET version = ? WHERE component = 'sync'",
            (len(st.SYNC_MIGRATIONS) + 1,),
        )
    conn.close()


def test_a_cycle_writes_nothing_once_a_newer_localstore_upgraded_the_sync_tables(
    make_device: Callable[..., Device],
) -> None:
    """The sync tables have their own version (component ``sync``): a newer localstore bumps it
    alone when only they change. Only the core's was checked per write, so this engine went on
    taking rows into tables whose rows the newer version means otherwise (a column it does not
    fill, a base kept another way: merged against a wrong base, a change taken for synced). Its
    cycle is refused at its first write now, as for the core, and leaves the index as it was."""
    a, b = make_device("a"), make_device("b")
    b.store.save("mine/x", "v: 1\n")
    b.sync()
    _upgrade_sync_tables_as_a_newer_localstore(b)
    a.store.save("theirs/y", "v: 1\n")
    a.sync()
    with b.store.index.read() as cur:
        cursor = st.get_cursor(cur)
    with pytest.raises(NewerIndexError, match=r"\(sync schema v\d+;"):
        b.sync()
    with b.store.index.read() as cur:
        assert st.get_cursor(cur) == cursor
        assert st.get_item(cur, a.store.row("theirs/y").id) is None
    assert not b.store.abspath("theirs/y.blueprint.yaml").exists()
    assert "a newer localstore upgraded" in (b.engine.status().last_error or "")


def test_an_upgrade_of_the_sync_tables_during_a_cycle_stops_its_next_write(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upgrade lands while the cycle waits for the server (after its check at the start):
    each write transaction checks the versions again, so the pulled row is not taken."""
    a, b = make_device("a"), make_device("b")
    b.store.save("mine/x", "v: 1\n")
    b.sync()
    a.store.save("theirs/y", "v: 1\n")
    a.sync()
    real_pull = b.remote.pull

    def pull(*args: Any, **kwargs: Any) -> Any:
        page = real_pull(*args, **kwargs)
        _upgrade_sync_tables_as_a_newer_localstore(b)
        return page

    monkeypatch.setattr(b.remote, "pull", pull)
    with b.store.index.read() as cur:
        cursor = st.get_cursor(cur)
    with pytest.raises(NewerIndexError, match=r"\(sync schema v\d+;"):
        b.sync()
    with b.store.index.read() as cur:
        assert st.get_cursor(cur) == cursor
        assert st.journal_read(cur) == []
    assert not b.store.abspath("theirs/y.blueprint.yaml").exists()


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
