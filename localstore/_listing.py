"""Listing rows, and the cache that answers a full listing without reading 10,000 index rows.

A full listing (``store.list()`` with no folder or tag) costs 30-40 ms at 10,000 blueprints, most
of it building the rows in Python (the plain apsw fetch of the same columns alone takes 26-28 ms
on the benchmark VM). A desktop app lists everything again after every change it hears of, so
the store keeps the last full listing and brings it up to date instead:

* **Changes by this connection** (this store's saves, the watcher's ingests, the sync engine's
  pulls: one index connection per store) are recorded by TEMP triggers on ``blueprints``. They
  exist only in this connection and write to its temp database, so they see exactly the rows
  this connection changed and roll back with the statement, savepoint or transaction that
  changed them. The next listing re-reads those rows only (``WHERE id IN (...)``).
* **Changes by other connections** (another process, another handle on the home) are told by
  the ``blueprints_gen`` counter, which persistent triggers (index schema v3) bump for every row
  change of every connection: when it moved by more than this connection's own count, someone
  else changed blueprints, and the listing is read again in full. ``PRAGMA data_version`` would
  not do: it also moves for commits that touch no blueprint (the maintainer's FTS merges every
  few saves, sync state, app data), and those keep the listing.

The cache is armed by the first full listing (an app that never lists everything pays nothing),
holds about 500 bytes per blueprint, and is consulted only outside this thread's own write
transaction (inside it, a read sees uncommitted rows). Everything runs under the index lock.
"""

from __future__ import annotations

import builtins
import gc
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from operator import attrgetter
from typing import Any

from localstore.blueprint import BlueprintInfo

__all__ = ["INFO_COLUMNS", "ListingCache", "collector_paused", "infos"]

INFO_COLUMNS = (
    "b.id, b.path, b.name, b.description, b.tags, b.author, b.version, b.created, b.modified, "
    "b.rev, b.content_hash, b.valid AND b.flagged IS NULL, b.yaml_size"
)

# Past this many changed blueprints (an import, a first download) reading the listing again in
# full is cheaper than patching it.
MAX_PATCH = 2000

# The TEMP objects of one connection (created when the cache is armed). A blueprint's id can
# change (a duplicate copy is given a new one), so an UPDATE records both.
_ARM_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS listing_changed (id TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TEMP TABLE IF NOT EXISTS listing_own (n INTEGER NOT NULL)",
    "DELETE FROM temp.listing_own",
    "INSERT INTO temp.listing_own VALUES (0)",
    "CREATE TEMP TRIGGER IF NOT EXISTS listing_insert AFTER INSERT ON main.blueprints BEGIN"
    " INSERT OR IGNORE INTO temp.listing_changed VALUES (NEW.id);"
    " UPDATE temp.listing_own SET n = n + 1; END",
    "CREATE TEMP TRIGGER IF NOT EXISTS listing_update AFTER UPDATE ON main.blueprints BEGIN"
    " INSERT OR IGNORE INTO temp.listing_changed VALUES (OLD.id);"
    " INSERT OR IGNORE INTO temp.listing_changed VALUES (NEW.id);"
    " UPDATE temp.listing_own SET n = n + 1; END",
    "CREATE TEMP TRIGGER IF NOT EXISTS listing_delete AFTER DELETE ON main.blueprints BEGIN"
    " INSERT OR IGNORE INTO temp.listing_changed VALUES (OLD.id);"
    " UPDATE temp.listing_own SET n = n + 1; END",
)
_STATE_SQL = (
    "SELECT (SELECT value FROM main.counters WHERE name = 'blueprints_gen'),"
    " (SELECT n FROM temp.listing_own)"
)
_FULL_SQL = f"SELECT {INFO_COLUMNS} FROM blueprints b WHERE b.deleted = 0 ORDER BY b.path"

_path = attrgetter("path")
# The listing's sort keys, by the name store.list() takes (SORT_COLUMNS): the same columns, all
# TEXT NOT NULL, whose SQLite BINARY order (UTF-8 bytes) is Python's code point order.
_KEYS = {name: attrgetter(name) for name in ("path", "name", "modified", "created")}


class ListingCache:
    """The full listing of one index connection, kept up to date (see the module docstring)."""

    def __init__(self) -> None:
        self._armed = False
        # Sorted full listings by (sort, descending); ("path", False) is always there when
        # loaded. None: nothing loaded (or dropped after a failure).
        self._views: dict[tuple[str, bool], builtins.list[BlueprintInfo]] | None = None
        self._gen = 0
        self._own = 0
        self.loads = 0  # full reads so far (what the cache is there to avoid)

    def lookup(
        self, cur: Any, sort: str, descending: bool, load: bool
    ) -> builtins.list[BlueprintInfo] | None:
        """The full listing in this order, or None when the caller should query instead.

        ``load``: read it in full if it is not cached (a full listing); a paged one only uses it
        when it is already there. The list returned is the cache's own: slice it, never change it.
        Must run under the index lock with no write transaction open on this connection.
        """
        try:
            if self._views is not None and not self._refresh(cur):
                self._views = None
            if self._views is None:
                if not load:
                    return None
                self._load(cur)
            assert self._views is not None
            view = self._views.get((sort, descending))
            if view is None:
                view = self._views[(sort, descending)] = _sorted(
                    self._views[("path", False)], sort, descending
                )
            return view
        except BaseException:
            # Whatever failed half-way (an I/O error, an interrupt), the next call starts over.
            self._views = None
            raise

    # -- keeping it true ---------------------------------------------------------------------------

    def _state(self, cur: Any) -> tuple[int, int]:
        gen, own = cur.execute(_STATE_SQL).fetchall()[0]
        return int(gen), int(own)

    def _load(self, cur: Any) -> None:
        if not self._armed:
            for sql in _ARM_SQL:
                cur.execute(sql)
            self._armed = True
        # Read the counters before the rows: a change committed in between is then seen again by
        # the next refresh (one re-read too many, never one too few).
        self._gen, self._own = self._state(cur)
        cur.execute("DELETE FROM temp.listing_changed")
        self.loads += 1
        with collector_paused(True):
            rows = infos(cur.execute(_FULL_SQL).fetchall())
        self._views = {("path", False): rows}

    def _refresh(self, cur: Any) -> bool:
        """Bring the cached listing up to date; False if it must be read again in full."""
        gen, own = self._state(cur)
        if gen - self._gen != own - self._own:
            return False  # another connection changed blueprints
        self._gen = gen
        if own == self._own:
            return True
        self._own = own
        changed = [str(r[0]) for r in cur.execute("SELECT id FROM temp.listing_changed")]
        cur.execute("DELETE FROM temp.listing_changed")
        if len(changed) > MAX_PATCH:
            return False
        self._patch(cur, changed)
        return True

    def _patch(self, cur: Any, changed: Sequence[str]) -> None:
        assert self._views is not None
        fresh: dict[str, BlueprintInfo] = {}
        for start in range(0, len(changed), 500):
            chunk = changed[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for info in infos(
                cur.execute(
                    f"SELECT {INFO_COLUMNS} FROM blueprints b "
                    f"WHERE b.deleted = 0 AND b.id IN ({marks})",
                    chunk,
                ).fetchall()
            ):
                fresh[info.id] = info
        gone = set(changed)
        for key, view in self._views.items():
            kept = [info for info in view if info.id not in gone]
            kept.extend(fresh.values())
            # Mostly in order already: the sort only merges the few new rows in (timsort).
            self._views[key] = _sorted(kept, *key)


def _sorted(
    rows: Iterable[BlueprintInfo], sort: str, descending: bool
) -> builtins.list[BlueprintInfo]:
    """``rows`` in store.list()'s order: by ``sort``, then by path ascending (paths are unique)."""
    out = sorted(rows, key=_path, reverse=descending and sort == "path")
    if sort != "path":
        out.sort(key=_KEYS[sort], reverse=descending)  # (stable: ties keep the path order)
    return out


@contextmanager
def collector_paused(pause: bool) -> Iterator[None]:
    """Pause the cyclic garbage collector while a large listing is built.

    A listing of 10,000 allocates about 150,000 objects, none in a cycle; each 700 allocations
    start a collection, and the older generations' collections walk every object the process
    holds (a tenth of listing 10,000). Reference counting still frees everything; the collector
    is re-enabled only if it was on (another thread may have paused it too)."""
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def infos(rows: Iterable[Sequence[Any]]) -> builtins.list[BlueprintInfo]:
    """Build listing rows fast: tag lists repeat across rows, so each distinct one is decoded once,
    and each row is made by ``tuple.__new__`` (the named tuple's own ``__new__`` is a Python call)."""
    tag_cache: dict[str, tuple[str, ...]] = {}
    make = tuple.__new__
    cls = BlueprintInfo
    out: builtins.list[BlueprintInfo] = []
    append = out.append
    for r in rows:
        tags = tag_cache.get(r[4])
        if tags is None:
            tags = tag_cache[r[4]] = tuple(json.loads(r[4]))
        append(
            make(
                cls,
                (
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    tags,
                    r[5],
                    r[6],
                    r[7],
                    r[8],
                    r[9],
                    r[10],
                    r[11] == 1,
                    r[12],
                ),
            )
        )
    return out
