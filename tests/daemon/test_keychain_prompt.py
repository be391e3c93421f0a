"""Who may ask the user to unlock a locked keychain (docs/daemon.md, "A locked keychain").

keyring's Secret Service backend answers a read of a locked collection with an unlock prompt (a
GUI dialog, no timeout), and prompts again at the next read after each dismissal. The daemon and
an app's sync threads read the session in the background (the refresh timer, retries, realtime's
rejoins): they must refuse a locked keychain without a prompt; the CLI in the foreground may ask.

Every unlock request and prompt secretstorage could make is recorded here, and answered as a
dismissed prompt (there is no person to answer it), against a private gnome-keyring, locked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import secretstorage.collection
import secretstorage.item

from localstore.config import Settings
from localstore.credentials import CredentialStore, KeyringSecretBackend
from localstore.errors import KeychainUnavailableError
from localstore.index import Index
from localstore.store import BlueprintStore
from sync import cli_sync, daemon
from sync.embed import start_sync
from sync.errors import SyncError
from sync.login_names import project_credential_name
from sync.supabase_remote import CloudProject
from tests.credentials.conftest import secret_service  # noqa: F401  (the private keychain's)
from tests.credentials.test_copied_home import (  # noqa: F401  (fixtures)
    _Keychain,
    _private_keychain,
    keychain,
)

from .conftest import home_settings

pytestmark = pytest.mark.keychain


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The unlock requests and prompts made from now on (each answered: dismissed)."""
    calls: list[str] = []

    def unlock_objects(connection: Any, paths: list[str], **kw: Any) -> bool:
        calls.append(f"Unlock {paths}")
        return True  # dismissed: the keychain stays locked

    def exec_prompt(connection: Any, prompt: str, **kw: Any) -> tuple[bool, tuple[str, Any]]:
        calls.append(f"Prompt {prompt}")
        return True, ("", None)

    for module in (secretstorage.collection, secretstorage.item):
        monkeypatch.setattr(module, "unlock_objects", unlock_objects)
        monkeypatch.setattr(module, "exec_prompt", exec_prompt)
    return calls


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return home_settings(tmp_path / "home")


@pytest.fixture
def store(settings: Settings) -> Iterator[BlueprintStore]:
    s = BlueprintStore(settings, maintenance=False)
    yield s
    s.close()


@pytest.fixture
def logged_in(settings: Settings, keychain: _Keychain) -> None:  # noqa: F811
    """A login's project stored while the keychain is unlocked, so the index lists it: a home
    that never logged in is "not logged in" whatever its keychain (remote_from_settings)."""
    settings.paths.ensure()
    index = Index(settings.paths.index_db)
    try:
        project = CloudProject("http://127.0.0.1:9", "anon-key", "user-1", "a@example.com")
        creds = CredentialStore(index, settings, prompt=False)
        creds.set(project_credential_name(settings), project.to_json())
    finally:
        index.close()


def test_the_daemon_refuses_a_locked_keychain_without_a_prompt(
    settings: Settings,
    keychain: _Keychain,  # noqa: F811  (the fixture imported above)
    logged_in: None,
    asked: list[str],
) -> None:
    keychain.lock()
    for _ in range(3):  # (a daemon retries: each read was one more prompt)
        with pytest.raises(SyncError, match="locked") as refused:
            daemon._supabase_remote(settings)
        assert "unlock" in (refused.value.hint or ""), refused.value
    assert asked == []


def test_an_app_syncing_in_process_refuses_a_locked_keychain_without_a_prompt(
    store: BlueprintStore,
    keychain: _Keychain,  # noqa: F811
    logged_in: None,
    asked: list[str],
) -> None:
    keychain.lock()
    with pytest.raises(SyncError, match="locked"):
        start_sync(store, watch=False)
    assert asked == []


def test_the_cli_in_the_foreground_may_ask_to_unlock_the_keychain(
    settings: Settings,
    keychain: _Keychain,  # noqa: F811
    logged_in: None,
    asked: list[str],
) -> None:
    keychain.lock()
    with pytest.raises(SyncError, match="locked"):
        cli_sync._open_remote(settings)
    assert len(asked) == 1 and asked[0].startswith("Unlock"), asked


def test_a_backend_that_never_prompts_reads_and_writes_an_unlocked_keychain(
    settings: Settings,
    keychain: _Keychain,  # noqa: F811
    asked: list[str],
) -> None:
    settings.paths.ensure()
    index = Index(settings.paths.index_db)
    try:
        creds = CredentialStore(index, settings, prompt=False)
        creds.set("api", "CANARY-value")
        assert creds.get("api") == "CANARY-value"
        assert asked == []  # (not even an Unlock request for the already unlocked item)
        keychain.lock()
        with pytest.raises(KeychainUnavailableError, match="locked"):
            creds.get("api")
        keychain.unlock()
        creds.delete("api")
        assert creds.find("api") is None
    finally:
        index.close()
    assert asked == []
    assert KeyringSecretBackend(prompt=False).get(creds.service, "api") is None
