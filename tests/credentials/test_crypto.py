"""Envelopes, passphrase wrapping and streaming encryption: round trips and tamper detection."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localstore import crypto
from localstore.credentials import EncryptedFileBackend
from localstore.crypto import ScryptParams
from localstore.errors import (
    CredentialError,
    CryptoError,
    DecryptionError,
    InvalidInputError,
    KeyNotFoundError,
)

# Low scrypt cost keeps the tamper loops fast; the format stores the parameters, so this changes
# nothing about the code paths exercised.
FAST = ScryptParams(log2_n=10, r=8, p=1)


def _flip(data: bytes, i: int) -> bytes:
    b = bytearray(data)
    b[i] ^= 0x01
    return bytes(b)


@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=64))
@settings(max_examples=60, deadline=None)
def test_key_envelope_round_trip(plaintext: bytes, aad: bytes) -> None:
    key = crypto.generate_key()
    env = crypto.seal(key, plaintext, aad=aad, key_id="abc")
    assert crypto.unseal(key, env, aad=aad) == plaintext
    assert crypto.key_id_of(env) == "abc"
    assert len(env) == crypto.envelope_size(len(plaintext), "abc")  # (kv checks it before sealing)


def test_every_byte_of_a_key_envelope_is_authenticated() -> None:
    key = crypto.generate_key()
    env = crypto.seal(key, b"attack at dawn", aad=b"ctx", key_id="kid1")
    for i in range(len(env)):
        with pytest.raises(DecryptionError):
            crypto.unseal(key, _flip(env, i), aad=b"ctx")


def test_associated_data_and_key_are_checked() -> None:
    key = crypto.generate_key()
    env = crypto.seal(key, b"payload", aad=b"ctx")
    with pytest.raises(DecryptionError):
        crypto.unseal(key, env, aad=b"ctX")
    with pytest.raises(DecryptionError):
        crypto.unseal(key, env)
    with pytest.raises(DecryptionError):
        crypto.unseal(crypto.generate_key(), env, aad=b"ctx")


def test_truncation_and_garbage_are_decryption_errors() -> None:
    key = crypto.generate_key()
    env = crypto.seal(key, b"payload")
    for cut in range(len(env)):
        with pytest.raises(DecryptionError):
            crypto.unseal(key, env[:cut])
    with pytest.raises(DecryptionError):
        crypto.unseal(key, env + b"\x00")
    with pytest.raises(DecryptionError, match="version"):
        crypto.unseal(key, env[:4] + b"\x09" + env[5:])


def test_nonces_are_fresh() -> None:
    key = crypto.generate_key()
    envs = {crypto.seal(key, b"same") for _ in range(100)}
    assert len(envs) == 100


def test_nonces_are_fresh_under_one_derived_passphrase_key() -> None:
    # A derived key is reused for every envelope it seals (the encrypted credentials file keeps
    # its salt and key across writes): a repeated nonce under one GCM key gives away the XOR of
    # the two plaintexts and the key that authenticates them.
    pk = crypto.PassphraseKey.derive("pw", params=FAST)
    nonces = {crypto.read_header(crypto.seal_with_passphrase(pk, b"same")).nonce for _ in range(50)}
    assert len(nonces) == 50


def test_passphrase_envelope_tamper_and_wrong_passphrase() -> None:
    env = crypto.seal_with_passphrase("correct horse", b"secret", aad=b"a", params=FAST)
    assert crypto.unseal_with_passphrase("correct horse", env, aad=b"a") == b"secret"
    with pytest.raises(DecryptionError):
        crypto.unseal_with_passphrase("wrong horse", env, aad=b"a")
    for i in range(len(env)):
        with pytest.raises(DecryptionError):
            crypto.unseal_with_passphrase("correct horse", _flip(env, i), aad=b"a")


def test_passphrase_is_nfc_normalized() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    env = crypto.seal_with_passphrase(composed, b"x", params=FAST)
    assert crypto.unseal_with_passphrase(decomposed, env) == b"x"


def test_passphrase_key_reuse_skips_derivation_but_checks_salt() -> None:
    pk = crypto.PassphraseKey.derive("pw", params=FAST)
    env = crypto.seal_with_passphrase(pk, b"data")
    assert crypto.unseal_with_passphrase(pk, env) == b"data"
    assert crypto.unseal_with_passphrase("pw", env) == b"data"
    other = crypto.PassphraseKey.derive("pw", params=FAST)
    with pytest.raises(DecryptionError):
        crypto.unseal_with_passphrase(other, env)
    assert "key" not in repr(pk).lower().replace("passphrasekey", "")


def test_forged_scrypt_cost_is_refused_before_deriving() -> None:
    env = bytearray(crypto.seal_with_passphrase("pw", b"x", params=FAST))
    env[6] = 40  # log2(N) = 40 would need terabytes
    with pytest.raises(DecryptionError, match="out of bounds"):
        crypto.unseal_with_passphrase("pw", bytes(env))


class _NoScrypt:
    """Stands in for cryptography's Scrypt where a test asserts that no derivation is attempted."""

    def __init__(self, **_params: int | bytes) -> None:
        raise AssertionError("scrypt ran with parameters from a forged header")


class _ScryptOutOfMemory:
    """Injects the MemoryError OpenSSL's scrypt raises when it cannot allocate its table."""

    def __init__(self, **_params: int | bytes) -> None:
        pass

    def derive(self, _material: bytes) -> bytes:
        raise MemoryError


# (log2 N, r, p): each within its own bound, but the products are not. 128*r*N bytes of memory
# and about p*r*N of work: (20, 32, 16) is 4 GiB and 512x the default's work.
COSTLY = [(20, 32, 16), (20, 32, 1), (19, 8, 1), (18, 16, 1), (17, 8, 16), (15, 32, 16)]


@pytest.mark.parametrize("cost", COSTLY, ids=str)
def test_costly_scrypt_products_are_refused_before_deriving(
    cost: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(DecryptionError, match="out of bounds"):
        ScryptParams(*cost).check()
    envelope = bytearray(crypto.seal_with_passphrase("pw", b"x", params=FAST))
    envelope[6:9] = bytes(cost)  # log2 N, r, p follow magic, version and kind
    stream = bytearray(_enc(b"x"))
    stream[5:8] = bytes(cost)  # they follow magic and version
    path = tmp_path / "creds.enc"
    EncryptedFileBackend(path, "pw", params=FAST).set("svc", "name", "value")
    forged_file = bytearray(path.read_bytes())
    forged_file[6:9] = bytes(cost)
    path.write_bytes(forged_file)
    monkeypatch.setattr(crypto, "Scrypt", _NoScrypt)
    with pytest.raises(DecryptionError, match="out of bounds"):
        crypto.unseal_with_passphrase("pw", bytes(envelope))
    with pytest.raises(DecryptionError, match="out of bounds"):
        _dec(bytes(stream))
    with pytest.raises(CredentialError, match="damaged"):
        EncryptedFileBackend(path, "pw").get("svc", "name")


def test_accepted_scrypt_costs_include_the_default_and_common_choices() -> None:
    for cost in [
        (17, 8, 1),
        (16, 8, 2),
        (15, 8, 3),
        (14, 8, 5),
        (13, 8, 10),
        (18, 8, 1),
        (14, 32, 16),
    ]:
        ScryptParams(*cost).check()
    # What export_bundle and the credentials file write by default still opens.
    key = crypto.PassphraseKey.derive("pw")
    assert key.params == ScryptParams()
    envelope = crypto.seal_with_passphrase(key, b"data")
    assert crypto.unseal_with_passphrase(key, envelope) == b"data"


def test_scrypt_out_of_memory_is_a_decryption_error(monkeypatch: pytest.MonkeyPatch) -> None:
    envelope = crypto.seal_with_passphrase("pw", b"x", params=FAST)
    stream = _enc(b"x")
    monkeypatch.setattr(crypto, "Scrypt", _ScryptOutOfMemory)
    with pytest.raises(DecryptionError, match="memory"):
        crypto.unseal_with_passphrase("pw", envelope)
    with pytest.raises(DecryptionError, match="memory"):
        _dec(stream)


def test_wrap_and_unwrap_key() -> None:
    key = crypto.generate_key()
    wrapped = crypto.wrap_key(key, "pass", params=FAST)
    assert crypto.unwrap_key(wrapped, "pass") == key
    with pytest.raises(DecryptionError):
        crypto.unwrap_key(wrapped, "nope")
    # a wrapped key is not interchangeable with an ordinary passphrase envelope
    with pytest.raises(DecryptionError):
        crypto.unseal_with_passphrase("pass", wrapped)


def test_kinds_are_not_interchangeable() -> None:
    key = crypto.generate_key()
    with pytest.raises(DecryptionError):
        crypto.unseal(key, crypto.seal_with_passphrase("pw", b"x", params=FAST))
    with pytest.raises(DecryptionError):
        crypto.unseal_with_passphrase("pw", crypto.seal(key, b"x"))


def test_bad_inputs() -> None:
    with pytest.raises(CryptoError):
        crypto.seal(b"short", b"x")
    with pytest.raises(CryptoError):
        crypto.seal(crypto.generate_key(), b"x", key_id="has space")
    with pytest.raises(InvalidInputError):
        crypto.seal_with_passphrase("", b"x", params=FAST)


# --- streaming --------------------------------------------------------------------------------

CHUNK = crypto.MIN_CHUNK_SIZE


def _enc(data: bytes, pw: str = "pw", aad: bytes = b"") -> bytes:
    out = io.BytesIO()
    crypto.encrypt_stream(io.BytesIO(data), out, pw, aad=aad, params=FAST, chunk_size=CHUNK)
    return out.getvalue()


def _dec(blob: bytes, pw: str = "pw", aad: bytes = b"") -> bytes:
    out = io.BytesIO()
    crypto.decrypt_stream(io.BytesIO(blob), out, pw, aad=aad)
    return out.getvalue()


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17, 10 * CHUNK]
)
def test_stream_round_trip_at_chunk_boundaries(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    assert _dec(_enc(data, aad=b"bundle"), aad=b"bundle") == data


class _Trickle(io.RawIOBase):
    """A source that returns at most 7 bytes per read, like a pipe."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(min(7, n if n >= 0 else 7))


def test_stream_handles_short_reads() -> None:
    data = b"z" * (2 * CHUNK + 5)
    blob = io.BytesIO()
    crypto.encrypt_stream(_Trickle(data), blob, "pw", params=FAST, chunk_size=CHUNK)  # type: ignore[arg-type]
    out = io.BytesIO()
    crypto.decrypt_stream(_Trickle(blob.getvalue()), out, "pw")  # type: ignore[arg-type]
    assert out.getvalue() == data


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    header_len = 9 + crypto.SALT_BYTES + 4 + crypto.STREAM_PREFIX_BYTES
    body = blob[header_len:]
    size = CHUNK + crypto.TAG_BYTES
    return blob[:header_len], [body[i : i + size] for i in range(0, len(body), size)]


def test_stream_detects_truncation_reorder_drop_and_append() -> None:
    data = bytes(range(256)) * (4 * CHUNK // 256)  # exactly 4 full chunks
    blob = _enc(data)
    header, chunks = _chunks(blob)
    assert len(chunks) == 4
    forged = {
        "truncated at a chunk boundary": header + b"".join(chunks[:3]),
        "truncated mid-chunk": blob[:-5],
        "reordered": header + chunks[1] + chunks[0] + chunks[2] + chunks[3],
        "dropped": header + chunks[0] + chunks[2] + chunks[3],
        "appended": blob + chunks[3],
        "duplicated": header + chunks[0] + b"".join(chunks),
        "header only": header,
    }
    for name, bad in forged.items():
        with pytest.raises(DecryptionError):
            _dec(bad)
        assert name


def test_stream_every_byte_is_authenticated() -> None:
    blob = _enc(b"q" * (CHUNK + 100), aad=b"x")
    for i in range(0, len(blob), 3):
        with pytest.raises(DecryptionError):
            _dec(_flip(blob, i), aad=b"x")


def test_stream_wrong_passphrase_and_aad() -> None:
    blob = _enc(b"hello", aad=b"x")
    with pytest.raises(DecryptionError):
        _dec(blob, pw="other", aad=b"x")
    with pytest.raises(DecryptionError):
        _dec(blob, aad=b"y")
    with pytest.raises(DecryptionError):
        _dec(b"not a stream at all, sorry")
    with pytest.raises(DecryptionError):
        _dec(b"")


# --- data keys --------------------------------------------------------------------------------


class _DictSecrets:
    """A SecretStore over a dict: the real keychain is exercised in test_credentials.py."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, name: str) -> str:
        from localstore.errors import CredentialNotFoundError

        try:
            return self.values[name]
        except KeyError:
            raise CredentialNotFoundError(name) from None

    def set(self, name: str, value: str) -> None:
        self.values[name] = value

    def delete(self, name: str) -> None:
        self.get(name)
        del self.values[name]


def test_data_keys_seal_reseal_and_delete() -> None:
    store = _DictSecrets()
    keys = crypto.DataKeys(store)
    old = keys.create()
    env = keys.seal(old, b"value", aad=b"k")
    assert crypto.key_id_of(env) == old
    new = keys.create()
    env2 = keys.reseal(env, new, aad=b"k")
    assert crypto.key_id_of(env2) == new
    keys.delete(old)
    keys.delete(old)  # idempotent
    assert keys.unseal(env2, aad=b"k") == b"value"
    fresh = crypto.DataKeys(store)  # no cache: must read the stored key
    assert fresh.unseal(env2, aad=b"k") == b"value"
    with pytest.raises(KeyNotFoundError):
        fresh.unseal(env, aad=b"k")
    assert repr(keys).startswith("DataKeys(")


def test_a_tampered_key_id_is_a_decryption_error() -> None:
    keys = crypto.DataKeys(_DictSecrets())
    kid = keys.create()
    env = keys.seal(kid, b"value", aad=b"k")
    assert env[6] == len(kid) and env[7 : 7 + len(kid)] == kid.encode()
    forged = {
        "character outside the key-id alphabet": env[:7] + b"/" + env[8:],
        "non-ASCII byte": env[:7] + b"\xc3" + env[8:],
        "empty key id": env[:6] + b"\x00" + env[7:],
        "key id longer than the maximum": env[:6]
        + bytes([crypto.MAX_KEY_ID + 1])
        + b"a" * (crypto.MAX_KEY_ID + 1)
        + env[7 + len(kid) :],
    }
    fresh = crypto.DataKeys(_DictSecrets())  # nothing cached: the id would be looked up
    for label, bad in forged.items():
        for open_it in (
            lambda b: keys.unseal(b, aad=b"k"),
            lambda b: fresh.unseal(b, aad=b"k"),
            lambda b: crypto.unseal(keys.get(kid), b, aad=b"k"),
            crypto.key_id_of,
        ):
            with pytest.raises(DecryptionError, match="key id"):
                open_it(bad)
        assert label
