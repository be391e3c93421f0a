"""A daemon running while the OS keychain is locked (screen lock, a session restored without
unlocking), against the local stack and a real gnome-keyring of its own.

The keychain is read when the access token is refreshed. Locked at that moment, sync stops with
"the keychain is locked" and waits for a person: the engine's ATTENTION_RETRY_S (a minute, or its
poll interval). Unlocking the keychain is what that person does, and sync went on only once the
wait ended. The keychain here is a private one (tests/credentials/test_copied_home.py): locking
the suite's would fail the other worker's keychain tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localstore.errors import KeychainUnavailableError
from localstore.store import BlueprintStore
from sync import _supabase_session
from sync.control import ControlClient
from sync.embed import start_sync
from sync.engine import ATTENTION_RETRY_S
from sync.errors import AuthError
from sync.localcloud.gateway import keys
from sync.localcloud.stack import LocalCloud
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.supabase_remote import remote_from_settings
from tests.conftest import run_cli
from tests.credentials.conftest import secret_service  # noqa: F401  (the private keychain's)
from tests.credentials.test_copied_home import (  # noqa: F401  (fixtures)
    _Keychain,
    _private_keychain,
    keychain,
)

from .conftest import PASSWORD, DaemonProc, eventually, home_settings, log_in, new_email

pytestmark = pytest.mark.keychain

TOKEN_TTL_S = 4
# The other device keeps its session in the encrypted file, not in the keychain locked here
# (another computer's keychain).
DEVICE_B = {
    "LOCALSTORE_KEYCHAIN_FILE_FALLBACK": "1",
    "LOCALSTORE_KEYCHAIN_PASSPHRASE": "device-b-passphrase",
    "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
}


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCloud]:
    """A stack whose access tokens expire after TOKEN_TTL_S, with no clock-skew leeway (its
    gateway runs in this process), so a refresh falls due while the keychain is locked."""
    monkeypatch.setattr(keys, "CLOCK_SKEW_S", 0)
    with LocalCloud(access_token_ttl=TOKEN_TTL_S) as lc:
        yield lc


def _sync_b(home: Path) -> str:
    done = run_cli(home, "sync", env=DEVICE_B)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _status(c: ControlClient) -> dict[str, Any]:
    return dict(c.status()["sync"])


def test_sync_goes_on_within_seconds_of_the_keychain_being_unlocked(
    cloud: LocalCloud,
    keychain: _Keychain,  # noqa: F811  (the fixture imported above)
    spawn_daemon: Callable[..., DaemonProc],
    tmp_path: Path,
) -> None:
    email = new_email()
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    log_in(home_settings(home_a), cloud, email)
    login_b = ["login", "--url", cloud.url, "--anon-key", cloud.anon_key, "--email", email]
    done = run_cli(home_b, *login_b, "--password-stdin", env=DEVICE_B, stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    d = spawn_daemon(home_a)
    d.wait_ready()
    c = d.client()
    keychain.lock()
    # The daemon's access token has to expire (wall-clock time) for its next call to refresh.
    time.sleep(TOKEN_TTL_S + 1)
    (home_a / "blueprints" / "from-a.blueprint.yaml").write_text("by: a\n")
    (home_b / "blueprints").mkdir(exist_ok=True)
    (home_b / "blueprints" / "from-b.blueprint.yaml").write_text("by: b\n")
    _sync_b(home_b)

    def stopped_on_the_keychain() -> bool:
        st = _status(c)
        # (The refresh can fail before the watcher has counted the edit as pending: wait for both.)
        locked = st["state"] == "error" and "locked" in (st["last_error"] or "")
        return locked and st["pending"] >= 1

    assert eventually(stopped_on_the_keychain, 30), (_status(c), d.output())
    st = _status(c)
    assert st["logged_in"] and st["quarantined"] == 0 and st["pending"] >= 1, st
    assert "unlock" in (st["last_error"] or "") + (st.get("hint") or ""), st

    keychain.unlock()
    unlocked = time.monotonic()

    def caught_up() -> bool:
        st = _status(c)
        return st["state"] == "idle" and (home_a / "blueprints" / "from-b.blueprint.yaml").exists()

    # Well inside the engine's wait for a person, which alone ended it before.
    assert eventually(caught_up, ATTENTION_RETRY_S / 3), (_status(c), d.output())
    assert time.monotonic() - unlocked < ATTENTION_RETRY_S / 3
    st = _status(c)
    assert st["logged_in"] and st["pending"] == 0 and st["quarantined"] == 0, st
    _sync_b(home_b)
    assert (home_b / "blueprints" / "from-a.blueprint.yaml").read_text() == "by: a\n"
    assert d.stop() == 0
    log = d.log_path.read_text()
    # Ended by the keychain watch, or by realtime's rejoin: it refreshes the session at each
    # retry, and without an unlock prompt to wait on (test_keychain_prompt.py) a retry right
    # after the unlock often wins; its hint then starts the sync. (The watch alone:
    # test_an_app_syncing_in_process_goes_on_within_seconds_of_the_unlock, no realtime there.)
    assert (
        "the keychain is open again; syncing now" in log
        or "the cloud session was refreshed again" in log
    ), log
    # One warning for the one reason, not one per retry.
    assert log.count("sync stopped until fixed") <= 2, log


def test_an_app_syncing_in_process_goes_on_within_seconds_of_the_unlock(
    keychain: _Keychain,  # noqa: F811
    tmp_path: Path,
) -> None:
    # As the daemon: an app's sync stopped on a locked keychain waited for the engine's next
    # retry for a person (here a poll interval, an hour) after the keychain was unlocked.
    server = MemoryServer()
    store = BlueprintStore(home_settings(tmp_path / "app"), maintenance=False)
    remote, observer = MemoryRemote(server, user="u"), MemoryRemote(server, user="u")
    pushed = threading.Event()
    observer.subscribe(pushed.set)
    # What the Supabase remote raises when the refresh finds the keychain locked.
    locked = AuthError("refresh the cloud session: the keychain is locked", hint="unlock it")
    locked.__cause__ = KeychainUnavailableError("read credential: the keychain is locked")
    remote.fail_next(1, locked, method="server_info")
    keychain.lock()
    store.save("app/x", "v: 1\n")
    handle = start_sync(store, remote=remote, watch=False, poll_interval_s=3600)
    try:
        assert eventually(lambda: handle.engine.waits_on_keychain, 30), handle.status()
        assert not pushed.is_set()
        keychain.unlock()
        assert pushed.wait(ATTENTION_RETRY_S / 3), handle.status()
        assert eventually(lambda: handle.status()["state"] == "idle", 10), handle.status()
    finally:
        handle.stop()
        observer.close()
        remote.close()
        store.close()


def test_the_refresh_timer_outlives_a_locked_keychain(
    cloud: LocalCloud,
    keychain: _Keychain,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The timer's refresh raised "the keychain is locked"; supabase_auth re-arms its timer only
    # for its own retryable errors, so it stopped for good: the token then expired in the
    # background, and only a call's 401 (or a refused realtime join) refreshed it again.
    monkeypatch.setattr(_supabase_session, "KEYCHAIN_RETRY_S", 0.5)  # where _TimerKeeper reads it
    settings = home_settings(tmp_path / "a")
    log_in(settings, cloud, new_email())
    remote = remote_from_settings(settings)
    refused = threading.Semaphore(0)
    reload = remote._storage.reload

    def watched_reload() -> str | None:
        try:
            return reload()
        except KeychainUnavailableError:
            refused.release()
            raise

    monkeypatch.setattr(remote._storage, "reload", watched_reload)
    refreshed = threading.Event()
    remote._client.auth.on_auth_state_change(
        lambda event, _s: refreshed.set() if event == "TOKEN_REFRESHED" else None
    )
    try:
        keychain.lock()
        with caplog.at_level(logging.INFO, logger="sync.supabase_remote"):
            # The timer fires half a second before the token expires (TOKEN_TTL_S), and again.
            assert refused.acquire(timeout=TOKEN_TTL_S + 10)
            assert refused.acquire(timeout=10), "the refresh timer stopped"
            assert not refreshed.is_set()
            keychain.unlock()
            assert refreshed.wait(10), "no refresh after the unlock"
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warned) == 1 and "locked" in warned[0].getMessage(), caplog.text
        assert "refreshed again" in caplog.text
    finally:
        remote.close()
