"""Which secret backend holds a home's values: the SecretBackend protocol, the home's record of
its backend, opening the recorded (or else the best available) one, and ``localstore doctor``'s
report and probe of it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import keyring
import keyring.backend

from localstore._cred_file import (
    FALLBACK_FILE_NAME,
    PASSPHRASE_ENV,
    EncryptedFileBackend,
    _FileLock,
)
from localstore._cred_keyring import INSTALL_HINT, KeyringSecretBackend, _backend_label
from localstore._credential_names import service_name
from localstore.config import Settings
from localstore.errors import CredentialError, KeychainUnavailableError
from localstore.files import atomic_write

log = logging.getLogger("localstore.credentials")

BACKEND_RECORD_NAME = "credentials.backend"
KEYCHAIN = "keychain"
ENCRYPTED_FILE = "encrypted-file"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
