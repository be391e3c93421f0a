"""One contract for the app-data store, run against both tiers.

``index``: the index-backed store alone (hot tier off). ``hot``: the same store with the LRU hot
tier in front, so reads after writes are served from memory. Expiry uses an injected clock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import apsw
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localstore import crypto
from localstore.credentials import CredentialStore
from localstore.errors import (
    DecryptionError,
    InvalidInputError,
    KVError,
    KVFormatError,
    LimitExceededError,
)
from localstore.index import Index
from localstore.kv import KVNotFoundError, KVStore


class FakeClock:
    """An injectable clock: time moves only when the test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


TIERS = ["index", "hot"]


def _make(index: Index, tier: str, clock: FakeClock, creds: CredentialStore | None) -> KVStore:
    hot_items = 0 if tier == "index" else 256
    return KVStore(index, credentials=creds, clock=clock, hot_items=hot_items, hot_ttl=1e9)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=TIERS)
def kv(request: pytest.FixtureRequest, index: Index, clock: FakeClock) -> Iterator[KVStore]:
    store = _make(index, request.param, clock, None)
    yield store
    store.close()


@pytest.fixture(params=TIERS)
def ekv(
    request: pytest.FixtureRequest, index: Index, clock: FakeClock, creds: CredentialStore
) -> Iterator[KVStore]:
    store = _make(index, request.param, clock, creds)
    yield store
    store.close()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(value=json_values, compress=st.booleans())
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_json_round_trip(kv: KVStore, value: Any, compress: bool) -> None:
    kv.save("j", value, compress=compress)
    assert kv.load("j") == value
    assert kv.load("j") == value


@given(value=json_values)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_yaml_round_trip(kv: KVStore, value: Any) -> None:
    kv.save("y", value, format="yaml")
    assert kv.load("y") == value
    assert kv.load("y") == value


@given(value=st.binary(max_size=2048), compress=st.booleans())
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_binary_round_trip(kv: KVStore, value: bytes, compress: bool) -> None:
    kv.save("b", value, format="binary", compress=compress)
    assert kv.load("b") == value
    assert kv.load_item("b").format == "binary"


def test_returned_values_are_copies(kv: KVStore) -> None:
    kv.save("doc", {"list": [1, 2]})
    first = kv.load("doc")
    first["list"].append(3)
    assert kv.load("doc") == {"list": [1, 2]}


def test_returned_metadata_is_a_copy(kv: KVStore, clock: FakeClock) -> None:
    meta = {"owner": "alice", "nested": {"n": [1]}}
    kv.save("doc", 1, metadata=meta)
    meta["owner"] = "changed by the caller after saving"
    for _ in range(2):  # first served as cached by save, then as cached by a read from the index
        item = kv.load_item("doc")
        item.metadata["owner"] = "mallory"
        item.metadata["nested"]["n"].append(2)
        assert kv.load_item("doc").metadata == {"owner": "alice", "nested": {"n": [1]}}
        clock.advance(2e9)  # past hot_ttl (1e9): the next load reads the index and caches it


def test_missing_keys(kv: KVStore) -> None:
    kv.save("present", 1)
    assert kv.load("present") == 1
    assert kv.load("present") == 1
    with pytest.raises(KVNotFoundError) as info:
        kv.load("absent")
    assert info.value.hint
    assert kv.load("absent", None) is None
    assert kv.load("absent", default=7) == 7
    assert not kv.exists("absent")
    assert kv.delete("absent") is False


def test_save_overwrite_delete_exists(kv: KVStore, clock: FakeClock) -> None:
    kv.save("k", {"v": 1}, metadata={"owner": "me"}, tags=["a", "b"])
    created = kv.load_item("k").created
    clock.advance(5)
    kv.save("k", {"v": 2}, metadata={"n": 2}, tags=["c"])
    item = kv.load_item("k")
    assert (item.value, item.metadata, item.tags) == ({"v": 2}, {"n": 2}, ("c",))
    assert (item.created, item.updated) == (created, created + 5)
    assert kv.exists("k")
    assert kv.find_by_tag("a") == []
    assert kv.delete("k") is True
    assert not kv.exists("k")
    with pytest.raises(KVNotFoundError):
        kv.load("k")
    assert kv.find_by_tag("c") == []


def test_saving_over_an_expired_item_creates_a_new_one(kv: KVStore, clock: FakeClock) -> None:
    # An expired item is gone for every read, whether or not it was purged yet: a save of its
    # key starts a new item, as it does after delete() or a purge.
    kv.save("k", "old", ttl=10)
    clock.advance(60)
    kv.save("k", "new")
    assert kv.load_item("k").created == clock.now
    clock.advance(5)
    kv.save("k", "newer")  # a live item keeps its creation time
    assert kv.load_item("k").created == clock.now - 5


def test_ttl_expiry_with_injected_clock(kv: KVStore, clock: FakeClock) -> None:
    kv.save("short", "s", ttl=10, tags=["t"])
    kv.save("abs", "a", expires_at=clock.now + 20)
    kv.save("forever", "f", tags=["t"])
    assert kv.load("short") == "s"
    clock.advance(9.999)
    assert kv.load("short") == "s"
    assert kv.load_item("short").expires == pytest.approx(clock.now + 0.001)
    clock.advance(0.001)
    with pytest.raises(KVNotFoundError):
        kv.load("short")
    assert not kv.exists("short")
    assert kv.keys() == ["abs", "forever"]
    assert kv.find_by_tag("t") == ["forever"]
    clock.advance(10)
    assert kv.load("abs", None) is None
    assert kv.purge_expired() == 2
    assert kv.purge_expired() == 0
    assert kv.keys() == ["forever"]
    assert kv.load("forever") == "f"
    kv.save("short", "again", ttl=1)  # a purged key can be saved again
    assert kv.load("short") == "again"


def test_ttl_validation(kv: KVStore) -> None:
    with pytest.raises(InvalidInputError):
        kv.save("x", 1, ttl=0)
    with pytest.raises(InvalidInputError):
        kv.save("x", 1, ttl=5, expires_at=10)
    kv.save("x", 1)
    assert kv.load("x") == 1


BAD_EXPIRY = [float("nan"), float("inf"), -float("inf"), 10**400, True, "2020-01-01", b"1", [1]]


@pytest.mark.parametrize("field", ["ttl", "expires_at"])
@pytest.mark.parametrize("bad", BAD_EXPIRY, ids=repr)
def test_expiry_must_be_a_finite_number(
    kv: KVStore, clock: FakeClock, field: str, bad: Any
) -> None:
    # NaN is stored as NULL (never expires); a string or bytes was stored and broke every load.
    with pytest.raises(InvalidInputError, match=field):
        kv.save("x", 1, **{field: bad})
    assert kv.keys() == []
    base = 0 if field == "ttl" else int(clock.now)
    for key, value, at in (("int", 1, base + 5), ("float", 2, base + 2.5)):
        # Spelled out: **{field: at} matched the value against every keyword's type.
        if field == "ttl":
            kv.save(key, value, ttl=at)
        else:
            kv.save(key, value, expires_at=at)
    assert kv.load("int") == 1 and kv.load("float") == 2
    clock.advance(5)
    assert kv.keys() == []


def test_prefix_listing(kv: KVStore) -> None:
    keys = ["a/1", "a/2", "a/sub/3", "ab", "b", "\u00e9/1", "\u00e9\U0010ffff", "\U0010ffff"]
    for k in keys:
        kv.save(k, k)
    assert kv.keys() == sorted(keys)
    assert kv.keys("a/") == ["a/1", "a/2", "a/sub/3"]
    assert kv.keys("a") == ["a/1", "a/2", "a/sub/3", "ab"]
    assert kv.keys("\u00e9") == ["\u00e9/1", "\u00e9\U0010ffff"]
    assert kv.keys("\U0010ffff") == ["\U0010ffff"]
    assert kv.keys("zzz") == []
    assert kv.keys("%") == [] and kv.keys("_") == []  # no LIKE wildcards
    assert kv.load("a/1") == "a/1"


def test_prefix_before_the_surrogate_range(kv: KVStore) -> None:
    # U+D7FF is the last code point before the surrogates; its successor in a key is U+E000.
    for k in ["a\ud7ff-1", "a\ud7ff-2", "a\ue000", "b"]:
        kv.save(k, k)
    assert kv.keys("a\ud7ff") == ["a\ud7ff-1", "a\ud7ff-2"]
    assert kv.keys("a") == ["a\ud7ff-1", "a\ud7ff-2", "a\ue000"]
    assert kv.keys("\ud7ff") == []


@pytest.mark.parametrize("bad", ["\ud800", "x\udc00", "\udfff-tail"], ids=ascii)
def test_lone_surrogates_are_invalid_input(kv: KVStore, bad: str) -> None:
    # They cannot be encoded as UTF-8, so SQLite would raise a raw UnicodeEncodeError.
    calls = [
        lambda: kv.save(bad, 1),
        lambda: kv.save(bad, 1, encrypt=True),
        lambda: kv.save("k", 1, tags=[bad]),
        lambda: kv.load(bad),
        lambda: kv.load_item(bad),
        lambda: kv.exists(bad),
        lambda: kv.delete(bad),
        lambda: kv.keys(bad),
        lambda: kv.keys(tag=bad),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError, match="Unicode"):
            call()
    assert kv.keys() == []


def test_tags(kv: KVStore) -> None:
    kv.save("p/1", 1, tags=["red", "big"])
    kv.save("p/2", 2, tags=["red"])
    kv.save("q/1", 3, tags=["red", "red"])
    assert kv.find_by_tag("red") == ["p/1", "p/2", "q/1"]
    assert kv.keys("p/", tag="red") == ["p/1", "p/2"]
    assert kv.keys(tag="big") == ["p/1"]
    assert kv.load_item("q/1").tags == ("red",)
    assert kv.load_item("p/1").tags == ("big", "red")
    with pytest.raises(InvalidInputError):
        kv.save("x", 1, tags="red")
    with pytest.raises(InvalidInputError):
        kv.save("x", 1, tags=[""])


def test_compression(kv: KVStore) -> None:
    big = {"text": "abc" * 10_000}
    kv.save("big", big, compress=True)
    item = kv.load_item("big")
    assert item.compressed and item.value == big and item.size > 30_000
    noise = os.urandom(4096)
    kv.save("noise", noise, format="binary", compress=True)
    assert kv.load_item("noise").compressed is False  # not worth it: stored raw
    assert kv.load("noise") == noise


def test_metadata(kv: KVStore) -> None:
    kv.save("m", "v", metadata={"a": [1, "x"], "b": None})
    assert kv.load_item("m").metadata == {"a": [1, "x"], "b": None}
    assert kv.load_item("m").metadata == {"a": [1, "x"], "b": None}
    with pytest.raises(InvalidInputError):
        kv.save("m2", "v", metadata={"x": {1, 2}})


def test_metadata_and_tags_that_cannot_be_stored_are_invalid_input(kv: KVStore) -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(100_000):  # deeper than the interpreter's recursion limit
        inner["a"] = {}
        inner = inner["a"]
    calls = [
        lambda: kv.save("k", 1, metadata={"note": "x\ud800"}),  # not UTF-8: raw at bind time
        lambda: kv.save("k", 1, metadata={"\udc00": 1}),
        lambda: kv.save("k", 1, metadata=deep),
        lambda: kv.save("k", 1, tags=None),  # type: ignore[arg-type]
        lambda: kv.save("k", 1, tags=5),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidInputError) as info:
            call()
        assert info.value.hint
    assert kv.keys() == []


def test_an_item_too_large_for_sqlite_is_a_limit_error(kv: KVStore, index: Index) -> None:
    # SQLite refuses a string, blob or row over SQLITE_LIMIT_LENGTH (1e9 bytes by default); the
    # limit is lowered here so the test need not allocate a gigabyte.
    index.conn.limit(apsw.SQLITE_LIMIT_LENGTH, 100_000)
    kv.save("small", b"x" * 1000, format="binary")
    calls = [
        lambda: kv.save("big", b"x" * 200_000, format="binary"),
        lambda: kv.save("big", "y" * 200_000),
        lambda: kv.save("big", 1, metadata={"note": "z" * 200_000}),
        lambda: kv.save("small", b"x" * 200_000, format="binary"),
    ]
    for call in calls:
        with pytest.raises(LimitExceededError) as info:
            call()
        assert info.value.hint
    assert kv.keys() == ["small"]
    assert kv.load("small") == b"x" * 1000


class _BoundedAESGCM:
    """Fault injection: AES-GCM whose bound on the data it seals is lowered from 2**31 - 1."""

    bound = 150_000
    generate_key = AESGCM.generate_key

    def __init__(self, key: bytes) -> None:
        self._real = AESGCM(key)

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        if len(data) > self.bound:  # cryptography's own check and words
            raise OverflowError("Data or associated data too long. Max 2**31 - 1 bytes")
        return self._real.encrypt(nonce, data, associated_data)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return self._real.decrypt(nonce, data, associated_data)


@pytest.mark.keychain
def test_an_encrypted_item_too_large_is_the_same_limit_error(
    ekv: KVStore, index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``save(k, bytes(2**31), format="binary", encrypt=True)`` raised cryptography's raw
    OverflowError ("Data or associated data too long"), where the same save unencrypted is a
    LimitExceededError with a hint: AES-GCM refuses 2**31 bytes or more, and the value reached it
    before SQLite's length limit (1e9 bytes) could refuse it. Both bounds are lowered here, in
    their real order (SQLite's limit is at most 2**31 - 1, AES-GCM's bound), so the test needs no
    2 GiB value: SQLite's through its own setting, AES-GCM's by fault injection."""
    index.conn.limit(apsw.SQLITE_LIMIT_LENGTH, 100_000)
    monkeypatch.setattr(crypto, "AESGCM", _BoundedAESGCM)
    ekv.save("small", b"x" * 50_000, format="binary", encrypt=True)  # sealed for real
    errors = []
    for size in (200_000, 120_000):  # over both bounds; over SQLite's only
        for encrypt in (False, True):
            for key in ("big", "small"):
                with pytest.raises(LimitExceededError) as info:
                    ekv.save(key, bytes(size), format="binary", encrypt=encrypt)
                errors.append(info.value)
    assert {type(e) for e in errors} == {LimitExceededError}
    assert len({e.hint for e in errors}) == 1 and errors[0].hint
    assert all("too large for the index" in e.message for e in errors)
    assert ekv.keys() == ["small"]
    assert ekv.load("small") == b"x" * 50_000


def test_format_errors(kv: KVStore) -> None:
    with pytest.raises(KVFormatError):
        kv.save("s", {1, 2})
    with pytest.raises(KVFormatError):
        kv.save("n", float("nan"))
    with pytest.raises(KVFormatError):
        kv.save("t", "text", format="binary")
    with pytest.raises(KVFormatError):
        kv.save("o", object(), format="yaml")
    with pytest.raises(InvalidInputError):
        kv.save("f", 1, format="xml")
    with pytest.raises(InvalidInputError):
        kv.save("", 1)
    with pytest.raises(KVError):
        kv.save("e", 1, encrypt=True)  # no credentials
    assert kv.keys() == []


@pytest.mark.parametrize(
    "value",
    [
        {1: "x"},
        {"a": [{"b": {2.5: "y"}}]},
        [{True: 1}],
        {None: "n"},
        {1: "a", "1": "b"},  # JSON made this one key, "1", and kept only one of the two values
    ],
    ids=["int", "nested-float", "bool-in-list", "none", "colliding"],
)
def test_json_dict_keys_that_are_not_strings_are_a_format_error(kv: KVStore, value: Any) -> None:
    # json.dumps turned them into strings silently: {1: "x"} saved and loaded as {"1": "x"}.
    with pytest.raises(KVFormatError, match="key of type") as info:
        kv.save("k", value)
    assert "yaml" in info.value.hint
    with pytest.raises(InvalidInputError, match="key of type") as meta_info:
        kv.save("k", "v", metadata={"m": value})
    assert meta_info.value.hint
    assert kv.keys() == []
    # YAML keeps such keys: the hint's way out works.
    kv.save("k", value, format="yaml")
    assert kv.load("k") == value
    # The check walks shared containers once and leaves a cycle to json.dumps.
    shared = {"x": 1}
    kv.save("shared", {"a": shared, "b": [shared, shared]})
    assert kv.load("shared") == {"a": {"x": 1}, "b": [{"x": 1}, {"x": 1}]}
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(KVFormatError):
        kv.save("cyclic", cyclic)


@pytest.mark.parametrize(
    "value",
    [
        {(1, 2): "x"},
        {"a": [{("b",): 1}]},
        {1: {(): "empty"}},
        {"s": {(1, 2), (3, 4)}},
    ],
    ids=["top-level", "nested", "empty-tuple", "set-member"],
)
def test_yaml_tuple_keys_are_a_format_error(kv: KVStore, value: Any) -> None:
    # YAML writes a tuple as a sequence and reads it back as a list, which cannot be a key: the
    # save went through and every load after it raised KVFormatError ("not valid yaml").
    kv.save("k", "before")
    with pytest.raises(KVFormatError, match="type tuple") as info:
        kv.save("k", value, format="yaml")
    assert info.value.hint
    assert kv.load("k") == "before"  # the old item is left as it was, still readable
    # What YAML does keep as keys still round-trips, tuples as values included (as lists).
    kv.save("ok", {1: (1, 2), None: [(3,)], "s": {1, 2}}, format="yaml")
    assert kv.load("ok") == {1: [1, 2], None: [[3]], "s": {1, 2}}


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_a_value_nested_too_deeply_is_a_format_error(kv: KVStore, fmt: str) -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(100_000):  # deeper than the interpreter's recursion limit
        inner.append([])
        inner = inner[0]
    with pytest.raises(KVFormatError, match="nested too deeply") as info:
        kv.save("deep", deep, format=fmt)
    assert info.value.hint
    assert kv.keys() == []


def test_item_repr_hides_value(kv: KVStore) -> None:
    kv.save("r", "hidden-value-123")
    item = kv.load_item("r")
    assert "hidden-value-123" not in repr(item)
    assert kv.load("r") == "hidden-value-123"


# --- encryption (real keychain for the data keys) -------------------------------------------------


@pytest.mark.keychain
def test_encrypted_round_trip_all_formats(ekv: KVStore, index: Index) -> None:
    ekv.save("j", {"token": "PLAINTEXT-J"}, encrypt=True)
    ekv.save("y", ["PLAINTEXT-Y"], format="yaml", encrypt=True, compress=True)
    ekv.save("b", b"PLAINTEXT-B" * 100, format="binary", encrypt=True, compress=True)
    for _ in range(2):
        assert ekv.load("j") == {"token": "PLAINTEXT-J"}
        assert ekv.load("y") == ["PLAINTEXT-Y"]
        assert ekv.load("b") == b"PLAINTEXT-B" * 100
    assert ekv.load_item("j").encrypted
    with index.read() as cur:
        stored = [bytes(r[0]) for r in cur.execute("SELECT value FROM kv_items").fetchall()]
    assert all(b"PLAINTEXT" not in v for v in stored)
    assert all(v.startswith(b"LSEV") for v in stored)


@pytest.mark.keychain
def test_swapped_ciphertexts_are_detected(ekv: KVStore, index: Index, clock: FakeClock) -> None:
    ekv.save("one", "1", encrypt=True)
    ekv.save("two", "2", encrypt=True)
    with index.write() as cur:
        _one, two = (
            bytes(cur.execute("SELECT value FROM kv_items WHERE key = ?", (k,)).fetchall()[0][0])
            for k in ("one", "two")
        )
        cur.execute("UPDATE kv_items SET value = ? WHERE key = 'one'", (two,))
    fresh = KVStore(index, credentials=ekv._keys._secrets, clock=clock, hot_items=0)  # type: ignore[union-attr]
    with pytest.raises(DecryptionError):
        fresh.load("one")
    assert fresh.load("two") == "2"


@pytest.mark.keychain
def test_rotation_reencrypts_everything(ekv: KVStore, creds: CredentialStore) -> None:
    for i in range(150):  # more than one rotation batch
        ekv.save(f"item/{i}", {"i": i}, encrypt=True, compress=i % 2 == 0, tags=["enc"])
    ekv.save("plain", "not encrypted")
    first = ekv.current_key_id()
    assert first is not None
    report = ekv.rotate_data_key()
    assert report.reencrypted == 150
    assert report.retired == (first,)
    assert ekv.current_key_id() == report.key_id != first
    assert creds.find(f"datakey:{first}") is None  # the old key left the keychain
    assert creds.list_names(include_internal=True) == [f"datakey:{report.key_id}"]
    for i in range(150):
        assert ekv.load(f"item/{i}") == {"i": i}
    assert ekv.load("plain") == "not encrypted"
    assert ekv.find_by_tag("enc") == sorted(f"item/{i}" for i in range(150))
    again = ekv.rotate_data_key()
    assert again.reencrypted == 150 and again.retired == (report.key_id,)


@pytest.mark.keychain
def test_a_key_retired_as_stale_while_its_keychain_write_waited_never_becomes_current(
    ekv: KVStore, clock: FakeClock, index: Index, creds: CredentialStore
) -> None:
    # A rotation's new key waited over STALE_PENDING_KEY_S for its keychain write (a prompt left
    # open over a laptop's night): another process's recover_keys took the pending row for a
    # crash's leftover, retired it and deleted its key from the keychain. The rotation then
    # re-sealed every item with that deleted key: none could ever be read again.
    for i in range(3):
        ekv.save(f"secret/{i}", {"v": i}, encrypt=True)
    first = ekv.current_key_id()
    other = KVStore(index, credentials=creds, clock=clock, hot_items=0)
    keys = ekv._keys
    assert keys is not None
    real_create = keys.create
    interfered: list[str] = []

    def slow_create(kid: str | None = None) -> str:
        made = real_create(kid)
        if not interfered:
            interfered.append(made)
            clock.advance(2 * 3600)  # the write waited two hours
            other.recover_keys()
        return made

    keys.create = slow_create  # type: ignore[method-assign]
    report = ekv.rotate_data_key()
    current = ekv.current_key_id()
    assert current is not None and current not in (interfered[0], first)
    assert report.key_id == current
    assert creds.find(f"datakey:{current}") is not None
    fresh = KVStore(index, credentials=creds, clock=clock, hot_items=0)
    assert [fresh.load(f"secret/{i}") for i in range(3)] == [{"v": i} for i in range(3)]
    other.close()
    fresh.close()
