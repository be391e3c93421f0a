"""Fixtures for engine tests: devices are separate homes (real files, real SQLite) of one user.

``devices(n)`` opens n homes synced through one ``MemoryServer``; every store and engine opened
here is stopped and closed at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync import _state as sync_state
from sync.daemon import Daemon
from sync.engine import SyncEngine
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change, PushResult
from tests.daemon.conftest import run_on_thread

STRESS = os.environ.get("LOCALSTORE_STRESS") == "1"

settings.register_profile(
    "localstore-sync-engine",
    max_examples=300 if STRESS else 25,
    stateful_step_count=50 if STRESS else 20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class Device:
    """One home with its store, remote handle and engine."""

    name: str
    home: Path
    store: BlueprintStore
    remote: MemoryRemote
    engine: SyncEngine

    def sync(self) -> Any:
        return self.engine.sync_once()

    def text(self, ref: str) -> str:
        return self.store.load(ref).content

    def snapshot(self) -> dict[str, tuple[str, str]]:
        """id -> (path, yaml text) of every live blueprint, read from the files."""
        out = {}
        for info in self.store.list():
            path = self.store.abspath(info.path)
            out[info.id] = (info.path, path.read_text(encoding="utf-8"))
        return out


def open_device(
    root: Path, name: str, server: MemoryServer, *, user: str = "u", **engine_kw: Any
) -> Device:
    home = root / name
    settings = load_settings(home=home, device_name=name)
    store = BlueprintStore(settings, maintenance=False)
    remote = MemoryRemote(server, user=user)
    try:
        engine = SyncEngine(store, remote, **engine_kw)
    except BaseException:  # (a test of refused engine arguments: the store is not the test's)
        remote.close()
        store.close()
        raise
    return Device(name, home, store, remote, engine)


def assert_watermark_kept(dev: Device) -> None:
    """The settled watermark's promise: no dirty row at or below it; counts equal a full scan."""
    with dev.store.index.read() as cur:
        assert sync_state.unsettled_below_watermark(cur) == [], dev.name
        assert sync_state.pending_count(cur) == sync_state.pending_count(cur, scan_all=True)
        assert sync_state.held_count(cur) == sync_state.held_count(cur, scan_all=True)


def close_device(dev: Device) -> None:
    dev.engine.stop()
    dev.engine.join(10)
    dev.remote.close()
    dev.store.close()


def foreign_id(root: Path, server: MemoryServer) -> str:
    """The id of a blueprint another user has synced (a push of it must be refused)."""
    intruder = open_device(root, "intruder", server, user="someone-else")
    try:
        ident = intruder.store.save("theirs", "v: 0\n").id
        intruder.sync()
    finally:
        close_device(intruder)
    return ident


def refuse_id(dev: Device, refused_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inject a permanent rejection of one id (the rest of each push goes to the server)."""
    real = dev.remote.push

    def push(changes: list[Change], *, device: str) -> list[PushResult]:
        answers = iter(real([c for c in changes if c.id != refused_id], device=device))
        return [
            PushResult(c.op_id, c.id, "rejected", code="invalid_path", message="refused here")
            if c.id == refused_id
            else next(answers)
            for c in changes
        ]

    monkeypatch.setattr(dev.remote, "push", push)


@pytest.fixture
def server() -> MemoryServer:
    return MemoryServer()


@pytest.fixture
def make_device(tmp_path: Path, server: MemoryServer) -> Iterator[Callable[..., Device]]:
    opened: list[Device] = []

    def make(name: str, **engine_kw: Any) -> Device:
        dev = open_device(tmp_path, name, server, **engine_kw)
        opened.append(dev)
        return dev

    yield make
    broken: list[str] = []
    for dev in reversed(opened):
        # Every engine test also checks the watermark that keeps idle polls cheap.
        if not dev.store.closed:
            try:
                assert_watermark_kept(dev)
            except AssertionError as exc:
                broken.append(f"{dev.name}: {exc}")
        close_device(dev)
    assert not broken, broken


def server_snapshot(server: MemoryServer, user: str = "u") -> dict[str, tuple[str, str]]:
    """id -> (path, content) of the user's live rows."""
    with server.lock:
        return {
            rid: (o.row.path, o.row.content)
            for rid, o in server.rows.items()
            if o.owner == user and not o.row.deleted
        }


def converge(*devices: Device, rounds: int = 4) -> None:
    """Sync every device in turn until a full round moves nothing."""
    for _ in range(rounds):
        moved = 0
        for dev in devices:
            report = dev.sync()
            moved += report.pushed + report.merged + report.conflicts
        if moved == 0:
            return
    raise AssertionError("devices did not converge")


def assert_converged(server: MemoryServer, *devices: Device) -> None:
    """Every replica holds exactly the server's live rows, byte for byte."""
    expected = server_snapshot(server)
    for dev in devices:
        assert dev.snapshot() == expected, dev.name
        assert dev.engine.status().pending == 0, dev.name


@pytest.fixture
def daemon_home(tmp_path: Path) -> Iterator[tuple[Path, MemoryServer]]:
    """A daemon on a thread of this process, on an empty home and a memory server (stopped and
    joined after the test)."""
    home = tmp_path / "home"
    server = MemoryServer()
    settings = load_settings(home=home, environ={})
    daemon = Daemon(
        settings,
        remote_factory=lambda s: MemoryRemote(server, user="u"),
        install_signals=False,
        poll_interval_s=3600,
    )
    running = run_on_thread(daemon)
    try:
        yield home, server
    finally:
        daemon.stop()
        running.thread.join(30)
    assert not running.thread.is_alive() and not running.errors
