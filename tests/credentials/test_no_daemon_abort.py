"""Our keychain calls never send the property ``Get`` that can abort gnome-keyring-daemon.

gnome-keyring 42 answers a ``Get`` of a collection's or item's property without an error when it
has no client record for the caller, and GLib 2.74 then aborts the daemon (the user's keychain;
docs/credentials.md, "The keychain daemon must survive us"). The exact caller state that leads
there was not reproduced (a caller vanishing mid-call, killed, or during activation all left the
daemon alive), so these tests pin the call instead: every collection and item property our code,
keyring and secretstorage read goes out as ``GetAll``, which GLib answers without asserting.
Every message sent over jeepney is recorded here (observed, passed on unchanged).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jeepney.io.blocking
import pytest
import secretstorage
from jeepney import HeaderFields
from secretstorage.exceptions import ItemNotFoundException
from secretstorage.util import DBusAddressWrapper

from localstore._ss_get_all import GetAllConnection
from localstore.config import Settings
from localstore.credentials import CredentialStore, keychain_locked
from localstore.errors import KeychainUnavailableError
from localstore.index import Index
from tests.credentials.conftest import COLLECTION_PATH_PREFIX
from tests.credentials.test_copied_home import (  # noqa: F401  (fixtures)
    _Keychain,
    _private_keychain,
    keychain,
)

pytestmark = pytest.mark.keychain

_RISKY = ("org.freedesktop.Secret.Collection", "org.freedesktop.Secret.Item")


@pytest.fixture
def sent(
    monkeypatch: pytest.MonkeyPatch,
    keychain: _Keychain,  # noqa: F811
) -> list[tuple[str, str, str]]:
    """Every Properties call sent over jeepney from now on: (member, interface asked, path);
    not the test's own (``keychain``'s connection, which locks and checks with plain Gets)."""
    calls: list[tuple[str, str, str]] = []
    real = jeepney.io.blocking.DBusConnection._serialise

    def serialise(self: Any, message: Any, serial: Any) -> Any:
        fields = message.header.fields
        ours = self is not keychain._conn
        if ours and fields.get(HeaderFields.interface) == "org.freedesktop.DBus.Properties":
            member = str(fields[HeaderFields.member])
            calls.append((member, str(message.body[0]), str(fields[HeaderFields.path])))
        return real(self, message, serial)

    monkeypatch.setattr(jeepney.io.blocking.DBusConnection, "_serialise", serialise)
    return calls


@pytest.fixture
def background(settings: Settings) -> Iterator[CredentialStore]:
    """A credential store as the daemon's: it never prompts."""
    index = Index(settings.paths.index_db)
    try:
        yield CredentialStore(index, settings, prompt=False)
    finally:
        index.close()


def _risky_gets(calls: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [c for c in calls if c[0] == "Get" and c[1] in _RISKY]


def test_background_keychain_calls_read_properties_only_through_get_all(
    background: CredentialStore,
    keychain: _Keychain,  # noqa: F811  (the fixture imported above)
    sent: list[tuple[str, str, str]],
) -> None:
    background.set("api", "v1")
    assert background.get("api") == "v1"
    background.delete("api")
    assert background.find("api") is None
    assert keychain_locked() is False
    keychain.lock()
    assert keychain_locked() is True
    with pytest.raises(KeychainUnavailableError, match="locked"):
        background.get("api")

    assert _risky_gets(sent) == []
    # (the collection's label and lock; the item's label, lock, and lock before its delete)
    asked = {c[1] for c in sent if c[0] == "GetAll" and c[2].startswith(COLLECTION_PATH_PREFIX)}
    assert asked == set(_RISKY)


def test_foreground_keychain_calls_read_properties_only_through_get_all(
    settings: Settings,
    keychain: _Keychain,  # noqa: F811
    sent: list[tuple[str, str, str]],
) -> None:
    """The CLI's store (it may prompt to unlock) opened its collection through keyring's own
    connection: four or five plain Gets a call, which still aborted the suite's daemon once."""
    index = Index(settings.paths.index_db)
    try:
        foreground = CredentialStore(index, settings, prompt=True)
        foreground.set("api", "v1")
        assert foreground.get("api") == "v1"
        foreground.delete("api")
        assert foreground.find("api") is None
    finally:
        index.close()
    assert _risky_gets(sent) == []
    asked = {c[1] for c in sent if c[0] == "GetAll" and c[2].startswith(COLLECTION_PATH_PREFIX)}
    assert asked == set(_RISKY)


def test_a_property_the_answer_leaves_out_reads_as_a_missing_object(
    keychain: _Keychain,  # noqa: F811
) -> None:
    # GetAll leaves out a property whose getter failed (the object went away meanwhile): the
    # caller gets what a Get of a vanished object gets, never a made-up value.
    conn = GetAllConnection(secretstorage.dbus_init())
    try:
        collection = DBusAddressWrapper(
            keychain.collection.collection_path, "org.freedesktop.Secret.Collection", conn
        )
        assert collection.get_property("Locked") is False
        with pytest.raises(ItemNotFoundException):
            collection.get_property("NoSuchProperty")
        gone = DBusAddressWrapper(
            keychain.collection.collection_path + "/999999", "org.freedesktop.Secret.Item", conn
        )
        with pytest.raises(ItemNotFoundException):
            gone.get_property("Locked")
    finally:
        conn.close()
