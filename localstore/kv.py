"""The app-data store: a key/value store for a desktop app's own data, kept in the index.

Values are encoded (json, yaml or binary), optionally compressed (zlib) and optionally encrypted
(AES-256-GCM with a data key from the keychain, the item's key bound in as associated data), in that
order. Each item has metadata (a JSON object), tags and an optional expiry. Expired items are never
returned; a :class:`Purger` thread (or :meth:`KVStore.purge_expired`) deletes them.

In front of the index sits a hot tier: an LRU of decoded-ready plaintext bounded by item count and
bytes, with its own time-to-live. It is write-through and stays coherent across processes and
across KVStore objects: a write bumps a generation counter in the index, and a hit first checks
``PRAGMA data_version`` (which changes only when another connection commits) and the connection's
total change count (which moves with every write on this connection, another KVStore's on the same
:class:`~localstore.index.Index` included), and re-reads the generation when either moved.

Data keys rotate without loss (:meth:`KVStore.rotate_data_key`): a new key is written to the
keychain while its row in ``kv_keys`` is *pending*, then made *current* (the old one *retiring*);
every item is re-sealed in batches with compare-and-swap; a retiring key is deleted from the
keychain only when no item uses it (at the end of the rotation, or by the purge, delete or save
that removes its last item). A crash at any step leaves every item readable, and the next rotation (or
:meth:`KVStore.recover_keys`) finishes the job.
"""

from __future__ import annotations

import copy
import enum
import json
import logging
import math
import numbers
import threading
import time
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import apsw
import yaml

from localstore._failure_streak import FailureStreak
from localstore.config import DEFAULT_KV_HOT_BYTES, DEFAULT_KV_HOT_ITEMS, Settings, settings_arg
from localstore.crypto import DataKeys, SecretStore, envelope_size, new_key_id
from localstore.errors import (
    DecryptionError,
    InvalidInputError,
    KeyNotFoundError,
    KVError,
    KVFormatError,
    KVNotFoundError,
    LimitExceededError,
    LocalStoreError,
    StoreClosedError,
    wrong_type,
)
from localstore.index import Index
from localstore.store import _count_arg, _flag_arg

__all__ = [
    "DEFAULT_KV_HOT_TTL_S",
    "FORMATS",
    "KVItem",
    "KVNotFoundError",
    "KVStore",
    "Purger",
    "RotationReport",
]

log = logging.getLogger(__name__)

FORMATS = ("json", "yaml", "binary")
DEFAULT_KV_HOT_TTL_S = 60.0
DEFAULT_PURGE_INTERVAL_S = 60.0
MAX_KEY_CHARS = 1024
MAX_TAG_CHARS = 128
ROTATION_BATCH = 64
PURGE_BATCH = 500
# A pending key older than this was left by a crash between its row and its keychain write.
STALE_PENDING_KEY_S = 3600.0
# How long a save follows the current data key while other processes keep rotating it under
# each try (a rotation is seconds of keychain and re-seal work; see _write_with_current_key).
SAVE_KEY_CHASE_S = 5.0
_COMPRESS_LEVEL = 6
_MISSING: Any = object()
_ENTRY_OVERHEAD = 96  # rough per-entry bookkeeping bytes counted against hot_bytes

KV_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE kv_items (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        format TEXT NOT NULL,
        compressed INTEGER NOT NULL,
        key_id TEXT,
        metadata TEXT NOT NULL,
        tags TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        expires REAL,
        size INTEGER NOT NULL
    );
    CREATE INDEX kv_items_expires ON kv_items(expires) WHERE expires IS NOT NULL;
    CREATE INDEX kv_items_key_id ON kv_items(key_id) WHERE key_id IS NOT NULL;
    CREATE TABLE kv_tags (
        tag TEXT NOT NULL,
        key TEXT NOT NULL,
        PRIMARY KEY (tag, key)
    ) WITHOUT ROWID;
    CREATE INDEX kv_tags_key ON kv_tags(key);
    CREATE TABLE kv_keys (
        kid TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('pending', 'current', 'retiring', 'retired')),
        created REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE kv_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO kv_state VALUES ('generation', 0);
    """,
)


@dataclass(frozen=True, slots=True)
class KVItem:
    """One stored item; ``value`` is left out of repr (it may be a decrypted secret)."""

    key: str
    value: Any = field(repr=False)
    format: str
    compressed: bool
    encrypted: bool
    metadata: dict[str, Any]
    tags: tuple[str, ...]
    created: float
    updated: float
    expires: float | None
    size: int  # bytes of the encoded plaintext


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What :meth:`KVStore.rotate_data_key` did."""

    key_id: str
    reencrypted: int
    retired: tuple[str, ...]
    # Items left sealed with a data key the keychain does not have (a home copied to another
    # computer): kept as they are, readable again once the key is restored.
    unreadable: int = 0
    missing_keys: tuple[str, ...] = ()
    # Keys of items whose ciphertext did not decrypt (damaged, or sealed with a different key
    # than the keychain holds under its id): left as they are, their data key kept for them.
    damaged: tuple[str, ...] = ()
    # The key current when this rotation ended, when another process's rotation made it current
    # meanwhile (None when ``key_id`` is): that rotation re-seals the items and may have deleted
    # ``key_id`` from the keychain already. The key new items use is this one, then.
    overtaken_by: str | None = None


# --- codecs -------------------------------------------------------------------------------------

_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YamlDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


_JSON_KEY_HINT = (
    "JSON object keys are strings: convert them (str(k)) before saving, or save with "
    "format='yaml', which keeps int, float, bool and None keys"
)


def _non_str_key(value: Any) -> tuple[str, int] | None:
    """The first dict key in ``value`` that is not a str: (its type name, its dict's depth).

    json.dumps turns int, float, bool and None keys into strings without a word, so
    ``{1: "x"}`` came back as ``{"1": "x"}`` (and ``{1: "a", "1": "b"}`` as one key).
    """
    return _first_bad_key(value, lambda k: isinstance(k, str), sets=False)


def _tuple_key(value: Any) -> tuple[str, int] | None:
    """The first dict key or set member in ``value`` that is a tuple (see _first_bad_key).

    YAML writes a tuple as a sequence and reads a sequence back as a list, which cannot be a
    key: ``{(1, 2): "x"}`` (or ``{(1, 2)}``) was saved, then every load of it raised
    KVFormatError ("not valid yaml"), for good.
    """
    return _first_bad_key(value, lambda k: not isinstance(k, tuple), sets=True)


def _first_bad_key(value: Any, ok: Callable[[Any], bool], *, sets: bool) -> tuple[str, int] | None:
    """The first dict key (and, with ``sets``, set member) in ``value`` that ``ok`` refuses:
    (its type name, its container's depth).

    Iterative, so depth stays the encoder's problem (RecursionError, mapped by the callers);
    shared and cyclic containers are visited once (the encoders refuse the cycle themselves).
    Only the type and depth are reported, never key text: the value may be a secret.
    """
    kinds: tuple[type[Any], ...] = (
        (dict, list, tuple, set, frozenset) if sets else (dict, list, tuple)
    )
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen: set[int] = set()
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, kinds) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            for k, v in node.items():
                if not ok(k):
                    return type(k).__name__, depth
                stack.append((v, depth + 1))
        elif isinstance(node, set | frozenset):
            for member in node:
                if not ok(member):
                    return type(member).__name__, depth
        else:
            stack.extend((v, depth + 1) for v in node)
    return None


def _where(depth: int, container: str = "dict") -> str:
    if depth == 0:
        return f"the top-level {container}"
    return f"a {container} nested {depth} level(s) deep"


def _encode(key: str, value: Any, fmt: str) -> bytes:
    try:
        if fmt == "json":
            bad = _non_str_key(value)
            if bad is not None:
                raise KVFormatError(
                    f"cannot encode {key!r} as json: {_where(bad[1])} has a key of type"
                    f" {bad[0]}, which JSON would turn into a string",
                    hint=_JSON_KEY_HINT,
                )
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            return text.encode("utf-8")
        if fmt == "yaml":
            bad = _tuple_key(value)
            if bad is not None:
                raise KVFormatError(
                    f"cannot encode {key!r} as yaml: {_where(bad[1], 'dict or set')} has a key"
                    f" or member of type {bad[0]}, which YAML would load back as a list (and a"
                    " list cannot be a key)",
                    hint="turn tuple keys into strings or numbers before saving (for example"
                    " ','.join(...)), or store the pairs as a list of [key, value] lists",
                )
            out: str = yaml.dump(value, Dumper=_YamlDumper, allow_unicode=True, sort_keys=False)
            return out.encode("utf-8")
    except (TypeError, ValueError, yaml.YAMLError) as exc:
        raise KVFormatError(
            f"cannot encode {key!r} as {fmt}: {type(exc).__name__}",
            hint="store plain data (dicts, lists, str, numbers, bools, None) or use binary",
        ) from exc
    except RecursionError as exc:  # both encoders recurse once per nesting level
        raise KVFormatError(
            f"cannot encode {key!r} as {fmt}: the value is nested too deeply",
            hint="flatten the value (a few hundred levels at most), or store it as binary",
        ) from exc
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise KVFormatError(
        f"binary value of {key!r} must be bytes, not {type(value).__name__}",
        hint="pass bytes (text.encode() for a str), or leave format out to store it as JSON",
    )


def _decode(key: str, data: bytes, fmt: str) -> Any:
    try:
        if fmt == "json":
            return json.loads(data)
        if fmt == "yaml":
            return yaml.load(data, Loader=_YamlLoader)  # _YamlLoader is a SafeLoader
    except (ValueError, yaml.YAMLError) as exc:
        raise KVFormatError(f"stored value of {key!r} is not valid {fmt}") from exc
    except RecursionError as exc:  # written by another program: too deep to decode here
        raise KVFormatError(
            f"stored value of {key!r} is nested too deeply to decode as {fmt}",
            hint="delete the key (KVStore.delete) and store a flatter value",
        ) from exc
    return data


def _aad(key: str) -> bytes:
    # Binds a ciphertext to its key: swapping two encrypted rows in the database fails to decrypt.
    return b"localstore:kv:" + key.encode("utf-8")


def _check_utf8(what: str, text: str) -> None:
    # A lone surrogate cannot be encoded as UTF-8: SQLite (and the AAD) would raise a raw
    # UnicodeEncodeError at bind time instead of a typed error before anything is written.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what} {ascii(text)[:80]} is not valid Unicode (it has a lone surrogate)",
            hint="decode bytes with errors='replace' or use only encodable characters",
        ) from None


def _check_key(key: str) -> None:
    if not isinstance(key, str):
        raise wrong_type(
            "an app-data key",
            key,
            "a string",
            hint=f"pass the key as text of 1-{MAX_KEY_CHARS} characters",
        )
    if not 1 <= len(key) <= MAX_KEY_CHARS or "\x00" in key:
        raise InvalidInputError(
            f"an app-data key must be 1-{MAX_KEY_CHARS} characters, no NUL",
            hint="use a short text key such as 'settings/theme'",
        )
    _check_utf8("the app-data key", key)


def _check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise wrong_type(
            "tags", tags, "a list of strings", hint="pass tags=['a', 'b'], or leave it out for none"
        )
    out: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_TAG_CHARS:
            raise InvalidInputError(
                f"a tag must be a string of 1-{MAX_TAG_CHARS} characters, not {tag!r}",
                hint="pass tags as a list of short texts, e.g. tags=['a', 'b']",
            )
        _check_utf8("the tag", tag)
        out[tag] = None
    return tuple(sorted(out))


def _kv_init_args(
    index: Any,
    credentials: Any,
    settings: Any,
    clock: Any,
    hot_items: Any,
    hot_bytes: Any,
    hot_ttl: Any,
) -> None:
    """KVStore's arguments (a wrong one failed later, inside the first save or load)."""
    if not isinstance(index, Index):
        raise wrong_type(
            "index",
            index,
            "a localstore.index.Index",
            hint="pass Index(settings.paths.index_db) (or an open store's store.index)",
        )
    if credentials is not None and not all(
        callable(getattr(credentials, m, None)) for m in ("get", "set", "delete")
    ):
        raise wrong_type(
            "credentials",
            credentials,
            "a CredentialStore",
            hint="pass credentials=CredentialStore(index, settings), or leave it out",
        )
    if settings is not None:
        settings_arg(settings)
    if not callable(clock):
        raise wrong_type(
            "clock",
            clock,
            "callable",
            hint="pass a function returning epoch seconds, like time.time",
        )
    for name, value in (("hot_items", hot_items), ("hot_bytes", hot_bytes)):
        if value is not None:
            _count_arg(name, value)
    ok = isinstance(hot_ttl, int | float) and not isinstance(hot_ttl, bool)
    if not ok or not math.isfinite(hot_ttl) or hot_ttl < 0:
        raise InvalidInputError(
            f"hot_ttl must be 0 or more seconds, not {hot_ttl!r}",
            hint="leave hot_ttl out for the default",
        )


def _finite(name: str, value: Any) -> float:
    """Return ``value`` as a finite float. Raises InvalidInputError."""
    # SQLite stores NaN as NULL (an item that never expires), and a str or bytes would be stored
    # as is and make every later load of the item raise a raw TypeError or ValueError.
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    try:
        number = float(value) if ok else math.nan
    except OverflowError:  # an int too large for a float
        number = math.nan
    if not math.isfinite(number):
        raise InvalidInputError(
            f"{name} must be a finite number of seconds, not {value!r:.40}",
            hint="leave it out (None) for an item that never expires",
        )
    return number


def _metadata_json(metadata: Mapping[str, Any] | None) -> str:
    if metadata is None:
        return "{}"
    hint = "metadata is a small JSON object: str keys; str, number, bool, None, list, dict values"
    if not isinstance(metadata, Mapping):
        raise InvalidInputError("metadata must be a mapping", hint=hint)
    bad = _non_str_key(dict(metadata))
    if bad is not None:
        # Stored as JSON: a non-str key would come back as a string (see _non_str_key).
        raise InvalidInputError(
            f"metadata: {_where(bad[1])} has a key of type {bad[0]}; JSON would turn it into"
            " a string",
            hint=hint,
        )
    try:
        text = json.dumps(dict(metadata), ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata is not JSON-serializable: {exc}", hint=hint) from exc
    except RecursionError as exc:
        raise InvalidInputError("metadata is nested too deeply", hint=hint) from exc
    # ensure_ascii=False keeps a lone surrogate as is: SQLite would then raise a raw
    # UnicodeEncodeError when the text is bound, inside the write.
    _check_utf8("the metadata", text)
    return text


def _prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """[low, high) key range of a prefix (BINARY collation compares UTF-8, i.e. code points)."""
    if not prefix:
        return "", None
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return prefix, None
    # Keys hold no surrogates (they are not UTF-8), so U+D7FF's successor is U+E000; chr(0xD800)
    # as the bound could not even be bound as a parameter.
    following = 0xE000 if last == 0xD7FF else last + 1
    return prefix, prefix[:-1] + chr(following)


def _too_large(key: str, value_bytes: int, meta_bytes: int, limit: int) -> LimitExceededError:
    """The error for an item over SQLite's length limit (``value_bytes`` as stored: encrypted,
    the envelope's size)."""
    return LimitExceededError(
        f"app-data item {key!r} is too large for the index ({value_bytes} bytes of value,"
        f" {meta_bytes} of metadata; SQLite's limit is {limit} per item)",
        hint="keep large data in files and store their path; app data is for small values",
    )


# --- hot tier -----------------------------------------------------------------------------------


def _meta_cost(item: KVItem) -> int:
    """Rough bytes the tier holds for an item's metadata and tags (JSON text length)."""
    # Counted, or a small value with megabytes of metadata would pass for a small entry and the
    # tier could hold hot_items times that, far past hot_bytes. ({} is the common case: free.)
    cost = sum(len(tag) + 4 for tag in item.tags)
    if item.metadata:
        cost += len(json.dumps(item.metadata, ensure_ascii=False, separators=(",", ":")))
    return cost


@dataclass(slots=True)
class _HotEntry:
    item: KVItem  # value is None; the plaintext is decoded and metadata copied per hit
    plain: bytes
    cached_at: float
    cost: int


class _HotTier:
    """LRU of plaintext, bounded by item count and bytes, entries live at most ``ttl`` seconds."""

    def __init__(self, max_items: int, max_bytes: int, ttl: float) -> None:
        self.max_items = max(0, max_items)
        self.max_bytes = max(0, max_bytes)
        self.ttl = ttl
        self._data: OrderedDict[str, _HotEntry] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        # ttl 0: every entry is stale at once. Never served, it was still kept (a decrypted secret
        # too) until evicted or close(): off, as with no room, so nothing is held in memory.
        return self.max_items > 0 and self.max_bytes > 0 and self.ttl > 0

    def get(self, key: str, now: float) -> _HotEntry | None:
        entry = self._data.get(key)
        if entry is not None:
            expired = entry.item.expires is not None and entry.item.expires <= now
            if expired or now - entry.cached_at >= self.ttl or now < entry.cached_at:
                self.discard(key)
                entry = None
            else:
                self._data.move_to_end(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, item: KVItem, plain: bytes, now: float) -> None:
        self.discard(key)
        cost = len(plain) + len(key) + _meta_cost(item) + _ENTRY_OVERHEAD
        if not self.enabled or cost > self.max_bytes:
            return
        self._data[key] = _HotEntry(item, plain, now, cost)
        self._bytes += cost
        while len(self._data) > self.max_items or self._bytes > self.max_bytes:
            _, old = self._data.popitem(last=False)
            self._bytes -= old.cost

    def discard(self, key: str) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old.cost

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    def stats(self) -> dict[str, int]:
        return {
            "items": len(self._data),
            "bytes": self._bytes,
            "hits": self.hits,
            "misses": self.misses,
        }


# --- the store ----------------------------------------------------------------------------------


class _WeakCall:
    """A callable that calls a bound method if its object is still alive."""

    __slots__ = ("_method",)

    def __init__(self, method: Callable[[], None]) -> None:
        self._method = weakref.WeakMethod(method)

    def __call__(self) -> None:
        method = self._method()
        if method is not None:
            method()


def _forget_listeners(
    index: Index, on_rollback: Callable[[], None], on_close: Callable[[], None]
) -> None:
    """Take a KVStore's callbacks back from its index (at close, or when it is collected)."""
    index.remove_rollback_listener(on_rollback)
    index.remove_close_listener(on_close)


def _key_kept_changing(key: str, tried: list[str]) -> KVError:
    return KVError(
        f"cannot save {key!r}: another process changed the data key {len(tried)} times while"
        f" this save tried to write it (for up to {SAVE_KEY_CHASE_S:g} s); nothing was saved",
        hint="stop whatever rotates the app-data key in a loop (rotate_data_key), then save again",
    )


class _StaleKey(Exception):
    """Internal: no current data key yet, or not the one loaded; retry outside the write."""


class KVStore:
    """App data in the index, with an LRU hot tier in front (``hot_items=0`` or ``hot_ttl=0`` turns
    it off: nothing is kept in memory).

    :meth:`close` is final: every operation after it raises StoreClosedError.

    The tier's bounds: ``hot_items`` / ``hot_bytes`` if given, else ``settings.kv_hot_items`` /
    ``kv_hot_bytes`` (config.yaml, ``LOCALSTORE_KV_HOT_*``) if settings are given, else the
    defaults.
    """

    def __init__(
        self,
        index: Index,
        *,
        credentials: SecretStore | None = None,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
        hot_items: int | None = None,
        hot_bytes: int | None = None,
        hot_ttl: float = DEFAULT_KV_HOT_TTL_S,
    ) -> None:
        _kv_init_args(index, credentials, settings, clock, hot_items, hot_bytes, hot_ttl)
        self._index = index
        self._keys = DataKeys(credentials) if credentials is not None else None
        self._clock = clock
        if hot_items is None:
            hot_items = DEFAULT_KV_HOT_ITEMS if settings is None else settings.kv_hot_items
        if hot_bytes is None:
            hot_bytes = DEFAULT_KV_HOT_BYTES if settings is None else settings.kv_hot_bytes
        # A read-only index (a backup snapshot, another user's home) cannot take the app-data
        # tables: one without them reads as empty (the app never saved any there), every write
        # raising ReadOnlyStoreError. Made, register_schema failed for it, so an app could not
        # even ask whether a key was there.
        self._no_tables = index.read_only is not None and not index.schema_version(
            "kv", KV_MIGRATIONS
        )
        if self._no_tables:
            hot_items = 0  # (the tier's coherence check reads a table that is not there)
        self._hot = _HotTier(hot_items, hot_bytes, hot_ttl)
        # One lock for the hot tier and the coherence counters. Lock order: the index's lock
        # first, then this one (see _hot_lookup and _write), never the reverse: a caller may hold
        # the index's lock (its own index.write()) when it calls us.
        self._lock = threading.RLock()
        # Bumps on every write here and every time the tier is emptied: a read that raced either
        # (a local write, or another process's commit noticed by another thread) is not cached.
        self._epoch = 0
        # (PRAGMA data_version, the connection's total_changes) at the last coherence check.
        self._seen_token: tuple[int, int] | None = None
        self._seen_generation: int | None = None
        self._purger: Purger | None = None
        self._purger_finalizer: weakref.finalize[Any, Any] | None = None
        # Set once by close() under self._lock; never cleared (a closed store stays closed).
        self._closed = False
        # Set by the index when any transaction or savepoint rolls back (see _note_rollback).
        self._rolled_back = False
        if not self._no_tables:
            index.register_schema("kv", KV_MIGRATIONS)
        # Through a weak reference, removed when this store is collected: a bound method would
        # keep every KVStore ever made on a long-lived index alive, hot tier and all.
        listener = _WeakCall(self._note_rollback)
        index.on_rollback(listener)
        # Closed with its index (the store's close()): the purger slept on until its next round.
        on_close = _WeakCall(self.close)
        index.on_close(on_close)
        self._listener_finalizer = weakref.finalize(
            self, _forget_listeners, index, listener, on_close
        )

    def __repr__(self) -> str:
        closed = ", closed" if self._closed else ""
        return f"KVStore({str(self._index.path)!r}{closed})"

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _check_open(self) -> None:
        """Raise StoreClosedError after close() (every public operation calls this first)."""
        if self._closed:
            raise StoreClosedError(
                "this KVStore was closed",
                hint="make a new KVStore(index, ...) to use app data again; the data is kept",
            )

    def _check_writable(self, action: str) -> None:
        """Raise ReadOnlyStoreError, naming ``action`` and why, on a read-only index: before a
        keychain read or a data key is made for a write that cannot land."""
        if self._index.read_only is not None:
            raise self._index.read_only_error(action)

    # -- writes -----------------------------------------------------------------------------------

    def save(
        self,
        key: str,
        value: Any,
        *,
        format: str = "json",
        compress: bool = False,
        encrypt: bool = False,
        metadata: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
        ttl: float | None = None,
        expires_at: float | None = None,
    ) -> None:
        """Store ``value`` under ``key``, replacing any previous item.

        ``ttl`` (seconds from now) or ``expires_at`` (epoch seconds) sets an expiry. Raises
        KVFormatError (cannot encode), InvalidInputError, KVError (encrypt without credentials),
        CredentialError/KeychainUnavailableError (data key), IndexStoreError.
        """
        self._check_open()
        _check_key(key)
        self._check_writable(f"save app-data item {key!r}")
        if not isinstance(format, str) or format not in FORMATS:
            raise InvalidInputError(
                f"format must be one of {', '.join(FORMATS)}, not {format!r}",
                hint="leave format out for JSON; 'binary' takes bytes",
            )
        # ("no" was taken as true: compressed, or refused for lack of credentials.)
        _flag_arg("compress", compress)
        _flag_arg("encrypt", encrypt)
        tag_tuple = _check_tags(tags)
        meta_json = _metadata_json(metadata)
        expires = self._expiry(ttl, expires_at)
        plain = _encode(key, value, format)
        stored, compressed = plain, False
        if compress:
            packed = zlib.compress(plain, _COMPRESS_LEVEL)
            # Keep it raw when compression does not pay (already-compressed or tiny values).
            if len(packed) < len(plain):
                stored, compressed = packed, True
        if encrypt and self._keys is None:
            raise KVError(
                f"cannot encrypt {key!r}: this store has no credentials",
                hint="pass credentials=CredentialStore(...) to KVStore",
            )
        now = self._clock()
        meta = json.loads(meta_json)
        item = KVItem(
            key, None, format, compressed, encrypt, meta, tag_tuple, now, now, expires, len(plain)
        )
        row = (
            stored,
            format,
            int(compressed),
            meta_json,
            json.dumps(list(tag_tuple)),
            now,
            expires,
            len(plain),
        )
        if self._write_with_current_key(key, row, tag_tuple, encrypt, item, plain):
            self._delete_retired_after(f"saving {key!r}")

    def _write_with_current_key(
        self,
        key: str,
        row: tuple[Any, ...],
        tags: tuple[str, ...],
        encrypt: bool,
        item: KVItem,
        plain: bytes,
    ) -> bool:
        """Write the row (see _write_item), sealed with the key current at the write.

        Raises KVError when another process keeps rotating the key past SAVE_KEY_CHASE_S.
        """
        deadline = time.monotonic() + SAVE_KEY_CHASE_S
        tried: list[str] = []
        while True:
            # The current data key, read from the keychain now if not yet in memory: a keychain
            # read is a D-Bus round trip (a locked keychain may even wait for the user), which
            # inside the write would hold the index and SQLite's write lock as long.
            kid = self._load_current_key() if encrypt else None
            # Each retry follows a rotation committed elsewhere, so it meets a newer key. A key
            # met before, or still another one after the deadline, is no pace of rotation a
            # person or an app sets off (a fixed count of 3 was hit by two processes rotating
            # without pause), and looping on would hang the save.
            if kid in tried or (tried and time.monotonic() >= deadline):
                raise _key_kept_changing(key, tried)
            try:
                return self._write_item(key, row, tags, encrypt, kid, item, plain)
            except _StaleKey:
                if kid is None:
                    self._create_key(rotate=False)  # the first key (or another's, if it won)
                else:
                    tried.append(kid)

    def _expiry(self, ttl: float | None, expires_at: float | None) -> float | None:
        if ttl is not None and expires_at is not None:
            raise InvalidInputError(
                "give ttl or expires_at, not both", hint="ttl is seconds from now; pass one"
            )
        if ttl is not None:
            seconds = _finite("ttl", ttl)
            if seconds <= 0:
                raise InvalidInputError(
                    f"ttl must be positive (seconds), not {ttl!r}",
                    hint="leave ttl out (None) for an item that never expires",
                )
            return _finite("ttl", self._clock() + seconds)
        return None if expires_at is None else _finite("expires_at", expires_at)

    def _write_item(
        self,
        key: str,
        row: tuple[Any, ...],
        tags: tuple[str, ...],
        encrypt: bool,
        loaded_kid: str | None,
        item: KVItem,
        plain: bytes,
    ) -> bool:
        """Write the row; encrypted with the current key, which must be ``loaded_kid``.

        Returns whether the item replaced was the last one sealed with a retiring data key
        (marked 'retired' here: see _retire_if_unused)."""
        stored, fmt, compressed, meta_json, tags_json, now, expires, size = row
        with self._write() as cur:
            key_id = None
            if encrypt:
                assert self._keys is not None
                # Read the current key inside the transaction: a rotation that commits before us
                # is seen, one that starts after us re-seals this row.
                key_id = self._current_kid(cur)
                if key_id is None or key_id != loaded_kid:
                    raise _StaleKey  # none yet, or another process rotated since we loaded it
                # Checked before sealing: AES-GCM refuses 2**31 bytes or more with a raw
                # OverflowError, where the unencrypted path gets SQLite's TooBigError below. SQLite's
                # limit is never above 2**31 - 1 (its hard maximum), so an envelope within it is
                # within AES-GCM's bound too; and a value SQLite would refuse is not encrypted first.
                limit = cur.connection.limit(apsw.SQLITE_LIMIT_LENGTH)
                sealed = envelope_size(len(stored), key_id)
                if sealed > limit:
                    raise _too_large(key, sealed, len(meta_json), limit)
                stored = self._keys.seal(key_id, stored, aad=_aad(key))
            # (A primary-key lookup: the upsert's RETURNING sees only the new row.)
            replaced = cur.execute("SELECT key_id FROM kv_items WHERE key = ?", (key,)).fetchall()
            try:
                rows = cur.execute(
                    "INSERT INTO kv_items (key, value, format, compressed, key_id, metadata, tags,"
                    " created, updated, expires, size) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(key) DO UPDATE SET value=excluded.value, format=excluded.format,"
                    # An expired row not yet purged is gone for every read: this is a new item.
                    " created=CASE WHEN kv_items.expires <= excluded.updated"
                    " THEN excluded.created ELSE kv_items.created END,"
                    " compressed=excluded.compressed, key_id=excluded.key_id,"
                    " metadata=excluded.metadata, tags=excluded.tags, updated=excluded.updated,"
                    " expires=excluded.expires, size=excluded.size RETURNING created",
                    (
                        key,
                        stored,
                        fmt,
                        compressed,
                        key_id,
                        meta_json,
                        tags_json,
                        now,
                        now,
                        expires,
                        size,
                    ),
                ).fetchall()
            except apsw.TooBigError as exc:
                # Raised inside our write, so the index's write() would pass it on raw.
                limit = cur.connection.limit(apsw.SQLITE_LIMIT_LENGTH)
                raise _too_large(key, len(stored), len(meta_json), limit) from exc
            cur.execute("DELETE FROM kv_tags WHERE key = ?", (key,))
            cur.executemany("INSERT INTO kv_tags VALUES (?, ?)", [(t, key) for t in tags])
            retired = self._retire_if_unused(cur, [r[0] for r in replaced])
            self._bump_generation(cur)
            # Cached in the same locked region as the write: a put after releasing the lock could
            # land after another thread's newer save or delete of this key and resurrect our value.
            self._hot.put(key, replace(item, created=float(rows[0][0])), plain, now)
        return retired

    def delete(self, key: str) -> bool:
        """Delete ``key``; return whether a (live or expired) item was there.

        A retiring data key whose last item this removes is retired (see purge_expired); a
        keychain delete that fails then is logged and left to the next purge, rotation or
        recover_keys() (the item is deleted either way).
        """
        self._check_open()
        _check_key(key)
        self._check_writable(f"delete app-data item {key!r}")
        with self._write() as cur:
            gone = cur.execute(
                "DELETE FROM kv_items WHERE key = ? RETURNING key_id", (key,)
            ).fetchall()
            cur.execute("DELETE FROM kv_tags WHERE key = ?", (key,))
            retired = self._retire_if_unused(cur, [r[0] for r in gone])
            self._bump_generation(cur)
            self._hot.discard(key)
        if retired:
            self._delete_retired_after(f"deleting {key!r}")
        return bool(gone)

    def purge_expired(self) -> int:
        """Delete every expired item now; return how many. (The Purger calls this.)

        A rotated data key whose last item this removes is retired as rotation retires one:
        marked in the same transaction, then deleted from the keychain, then its row. If that
        keychain delete fails, this raises (the items stay purged) and the next purge, rotation or
        recover_keys() finishes it.
        """
        self._check_open()
        self._check_writable("purge expired app data")
        now = self._clock()
        total = 0
        while True:
            with self._write() as cur:
                rows = cur.execute(
                    "DELETE FROM kv_items WHERE key IN (SELECT key FROM kv_items"
                    " WHERE expires IS NOT NULL AND expires <= ? LIMIT ?) RETURNING key, key_id",
                    (now, PURGE_BATCH),
                ).fetchall()
                keys = [r[0] for r in rows]
                cur.executemany("DELETE FROM kv_tags WHERE key = ?", [(k,) for k in keys])
                if keys:
                    self._bump_generation(cur)
                if any(r[1] is not None for r in rows):
                    # (Any retiring key no item uses, not only those of these items: one left
                    # unused by an interrupted rotation goes too.)
                    self._mark_unused_retired(cur)
                for k in keys:
                    self._hot.discard(k)
            total += len(keys)
            if len(keys) < PURGE_BATCH:
                break
        if self._keys is not None:
            # Also any a crash (or a failed keychain delete) left 'retired' before. A store with
            # no credentials leaves that to one with them (its purge, rotation or recover_keys).
            self._delete_retired()
        return total

    # -- reads ------------------------------------------------------------------------------------

    def load(self, key: str, default: Any = _MISSING) -> Any:
        """Return the value of ``key``; ``default`` if given and the key is missing or expired.

        Raises KVNotFoundError, KVFormatError, DecryptionError, KeyNotFoundError.
        """
        self._check_open()
        try:
            item, plain = self._load(key)
        except KVNotFoundError:
            if default is _MISSING:
                raise
            return default
        return _decode(key, plain, item.format)

    def load_item(self, key: str) -> KVItem:
        """Return the item (value, metadata, tags, times). Raises like :meth:`load`."""
        self._check_open()
        item, plain = self._load(key)
        # The item may be the hot tier's: a caller mutating its metadata must not change what
        # later reads return. (Tags are a tuple; the value is decoded afresh.)
        metadata = copy.deepcopy(item.metadata)
        return replace(item, value=_decode(key, plain, item.format), metadata=metadata)

    def _load(self, key: str) -> tuple[KVItem, bytes]:
        """The item (value unset) and its plaintext, from the hot tier or the index."""
        _check_key(key)
        now = self._clock()
        entry, epoch_before = self._hot_lookup(key, now)
        if entry is not None:
            return entry.item, entry.plain
        item, plain = self._read_item(key, now)
        with self._lock:
            if self._epoch == epoch_before:  # no write or coherence check raced this read
                self._hot.put(key, item, plain, now)
        return item, plain

    def _read_item(self, key: str, now: float) -> tuple[KVItem, bytes]:
        tried: str | None = None
        while True:
            item, stored, compressed, key_id = self._fetch_row(key, now)
            try:
                return item, self._plaintext(key, stored, compressed, key_id)
            except KeyNotFoundError:
                # A rotation may have re-sealed this row and retired its key between our read
                # and the key lookup: read the row again, as long as its key changed (each
                # change a rotation done elsewhere). Once only, a second rotation during the
                # second try made the read raise KeyNotFoundError for a key retired by design.
                if key_id == tried:
                    raise
                tried = key_id

    def _fetch_row(self, key: str, now: float) -> tuple[KVItem, bytes, bool, str | None]:
        with self._index.read() as cur:
            rows = (
                []
                if self._no_tables
                else cur.execute(
                    "SELECT value, format, compressed, key_id, metadata, tags, created, updated,"
                    " expires, size FROM kv_items WHERE key = ?"
                    " AND (expires IS NULL OR expires > ?)",
                    (key, now),
                ).fetchall()
            )
        if not rows:
            raise KVNotFoundError(
                f"no app-data item {key!r}", hint="it was never saved, deleted or has expired"
            )
        value, fmt, compressed, key_id, meta, tags, created, updated, expires, size = rows[0]
        item = KVItem(
            str(key),
            None,
            str(fmt),
            bool(compressed),
            key_id is not None,
            json.loads(str(meta)),
            tuple(json.loads(str(tags))),
            float(created),
            float(updated),
            None if expires is None else float(expires),
            int(size),
        )
        return item, bytes(value), bool(compressed), None if key_id is None else str(key_id)

    def _plaintext(self, key: str, stored: bytes, compressed: bool, key_id: str | None) -> bytes:
        if key_id is not None:
            if self._keys is None:
                raise KVError(
                    f"{key!r} is encrypted and this store has no credentials",
                    hint="pass credentials=CredentialStore(...) to KVStore",
                )
            try:
                stored = self._keys.unseal(stored, aad=_aad(key))
            except DecryptionError as exc:
                # crypto's own message says neither which item nor what to do about it here.
                raise DecryptionError(
                    f"cannot decrypt app-data item {key!r}: {exc.message}",
                    hint=f"its data key ({key_id}) in the keychain is not the one it was sealed"
                    " with, or the stored value is damaged; restore that key, or delete the item"
                    " (KVStore.delete) and save it again",
                ) from exc
        if compressed:
            try:
                stored = zlib.decompress(stored)
            except zlib.error as exc:
                raise KVFormatError(f"stored value of {key!r} does not decompress") from exc
        return stored

    def exists(self, key: str) -> bool:
        """Return whether a live (unexpired) item has ``key``."""
        self._check_open()
        _check_key(key)
        now = self._clock()
        if self._hot_lookup(key, now)[0] is not None:
            return True
        if self._no_tables:
            return False
        with self._index.read() as cur:
            rows = cur.execute(
                "SELECT 1 FROM kv_items WHERE key = ? AND (expires IS NULL OR expires > ?)",
                (key, now),
            ).fetchall()
        return bool(rows)

    def keys(self, prefix: str = "", *, tag: str | None = None) -> list[str]:
        """Live keys starting with ``prefix`` (and carrying ``tag`` if given), sorted.

        Raises InvalidInputError for a prefix or tag that is not encodable text.
        """
        self._check_open()
        if not isinstance(prefix, str):
            raise wrong_type(
                "prefix", prefix, "a string", hint="pass prefix='' (the default) for every key"
            )
        if tag is not None and not isinstance(tag, str):
            raise wrong_type("tag", tag, "a string", hint="filter by one tag at a time, as text")
        _check_utf8("the prefix", prefix)
        if tag is not None:
            _check_utf8("the tag", tag)
        low, high = _prefix_bounds(prefix)
        sql = ["SELECT i.key FROM kv_items i"]
        args: list[Any] = []
        if tag is not None:
            sql.append("JOIN kv_tags t ON t.key = i.key AND t.tag = ?")
            args.append(tag)
        sql.append("WHERE i.key >= ? AND (i.expires IS NULL OR i.expires > ?)")
        args += [low, self._clock()]
        if high is not None:
            sql.append("AND i.key < ?")
            args.append(high)
        sql.append("ORDER BY i.key")
        if self._no_tables:
            return []
        with self._index.read() as cur:
            rows = cur.execute(" ".join(sql), args).fetchall()
        return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]

    def find_by_tag(self, tag: str) -> list[str]:
        """Live keys carrying ``tag``, sorted."""
        self._check_open()
        if not isinstance(tag, str):  # (None listed every key)
            raise wrong_type(
                "tag", tag, "a string", hint="pass one tag as text; keys() lists every key"
            )
        return self.keys(tag=tag)

    def hot_stats(self) -> dict[str, int]:
        """Hot-tier counters: items, bytes, hits, misses."""
        self._check_open()
        with self._lock:
            return self._hot.stats()

    # -- coherence --------------------------------------------------------------------------------

    def _hot_lookup(self, key: str, now: float) -> tuple[_HotEntry | None, int]:
        """The hot tier's entry for ``key`` (None on a miss or with the tier off) and the epoch.

        Takes the index's lock before ours: the coherence check reads the index, and taking ours
        first deadlocked against a caller that holds the index's lock (its own index.write()) and
        calls save, which takes ours.
        """
        if not self._hot.enabled:
            with self._lock:
                return None, self._epoch
        with self._index.read(), self._lock:
            self._sync_with_other_processes()
            return self._hot.get(key, now), self._epoch

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """An index write transaction under both locks; a failed one resets the coherence state.

        _bump_generation and the hot-tier updates run before COMMIT. If the transaction then fails
        (a write error, or COMMIT itself on a full disk), the counters would count a write that was
        rolled back and the next foreign write would pass for ours. Rather than defer every update
        until after COMMIT, forget what we know: the next read re-reads the generation.
        """
        try:
            # The index's lock (held by write() throughout) before ours, as in _hot_lookup. Ours
            # is released just before COMMIT; nothing reads the tier without the index's lock
            # meanwhile, except a read's own fill, which the epoch bumped here refuses.
            with self._index.write() as cur, self._lock:
                # Checked again under the lock close() takes: a write that passed its caller's
                # check before close() must not land (and refill the tier) after close() returned.
                self._check_open()
                self._forget_if_rolled_back()
                yield cur
        except BaseException:
            with self._lock:
                self._clear_hot()
                self._seen_generation = None
                self._seen_token = None
            raise

    def _bump_generation(self, cur: apsw.Cursor) -> None:
        rows: list[Any] = cur.execute(
            "UPDATE kv_state SET value = value + 1 WHERE name = 'generation' RETURNING value - 1"
        ).fetchall()
        before = int(rows[0][0])
        if before != self._seen_generation:
            self._clear_hot()  # another process wrote since we last looked (or we lost track)
        self._seen_generation = before + 1
        self._epoch += 1

    def _note_rollback(self) -> None:
        """Index rollback listener (runs under the index lock: only a flag, no lock of ours).

        A save released into a caller's enclosing ``index.write()`` put its value in the hot tier
        and counted its generation; if that transaction then rolls back, both are wrong: the
        rolled-back value would be served, and the next foreign write would pass for ours."""
        self._rolled_back = True

    def _forget_if_rolled_back(self) -> None:
        """(lock held) After a rollback anywhere on the index, trust nothing cached."""
        if self._rolled_back:
            self._rolled_back = False
            self._clear_hot()
            self._seen_generation = None
            self._seen_token = None

    def _clear_hot(self) -> None:
        """Empty the hot tier (lock held); reads already in flight must not refill it."""
        self._hot.clear()
        self._epoch += 1

    def _sync_with_other_processes(self) -> None:
        """(both locks held, the index's first) Empty the tier if anyone else wrote kv data.

        "Anyone else" is another connection (data_version moves when it commits) or another
        KVStore on our own Index: its writes go through our connection, where data_version never
        moves, so its saves and deletes were served stale from our tier until hot_ttl. The
        connection's total_changes counts those (uncommitted ones too, as a reader in the same
        transaction sees them); it also counts our own writes, which cost one SELECT here.
        """
        self._forget_if_rolled_back()
        with self._index.read() as cur:
            version = int(cur.execute("PRAGMA data_version").fetchall()[0][0])
            token = (version, int(cur.connection.total_changes()))
            if token == self._seen_token:
                return
            gen = int(
                cur.execute("SELECT value FROM kv_state WHERE name = 'generation'").fetchall()[0][0]
            )
        if gen != self._seen_generation:
            self._clear_hot()
            self._seen_generation = gen
        self._seen_token = token

    # -- data keys --------------------------------------------------------------------------------

    @staticmethod
    def _current_kid(cur: apsw.Cursor) -> str | None:
        rows = cur.execute("SELECT kid FROM kv_keys WHERE state = 'current'").fetchall()
        return str(rows[0][0]) if rows else None

    def _require_keys(self) -> DataKeys:
        if self._keys is None:
            raise KVError(
                "this store has no credentials for data keys",
                hint="pass credentials=CredentialStore(...) to KVStore",
            )
        return self._keys

    def _create_key(self, *, rotate: bool) -> str:
        """Add a data key (pending -> keychain -> current) and return the current key's id."""
        for _attempt in range(3):
            current = self._try_create_key(rotate=rotate)
            if current is not None:
                return current
        raise KVError(  # pragma: no cover - three keychain writes each outwaited the stale bound
            "cannot create a data key: another process kept taking it for a crash's leftover",
            hint="unlock the keychain (answer its prompt), then try again",
        )

    def _try_create_key(self, *, rotate: bool) -> str | None:
        """One attempt of :meth:`_create_key`; None if the new key was retired meanwhile."""
        keys = self._require_keys()
        kid = new_key_id()
        with self._index.write() as cur:
            if not rotate and (current := self._current_kid(cur)) is not None:
                return current
            cur.execute("INSERT INTO kv_keys VALUES (?, 'pending', ?)", (kid, self._clock()))
        keys.create(kid)  # outside any transaction: the keychain may write the index itself
        with self._index.write() as cur:
            pending = cur.execute(
                "SELECT 1 FROM kv_keys WHERE kid = ? AND state = 'pending'", (kid,)
            ).fetchall()
            current = self._current_kid(cur)
            if not pending:
                # The keychain write outwaited STALE_PENDING_KEY_S (a prompt left open over a
                # night): another process's recover_keys retired the row as a crash's leftover
                # and may have deleted the key already. Made current, everything sealed with it
                # could never be read again. Its row is put back as retired (the keychain item
                # may have landed after that process deleted it) and the caller starts over.
                cur.execute("INSERT OR IGNORE INTO kv_keys VALUES (?, 'retired', ?)", (kid, 0.0))
                current = None
            elif current is not None and not rotate:
                # Another process created the first key meanwhile: use it, retire ours.
                cur.execute("UPDATE kv_keys SET state = 'retired' WHERE kid = ?", (kid,))
            else:
                if current is not None:
                    cur.execute("UPDATE kv_keys SET state = 'retiring' WHERE kid = ?", (current,))
                cur.execute("UPDATE kv_keys SET state = 'current' WHERE kid = ?", (kid,))
                current = kid
        self._delete_retired()
        return current

    def _load_current_key(self) -> str | None:
        """Id of the current data key, its key now in memory (None before the first key).

        Raises KeyNotFoundError if the keychain lacks the key that is current.
        """
        kid = self.current_key_id()
        while kid is not None:
            try:
                self._require_keys().get(kid)
                return kid
            except KeyNotFoundError:
                # Another process's rotation may have made a new key current and retired this
                # one since we read the id (a save raised KeyNotFoundError so): take the new one.
                # Only while the current key changes, each change a rotation done elsewhere.
                latest = self.current_key_id()
                if latest == kid:
                    raise
                kid = latest
        return None

    def current_key_id(self) -> str | None:
        """Id of the data key new encrypted items use (None before the first one)."""
        self._check_open()
        if self._no_tables:
            return None
        with self._index.read() as cur:
            return self._current_kid(cur)

    def rotate_data_key(self) -> RotationReport:
        """Make a new data key current, re-seal every encrypted item, then retire unused keys.

        Crash-safe: an old key is deleted only after no item uses it; running this again
        finishes an interrupted rotation. Items whose key the keychain does not have (a home
        copied to another computer) are left as they are and counted in the report's
        ``unreadable`` and ``missing_keys``; their key stays listed, and once it is restored the
        next rotation re-seals them. New saves use the new key either way. A rotation another
        process's overtook names the key current at its end in ``overtaken_by``.
        """
        self._check_open()
        self._check_writable("rotate the app-data key")
        self.recover_keys()
        kid = self._create_key(rotate=True)
        count, looked_up, damaged = self._reseal_all(kid)
        retired = self._retire_unused()
        missing, unreadable = self._still_used(looked_up)
        if missing:
            log.warning(
                "app-data key rotation left %d items sealed with data keys missing from the "
                "keychain (%s): they stay on disk and are re-sealed once the keys are restored",
                unreadable,
                ", ".join(missing),
            )
        if damaged:
            log.warning(
                "app-data key rotation skipped %d items that do not decrypt (damaged, or sealed "
                "with another key than the keychain's): they keep their old data key",
                len(damaged),
            )
        # Read last: a rotation elsewhere that switched keys at any point up to here overtook
        # ours (its key is current, ours retiring or gone), and reporting ours as the new key
        # sent an app looking for a key that may be deleted.
        current = self.current_key_id()
        overtaken_by = None if current == kid else current
        log.info(
            "rotated app-data key to %s%s: %d items re-sealed, retired %s",
            kid,
            f" (overtaken by another rotation's {overtaken_by})" if overtaken_by else "",
            count,
            retired,
        )
        damaged_keys = tuple(sorted(damaged))
        return RotationReport(kid, count, retired, unreadable, missing, damaged_keys, overtaken_by)

    def _still_used(self, kids: set[str]) -> tuple[tuple[str, ...], int]:
        """Of ``kids`` (not found in the keychain), those items still use, and how many items.

        A key another process retired while the rotation read its items (its own rotation
        re-sealed them, or a purge, delete or save removed the last one) was not found either,
        rightly: no item uses it. Reported as missing, it sent people looking for a key that was
        gone by design. (A retiring key never gains items, so none used now is none for good.)
        """
        if not kids:
            return (), 0
        with self._index.read() as cur:
            rows = cur.execute(
                "SELECT key_id, count(*) FROM kv_items"
                f" WHERE key_id IN ({','.join('?' * len(kids))}) GROUP BY key_id",
                sorted(kids),
            ).fetchall()
        return tuple(sorted(str(r[0]) for r in rows)), sum(int(r[1]) for r in rows)

    def _reseal_all(self, kid: str) -> tuple[int, set[str], set[str]]:
        """Re-seal every item under ``kid``; return how many, missing key ids, damaged items."""
        keys = self._require_keys()
        count = 0
        missing: set[str] = set()
        damaged: set[str] = set()
        # Paged by key: each batch starts after the last key the previous one saw, so a skipped
        # item (damaged, or its key missing) is passed once and needs no variable of its own.
        # (A `key NOT IN (?, ...)` list of the damaged ones failed past SQLite's variable limit,
        # 32,766.) Items before `after` need no second look: they were re-sealed, skipped, or
        # changed by a save, which seals with the current key, `kid`, since before this started.
        after = ""
        while True:
            # One variable per data key id (a handful), not per item.
            skip = sorted(missing | {kid})
            with self._index.read() as cur:
                rows = cur.execute(
                    "SELECT key, value, key_id FROM kv_items WHERE key > ? AND key_id IS NOT NULL"
                    f" AND key_id NOT IN ({','.join('?' * len(skip))}) ORDER BY key LIMIT ?",
                    (after, *skip, ROTATION_BATCH),
                ).fetchall()
            if not rows:
                return count, missing, damaged
            after = str(rows[-1][0])
            resealed = []
            for k, v, old_kid in rows:
                try:
                    resealed.append(
                        (keys.reseal(bytes(v), kid, aad=_aad(str(k))), kid, str(k), bytes(v))
                    )
                except KeyNotFoundError:
                    # Not in this keychain (a copied home), or retired by another process after
                    # our read, with no item left using it (see _still_used): skipped either way.
                    missing.add(str(old_kid))
                except DecryptionError:
                    # One damaged item made every rotation fail here, half way, for good: its
                    # old key could never be retired. It is skipped (and keeps that key).
                    damaged.add(str(k))
            with self._write() as cur:
                if self._current_kid(cur) != kid:
                    # A newer rotation took over; it re-seals the rest.
                    return count, missing, damaged
                for new_value, new_kid, key, old_value in resealed:
                    # Compare-and-swap: a concurrent save already used the current key.
                    changed = cur.execute(
                        "UPDATE kv_items SET value = ?, key_id = ? WHERE key = ? AND value = ?"
                        " RETURNING key",
                        (new_value, new_kid, key, old_value),
                    ).fetchall()
                    count += len(changed)
                self._bump_generation(cur)

    def _retire_unused(self) -> tuple[str, ...]:
        with self._index.write() as cur:
            retiring = self._mark_unused_retired(cur)
        return tuple(sorted(set(retiring) | set(self._delete_retired())))

    @staticmethod
    def _mark_unused_retired(cur: apsw.Cursor) -> list[str]:
        """(in a write) Mark 'retiring' keys no item uses 'retired'; return their ids.

        A retiring key never gains items (saves and re-seals use the current one), so once none
        is left the key can go: _delete_retired then deletes it from the keychain and its row.
        """
        return [
            str(r[0])
            for r in cur.execute(
                "UPDATE kv_keys SET state = 'retired' WHERE state = 'retiring' AND NOT EXISTS"
                " (SELECT 1 FROM kv_items i WHERE i.key_id = kv_keys.kid) RETURNING kid"
            ).fetchall()
        ]

    @classmethod
    def _retire_if_unused(cls, cur: apsw.Cursor, kids: list[Any]) -> bool:
        """(in a write) After items sealed with ``kids`` went (deleted, purged, saved over):
        mark the retiring keys no item uses now 'retired'; whether any was.

        Only rotation retired keys before: one whose last items (skipped by it as damaged or
        missing their key, or left by an interrupted one) were then removed stayed in the
        keychain until the next rotation, for nothing, and with it the means to decrypt what
        the index file's free pages still hold of those items (SQLite has no secure_delete on).
        """
        sealed = sorted({kid for kid in kids if kid is not None})
        if not sealed:
            return False
        # A plain look first: nearly always the items went with the current key, and the UPDATE
        # ... RETURNING below opens a statement journal (tens of us) on every encrypted save.
        marks = ", ".join("?" * len(sealed))
        retiring = cur.execute(
            f"SELECT 1 FROM kv_keys WHERE state = 'retiring' AND kid IN ({marks}) LIMIT 1", sealed
        ).fetchall()
        return bool(retiring) and bool(cls._mark_unused_retired(cur))

    def _delete_retired_after(self, action: str) -> None:
        """Delete from the keychain the keys ``action`` (a save or delete) just retired.

        The write stands whatever happens here: a failure is logged, and the key (its row
        'retired') is deleted by the next purge, rotation or recover_keys(). A store without
        credentials leaves it to one with them, as its purge does.
        """
        if self._keys is None:
            return
        try:
            self._delete_retired()
        except LocalStoreError as exc:
            log.warning(
                "%s retired an old app-data key, but deleting it from the keychain failed (%s);"
                " the next purge, key rotation or recover_keys() deletes it",
                action,
                exc,
            )

    def _delete_retired(self) -> list[str]:
        """Delete 'retired' keys from the keychain, then their rows (idempotent after a crash)."""
        with self._index.read() as cur:
            kids = [
                str(r[0])
                for r in cur.execute("SELECT kid FROM kv_keys WHERE state = 'retired'").fetchall()
            ]
        if kids:
            keys = self._require_keys()
            for kid in kids:
                keys.delete(kid)
                with self._index.write() as cur:
                    cur.execute("DELETE FROM kv_keys WHERE kid = ? AND state = 'retired'", (kid,))
        return kids

    def recover_keys(self) -> None:
        """Finish what a crash interrupted: drop stale pending keys, delete retired ones."""
        self._check_open()
        if self._keys is None:
            return
        self._check_writable("recover app-data keys")
        with self._index.write() as cur:
            cur.execute(
                "UPDATE kv_keys SET state = 'retired' WHERE state = 'pending' AND created < ?",
                (self._clock() - STALE_PENDING_KEY_S,),
            )
        self._delete_retired()

    # -- lifecycle --------------------------------------------------------------------------------

    def start_purger(self, *, interval: float = DEFAULT_PURGE_INTERVAL_S) -> Purger:
        """Start (once) a background thread that purges expired items every ``interval`` s."""
        with self._lock:
            # Under the lock close() sets the flag under: a purger started after close() took
            # the last one would run for a closed store.
            self._check_open()
            # (It retried its refused purge every interval, for ever, logging each failure.)
            self._check_writable("purge expired app data")
            if self._purger is None:
                self._purger = Purger(self, interval=interval)
                # A store dropped without close() stops its purger when collected (the purger
                # holds it only weakly): an app making a store per window must not leak threads.
                self._purger_finalizer = weakref.finalize(self, self._purger.stop)
                self._purger.start()
            return self._purger

    def __enter__(self) -> KVStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close for good: stop the purger (if started) and drop the hot tier. Idempotent.

        Waits for a purge round under way, except when called inside the caller's own
        ``index.write()`` or ``index.read()`` (the round may wait for that transaction): the
        purger's thread then ends once the transaction does.

        Every later operation raises StoreClosedError (before, the store kept working: a save
        refilled the tier with no purger left). A save or delete already under way in another
        thread either took the store's lock first, and goes through, or raises StoreClosedError;
        none refills the tier afterwards. The index stays open (it is the caller's) and the data
        stays in it: a new KVStore reads it.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            purger, self._purger = self._purger, None
            finalizer, self._purger_finalizer = self._purger_finalizer, None
            self._clear_hot()
        if finalizer is not None:
            finalizer.detach()
        # The index outlives us: stop its callbacks now rather than at collection.
        self._listener_finalizer()
        if purger is not None:
            purger.stop()
            # Not joined from inside the app's own index.write() (or read()): a round waiting
            # for the index's lock then waited for this thread, which waited for it: a hang
            # for good. Such a round gets the lock when the app's transaction ends, finds the
            # store closed and ends the thread (state STOPPED) without purging.
            if not self._index.lock_held:
                purger.join()


class PurgerState(enum.Enum):
    """Lifecycle of a :class:`Purger`."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Purger:
    """Background thread deleting expired app-data items every ``interval`` seconds.

    Lifecycle: ``start()`` once, ``stop()`` then ``join()``; ``purge_once()`` does one round
    synchronously (tests call it instead of waiting). It holds its store weakly: once the store
    is closed or garbage-collected the thread exits and ``purge_once()`` raises StoreClosedError.
    A failed round is logged as the index maintainer logs one: the first of a streak at once,
    then at most every 10 minutes, and the round that works again says so.
    """

    def __init__(self, kv: KVStore, *, interval: float = DEFAULT_PURGE_INTERVAL_S) -> None:
        # NaN makes every wait return at once (a busy loop), and a wait past TIMEOUT_MAX (inf)
        # raises OverflowError inside the thread, which then dies unseen.
        usable = isinstance(interval, numbers.Real) and not isinstance(interval, bool)
        if not (usable and 0 < interval <= threading.TIMEOUT_MAX):
            raise InvalidInputError(
                f"the purge interval must be a positive number of seconds, not {interval!r:.40}",
                hint=f"leave it out for the default ({DEFAULT_PURGE_INTERVAL_S:g} s)",
            )
        # Weak: the thread (a GC root) held the store, so a store dropped without close() was
        # never collected, and its purger ran for the life of the process.
        self._kv = weakref.ref(kv)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rounds = 0
        self._round_done = threading.Condition()
        self._streak = FailureStreak()
        self.state = PurgerState.NEW
        self.purged = 0

    def start(self) -> None:
        """Start the thread. Raises KVError if already started."""
        if self.state is not PurgerState.NEW:
            raise KVError(f"cannot start a purger that is {self.state.value}")
        self._thread = threading.Thread(target=self._run, name="localstore-kv-purger", daemon=True)
        self.state = PurgerState.RUNNING
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to exit after its current round."""
        if self.state is PurgerState.RUNNING:
            self.state = PurgerState.STOPPING
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to exit."""
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self.state = PurgerState.STOPPED

    def purge_once(self) -> int:
        """Purge synchronously; return how many items were deleted.

        Raises StoreClosedError once the store is closed or gone (and what purge_expired raises).
        """
        kv = self._kv()
        if kv is None:
            raise StoreClosedError(
                "the app-data store this purger served was garbage-collected",
                hint="keep a reference to the KVStore while you use its purger",
            )
        n = kv.purge_expired()
        self.purged += n
        return n

    def wait_rounds(self, n: int, timeout: float) -> bool:
        """Block until the thread has finished ``n`` rounds in total; False on timeout."""
        with self._round_done:
            return self._round_done.wait_for(lambda: self._rounds >= n, timeout)

    def _run(self) -> None:
        try:
            self._rounds_until_stopped()
        finally:
            # The thread ends (stopped, or its store closed or gone): say so, rather than
            # leave an app's status page showing "running" for a purger that no longer runs.
            self.state = PurgerState.STOPPED

    def _rounds_until_stopped(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.purge_once()
            except StoreClosedError:
                return
            except LocalStoreError as exc:  # a busy or full disk: log it and try next round
                self._failed(exc, expected=True)
            except Exception as exc:  # noqa: BLE001 (why: below)
                # Anything else (a bug, an app's clock that raised) ended the thread silently,
                # its state left RUNNING, and expired items then piled up for the life of the
                # process. Logged with its traceback; the next round tries again.
                self._failed(exc, expected=False)
            else:
                failed = self._streak.succeeded()
                if failed:
                    log.warning("app-data purge works again after %d failed round(s)", failed)
            with self._round_done:
                self._rounds += 1
                self._round_done.notify_all()

    def _failed(self, exc: Exception, *, expected: bool) -> None:
        # Rate-limited: a WARNING every round (each minute) for as long as a disk stayed full
        # buried everything else in an app's log; the streak's length tells it has gone on.
        if not self._streak.failed():
            return
        log.log(
            logging.WARNING if expected else logging.ERROR,
            "app-data purge failed%s (%d round(s) in a row: %s); expired items stay until a "
            "round succeeds (retrying every %g s)",
            "" if expected else " unexpectedly",
            self._streak.count,
            exc,
            self._interval,
            exc_info=not expected,
        )
