"""The Secret Service (Linux) side of the OS keychain: its default collection, lock state, prompts.

keyring's Secret Service backend is used as it is, except that :func:`_pin_default_collection`
points it at the default collection's own path and :func:`_refuse_prompts` makes it refuse a
locked keychain instead of asking the user to unlock it; :func:`keychain_locked` asks the lock
state without a prompt. The D-Bus connections come from ``_ss_get_all`` and the write-time
refusal from ``_ss_no_prompt``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import keyring
import keyring.backend
import keyring.errors

from localstore._ss_get_all import GetAllConnection
from localstore._ss_no_prompt import without_prompts

log = logging.getLogger("localstore.credentials")


_DEFAULT_ALIAS_PATH = "/org/freedesktop/secrets/aliases/default"


def _is_secret_service(kr: keyring.backend.KeyringBackend) -> bool:
    from keyring.backends import SecretService

    return isinstance(kr, SecretService.Keyring)


def _pin_default_collection(kr: keyring.backend.KeyringBackend) -> bool:
    """Point a Secret Service backend at the default collection's own path; True if it did.

    keyring addresses the default collection as ``/aliases/default``, and gnome-keyring (42-50)
    resolves that alias in its D-Bus filter thread from a string its main thread frees whenever
    any client connects; keyring connects once per call. Under a few concurrent clients a call now
    and then reached a garbage-named collection: "Item does not exist", then keyring asked the
    user (a GUI prompt) to create a new "Default" keyring. ``ReadAlias`` is answered on the main
    thread, so the path is looked up once that way and used from then on. A collection the user
    chose (``preferred_collection``, e.g. from ``KEYRING_PROPERTY_PREFERRED_COLLECTION``) is kept;
    with no default collection yet, keyring's own way (which creates one) is left alone.
    """
    if not _is_secret_service(kr):
        return False
    if getattr(kr, "preferred_collection", _DEFAULT_ALIAS_PATH) != _DEFAULT_ALIAS_PATH:
        return False
    import secretstorage

    try:
        with contextlib.closing(_secret_service_bus()) as bus:
            path = secretstorage.get_collection_by_alias(bus, "default").collection_path
    except Exception as exc:  # noqa: BLE001 - no default yet, no bus: keyring's own way decides
        log.debug("default keychain collection not resolved: %s", type(exc).__name__)
        return False
    kr.preferred_collection = path  # type: ignore[attr-defined]
    return True


def keychain_locked() -> bool | None:
    """Whether the Secret Service collection keyring uses is locked, asked without a prompt.

    None when it cannot tell: another keychain (macOS, Windows), no Secret Service (its daemon
    died and is not back yet), no such collection. A daemon asks this, not a read, to notice the
    keychain coming back: a read of a locked collection makes keyring ask the user to unlock it
    (a GUI prompt, from a background process, again after each dismissal).
    """
    kr = keyring.get_keyring()
    if not _is_secret_service(kr):
        return None
    try:
        with contextlib.closing(_secret_service_bus()) as bus:
            return _collection_of(bus, kr).is_locked()
    except Exception as exc:  # noqa: BLE001 - any D-Bus failure: cannot tell
        log.debug("keychain lock state unknown: %s", type(exc).__name__)
        return None


def _secret_service_bus() -> Any:
    """A new Secret Service connection whose collection and item property reads cannot abort
    gnome-keyring (see _ss_get_all; secretstorage makes one connection per call the same way)."""
    import secretstorage

    return GetAllConnection(secretstorage.dbus_init())


def _collection_of(bus: Any, kr: keyring.backend.KeyringBackend) -> Any:
    """The Secret Service collection ``kr`` uses (raises secretstorage's ItemNotFoundException
    when there is none). Never made: secretstorage's get_default_collection, which keyring uses,
    creates a missing default collection, and that asks the user for its password (a prompt)."""
    import secretstorage

    return secretstorage.Collection(
        bus, getattr(kr, "preferred_collection", None) or _DEFAULT_ALIAS_PATH
    )


# Why a read was refused where keyring would have asked the user to unlock the keychain.
_NOT_PROMPTING = "locked, and this process does not ask to unlock it"


def _refuse_prompts(kr: keyring.backend.KeyringBackend) -> None:
    """Make the Secret Service backend ``kr`` raise KeyringLocked where keyring would ask the
    user to unlock the keychain (docs/daemon.md, "A locked keychain").

    keyring unlocks a locked collection, or item, with a GUI prompt that has no timeout, on any
    read or write: from a background process (the daemon's refresh timer, its retries every
    minute, realtime's rejoins) the prompt popped up unasked for, and again after each
    dismissal. Its two unlocking methods are replaced on this instance (a subclass would be
    registered with keyring as one more backend to choose from); the rest is keyring's own.
    """
    from secretstorage.exceptions import SecretStorageException

    def unlocked_collection() -> Any:
        bus = _secret_service_bus()  # (named bus: _close_leaked_connection closes it)
        try:
            collection = _collection_of(bus, kr)
        except SecretStorageException as exc:
            raise keyring.errors.InitError(f"Failed to open the collection: {exc}.") from exc
        if collection.is_locked():
            raise keyring.errors.KeyringLocked(f"the collection is {_NOT_PROMPTING}")
        # Locked after this check, a write or delete would start a prompt (see _ss_no_prompt).
        return without_prompts(collection)

    def unlocked_item(item: Any) -> None:
        # Locked between the collection's check and the read: the same refusal, no prompt.
        if item.is_locked():
            raise keyring.errors.KeyringLocked(f"the item is {_NOT_PROMPTING}")

    kr.get_preferred_collection = unlocked_collection  # type: ignore[attr-defined]
    kr.unlock = unlocked_item  # type: ignore[attr-defined]


def _prompt_through_get_all(kr: keyring.backend.KeyringBackend) -> None:
    """Make the prompting Secret Service backend ``kr`` (the CLI in a terminal) open its
    collection on a ``_secret_service_bus`` connection, so its property reads go as ``GetAll``
    too (see _ss_get_all: a ``Get`` from a caller gnome-keyring no longer knows aborts it).

    keyring's own ``get_preferred_collection`` opens a plain connection: every ``localstore``
    command's keychain call sent four or five plain ``Get``s (``Label``, ``Locked``), still
    aborting the suite's daemon once a CI run. This is keyring's method (keyring 25) on that
    connection: the preferred collection, or the default one, unlocked with the user's prompt."""
    import secretstorage
    from secretstorage.exceptions import SecretStorageException

    def preferred_collection() -> Any:
        bus = _secret_service_bus()  # (named bus: _close_leaked_connection closes it)
        try:
            path = getattr(kr, "preferred_collection", None)
            if path is not None:
                collection = secretstorage.Collection(bus, path)
            else:
                collection = secretstorage.get_default_collection(bus)
        except SecretStorageException as exc:
            raise keyring.errors.InitError(f"Failed to create the collection: {exc}.") from exc
        if collection.is_locked():
            collection.unlock()
            if collection.is_locked():  # (the person dismissed the prompt)
                raise keyring.errors.KeyringLocked("Failed to unlock the collection!")
        return collection

    kr.get_preferred_collection = preferred_collection  # type: ignore[attr-defined]
