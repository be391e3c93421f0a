"""The keychain's default collection is addressed by its own path, never by the alias.

gnome-keyring (42 to at least 50) resolves ``/org/freedesktop/secrets/aliases/default`` in its D-Bus
filter thread from a string its main thread frees whenever a client connects, and keyring connects
once per call: under a few concurrent clients a call now and then reached a garbage-named
collection, "Item does not exist", and keyring then asked the user (a GUI prompt) to create a new
keyring. The backend asks ``ReadAlias`` (answered on the main thread) once and uses the path.
These tests run against the session's real gnome-keyring.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

import keyring
import keyring.errors
import pytest
import secretstorage
from keyring.backends import SecretService

from localstore.credentials import KeyringSecretBackend

ALIAS = "/org/freedesktop/secrets/aliases/default"

pytestmark = [pytest.mark.keychain, pytest.mark.usefixtures("secret_service")]


def _default_path() -> str:
    with contextlib.closing(secretstorage.dbus_init()) as bus:
        return str(secretstorage.get_collection_by_alias(bus, "default").collection_path)


@pytest.fixture
def addressed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The collection paths secretstorage is asked for (recorded; the real calls run)."""
    seen: list[str] = []
    real_init = secretstorage.Collection.__init__

    def recording(
        self: secretstorage.Collection,
        connection: object,
        path: str = ALIAS,
        session: object = None,
    ) -> None:
        seen.append(str(path))
        real_init(self, connection, path, session)  # type: ignore[arg-type]

    monkeypatch.setattr(secretstorage.Collection, "__init__", recording)
    yield seen


def _plain_keyring(monkeypatch: pytest.MonkeyPatch) -> SecretService.Keyring:
    # The test session names the collection by path (scripts/_in_keyring_session); a user's
    # environment does not.
    monkeypatch.delenv("KEYRING_PROPERTY_PREFERRED_COLLECTION", raising=False)
    kr = SecretService.Keyring()
    assert not hasattr(kr, "preferred_collection")
    return kr


def test_calls_go_to_the_collection_path_not_the_alias(
    monkeypatch: pytest.MonkeyPatch, addressed: list[str]
) -> None:
    kr = _plain_keyring(monkeypatch)
    backend = KeyringSecretBackend(kr)
    service, name = f"localstore-test-{uuid.uuid4().hex[:8]}", "item"
    backend.set(service, name, "v\u00e9")
    assert backend.get(service, name) == "v\u00e9"
    assert backend.delete(service, name)
    assert backend.get(service, name) is None
    assert addressed, "no collection was opened"
    assert ALIAS not in addressed
    assert set(addressed) == {_default_path()}
    # The app's own backend object is not changed behind its back.
    assert not hasattr(kr, "preferred_collection")


def test_a_collection_the_user_chose_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    kr = _plain_keyring(monkeypatch)
    chosen = _default_path()  # the only unlocked collection here; what matters is who chose it
    kr.preferred_collection = chosen  # type: ignore[attr-defined]
    backend = KeyringSecretBackend(kr)
    assert backend._pinned is False
    assert backend._kr.preferred_collection == chosen  # type: ignore[attr-defined]


def test_a_pinned_collection_that_is_gone_is_looked_up_again(
    monkeypatch: pytest.MonkeyPatch, addressed: list[str]
) -> None:
    # The user replaced the default keyring while a daemon ran: the pinned path names nothing.
    backend = KeyringSecretBackend(_plain_keyring(monkeypatch))
    assert backend._pinned
    gone = "/org/freedesktop/secrets/collection/gone_" + uuid.uuid4().hex[:8]
    backend._kr.preferred_collection = gone  # type: ignore[attr-defined]
    addressed.clear()
    service = f"localstore-test-{uuid.uuid4().hex[:8]}"
    backend.set(service, "item", "x")
    try:
        assert backend.get(service, "item") == "x"
        assert backend._kr.preferred_collection == _default_path()  # type: ignore[attr-defined]
        assert addressed[0] == gone and ALIAS not in addressed
    finally:
        backend.delete(service, "item")


def test_the_process_keyring_is_pinned_as_well(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYRING_PROPERTY_PREFERRED_COLLECTION", raising=False)
    monkeypatch.setattr(keyring.core, "_keyring_backend", SecretService.Keyring())
    backend = KeyringSecretBackend()
    assert backend._kr.preferred_collection == _default_path()  # type: ignore[attr-defined]
    assert not hasattr(keyring.get_keyring(), "preferred_collection")


def test_two_threads_finding_the_pinned_collection_gone_both_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A daemon's threads (the engine, a control request) share one backend. Both found the
    # pinned path gone at once and both dropped the pin: the second's `del` found nothing to
    # delete, and its read failed with a CredentialError (an AttributeError inside) although
    # the default collection was right there.
    import localstore._cred_keyring as cred_keyring

    backend = KeyringSecretBackend(_plain_keyring(monkeypatch))
    assert backend._pinned
    service = f"localstore-test-{uuid.uuid4().hex[:8]}"
    backend.set(service, "item", "x")
    gone = "/org/freedesktop/secrets/collection/gone_" + uuid.uuid4().hex[:8]
    backend._kr.preferred_collection = gone  # type: ignore[attr-defined]
    # Both threads are held where each has met the gone collection, before either re-pins
    # (fault injection of the interleaving: the real calls run).
    both = threading.Barrier(2)
    real_close = cred_keyring._close_leaked_connection

    def held(exc: BaseException) -> None:
        real_close(exc)
        both.wait(timeout=30)

    monkeypatch.setattr(cred_keyring, "_close_leaked_connection", held)
    results: list[object] = []

    def read() -> None:
        try:
            results.append(backend.get(service, "item"))
        except Exception as exc:  # (reported by the assertion below)
            results.append(exc)

    threads = [threading.Thread(target=read) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == ["x", "x"]
        assert backend._kr.preferred_collection == _default_path()  # type: ignore[attr-defined]
    finally:
        monkeypatch.undo()
        backend.delete(service, "item")


def test_a_secret_service_that_went_away_mid_call_is_asked_once_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gnome-keyring aborts on a race of its own when a client disconnects mid-call, and D-Bus
    # activation starts it again: keyring then raises InitError ("Message recipient
    # disconnected"). A refresh of the cloud session failed with "no usable OS keychain" so.
    kr = _plain_keyring(monkeypatch)
    kr.preferred_collection = _default_path()  # type: ignore[attr-defined]  # (not pinned by us)
    backend = KeyringSecretBackend(kr)
    assert backend._pinned is False
    service = f"localstore-test-{uuid.uuid4().hex[:8]}"
    backend.set(service, "item", "x")
    real = type(kr).get_password
    failures = [keyring.errors.InitError("Failed to create the collection: Message recipient")]

    def flaky(self: SecretService.Keyring, svc: str, name: str) -> str | None:
        if failures:
            raise failures.pop()
        return real(self, svc, name)

    monkeypatch.setattr(type(kr), "get_password", flaky)
    try:
        assert backend.get(service, "item") == "x"
        assert not failures
    finally:
        monkeypatch.undo()
        backend.delete(service, "item")


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "named"])
@pytest.mark.parametrize("step", ["is_locked", "create_item"])
def test_a_secret_service_that_went_away_later_in_a_store_is_asked_once_more(
    monkeypatch: pytest.MonkeyPatch, step: str, pinned: bool
) -> None:
    # The daemon can also go away after the collection is opened: at keyring's lock check or in
    # the item's create. secretstorage then raises SecretServiceNotAvailableException itself,
    # unwrapped ("Message recipient disconnected from message bus without replying", D-Bus's
    # NoReply): CI's refresh of a cloud session failed so, while D-Bus activation had already
    # started the daemon again.
    from secretstorage.exceptions import SecretServiceNotAvailableException

    kr = _plain_keyring(monkeypatch)
    if not pinned:
        kr.preferred_collection = _default_path()  # type: ignore[attr-defined]
    backend = KeyringSecretBackend(kr)
    assert backend._pinned is pinned
    service = f"localstore-test-{uuid.uuid4().hex[:8]}"
    real = getattr(secretstorage.Collection, step)
    failures = [
        SecretServiceNotAvailableException(
            "Message recipient disconnected from message bus without replying"
        )
    ]

    def flaky(self: secretstorage.Collection, *args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(secretstorage.Collection, step, flaky)
    try:
        backend.set(service, "item", "x")
        assert not failures
    finally:
        monkeypatch.undo()
    try:
        assert backend.get(service, "item") == "x"
    finally:
        backend.delete(service, "item")


@pytest.mark.parametrize("action", ["set", "get"])
def test_a_session_the_secret_service_no_longer_knows_is_opened_again(
    monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    # secretstorage opens its encryption session and then sends the secret (CreateItem,
    # GetSecret) in a second call: a daemon that went away in between, started again by D-Bus
    # activation, answers that call with org.freedesktop.Secret.Error.NoSession, wrapped by
    # nobody (CI's login failed so: "The session wrapping the secret does not exist"). The
    # fault here is made by the real daemon: the session it opened is closed before the send.
    from jeepney.io.blocking import DBusConnection
    from secretstorage import collection as ss_collection
    from secretstorage import item as ss_item
    from secretstorage.defines import SS_PREFIX
    from secretstorage.dhcrypto import Session
    from secretstorage.util import DBusAddressWrapper

    kr = _plain_keyring(monkeypatch)
    backend = KeyringSecretBackend(kr)
    service = f"localstore-test-{uuid.uuid4().hex[:8]}"
    if action == "get":
        backend.set(service, "item", "x")
    real_open = ss_collection.open_session
    closed: list[str] = []

    def open_then_lose(connection: DBusConnection) -> Session:
        session = real_open(connection)
        if not closed:
            closed.append(str(session.object_path))
            gone = DBusAddressWrapper(str(session.object_path), SS_PREFIX + "Session", connection)
            gone.call("Close", "")
        return session

    monkeypatch.setattr(ss_collection, "open_session", open_then_lose)
    monkeypatch.setattr(ss_item, "open_session", open_then_lose)
    try:
        if action == "set":
            backend.set(service, "item", "x")
        else:
            assert backend.get(service, "item") == "x"
        assert closed, "the fault was not injected"
    finally:
        monkeypatch.undo()
    try:
        assert backend.get(service, "item") == "x"
    finally:
        backend.delete(service, "item")
