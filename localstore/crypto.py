"""AES-256-GCM envelopes, scrypt passphrase wrapping, streaming encryption, keychain data keys.

Only the ``cryptography`` package's primitives are used (AESGCM, Scrypt); nothing here invents a
cipher mode. Three formats, each starting with a magic and a version byte so they can evolve:

* **Envelope** (``LSEV`` v1), for values up to memory size::

      magic "LSEV" | version 1 | kind (1 = data key, 2 = passphrase)
      kind 1: key-id length (1 byte) | key id (ASCII)
      kind 2: log2(N) | r | p | salt length | salt            (scrypt parameters)
      nonce (12 random bytes) | AES-256-GCM ciphertext and tag

  The whole header (nonce included) plus the caller's associated data is the GCM associated data,
  so a change to any byte of header, nonce, ciphertext or associated data fails authentication.

* **Stream** (``LSST`` v1), for bundles larger than memory: the header (scrypt parameters, salt,
  chunk size, an 8-byte random nonce prefix) then chunks of ``chunk_size`` plaintext bytes, each
  sealed with nonce = prefix || big-endian chunk counter, and associated data = header || final
  flag || caller's data. The counter catches reordering and dropped chunks; the final flag catches
  truncation at a chunk boundary and anything appended after the end.

* **Data keys** are random 256-bit keys kept in the OS keychain under ``datakey:<kid>`` (see
  :class:`DataKeys`). An envelope records the key id, so keys can be rotated: a new key becomes
  current, old envelopes are re-sealed, and only then is the old key deleted (``localstore.kv``
  drives it).

Every authentication failure, malformed header, wrong key or wrong passphrase raises
:class:`~localstore.errors.DecryptionError`; nothing about the plaintext or key is in its message.
"""

from __future__ import annotations

import base64
import os
import secrets
import struct
import threading
import unicodedata
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from localstore.errors import (
    CredentialNotFoundError,
    CryptoError,
    DecryptionError,
    InvalidInputError,
    KeyNotFoundError,
)

__all__ = [
    "DATA_KEY_PREFIX",
    "DEFAULT_CHUNK_SIZE",
    "SCRYPT_BOUNDS",
    "DataKeys",
    "EnvelopeHeader",
    "PassphraseKey",
    "ScryptParams",
    "SecretStore",
    "decrypt_stream",
    "encrypt_stream",
    "envelope_size",
    "generate_key",
    "key_id_of",
    "new_key_id",
    "read_header",
    "seal",
    "seal_with_passphrase",
    "unseal",
    "unseal_with_passphrase",
    "unwrap_key",
    "wrap_key",
]

ENVELOPE_MAGIC = b"LSEV"
STREAM_MAGIC = b"LSST"
FORMAT_VERSION = 1
KIND_DATA_KEY = 1
KIND_PASSPHRASE = 2
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SALT_BYTES = 16
STREAM_PREFIX_BYTES = 8
DEFAULT_CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_KEY_ID = 64
DATA_KEY_PREFIX = "datakey:"

# Bounds on scrypt parameters read from untrusted headers: a forged header must not be able to make
# us allocate gigabytes or spin for minutes before the tag check fails. Bounding each field is not
# enough (N=2**20, r=32 needs 4 GiB): the products that cost are bounded too, memory 128*r*N bytes
# and work ~ p*r*N. The default (N=2**17, r=8, p=1) uses 128 MiB and 2**20 work; the caps allow 2x
# its memory and 8x its work (about 5 s), which covers OWASP's other scrypt settings.
_MIN_LOG2_N, _MAX_LOG2_N = 10, 20
_MAX_R, _MAX_P = 32, 16
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_MAX_SCRYPT_WORK = 2**23
SCRYPT_BOUNDS = (
    f"log2_n {_MIN_LOG2_N}..{_MAX_LOG2_N}, r 1..{_MAX_R}, p 1..{_MAX_P}, "
    f"memory 128*r*N at most {_MAX_SCRYPT_MEMORY >> 20} MiB, work p*r*N at most "
    f"2**{_MAX_SCRYPT_WORK.bit_length() - 1}"
)
"""The bounds above in words, for errors refusing parameters a caller chose."""
_KEY_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """Cost parameters of scrypt; the default (N=2**17, r=8, p=1) follows OWASP's recommendation."""

    log2_n: int = 17
    r: int = 8
    p: int = 1

    def within_bounds(self) -> bool:
        """Whether a reader accepts these parameters (see :data:`SCRYPT_BOUNDS`)."""
        return (
            _MIN_LOG2_N <= self.log2_n <= _MAX_LOG2_N
            and 1 <= self.r <= _MAX_R
            and 1 <= self.p <= _MAX_P
            and 128 * self.r * 2**self.log2_n <= _MAX_SCRYPT_MEMORY
            and self.p * self.r * 2**self.log2_n <= _MAX_SCRYPT_WORK
        )

    def check(self) -> None:
        """Raise DecryptionError unless the parameters are within the accepted bounds."""
        if not self.within_bounds():
            raise DecryptionError(
                "scrypt parameters out of bounds", hint="the data is corrupt or not ours"
            )


def generate_key() -> bytes:
    """Return a new random 256-bit AES key."""
    return AESGCM.generate_key(bit_length=256)


def new_key_id() -> str:
    """Return a new random key id (16 hex characters)."""
    return secrets.token_hex(8)


def _passphrase_bytes(passphrase: str) -> bytes:
    if not isinstance(passphrase, str) or not passphrase:
        raise InvalidInputError("a passphrase must be a non-empty string")
    # NFC so the same passphrase typed on systems that compose differently derives the same key.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _derive(passphrase: str, salt: bytes, params: ScryptParams) -> bytes:
    params.check()
    material = _passphrase_bytes(passphrase)
    try:
        kdf = Scrypt(salt=salt, length=KEY_BYTES, n=2**params.log2_n, r=params.r, p=params.p)
        return kdf.derive(material)
    except MemoryError:
        # Within the bounds this is a machine short of memory; it must not escape as a raw
        # MemoryError through bundle import or the credentials file.
        raise DecryptionError(
            "scrypt key derivation failed: not enough memory",
            hint=f"free at least {128 * params.r * 2**params.log2_n >> 20} MiB and try again",
        ) from None
    except ValueError as exc:  # parameters OpenSSL refuses (the bounds should prevent this)
        raise DecryptionError(
            "scrypt parameters were refused", hint="the data is corrupt or not ours"
        ) from exc


@dataclass(frozen=True, slots=True, repr=False)
class PassphraseKey:
    """A key derived from a passphrase with scrypt, with the salt and parameters to re-derive it.

    Deriving is deliberately slow; keep one of these to seal many envelopes with the same salt.
    """

    key: bytes
    salt: bytes
    params: ScryptParams

    @classmethod
    def derive(
        cls, passphrase: str, *, salt: bytes | None = None, params: ScryptParams | None = None
    ) -> PassphraseKey:
        """Derive a key from ``passphrase`` (a new random salt unless one is given)."""
        params = params or ScryptParams()
        salt = os.urandom(SALT_BYTES) if salt is None else salt
        return cls(key=_derive(passphrase, salt, params), salt=salt, params=params)

    def matches(self, header: EnvelopeHeader) -> bool:
        """Return whether this key was derived with the header's salt and parameters."""
        return header.salt == self.salt and header.params == self.params

    def __repr__(self) -> str:  # never show key material
        return f"PassphraseKey(params={self.params!r})"


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """The parsed, still unauthenticated header of an envelope."""

    kind: int
    key_id: str
    salt: bytes
    params: ScryptParams | None
    nonce: bytes
    raw: bytes  # header bytes exactly as they appear, nonce included


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise CryptoError("an AES-256 key must be 32 bytes")


def _check_key_id(key_id: str) -> bytes:
    raw = key_id.encode("ascii", "replace")
    if not 1 <= len(raw) <= MAX_KEY_ID or not set(key_id) <= _KEY_ID_CHARS:
        raise CryptoError(f"invalid key id {key_id!r}", hint="use letters, digits, '-', '_', '.'")
    return raw


def _data_key_header(key_id: str, nonce: bytes) -> bytes:
    kid = _check_key_id(key_id)
    return ENVELOPE_MAGIC + bytes([FORMAT_VERSION, KIND_DATA_KEY, len(kid)]) + kid + nonce


def _passphrase_header(pk: PassphraseKey, nonce: bytes) -> bytes:
    p = pk.params
    fixed = bytes([FORMAT_VERSION, KIND_PASSPHRASE, p.log2_n, p.r, p.p, len(pk.salt)])
    return ENVELOPE_MAGIC + fixed + pk.salt + nonce


def _seal_raw(key: bytes, header: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return header + AESGCM(key).encrypt(header[-NONCE_BYTES:], plaintext, header + aad)


def _open_raw(key: bytes, header: EnvelopeHeader, envelope: bytes, aad: bytes) -> bytes:
    body = envelope[len(header.raw) :]
    if len(body) < TAG_BYTES:
        raise DecryptionError("envelope is truncated", hint="the data is corrupt")
    try:
        return AESGCM(key).decrypt(header.nonce, body, header.raw + aad)
    except InvalidTag as exc:
        raise DecryptionError(
            "decryption failed: wrong key or passphrase, or the data was modified",
            hint="check the key or passphrase; if it is right, the data is corrupt",
        ) from exc


class _Reader:
    """Bounds-checked cursor over header bytes; any overrun is a DecryptionError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecryptionError("envelope header is truncated", hint="the data is corrupt")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]


def _header_key_id(raw: bytes) -> str:
    # Checked here, before any lookup: a tampered id otherwise surfaced late (in secret_name) as
    # a CryptoError about the caller's input, not as the DecryptionError every tampering raises.
    key_id = raw.decode("ascii", "replace")
    if not 1 <= len(raw) <= MAX_KEY_ID or not set(key_id) <= _KEY_ID_CHARS:
        raise DecryptionError(
            "envelope header has a malformed key id", hint="the data is corrupt or not ours"
        )
    return key_id


def read_header(envelope: bytes) -> EnvelopeHeader:
    """Parse an envelope's header (not yet authenticated). Raises DecryptionError if malformed."""
    rd = _Reader(bytes(envelope[: 8 + MAX_KEY_ID + 255 + NONCE_BYTES]))
    if rd.take(4) != ENVELOPE_MAGIC:
        raise DecryptionError("not a LocalStore envelope", hint="the data is corrupt or not ours")
    version = rd.byte()
    if version != FORMAT_VERSION:
        raise DecryptionError(
            f"unsupported envelope version {version}", hint="upgrade localstore to read this data"
        )
    kind = rd.byte()
    key_id, salt, params = "", b"", None
    if kind == KIND_DATA_KEY:
        key_id = _header_key_id(rd.take(rd.byte()))
    elif kind == KIND_PASSPHRASE:
        params = ScryptParams(log2_n=rd.byte(), r=rd.byte(), p=rd.byte())
        salt = rd.take(rd.byte())
    else:
        raise DecryptionError(f"unknown envelope kind {kind}", hint="the data is corrupt")
    nonce = rd.take(NONCE_BYTES)
    return EnvelopeHeader(kind, key_id, salt, params, nonce, rd.data[: rd.pos])


def seal(key: bytes, plaintext: bytes, *, aad: bytes = b"", key_id: str = "k") -> bytes:
    """Encrypt ``plaintext`` with a 32-byte key into an envelope naming ``key_id``."""
    _check_key(key)
    return _seal_raw(bytes(key), _data_key_header(key_id, os.urandom(NONCE_BYTES)), plaintext, aad)


def envelope_size(plaintext_bytes: int, key_id: str) -> int:
    """Length of the envelope :func:`seal` makes of ``plaintext_bytes`` bytes under ``key_id``.

    Lets a caller with a size limit (the kv store's SQLite length limit) refuse a value before
    sealing it: AES-GCM refuses 2**31 bytes or more with a raw OverflowError.
    """
    return len(_data_key_header(key_id, bytes(NONCE_BYTES))) + plaintext_bytes + TAG_BYTES


def unseal(key: bytes, envelope: bytes, *, aad: bytes = b"") -> bytes:
    """Decrypt an envelope made by :func:`seal`. Raises DecryptionError."""
    _check_key(key)
    header = read_header(envelope)
    if header.kind != KIND_DATA_KEY:
        raise DecryptionError("envelope is sealed with a passphrase, not a key")
    return _open_raw(bytes(key), header, envelope, aad)


def seal_with_passphrase(
    passphrase: str | PassphraseKey,
    plaintext: bytes,
    *,
    aad: bytes = b"",
    params: ScryptParams | None = None,
) -> bytes:
    """Encrypt with a key derived from a passphrase (scrypt); salt and cost go in the header."""
    pk = (
        passphrase
        if isinstance(passphrase, PassphraseKey)
        else PassphraseKey.derive(passphrase, params=params)
    )
    return _seal_raw(pk.key, _passphrase_header(pk, os.urandom(NONCE_BYTES)), plaintext, aad)


def unseal_with_passphrase(
    passphrase: str | PassphraseKey, envelope: bytes, *, aad: bytes = b""
) -> bytes:
    """Decrypt an envelope made by :func:`seal_with_passphrase`. Raises DecryptionError.

    A :class:`PassphraseKey` is used as is when its salt and parameters match the header, which
    saves re-running scrypt; a string passphrase is always derived afresh.
    """
    header = read_header(envelope)
    if header.kind != KIND_PASSPHRASE or header.params is None:
        raise DecryptionError("envelope is sealed with a data key, not a passphrase")
    header.params.check()
    if isinstance(passphrase, PassphraseKey):
        if not passphrase.matches(header):
            raise DecryptionError("envelope was sealed with a different salt or parameters")
        key = passphrase.key
    else:
        key = _derive(passphrase, header.salt, header.params)
    return _open_raw(key, header, envelope, aad)


def wrap_key(key: bytes, passphrase: str, *, params: ScryptParams | None = None) -> bytes:
    """Seal a data key under a passphrase (for backups and the encrypted-file fallback)."""
    _check_key(key)
    return seal_with_passphrase(
        passphrase, bytes(key), aad=b"localstore:wrapped-key", params=params
    )


def unwrap_key(wrapped: bytes, passphrase: str) -> bytes:
    """Recover a data key sealed by :func:`wrap_key`. Raises DecryptionError."""
    key = unseal_with_passphrase(passphrase, wrapped, aad=b"localstore:wrapped-key")
    _check_key(key)
    return key


# --- streaming -----------------------------------------------------------------------------------

_STREAM_FIXED = struct.Struct(">4sBBBBB")  # magic, version, log2n, r, p, salt length
_CHUNK_SIZE = struct.Struct(">I")
_MAX_CHUNKS = 2**32


def _stream_header(pk: PassphraseKey, chunk_size: int, prefix: bytes) -> bytes:
    p = pk.params
    fixed = _STREAM_FIXED.pack(STREAM_MAGIC, FORMAT_VERSION, p.log2_n, p.r, p.p, len(pk.salt))
    return fixed + pk.salt + _CHUNK_SIZE.pack(chunk_size) + prefix


def _read_full(src: BinaryIO, n: int) -> bytes:
    """Read exactly ``n`` bytes unless the stream ends first (short reads are retried)."""
    parts: list[bytes] = []
    remaining = n
    while remaining:
        chunk = src.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def _chunk_nonce(prefix: bytes, counter: int) -> bytes:
    if counter >= _MAX_CHUNKS:
        raise CryptoError("stream too long for one header", hint="split it into several bundles")
    return prefix + counter.to_bytes(4, "big")


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    passphrase: str,
    *,
    aad: bytes = b"",
    params: ScryptParams | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Encrypt ``src`` to ``dst`` in authenticated chunks under a passphrase (scrypt, AES-GCM)."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidInputError(f"chunk_size must be in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    pk = PassphraseKey.derive(passphrase, params=params)
    prefix = os.urandom(STREAM_PREFIX_BYTES)
    header = _stream_header(pk, chunk_size, prefix)
    dst.write(header)
    aead = AESGCM(pk.key)
    current = _read_full(src, chunk_size)
    counter = 0
    while True:
        # Read one chunk ahead: the final flag must be known before the current chunk is sealed.
        following = _read_full(src, chunk_size) if len(current) == chunk_size else b""
        final = not following
        nonce = _chunk_nonce(prefix, counter)
        dst.write(aead.encrypt(nonce, current, header + bytes([final]) + aad))
        if final:
            return
        current, counter = following, counter + 1


def _read_stream_header(src: BinaryIO) -> tuple[bytes, ScryptParams, bytes, int, bytes]:
    fixed = _read_full(src, _STREAM_FIXED.size)
    if len(fixed) != _STREAM_FIXED.size:
        raise DecryptionError("stream is truncated", hint="the file is incomplete")
    magic, version, log2n, r, p, salt_len = _STREAM_FIXED.unpack(fixed)
    if magic != STREAM_MAGIC:
        raise DecryptionError("not a LocalStore encrypted stream", hint="wrong file?")
    if version != FORMAT_VERSION:
        raise DecryptionError(
            f"unsupported stream version {version}", hint="upgrade localstore to read it"
        )
    rest = _read_full(src, salt_len + _CHUNK_SIZE.size + STREAM_PREFIX_BYTES)
    if len(rest) != salt_len + _CHUNK_SIZE.size + STREAM_PREFIX_BYTES:
        raise DecryptionError("stream header is truncated", hint="the file is incomplete")
    salt = rest[:salt_len]
    (chunk_size,) = _CHUNK_SIZE.unpack(rest[salt_len : salt_len + _CHUNK_SIZE.size])
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise DecryptionError("stream chunk size out of bounds", hint="the file is corrupt")
    params = ScryptParams(log2_n=log2n, r=r, p=p)
    params.check()
    return fixed + rest, params, salt, chunk_size, rest[-STREAM_PREFIX_BYTES:]


def decrypt_stream(src: BinaryIO, dst: BinaryIO, passphrase: str, *, aad: bytes = b"") -> None:
    """Decrypt a stream made by :func:`encrypt_stream` into ``dst``. Raises DecryptionError.

    Plaintext is written chunk by chunk as each chunk authenticates, so on an error ``dst`` holds a
    verified prefix only: callers write to a temporary file and discard it on DecryptionError.
    """
    header, params, salt, chunk_size, prefix = _read_stream_header(src)
    aead = AESGCM(_derive(passphrase, salt, params))
    sealed_size = chunk_size + TAG_BYTES
    current = _read_full(src, sealed_size)
    counter = 0
    while True:
        following = _read_full(src, sealed_size) if len(current) == sealed_size else b""
        final = not following
        try:
            plain = aead.decrypt(
                _chunk_nonce(prefix, counter), current, header + bytes([final]) + aad
            )
        except InvalidTag as exc:
            raise DecryptionError(
                "decryption failed: wrong passphrase, or the data was modified or truncated",
                hint="check the passphrase; if it is right, the file is corrupt or incomplete",
            ) from exc
        dst.write(plain)
        if final:
            return
        current, counter = following, counter + 1


# --- data keys in the keychain -------------------------------------------------------------------


class SecretStore(Protocol):
    """Where data keys live: :class:`localstore.credentials.CredentialStore` satisfies it."""

    def get(self, name: str) -> str:
        """Return the secret called ``name``; raise CredentialNotFoundError if absent."""
        ...

    def set(self, name: str, value: str) -> None:
        """Store ``value`` under ``name``."""
        ...

    def delete(self, name: str) -> None:
        """Delete ``name``; raise CredentialNotFoundError if absent."""
        ...


class DataKeys:
    """Random AES-256 data keys stored in the keychain as ``datakey:<kid>``, cached once read.

    A key id never changes meaning (a key is written once and deleted once), so the cache needs
    no invalidation beyond :meth:`delete`. Which key is *current* is decided by the caller (the kv
    store keeps it in the index, where writers read it inside their transaction).
    """

    def __init__(self, secrets_store: SecretStore) -> None:
        self._secrets = secrets_store
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DataKeys(cached={len(self._cache)})"

    @staticmethod
    def secret_name(kid: str) -> str:
        """Name of the keychain entry that holds key ``kid``."""
        _check_key_id(kid)
        return DATA_KEY_PREFIX + kid

    def create(self, kid: str | None = None) -> str:
        """Generate a key, store it in the keychain, and return its id."""
        kid = kid or new_key_id()
        key = generate_key()
        self._secrets.set(self.secret_name(kid), base64.urlsafe_b64encode(key).decode("ascii"))
        with self._lock:
            self._cache[kid] = key
        return kid

    def get(self, kid: str) -> bytes:
        """Return key ``kid``. Raises KeyNotFoundError if the keychain no longer holds it (or
        holds something else under its name)."""
        with self._lock:
            key = self._cache.get(kid)
        if key is not None:
            return key
        name = self.secret_name(kid)
        try:
            encoded = self._secrets.get(name)
        except CredentialNotFoundError as exc:
            # Typically a home copied or restored onto another computer: the index came along,
            # the keychain did not. Nothing is deleted or re-sealed for it (see KVStore).
            raise KeyNotFoundError(
                f"data key {kid} is not in the keychain, so the app data encrypted with it "
                "cannot be read; it stays on disk unchanged",
                hint=self._restore_hint(name, "from the computer this home came from or"),
            ) from exc
        key = _decode_key(encoded)
        if key is None:
            # The item was changed outside LocalStore (a keychain editor, another tool). No key
            # there is as good as none: a KeyNotFoundError, so key rotation skips the items that
            # need it and reports them, as for a missing key. (A CryptoError before: every
            # rotation stopped half way on the first such item, leaving one more key each time.)
            raise KeyNotFoundError(
                f"the keychain item of data key {kid} does not hold a 256-bit key (it was changed"
                " outside LocalStore), so the app data encrypted with it cannot be read; it stays"
                " on disk unchanged",
                hint=self._restore_hint(name, "from"),
            )
        with self._lock:
            self._cache[kid] = key
        return key

    def _restore_hint(self, name: str, source: str) -> str:
        service = getattr(self._secrets, "service", "")
        return (
            f"restore the keychain item {name!r}"
            + (f" of service {service!r}" if service else "")
            + f" {source} a keychain backup, and the data is readable again; to encrypt new data"
            " meanwhile, KVStore.rotate_data_key() makes a new key (it leaves the unreadable"
            " items as they are)"
        )

    def delete(self, kid: str) -> None:
        """Delete key ``kid`` from the keychain (already gone is fine)."""
        with self._lock:
            self._cache.pop(kid, None)
        try:
            self._secrets.delete(self.secret_name(kid))
        except CredentialNotFoundError:
            pass  # deleting twice after a crash between the steps is the expected recovery path

    def seal(self, kid: str, plaintext: bytes, *, aad: bytes = b"") -> bytes:
        """Encrypt with key ``kid``; the envelope records the id."""
        return seal(self.get(kid), plaintext, aad=aad, key_id=kid)

    def unseal(self, envelope: bytes, *, aad: bytes = b"") -> bytes:
        """Decrypt with the key named in the envelope. Raises DecryptionError, KeyNotFoundError."""
        header = read_header(envelope)
        if header.kind != KIND_DATA_KEY:
            raise DecryptionError("envelope is not sealed with a data key")
        return _open_raw(self.get(header.key_id), header, envelope, aad)

    def reseal(self, envelope: bytes, kid: str, *, aad: bytes = b"") -> bytes:
        """Re-encrypt an envelope under key ``kid`` (the plaintext never leaves this call)."""
        return self.seal(kid, self.unseal(envelope, aad=aad), aad=aad)


def key_id_of(envelope: bytes) -> str:
    """Return the data-key id recorded in an envelope ('' for passphrase envelopes)."""
    return read_header(envelope).key_id


def _decode_key(encoded: str) -> bytes | None:
    """The key a keychain item holds (base64url of 32 bytes); None if it holds anything else."""
    try:
        key = base64.urlsafe_b64decode(encoded.encode("ascii"))
    except ValueError:  # (binascii.Error and UnicodeEncodeError are ValueErrors)
        return None
    return key if len(key) == KEY_BYTES else None
