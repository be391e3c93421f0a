"""The store's result and request types, and the records its writes pass between their steps.

Public (re-exported by ``localstore.store`` and ``localstore``): ``Row``, ``Revision``,
``SearchHit``, ``RevalidateReport``, ``CheckReport`` and ``SaveRequest``. Private: what one save
transaction stages (``_Batch``), a pair ready to write (``_Prepared``), and the signals a batch's
item raises to have the batch run again (``_ItemRefused``, ``_RecordFirst``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localstore import files as fs
from localstore.blueprint import Blueprint, BlueprintInfo, BlueprintMeta
from localstore.errors import LocalStoreError
from localstore.events import Event

TxHook = Callable[[Any, Blueprint], None]


_ROW_COLUMNS = (
    "rid, id, path, name, description, author, version, tags, created, modified, yaml_sha256, "
    "meta_sha256, content_hash, yaml_size, yaml_mtime_ns, meta_size, meta_mtime_ns, valid, "
    "problems, meta_json, flagged, rev, op_id, deleted, yaml_ctime_ns, meta_ctime_ns, yaml_ino, "
    "meta_ino, judged_by"
)


@dataclass(frozen=True, slots=True)
class Row:
    """An index row of the blueprints table."""

    rid: int
    id: str
    path: str
    name: str
    description: str
    author: str
    version: str
    tags: tuple[str, ...]
    created: str
    modified: str
    yaml_sha256: str
    meta_sha256: str
    content_hash: str
    yaml_size: int
    yaml_mtime_ns: int
    meta_size: int
    meta_mtime_ns: int
    valid: bool
    problems: tuple[str, ...]
    meta_json: str
    flagged: str | None
    rev: int
    op_id: int
    deleted: bool
    # st_ctime_ns of each file as last recorded; None in rows of an index older than core v8.
    yaml_ctime_ns: int | None = None
    meta_ctime_ns: int | None = None
    # Each file's inode (files.ino_key) as last recorded; None in rows of an index older than
    # core v9 until the first open stamps them, 0 where the filesystem gave none.
    yaml_ino: int | None = None
    meta_ino: int | None = None
    # The name of the validator that gave ``valid`` and ``problems`` ('' none, None unknown:
    # a row of an index older than core v10).
    judged_by: str | None = None

    @classmethod
    def from_tuple(cls, t: Sequence[Any]) -> Row:
        """Build from a SELECT of _ROW_COLUMNS."""
        return cls(
            rid=t[0],
            id=t[1],
            path=t[2],
            name=t[3],
            description=t[4],
            author=t[5],
            version=t[6],
            tags=tuple(json.loads(t[7])),
            created=t[8],
            modified=t[9],
            yaml_sha256=t[10],
            meta_sha256=t[11],
            content_hash=t[12],
            yaml_size=t[13],
            yaml_mtime_ns=t[14],
            meta_size=t[15],
            meta_mtime_ns=t[16],
            valid=bool(t[17]),
            problems=tuple(json.loads(t[18])),
            meta_json=t[19],
            flagged=t[20],
            rev=t[21],
            op_id=t[22],
            deleted=bool(t[23]),
            yaml_ctime_ns=t[24],
            meta_ctime_ns=t[25],
            yaml_ino=t[26],
            meta_ino=t[27],
            judged_by=t[28],
        )

    def holds(self, rel: str, chash: str) -> bool:
        """True if this live, healthy row already records that content at that path."""
        return (
            not self.deleted
            and self.path == rel
            and self.content_hash == chash
            and not self.flagged
        )

    @property
    def meta(self) -> BlueprintMeta:
        """The meta as last indexed."""
        return BlueprintMeta.from_dict(json.loads(self.meta_json), source=f"index row {self.id}")

    def info(self) -> BlueprintInfo:
        """The listing view."""
        return BlueprintInfo(
            id=self.id,
            path=self.path,
            name=self.name,
            description=self.description,
            tags=self.tags,
            author=self.author,
            version=self.version,
            created=self.created,
            modified=self.modified,
            rev=self.rev,
            content_hash=self.content_hash,
            valid=self.valid and not self.flagged,
            size=self.yaml_size,
        )


@dataclass(frozen=True, slots=True)
class Revision:
    """One entry of a blueprint's history."""

    id: str
    rev: int
    origin: str
    device: str
    ts: str
    path: str
    content_hash: str
    deleted: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "id": self.id,
            "rev": self.rev,
            "origin": self.origin,
            "device": self.device,
            "ts": self.ts,
            "path": self.path,
            "content_hash": self.content_hash,
            "deleted": self.deleted,
        }


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result with its rank and a snippet of the matching text.

    ``snippet`` marks each hit with ``[`` and ``]``, which a bracket of the text itself looks
    like; ``snippet_parts`` is the same text as (text, is a hit) pairs, which nothing confuses.
    """

    info: BlueprintInfo
    score: float
    snippet: str
    snippet_parts: tuple[tuple[str, bool], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            **self.info.to_dict(),
            "score": self.score,
            "snippet": self.snippet,
            "snippet_parts": [[text, hit] for text, hit in self.snippet_parts],
        }


@dataclass(slots=True)
class RevalidateReport:
    """What :meth:`BlueprintStore.revalidate` did: how many blueprints it judged, the paths
    whose verdict changed, and how many changed while it ran (their writer judged them)."""

    judged: int = 0
    now_invalid: list[str] = field(default_factory=list)
    now_valid: list[str] = field(default_factory=list)
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return dataclasses.asdict(self)


@dataclass(slots=True)
class CheckReport:
    """What check() found and, with fix=True, repaired."""

    problems: list[dict[str, str]] = field(default_factory=list)
    fixed: list[dict[str, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing is left to report."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {"clean": self.clean, "problems": self.problems, "fixed": self.fixed}


@dataclass(frozen=True, slots=True)
class SaveRequest:
    """One item of :meth:`BlueprintStore.save_many` (the arguments of :meth:`BlueprintStore.save`)."""

    path: fs.StrPath
    content: str | bytes | Mapping[str, Any] | None = None
    meta: BlueprintMeta | Mapping[str, Any] | None = None
    id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    expected_rev: int | None = None
    # Runs inside the batch's transaction, possibly more than once: a refused item makes the
    # batch run again without it. Only statements on its cursor (rolled back with an attempt).
    tx_hook: TxHook | None = None


class _ItemRefused(Exception):
    """A batch item's tx_hook refused it after it was written: the attempt is undone and retried
    without it (internal to the save path; never leaves the store)."""

    def __init__(self, error: LocalStoreError) -> None:
        super().__init__(str(error))
        self.error = error
        self.position = -1


class _RecordFirst(Exception):
    """A batch item found an edit nobody recorded in a file it would replace: the attempt is
    undone, the edit committed in a transaction of its own, and the attempt run again
    (internal to the save path; never leaves the store)."""

    def __init__(self, rel: str) -> None:
        super().__init__(rel)
        self.rel = rel


class _Unknown:
    """Marks a lookup not made yet (None already means "looked up, nothing there")."""


_UNKNOWN = _Unknown()


@dataclass(slots=True)
class _Batch:
    """What one save transaction has staged: temp files, events, and what to undo on failure."""

    pending: fs.PendingWrites
    events: list[Event] = field(default_factory=list)
    touched: list[tuple[Row | None, str]] = field(default_factory=list)
    # The sha256 of the YAML and meta bytes each touched item wrote (same order, once written).
    written: list[tuple[str, str]] = field(default_factory=list)
    # The pairs staged since the last rename into place: YAML path -> (rid, meta path).
    placing: dict[str, tuple[int, str]] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    # Absolute paths are plain strings on this path: pathlib was a sixth of a batch save's time.
    folders: dict[str, dict[str, str]] = field(default_factory=dict)
    # Folders already resolved inside the root in this batch (realpath once per folder, not per
    # call: it was three lstat walks per blueprint), and folders known to exist.
    safe_dirs: set[str] = field(default_factory=set)
    made_dirs: set[str] = field(default_factory=set)
    root_checked: bool = False  # refuse_a_vanished_root ran for this batch
    # The bytes of pairs ingested in this batch (path -> YAML, meta): their revisions roll back
    # with a failed batch, so an undo puts back these instead of the last committed revision.
    ingested: dict[str, tuple[bytes, bytes | None]] = field(default_factory=dict)
    rules: fs.IgnoreRules | None = None  # read once per batch, when a new path needs them
    # The paths whose unrecorded edit was committed before this attempt (see _record_first);
    # None when this batch cannot commit one first (inside a caller's transaction, or a remote
    # write, which refuses an edit instead of replacing it).
    recorded_first: set[str] | None = None
    # The paths whose edit this transaction records (it could not be committed first): their
    # files are kept when replaced (see _commit_pair).
    recorded_here: set[str] = field(default_factory=set)
    # The paths whose unrecorded files a write waited for to settle (_settle_first), across its
    # attempts: the wait is paid once a path, not again by each attempt that meets the file.
    settled: set[str] = field(default_factory=set)
    # The meta files without their YAML that saves creating a pair replace (meta path -> its
    # stats and bytes when read, see _keep_orphan_meta): replaced only if still that file, and
    # put back by an undo.
    orphans: dict[str, tuple[fs.Recorded, bytes]] = field(default_factory=dict)
    # The copies in <data>/recovered/ of those kept, across a batch's attempts (meta path ->
    # the bytes' sha256, the copy, its note's words): an attempt run again re-notes the copy
    # an earlier one made (its note rolled back with it) rather than keeping another.
    orphans_kept: dict[str, tuple[str, Path, str]] = field(default_factory=dict)


# Meta file path -> (its stats, its bytes): see _Batch.orphans.
_Orphans = Mapping[str, tuple[fs.Recorded, bytes]]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A pair ready to write: bytes, meta and derived facts."""

    path: str
    yaml_bytes: bytes
    meta: BlueprintMeta
    meta_bytes: bytes
    content_hash: str
    valid: bool
    problems: tuple[str, ...]
    judged_by: str  # the validator that judged it (see Row.judged_by)
    # Derived once here, not again by each step of the save that needs them (the row, its
    # search entries, the revision and the returned Blueprint).
    text: str  # yaml_bytes decoded (UTF-8, checked by the parse above)
    yaml_sha256: str  # sha256_hex(yaml_bytes)
