"""The opt-in encrypted credentials file: every service's values in one passphrase-sealed file.

:class:`EncryptedFileBackend` and the flock (:class:`_FileLock`) that serialises its rewrites (the
home's backend record takes it too). Used only when a home opted in (``keychain_file_fallback``)
and has no usable OS keychain; see :mod:`localstore.credentials`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from localstore import _durable, crypto
from localstore.errors import CredentialError, DecryptionError, KeychainUnavailableError
from localstore.files import atomic_write

log = logging.getLogger("localstore.credentials")

PASSPHRASE_ENV = "LOCALSTORE_KEYCHAIN_PASSPHRASE"
FALLBACK_FILE_NAME = "credentials.enc"
_FILE_AAD = b"localstore:credentials-file:v1"


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
