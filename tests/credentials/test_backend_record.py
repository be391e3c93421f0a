"""Every process of one home uses the same secret backend: the one recorded for the home.

A daemon started without a D-Bus session (no keychain, the opt-in encrypted file) and a CLI in the
desktop session (keychain) used to store and read in different places: each saw only its own
secrets. The "no keychain" process here is a real one: the CLI with DBUS_SESSION_BUS_ADDRESS
removed, so keyring finds no Secret Service, as under systemd without a user session.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail

from localstore import credentials
from localstore.config import Settings
from localstore.credentials import (
    ENCRYPTED_FILE,
    KEYCHAIN,
    PASSPHRASE_ENV,
    CredentialStore,
    EncryptedFileBackend,
    KeyringSecretBackend,
    keychain_report,
    record_backend,
    recorded_backend,
)
from localstore.errors import CredentialError, KeychainUnavailableError
from localstore.index import Index
from tests.conftest import run_cli

PASSPHRASE = "correct horse battery staple"
FILE_OPT_IN = {"LOCALSTORE_KEYCHAIN_FILE_FALLBACK": "1", PASSPHRASE_ENV: PASSPHRASE}


def _cli(
    home: Path,
    profile: str,
    *args: str,
    keychain: bool,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process; ``keychain=False`` runs it without the D-Bus session."""
    return run_cli(
        home,
        *args,
        env={"LOCALSTORE_PROFILE": profile, **(env or {})},
        stdin=stdin,
        unset=() if keychain else ("DBUS_SESSION_BUS_ADDRESS",),
    )


@pytest.fixture
def keychain_cleanup(settings: Settings, secret_service: None) -> Iterator[None]:
    """Delete whatever the test left under its profile in the real keychain."""
    yield
    backend = KeyringSecretBackend()
    service = credentials.service_name(settings.profile)
    for name in ("api", "other", "session"):
        backend.delete(service, name)


@pytest.mark.keychain
@pytest.mark.usefixtures("keychain_cleanup")
def test_a_process_without_the_keychain_refuses_a_keychain_home(
    settings: Settings, home: Path, profile: str
) -> None:
    stored = _cli(home, profile, "cred", "set", "api", keychain=True, stdin="from-the-cli\n")
    assert stored.returncode == 0, stored.stderr
    assert recorded_backend(settings) == KEYCHAIN
    # The daemon-like process has opted in to the file, which used to make it read (and write)
    # the file, where the CLI's secret is not: "no credential 'api'".
    for args, stdin in ((("cred", "get", "api"), None), (("cred", "set", "other"), "v\n")):
        proc = _cli(home, profile, *args, keychain=False, env=FILE_OPT_IN, stdin=stdin)
        assert proc.returncode == 1, proc.stderr
        assert "keeps its secrets in the OS keychain" in proc.stderr
        assert "DBUS_SESSION_BUS_ADDRESS" in proc.stderr  # the hint: how to reach it
    assert not credentials.fallback_path(settings).exists()  # nothing went to the file
    # The keychain process still reads its secret.
    got = _cli(home, profile, "cred", "get", "api", keychain=True)
    assert (got.returncode, got.stdout) == (0, "from-the-cli"), got.stderr


@pytest.mark.keychain
@pytest.mark.usefixtures("keychain_cleanup")
def test_a_process_with_the_keychain_uses_the_file_of_a_file_home(
    settings: Settings, home: Path, profile: str
) -> None:
    stored = _cli(
        home, profile, "cred", "set", "session", keychain=False, env=FILE_OPT_IN, stdin="s1\n"
    )
    assert stored.returncode == 0, stored.stderr
    assert recorded_backend(settings) == ENCRYPTED_FILE
    # The CLI has a keychain: it used to look there and find nothing.
    got = _cli(home, profile, "cred", "get", "session", keychain=True, env=FILE_OPT_IN)
    assert (got.returncode, got.stdout) == (0, "s1"), got.stderr
    # Its writes go to the file too, where the daemon-like process reads them.
    rotated = _cli(
        home, profile, "cred", "set", "session", keychain=True, env=FILE_OPT_IN, stdin="s2\n"
    )
    assert rotated.returncode == 0, rotated.stderr
    got = _cli(home, profile, "cred", "get", "session", keychain=False, env=FILE_OPT_IN)
    assert (got.returncode, got.stdout) == (0, "s2"), got.stderr
    assert KeyringSecretBackend().get(credentials.service_name(profile), "session") is None
    # A process that has not opted in is told what to set, not "no credential".
    plain = _cli(home, profile, "cred", "get", "session", keychain=True)
    assert plain.returncode == 1, plain.stderr
    assert "keeps its secrets in the encrypted file" in plain.stderr
    assert "LOCALSTORE_KEYCHAIN_FILE_FALLBACK" in plain.stderr
    no_pass = _cli(
        home,
        profile,
        "cred",
        "get",
        "session",
        keychain=True,
        env={"LOCALSTORE_KEYCHAIN_FILE_FALLBACK": "1"},
    )
    assert no_pass.returncode == 1 and PASSPHRASE_ENV in no_pass.stderr, no_pass.stderr


def test_the_first_secret_records_the_backend_and_the_record_wins(
    index: Index, settings: Settings
) -> None:
    enabled = settings.replace(keychain_file_fallback=True)
    env = {PASSPHRASE_ENV: PASSPHRASE}
    store = CredentialStore(index, enabled, environ=env)
    # A process without a keychain (this one has none unless in the keyring session: forced).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keyring, "get_keyring", fail.Keyring)
        assert store.find("x") is None  # a read records nothing
        assert recorded_backend(settings) is None
        store.set("x", "in-the-file")
    assert recorded_backend(settings) == ENCRYPTED_FILE
    record = json.loads(credentials.backend_record_path(settings).read_text())
    assert record["backend"] == ENCRYPTED_FILE
    assert record_backend(settings, KEYCHAIN) == ENCRYPTED_FILE  # the first record stays
    report = keychain_report(enabled, environ=env, probe=False)
    assert (report["recorded"], report["active"]) == (ENCRYPTED_FILE, ENCRYPTED_FILE)
    # Another store of this home, whatever keyring offers it, reads the file.
    other = CredentialStore(index, enabled, environ=env)
    assert other.get("x") == "in-the-file"
    assert isinstance(other._backend, EncryptedFileBackend)


def test_a_store_follows_a_record_another_process_wrote_after_it_opened(
    index: Index, settings: Settings
) -> None:
    enabled = settings.replace(keychain_file_fallback=True)
    env = {PASSPHRASE_ENV: PASSPHRASE}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keyring, "get_keyring", fail.Keyring)
        early = CredentialStore(index, enabled, environ=env)
        assert early.find("x") is None  # chose the file, nothing recorded yet
    # Meanwhile a process with a keychain stored the home's first secret there.
    record_backend(settings, KEYCHAIN)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keyring, "get_keyring", fail.Keyring)
        with pytest.raises(KeychainUnavailableError, match="keeps its secrets in the OS keychain"):
            early.find("x")
        with pytest.raises(KeychainUnavailableError, match="keeps its secrets in the OS keychain"):
            early.set("x", "v")
    assert not credentials.fallback_path(settings).exists()


def test_a_damaged_record_is_an_error_not_a_guess(index: Index, settings: Settings) -> None:
    path = credentials.backend_record_path(settings)
    for text in ("", "{}", '{"backend": "plaintext"}', "not json"):
        path.write_text(text)
        store = CredentialStore(index, settings, environ={})
        with pytest.raises(CredentialError, match="damaged") as info:
            store.find("x")
        assert "keychain" in info.value.hint
