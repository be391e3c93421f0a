"""The folder filter of a listing or a search: a folder matches as paths collide (files.path_key).

Folder names are unique by their key: a save of ``projects/b`` beside ``Projects/`` is refused
(one folder on macOS and Windows). The filter compared the stored spelling, so ``folder="projects"``
answered [] for a folder every other command took for the same one. It is matched by key now.

A store nearly always spells a folder one way, so the filter finds that spelling and keeps the
range of the folder index as before (``blueprints_folder``, folder then path: a folder's own
blueprints are read in path order, a folder and those below it as one range). Whether the store holds another spelling too (files made beside it on a
case-sensitive disk) is told by two counts of index entries, covered by their indexes: the live
paths under the folder's key and those under the spelling. Only when they differ is the filter a
range of path keys (``blueprints_live_path``): every spelling, but a page then sorts the folder's rows.
Rows core v11 or the reconciler kept under a key of their own (NUL and their id, see
index._v11_path_keys) are in no key range: they are read (few, by one range) and matched here.
Rejected: an index over a folder key (a column every writer, an older localstore's too, would
have to keep, or an expression index over a Python function, whose every change corrupts it).

The two counts read the folder's whole range: a page of 100 of a 10,000-blueprint folder cost
1.1 ms instead of 0.6. Their answer (and the parked rows) changes only with a blueprint row, so
a store keeps it per folder key while ``blueprints_gen`` stays (:class:`FolderSpellings`, as the
listing cache knows of any connection's change, localstore._listing): an app paging or searching
a folder between changes asks once.
"""

from __future__ import annotations

from typing import Any

import apsw

from localstore import files as fs
from localstore._listing import below
from localstore.index import BLUEPRINTS_GEN

__all__ = ["FolderSpellings", "folder_filter"]

# The most folders whose answers a store keeps between two changes (each a few strings).
SPELLINGS_KEPT = 256

_FIRST_BY_KEY = (
    "SELECT path FROM blueprints WHERE deleted = 0 AND path_key >= ? AND path_key < ? LIMIT 1"
)
# (The reconciler's own question for such rows, _reconcile.Reconciler._parked_pairs.)
_PARKED = "SELECT rid, folder FROM blueprints WHERE path_key < char(1) AND deleted = 0"


# A folder key's answer: its one spelling (None: two or more), and its parked rows.
_Found = tuple[str | None, list[tuple[int, str, str]]]


class FolderSpellings:
    """Each folder key's spelling and parked rows, as read at one ``blueprints_gen``.

    An answer holds for as long as no blueprint row changes, and every commit that changes one
    bumps the counter (Index.write), whichever connection makes it. Not consulted inside a write
    transaction: its rows are uncommitted and the counter not yet bumped. Under the index lock.
    """

    def __init__(self) -> None:
        self._gen = -1
        self._found: dict[str, _Found] = {}

    def find(self, cur: Any, folder: str, key: str) -> _Found:
        """``folder``'s answer in the caller's snapshot: kept, or read (and kept)."""
        if cur.connection.txn_state("main") == apsw.SQLITE_TXN_WRITE:
            return _find(cur, folder, key)
        gen = int(cur.execute(BLUEPRINTS_GEN).fetchall()[0][0])
        if gen != self._gen or len(self._found) >= SPELLINGS_KEPT:
            self._gen, self._found = gen, {}
        found = self._found.get(key)
        if found is None:
            # (An empty folder's answer is the spelling asked first: while nothing is under
            # the key, every spelling of it filters to nothing alike.)
            found = self._found[key] = _find(cur, folder, key)
        return found


def folder_filter(
    cur: Any, folder: str, *, recursive: bool, known: FolderSpellings
) -> tuple[str, list[Any]]:
    """The SQL condition on ``b`` for a folder filter (from store._folder_arg), and its values:
    the folder whatever its case and Unicode form (files.path_key), and with ``recursive`` those
    below it. Reads the index with ``cur``: the caller's snapshot must be the one it filters
    (``known``: the store's answers of earlier calls, used while they hold)."""
    if not folder:  # (the top folder alone: no name to match)
        return "b.folder = ?", [folder]
    key = fs.path_key(folder)
    low, high = below(key)
    spelling, parked = known.find(cur, folder, key)
    if spelling is not None:
        return _spelled(spelling, recursive=recursive)
    sql = "b.path_key >= ? AND b.path_key < ?"
    args: list[Any] = [low, high]
    if not recursive:  # (no '/' after the folder's: its own blueprints)
        sql += " AND instr(substr(b.path_key, ?), '/') = 0"
        args.append(len(low) + 1)
    rids = [rid for rid, _, name_key in parked if recursive or name_key == key]
    if rids:
        sql = f"({sql} OR b.rid IN ({', '.join('?' * len(rids))}))"
        args += rids
    return sql, args


def _find(cur: Any, folder: str, key: str) -> _Found:
    """Read ``folder``'s answer (its key ``key``) from the index."""
    low, high = below(key)
    parked = [
        (int(rid), str(name), name_key)
        for rid, name in cur.execute(_PARKED).fetchall()
        if (name_key := fs.path_key(str(name))) == key or name_key.startswith(low)
    ]
    return _only_spelling(cur, folder, (low, high), parked), parked


def _only_spelling(
    cur: Any, folder: str, keys: tuple[str, str], parked: list[tuple[int, str, str]]
) -> str | None:
    """The store's one spelling of ``folder`` (``folder`` itself when nothing is in it), or
    None when blueprints are under two spellings of it."""
    depth = folder.count("/") + 1
    first = cur.execute(_FIRST_BY_KEY, keys).fetchall()
    if first:
        spelling = "/".join(str(first[0][0]).split("/")[:depth])
    elif parked:
        spelling = "/".join(parked[0][1].split("/")[:depth])
    else:
        return folder
    # Every blueprint under the folder's key is under this spelling (which they all match)
    # when there are as many under it.
    spelled, values = _spelled(spelling, recursive=True)
    counts = (
        "SELECT (SELECT count(*) FROM blueprints b WHERE b.deleted = 0 AND b.path_key >= ? "
        f"AND b.path_key < ?), (SELECT count(*) FROM blueprints b WHERE b.deleted = 0 AND {spelled})"
    )
    under_key, under_spelling = cur.execute(counts, (*keys, *values)).fetchall()[0]
    return spelling if under_key + len(parked) == under_spelling else None


def _spelled(folder: str, *, recursive: bool) -> tuple[str, list[Any]]:
    """The condition on ``b.folder`` for one spelling of a folder, and its values.

    A folder ``F`` and those below it (_listing.below: ``F/`` up to ``F0``) are one range of the
    folder index, from ``F`` to ``F0``. Written as ``folder = F OR folder in [F/, F0)`` SQLite
    used no index at all and read every live row (a 10-blueprint folder of a 100,000-blueprint
    home: 200-450 ms, 0.1 ms now).
    """
    if not recursive:
        return "b.folder = ?", [folder]
    low, high = below(folder)
    return (
        "b.folder >= ? AND b.folder < ? AND (b.folder = ? OR b.folder >= ?)",
        [folder, high, folder, low],
    )
