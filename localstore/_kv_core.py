"""The lowest layer of :class:`~localstore.kv.KVStore`: construction and its arguments, the app-data
tables, closing, and the hot tier's coherence with the index (locks, generation counter, rollbacks).

``KVStore`` is built in layers, each class building on the one before: ``_KVCore`` here, then
``localstore._kv_keys._KVKeys`` (data keys and their rotation), then ``KVStore`` itself (reads and
writes) in ``localstore.kv``.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import apsw

from localstore._kv_hot import _HotEntry, _HotTier
from localstore.config import DEFAULT_KV_HOT_BYTES, DEFAULT_KV_HOT_ITEMS, Settings, settings_arg
from localstore.crypto import DataKeys, SecretStore
from localstore.errors import InvalidInputError, StoreClosedError, methods_arg, wrong_type
from localstore.index import Index
from localstore.store import _count_arg

if TYPE_CHECKING:
    from localstore._kv_purger import Purger

DEFAULT_KV_HOT_TTL_S = 60.0

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
    if credentials is not None:
        methods_arg(
            "credentials",
            credentials,
            ("get", "set", "delete"),
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


class _KVCore:
    """A KVStore's state, closing and hot-tier coherence (see ``localstore.kv.KVStore``)."""

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

    # -- closing ----------------------------------------------------------------------------------

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
