"""The opt-in encrypted credentials file and `doctor`'s keychain check, in broken setups.

A wrong passphrase, a home that does not exist yet, a file where the folder should be, a profile
name every credential command refuses: what the report says and what it does to the disk.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from keyring.backends import fail

from localstore import crypto
from localstore.config import Settings, load_settings
from localstore.credentials import (
    PASSPHRASE_ENV,
    CredentialStore,
    EncryptedFileBackend,
    fallback_path,
    keychain_report,
)
from localstore.errors import ConfigError, CredentialError
from localstore.index import Index
from sync.cli_daemon import check_keychain

# Cheap scrypt for files these tests seal themselves (the reader takes the params from the file).
FAST = crypto.ScryptParams(log2_n=10)
LOCALSTORE = str(Path(sys.executable).with_name("localstore"))


def _seal_file(settings: Settings, passphrase: str) -> None:
    path = fallback_path(settings)
    EncryptedFileBackend(path, passphrase, params=FAST).set("localstore:x", "api", "CANARY")


def test_report_on_a_wrong_passphrase_says_to_check_the_passphrase(settings: Settings) -> None:
    enabled = settings.replace(keychain_file_fallback=True)
    _seal_file(enabled, "the right one")
    report = keychain_report(
        enabled, environ={PASSPHRASE_ENV: "a wrong one"}, keyring_backend=fail.Keyring()
    )
    assert report["ok"] is False
    assert "wrong passphrase" in report["problem"]
    # Its fix was the one for a machine without a keychain ("apt install gnome-keyring ...,
    # or opt in to the encrypted file with ..."): the opt-in is in place, the passphrase is wrong.
    assert PASSPHRASE_ENV in report["hint"]
    assert "gnome-keyring" not in report["hint"]
    assert "CANARY" not in repr(report)


def test_file_backend_in_a_folder_not_made_yet(tmp_path: Path) -> None:
    path = tmp_path / "data" / "credentials.enc"
    backend = EncryptedFileBackend(path, "pw", params=FAST)
    # A raw FileNotFoundError (of the lock file) before: nothing is stored there, so nothing is
    # read or deleted, and the first value makes the folder, private as the home's data folder.
    assert backend.get("localstore:x", "api") is None
    assert backend.delete("localstore:x", "api") is False
    assert not path.parent.exists()
    backend.set("localstore:x", "api", "v")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert EncryptedFileBackend(path, "pw").get("localstore:x", "api") == "v"


def test_file_backend_with_a_file_in_place_of_its_folder(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    backend = EncryptedFileBackend(tmp_path / "data" / "credentials.enc", "pw", params=FAST)
    # Raw OSErrors (NotADirectoryError) before: the backend's errors are CredentialErrors, and
    # doctor's probe, which catches those, said "the check failed ... report a bug".
    for call in (
        lambda: backend.get("localstore:x", "api"),
        lambda: backend.set("localstore:x", "api", "v"),
        lambda: backend.delete("localstore:x", "api"),
    ):
        with pytest.raises(CredentialError, match=r"credentials\.enc"):
            call()


def test_report_on_a_home_not_made_yet_creates_nothing(tmp_path: Path, profile: str) -> None:
    home = tmp_path / "mistyped"
    settings = load_settings(home=home, environ={}, profile=profile, keychain_file_fallback=True)
    report = keychain_report(
        settings, environ={PASSPHRASE_ENV: "pw"}, keyring_backend=fail.Keyring()
    )
    # The probe crashed on the missing data folder ("the check failed ... report a bug"); made
    # to work, it would leave a home at a mistyped --home. A keychain probe writes no file.
    assert report["ok"] is True, report
    assert report["active"] == "encrypted-file"
    assert report["probe"] == "skipped"
    assert not home.exists()


def test_doctor_on_a_home_not_made_yet_with_the_file_fallback(tmp_path: Path) -> None:
    home = tmp_path / "mistyped"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    env.update(
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        LOCALSTORE_KEYCHAIN_FILE_FALLBACK="1",
        LOCALSTORE_KEYCHAIN_PASSPHRASE="pw",
    )
    done = subprocess.run(
        [LOCALSTORE, "--home", str(home), "doctor"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    keychain = next(line for line in done.stdout.splitlines() if "keychain:" in line)
    assert keychain.startswith("[ok  ]"), done.stdout
    assert "report a bug" not in done.stdout
    assert not home.exists()


@pytest.mark.keychain
@pytest.mark.parametrize("bad", ["work ", "a:b"])
def test_doctor_flags_a_profile_every_credential_command_refuses(
    settings: Settings, index: Index, bad: str
) -> None:
    odd = load_settings(home=settings.home, environ={}, profile=bad)
    with pytest.raises(ConfigError, match="invalid profile name"):
        CredentialStore(index, odd)
    # Its probe worked (under 'localstore:work :doctor'), so doctor said "keychain: ok" while
    # `cred`, `login` and sync all refused the profile.
    finding = check_keychain(odd)
    assert finding.status == "problem", finding
    assert "invalid profile name" in finding.detail
    assert "LOCALSTORE_PROFILE" in finding.fix


@pytest.mark.keychain
def test_doctor_keeps_an_old_profile_that_holds_credentials(
    settings: Settings, index: Index
) -> None:
    # Stored by a version before the rule: the credential commands keep working for it (with a
    # warning), so doctor must not call it broken.
    CredentialStore(index, settings)  # (makes the table)
    with index.write() as cur:
        cur.execute("INSERT INTO credential_names VALUES ('localstore:old name', 'api', 'x', 'x')")
    odd = load_settings(home=settings.home, environ={}, profile="old name")
    CredentialStore(index, odd)
    finding = check_keychain(odd)
    assert finding.status == "ok", finding
