"""The watcher under inotify's per-user limits (faults injected at the exact inotify call).

Lowering ``fs.inotify.max_user_watches`` or ``max_user_instances`` for a test would change them
for every process on the machine, so the kernel's answers (ENOSPC from inotify_add_watch, EMFILE
from inotify_init) are injected where watchdog makes the call.
"""

from __future__ import annotations

import ctypes
import errno

import pytest
from watchdog.observers import inotify_c

from localstore.errors import WatcherError
from localstore.store import BlueprintStore
from localstore.watcher import Watcher, WatcherState


def test_instance_limit_names_the_fix(
    store: BlueprintStore, make_watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inotify_init failing with EMFILE (max_user_instances, 128 by default) is a WatcherError
    naming the sysctl, not a bare OSError (which the daemon's keeper did not catch)."""

    def no_instance() -> int:
        ctypes.set_errno(errno.EMFILE)
        return -1

    monkeypatch.setattr(inotify_c, "inotify_init", no_instance)
    w: Watcher = make_watcher(store)
    with pytest.raises(WatcherError) as info:
        w.start()
    assert "max_user_instances" in (info.value.hint or "")
    assert w.state is WatcherState.NEW
