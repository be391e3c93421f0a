"""An app's in-process sync whose new engine cannot start after a login leaks nothing.

After a logout (or another user's login) EmbeddedSync opens a remote from the new session and
starts a new engine on it, as the daemon does. When that engine's start failed (its realtime
could not start a thread: the process's thread limit), the remote stayed open (HTTP client,
refresh timer, realtime threads, an index connection), one more every RELOGIN_CHECK_S for as
long as the fault lasted, and the status still said "not logged in" with the login hint, though
the person had just logged in. The daemon has closed such a remote since
tests/daemon/test_engine_start_failure.py; the app's sync does the same now.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import sync.supabase_remote
from localstore._daemon_state import lock_is_held
from localstore.errors import StoreClosedError
from sync.embed import start_sync
from sync.engine import SyncEngine
from sync.errors import RemoteConfigError, SessionChangedError
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.session_marker import touch

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .conftest import eventually
from .test_engine_start_failure import _NoThreads

WAIT = 20.0


class _Revocable(MemoryRemote):
    """The home's first session, which a `localstore logout` revokes."""

    revoked = False

    def check_session(self) -> None:
        if self.revoked:
            raise SessionChangedError("logged out")


def test_a_new_engine_that_cannot_start_closes_its_remote_and_says_why(
    stores: StoreOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = MemoryServer()
    opened: list[MemoryRemote] = []

    def factory(_settings: Any) -> MemoryRemote:
        # The first session works; every later one cannot start its realtime threads.
        remote = _Revocable(server) if not opened else _NoThreads(server)
        opened.append(remote)
        return remote

    monkeypatch.setattr(sync.supabase_remote, "remote_from_settings", factory)
    store = stores(home=tmp_path / "h")
    subscribers = len(store.events._subs)
    handle = store.start_sync(poll_interval_s=3600)
    first = handle.engine
    first_remote = opened[0]
    assert isinstance(first_remote, _Revocable)
    first_remote.revoked = True
    touch(store.settings)  # logout, then a new login: the follower opens a new remote

    assert eventually(lambda: "can't start new thread" in (handle.offline or ""), WAIT)
    assert len(opened) == 2
    assert first_remote._closed  # (the logged-out session's, closed by the detach)
    assert opened[1]._closed, "the remote of the engine that could not start was left open"
    assert handle.engine is first and first.join(WAIT)
    # Only the follower's claims observer is left: no half-started engine listens to the store.
    assert len(store.events._subs) == subscribers
    status = handle.status()
    assert status["state"] == "offline" and status["logged_in"] is False
    assert "can't start new thread" in status["detail"]
    handle.stop()


def test_a_remote_that_fails_to_open_after_the_store_closed_is_no_offline_reason(
    stores: StoreOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    # The new login's remote fails to open while the app closes its store (which stops this
    # sync): a stopped sync is not "offline", so that failure is neither recorded nor logged,
    # as when the new engine cannot start (the branch after it) in the same race.
    server = MemoryServer()
    calls: list[int] = []

    def factory(_settings: Any) -> MemoryRemote:
        calls.append(1)
        if len(calls) == 1:
            return _Revocable(server)
        store.close()  # (the app shuts down meanwhile: its close hook stops the sync)
        raise RemoteConfigError("the project URL is unreachable")

    monkeypatch.setattr(sync.supabase_remote, "remote_from_settings", factory)
    store = stores(home=tmp_path / "h")
    handle = store.start_sync(poll_interval_s=3600)
    first_remote = handle._remote
    assert isinstance(first_remote, _Revocable)
    first_remote.revoked = True
    touch(store.settings)  # logout, then a new login: the follower opens a new remote

    handle._ticker.join(WAIT)
    assert not handle._ticker.is_alive() and len(calls) == 2
    status = handle.status()
    assert "unreachable" not in status["detail"]
    assert "the store is closed" in status["detail"]
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


def test_a_store_closed_while_sync_starts_is_named_as_the_cause(
    stores: StoreOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread's close() landing after start_sync hooked the store, before the engine
    started: the close stopped the new engine, and the app got "the engine is stopped; it runs
    once" with the hint to create a new SyncEngine, which it never made."""
    store = stores(home=tmp_path / "h")
    start = SyncEngine.start

    def closed_first(engine: SyncEngine) -> None:
        # Fault injection: the app's shutdown closes the store on another thread right now.
        closer = threading.Thread(target=store.close)
        closer.start()
        closer.join()
        start(engine)

    monkeypatch.setattr(SyncEngine, "start", closed_first)
    with pytest.raises(StoreClosedError) as caught:
        start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    assert "open the store again" in str(caught.value.hint)
    assert not lock_is_held(store.settings.paths.state)
