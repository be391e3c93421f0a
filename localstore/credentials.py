"""Credentials in the OS keychain: API keys, the cloud session's refresh token, data keys.

Values live only in a secret backend; the index keeps the *names* (keychains cannot list what
they hold) so ``localstore cred ls`` works. Each profile has its own service name,
``localstore:<profile>``.

Backend selection is strict, never a silent fallback to plaintext:

1. the OS keychain through ``keyring`` (Secret Service on Linux, Keychain on macOS, Credential
   Locker on Windows), unless keyring resolved to its ``fail`` or ``null`` backend or a plaintext
   one;
2. otherwise, only when explicitly enabled (``keychain_file_fallback: true``) and a passphrase is in
   ``LOCALSTORE_KEYCHAIN_PASSPHRASE``, an encrypted file (scrypt + AES-256-GCM, mode 0600);
3. otherwise :class:`~localstore.errors.KeychainUnavailableError` naming what to install or set.

Every process of one home must use the same backend, or a daemon without a D-Bus session (file) and
a CLI in the desktop session (keychain) each see only their own secrets. So the first value a home
stores records the backend in ``<data>/credentials.backend``; from then on every process uses the
recorded backend or fails with an error saying which one the home uses and how to reach it.

keyring's exceptions (and the D-Bus errors its backends let through) are translated at this boundary
by :func:`map_keyring_error`. Secret values never appear in messages, logs or reprs: errors name the
credential, never its value.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import keyring
import keyring.backend
import keyring.errors
from keyring.backends import chainer, fail, null

from localstore import _durable, crypto
from localstore._credential_names import service_name
from localstore._ss_get_all import GetAllConnection
from localstore._ss_no_prompt import locked_error, without_prompts
from localstore.config import Settings, settings_arg
from localstore.errors import (
    ConfigError,
    CredentialError,
    CredentialNotFoundError,
    DecryptionError,
    InvalidInputError,
    KeychainUnavailableError,
    wrong_type,
)
from localstore.files import atomic_write
from localstore.index import Index
from localstore.store import _flag_arg

__all__ = [
    "BACKEND_RECORD_NAME",
    "ENCRYPTED_FILE",
    "FALLBACK_FILE_NAME",
    "INTERNAL_PREFIXES",
    "KEYCHAIN",
    "PASSPHRASE_ENV",
    "CredentialStore",
    "EncryptedFileBackend",
    "KeyringSecretBackend",
    "SecretBackend",
    "backend_kind",
    "backend_record_path",
    "fallback_path",
    "is_internal",
    "keychain_locked",
    "keychain_report",
    "map_keyring_error",
    "open_backend",
    "profile_name_error",
    "record_backend",
    "recorded_backend",
    "service_name",
    "unusable_reason",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# Before the one retry of a keychain call whose collection could not be opened (a restarting
# Secret Service daemon answers again within a few tens of ms).
_INIT_RETRY_S = 0.2

PASSPHRASE_ENV = "LOCALSTORE_KEYCHAIN_PASSPHRASE"
FALLBACK_FILE_NAME = "credentials.enc"
BACKEND_RECORD_NAME = "credentials.backend"
KEYCHAIN = "keychain"
ENCRYPTED_FILE = "encrypted-file"
INTERNAL_PREFIXES = (crypto.DATA_KEY_PREFIX,)
MAX_NAME_CHARS = 256
MAX_VALUE_BYTES = 1024 * 1024
_FILE_AAD = b"localstore:credentials-file:v1"

CREDENTIAL_MIGRATIONS: tuple[str, ...] = (
    # v1: names only, per service (profile). Values never touch the index.
    """
    CREATE TABLE credential_names (
        service TEXT NOT NULL,
        name TEXT NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        PRIMARY KEY (service, name)
    ) WITHOUT ROWID;
    """,
)

INSTALL_HINT = (
    "install and unlock an OS keychain: on Debian/Ubuntu 'sudo apt install gnome-keyring "
    "libsecret-1-0 dbus-user-session' and use a desktop session (headless: run inside "
    "'dbus-run-session' with 'gnome-keyring-daemon --unlock'); macOS and Windows have one "
    "built in; remove PYTHON_KEYRING_BACKEND or a keyringrc.cfg that selects the fail/null "
    "backend; or opt in to the encrypted file with LOCALSTORE_KEYCHAIN_FILE_FALLBACK=1 and "
    f"{PASSPHRASE_ENV}=<passphrase>"
)


# A profile's name is part of its keychain service: a trailing space (`LOCALSTORE_PROFILE="work "`)
# was another, empty service, and a ':' could reach `localstore:<profile>:doctor` of another.
_PROFILE_NAME = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
PROFILE_NAME_RULE = "a profile name has only letters, digits, '-', '_' and '.'"
_odd_profiles_warned: set[str] = set()


def _check_profile(index: Index, profile: str, *, listed: bool = True) -> None:
    """Refuse a profile name outside the rule, unless credentials are listed under it already.

    Those were stored by a version without the rule; the index lists them (the cheap way to
    tell), and they stay usable, with a warning once per process. ``listed`` False: the index
    has no credentials tables (a read-only one), so nothing is listed under any name.
    """
    if _PROFILE_NAME.fullmatch(profile):
        return
    stored = False
    if listed:
        with index.read() as cur:
            stored = bool(
                cur.execute(
                    "SELECT 1 FROM credential_names WHERE service = ? LIMIT 1",
                    (service_name(profile),),
                ).fetchall()
            )
    if stored:
        if profile not in _odd_profiles_warned:
            _odd_profiles_warned.add(profile)
            log.warning(
                "profile %r already holds credentials, so it is kept, but %s: a new profile "
                "could not have this name",
                profile,
                PROFILE_NAME_RULE,
            )
        return
    error = profile_name_error(profile)
    assert error is not None  # (the name failed the rule above)
    raise error


def profile_name_error(profile: str) -> ConfigError | None:
    """The error refusing ``profile``'s name, or None when the name follows the rule.

    Whether credentials already listed under it keep it usable is the caller's to ask (see
    :class:`CredentialStore`); ``localstore doctor`` asks it too.
    """
    if _PROFILE_NAME.fullmatch(profile):
        return None
    better = re.sub(r"[^A-Za-z0-9._-]+", "-", profile.strip(), flags=re.ASCII).strip("-")
    return ConfigError(
        f"invalid profile name {profile!r}",
        hint=(f"did you mean {better!r}? " if better else "")
        + f"{PROFILE_NAME_RULE}; set LOCALSTORE_PROFILE or `profile:` in config.yaml",
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _scrub(text: str, secret: str | None) -> str:
    # Backends do not put values in messages today; this keeps it true if one ever does.
    return text.replace(secret, "***") if secret else text


def map_keyring_error(
    exc: BaseException, action: str, *, name: str = "", secret: str | None = None
) -> CredentialError:
    """Translate a keyring (or backend D-Bus) exception into the localstore tree."""
    what = f"{action} {name!r}" if name else action
    detail = _scrub(str(exc), secret) or type(exc).__name__
    if isinstance(exc, keyring.errors.NoKeyringError | keyring.errors.InitError):
        return KeychainUnavailableError(
            f"{what}: no usable OS keychain ({detail})", hint=INSTALL_HINT
        )
    if isinstance(exc, keyring.errors.KeyringLocked) or locked_error(exc):
        return KeychainUnavailableError(
            f"{what}: the keychain is locked ({detail})",
            hint="unlock the login keychain (log in to the desktop session) and try again",
        )
    if isinstance(exc, keyring.errors.PasswordSetError):
        return CredentialError(f"{what}: the keychain refused to store it ({detail})")
    if isinstance(exc, keyring.errors.PasswordDeleteError):
        return CredentialError(f"{what}: the keychain refused to delete it ({detail})")
    return CredentialError(
        f"{what}: keychain error {type(exc).__name__} ({detail})",
        hint="check that the keychain service is running and unlocked",
    )


def _close_leaked_connection(exc: BaseException) -> None:
    """Close the D-Bus connection keyring leaves open when it raises KeyringLocked or InitError.

    keyring's SecretService backend opens a connection per call (``bus`` in
    ``get_preferred_collection``) and closes it only on success: a locked keychain leaked one
    socket per call until the garbage collector found it (a ResourceWarning then), and a daemon
    retrying a locked keychain makes many calls.
    """
    tb = exc.__traceback__
    while tb is not None:
        bus = tb.tb_frame.f_locals.get("bus")
        close = getattr(bus, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()
        tb = tb.tb_next


# The Secret Service's answer to a secret sent in a session it does not know.
_NO_SESSION = "org.freedesktop.Secret.Error.NoSession"


def _service_went_away(exc: BaseException) -> bool:
    """Whether a keychain call failed because the Secret Service could not be reached (worth
    one more try: D-Bus activation starts the daemon again)."""
    if isinstance(exc, keyring.errors.InitError):
        return True
    try:  # secretstorage exists only where the Secret Service backend can run (Linux, BSD)
        from jeepney import DBusErrorResponse
        from secretstorage.exceptions import SecretServiceNotAvailableException
    except ImportError:
        return False
    # NoSession: secretstorage opens its encryption session in one call and sends the secret
    # (CreateItem, GetSecret) in the next; a daemon that went away in between, started again by
    # activation, knows no such session. secretstorage passes the error on unwrapped.
    return isinstance(exc, SecretServiceNotAvailableException) or (
        isinstance(exc, DBusErrorResponse) and exc.name == _NO_SESSION
    )


def _item_vanished(exc: BaseException) -> bool:
    """Whether a keychain call failed because the item it found was deleted before it was used.

    keyring searches for the item in one Secret Service call and reads (or deletes) it in the
    next: another process deleting it in between (a data key another process's rotation retired)
    makes secretstorage raise ItemNotFoundException. A dismissed unlock prompt is a subclass of
    it, and is no such race: the keychain stayed locked.
    """
    try:  # secretstorage exists only where the Secret Service backend can run (Linux, BSD)
        from secretstorage.exceptions import ItemNotFoundException, PromptDismissedException
    except ImportError:
        return False
    return isinstance(exc, ItemNotFoundException) and not isinstance(exc, PromptDismissedException)


def _again_if_vanished(fn: Callable[[], _T]) -> _T:
    """Call ``fn``; once more if the item it found vanished meanwhile (see _item_vanished).

    The second search no longer finds a deleted item (None for a read; keyring's "No such
    password!" for a delete), or finds the item that replaced it. Before, the race was passed on
    as a keychain failure ("check that the keychain service is running").
    """
    try:
        return fn()
    except Exception as exc:
        if not _item_vanished(exc):
            raise
    return fn()


@contextlib.contextmanager
def _keyring_boundary(action: str, name: str, secret: str | None = None) -> Iterator[None]:
    try:
        yield
    except keyring.errors.KeyringError as exc:
        if isinstance(exc, keyring.errors.KeyringLocked | keyring.errors.InitError):
            _close_leaked_connection(exc)
        raise _chain(map_keyring_error(exc, action, name=name, secret=secret), exc, secret)  # noqa: B904
    except Exception as exc:  # noqa: BLE001 - backends leak D-Bus/OS errors; none may escape
        if not locked_error(exc):  # (a locked keychain is no fault: its error says so)
            log.warning("keychain %s of %r failed with %s", action, name, type(exc).__name__)
        raise _chain(map_keyring_error(exc, action, name=name, secret=secret), exc, secret)  # noqa: B904


def _chain(mapped: CredentialError, exc: BaseException, secret: str | None) -> CredentialError:
    """Attach the original as the cause, unless its text holds the secret (tracebacks show it)."""
    if secret and secret in str(exc):
        mapped.__suppress_context__ = True
    else:
        mapped.__cause__ = exc
    return mapped


class SecretBackend(Protocol):
    """Where values are kept. Implementations: the OS keychain and the opt-in encrypted file.

    ``get`` returns None for a missing value; ``delete`` returns whether something was deleted.
    Errors are already localstore CredentialErrors.
    """

    description: str

    def get(self, service: str, name: str) -> str | None:
        """Return the value or None."""
        ...

    def set(self, service: str, name: str, value: str) -> None:
        """Store the value, replacing any previous one."""
        ...

    def delete(self, service: str, name: str) -> bool:
        """Delete the value; False if there was none."""
        ...


def _backend_label(kr: keyring.backend.KeyringBackend) -> str:
    return f"{type(kr).__module__}.{type(kr).__name__}"


def unusable_reason(kr: keyring.backend.KeyringBackend) -> str:
    """Return why a keyring backend cannot hold our secrets ('' when it can)."""
    if isinstance(kr, fail.Keyring):
        return "keyring found no usable backend (it selected keyring.backends.fail)"
    if isinstance(kr, null.Keyring):
        return "keyring is configured with keyring.backends.null, which stores nothing"
    if isinstance(kr, chainer.ChainerBackend) and not kr.backends:
        return "keyring's chainer backend has no usable backends"
    label = _backend_label(kr).lower()
    if "plaintext" in label or label.startswith("keyrings.alt"):
        return f"keyring selected {_backend_label(kr)}, which does not protect secrets"
    return ""


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


class KeyringSecretBackend:
    """The OS keychain through ``keyring``; refuses backends that cannot hold secrets.

    With ``prompt=False`` a locked Secret Service keychain raises KeychainUnavailableError
    ("locked") at once, where keyring would ask the user to unlock it: for background work
    (the daemon, an app's sync threads). Other keychains (macOS, Windows) prompt as their OS does.
    """

    def __init__(
        self, kr: keyring.backend.KeyringBackend | None = None, *, prompt: bool = True
    ) -> None:
        with _keyring_boundary("select keychain backend", ""):
            kr = kr if kr is not None else keyring.get_keyring()
        reason = unusable_reason(kr)
        if reason:
            raise KeychainUnavailableError(f"no usable OS keychain: {reason}", hint=INSTALL_HINT)
        self.description = _backend_label(kr)
        self._kr = kr
        self._prompt = prompt
        if _is_secret_service(kr):
            # A copy: keyring.get_keyring() is the process's backend, which the app may use too.
            self._kr = self._own_copy(kr)
        self._pinned = _pin_default_collection(self._kr)
        self._pin_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyringSecretBackend({self.description})"

    def _own_copy(self, kr: keyring.backend.KeyringBackend) -> keyring.backend.KeyringBackend:
        """A copy of the Secret Service backend ``kr`` for this object, prompting or not."""
        own = copy.copy(kr)
        vars(own).pop("get_preferred_collection", None)  # (the closures name ``kr``)
        vars(own).pop("unlock", None)
        if not self._prompt:
            _refuse_prompts(own)
        return own

    def _call(self, action: str, name: str, secret: str | None, fn: Callable[[], _T]) -> _T:
        with _keyring_boundary(action, name, secret):
            kr = self._kr
            try:
                return fn()
            except Exception as exc:
                # The collection could not be opened (InitError): the pinned one is gone (the
                # user removed or replaced the default keyring while we ran: look the default up
                # again), or the Secret Service daemon went away mid-call ("Message recipient
                # disconnected": gnome-keyring aborts on a race of its own, and D-Bus activation
                # starts it again). The daemon can go away later in the call too (at the
                # collection's lock check, or in the item's create or search): secretstorage
                # then raises its SecretServiceNotAvailableException unwrapped (or, gone between
                # the session's opening and the secret's send, NoSession). Either way, once
                # more: every call here is idempotent (a set replaces; a delete that did happen
                # before the reply was lost is then refused, and delete() looks again).
                if not _service_went_away(exc):
                    raise
                _close_leaked_connection(exc)
                if self._pinned:
                    self._repin(kr)
                else:
                    time.sleep(_INIT_RETRY_S)
                return fn()

    def _repin(self, failed: keyring.backend.KeyringBackend) -> None:
        """Pin the default collection again after ``failed`` (the backend a call used) met its
        pinned one gone. Threads share this backend (a daemon's engine and its control
        requests): the first one re-pins, the others then use its result. The new backend is
        made whole before it is swapped in, so no call in between goes through the alias."""
        with self._pin_lock:
            if self._kr is not failed:
                return  # another thread re-pinned since that call started
            fresh = self._own_copy(failed)
            vars(fresh).pop("preferred_collection", None)
            self._pinned = _pin_default_collection(fresh)
            self._kr = fresh

    def get(self, service: str, name: str) -> str | None:
        """Return the value or None."""
        return self._find(service, name, "read credential")

    def _find(self, service: str, name: str, action: str) -> str | None:
        """The value or None; an error names ``action`` (a delete's looks fail as the delete)."""
        return self._call(
            action,
            name,
            None,
            lambda: _again_if_vanished(lambda: self._kr.get_password(service, name)),
        )

    def set(self, service: str, name: str, value: str) -> None:
        """Store the value."""
        self._call(
            "store credential", name, value, lambda: self._kr.set_password(service, name, value)
        )

    def delete(self, service: str, name: str) -> bool:
        """Delete the value; False if there was none."""
        # keyring reports a missing item as PasswordDeleteError, same as a refusal: look first.
        action = "delete credential"
        if self._find(service, name, action) is None:
            return False
        try:
            self._call(
                action,
                name,
                None,
                lambda: _again_if_vanished(lambda: self._kr.delete_password(service, name)),
            )
        except CredentialError as refused:
            try:
                gone = self._find(service, name, action) is None
            except CredentialError:
                raise refused from refused.__cause__  # (the look failed too: the refusal says why)
            if gone:  # a concurrent delete won the race
                return False
            raise
        return True


class _FileLock:
    """An exclusive advisory lock on a sidecar file (flock), for read-modify-write of the file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, *, reading: bool = False) -> Iterator[None]:
        """Hold the lock. ``reading``: for a read only, which also runs where this user may not
        write the folder (a read-only home): the lock file is then opened read-only (a lock
        needs no write access), or, when it was never made, not taken: a writer replaces the
        file whole (atomic_write), so a read without the lock still sees one version of it."""
        with self._thread_lock:
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                if not reading or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                try:
                    fd = os.open(self._path, os.O_RDONLY)
                except FileNotFoundError:
                    yield
                    return
            try:
                # (record_backend takes it on Windows too: "import fcntl" failed there.)
                with _durable.holding_lock(fd):
                    yield
            finally:
                os.close(fd)  # closing releases the flock


def _utf8_or_none(text: str) -> bytes | None:
    """Return ``text`` as UTF-8, or None if it cannot be encoded (a lone surrogate)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


class EncryptedFileBackend:
    """Opt-in fallback: every service's values in one file sealed with a passphrase (mode 0600).

    The file is an envelope (scrypt + AES-256-GCM) of a JSON document; each change rewrites it
    atomically under an flock so processes do not lose each other's updates. The scrypt key is
    derived once per process and reused while the file keeps the same salt.
    """

    def __init__(
        self, path: Path, passphrase: str, *, params: crypto.ScryptParams | None = None
    ) -> None:
        if not passphrase:
            raise KeychainUnavailableError(
                "the encrypted credentials file needs a passphrase",
                hint=f"set {PASSPHRASE_ENV}",
            )
        self.path = Path(path)
        self.description = f"encrypted file {self.path}"
        self._passphrase = passphrase
        self._params = params
        self._key: crypto.PassphraseKey | None = None
        self._lock = _FileLock(self.path.with_name(self.path.name + ".lock"))

    def __repr__(self) -> str:
        return f"EncryptedFileBackend({str(self.path)!r})"

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CredentialError(f"cannot read {self.path}: {exc.strerror}") from exc
        self._ensure_private()
        try:
            header = crypto.read_header(blob)
            if self._key is None or not self._key.matches(header):
                if header.params is None:
                    raise DecryptionError("not a passphrase-sealed file")
                self._key = crypto.PassphraseKey.derive(
                    self._passphrase, salt=header.salt, params=header.params
                )
            plain = crypto.unseal_with_passphrase(self._key, blob, aad=_FILE_AAD)
        except DecryptionError as exc:
            raise CredentialError(
                f"cannot open {self.path}: wrong passphrase or the file is damaged",
                hint=f"check {PASSPHRASE_ENV}",
            ) from exc
        data = json.loads(plain.decode("utf-8"))
        services: dict[str, dict[str, str]] = data["services"]
        return services

    def _store(self, services: dict[str, dict[str, str]]) -> None:
        if self._key is None:
            self._key = crypto.PassphraseKey.derive(self._passphrase, params=self._params)
        text = json.dumps({"version": 1, "services": services}, ensure_ascii=False)
        plain = _utf8_or_none(text)
        if plain is None:
            # Raised outside the except block on purpose: the UnicodeEncodeError's .object is
            # the plaintext of every credential in the file, and even "from None" would keep it
            # reachable as __context__.
            raise CredentialError(
                f"cannot write {self.path}: a name or value is not valid Unicode",
                hint="use only valid Unicode characters (no lone surrogates)",
            )
        atomic_write(
            self.path, crypto.seal_with_passphrase(self._key, plain, aad=_FILE_AAD), mode=0o600
        )

    def _ensure_private(self) -> None:
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            log.warning("tightening permissions of %s from %o to 600", self.path, mode)
            try:
                self.path.chmod(0o600)
            except OSError as exc:
                # (A read-only snapshot of a home, a file another user owns: the values can still
                # be read; refusing them would not make the file private either.)
                log.warning("cannot tighten %s: %s; chmod 600 it", self.path, exc.strerror or exc)

    def _folder_missing(self) -> bool:
        """No folder for the file yet: nothing is stored (a link to nothing is no such case)."""
        return not os.path.lexists(self.path.parent)

    @contextlib.contextmanager
    def _os_errors(self, action: str) -> Iterator[None]:
        """The lock file's and the folder's OSErrors as CredentialErrors, as the SecretBackend
        protocol promises: raw, doctor's probe (which catches CredentialError) reported "the check
        failed ... report a bug" for a file where the data folder should be."""
        try:
            yield
        except OSError as exc:
            raise CredentialError(
                f"cannot {action} {self.path}: {exc.strerror or exc}",
                hint=f"check that {self.path.parent} is a folder this user may write",
            ) from exc

    def get(self, service: str, name: str) -> str | None:
        """Return the value or None."""
        with self._os_errors("read"):
            if self._folder_missing():
                return None  # (taking the lock would make its file there: FileNotFoundError)
            with self._lock.hold(reading=True):
                return self._load().get(service, {}).get(name)

    def set(self, service: str, name: str, value: str) -> None:
        """Store the value."""
        with self._os_errors("write"):
            # Before the lock, whose file goes beside it; private, as the home's data folder.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self._lock.hold():
                services = self._load()
                services.setdefault(service, {})[name] = value
                self._store(services)

    def delete(self, service: str, name: str) -> bool:
        """Delete the value; False if there was none."""
        with self._os_errors("write"):
            if self._folder_missing():
                return False
            with self._lock.hold():
                services = self._load()
                if name not in services.get(service, {}):
                    return False
                del services[service][name]
                self._store(services)
                return True


def fallback_path(settings: Settings) -> Path:
    """Where the opt-in encrypted credentials file lives."""
    return settings.paths.data / FALLBACK_FILE_NAME


def backend_record_path(settings: Settings) -> Path:
    """The file that records which backend holds this home's secrets."""
    return settings.paths.data / BACKEND_RECORD_NAME


def backend_kind(backend: SecretBackend) -> str:
    """``KEYCHAIN``, ``ENCRYPTED_FILE``, or '' for another (a test's) backend."""
    if isinstance(backend, KeyringSecretBackend):
        return KEYCHAIN
    if isinstance(backend, EncryptedFileBackend):
        return ENCRYPTED_FILE
    return ""


def recorded_backend(settings: Settings) -> str | None:
    """The backend recorded for this home (``KEYCHAIN`` or ``ENCRYPTED_FILE``), None if none yet.

    Raises CredentialError when the record cannot be read or makes no sense: guessing then could
    send this process to the other backend, where the home's secrets are not.
    """
    path = backend_record_path(settings)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialError(
            f"cannot read {path}: {exc.strerror}",
            hint="it records where this home's secrets are; make it readable by this user",
        ) from exc
    try:
        kind = json.loads(raw.decode("utf-8"))["backend"]
    except (ValueError, KeyError, TypeError):
        kind = None
    if kind not in (KEYCHAIN, ENCRYPTED_FILE):
        raise CredentialError(
            f"{path} is damaged: it should say which backend holds this home's secrets",
            hint=f'write {{"backend": "{KEYCHAIN}"}} or {{"backend": "{ENCRYPTED_FILE}"}} into '
            f"it (the file is {ENCRYPTED_FILE} if {fallback_path(settings)} holds them)",
        )
    return str(kind)


def record_backend(settings: Settings, kind: str) -> str:
    """Record ``kind`` as this home's backend unless one is recorded; return the recorded one.

    Check and write happen under an flock, so of two processes storing a home's first secret at
    once, with different backends, one wins and the other sees its record.
    """
    path = backend_record_path(settings)
    with _FileLock(path.with_name(path.name + ".lock")).hold():
        existing = recorded_backend(settings)
        if existing is not None:
            return existing
        text = json.dumps({"backend": kind, "recorded": _now()}) + "\n"
        atomic_write(path, text.encode("utf-8"), mode=0o600)
        log.info("recorded %s as the backend of this home's secrets (%s)", kind, path)
        return kind


def _recorded_keychain(
    settings: Settings, keyring_backend: keyring.backend.KeyringBackend | None, prompt: bool
) -> SecretBackend:
    try:
        return KeyringSecretBackend(keyring_backend, prompt=prompt)
    except KeychainUnavailableError as exc:
        raise KeychainUnavailableError(
            f"this home keeps its secrets in the OS keychain (recorded in "
            f"{backend_record_path(settings)}), which this process cannot use: {exc.message}",
            hint="run this process where the keychain is reachable and unlocked: in the desktop "
            "session, or as a systemd user service (systemctl --user) that has the session's "
            "DBUS_SESSION_BUS_ADDRESS; the encrypted-file fallback does not apply to a home "
            "whose secrets are in the keychain",
        ) from exc


def _recorded_file(settings: Settings, env: Mapping[str, str]) -> SecretBackend:
    path = fallback_path(settings)
    where = f"this home keeps its secrets in the encrypted file {path} (recorded in " + (
        f"{backend_record_path(settings)})"
    )
    if not settings.keychain_file_fallback:
        raise KeychainUnavailableError(
            f"{where}, and this process has not opted in to the encrypted file",
            hint="set LOCALSTORE_KEYCHAIN_FILE_FALLBACK=1 (or keychain_file_fallback: true in "
            f"config.yaml) and {PASSPHRASE_ENV}, as for the process that stored them",
        )
    passphrase = env.get(PASSPHRASE_ENV, "")
    if not passphrase:
        raise KeychainUnavailableError(
            f"{where}, and {PASSPHRASE_ENV} is not set",
            hint=f"export {PASSPHRASE_ENV} (the passphrase the file was sealed with)",
        )
    return EncryptedFileBackend(path, passphrase)


def open_backend(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    keyring_backend: keyring.backend.KeyringBackend | None = None,
    prompt: bool = True,
) -> SecretBackend:
    """The backend recorded for this home; with none recorded yet, the OS keychain, else the
    opt-in encrypted file. Raises KeychainUnavailableError when that backend is out of reach.
    ``prompt=False``: a locked keychain is refused, never a prompt (see KeyringSecretBackend).

    Reads the record but never writes it: :class:`CredentialStore` records the backend when it
    stores the home's first value.
    """
    env = os.environ if environ is None else environ
    recorded = recorded_backend(settings)
    if recorded == KEYCHAIN:
        return _recorded_keychain(settings, keyring_backend, prompt)
    if recorded == ENCRYPTED_FILE:
        return _recorded_file(settings, env)
    try:
        return KeyringSecretBackend(keyring_backend, prompt=prompt)
    except KeychainUnavailableError as exc:
        if not settings.keychain_file_fallback:
            raise
        passphrase = env.get(PASSPHRASE_ENV, "")
        if not passphrase:
            raise KeychainUnavailableError(
                f"{exc.message}; the encrypted-file fallback is enabled but {PASSPHRASE_ENV} "
                "is not set",
                hint=f"export {PASSPHRASE_ENV}, or install an OS keychain",
            ) from exc
        log.warning(
            "no usable OS keychain; using the opt-in encrypted file %s", fallback_path(settings)
        )
        return EncryptedFileBackend(fallback_path(settings), passphrase)


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise wrong_type(
            "a credential name", name, "a string", hint="pass the name as text, e.g. 'github-token'"
        )
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidInputError(
            f"a credential name must be 1-{MAX_NAME_CHARS} characters",
            hint="pass a short name, e.g. 'github-token'",
        )
    if name != name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInputError(
            f"invalid credential name {name!r}",
            hint="no control characters, no leading/trailing spaces",
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no keychain or SQLite can store it
        raise InvalidInputError(
            f"invalid credential name {name!a}",
            hint="use only valid Unicode characters (no lone surrogates)",
        ) from None


def _cred_init_args(index: Any, settings: Any, backend: Any, environ: Any) -> None:
    """CredentialStore's arguments (a wrong one failed later, deep in the first call)."""
    if not isinstance(index, Index):
        raise wrong_type(
            "index",
            index,
            "a localstore.index.Index",
            hint="pass Index(settings.paths.index_db) (or an open store's store.index)",
        )
    settings_arg(settings)
    if backend is not None and not all(
        callable(getattr(backend, m, None)) for m in ("get", "set", "delete")
    ):
        raise wrong_type(
            "backend",
            backend,
            "a secret backend",
            hint="pass KeyringSecretBackend() or EncryptedFileBackend(path, passphrase), or "
            "leave it out to choose by configuration",
        )
    if environ is not None and not isinstance(environ, Mapping):
        raise wrong_type(
            "environ",
            environ,
            "a mapping (like os.environ)",
            hint="leave environ out to read os.environ",
        )


def _check_value(name: str, value: str) -> None:
    # Messages name the credential, never the value.
    if not isinstance(value, str):
        raise wrong_type(
            f"the value of {name!r}",
            value,
            "a string",
            hint="pass the secret as text (decode bytes first, or base64-encode binary data)",
        )
    if not value:
        raise InvalidInputError(f"the value of {name!r} is empty", hint="nothing to store")
    encoded = _utf8_or_none(value)  # not in an except block: the error would hold the value
    if encoded is None:
        raise InvalidInputError(f"the value of {name!r} is not valid Unicode")
    size = len(encoded)
    if size > MAX_VALUE_BYTES:
        raise InvalidInputError(
            f"the value of {name!r} is {size} bytes; the keychain limit here is {MAX_VALUE_BYTES}",
            hint="store large data encrypted in the app-data store instead",
        )


def is_internal(name: str) -> bool:
    """True for names localstore manages itself (data keys)."""
    return name.startswith(INTERNAL_PREFIXES)


class CredentialStore:
    """Named secrets of one profile: values in the keychain, names in the index.

    Order of steps, so a crash leaves nothing hidden: ``set`` writes the value, then the name;
    ``delete`` removes the value, then the name. A name without a value (crash in between) is
    cleaned by the next ``delete``; a value is never left unlisted by a delete.
    """

    def __init__(
        self,
        index: Index,
        settings: Settings,
        *,
        backend: SecretBackend | None = None,
        environ: Mapping[str, str] | None = None,
        prompt: bool = True,
    ) -> None:
        _cred_init_args(index, settings, backend, environ)
        _flag_arg("prompt", prompt)
        self._index = index
        self._settings = settings
        self._environ = environ
        # False: a locked keychain is refused, never unlocked with a prompt (background work).
        self._prompt = prompt
        self.service = service_name(settings.profile)
        # Chosen on first use, so listing names and opening an app work without a keychain; the
        # first read or write of a value raises KeychainUnavailableError instead.
        self._backend_obj = backend
        # A backend passed in is the caller's choice; one chosen here follows the home's record
        # (see open_backend). Until the home has a record, every use looks for one again: another
        # process may store the first secret, in the other backend, at any time.
        self._follow_record = backend is None
        self._recorded = False
        self._backend_lock = threading.Lock()
        # A read-only index (a backup snapshot, another user's home) cannot take the tables: one
        # without them lists no names (none was ever stored there), every write is refused.
        # Made, register_schema raised, so an app passing credentials= to KVStore could not even
        # read its plain items there (as KVStore's own tables, see kv.KVStore).
        self._no_tables = index.read_only is not None and not index.schema_version(
            "credentials", CREDENTIAL_MIGRATIONS
        )
        if not self._no_tables:
            index.register_schema("credentials", CREDENTIAL_MIGRATIONS)
        _check_profile(index, settings.profile, listed=not self._no_tables)

    def __repr__(self) -> str:
        return f"CredentialStore(service={self.service!r})"

    @property
    def _backend(self) -> SecretBackend:
        with self._backend_lock:
            if self._backend_obj is not None and (not self._follow_record or self._recorded):
                return self._backend_obj
            recorded = self._follow_record and recorded_backend(self._settings) is not None
            # Opened again only when the record appeared since: a new EncryptedFileBackend
            # would run scrypt again.
            if self._backend_obj is None or recorded:
                self._backend_obj = open_backend(
                    self._settings, environ=self._environ, prompt=self._prompt
                )
                self._recorded = recorded
            return self._backend_obj

    def _backend_for_write(self) -> SecretBackend:
        """The backend, recorded as the home's if the home has none recorded yet."""
        backend = self._backend
        if not self._follow_record or self._recorded:
            return backend
        kind = backend_kind(backend)
        if not kind:
            return backend
        if record_backend(self._settings, kind) == kind:
            with self._backend_lock:
                self._recorded = True
            return backend
        # Another process recorded the other backend first: store where it does (or raise,
        # when this process cannot reach that one).
        with self._backend_lock:
            self._backend_obj = None
        return self._backend

    @property
    def backend_description(self) -> str:
        """Which backend holds the values (raises KeychainUnavailableError if none)."""
        return self._backend.description

    def ensure_backend(self) -> None:
        """Choose the backend now; raise KeychainUnavailableError if there is no usable one.

        Stores and reads nothing, so it is cheap: ``cred set`` calls it before prompting, so
        nobody types a secret (twice) only to learn there is no keychain to put it in.
        """
        _ = self._backend

    def _check_writable(self, action: str) -> None:
        """Raise ReadOnlyStoreError, naming ``action`` and why, on a read-only index: before the
        backend is touched. After it, the index's refusal came too late: delete had removed the
        value and left the name listed, set had replaced the value."""
        if self._index.read_only is not None:
            raise self._index.read_only_error(action)

    def set(self, name: str, value: str) -> None:
        """Store ``value`` under ``name``. Raises CredentialError, InvalidInputError,
        ReadOnlyStoreError (a read-only index)."""
        _check_name(name)
        _check_value(name, value)
        self._check_writable(f"store credential {name!r}")
        self._backend_for_write().set(self.service, name, value)
        now = _now()
        with self._index.write() as cur:
            cur.execute(
                "INSERT INTO credential_names VALUES (?, ?, ?, ?) ON CONFLICT(service, name) "
                "DO UPDATE SET updated = excluded.updated",
                (self.service, name, now, now),
            )
        log.debug("stored credential %r in %s", name, self.service)

    def find(self, name: str) -> str | None:
        """Return the value of ``name``, or None if it is not stored."""
        _check_name(name)
        return self._backend.get(self.service, name)

    def get(self, name: str) -> str:
        """Return the value of ``name``. Raises CredentialNotFoundError."""
        value = self.find(name)
        if value is None:
            if self._listed(name):
                # The index (in the home) names it but the backend lacks it: the home was copied
                # or restored onto a computer whose keychain never had it, or an older version
                # stored it in the other backend. Said plainly, so nobody takes it for a typo.
                raise CredentialNotFoundError(
                    f"credential {name!r} is listed for {self.service}, but "
                    f"{self.backend_description} has no value for it (a home copied or "
                    "restored from another computer keeps the names, not the keychain's values)",
                    hint=f"restore it: 'localstore cred set {name}' (or restore the keychain "
                    f"of the computer it came from); 'localstore cred rm {name}' forgets the name",
                )
            raise CredentialNotFoundError(
                f"no credential {name!r} in {self.service}",
                hint="store it with 'localstore cred set NAME'",
            )
        return value

    def _listed(self, name: str) -> bool:
        if self._no_tables:
            return False
        with self._index.read() as cur:
            rows = cur.execute(
                "SELECT 1 FROM credential_names WHERE service = ? AND name = ?",
                (self.service, name),
            ).fetchall()
        return bool(rows)

    def exists(self, name: str) -> bool:
        """Return whether a value is stored under ``name``."""
        return self.find(name) is not None

    def delete(self, name: str) -> None:
        """Delete ``name``'s value and listing. Raises CredentialNotFoundError if neither exists,
        ReadOnlyStoreError on a read-only index."""
        _check_name(name)
        self._check_writable(f"delete credential {name!r}")
        removed = self._backend.delete(self.service, name)
        with self._index.write() as cur:
            listed = cur.execute(
                "DELETE FROM credential_names WHERE service = ? AND name = ? RETURNING name",
                (self.service, name),
            ).fetchall()
        if not removed and not listed:
            raise CredentialNotFoundError(f"no credential {name!r} in {self.service}")
        log.debug("deleted credential %r from %s", name, self.service)

    def list_names(self, *, include_internal: bool = False) -> list[str]:
        """Names stored for this profile, sorted (data keys only with ``include_internal``)."""
        _flag_arg("include_internal", include_internal)  # ("no" listed the data keys)
        if self._no_tables:
            return []
        with self._index.read() as cur:
            rows = cur.execute(
                "SELECT name FROM credential_names WHERE service = ? ORDER BY name",
                (self.service,),
            ).fetchall()
        names = [str(r[0]) for r in rows]
        return names if include_internal else [n for n in names if not is_internal(n)]


def _file_report(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    path = fallback_path(settings)
    mode = None
    if path.exists():
        mode = f"{stat.S_IMODE(path.stat().st_mode):04o}"
    return {
        "enabled": settings.keychain_file_fallback,
        "passphrase_set": bool(env.get(PASSPHRASE_ENV)),
        "path": str(path),
        "exists": mode is not None,
        "mode": mode,
    }


# One fixed name, not a random one: keychains cannot list what they hold, so a random item that a
# run left behind (killed between store and delete, or its delete failed) could never be found
# again. With a fixed name the next run's store replaces it and its delete removes it.
PROBE_NAME = "probe"


def _probe(backend: SecretBackend, profile: str) -> tuple[str, str]:
    """Write, read back and delete a throw-away item; return ('', '') or what failed and the
    failure's own hint ('' when it has none).

    The item is deleted whatever happened after it may have been stored, so a failing read-back
    does not leave a test value in the user's keychain.
    """
    service = service_name(profile) + ":doctor"
    value = secrets.token_hex(16)
    failure, hint = "", ""
    try:
        backend.set(service, PROBE_NAME, value)
        if backend.get(service, PROBE_NAME) != value:
            failure = "the keychain returned a different value than was stored"
    except CredentialError as exc:
        failure, hint = exc.message, exc.hint or ""
    finally:
        try:
            backend.delete(service, PROBE_NAME)
        except CredentialError as exc:
            # Not raised: it would hide the first failure, and the next run removes the item.
            if not failure:
                failure, hint = exc.message, exc.hint or ""
    return failure, hint


def keychain_report(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    probe: bool = True,
    keyring_backend: keyring.backend.KeyringBackend | None = None,
) -> dict[str, Any]:
    """Describe the credential backend for ``localstore doctor`` (never any secret value).

    Keys: ok, active ("keychain", "encrypted-file" or "none"), recorded (the home's recorded
    backend, "" before its first secret), service, keyring_backend, problem, hint, probe ("ok",
    "skipped" or what failed), file_fallback {enabled, passphrase_set, path, exists, mode}.
    """
    env = os.environ if environ is None else environ
    try:
        recorded = recorded_backend(settings) or ""
    except CredentialError:
        recorded = ""  # open_backend below raises the same error into problem/hint
    report: dict[str, Any] = {
        "ok": False,
        "active": "none",
        "recorded": recorded,
        "service": service_name(settings.profile),
        "keyring_backend": "",
        "problem": "",
        "hint": "",
        "probe": "skipped",
    }
    _check_backend(report, settings, env, probe, keyring_backend)
    # Last, so it shows the file as the probe left it.
    report["file_fallback"] = _file_report(settings, env)
    return report


def _check_backend(
    report: dict[str, Any],
    settings: Settings,
    env: Mapping[str, str],
    probe: bool,
    keyring_backend: keyring.backend.KeyringBackend | None,
) -> None:
    try:
        kr = keyring_backend if keyring_backend is not None else keyring.get_keyring()
        report["keyring_backend"] = _backend_label(kr)
        backend = open_backend(settings, environ=env, keyring_backend=kr)
    except CredentialError as exc:
        report.update(problem=exc.message, hint=exc.hint)
        return
    report["active"] = backend_kind(backend)
    if report["active"] == "encrypted-file":
        report["hint"] = "secrets are in the opt-in encrypted file, not the OS keychain"
        if not settings.paths.data.exists():
            # A home not made yet (a mistyped --home): the probe would make its data folder
            # and the file (it crashed on the missing folder), and no passphrase can be wrong
            # for a file that does not exist. A keychain probe leaves no file behind.
            report["hint"] += (
                "; this home has no data folder yet (the file comes with its first secret)"
            )
            probe = False
    if probe:
        failure, hint = _probe(backend, settings.profile)
        report["probe"] = failure or "ok"
        if failure:
            # The failure's own fix where it has one: a wrong passphrase for the file ("check
            # LOCALSTORE_KEYCHAIN_PASSPHRASE") or a locked keychain ("unlock it") was told to
            # install a keychain or opt in to the file it was already using.
            report.update(problem=failure, hint=hint or INSTALL_HINT)
            return
    report["ok"] = True
