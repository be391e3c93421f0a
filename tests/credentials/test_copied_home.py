"""A home copied (or restored) onto a computer whose keychain lacks its items, and a locked keychain.

The copy keeps everything in the home folder (the index with app data, credential names and the
data keys' ids); the keychain items stay behind on the old computer. Nothing may be lost or
overwritten then, and every error must say what is missing and how to get it back. The new
computer's keychain is the real one of the test session, without the items (deleted from it);
"restoring" puts them back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import secretstorage
from secretstorage.util import DBusAddressWrapper, format_secret, open_session

from localstore.config import Settings
from localstore.credentials import CredentialStore, KeyringSecretBackend
from localstore.crypto import DATA_KEY_PREFIX
from localstore.errors import KeychainUnavailableError, KeyNotFoundError
from localstore.index import Index
from localstore.kv import KVStore
from tests.credentials.test_credentials import _invoke

pytestmark = pytest.mark.keychain

ITEMS: dict[str, Any] = {f"item-{i}": {"n": i, "text": "s\u00e9cret"} for i in range(5)}


def _rows(index: Index) -> dict[str, tuple[bytes, str]]:
    with index.read() as cur:
        rows = cur.execute("SELECT key, value, key_id FROM kv_items").fetchall()
    return {str(k): (bytes(v), str(kid)) for k, v, kid in rows}


class _Keychain:
    """Lock and unlock the session's login collection (gnome-keyring, no GUI prompt needed)."""

    def __init__(self) -> None:
        self._conn = secretstorage.dbus_init()
        self.collection = secretstorage.get_default_collection(self._conn)

    def lock(self) -> None:
        self.collection.lock()
        assert self.collection.is_locked()

    def unlock(self) -> None:
        # Collection.unlock() asks for a GUI prompt; the daemon's internal interface takes the
        # (throw-away) password that scripts/keyring-env set for this session.
        password = os.environ.get("LOCALSTORE_KEYRING_PASSWORD", "")
        session = open_session(self._conn)
        secret = format_secret(session, password.encode(), "text/plain")
        internal = DBusAddressWrapper(
            "/org/freedesktop/secrets",
            "org.gnome.keyring.InternalUnsupportedGuiltRiddenInterface",
            self._conn,
        )
        internal.call(
            "UnlockWithMasterPassword", "o(oayays)", self.collection.collection_path, secret
        )
        assert not self.collection.is_locked()

    def close(self) -> None:
        self._conn.close()


@pytest.fixture
def keychain(secret_service: None) -> Iterator[_Keychain]:
    kc = _Keychain()
    try:
        yield kc
    finally:
        if kc.collection.is_locked():
            kc.unlock()  # never leave the session's keychain locked for the next test
        kc.close()


def test_a_copied_home_loses_nothing_and_says_what_is_missing(
    creds: CredentialStore, settings: Settings, keychain: _Keychain
) -> None:
    # On the old computer: a named credential and encrypted app data.
    creds.set("api", "CANARY-api-value")
    index = Index(settings.paths.index_db)
    try:
        kv = KVStore(index, credentials=creds, hot_items=0)
        for key, value in ITEMS.items():
            kv.save(key, value, encrypt=True)
        old_kid = kv.current_key_id()
        assert old_kid is not None
        kv.close()
    finally:
        index.close()
    backend = KeyringSecretBackend()
    key_name = DATA_KEY_PREFIX + old_kid
    old_key = backend.get(creds.service, key_name)
    assert old_key is not None

    # A fresh process on the same keychain, which is locked: errors say "locked", nothing changes.
    index = Index(settings.paths.index_db)
    try:
        before = _rows(index)
        fresh = CredentialStore(index, settings, backend=KeyringSecretBackend())
        kv = KVStore(index, credentials=fresh, hot_items=0)
        keychain.lock()
        with pytest.raises(KeychainUnavailableError, match="locked") as locked:
            kv.load("item-0")
        assert "unlock" in locked.value.hint
        with pytest.raises(KeychainUnavailableError, match="locked"):
            kv.rotate_data_key()
        code, out, err = _invoke(settings, "cred", "get", "api")
        assert (code, out) == (1, "") and "locked" in err and "listed" not in err
        keychain.unlock()
        kv.close()
        # Nothing was re-sealed or retired while locked (a pending key may have been added).
        assert _rows(index) == before
    finally:
        index.close()

    # The new computer: its keychain never had the home's items.
    backend.delete(creds.service, key_name)
    backend.delete(creds.service, "api")
    index = Index(settings.paths.index_db)
    try:
        fresh = CredentialStore(index, settings, backend=KeyringSecretBackend())
        kv = KVStore(index, credentials=fresh, hot_items=0)
        # The credential: listed (the index came along), so not "no credential": say why.
        code, out, err = _invoke(settings, "cred", "get", "api")
        assert code == 4 and out == ""
        assert "is listed" in err and "copied or restored" in err
        assert "cred set api" in err
        assert "api" in _invoke(settings, "cred", "ls")[1].splitlines()
        # Encrypted app data: what is missing, that the data stays, and how to get it back.
        for call in (
            lambda: kv.load("item-0"),
            lambda: kv.save("new", "v", encrypt=True),
        ):
            with pytest.raises(KeyNotFoundError, match="stays on disk") as missing:
                call()
            assert key_name in missing.value.hint and creds.service in missing.value.hint
            assert "rotate_data_key" in missing.value.hint
        # Rotating (the hint's way to encrypt new data meanwhile) works and keeps the old items.
        report = kv.rotate_data_key()
        assert report.unreadable == len(ITEMS)
        assert report.missing_keys == (old_kid,)
        assert report.reencrypted == 0
        assert old_kid not in report.retired
        kv.save("new", "after the copy", encrypt=True)
        assert kv.load("new") == "after the copy"
        rows = _rows(index)
        assert {k: rows[k] for k in ITEMS} == {k: before[k] for k in ITEMS}  # untouched
        # Restoring the key makes every old item readable again; the next rotation re-seals them.
        backend.set(creds.service, key_name, old_key)
        for key, value in ITEMS.items():
            assert kv.load(key) == value
        again = kv.rotate_data_key()
        assert (again.unreadable, again.missing_keys) == (0, ())
        assert again.reencrypted == len(ITEMS) + 1
        assert old_kid in again.retired
        for key, value in ITEMS.items():
            assert kv.load(key) == value
        assert kv.load("new") == "after the copy"
        kv.close()
    finally:
        index.close()
