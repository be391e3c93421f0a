"""The OS keychain backend through ``keyring``, and the boundary translating keyring's errors.

:class:`KeyringSecretBackend` refuses keyring backends that cannot hold secrets
(:func:`unusable_reason`) and retries a call once when the Secret Service went away or the item
vanished meanwhile; :func:`map_keyring_error` turns keyring's (and D-Bus's) exceptions into
localstore's CredentialErrors, never naming a secret value.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import keyring
import keyring.backend
import keyring.errors
from keyring.backends import chainer, fail, null

from localstore._cred_file import PASSPHRASE_ENV
from localstore._cred_secret_service import (
    _is_secret_service,
    _pin_default_collection,
    _prompt_through_get_all,
    _refuse_prompts,
)
from localstore._ss_no_prompt import locked_error
from localstore.errors import CredentialError, KeychainUnavailableError

log = logging.getLogger("localstore.credentials")
_T = TypeVar("_T")
# Before the one retry of a keychain call whose collection could not be opened (a restarting
# Secret Service daemon answers again within a few tens of ms).
_INIT_RETRY_S = 0.2

INSTALL_HINT = (
    "install and unlock an OS keychain: on Debian/Ubuntu 'sudo apt install gnome-keyring "
    "libsecret-1-0 dbus-user-session' and use a desktop session (headless: run inside "
    "'dbus-run-session' with 'gnome-keyring-daemon --unlock'); macOS and Windows have one "
    "built in; remove PYTHON_KEYRING_BACKEND or a keyringrc.cfg that selects the fail/null "
    "backend; or opt in to the encrypted file with LOCALSTORE_KEYCHAIN_FILE_FALLBACK=1 and "
    f"{PASSPHRASE_ENV}=<passphrase>"
)


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
        if self._prompt:
            _prompt_through_get_all(own)
        else:
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
