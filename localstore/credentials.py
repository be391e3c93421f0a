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

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from localstore import crypto
from localstore._cred_backend import (
    BACKEND_RECORD_NAME,
    ENCRYPTED_FILE,
    KEYCHAIN,
    SecretBackend,
    _now,
    backend_kind,
    backend_record_path,
    fallback_path,
    keychain_report,
    open_backend,
    record_backend,
    recorded_backend,
)
from localstore._cred_file import (
    FALLBACK_FILE_NAME,
    PASSPHRASE_ENV,
    EncryptedFileBackend,
    _utf8_or_none,
)
from localstore._cred_keyring import KeyringSecretBackend, map_keyring_error, unusable_reason
from localstore._cred_secret_service import keychain_locked
from localstore._credential_names import service_name
from localstore.config import Settings, settings_arg
from localstore.errors import (
    ConfigError,
    CredentialNotFoundError,
    InvalidInputError,
    methods_arg,
    wrong_type,
)
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

INTERNAL_PREFIXES = (crypto.DATA_KEY_PREFIX,)
MAX_NAME_CHARS = 256
MAX_VALUE_BYTES = 1024 * 1024

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
    if backend is not None:
        methods_arg(
            "backend",
            backend,
            ("get", "set", "delete"),
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
