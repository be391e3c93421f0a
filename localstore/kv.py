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

``KVStore`` is built in layers, one private module each, every class building on the one before:
``_kv_core`` (construction, the tables, closing, the hot tier's coherence with the index), then
``_kv_keys`` (data keys, rotation, retiring). The tier itself is in ``_kv_hot``, value codecs and
argument checks in ``_kv_codec``, the :class:`Purger` thread in ``_kv_purger``. This module holds
``KVStore``'s reads and writes and re-exports the names callers import from here.
"""

from __future__ import annotations

import copy
import json
import time
import weakref
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import apsw

from localstore._kv_codec import MAX_KEY_CHARS as MAX_KEY_CHARS
from localstore._kv_codec import MAX_TAG_CHARS as MAX_TAG_CHARS
from localstore._kv_codec import (
    _aad,
    _check_key,
    _check_tags,
    _check_utf8,
    _decode,
    _encode,
    _finite,
    _metadata_json,
    _prefix_bounds,
    _too_large,
)
from localstore._kv_core import DEFAULT_KV_HOT_TTL_S
from localstore._kv_core import KV_MIGRATIONS as KV_MIGRATIONS
from localstore._kv_keys import ROTATION_BATCH as ROTATION_BATCH
from localstore._kv_keys import STALE_PENDING_KEY_S as STALE_PENDING_KEY_S
from localstore._kv_keys import RotationReport, _KVKeys
from localstore._kv_purger import DEFAULT_PURGE_INTERVAL_S, Purger
from localstore._kv_purger import PurgerState as PurgerState
from localstore.crypto import envelope_size
from localstore.errors import (
    DecryptionError,
    InvalidInputError,
    KeyNotFoundError,
    KVError,
    KVFormatError,
    KVNotFoundError,
    wrong_type,
)
from localstore.store import _flag_arg

__all__ = [
    "DEFAULT_KV_HOT_TTL_S",
    "FORMATS",
    "KVItem",
    "KVNotFoundError",
    "KVStore",
    "Purger",
    "RotationReport",
]

FORMATS = ("json", "yaml", "binary")
PURGE_BATCH = 500
# How long a save follows the current data key while other processes keep rotating it under
# each try (a rotation is seconds of keychain and re-seal work; see _write_with_current_key).
SAVE_KEY_CHASE_S = 5.0
_COMPRESS_LEVEL = 6
_MISSING: Any = object()


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


def _key_kept_changing(key: str, tried: list[str]) -> KVError:
    return KVError(
        f"cannot save {key!r}: another process changed the data key {len(tried)} times while"
        f" this save tried to write it (for up to {SAVE_KEY_CHASE_S:g} s); nothing was saved",
        hint="stop whatever rotates the app-data key in a loop (rotate_data_key), then save again",
    )


def _format_arg(format: Any) -> None:
    """Raise InvalidInputError unless ``format`` is one of FORMATS."""
    if not isinstance(format, str) or format not in FORMATS:
        raise InvalidInputError(
            f"format must be one of {', '.join(FORMATS)}, not {format!r}",
            hint="leave format out for JSON; 'binary' takes bytes",
        )


def _compressed(plain: bytes) -> tuple[bytes, bool]:
    """What to store for ``plain`` asked to be compressed, and whether it is."""
    packed = zlib.compress(plain, _COMPRESS_LEVEL)
    # Keep it raw when compression does not pay (already-compressed or tiny values).
    if len(packed) < len(plain):
        return packed, True
    return plain, False


class _StaleKey(Exception):
    """Internal: no current data key yet, or not the one loaded; retry outside the write."""


def _upsert_row(cur: apsw.Cursor, key: str, row: tuple[Any, ...], key_id: str | None) -> float:
    """(in a write) Insert or replace ``key``'s row; return its created time.

    Raises LimitExceededError for a row over SQLite's length limit.
    """
    stored, fmt, compressed, meta_json, tags_json, now, expires, size = row
    try:
        rows: list[Any] = cur.execute(
            "INSERT INTO kv_items (key, value, format, compressed, key_id, metadata, tags,"
            " created, updated, expires, size) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value, format=excluded.format,"
            # An expired row not yet purged is gone for every read: this is a new item.
            " created=CASE WHEN kv_items.expires <= excluded.updated"
            " THEN excluded.created ELSE kv_items.created END,"
            " compressed=excluded.compressed, key_id=excluded.key_id,"
            " metadata=excluded.metadata, tags=excluded.tags, updated=excluded.updated,"
            " expires=excluded.expires, size=excluded.size RETURNING created",
            (key, stored, fmt, compressed, key_id, meta_json, tags_json, now, now, expires, size),
        ).fetchall()
    except apsw.TooBigError as exc:
        # Raised inside our write, so the index's write() would pass it on raw.
        limit = cur.connection.limit(apsw.SQLITE_LIMIT_LENGTH)
        raise _too_large(key, len(stored), len(meta_json), limit) from exc
    return float(rows[0][0])


class KVStore(_KVKeys):
    """App data in the index, with an LRU hot tier in front (``hot_items=0`` or ``hot_ttl=0`` turns
    it off: nothing is kept in memory).

    :meth:`close` is final: every operation after it raises StoreClosedError.

    The tier's bounds: ``hot_items`` / ``hot_bytes`` if given, else ``settings.kv_hot_items`` /
    ``kv_hot_bytes`` (config.yaml, ``LOCALSTORE_KV_HOT_*``) if settings are given, else the
    defaults.
    """

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
        _format_arg(format)
        # ("no" was taken as true: compressed, or refused for lack of credentials.)
        _flag_arg("compress", compress)
        _flag_arg("encrypt", encrypt)
        tag_tuple = _check_tags(tags)
        meta_json = _metadata_json(metadata)
        expires = self._expiry(ttl, expires_at)
        plain = _encode(key, value, format)
        stored, compressed = _compressed(plain) if compress else (plain, False)
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
        with self._write() as cur:
            key_id = None
            if encrypt:
                stored, key_id = self._seal_current(cur, key, row[0], row[3], loaded_kid)
                row = (stored, *row[1:])
            # (A primary-key lookup: the upsert's RETURNING sees only the new row.)
            replaced = cur.execute("SELECT key_id FROM kv_items WHERE key = ?", (key,)).fetchall()
            created = _upsert_row(cur, key, row, key_id)
            cur.execute("DELETE FROM kv_tags WHERE key = ?", (key,))
            cur.executemany("INSERT INTO kv_tags VALUES (?, ?)", [(t, key) for t in tags])
            retired = self._retire_if_unused(cur, [r[0] for r in replaced])
            self._bump_generation(cur)
            # Cached in the same locked region as the write: a put after releasing the lock could
            # land after another thread's newer save or delete of this key and resurrect our value.
            self._hot.put(key, replace(item, created=created), plain, row[5])
        return retired

    def _seal_current(
        self, cur: apsw.Cursor, key: str, stored: bytes, meta_json: str, loaded_kid: str | None
    ) -> tuple[bytes, str]:
        """(in the write) ``stored`` sealed with the current key, which must be ``loaded_kid``,
        and that key's id.

        Raises _StaleKey (no current key yet, or another one), LimitExceededError.
        """
        assert self._keys is not None
        # Read the current key inside the transaction: a rotation that commits before us
        # is seen, one that starts after us re-seals this row.
        key_id = self._current_kid(cur)
        if key_id is None or key_id != loaded_kid:
            raise _StaleKey  # none yet, or another process rotated since we loaded it
        # Checked before sealing: AES-GCM refuses 2**31 bytes or more with a raw OverflowError,
        # where the unencrypted path gets SQLite's TooBigError (in _upsert_row). SQLite's limit
        # is never above 2**31 - 1 (its hard maximum), so an envelope within it is within
        # AES-GCM's bound too; and a value SQLite would refuse is not encrypted first.
        limit = cur.connection.limit(apsw.SQLITE_LIMIT_LENGTH)
        sealed = envelope_size(len(stored), key_id)
        if sealed > limit:
            raise _too_large(key, sealed, len(meta_json), limit)
        return self._keys.seal(key_id, stored, aad=_aad(key)), key_id

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
