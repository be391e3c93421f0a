"""Soak (LOCALSTORE_STRESS=1): one in-process daemon on a MemoryRemote through
LOCALSTORE_SOAK_CYCLES cycles (default 20,000) of what months of use bring, measuring whether
anything grows without bound: Python memory (tracemalloc), open files, threads, the control
server's connections and tasks, log handlers, and the files in ``state/``.

Each cycle connects a control client, asks for the status and disconnects; around it come
subscribers that connect and go, edits by an editor (watcher events) and by another handle on the
home (foreign changes), sync requests, and now and then a watcher or a sync loop killed by fault
injection (replaced by the daemon's checks). The cloud side is the MemoryServer in this process:
its history of every push is trimmed before each measurement (the server's data is not the
daemon's memory). The two-daemon soak against the local stack is tests/daemon/test_soak.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import localstore
import sync._follow as follow
from sync.control import ControlClient
from sync.engine import WorkerState
from sync.memory_remote import MemoryRemote, MemoryServer
from tests.conftest import STRESS

from .conftest import WatcherKilled, eventually, write_external

CYCLES = int(os.environ.get("LOCALSTORE_SOAK_CYCLES", "20000"))
# Allowed growth between the measurement after the warm-up (a tenth of the run) and the end.
MAX_TRACED_GROWTH = 8 * 1024 * 1024
MAX_FD_GROWTH = 4
MAX_THREAD_GROWTH = 2
MAX_STATE_FILE_BYTES = 1024 * 1024


def _kill_watcher(d: Any) -> None:
    old = d.daemon.watcher

    def die() -> None:
        raise WatcherKilled("injected")

    old._process_due = die
    old._q.put(("noop",))
    assert eventually(lambda: d.daemon.watcher is not old, 30), "the watcher was not replaced"


def _kill_sync_loop(d: Any) -> None:
    old = d.daemon.engine

    def die() -> None:
        raise WatcherKilled("injected")  # (any error the loop's per-cycle boundary lets through)

    old._attempt = die
    old.request_sync()
    assert old.join(30) and old.worker_state is WorkerState.STOPPED
    assert eventually(lambda: d.daemon.engine not in (None, old), 30), "sync was not restarted"


def _trim_server(server: MemoryServer) -> None:
    with server.lock:
        server.revisions.clear()
        server.applied_ops.clear()


def _measure(d: Any, server: MemoryServer, state_dir: Path) -> dict[str, Any]:
    _trim_server(server)
    gc.collect()
    loop = d.daemon.server._loop
    return {
        "traced": tracemalloc.get_traced_memory()[0],
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "conns": len(d.daemon.server._conns),
        "tasks": len(asyncio.all_tasks(loop)),
        "handlers": sum(
            len(logging.getLogger(name).handlers) for name in ["", *logging.root.manager.loggerDict]
        ),
        "state": {p.name: p.stat().st_size for p in state_dir.iterdir() if p.is_file()},
    }


@pytest.mark.stress
@pytest.mark.timeout(CYCLES * 0.2 + 600)
@pytest.mark.skipif(not STRESS, reason="long soak: LOCALSTORE_STRESS=1")
# The sync loops killed on purpose end their threads unhandled, as a real bug would.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_daemon_through_many_cycles_does_not_grow(
    inproc_daemon: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(follow, "WATCHER_RESTART_S", 0.01)
    monkeypatch.setattr(follow, "WATCHER_RESTART_MAX_S", 0.02)
    server = MemoryServer()
    home = tmp_path / "home"
    d = inproc_daemon(home, remote_factory=lambda _s: MemoryRemote(server), poll_interval_s=3600)
    state_dir = d.daemon.settings.paths.state
    root = d.daemon.settings.paths.blueprints
    port, token = d.state["port"], d.state["token"]
    other = localstore.open(home=home)  # another handle: its saves are foreign changes
    subscriber = ControlClient(port, token, timeout=60)
    subscriber.subscribe()
    warmup = max(100, CYCLES // 10)
    first: dict[str, Any] = {}
    tracemalloc.start(1)
    try:
        for i in range(CYCLES):
            if i == warmup:
                first = _measure(d, server, state_dir)
            with ControlClient(port, token, timeout=60) as c:
                if i % 10 == 0:
                    c.subscribe()
                c.status()
                if i % 50 == 0:
                    c.sync(wait=True, timeout=120)
            if i % 3 == 0:
                write_external(root, f"edit/bp-{i % 40}.blueprint.yaml", f"n: {i}\n")
            if i % 7 == 0:
                other.save(f"other/bp-{i % 20}", f"v: {i}\n")
            if i % 500 == 250:
                _kill_watcher(d)
            if i % 2000 == 1000:
                _kill_sync_loop(d)
            for _ in subscriber.events(timeout=0.001):
                pass
        with ControlClient(port, token, timeout=120) as c:
            c.sync(wait=True, timeout=120)
        for _ in subscriber.events(timeout=0.1):
            pass
        last = _measure(d, server, state_dir)
    finally:
        tracemalloc.stop()
        subscriber.close()
        other.close()
    report = f"after the warm-up: {first}\nat the end: {last}"
    assert last["traced"] - first["traced"] <= MAX_TRACED_GROWTH, report
    assert last["fds"] - first["fds"] <= MAX_FD_GROWTH, report
    assert last["threads"] - first["threads"] <= MAX_THREAD_GROWTH, report
    assert last["conns"] <= 2 and last["tasks"] <= first["tasks"] + 2, report
    assert last["handlers"] == first["handlers"], report
    assert all(size <= MAX_STATE_FILE_BYTES for size in last["state"].values()), report
    print(report)
