"""The reconcile pass's base: what it knows of the files and rows, and how it reads them.

``_Scan`` (the stats of every blueprint file under the root, no reads), ``_Listed`` (the few
columns of a live row the whole-tree comparison needs), ``RefusedPair`` (a new pair refused, for a
watcher's rescan to pass by), ``stamp_inodes``, and ``_ReconcileCore``: the pass's state, the scan,
the row lookups and the reads of YAML and meta files that every later layer of ``Reconciler``
(``localstore._reconcile``) builds on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import apsw

from localstore import files as fs
from localstore.blueprint import MAX_META_BYTES, sha256_hex
from localstore.errors import InvalidInputError, StorageError
from localstore.events import Event
from localstore.index import map_apsw_error

if TYPE_CHECKING:
    from localstore.store import BlueprintStore, Row


log = logging.getLogger("localstore.reconcile")


# How much of a meta file is read: decode_meta's own cap (1 MiB), so that a bigger one is still
# reported as too large. max_yaml_bytes limits the YAML only; reading metas with it cut a meta
# with a long description short, reported it as invalid JSON, and the hint (delete the meta)
# then gave the blueprint a new id.
META_READ_LIMIT = MAX_META_BYTES


@dataclass
class _Scan:
    yamls: dict[str, fs.FileStat] = field(default_factory=dict)
    metas: dict[str, fs.FileStat] = field(default_factory=dict)
    temps: dict[str, fs.FileStat] = field(default_factory=dict)
    # YAML paths (of a YAML or meta file) that cannot be a blueprint's name here, and why.
    unsupported: dict[str, str] = field(default_factory=dict)
    # The ids in those names' meta files (read only when a live row's file is missing).
    carried: dict[str, str] | None = None
    # Folders (prefix, error) the walk could not list: what is under them is unknown, not gone.
    unlistable: list[tuple[str, OSError]] = field(default_factory=list)
    # Syncthing's conflict copies of blueprint files (never imported; reported).
    conflicts: list[str] = field(default_factory=list)


class RefusedPair(NamedTuple):
    """A new pair (no row) refused: its files' stats when judged (None: missing), and why."""

    yaml: fs.FileStat | None
    meta: fs.FileStat | None
    reason: str

    def unchanged(self, yaml: fs.FileStat | None, meta: fs.FileStat | None) -> bool:
        """Whether the pair still has the stats it was refused with (nothing to read again)."""
        return _same_file(self.yaml, yaml) and _same_file(self.meta, meta)


def _same_file(then: fs.FileStat | None, now: fs.FileStat | None) -> bool:
    if then is None or now is None:
        return then is now
    return fs.stat_unchanged(now, *then)


def _unsupported(rel: str) -> str | None:
    """Why a YAML path found on disk cannot be indexed as it is, or None if it can."""
    try:
        canonical = fs.normalize_path(rel)
    except InvalidInputError as exc:
        return str(exc)
    if canonical != rel:  # normalize_path changes nothing else in a name ending in YAML_SUFFIX
        return (
            "the name is not in Unicode NFC form (as copied from macOS); "
            f"rename it to {canonical!r}"
        )
    return None


def _from_index(exc: BaseException) -> bool:
    """True for a storage error the index raised (a mapped apsw error), not a file's."""
    return isinstance(exc, StorageError) and isinstance(exc.__cause__, apsw.Error)


class _Listed(NamedTuple):
    """What the whole-tree comparison needs of a live index row.

    Not a whole ``Row``: with its meta JSON, hashes and decoded tags one took about 1.5 KB and
    2 JSON decodes, so a reconcile of 100,000 blueprints held 150 MB of rows and spent 40 % of
    its time building them. The few rows that differ from the disk are read whole, one by one.
    """

    rid: int
    id: str
    path: str
    yaml_size: int
    yaml_mtime_ns: int
    meta_size: int
    meta_mtime_ns: int
    flagged: str | None
    yaml_ctime_ns: int | None
    meta_ctime_ns: int | None
    yaml_ino: int | None
    meta_ino: int | None


_LISTED_COLUMNS = (
    "rid, id, path, yaml_size, yaml_mtime_ns, meta_size, meta_mtime_ns, flagged, "
    "yaml_ctime_ns, meta_ctime_ns, yaml_ino, meta_ino"
)


def stamp_inodes(
    store: BlueprintStore, scan: _Scan, unstamped: dict[str, int], changed: Container[str]
) -> None:
    """Record the scanned inodes of the rows in ``unstamped`` (path -> rid: rows with no
    inode yet, core v8 rows) whose pair the scan found and did not find ``changed``.

    Shared by the open's reconcile and the watcher's rescans: a store opened without a
    reconcile (``localstore watch``, an app's ``reconcile=False``) never stamped them, and its
    rows stayed without the inode check until some later open reconciled. Raises StorageError.
    """
    stamps = [
        (fs.ino_key(y.st_ino), fs.ino_key(m.st_ino), rid)
        for path, rid in unstamped.items()
        if path not in changed
        and (y := scan.yamls.get(path)) is not None
        and (m := scan.metas.get(fs.meta_path_for(path))) is not None
    ]
    if not stamps:
        return
    try:
        with store.index.write() as cur:
            # coalesce: a save by another process since the scan recorded its own inodes.
            cur.executemany(
                "UPDATE blueprints SET yaml_ino = coalesce(yaml_ino, ?), "
                "meta_ino = coalesce(meta_ino, ?) WHERE rid = ?",
                stamps,
            )
    except apsw.Error as exc:
        raise map_apsw_error(exc, "record the files' inodes in the index") from exc


class _ReconcileCore:
    """Hold one pass's state; scan the files, look rows up, read the pairs."""

    def __init__(self, store: BlueprintStore, *, origin: str = "external") -> None:
        self.store = store
        self.origin = origin
        self.rules = fs.IgnoreRules.for_root(store.root)
        self.events: list[Event] = []
        # The full pass's paths to ingest, the ids their meta files carry (read on first need),
        # and rows moved off a path for a blueprint that takes it (see _park).
        self._changed: list[str] | None = None
        self._claims: dict[str, str] | None = None
        self._parked: dict[str, Row] = {}
        # Whether the ingest under way put the meta file in place itself (written, or a
        # flushed temp renamed): its stat is then taken after that, not the scan's (_record).
        self._meta_placed = False
        # The meta file the ingest under way read (what fs.write_checked compares; None: none
        # was there): its rewrite replaces only that file, not an edit saved since the read.
        self._meta_seen: fs.Recorded | None = None
        # The blueprint the path under way is taking from another path (a move), and those
        # whose move's ingest failed this pass: kept where they were, not recorded deleted.
        self._moving: str | None = None
        self._move_failed: set[str] = set()
        # Old meta files of moves, removed once their move is committed (_follow_meta).
        self._leaving: set[str] = set()
        # Whether the full pass reads every flagged file again, its flag reason perhaps in an
        # older localstore's words (_flag_words).
        self._reword = False
        # The new pairs refused with an ``invalid`` event, by YAML path: the stats of the YAML
        # and meta file it judged (None: none) and why, for a watcher's rescan to pass them by
        # until they change (told once, not every 600 s: Watcher._told).
        self.refused: dict[str, RefusedPair] = {}

    @property
    def moving(self) -> str | None:
        """The id of the blueprint the last path given to ``ingest_locked`` was taking from
        another path (a move), once its ingest got that far, committed or not; else None. The
        watcher keeps such a blueprint at its old path while the move's ingest is retried."""
        return self._moving

    def scan(self, indexed: Container[str] = ()) -> _Scan:
        """Stat every blueprint file under the root (no reads).

        Paths in ``indexed`` were validated when they were saved; only new names get the full
        path check (most of a 10,000-file rescan otherwise).
        """
        scan = _Scan()
        walk = fs.walk_blueprint_files(
            self.store.root, self.rules, unlistable=scan.unlistable, conflicts=scan.conflicts
        )
        for rel, st in walk:
            if rel.endswith(fs.TEMP_SUFFIX):
                scan.temps[rel] = st
            elif rel.endswith(fs.YAML_SUFFIX):
                why = None if rel in indexed else _unsupported(rel)
                if why is None:
                    scan.yamls[rel] = st
                else:
                    scan.unsupported[rel] = why
            else:
                yaml_rel = fs.yaml_path_for(rel)
                why = None if yaml_rel in indexed else _unsupported(yaml_rel)
                if why is None:
                    scan.metas[rel] = st
                else:  # reported with its YAML's name, not as an orphan
                    scan.unsupported.setdefault(yaml_rel, why)
        return scan

    def _live_rows(self, cur: Any) -> dict[str, _Listed]:
        """Every live row by path: one read for the whole-tree comparison."""
        return {
            t[2]: _Listed(*t)
            for t in cur.execute(f"SELECT {_LISTED_COLUMNS} FROM blueprints WHERE deleted = 0")
        }

    # Per-path decisions look rows up one indexed query at a time, inside the caller's transaction,
    # so they see its earlier changes and cost O(1) per path instead of a reload of the table.
    def _at_path(self, cur: Any, rel: str) -> Row | None:
        return self.store._row_by(cur, "path = ? AND deleted = 0", (rel,))

    def _with_id(self, cur: Any, blueprint_id: str) -> Row | None:
        return self.store._row_by(cur, "id = ?", (blueprint_id,))

    @staticmethod
    def _stat_matches(row: Row | _Listed, y: fs.FileStat, m: fs.FileStat | None) -> bool:
        return (
            m is not None
            and fs.stat_unchanged(
                y, row.yaml_size, row.yaml_mtime_ns, row.yaml_ctime_ns, row.yaml_ino
            )
            and fs.stat_unchanged(
                m, row.meta_size, row.meta_mtime_ns, row.meta_ctime_ns, row.meta_ino
            )
        )

    def _candidates(
        self, scan: _Scan, by_path: dict[str, _Listed]
    ) -> tuple[list[str], list[_Listed]]:
        changed = [
            rel
            for rel, st in sorted(scan.yamls.items())
            if rel not in by_path
            or not self._stat_matches(by_path[rel], st, scan.metas.get(fs.meta_path_for(rel)))
            or (self._reword and by_path[rel].flagged is not None)
        ]
        missing = [row for path, row in sorted(by_path.items()) if path not in scan.yamls]
        return changed, missing

    def _holds(self, row: Row, rel: str, meta_rel: str) -> bool:
        """Whether the pair on disk has exactly the bytes the index recorded for ``row``.

        For a path an event says was written: the same size and mtime do not prove the same
        content where timestamps are coarse (FAT 2 s, exFAT 10 ms, SMB 1 s, kernels before 6.13
        one jiffy), so an edit of one character right after a save looked like the save itself
        and was never recorded. Two small reads; no write when the bytes are the same.
        """
        yaml_bytes = self._read(rel)
        meta_bytes = self._read_meta(meta_rel)
        return (
            yaml_bytes is not None
            and meta_bytes is not None
            and sha256_hex(yaml_bytes) == row.yaml_sha256
            and sha256_hex(meta_bytes) == row.meta_sha256
        )

    def _read(self, rel: str) -> bytes | None:
        """A YAML file's bytes, up to max_yaml_bytes + 1 (None: missing)."""
        try:
            return fs.read_regular(self.store.root / rel, self.store.limits.max_bytes)
        except FileNotFoundError:
            return None

    def _read_meta(self, rel: str) -> bytes | None:
        """A meta file's (or meta temp's) bytes, up to META_READ_LIMIT + 1 (None: missing, or
        not a regular file: a link is never read, like a YAML's)."""
        try:
            return fs.read_regular(self.store.root / rel, META_READ_LIMIT)
        except FileNotFoundError:
            return None

    def _exact_exists(self, rel: str) -> bool:
        """Whether a file of exactly this name exists (a case-insensitive disk also says yes to
        another case of it, which would hide a case rename)."""
        target = self.store.root / rel
        try:
            return target.name in os.listdir(target.parent)
        except OSError:
            return False
