"""Fixtures shared by the tests of what a hostile or broken cloud can do to a client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from localstore.config import Settings, load_settings

from .hostile_server import HostileCloud


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # The opt-in encrypted file, not a keychain: these tests are about what the server says.
    # keyring picks its backend once per process: forget it so it reads PYTHON_KEYRING_BACKEND,
    # and monkeypatch puts the chosen one back afterwards (kept, the fail backend was every later
    # test's keychain in this worker: the Supabase remote tests then failed by the dozen).
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setenv("LOCALSTORE_KEYCHAIN_FILE_FALLBACK", "1")
    monkeypatch.setenv("LOCALSTORE_KEYCHAIN_PASSPHRASE", "file-passphrase-secret")
    return load_settings(home=tmp_path / "home")


@pytest.fixture
def cloud() -> Iterator[HostileCloud]:
    """A fake cloud that answers with whatever the test sets (tests/security/hostile_server.py)."""
    with HostileCloud() as c:
        yield c
