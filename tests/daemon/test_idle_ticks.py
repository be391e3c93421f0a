"""What an idle daemon's tick runs on the index: it ticks twice a second for months.

An idle tick (nobody else committed) reads one pragma per check that looks at the index: the
follower's ``PRAGMA data_version`` and the newer-version check's. The check of a newer
localstore's upgrade read the schema versions at every tick (two statements more a tick, three
times the SQL of an idle tick before it), though only another connection's commit can upgrade
the index, and every such commit moves ``data_version``. Counted with an apsw exec tracer on
the store's connection; the ticks are called here, the daemon's own loop kept from ticking.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import apsw
import pytest

import localstore
from localstore.index import CORE_MIGRATIONS
from sync.daemon import Daemon

TICKS = 10


def _trace(conn: apsw.Connection) -> collections.Counter[str]:
    """Count the statements ``conn`` runs from now on (text -> count)."""
    counts: collections.Counter[str] = collections.Counter()

    def tracer(_cursor: Any, sql: str, _bindings: Any) -> bool:
        counts[" ".join(sql.split())] += 1
        return True

    conn.set_exec_trace(tracer)
    return counts


def test_an_idle_daemon_tick_reads_one_pragma_per_index_check(
    inproc_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop waits an hour between ticks: the test's own calls are the only ticks.
    monkeypatch.setattr(Daemon, "_tick_interval", lambda self: 3600.0)
    d = inproc_daemon()
    daemon = d.daemon
    store = daemon.store
    with store.index.read():  # (the open's own reads are done once the lock is free)
        pass
    # The index maintainer's commits (its own connection, every 30 s) move data_version, which
    # rightly makes the next tick read the versions and the follower look: not idle. Stopped.
    maintainer = store._maintainer
    if maintainer is not None:
        maintainer.stop()
        maintainer.join(10)
    daemon._tick()  # (a first tick takes any baseline after the start)
    counts = _trace(store.index.conn)
    for _ in range(TICKS):
        daemon._tick()
    store.index.conn.set_exec_trace(None)
    assert not daemon._stop.is_set()
    assert counts == {"PRAGMA data_version": 2 * TICKS}, counts


def test_the_newer_version_check_reads_the_versions_only_after_another_commit(
    tmp_path: Path,
) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        index = store.index
        assert index.newer_version() is None
        counts = _trace(index.conn)
        for _ in range(TICKS):
            assert index.newer_version() is None
        assert counts == {"PRAGMA data_version": TICKS}, counts

        # Another connection's commit that upgrades nothing: the versions are read once.
        other = apsw.Connection(str(index.path))
        other.execute("PRAGMA busy_timeout = 10000")
        other.execute("INSERT OR REPLACE INTO settings VALUES ('idle-test', '1')")
        counts.clear()
        for _ in range(TICKS):
            assert index.newer_version() is None
        assert counts["PRAGMA user_version"] == 1, counts
        assert counts["PRAGMA data_version"] == TICKS, counts

        # An upgrade by a newer localstore (another connection, one core version more) is seen
        # at the next check.
        other.execute(f"PRAGMA user_version = {len(CORE_MIGRATIONS) + 1}")
        other.close()
        newer = index.newer_version()
        assert newer is not None
        assert f"core schema v{len(CORE_MIGRATIONS) + 1}" in newer.message
        index.conn.set_exec_trace(None)
