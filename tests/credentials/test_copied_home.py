"""A home copied (or restored) onto a computer whose keychain lacks its items, and a locked keychain.

The copy keeps everything in the home folder (the index with app data, credential names and the
data keys' ids); the keychain items stay behind on the old computer. Nothing may be lost or
overwritten then, and every error must say what is missing and how to get it back. The new
computer's keychain is the real one of the test session, without the items (deleted from it);
"restoring" puts them back.

Locking a keychain locks it for every process on that D-Bus session, and under ``-n 2`` the other
xdist worker runs keychain tests at the same moment: this module therefore gets a keychain of its
own (a private dbus-daemon and gnome-keyring-daemon), started and stopped around each test.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import secretstorage
from jeepney.io.blocking import open_dbus_connection
from secretstorage.defines import SS_PATH, SS_PREFIX
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


# A session bus with no service directories (so no activation) and the session policy.
_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def _keychain_state(address: str) -> tuple[list[str], str, bool]:
    """The collections, the default alias and whether it is locked, on the bus at ``address``."""
    with open_dbus_connection(bus=address) as conn:
        service = DBusAddressWrapper(SS_PATH, SS_PREFIX + "Service", conn)
        collections = sorted(service.get_property("Collections"))
        (default,) = service.call("ReadAlias", "s", "default")
        locked = DBusAddressWrapper(default, SS_PREFIX + "Collection", conn).get_property("Locked")
    return collections, default, bool(locked)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(autouse=True)
def _private_keychain(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, secret_service: None
) -> Iterator[str]:
    """A D-Bus session and an unlocked gnome-keyring for this test alone; yields the bus address.

    Autouse, so it is set up before ``creds`` (which must talk to this keychain, in its teardown
    too). The bus has a configuration of its own, with no service directories: the stock session
    configuration always adds /usr/share/dbus-1/services, whose Secret Service file started a
    second, locked gnome-keyring-daemon when the first call came before ours owned the name (it
    then won the name now and then, and the test waited in vain).
    """
    # The suite's keychain, which this test must never touch (locking it, or a private daemon
    # writing its files, would make the other worker's calls ask for a GUI prompt).
    suite_bus = os.environ["DBUS_SESSION_BUS_ADDRESS"]
    suite_before = _keychain_state(suite_bus)
    root = tmp_path_factory.mktemp("private-keychain")
    data, run = root / "data", root / "run"
    for folder in (data, run):
        folder.mkdir(mode=0o700)
    config = root / "bus.conf"
    config.write_text(_BUS_CONFIG.format(socket=run / "bus"))
    env = {**os.environ, "XDG_DATA_HOME": str(data), "XDG_RUNTIME_DIR": str(run)}
    bus = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        env=env,
    )
    daemon: subprocess.Popen[bytes] | None = None
    try:
        assert bus.stdout is not None
        address = bus.stdout.readline().decode().strip()
        bus.stdout.close()
        assert address.startswith("unix:"), f"dbus-daemon printed {address!r}"
        env["DBUS_SESSION_BUS_ADDRESS"] = address
        password = f"localstore-private-{uuid.uuid4().hex}"
        daemon = subprocess.Popen(
            ["gnome-keyring-daemon", "--unlock", "--foreground", "--components=secrets"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert daemon.stdin is not None
        daemon.stdin.write(password.encode())
        daemon.stdin.close()
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        monkeypatch.setenv("LOCALSTORE_KEYRING_PASSWORD", password)
        deadline = time.monotonic() + 30
        while True:
            try:
                with secretstorage.dbus_init() as conn:
                    # (Asked only once ours owns the name: nothing else may answer.)
                    if secretstorage.check_service_availability(conn) and not (
                        secretstorage.get_default_collection(conn).is_locked()
                    ):
                        break
            except secretstorage.exceptions.ItemNotFoundException:
                pass  # up, but the login collection is not created yet
            assert daemon.poll() is None, "gnome-keyring-daemon exited"
            assert time.monotonic() < deadline, "the private keychain did not come up in 30 s"
            time.sleep(0.05)
        yield address
    finally:
        if daemon is not None:
            _stop(daemon)
        _stop(bus)
    assert _keychain_state(suite_bus) == suite_before, "the suite's keychain was changed"


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
def keychain(_private_keychain: str) -> Iterator[_Keychain]:
    kc = _Keychain()
    # The collection this test locks is the private one, not the suite's.
    assert os.environ["DBUS_SESSION_BUS_ADDRESS"] == _private_keychain
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
