"""Fixtures for credentials, crypto and app-data tests: a private home, an index, the real keychain.

Tests marked ``keychain`` use the real Secret Service (scripts/test runs pytest inside a private
D-Bus session with an unlocked gnome-keyring). When it is unreachable they are skipped, except with
LOCALSTORE_REQUIRE_KEYCHAIN=1 (set by scripts/test), where they fail loudly instead.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from localstore.config import Settings, load_settings
from localstore.credentials import CredentialStore, KeyringSecretBackend, unusable_reason
from localstore.index import Index

# Where the Secret Service publishes collections under their own names (not aliases).
COLLECTION_PATH_PREFIX = "/org/freedesktop/secrets/collection/"


def _secret_service_problem() -> str:
    """Return why the real Secret Service cannot be used here ('' when it can)."""
    kr = keyring.get_keyring()
    label = f"{type(kr).__module__}.{type(kr).__name__}"
    if unusable_reason(kr):
        return unusable_reason(kr)
    if "SecretService" not in label:
        return f"keyring selected {label}, not the Secret Service"
    if os.environ.get("LOCALSTORE_REQUIRE_KEYCHAIN") == "1" and not str(
        getattr(kr, "preferred_collection", "")
    ).startswith(COLLECTION_PATH_PREFIX):
        # gnome-keyring resolves /aliases/default racily (see scripts/_in_keyring_session): with
        # the alias, a call now and then reached a garbage-named collection and a GUI prompt.
        return (
            "keyring would address the default collection through its alias; set "
            f"KEYRING_PROPERTY_PREFERRED_COLLECTION={COLLECTION_PATH_PREFIX}login"
        )
    # A name of this process's own: xdist workers probe at the same moment, and with one shared
    # name a worker's delete could find the item that the other worker then deleted first
    # (secretstorage's "Item does not exist!"), failing every keychain test of that worker.
    name = f"probe-{os.getpid()}"
    try:
        kr.set_password("localstore-test-probe", name, "x")
        kr.delete_password("localstore-test-probe", name)
    except Exception as exc:
        return f"Secret Service probe failed: {type(exc).__name__}: {exc}"
    return ""


@pytest.fixture(scope="session")
def secret_service() -> None:
    """The real Secret Service is reachable, or the test fails (required) or is skipped."""
    problem = _secret_service_problem()
    if not problem:
        return
    message = f"{problem}; run the suite through scripts/test (dbus-run-session + gnome-keyring)"
    if os.environ.get("LOCALSTORE_REQUIRE_KEYCHAIN") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _keychain_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("keychain") is not None:
        request.getfixturevalue("secret_service")


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"test leaked threads: {leaked}"


@pytest.fixture
def profile() -> str:
    """A profile name no other test (or xdist worker) uses, so keychain items never collide."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def settings(home: Path, profile: str) -> Settings:
    s = load_settings(home=home, environ={}, profile=profile)
    s.paths.ensure()
    return s


@pytest.fixture
def index(settings: Settings) -> Iterator[Index]:
    idx = Index(settings.paths.index_db)
    yield idx
    idx.close()


@pytest.fixture
def creds(index: Index, settings: Settings, secret_service: None) -> Iterator[CredentialStore]:
    """A CredentialStore on the real keychain; every item it lists is deleted afterwards."""
    store = CredentialStore(index, settings, backend=KeyringSecretBackend())
    yield store
    for name in store.list_names(include_internal=True):
        store.delete(name)
