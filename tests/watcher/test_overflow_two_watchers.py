"""An inotify queue overflow rescans the watcher whose queue overflowed, once, and no other.

watchdog reports an overflow only in its log, on loggers the whole process shares; watchdog 7.1
logs two warnings per overflow (its reader's "filesystem events were lost", then the recursive
watch group's "reconciling recursive watches"). Every watcher's hook heard every record: an
overflow in one watcher's queue made every watcher of the process rescan, twice each.

Each watcher has its own inotify instance (its own queue), so a real IN_Q_OVERFLOW is forced on
one of them as in test_overflow.py: its reader thread is held (fault injection) while more
changes than the kernel queues pile up in its folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localstore.config import load_settings
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .test_overflow import N_FILES, _assert_index_equals_disk, overflow


@pytest.fixture
def two_stores(tmp_path: Path) -> Iterator[tuple[BlueprintStore, BlueprintStore]]:
    stores = [BlueprintStore(load_settings(home=tmp_path / n, environ={})) for n in ("a", "b")]
    yield stores[0], stores[1]
    for s in stores:
        s.close()


def test_overflow_rescans_only_its_own_watcher_once(
    two_stores: tuple[BlueprintStore, BlueprintStore], make_watcher
) -> None:
    flooded_store, quiet_store = two_stores
    for i in range(N_FILES):
        flooded_store.save(f"storm/f{i}", f"i: {i}\n")
    quiet_store.save("calm", "calm: true\n")
    flooded: Watcher = make_watcher(flooded_store)
    quiet: Watcher = make_watcher(quiet_store)
    for w in (flooded, quiet):
        w.start()
        assert w.wait_idle(30)
    rescans = (flooded.stats.rescans, quiet.stats.rescans)

    overflow(flooded)
    # The flooded watcher is idle once its overflow rescan is done; a rescan request the other
    # watcher got from that overflow was queued before it, so the quiet watcher's fence (laid
    # now) comes back behind it.
    assert flooded.wait_idle(120)
    assert quiet.wait_idle(30)

    assert flooded.stats.overflows == 1
    assert flooded.stats.rescans == rescans[0] + 1
    assert quiet.stats.overflows == 0
    assert quiet.stats.rescans == rescans[1]
    _assert_index_equals_disk(flooded_store)
    assert [bp.path for bp in quiet_store.list()] == ["calm.blueprint.yaml"]
