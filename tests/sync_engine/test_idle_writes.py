"""What an idle sync cycle (a poll with nothing to push or pull) writes to the index.

A daemon polls every 30 s for months; each commit that writes pages is a flush of the disk. An
idle poll sets its unchanged cursor and horizon again in a transaction of their own; SQLite writes
no page for a row rewritten with the same bytes, so that commit costs no flush, and the
last-synced time (it changes every time) is the one write. A guard: a change that rewrote state
every poll (a timestamp beside the cursor, say) would add a flushed commit to every poll.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localstore._index_connect import _WalGuard

from .conftest import Device


def _count_wal_commits(dev: Device) -> list[int]:
    """Counts the commits of the device's store that wrote to the WAL (SQLite calls the WAL hook
    only for those), passing each on to the store's own hook."""
    conn = dev.store.index.conn
    page_size = int(str(conn.execute("PRAGMA page_size").fetchall()[0][0]))
    guard = _WalGuard(dev.store.paths.index_db, page_size)
    commits: list[int] = []

    def hook(c: Any, name: str, pages: int) -> int:
        commits.append(pages)
        return guard(c, name, pages)

    conn.setwalhook(hook)
    return commits


def test_an_idle_cycle_writes_only_its_last_synced_time(
    make_device: Callable[..., Device],
) -> None:
    a = make_device("a")
    for i in range(5):
        a.store.save(f"team/b{i}", f"name: b{i}\n")
    a.sync()
    a.sync()
    commits = _count_wal_commits(a)
    before = a.engine.status().last_synced_at
    report = a.sync()
    assert (report.pushed, report.pulled) == (0, 0)
    assert a.engine.status().last_synced_at != before
    assert len(commits) == 1, commits


def test_an_idle_cycle_takes_the_write_lock_once(
    make_device: Callable[..., Device],
) -> None:
    """Each write transaction is a BEGIN IMMEDIATE: it waits for, and holds off, every other
    process's writer (an app saving beside the daemon). An idle poll took it four times (the
    identity check, the apply journal's recovery, the empty pull page's unchanged cursor and the
    last-synced time); only the last one has anything to write."""
    a = make_device("a")
    for i in range(5):
        a.store.save(f"team/b{i}", f"name: b{i}\n")
    a.sync()
    a.sync()
    index = a.store.index
    before = index.write_serial  # (outermost write transactions begun on this connection)
    report = a.sync()
    assert (report.pushed, report.pulled) == (0, 0)
    assert index.write_serial - before == 1
