"""Logout and another user's login on a home (the review's f_user_switch and f_logout_daemon).

A home's synced data belongs to the account it synced with: another user of the same project
cannot log in on it (unless ``switch_user``), a remote stops using a session that was logged out
under it, and a refresh never adopts another user's session from the keychain.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

import localstore
from localstore.config import Settings, load_settings
from localstore.credentials import CredentialStore
from localstore.index import Index
from sync.engine import SyncEngine
from sync.errors import AccountMismatchError, SessionChangedError
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import (
    login,
    logout,
    remote_from_settings,
    session_credential_name,
)

from .conftest import PASSWORD, expire_token, new_email
from .devices import open_device


def _keychain(settings: Settings, value: str | None = None) -> str | None:
    """This home's stored session JSON (and write ``value`` there first, when given)."""
    index = Index(settings.paths.index_db)
    try:
        creds = CredentialStore(index, settings)
        if value is not None:
            creds.set(session_credential_name(settings), value)
        return creds.find(session_credential_name(settings))
    finally:
        index.close()


def _account_paths(cloud: LocalCloud, tmp_path: Path, email: str) -> list[str]:
    """The live paths of ``email``'s account, seen by a fresh home of that user."""
    dev = open_device(tmp_path, f"view-{time.monotonic_ns()}", cloud.url, cloud.anon_key, email)
    try:
        assert dev.sync() is None
        return sorted(info.path for info in dev.store.list())
    finally:
        dev.close()


def _sessions_of(cloud: LocalCloud, email: str) -> int:
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from auth.sessions s join auth.users u on u.id = s.user_id "
            "where u.email = %s",
            (email,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _files(home: Path) -> dict[str, bytes]:
    root = home / "blueprints"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _synced_alice(cloud: LocalCloud, tmp_path: Path, alice: str) -> tuple[Settings, Path]:
    dev = open_device(tmp_path, "a", cloud.url, cloud.anon_key, alice)
    try:
        dev.store.save("private/alice-secret", "ssn: 123\n")
        assert dev.sync() is None
        return dev.store.settings, dev.store.root.parent
    finally:
        dev.close()


def test_another_user_of_the_project_cannot_log_in_on_a_synced_home(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    alice, bob = new_email(), new_email()
    settings, home = _synced_alice(cloud, tmp_path, alice)
    before = _files(home)
    stored = _keychain(settings)
    # Without logging alice out first: refused, and alice's session stays as it was.
    with pytest.raises(AccountMismatchError) as info:
        login(settings, cloud.url, cloud.anon_key, bob, PASSWORD, signup=True)
    assert alice in str(info.value) and "--switch-user" in str(info.value)
    assert "--home" in str(info.value) and info.value.action == "tell_user"
    assert _keychain(settings) == stored
    assert _sessions_of(cloud, bob) == 0  # the refused session was revoked, not left behind
    # After a logout: refused too, and nothing is stored.
    logout(settings)
    with pytest.raises(AccountMismatchError):
        login(settings, cloud.url, cloud.anon_key, bob, PASSWORD)
    assert _keychain(settings) is None
    assert _files(home) == before
    assert _account_paths(cloud, tmp_path, bob) == []
    # alice herself is welcome back.
    login(settings, cloud.url, cloud.anon_key, alice, PASSWORD)


def test_switch_user_uploads_the_home_to_the_new_account(cloud: LocalCloud, tmp_path: Path) -> None:
    alice, bob = new_email(), new_email()
    settings, home = _synced_alice(cloud, tmp_path, alice)
    before = _files(home)
    logout(settings)
    result = login(
        settings, cloud.url, cloud.anon_key, bob, PASSWORD, signup=True, switch_user=True
    )
    assert alice in result.note and bob in result.note
    store = localstore.open(home=home)
    remote = remote_from_settings(store.settings)
    try:
        report = SyncEngine(store, remote, poll_interval_s=3600).sync_once()
        assert report.pushed == 1
    finally:
        remote.close()
        store.close()
    after = _files(home)
    yaml = "private/alice-secret.blueprint.yaml"
    assert after[yaml] == before[yaml]  # content kept; the meta file got an id of bob's
    assert _account_paths(cloud, tmp_path, bob) == [yaml]
    assert _account_paths(cloud, tmp_path, alice) == [yaml]  # alice's own copy stays hers


def test_another_project_still_gets_the_home(cloud: LocalCloud, tmp_path: Path) -> None:
    settings, _home = _synced_alice(cloud, tmp_path, new_email())
    logout(settings)
    other_url = cloud.url.replace("127.0.0.1", "localhost")  # another project URL for the home
    result = login(settings, other_url, cloud.anon_key, new_email(), PASSWORD, signup=True)
    assert cloud.url in result.note and other_url in result.note


def test_logout_stops_an_open_remote_before_its_next_cycle(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    alice = new_email()
    dev = open_device(tmp_path, "a", cloud.url, cloud.anon_key, alice)
    try:
        dev.store.save("d/before", "v: 1\n")
        assert dev.sync() is None
        logout(dev.store.settings)
        dev.store.save("d/after-logout", "v: 1\n")
        error = dev.sync()  # the access token is still valid: only the session check stops it
        assert isinstance(error, SessionChangedError) and error.code == "logged_out"
        assert dev.engine.status().pending == 1
        assert _account_paths(cloud, tmp_path, alice) == ["d/before.blueprint.yaml"]
        # alice logs in again: a new remote syncs the waiting edit.
        login(dev.store.settings, cloud.url, cloud.anon_key, alice, PASSWORD)
        dev.remote.close()
        dev.remote = remote_from_settings(dev.store.settings)
        dev.engine = SyncEngine(dev.store, dev.remote, poll_interval_s=3600)
        assert dev.sync() is None and dev.engine.status().pending == 0
    finally:
        dev.close()


def test_a_refresh_never_adopts_another_users_session(cloud: LocalCloud, tmp_path: Path) -> None:
    alice, bob = new_email(), new_email()
    dev = open_device(tmp_path, "a", cloud.url, cloud.anon_key, alice)
    try:  # (from the open on: a failed login below left the device's threads running)
        bob_home = load_settings(home=tmp_path / "b", environ={})
        login(bob_home, cloud.url, cloud.anon_key, bob, PASSWORD, signup=True)
        bob_session = _keychain(bob_home)
        assert bob_session is not None
        assert dev.sync() is None
        # Fault injection: bob's session lands in this home's keychain entry without the
        # session marker changing (a login by another tool, or one killed before the marker).
        _keychain(dev.store.settings, bob_session)
        dev.store.save("d/secret", "alice: only\n")
        expire_token(dev.remote, cloud)
        error = dev.sync()
        assert isinstance(error, SessionChangedError) and error.code == "user_changed"
        assert _keychain(dev.store.settings) == bob_session  # neither rotated nor overwritten
        assert isinstance(dev.sync(), SessionChangedError)  # the remote stays stopped
    finally:
        dev.close()
    assert _account_paths(cloud, tmp_path, bob) == []
