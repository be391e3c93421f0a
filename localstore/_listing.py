"""Listing rows, and the cache that answers a full listing without reading 10,000 index rows.

A full listing (``store.list()`` with no folder or tag) costs 30-40 ms at 10,000 blueprints, most
of it building the rows in Python (the plain apsw fetch of the same columns alone takes 26-28 ms
on the benchmark VM). A desktop app lists everything again after every change it hears of, so
the store keeps the last full listing and brings it up to date instead:

* **Changes by this connection** (this store's saves, the watcher's ingests, the sync engine's
  pulls: one index connection per store) are noted by the connection's update hook
  (``Index.blueprint_changes``: the rowids, including rows a rollback put back, which are simply
  read again). The next listing re-reads those rows only.
* **Changes by other connections** (another process, another handle on the home) are told by the
  ``blueprints_gen`` counter (index schema v3), which every write transaction that changed
  blueprint rows bumps before its commit (``Index.write``): when it moved by more than this
  connection's own such commits, someone else changed blueprints. Each such commit also lists
  the rows it changed in ``blueprint_changes`` under its counter value (schema v7), so those
  rows are re-read too; when the log does not cover every commit since the listing was last
  brought up to date (trimmed by the maintainer, or a commit of more than CHANGED_ROWS_KEPT
  rows), the listing is read again in full. ``PRAGMA data_version`` would not do: it also moves
  for commits that touch no blueprint (the maintainer's FTS merges every few saves, sync state,
  app data), and those keep the listing.

The cache is armed by the first full listing (an app that never lists everything pays nothing),
holds the rows of one listing, and is consulted only outside a write transaction (inside one, a
read sees uncommitted rows). Everything runs under the index lock, in one read transaction (one
snapshot of the index).
"""

from __future__ import annotations

import builtins
import gc
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import apsw

from localstore import index as _index
from localstore._time_key import ODD_TIMES_SQL, time_key
from localstore.blueprint import BlueprintInfo
from localstore.files import StrPath, path_text
from localstore.index import BLUEPRINTS_GEN

if TYPE_CHECKING:
    from localstore.index import Index

__all__ = [
    "INFO_COLUMNS",
    "TIME_SORTS",
    "ListingCache",
    "below",
    "collector_paused",
    "filter_words",
    "infos",
    "one_snapshot",
    "sorts_by_moment",
]

INFO_COLUMNS = (
    "b.id, b.path, b.name, b.description, b.tags, b.author, b.version, b.created, b.modified, "
    "b.rev, b.content_hash, b.valid AND b.flagged IS NULL, b.yaml_size"
)

_FULL_SQL = f"SELECT {INFO_COLUMNS}, b.rid FROM blueprints b WHERE b.deleted = 0 ORDER BY b.path"
_CHANGES_SQL = "SELECT gen, rid FROM blueprint_changes WHERE gen > ?"

_path = attrgetter("path")
# The listing's sort keys, by the name store.list() takes (SORT_COLUMNS): the same columns, all
# TEXT NOT NULL, whose SQLite BINARY order (UTF-8 bytes) is Python's code point order.
_KEYS = {name: attrgetter(name) for name in ("path", "name", "modified", "created")}
# The stamps, by the moment they name where the store holds one not in its own form, as the
# query sorts them then (sorts_by_moment, localstore._time_key); else the text is that order.
TIME_SORTS = ("modified", "created")
_MOMENT_KEYS: dict[str, Callable[[BlueprintInfo], str]] = {
    "modified": lambda info: time_key(info.modified),
    "created": lambda info: time_key(info.created),
}


class ListingCache:
    """The full listing of one index connection, kept up to date (see the module docstring)."""

    def __init__(self, index: Index) -> None:
        self._index = index
        # Sorted full listings by (sort, descending); ("path", False) is always there when
        # loaded. None: nothing loaded (or dropped after a failure).
        self._views: dict[tuple[str, bool], builtins.list[BlueprintInfo]] | None = None
        # Each listed blueprint's id by rowid: the id a changed row had when it was listed.
        self._id_by_rid: dict[int, str] = {}
        self._gen = 0  # blueprints_gen when last brought up to date
        self._own = 0  # this connection's index.blueprint_commits then
        self.loads = 0  # full reads so far (what the cache is there to avoid)

    def lookup(
        self, cur: Any, sort: str, descending: bool, load: bool
    ) -> builtins.list[BlueprintInfo] | None:
        """The full listing in this order, or None when the caller should query instead.

        ``load``: read it in full if it is not cached (a full listing); a paged one only uses it
        when it is already there. The list returned is the cache's own: slice it, never change it.
        Must run under the index lock; with a write transaction open on the connection it
        answers None (what it would read is uncommitted).
        """
        conn = cur.connection
        if conn.txn_state("main") == apsw.SQLITE_TXN_WRITE:
            # A write transaction is open after all, though not by a write() level of this
            # thread: an undo callback runs inside the transaction it undoes, just before its
            # ROLLBACK. What it reads is uncommitted, and the rollback tells the update hook
            # nothing: cached, it stayed in every later listing.
            return None
        # One read transaction around the counter and every row read (unless the caller holds
        # one): read one statement at a time, another process's commit landing between the
        # counter and the re-read of this connection's changed rows left a listing of two
        # moments (two blueprints at one path, when that commit moved one away and the other
        # onto it). Such a commit is then seen by the next call.
        with one_snapshot(cur):
            return self._lookup(cur, sort, descending, load)

    def _lookup(
        self, cur: Any, sort: str, descending: bool, load: bool
    ) -> builtins.list[BlueprintInfo] | None:
        if self._views is None and not load:
            return None
        try:
            # (Asked in the snapshot of the rows: a stamp in another form comes and goes only
            # with a changed row, which the refresh re-sorts every view for.)
            by_moment = sorts_by_moment(cur)
            if self._views is not None and not self._refresh(cur, by_moment):
                self._views = None
            if self._views is None:
                if not load:
                    return None
                self._load(cur)
            assert self._views is not None
            view = self._views.get((sort, descending))
            if view is None:
                view = self._views[(sort, descending)] = _sorted(
                    self._views[("path", False)], sort, descending, by_moment
                )
            return view
        except BaseException:
            # Whatever failed half-way (an I/O error, an interrupt), the next call starts over.
            self._views = None
            raise

    # -- keeping it true ---------------------------------------------------------------------------

    def _load(self, cur: Any) -> None:
        # The counter is read before the rows: a change committed in between is then seen by
        # the next refresh (one full read too many, never a change missed).
        self._gen = int(cur.execute(BLUEPRINTS_GEN).fetchall()[0][0])
        self._own = self._index.blueprint_commits
        self._index.blueprint_changes()  # (all read below)
        self.loads += 1
        with collector_paused(True):
            raw = cur.execute(_FULL_SQL).fetchall()
            self._id_by_rid = {r[13]: r[0] for r in raw}
            self._views = {("path", False): infos(raw)}

    def _refresh(self, cur: Any, by_moment: bool) -> bool:
        """Bring the cached listing up to date; False if it must be read again in full."""
        gen = int(cur.execute(BLUEPRINTS_GEN).fetchall()[0][0])
        own = self._index.blueprint_commits
        foreign: set[int] = set()
        if gen - self._gen != own - self._own:  # another connection changed blueprints
            logged = cur.execute(_CHANGES_SQL, (self._gen,)).fetchall()
            foreign = {rid for _, rid in logged}
            # Every commit since then must be there (its own and this connection's, all listed
            # under their counter values), none too large to list.
            if len({g for g, _ in logged}) != gen - self._gen or -1 in foreign:
                return False
        self._gen, self._own = gen, own
        changed = self._index.blueprint_changes()
        if changed is None:  # (more than CHANGED_ROWS_KEPT: patching would cost more)
            return False
        changed |= foreign
        if len(changed) > _index.CHANGED_ROWS_KEPT:
            return False
        if not changed:
            return True
        self._patch(cur, sorted(changed), by_moment)
        return True

    def _patch(self, cur: Any, changed: Sequence[int], by_moment: bool) -> None:
        assert self._views is not None
        gone: set[str] = set()
        fresh: builtins.list[Sequence[Any]] = []
        for rid in changed:
            old = self._id_by_rid.pop(rid, None)
            if old is not None:
                gone.add(old)
        for start in range(0, len(changed), 500):
            chunk = changed[start : start + 500]
            marks = ",".join("?" * len(chunk))
            fresh += cur.execute(
                f"SELECT {INFO_COLUMNS}, b.rid FROM blueprints b "
                f"WHERE b.deleted = 0 AND b.rid IN ({marks})",
                chunk,
            ).fetchall()
        for r in fresh:
            self._id_by_rid[r[13]] = r[0]
            gone.add(r[0])
        new = infos(fresh)
        for key, view in self._views.items():
            kept = [info for info in view if info.id not in gone]
            kept.extend(new)
            # Mostly in order already: the sort only merges the few new rows in (timsort).
            self._views[key] = _sorted(kept, *key, by_moment)


def _sorted(
    rows: Iterable[BlueprintInfo], sort: str, descending: bool, by_moment: bool
) -> builtins.list[BlueprintInfo]:
    """``rows`` in store.list()'s order: by ``sort`` (a stamp by its moment if ``by_moment``),
    then by path ascending (paths are unique)."""
    out = sorted(rows, key=_path, reverse=descending and sort == "path")
    if sort != "path":
        key = _MOMENT_KEYS[sort] if by_moment and sort in TIME_SORTS else _KEYS[sort]
        out.sort(key=key, reverse=descending)  # (stable: ties keep the path order)
    return out


def sorts_by_moment(cur: Any) -> bool:
    """Whether a listing sorted by a stamp must sort by the moment each names: the store holds
    a live one not in its own form (one lookup in core v13's partial index; see
    localstore._time_key). Otherwise the text is that order, and SQLite walks the stamp's index.
    An index of core v12 opened read-only (it cannot be given v13) has no such index: the same
    question then reads every live row's stamps (a walk of the listing index), as right."""
    return bool(cur.execute(ODD_TIMES_SQL).fetchall())


@contextmanager
def one_snapshot(cur: Any) -> Iterator[None]:
    """Every statement of the block reads one snapshot of the index: a read transaction around
    them, unless the connection is in a transaction already (a write's, or its caller's).
    Outside one, each statement reads the latest commit, so another connection's commit can land
    between two reads of one answer. Costs a BEGIN and a COMMIT (a few microseconds)."""
    conn = cur.connection
    own = conn.getautocommit()
    if own:
        cur.execute("BEGIN")
    try:
        yield
    finally:
        if own and not conn.getautocommit():
            try:
                cur.execute("COMMIT")  # (a read: nothing to write, cannot lose anything)
            except BaseException:
                if not conn.getautocommit():
                    cur.execute("ROLLBACK")
                raise


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


def below(folder: str) -> tuple[str, str]:
    """The range of keys (paths, folders) below ``folder``: from ``folder/`` up to, not
    including, ``folder0`` ('0' follows '/').

    One range, so SQLite reads it from an index (the store's folder filter, the watcher's deletes
    of a folder moved out). The index compares text as UTF-8 bytes: the old upper bound
    ``folder/\uffff`` (EF BF BF) left out names that start above U+FFFF (an emoji, F0 ...).
    """
    return folder + "/", folder + "0"


def filter_words(folder: StrPath | None, tag: str | None) -> str:
    """A folder and tag filter as words: "in folder 'team' with tag 'ops'", "with tag 'ops'" (""
    for neither), what a listing's title and the error of an export that matched nothing say was
    asked (a folder given as a pathlib path as its text, not ``PosixPath('team')``)."""
    words = [f"in folder {path_text(folder)!r}"] if folder else []
    if tag is not None:
        words.append(f"with tag {tag!r}")
    return " ".join(words)
