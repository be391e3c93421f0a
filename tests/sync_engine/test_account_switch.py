"""A home belongs to the account it synced with (docs/sync-engine.md, "Identity").

Another user of the same project must not get a home's blueprints uploaded by syncing it (the
review's f_user_switch: alice's private blueprint ended up in bob's account, re-id'd); a switch a
person accepted (``localstore login --switch-user``) uploads them; a remote whose session changed
under it (logout, another user's login) stops before the cycle touches anything. A new project
still gets the home uploaded: test_engine.py::test_new_account_uploads_everything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sync import _state as st
from sync.errors import AccountMismatchError, SessionChangedError
from sync.memory_remote import MemoryRemote, MemoryServer

from .conftest import Device, close_device, open_device


def _files(dev: Device) -> dict[str, bytes]:
    root = dev.store.root
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _alice_home(tmp_path: Path, server: MemoryServer) -> dict[str, bytes]:
    alice = open_device(tmp_path, "a", server, user="alice")
    try:
        alice.store.save("private/secret", "ssn: 123\n")
        alice.sync()
        return _files(alice)
    finally:
        close_device(alice)


def test_another_user_of_the_project_is_refused_and_uploads_nothing(
    tmp_path: Path, server: MemoryServer
) -> None:
    before = _alice_home(tmp_path, server)
    bob = open_device(tmp_path, "a", server, user="bob")  # alice logged out, bob logged in
    try:
        bob.store.save("bob/new", "v: 1\n")  # not even bob's own new blueprint goes up here
        with pytest.raises(AccountMismatchError) as caught:
            bob.sync()
        assert "--switch-user" in str(caught.value) and "--home" in str(caught.value)
        assert caught.value.action == "tell_user"
        assert bob.remote.calls.get("push", 0) == 0
        assert all(o.owner == "alice" for o in server.rows.values())
        status = bob.engine.status()
        assert status.state == "error" and "--switch-user" in (status.last_error or "")
        # alice's files are exactly as they were (no new id written into a meta file)
        after = _files(bob)
        assert {k: v for k, v in after.items() if not k.startswith("bob/")} == before
        with bob.store.index.read() as cur:
            assert st.get_state(cur, "identity") == f"memory:{server.name}:alice"
    finally:
        close_device(bob)
    # alice comes back: her home is hers, nothing to redo
    alice = open_device(tmp_path, "a", server, user="alice")
    try:
        report = alice.sync()
        assert report.pushed == 1  # bob/new, saved while bob was logged in, is on disk: alice's now
        assert alice.engine.verify().clean
    finally:
        close_device(alice)


def test_an_accepted_switch_uploads_the_home_to_the_new_user(
    tmp_path: Path, server: MemoryServer
) -> None:
    before = _alice_home(tmp_path, server)
    bob = open_device(tmp_path, "a", server, user="bob")
    try:
        with bob.store.index.write() as cur:
            st.accept_identity(cur, bob.remote.identity)
        report = bob.sync()
        assert report.pushed == 1
        bobs = [o.row for o in server.rows.values() if o.owner == "bob"]
        assert [row.path for row in bobs] == ["private/secret.blueprint.yaml"]
        assert bob.engine.verify().clean
        # The content is kept; only the id in the meta file is new (alice's id is hers).
        after = _files(bob)
        assert after["private/secret.blueprint.yaml"] == before["private/secret.blueprint.yaml"]
        with bob.store.index.read() as cur:
            assert st.get_state(cur, st.ACCEPTED_KEY) is None  # consumed
    finally:
        close_device(bob)
    alice = open_device(tmp_path, "a", server, user="alice")
    try:
        with pytest.raises(AccountMismatchError):  # the home is bob's now
            alice.sync()
    finally:
        close_device(alice)


def test_an_acceptance_for_someone_else_does_not_open_the_home(
    tmp_path: Path, server: MemoryServer
) -> None:
    _alice_home(tmp_path, server)
    carol = open_device(tmp_path, "a", server, user="carol")
    try:
        with carol.store.index.write() as cur:
            st.accept_identity(cur, f"memory:{server.name}:bob")
        with pytest.raises(AccountMismatchError):
            carol.sync()
    finally:
        close_device(carol)


class _SessionGone(MemoryRemote):
    """Fault injection: a remote whose stored session was logged out under it."""

    def check_session(self) -> None:
        raise SessionChangedError("this home was logged out", code="logged_out")


def test_a_remote_whose_session_changed_stops_before_the_cycle(
    tmp_path: Path, server: MemoryServer
) -> None:
    dev = open_device(tmp_path, "a", server, user="alice")
    try:
        dev.store.save("x/after-logout", "v: 1\n")
        dev.remote = dev.engine.remote = _SessionGone(server, user="alice")
        with pytest.raises(SessionChangedError):
            dev.sync()
        assert dev.remote.calls == {}  # not even server_info
        assert server.rows == {}
        assert dev.engine.status().pending == 1  # kept for the next login
    finally:
        close_device(dev)
