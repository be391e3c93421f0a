"""The opt-in encrypted credentials file and `doctor`'s keychain check, in broken setups.

A wrong passphrase, a home that does not exist yet, a file where the folder should be, a profile
name every credential command refuses: what the report says and what it does to the disk.
"""

from __future__ import annotations

from keyring.backends import fail

from localstore import crypto
from localstore.config import Settings
from localstore.credentials import (
    PASSPHRASE_ENV,
    EncryptedFileBackend,
    fallback_path,
    keychain_report,
)

# Cheap scrypt for files these tests seal themselves (the reader takes the params from the file).
FAST = crypto.ScryptParams(log2_n=10)


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
