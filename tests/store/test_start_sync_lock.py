"""store.start_sync() on a home another store (or process) syncs raises what it documents."""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from localstore.errors import LocalStoreError, LockHeldError


def test_start_sync_on_a_home_synced_elsewhere_raises_lock_held(home: Path) -> None:
    from sync import MemoryRemote, MemoryServer, SyncLockedError

    server = MemoryServer()
    with localstore.open(home=home) as a, localstore.open(home=home) as b:
        a.start_sync(remote=MemoryRemote(server))
        with pytest.raises(LockHeldError) as info:  # what store.start_sync documents
            b.start_sync(remote=MemoryRemote(server))
        assert isinstance(info.value, SyncLockedError)
        assert isinstance(info.value, LocalStoreError) and info.value.hint
