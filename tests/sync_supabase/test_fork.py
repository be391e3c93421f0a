"""A SupabaseRemote an app holds across ``os.fork()`` (``multiprocessing``'s fork start method, a
worker pool): the child's copy shares the parent's HTTP connections, realtime socket, refresh lock
and keychain session, but none of its threads. Closing it there (an app's ``with remote:`` around
the fork, an atexit handler) must leave all of that to the parent, whose remote keeps working."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from localstore.config import Settings
from localstore.errors import KeychainUnavailableError
from sync._supabase_login import _credentials
from sync.errors import SyncError
from sync.localcloud.stack import LocalCloud
from sync.login_names import session_credential_name
from sync.supabase_remote import SupabaseRemote
from tests.store.test_embedding_lifecycle import _in_child

from .conftest import new_email
from .devices import Device, device_pair


@pytest.fixture
def pair(cloud: LocalCloud, tmp_path: Path) -> Iterator[tuple[Device, Device]]:
    """Two devices of one user straight on the gateway."""
    with device_pair(tmp_path, cloud.anon_key, new_email(), cloud.url, cloud.url) as devices:
        yield devices


def _closed_in_child(remote: SupabaseRemote) -> str:
    def body() -> str:
        remote.close()
        return "ok"

    return _in_child(body)


def _keychain_session(settings: Settings) -> str | None:
    """The session the keychain holds for the home now (read afresh, not the remote's cache)."""
    creds, index = _credentials(settings, prompt=False)
    try:
        return creds.find(session_credential_name(settings))
    finally:
        index.close()


def _keep_a_rotation_unsaved(remote: SupabaseRemote, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the keychain refuses the write of one refresh (locked, as macOS locks it
    on sleep), so the rotated session is kept in memory for a later retry."""

    def refuse(name: str, value: str) -> None:
        raise KeychainUnavailableError(f"store {name!r}: the keychain is locked (injected)")

    with monkeypatch.context() as patched:
        patched.setattr(remote._storage._creds, "set", refuse)
        remote.refresh_auth()
    assert remote._storage.has_unsaved


def test_a_remote_closed_in_a_forked_child_keeps_working_in_the_parent(
    pair: tuple[Device, Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's close() waited out realtime's shutdown (10 s) on a loop only the parent runs,
    then stored the parent's unsaved rotated session in the keychain from the child (under the
    refresh lock), and closed the parent's credentials index there."""
    a, b = pair
    hinted = threading.Event()
    a.remote.subscribe(hinted.set)
    assert a.remote.realtime_state["subscribed"]
    hints = a.remote._hints
    assert hints is not None and hints._rt is not None
    socket = hints._rt._ws_connection
    _keep_a_rotation_unsaved(a.remote, monkeypatch)
    stored = _keychain_session(a.store.settings)

    assert _closed_in_child(a.remote) == "ok"

    assert _keychain_session(a.store.settings) == stored, "the child wrote the keychain"
    assert a.remote._storage.has_unsaved
    assert a.remote._hints is hints and hints._rt is not None
    assert hints._rt._ws_connection is socket and hints._rt.is_connected
    assert a.remote.realtime_state["rebuilds"] == 0
    # The parent's realtime still delivers, and its calls still go through.
    hinted.clear()
    b.store.save("forked/one.blueprint.yaml", "x: 1\n", name="one")
    assert b.sync() is None
    assert hinted.wait(30), "the parent's realtime no longer delivers"
    assert a.sync() is None
    assert (a.store.root / "forked/one.blueprint.yaml").read_text() == "x: 1\n"
    a.remote.check_session()  # (the parent's own retry stores its rotated session)
    assert not a.remote._storage.has_unsaved
    assert _keychain_session(a.store.settings) != stored


def test_a_remote_closed_in_a_child_forked_while_a_parent_thread_held_its_lock(
    pair: tuple[Device, Device],
) -> None:
    """A fork while a parent thread was inside a call (building its request under the remote's
    lock): the child's copy of the lock stays taken for ever, and its close() hung on it."""
    a, _ = pair
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with a.remote._lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold, name="holds-the-remote-lock")
    holder.start()
    try:
        assert held.wait(10)
        out = _closed_in_child(a.remote)
    finally:
        release.set()
        holder.join(10)
    assert out == "ok"
    assert a.sync() is None  # (and the parent's remote is still open)


def test_a_forked_child_using_the_parents_remote_is_refused(pair: tuple[Device, Device]) -> None:
    """A call from the child went out on the parent's HTTP connections (shared sockets: either
    process could read the other's answer), and a refresh there rotated the parent's session."""
    a, _ = pair
    calls = {
        "pull": lambda: a.remote.pull(0),
        "subscribe": lambda: a.remote.subscribe(lambda: None),
        "refresh_auth": a.remote.refresh_auth,
        "check_session": a.remote.check_session,
    }

    def body() -> str:
        out = []
        for name, call in calls.items():
            try:
                call()
                out.append(f"{name}: accepted")
            except SyncError as exc:
                out.append(f"{name}: {exc}")
        return "\n".join(out)

    lines = _in_child(body).splitlines()
    assert [line.split(":")[0] for line in lines] == list(calls), lines
    for line in lines:
        assert f"opened by process {os.getpid()}" in line, line
        assert "remote_from_settings()" in line, line
    assert a.sync() is None
