"""Encrypted app data on a home this user cannot write: read with the keychain's data key, never
written. The home is really read-only (tests/store/test_read_only_home.py: every write bit off,
and as root the reader runs without the capabilities that override file modes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localstore.config import load_settings
from localstore.credentials import CredentialStore, KeyringSecretBackend
from localstore.kv import KVStore
from localstore.store import BlueprintStore
from tests.store.test_read_only_home import as_reader, fingerprint, freeze, thaw

pytestmark = pytest.mark.keychain

# Run in the reader: the home opened read-only, its app data read with the keychain's data key,
# then every write tried; prints what it read and each write's error as JSON.
_READER = """
import json, sys
from localstore.config import load_settings
from localstore.credentials import CredentialStore, KeyringSecretBackend
from localstore.kv import KVStore
from localstore.store import BlueprintStore

settings = load_settings(home=sys.argv[1], environ={}, profile=sys.argv[2])
with BlueprintStore(settings, read_only=True) as s:
    creds = CredentialStore(s.index, settings, backend=KeyringSecretBackend())
    with KVStore(s.index, credentials=creds) as kv:
        read = [
            kv.load("secret/token"),
            kv.load("secret/token"),  # (again: the hot tier's copy)
            kv.load_item("secret/token").encrypted,
            kv.load("plain"),
            kv.keys(),
            kv.current_key_id() is not None,
        ]
        refused = []
        for write in (
            lambda: kv.save("secret/token", {"t": "new"}, encrypt=True),
            lambda: kv.save("secret/other", 1, encrypt=True),
            lambda: kv.delete("secret/token"),
            kv.rotate_data_key,
            kv.recover_keys,
        ):
            try:
                write()
                refused.append(None)
            except Exception as exc:
                refused.append([type(exc).__name__, getattr(exc, "message", str(exc))])
        read.append(kv.load("secret/token"))
print(json.dumps({"read": read, "refused": refused}))
"""


def test_encrypted_app_data_of_a_read_only_home_is_read_not_written(
    tmp_path: Path, profile: str, secret_service: None
) -> None:
    home = tmp_path / "home"
    settings = load_settings(home=home, environ={}, profile=profile)
    with BlueprintStore(settings, maintenance=False) as s:
        creds = CredentialStore(s.index, settings, backend=KeyringSecretBackend())
        with KVStore(s.index, credentials=creds) as kv:
            kv.save("secret/token", {"t": "s\u00e9cret"}, encrypt=True)
            kv.save("plain", 1)
    freeze(home)
    try:
        before = fingerprint(home)
        done = as_reader("-c", _READER, str(home), profile)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert fingerprint(home) == before
    finally:
        thaw(home)
        with BlueprintStore(settings, maintenance=False) as s:
            creds = CredentialStore(s.index, settings, backend=KeyringSecretBackend())
            for name in creds.list_names(include_internal=True):
                creds.delete(name)
    secret = {"t": "s\u00e9cret"}
    assert answer["read"] == [secret, secret, True, 1, ["plain", "secret/token"], True, secret]
    reason = f"this store is open read-only (this user may not write {home / 'data'})"
    assert answer["refused"] == [
        ["ReadOnlyStoreError", f"cannot save app-data item 'secret/token': {reason}"],
        ["ReadOnlyStoreError", f"cannot save app-data item 'secret/other': {reason}"],
        ["ReadOnlyStoreError", f"cannot delete app-data item 'secret/token': {reason}"],
        ["ReadOnlyStoreError", f"cannot rotate the app-data key: {reason}"],
        ["ReadOnlyStoreError", f"cannot recover app-data keys: {reason}"],
    ]
