"""BlueprintStore: save, load, delete, move, list, search, history, restore, check.

Ordering rule (DESIGN.md §3): a change takes the index write lock (``BEGIN IMMEDIATE``) first, then
writes both files durably, then updates the index and commits. Taking the lock before touching files
serialises writers across threads *and* processes, so the index can never record an older write over a
newer file; if the process dies between the files and the commit, the files are the truth and the
reconcile pass on the next open records them.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import hashlib
import itertools
import json
import logging
import os
import posixpath
import re
import stat
import threading
import time
import unicodedata
import warnings
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex, TypeVar

import apsw

from localstore import _snippets
from localstore import files as fs
from localstore._folder_filter import FolderSpellings, folder_filter
from localstore._fts_text import SPLIT, indexed_text, shown
from localstore._identity import DEVICE_KEY, ensure_device_id, recorded_device_id
from localstore._kept_edits import keep_flagged, keep_set_aside, note_kept, report_kept
from localstore._listing import (
    INFO_COLUMNS,
    TIME_SORTS,
    ListingCache,
    collector_paused,
    infos,
    one_snapshot,
    sorts_by_moment,
)
from localstore._presence import OpenMark, WatchPeriods, describe_pid
from localstore._read_only import unwritable_reason
from localstore._revisions import revision_text
from localstore._time_key import time_order_sql
from localstore._validator_name import validator_name_of
from localstore.blueprint import (
    MAX_META_BYTES,
    MAX_TAG_CHARS,
    MAX_TAGS,
    Blueprint,
    BlueprintInfo,
    BlueprintMeta,
    Validator,
    YamlLimits,
    check_validator,
    check_yaml,
    content_hash,
    decode_meta,
    dump_yaml,
    encode_meta,
    is_uuid,
    new_id,
    normalize_tags,
    parse_yaml,
    run_validator,
    sha256_hex,
    tag_problem,
    tags_json,
    utc_now,
)
from localstore.config import Settings, load_settings, settings_arg
from localstore.errors import (
    AlreadyExistsError,
    AmbiguousRefError,
    ChangedOnDiskError,
    ConfigError,
    DiskFullError,
    IndexStoreError,
    InvalidInputError,
    InvalidMetaError,
    InvalidRefError,
    LimitExceededError,
    LocalStoreError,
    LockHeldError,
    NotFoundError,
    RevisionConflictError,
    RevisionNotFoundError,
    StorageError,
    StoreClosedError,
    UnsafePathError,
    wrong_type,
)
from localstore.events import Event, EventBus
from localstore.index import (
    Index,
    Maintainer,
    WriteOutcome,
    forked_error,
    index_damaged,
    map_apsw_error,
    set_aside,
    wal_size,
)

if TYPE_CHECKING:
    # For the handle start_sync returns; never at run time (localstore must not import sync).
    from sync.embed import EmbeddedSync

log = logging.getLogger("localstore.store")

# The hint of a save onto a path another blueprint holds (a move re-hints it: see move).
_TAKEN_HINT = "choose another path, or save with that blueprint's id"
E = TypeVar("E", bound=LocalStoreError)

# The shortest id prefix a REF may be: shorter ones match too many ids to be worth a lookup.
MIN_ID_PREFIX = 4
# How many of the blueprints an ambiguous id prefix matches its error names.
_AMBIGUOUS_SHOWN = 5
SORT_COLUMNS = {"path": "path", "name": "name", "modified": "modified", "created": "created"}
# Where a change came from, as history records it (docs/architecture.md, "History"); sync tells its
# own writes ("remote") from the user's by it, so a typo must not become a new origin.
ORIGINS = ("local", "external", "remote", "merge", "import")
# The meta fields a save NFC-normalizes when they come from the app (see _composed_request).
_TEXT_FIELDS = ("name", "description")
# Column weights of search ranking: name, description, tags, content, path (the FTS column order),
# and the same without content for the index of the described columns.
_BM25_WEIGHTS = "10.0, 4.0, 6.0, 1.0, 2.0"
_BM25_DESCRIBED_WEIGHTS = "10.0, 4.0, 6.0, 2.0"
_FULL, _DESCRIBED = "blueprints_fts", "blueprints_described"
# A search matching more blueprints than this is answered in tiers (see search()): BM25 costs about
# 1.5 us a match (all of a 10,000-blueprint store is 15-20 ms). Bounds search time whatever the
# store's size; the trade is in docs/architecture.md, "Search".
SEARCH_RANK_CAP = 1000
# A search in a folder of at most this many live blueprints gathers their row ids once and tests
# each match of the words against them, instead of looking up each match's index row: a common
# word in a 10-blueprint folder of a 100,000-blueprint home took 100-160 ms, now 15-25 ms (every
# match is still walked, ranking unchanged). Gathering costs about 0.1 us a row a statement, so
# above this bound a word rare in the store would pay more for it than the lookups cost.
_SEARCH_FOLDER_ROWS = 3000
# Words a search query may have: FTS5's cost grows faster than linearly with them (5,000 words,
# a text pasted into a search box, held the index and so every thread of the app for 20 s).
SEARCH_MAX_WORDS = 64
# What a search query may hold but no indexed text does (see _fts_query).
_UNSEARCHABLE = re.compile("[\x00\ud800-\udfff]")
TxHook = Callable[[Any, Blueprint], None]
# The errors that fail one item of a batch (the others go on); anything else aborts the batch.
_ITEM_ERRORS = (InvalidInputError, AlreadyExistsError, RevisionConflictError, NotFoundError)

_ROW_COLUMNS = (
    "rid, id, path, name, description, author, version, tags, created, modified, yaml_sha256, "
    "meta_sha256, content_hash, yaml_size, yaml_mtime_ns, meta_size, meta_mtime_ns, valid, "
    "problems, meta_json, flagged, rev, op_id, deleted, yaml_ctime_ns, meta_ctime_ns, yaml_ino, "
    "meta_ino, judged_by"
)


# The columns a save writes, in the order of _upsert_row's values.
_ROW_WRITE = (
    "id",
    "path",
    "path_key",
    "folder",
    "name",
    "description",
    "author",
    "version",
    "tags",
    "created",
    "modified",
    "yaml_sha256",
    "meta_sha256",
    "content_hash",
    "yaml_size",
    "yaml_mtime_ns",
    "meta_size",
    "meta_mtime_ns",
    "valid",
    "problems",
    "meta_json",
    "rev",
    "op_id",
    "yaml_ctime_ns",
    "meta_ctime_ns",
    "yaml_ino",
    "meta_ino",
    "judged_by",
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


# The settings key of the home's validator: the name of the one the app last opened it with.
HOME_VALIDATOR_KEY = "validator"
_DEVICE_ID_SQL = f"SELECT value FROM settings WHERE key = '{DEVICE_KEY}'"
# Blueprints judged per revalidate round: read, judged without the lock, then written at once.
_REJUDGE_ROWS = 200

# How long a write that must record an editor's unrecorded file first waits, at most, for that
# file to settle when a watcher runs (see BlueprintStore._await_settled), and how often it looks.
# Bounded: an editor that keeps the file open and half written (or a watcher with a long
# write-quiet period) must not hold the write up for long; its file is recorded as it is then.
_SETTLE_WAIT_MAX_S = 2.0
_SETTLE_POLL_S = 0.02

# A local batch runs again once for each file another program saved (or created) between the
# batch's check of it and its placing, after recording that program's version (as before), and
# at most this many more times in all for files it meets again (an editor's autosave): then it
# fails with files.KeptChangingError (see _save_batch). A run again places such a file right
# after its item, so its window is one item's write (~1 ms, the temps' fsyncs), not the rest of
# the batch: an editor saving every second meets it again only by chance, and one file saved in
# that window 5 runs in a row is one a program keeps rewriting. (In all, not per file: a program
# rewriting the whole folder over and over must not make a batch of N run 5N times.)
_RACE_REPEATS_MAX = 4


def _file_seen(path: str) -> tuple[int, int, int, int] | None:
    """What is at ``path`` (inode, size, modification and change times), None if nothing: a
    batch's run again compares it with the last race's to tell a new save from none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _settle_pause(seconds: float) -> None:
    """Sleep between two looks at a file being written (a function of its own: a test times an
    editor's write with it)."""
    time.sleep(seconds)


# The most texts one write judges ahead of its lock (_judge_texts_ahead): half the memo of an
# app's validator, which drops only its older half when full, so none of them is lost before
# the write uses it.
JUDGED_AHEAD = 2_048


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


def _not_a_blueprint(rel: str) -> AlreadyExistsError:
    """The refusal of a save over a file no blueprint is recorded for and none can be: its YAML
    or meta does not parse (writing over it would lose it with no revision anywhere)."""
    return AlreadyExistsError(
        f"{rel} is taken by a file that is not a valid blueprint (it is not in the "
        "index, so saving here would destroy it)",
        hint="fix or move that file first (see 'localstore check'), or save under another path",
    )


def _recorded_now(path: str) -> fs.Recorded | None:
    """The stats of the file at ``path`` as a write's ``recorded`` (None: no file there)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, fs.ino_key(st.st_ino))


def _moves_to_a_new_name(row: Row, rel: str) -> bool:
    """Whether a save of the live ``row`` at ``rel`` moves its pair to another name (not only
    to another case or Unicode form of its own, whose meta file is the pair's)."""
    return fs.path_key(row.path) != fs.path_key(rel)


def _rename_over(src: Path, dst: Path, recorded: fs.Recorded) -> None:
    """Rename the file ``src`` over ``dst`` if ``dst`` is still the file ``recorded`` (a meta
    file without its YAML a move kept first); else raise TargetChangedError, that file in
    place and ``src`` where it was (see files.replace_recorded). Raises OSError."""
    st = os.lstat(src)
    fs.replace_recorded(str(src), str(dst), recorded, (st.st_ino, st.st_size, st.st_mtime_ns))


def _put_orphan_back(target: str, orphans: _Orphans | None) -> None:
    """Put back at ``target`` the meta file without its YAML a failed save or move replaced
    (see BlueprintStore._keep_orphan_meta), unless the name is taken again. Raises
    StorageError."""
    if orphans and target in orphans:
        fs.ensure_dir(Path(target).parent)  # (a move back pruned the folder it left empty)
        fs.create_file(Path(target), orphans[target][1])


def _case_clash_hint(held: str, rel: str, *, moving: bool) -> str:
    """What to do about a path one name with the blueprint at ``held``: a save meant that
    blueprint (its spelling) or a new case for it (renamed first); a move needs another path."""
    why = "paths that differ only by case collide on macOS and Windows"
    if moving:
        return f"{why}: choose another path, or first move or delete the blueprint at {held}"
    return f"{why}: use its spelling, {held}, or rename it first with 'localstore mv {held} {rel}'"


def _moved_recorded(was: fs.Recorded | None, path: str) -> fs.Recorded | None:
    """What a write is to replace at ``path``, where a move just renamed the file the index
    recorded as ``was``: its stats but the change time, which the rename set (None: no file
    there)."""
    now = _recorded_now(path)
    if now is None or was is None:
        return now
    return (was[0], was[1], now[2], was[3])


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


class BlueprintStore:
    """Blueprints as file pairs on disk, indexed in SQLite. Thread-safe; several processes may share a home."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        validator: Validator | None = None,
        validator_name: str | None = None,
        replace_home_validator: bool = True,
        reconcile: bool = True,
        maintenance: bool = True,
        recover_index: bool = False,
        read_only: bool = False,
    ) -> None:
        """Open the store of ``settings``' home.

        ``recover_index`` (for ``check --fix``): an index too damaged to open is moved aside to a
        timestamped name in data/ and rebuilt from the files; ``recovered_index`` is then its new
        path; it raises LockHeldError instead, moving nothing, while another store (of this process
        or another) has the home open. A plain open refuses a damaged index with an error saying so. Raises
        InvalidInputError for a validator that is not callable, or that has no ``validator_name``
        and no default one (a lambda; see validator_name_of).

        With a ``validator``, its name (``validator_name``, by default the function's module and
        qualified name, with the values a partial, closure or instance holds: give a new one when
        the rules change; see validator_name_of) becomes the home's validator, and
        the blueprints judged by none or another are judged again (:meth:`revalidate`).
        ``replace_home_validator=False`` (the daemon, judging with the validator its config
        names) does that only when the home records no validator or this one: when it records
        another, the home's validator and every verdict stay as they are, and this store's own
        writes, judged by its validator, are held by sync until the home's validator judges them.

        ``read_only``: open a home without writing anything in it (a backup snapshot, a disk
        mounted read-only, another user's home): no reconcile, no maintainer, no marks, no
        revalidation; every write raises ReadOnlyStoreError. What the index says may be older
        than the files (see docs/architecture.md, "Read-only homes"): :meth:`load` returns what
        the files hold. ``read_only_reason`` says why it is read-only. Raises IndexStoreError
        for a home without an index, or one an older localstore made (it cannot be updated).
        """
        check_validator(validator)
        if validator_name is not None and (
            not isinstance(validator_name, str) or not validator_name or validator is None
        ):
            raise InvalidInputError(
                f"validator_name must be non-empty text given with a validator, not "
                f"{validator_name!r}",
                hint="name the rules of the validator you pass (e.g. 'myapp-rules-3'), or "
                "leave validator_name out",
            )
        # Before anything opens: a validator that cannot be named by default is refused.
        name = validator_name or validator_name_of(validator)
        if settings is not None:
            settings_arg(
                settings,
                "build it with localstore.load_settings(home=..., ...), or pass home= to "
                "localstore.open instead",
            )
        for flag, value in (
            ("replace_home_validator", replace_home_validator),
            ("reconcile", reconcile),
            ("maintenance", maintenance),
            ("recover_index", recover_index),
            ("read_only", read_only),
        ):
            _flag_arg(flag, value)
        if read_only and recover_index:
            raise InvalidInputError(
                "recover_index rebuilds the index: a read-only store cannot",
                hint="leave out read_only (the home must be writable) or recover_index",
            )
        self.settings = settings or load_settings()
        self.paths = self.settings.paths
        # Why this store writes nothing (None: it may write). Worked out before anything opens.
        self.read_only_reason: str | None = unwritable_reason(self.paths) if read_only else None
        if not read_only:
            self.paths.ensure()
        self.root = self.paths.blueprints
        try:
            self._real_root = self.root.resolve()  # (not strict: check_root below may create it)
        except RuntimeError as exc:  # pathlib's "Symlink loop" (3.11, 3.12)
            from localstore._reconcile import root_loop_error

            raise root_loop_error(self.root) from exc
        self._root_str = str(self.root)
        self.validator = validator
        self.validator_name = name
        # Verdicts reached before a write took the lock (check_yaml, _prejudge), by the YAML's
        # sha256, not yet used by a save: the validator that reached each, and its problems.
        # A save of exactly those bytes under that validator takes the verdict instead of parsing
        # and judging inside the index transaction (see _prepare).
        self._judged: dict[bytes, tuple[Validator | None, tuple[str, ...]]] = {}
        self._judged_lock = threading.Lock()  # (the app's thread, the watcher's, sync's)
        self._judged_count = 0  # verdicts remembered so far (see _judge_texts_ahead)
        self.limits = YamlLimits(
            max_bytes=self.settings.max_yaml_bytes,
            max_depth=self.settings.max_depth,
            max_nodes=self.settings.max_nodes,
        )
        # Flushes a save's two temp files while its index statements run (files.PendingWrites).
        # Two threads, so the two fsyncs overlap too: in alternating runs on the benchmark VM
        # (session 14) a save took 1.93-2.01x the bare pair write with two, 2.22-2.44x with one.
        # (An earlier run had found one faster; the disk's queue, not the filesystem, decides.)
        self._flusher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="localstore-flush")
        self.recovered_index: Path | None = None
        # Held until close(), taken before the index opens: a 'check --fix' in another process
        # must see this store before it could move the index from under its connection.
        self._open_mark = OpenMark.take(self.paths.state, create=not read_only)
        try:
            self.index = self._open_index(recover_index)
            self._listing = ListingCache(self.index)
            self._spellings = FolderSpellings()  # (folder filters' answers, kept while they hold)
        except BaseException:
            self._flusher.shutdown(wait=False)
            self._open_mark.close()
            raise
        # Events wait for the commit of the publishing thread's open transaction (the sync
        # engine saves inside its own): see Index.after_commit.
        self.events = EventBus(
            defer=self.index.after_commit, check_process=self.index.check_process
        )
        self._closed = False
        self._close_lock = threading.Lock()
        self._on_close: list[Callable[[], None]] = []
        # A copied or moved home takes a new device id here (see localstore._identity).
        # (The id as last read: see device_id; and the write transaction it was read in.)
        self._device_serial = -1
        if read_only:
            self._device_id = recorded_device_id(self.index, new_id)
        else:
            self._device_id = ensure_device_id(self.index, self.paths.index_db, new_id)
        self.device_name = self.settings.device_name
        self._maintainer: Maintainer | None = None
        if maintenance and not read_only:
            self._maintainer = Maintainer(self.paths.index_db)
            self.index.on_commit(self._maintainer.notify_commit)
            self._maintainer.start()
        # A store the app drops without close() stops its threads when collected (else its
        # maintainer checkpointed a home nobody used, one thread and connection per such store,
        # for the life of the process); not at exit, where daemon threads end with it anyway.
        self._unclosed = weakref.finalize(
            self,
            _collected_unclosed,
            self._maintainer,
            self._flusher,
            self._open_mark,
            self._root_str,
        )
        self._unclosed.atexit = False
        # The process that opened the store: a forked child must not use it (see _check_open).
        self._pid = os.getpid()
        if read_only:
            return  # (what follows writes: the folder's identity, the reconcile, verdicts)
        from localstore._reconcile import Reconciler, check_root
        from localstore._state_temps import sweep_state_temps

        # What a write killed before its rename left in state/ (daemon.json's temp holds the
        # daemon's token): nothing else sweeps that folder.
        sweep_state_temps(self.paths.state)
        try:
            # Whether or not this open reconciles: a later 'check --fix' or watcher rescan
            # must not take an empty stand-in folder for deleted blueprints either.
            check_root(self)
            if reconcile:
                Reconciler(self).run(fix=True)
            # What the daemon's watcher or the CLI recorded while the app was closed, and what
            # an older or other validator judged, is judged by this one now, so that list, load
            # and sync see its verdicts (and sync stops holding them back).
            if validator is not None and replace_home_validator:
                self.revalidate()
            elif validator is not None and self._may_claim_home():
                # Not revalidate(), which writes this store's validator as the home's: over one
                # an app registered after the claim (its rules lost to the daemon's config).
                self._rejudge("b.judged_by IS NOT ?", (self.validator_name,))
        except BaseException:
            self.close()  # a failed open must not leave its maintainer thread running
            raise

    def _open_index(self, recover: bool) -> Index:
        path = self.paths.index_db

        def attempt() -> Index:
            index = Index(
                path, busy_timeout_ms=self.settings.busy_timeout_ms, read_only=self.read_only_reason
            )
            if recover:
                try:
                    index.quick_check()  # damaged pages, not only a damaged header
                except BaseException:
                    index.close()
                    raise
            return index

        try:
            return attempt()
        except IndexStoreError as exc:
            if not recover or not index_damaged(exc):
                raise
            damage = exc
        self._refuse_rebuild_while_held()
        try:
            # Files are the truth, the index is derived: set the damaged one aside (its history
            # may be salvageable) and let the open build a fresh one that the reconcile fills
            # from the files. Other stores' opens wait on the mark meanwhile (a moment).
            self.recovered_index = set_aside(path)
            log.warning(
                "the index was damaged (%s); moved it to %s and rebuilt it from the files "
                "(history before this point was not recovered)",
                damage.args[0] if damage.args else damage,
                self.recovered_index,
            )
            return attempt()
        finally:
            self._open_mark.share()

    def _refuse_rebuild_while_held(self) -> None:
        """Raise LockHeldError when another process or store has this home open, before a damaged
        index is moved aside; else hold the open-store mark exclusively (share() gives it back).

        Such a store keeps its connection to the moved file and goes on writing there: the files
        stay right and its next open reconciles them, but the history it writes meanwhile lands in
        the file set aside. The daemon and an app syncing in-process are named from the home's
        lock; any other open store (an app that opened it without syncing, `localstore watch`, a
        command under way) from the open-store mark every store holds (localstore._presence).
        The repair itself is not attempted until they are gone.
        """
        from localstore._daemon_state import _lock_file_pid, daemon_running, lock_is_held

        daemon = daemon_running(self.settings)
        if daemon is not None:
            self._refuse_rebuild(f"the daemon, pid {daemon['pid']}")
        if lock_is_held(self.paths.state):
            holder = _lock_file_pid(self.paths.state)
            self._refuse_rebuild(f"{'' if holder is None else f'pid {holder}, '}an app syncing it")
        if not self._open_mark.try_exclusive():
            pids = ", ".join(describe_pid(pid) for pid in self._open_mark.holders())
            self._refuse_rebuild(
                f"{pids or 'another process'}: an app with the store open, `localstore watch` "
                "or another localstore command"
            )

    @staticmethod
    def _refuse_rebuild(who: str) -> NoReturn:
        raise LockHeldError(
            f"cannot rebuild the damaged index: another process has this home open ({who})",
            hint="stop it (`localstore daemon --stop` for the daemon, quit the app, or let the "
            "command end), then run 'localstore check --fix' again; it would go on writing to the "
            "index moved aside",
        )

    def index_health(self) -> dict[str, Any]:
        """The index's upkeep, for status reports: ``wal_bytes`` and ``maintainer`` (its
        ``Maintainer.health()``; None when this store runs none). Cheap: no index access."""
        return {
            "wal_bytes": wal_size(self.paths.index_db),
            "maintainer": None if self._maintainer is None else self._maintainer.health(),
        }

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> BlueprintStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # Pickled when an app hands its store to a process started with spawn (or forkserver,
        # or a ProcessPoolExecutor): the connection, threads and locks are this process's, so
        # it failed deep inside them with "cannot pickle '_thread.lock' object". Copies too.
        home = self.settings.home
        where = "" if home is None else f"home={str(home)!r}"  # (None: the platform folders)
        raise InvalidInputError(
            "a store cannot be sent to another process (nor copied): its index connection and "
            "threads belong to the process that opened it",
            hint=f"pass the home instead and open it there with localstore.open({where})",
        )

    def close(self) -> None:
        """Stop background work and close the index. Idempotent.

        Once it returns no subscriber is called again, not even for the rest of a batch whose
        delivery is under way (a subscriber that closed the store in answer to its first event).
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._unclosed.detach()
        # First: what the stopping watcher or sync commits now reaches no app that is closing.
        self.events.close()
        if os.getpid() != self._pid:
            # A forked child: the threads, the connection and the locks are the parent's (a
            # lock a parent thread held at the fork stays taken here for ever). Nothing to do.
            return
        # The threads the hooks join (watcher, sync) must not wait out the busy timeout (30 s)
        # for a write lock another process holds.
        self.index.interrupt_lock_waits()
        for cb in reversed(list(self._on_close)):
            try:
                cb()
            except Exception:  # closing must go on; each component logs its own failure
                log.exception("close hook %r failed", cb)
        if self._maintainer is not None:
            self._maintainer.stop()
            self._maintainer.join(10)
        self._flusher.shutdown(wait=True)
        self.index.close()
        self._open_mark.close()  # (after the index: a rebuild may not start under its connection)

    def on_close(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when the store closes (components stop their threads here).

        Returns a function that takes the hook back (idempotent; nothing once the store closes):
        a component that stops before the store calls it, or every stopped one stays reachable
        from the store until it closes. Raises StoreClosedError after close() (the hook would
        never run), InvalidInputError for a callback that is not callable. Against a close()
        on another thread, the hook either runs in that close() or this call raises
        StoreClosedError: it is never accepted and then skipped.
        """
        if not callable(callback):
            raise wrong_type(
                "a close hook", callback, "callable", hint="pass a function taking no arguments"
            )
        entry = _CloseHook(callback)
        with self._while_open():
            self._on_close.append(entry)

        def remove() -> None:
            with self._close_lock:
                if self._closed:
                    return  # close() runs the hooks from its own copy of the list
                try:
                    self._on_close.remove(entry)
                except ValueError:
                    pass

        return remove

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed

    @property
    def device_id(self) -> str:
        """This home's device id (docs/sync-engine.md, "Device identity").

        Read from the index at each use (one primary-key lookup): another process's sync engine
        may replace it (``SyncEngine._new_device_id``, when the server shows another home
        pushing under it). Kept as read at open, this store's revisions went on naming the id
        given up, and a sync started here once that process had stopped pushed under it again,
        taking the other home's rows for its own writes. After close(), or when the index holds
        none (a read-only store of a home that never had one), the id as last read.
        """
        try:
            with self.index.read() as cur:
                rows = cur.execute(_DEVICE_ID_SQL).fetchall()
        except StoreClosedError:  # (closed, or a forked child's copy)
            return self._device_id
        if rows:
            self._device_id = str(rows[0][0])
        return self._device_id

    def _revision_device(self, cur: Any) -> str:
        """The device id a revision recorded in the current write transaction names: read once
        per transaction (device_id's own read, once per revision, was ~2 % of a download)."""
        serial = self.index.write_serial
        if self._device_serial != serial:
            rows = cur.execute(_DEVICE_ID_SQL).fetchall()
            if rows:
                self._device_id = str(rows[0][0])
            self._device_serial = serial
        return self._device_id

    def daemon(self) -> dict[str, Any] | None:
        """The daemon serving this home (pid, port, ...), or None: then the app may sync itself."""
        from localstore._daemon_state import daemon_running

        return daemon_running(self.settings)

    def start_sync(self, **engine_kwargs: Any) -> EmbeddedSync:
        """Run the sync engine in this process, holding the home's lock; it stops with the store.

        Returns the ``sync.embed.EmbeddedSync`` handle. Raises LockHeldError (precisely
        ``sync.SyncLockedError``, a subclass) when a daemon (or another app, or another store
        in this process) already syncs this home, ConfigError when the sync package is missing,
        and the sync package's own errors, ``sync.SyncError``s (LocalStoreErrors too: one
        tree): ``sync.NotLoggedInError`` without a cloud session, another ``sync.AuthError``
        when the session cannot be read (no usable keychain). WatcherError when the folder
        cannot be watched.
        """
        self._check_writable("sync")
        try:
            # Imported here, never at module level: localstore must not depend on sync.
            from sync.embed import start_sync
        except ImportError as exc:
            raise ConfigError(
                "sync is not available in this installation",
                hint="install localstore with its sync package",
            ) from exc
        return start_sync(self, **engine_kwargs)  # (it hooks the handle's stop to close())

    @contextlib.contextmanager
    def _while_open(self) -> Iterator[None]:
        """Hold the close lock with the store open, or raise StoreClosedError.

        close() marks the store closed under this lock before it forgets the subscribers and
        copies the close hooks, so what the block adds is in place by then. Checked without it
        first, the add raced close(): a hook added after that copy never ran, a subscriber added
        after the forgetting stayed on the closed store.
        """
        self._check_open()  # (first unlocked: in a forked child a parent's thread may hold it)
        with self._close_lock:
            self._check_open()
            yield

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed", hint="open it again")
        if os.getpid() != self._pid:
            raise forked_error(self._pid)

    def _check_writable(self, action: str) -> None:
        """Raise ReadOnlyStoreError on a read-only store, before anything (a file) is written:
        the index refuses every write too, but a save writes its files first."""
        self._check_open()
        if self.read_only_reason is not None:
            raise self.index.read_only_error(action)

    @property
    def read_only(self) -> bool:
        """True for a store opened read-only (``read_only_reason`` says why)."""
        return self.read_only_reason is not None

    def subscribe(
        self, callback: Callable[[Event], None], *, kinds: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Receive every change event (or only ``kinds``); returns an unsubscribe function.

        Events come after the change is committed, on the committing thread once it released
        the index lock: one thread's in its order, different threads' in no order with each
        other, so keep each blueprint's rev and ignore an event below it (see
        localstore.events). Raises InvalidInputError for a callback that is not callable or an
        unknown kind, StoreClosedError after close(). Against a close() on another thread, the
        subscriber is either forgotten by that close() (as every other) or this call raises
        StoreClosedError: a closed store keeps none.
        """
        with self._while_open():
            return self.events.subscribe(callback, kinds=kinds)

    # -- paths and refs ----------------------------------------------------------------------------

    def abspath(self, rel: fs.StrPath) -> Path:
        """Absolute path of a canonical relative path (refusing escapes through links)."""
        text = rel if isinstance(rel, str) else fs.path_text(rel)  # (str: on the save path)
        if not isinstance(text, str):
            raise wrong_type(
                "rel",
                rel,
                "a relative path string",
                hint="pass a path as store.list() shows it, e.g. 'team/deploy.blueprint.yaml'",
            )
        return fs.resolve_inside(self.root, text, real_root=self._real_root)

    def _abspath_in(self, rel: str, batch: _Batch) -> str:
        folder, _, name = rel.rpartition("/")
        parent = self._root_str + (os.sep + folder.replace("/", os.sep) if folder else "")
        if parent not in batch.safe_dirs:
            resolved = str(self.abspath(rel))
            batch.safe_dirs.add(os.path.dirname(resolved))
            return resolved
        return parent + os.sep + name

    def check_yaml(self, content: bytes | str) -> None:
        """Check YAML exactly as a save into this store would (its limits; InvalidYAMLError,
        LimitExceededError). A later save of the same bytes skips its own check (an import checks
        a whole bundle before writing any of it, then saves it). Text is checked as its UTF-8
        bytes; anything else is InvalidInputError."""
        if isinstance(content, str):
            try:
                content = content.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _not_unicode("content", exc, InvalidInputError) from exc
        elif not isinstance(content, bytes | bytearray | memoryview):
            raise wrong_type(
                "content",
                content,
                "YAML bytes or text",
                hint="pass the YAML file's bytes (or its text)",
            )
        self._judge_ahead(bytes(content))

    def _judge_ahead(self, raw: bytes) -> None:
        """Check ``raw`` and run the validator on it now, remembering the verdict for a save of
        the same bytes (raises what the save would for bad YAML).

        Callers do this before they take the index's write lock: a slow validator inside the
        write transaction made every other process's write wait for it (and past the busy
        timeout fail). The verdict is keyed by the bytes, so a save of anything else (the file
        changed in between) is judged again inside the lock: nothing stale is recorded.
        """
        digest = hashlib.sha256(raw).digest()
        validator = self.validator
        if self._known_verdict(digest, validator) is not None:
            return
        if validator is None:
            # Nothing will look at the parsed document: check it without building it.
            check_yaml(raw, self.limits)
            problems: tuple[str, ...] = ()
        else:
            problems = run_validator(validator, parse_yaml(raw, self.limits))
        self._remember_verdict(digest, validator, problems)

    def _known_verdict(self, digest: bytes, validator: Validator | None) -> tuple[str, ...] | None:
        """The remembered verdict of ``validator`` on the bytes with this sha256, or None; kept
        as the newest (a verdict looked up ahead again is about to be used)."""
        with self._judged_lock:
            known = self._judged.pop(digest, None)
            if known is None or known[0] is not validator:
                return None
            self._judged[digest] = known
            return known[1]

    def _remember_verdict(
        self, digest: bytes, validator: Validator | None, problems: tuple[str, ...]
    ) -> None:
        # Bounded: an import checks a whole bundle ahead; a verdict's problems are at most
        # MAX_PROBLEMS texts of MAX_PROBLEM_CHARS, so a full memo is some tens of MB at worst.
        # Full, the older half goes (not all of it): a write that judged up to JUDGED_AHEAD
        # texts ahead keeps every one of them (a sync page, a reconcile), where clearing the
        # memo lost the verdicts judged just before and judged them again inside the lock.
        with self._judged_lock:
            limit = 65_536 if validator is None else 4_096
            if len(self._judged) >= limit:
                for old in list(itertools.islice(self._judged, limit // 2)):
                    del self._judged[old]
            self._judged[digest] = (validator, problems)
            self._judged_count += 1

    def _judge_texts_ahead(self, contents: Iterable[str | bytes]) -> int:
        """Judge YAML texts a write is about to save with the app's validator, before it takes
        the write lock (see _judge_ahead); returns how many verdicts that remembered.

        For writes whose texts are known ahead but not as save requests: a sync pass's pulled
        rows and merge results (sync._apply.Applier.judge_ahead), the open-time reconcile's
        changed files. Bad YAML is left to the save, which refuses it inside as before. At most
        JUDGED_AHEAD texts: the memo keeps no more for certain; the rest are judged inside.
        """
        if self.validator is None:
            return 0  # the YAML check alone is fast: not worth a second one
        start = self._judged_count
        for n, content in enumerate(contents):
            if n >= JUDGED_AHEAD:
                break
            try:
                self._judge_ahead(_content_bytes(content))
            except (LocalStoreError, ValueError, TypeError):
                continue
        return self._judged_count - start

    def _merge_verdict(self, text: str, document: Mapping[str, Any]) -> tuple[str, ...]:
        """The validator's problems with a text a merge made (``document`` is its loaded data),
        remembered for the save of those bytes (sync.merge's ``judge``).

        A merge run before the write lock (Applier.judge_ahead) judges its results here; the
        same merge inside the lock, and the save of its result, then find the verdicts instead
        of running the validator in the transaction. Remembered only when the save's own check
        of the bytes (this store's limits) passes: a hit skips that check.
        """
        validator = self.validator
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            return run_validator(validator, document)  # (no save takes it either)
        digest = hashlib.sha256(raw).digest()
        known = self._known_verdict(digest, validator)
        if known is not None:
            return known
        problems = run_validator(validator, document)
        try:
            check_yaml(raw, self.limits)
        except LocalStoreError:
            return problems
        self._remember_verdict(digest, validator, problems)
        return problems

    def _row_verdict_holds(self, row: Row | None, digest: bytes) -> bool:
        """Whether ``row`` records this store's validator's verdict on the YAML with this sha256
        (by its name: a rule set has one name, and rules changed under it are judged again with
        revalidate(every=True), which rewrites every row)."""
        return (
            row is not None
            and not row.deleted
            and row.flagged is None
            and row.judged_by == self.validator_name
            and row.yaml_sha256 == digest.hex()
        )

    def _prejudge(self, requests: Sequence[SaveRequest]) -> None:
        """Judge the YAML of a batch's requests with the app's validator before the write lock
        (see _judge_ahead); a request whose YAML is bad or cannot be found is left to the save,
        which refuses it with the same error inside the lock."""
        if self.validator is None:
            return  # the YAML check alone is fast (~0.2 ms): not worth a second dump or read
        for req in requests:
            try:
                if req.content is None:
                    row = self._current_row(req)
                    if row is None or (
                        row.flagged is None and row.judged_by == self.validator_name
                    ):
                        # The save keeps the row's own verdict for the bytes it recorded (see
                        # _row_verdict_holds); a file edited since is recorded (and judged)
                        # first, inside.
                        continue
                    raw = self._read_current_yaml(row)
                else:
                    raw = _content_bytes(req.content)
                self._judge_ahead(raw)
            except (LocalStoreError, ValueError, TypeError, OSError):
                continue

    def _current_row(self, req: SaveRequest) -> Row | None:
        """The live row a meta-only save request is likely to update (read without the lock;
        the save finds it again inside)."""
        with self.index.read() as cur:
            if isinstance(req.id, str) and is_uuid(req.id.lower()):
                row = self._row_by(cur, "id = ? AND deleted = 0", (req.id.lower(),))
            else:
                rel = fs.normalize_path(req.path)
                row = self._live_at(cur, rel)
        return row

    def _row_by(self, cur: Any, where: str, args: Sequence[Any]) -> Row | None:
        rows = cur.execute(f"SELECT {_ROW_COLUMNS} FROM blueprints WHERE {where}", args).fetchall()
        return Row.from_tuple(rows[0]) if rows else None

    def _live_at(self, cur: Any, rel: str) -> Row | None:
        """The live row at exactly ``rel``, else the one holding its key (``rel`` in other case)."""
        holder = self._row_by(cur, "path_key = ? AND deleted = 0", (fs.path_key(rel),))
        if holder is not None and holder.path == rel:
            return holder
        return self._exact_row(cur, rel) or holder

    def _exact_row(self, cur: Any, rel: str) -> Row | None:
        """The live row at exactly ``rel`` when another row holds its key, or none does.

        Core v11 changed the key: two blueprints whose names it now makes one (``ΐ`` beside
        ``Ϊ́``) are both kept, the second under a key no path has (index._v11_path_keys), and
        the key alone finds only the first. Asked only when the key lookup did not find ``rel``
        itself (a new path, or another case of it): one more indexed lookup there.
        """
        return self._row_by(cur, "path = ? AND deleted = 0", (rel,))

    def _resolve(self, cur: Any, ref: fs.StrPath, *, include_deleted: bool = False) -> Row:
        if not isinstance(ref, str):
            text = fs.path_text(ref)  # (a relative pathlib path names the blueprint at it)
            if not isinstance(text, str):
                raise InvalidRefError(
                    f"the reference must be a string, not {type(ref).__name__}",
                    hint="give an id, an id prefix or a path as text (or a relative pathlib.Path)",
                )
            ref = text
        if not ref.strip():
            raise InvalidRefError("empty reference", hint="give an id, an id prefix or a path")
        given, ref = ref, ref.strip()
        live = "" if include_deleted else " AND deleted = 0"
        if is_uuid(ref.lower()):
            row = self._row_by(cur, "id = ?" + live, (ref.lower(),))
            if row:
                return row
        rels: builtins.list[str] = []
        refused: UnsafePathError | None = None
        # The path as given first: a name may start with spaces, and ``x `` is the file
        # ``x .blueprint.yaml`` (only a part's last character may not be a space). Stripped
        # first, ``rm " lead"`` deleted ``lead`` and `` lead`` could not be named at all. The
        # stripped form stays the fallback (an id or path pasted with a space or newline).
        for candidate in dict.fromkeys((given, ref)):
            try:
                rel = fs.normalize_path(candidate)
            except UnsafePathError as exc:
                refused = exc
                continue
            rels.append(rel)
            row = self._live_at(cur, rel)
            if row:
                return row
            if include_deleted:
                row = self._row_by(
                    cur,
                    "path_key = ? AND deleted = 1 ORDER BY op_id DESC LIMIT 1",
                    (fs.path_key(rel),),
                )
                if row:
                    return row
        looks_like_id = all(c in "0123456789abcdef-" for c in ref.lower())
        if len(ref) >= MIN_ID_PREFIX and looks_like_id:
            span = f"FROM blueprints WHERE id >= ? AND id < ?{live}"
            bounds = (ref.lower(), ref.lower() + "\uffff")
            rows = cur.execute(
                f"SELECT {_ROW_COLUMNS} {span} ORDER BY path LIMIT {_AMBIGUOUS_SHOWN + 1}", bounds
            ).fetchall()
            if len(rows) > 1:
                count = len(rows)
                if count > _AMBIGUOUS_SHOWN:
                    count = cur.execute(f"SELECT COUNT(*) {span}", bounds).fetchone()[0]
                paths = [Row.from_tuple(r).path for r in rows[:_AMBIGUOUS_SHOWN]]
                raise _ambiguous_prefix(ref, paths, count)
            if rows:
                return Row.from_tuple(rows[0])
        gone = None if include_deleted else self._deleted_by(cur, ref, rels[0] if rels else None)
        if gone is not None:
            # ('localstore ls' would not show it: what helps is its history.)
            raise NotFoundError(
                f"{ref!r} was deleted ({gone.path}, id {gone.id})",
                hint=f"'localstore history {gone.id}' lists its revisions; 'localstore restore "
                f"{gone.id} {gone.rev - 1}' brings it back",
            )
        if looks_like_id and len(ref) < MIN_ID_PREFIX:
            # `show 3f` said "no blueprint matches" even when an id starts with 3f: a shorter
            # prefix is never looked up (it would match too many), which nothing said.
            raise NotFoundError(
                f"no blueprint matches {ref!r}: an id prefix needs at least "
                f"{MIN_ID_PREFIX} characters",
                hint=f"give {MIN_ID_PREFIX} or more characters of the id, or the path "
                "(see 'localstore ls')",
            )
        if refused is not None and not rels:
            raise self._unsafe_ref(ref, refused)
        raise NotFoundError(f"no blueprint matches {ref!r}", hint="see 'localstore ls'")

    def _unsafe_ref(self, ref: str, refused: UnsafePathError) -> NotFoundError:
        """ "No blueprint matches" a REF no blueprint's path can have, saying why and how to write it.

        Not found, still (exists() is False, exit 4 as before): but "no blueprint matches
        './a/x'" alone, beside a blueprint a/x, read as if a/x did not exist.
        """
        hint = refused.hint
        try:
            inside = PurePosixPath(ref).relative_to(self.root.as_posix()).as_posix()
        except ValueError:
            inside = ""
        if inside and inside != ".":
            # (A full path pasted from a file manager or a shell's completion.)
            hint = f"give {inside!r}, the path relative to the blueprints folder"
        return NotFoundError(f"no blueprint matches {ref!r}: {refused.message}", hint=hint)

    def _deleted_by(self, cur: Any, ref: str, rel: str | None) -> Row | None:
        """The deleted blueprint with this id or last at this path, if any."""
        if is_uuid(ref.lower()):
            row = self._row_by(cur, "id = ? AND deleted = 1", (ref.lower(),))
            if row is not None:
                return row
        if rel is None:
            return None
        return self._row_by(
            cur, "path_key = ? AND deleted = 1 ORDER BY op_id DESC LIMIT 1", (fs.path_key(rel),)
        )

    def resolve(self, ref: fs.StrPath, *, include_deleted: bool = False) -> BlueprintInfo:
        """Find a blueprint by id, unique id prefix (at least MIN_ID_PREFIX characters) or path.

        Raises NotFoundError, AmbiguousRefError.
        """
        self._check_open()
        _flag_arg("include_deleted", include_deleted)
        with self.index.read() as cur:
            return self._resolve(cur, ref, include_deleted=include_deleted).info()

    def row_by_id(self, blueprint_id: str, cur: Any = None) -> Row | None:
        """The index row with this id, deleted or not, or None: one lookup, no reference
        resolving. ``cur`` reads inside the caller's transaction (sync applies pulled pages so)."""
        if not isinstance(blueprint_id, str):
            raise wrong_type(
                "blueprint_id",
                blueprint_id,
                "a string",
                hint="pass a blueprint's id as text (BlueprintInfo.id)",
            )
        where, args = "id = ?", (blueprint_id.lower(),)
        if cur is not None:
            return self._row_by(cur, where, args)
        self._check_open()
        with self.index.read() as own:
            return self._row_by(own, where, args)

    def row(self, ref: fs.StrPath, *, include_deleted: bool = False) -> Row:
        """The raw index row of a blueprint (for sync and tools)."""
        self._check_open()
        _flag_arg("include_deleted", include_deleted)
        with self.index.read() as cur:
            return self._resolve(cur, ref, include_deleted=include_deleted)

    # -- save --------------------------------------------------------------------------------------

    def _prepare(
        self,
        rel: str,
        content: str | bytes | Mapping[str, Any],
        meta: BlueprintMeta,
        prior: Row | None = None,
    ) -> _Prepared:
        text: str | None = None  # the content as text, when it came as text (or was dumped)
        try:
            if isinstance(content, str):
                text = content
            elif isinstance(content, Mapping):
                text = dump_yaml(content)
            raw = text.encode("utf-8") if text is not None else _content_bytes(content)
        except UnicodeEncodeError as exc:
            raise _not_unicode(f"{rel}: the content", exc, InvalidInputError) from exc
        validator = self.validator
        digest = hashlib.sha256(raw).digest()  # (the YAML's sha256 too: the row keeps it)
        # Looked up, not taken out: another item of the same write may save the same bytes (a
        # pulled page or an import of blueprints made from one template). Taken out, the first
        # used the verdict reached ahead and every other was judged again inside the lock.
        known = self._known_verdict(digest, validator)
        if known is not None:
            problems = known  # judged before the lock (_judge_ahead): these very bytes
        elif validator is not None and self._row_verdict_holds(prior, digest):
            # The row's own verdict on these very bytes, by this validator's name (a move, a
            # meta-only save, a conflict's blueprint moved aside): judging them again inside
            # the lock would only make every other writer wait. Still checked against this
            # store's limits, as any save is.
            assert prior is not None
            check_yaml(raw, self.limits)
            problems = prior.problems
        elif validator is None:
            # Nothing will look at the parsed document: check it without building it (most of a
            # save's CPU time went into constructing Python objects nobody used).
            check_yaml(raw, self.limits)
            problems = ()
        else:
            problems = run_validator(validator, parse_yaml(raw, self.limits))
        if text is None:
            # (Cannot fail: the checks, here or in _judge_ahead, refuse bytes that are not UTF-8.)
            text = raw.decode("utf-8")
        try:
            meta_bytes = encode_meta(meta)
        except UnicodeEncodeError as exc:
            raise _not_unicode(f"{rel}: the meta", exc, InvalidMetaError) from exc
        if len(meta_bytes) > MAX_META_BYTES:
            # Written, it could not be read back: reconcile would flag the blueprint, and sync
            # could not push what no store reads.
            raise InvalidMetaError(
                f"{rel}: the meta file would be {len(meta_bytes):,} bytes, over the"
                f" {MAX_META_BYTES:,}-byte limit of meta files",
                hint="shorten the description, tags or extra meta fields",
            )
        return _Prepared(
            path=rel,
            yaml_bytes=raw,
            meta=meta,
            meta_bytes=meta_bytes,
            content_hash=content_hash(raw, meta),
            valid=not problems,
            problems=problems,
            judged_by=self.validator_name,
            text=text,
            yaml_sha256=digest.hex(),
        )

    def _merge_meta(
        self,
        base: BlueprintMeta | None,
        rel: str,
        blueprint_id: str | None,
        meta: BlueprintMeta | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        keep_modified: bool,
    ) -> BlueprintMeta:
        # The clock is read only when a time is filled in (a download's metas carry both), once.
        now = ""
        if meta is not None:
            if not isinstance(meta, BlueprintMeta | Mapping):
                raise InvalidMetaError(
                    f"meta must be a BlueprintMeta or a mapping, not {type(meta).__name__}",
                    hint="pass meta=blueprint.meta (or its to_dict()), or the name=/tags=/... "
                    "keywords",
                )
            m = meta if isinstance(meta, BlueprintMeta) else BlueprintMeta.from_dict(meta)
            # As for save's keywords: saved, a NUL could never sync (the cloud's jsonb holds none).
            for key in ("name", "description", "author", "version"):
                text = getattr(m, key)
                if isinstance(text, str):
                    _no_nul(f"meta {key}", text)
            for tag in m.tags:
                if isinstance(tag, str):
                    _no_nul("the tag", tag)
            if base is not None and m.id != base.id:
                raise InvalidInputError(
                    f"meta id {m.id} does not match the blueprint's id {base.id}",
                    hint="the id of a blueprint never changes",
                )
        elif base is not None:
            m = base
        else:
            now = utc_now()
            m = BlueprintMeta(
                id=blueprint_id or new_id(), name=fs.display_name(rel), created=now, modified=now
            )
        changes = {k: v for k, v in fields.items() if v is not None}
        # (Anything else was written and then refused by every read of the meta file, or taken
        # as something else: tags=[5] became the tag "5".)
        for key in ("public", "encrypted"):
            if key in changes:
                _flag_arg(key, changes[key])
        for key in ("name", "description", "author", "version"):
            if key in changes:
                _meta_text_arg(key, changes[key])
        if "tags" in changes:
            changes["tags"] = _tags_arg(changes["tags"])
        if changes:
            m = m.replace(**changes)
        if not m.created:
            now = now or utc_now()
            m = m.replace(created=(base.created if base and base.created else now))
        if not (keep_modified and m.modified):
            m = m.replace(modified=now or utc_now())
        return m

    def save(
        self,
        path: fs.StrPath,
        content: str | bytes | Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        author: str | None = None,
        version: str | None = None,
        tags: Sequence[str] | None = None,
        public: bool | None = None,
        encrypted: bool | None = None,
        meta: BlueprintMeta | Mapping[str, Any] | None = None,
        id: str | None = None,
        origin: str = "local",
        expected_rev: int | None = None,
        tx_hook: TxHook | None = None,
    ) -> Blueprint:
        """Create or update the blueprint at ``path`` (or with ``id``, moving it to ``path``).

        Text content is stored byte for byte (comments and formatting kept); a mapping is dumped as
        YAML. ``content=None`` keeps the current YAML (a meta-only change). Saving identical content
        again is a no-op that returns the current revision. ``tx_hook(cursor, blueprint)`` runs inside
        the index transaction (sync uses it to record its base atomically).

        Raises InvalidYAMLError, LimitExceededError, InvalidMetaError, UnsafePathError,
        AlreadyExistsError (path taken by another blueprint), RevisionConflictError (expected_rev is
        stale), StorageError (the previous version stays intact).
        """
        self._check_open()
        _origin_arg(origin)
        if expected_rev is not None:
            _rev_arg("expected_rev", expected_rev)
        fields = {
            "name": name,
            "description": description,
            "author": author,
            "version": version,
            "tags": tags,
            "public": public,
            "encrypted": encrypted,
        }
        request = SaveRequest(
            path=path,
            content=content,
            meta=meta,
            id=id,
            fields=fields,
            expected_rev=expected_rev,
            tx_hook=tx_hook,
        )
        result = self._save_batch([request], origin, strict=True)[0]
        assert isinstance(result, Blueprint)
        return result

    def save_many(
        self, requests: Sequence[SaveRequest], *, origin: str = "local"
    ) -> builtins.list[Blueprint | LocalStoreError]:
        """Save many blueprints in one transaction with few disk flushes (sync and import use it).

        Each result is the saved Blueprint, or the error of an item with bad input (the other items
        go on). A storage failure aborts the whole batch, restores what was there, and raises. A crash
        is survived per blueprint: after a kill each item is either as before or fully saved (the
        renames that happened are recorded by reconcile on the next open), never a half pair.
        """
        self._check_open()
        _origin_arg(origin)
        return self._save_batch(_requests_arg(requests), origin, strict=False)

    def _save_batch(
        self, requests: Sequence[SaveRequest], origin: str, *, strict: bool
    ) -> builtins.list[Blueprint | LocalStoreError]:
        self._check_writable("save")
        if origin == "local":
            # What the app hands in, typed on any system: macOS text fields and file names give
            # decomposed (NFD) text, others composed (NFC). Stored as one form, a tag filter or a
            # search word typed on another device finds it. Not what sync, merge or import
            # apply: those carry another device's content hash, which a change would break.
            requests = [_composed_request(r) for r in requests]
        # Before the write lock: a slow validator must not hold every other writer up.
        self._prejudge(requests)
        if origin == "remote" and self.validator is not None:
            self._judge_unrecorded_ahead(self._request_paths(requests), self._new_path_check())
        refused: dict[int, LocalStoreError] = {}
        recorded_first = None if origin == "remote" or self.index.write_open else set[str]()
        # Per file found taken or changed at its placing: how many times, and the file found
        # there the last time (see _file_seen).
        races: dict[str, tuple[int, tuple[int, int, int, int] | None]] = {}
        repeats = 0  # (runs again for a file met before: bounded by _RACE_REPEATS_MAX)
        # The path keys of those files: a run again places each right after its item.
        place_at_once: set[str] = set()
        settled: set[str] = set()  # (see _Batch.settled)
        orphans_kept: dict[str, tuple[str, Path, str]] = {}  # (see _Batch.orphans_kept)
        while True:
            try:
                results = self._save_attempt(
                    requests, origin, refused, recorded_first, settled, place_at_once, orphans_kept
                )
                break
            except _RecordFirst as first:
                assert recorded_first is not None  # (raised only when it is a set)
                self._commit_batch_edits(requests, first.rel, recorded_first)
            except fs.NameTakenError as taken:
                # Another program (an editor, which takes no lock of ours) created a name this
                # attempt found free, or saved over a file it had checked, between its look and
                # its placing the file there: nothing of it was replaced (a changed file is
                # back in place, see files.replace_recorded), the attempt was undone, and it
                # runs again. That one finds the file, as any unrecorded file at a save's
                # target: recorded first (or in the batch), then saved over with its version in
                # history, or the item refused.
                if isinstance(taken, fs.TargetChangedError) and taken.set_aside:
                    self._keep_set_aside(taken.set_aside, taken.target)
                rel = self._rel_of(taken.target)
                count, before = races.get(taken.target, (0, None))
                seen = _file_seen(taken.target)
                if count and (origin == "remote" or seen == before):
                    # Taken again with nothing new there: a name the folder's listing cannot
                    # show (a Windows short name). Or a download's again, whose next attempt
                    # refused that item (it never reaches a file it found edited). Reported
                    # (nothing changed) rather than tried forever.
                    raise
                if count and repeats == _RACE_REPEATS_MAX:
                    # Another program saved this file again on run after run: still saving
                    # it. Its latest version is recorded too (as each before it), so history
                    # holds every one, and nothing of the batch was written.
                    if recorded_first is not None:
                        self._commit_batch_edits(requests, rel, recorded_first)
                    raise fs.KeptChangingError(
                        taken.target, rel, count + 1, recorded=recorded_first is not None
                    ) from taken
                # Another program's save (an autosaving editor) or a new file of its since the
                # last attempt: its version is recorded, and the batch runs again, that file
                # placed right after its item (the window narrowed from the rest of the batch
                # to one item), up to _RACE_REPEATS_MAX more times. Before, a second race on
                # the same file failed the batch: an editor autosaving every second during a
                # batch of a second or more made local saves fail almost every time.
                repeats += 1 if count else 0
                races[taken.target] = (count + 1, seen)
                if origin != "remote":  # (a download's next attempt refuses that item instead)
                    place_at_once.add(fs.path_key(rel))
                if recorded_first is not None:
                    self._commit_batch_edits(requests, rel, recorded_first)
                elif origin == "remote":
                    # The next attempt records that file inside and refuses its item: settled
                    # first (the swap meets an in-place editor at its truncate: read at once,
                    # the empty file was recorded, an invalid revision; see _await_settled, which
                    # inside a caller's transaction waits under its lock, at most
                    # _SETTLE_WAIT_MAX_S, only in this race), then judged, its ingest taking
                    # the verdict.
                    self._await_settled([rel])
                    settled.add(rel)
                    self._judge_unrecorded_ahead([rel])
            except _ItemRefused as refusal:
                # A hook refused its item after the item was written: the attempt was undone
                # (index and files), and runs again without that item, so the refused item
                # leaves nothing behind. Rejected: a SAVEPOINT per item with a hook, which cost
                # ~300 us a blueprint (its statement journal) for a refusal that is rare.
                refused[refusal.position] = refusal.error
        if strict and isinstance(results[0], LocalStoreError):
            raise results[0]
        return results

    def _commit_batch_edits(
        self, requests: Sequence[SaveRequest], first: str, recorded_first: set[str]
    ) -> None:
        """Commit the unrecorded edit at ``first`` and at every other path of the batch that
        holds one, before the batch runs again (see _record_first)."""
        # Every path, not only the one met: one at a time, a batch over N edited files (a git
        # pull with no watcher, then the app rewriting them) ran N+1 attempts, each writing and
        # undoing the files of every item before the one that stopped it (N squared writes).
        todo = [first] + [
            rel
            for rel in self._unrecorded_paths(
                self._request_paths(requests), new_files=self._new_path_check()
            )
            if rel not in recorded_first and rel != first
        ]
        recorded_first.update(todo)
        self._commit_ingest(todo)

    def _keep_set_aside(self, files: Sequence[str], target: str) -> None:
        """Keep in <data>/recovered/ the files of another program's that a write took off
        ``target`` (see files.TargetChangedError) and no revision holds; remove the rest."""
        rel = os.path.relpath(target, self._root_str).replace(os.sep, "/")
        for aside in files:
            try:
                keep_set_aside(self, aside, rel)
            except (OSError, LocalStoreError) as exc:
                # (Left where it is, in the blueprints folder: reconcile keeps it later.)
                log.warning("could not keep %s (a version of %s): %s", aside, rel, exc)

    def _rel_of(self, target: str) -> str:
        """The YAML path (relative, '/'-separated) of the pair that holds the file ``target``."""
        rel = os.path.relpath(target, self._root_str).replace(os.sep, "/")
        return fs.yaml_path_for(rel) if rel.endswith(fs.META_SUFFIX) else rel

    def _save_attempt(
        self,
        requests: Sequence[SaveRequest],
        origin: str,
        refused: Mapping[int, LocalStoreError],
        recorded_first: set[str] | None = None,
        settled: set[str] | None = None,
        place_at_once: Collection[str] = frozenset(),
        orphans_kept: dict[str, tuple[str, Path, str]] | None = None,
    ) -> builtins.list[Blueprint | LocalStoreError]:
        """One run of a batch. ``place_at_once``: the path keys whose files another program
        saved or created at their placing in an earlier run (see _save_batch), placed right
        after their item's write."""
        pending = fs.PendingWrites(
            expected_files=2 * len(requests),
            flusher=self._flusher,
            # On a nearly full disk the replaced files are kept until the commit: a failed one
            # is then undone by renames, where rewriting from history would need free space.
            keep_previous=fs.space_is_low(self._root_str),
        )
        batch = _Batch(
            pending,
            recorded_first=recorded_first,
            settled=set() if settled is None else settled,
            orphans_kept={} if orphans_kept is None else orphans_kept,
        )
        results: builtins.list[Blueprint | LocalStoreError] = []
        outcome = WriteOutcome()
        try:
            with self.index.write(outcome) as cur:
                for position, request in enumerate(requests):
                    if position in refused:
                        results.append(refused[position])
                        continue
                    try:
                        saved = self._save_one(cur, request, origin, batch)
                    except _ITEM_ERRORS as exc:
                        # Bad input is found before anything of this item touches the disk. The
                        # transaction still commits (also for a single save): an unrecorded edit
                        # ingested before the refusal must stay in history.
                        results.append(exc)
                        continue
                    except _ItemRefused as refusal:
                        refusal.position = position
                        raise
                    results.append(saved)
                    if place_at_once and fs.path_key(saved.path) in place_at_once:
                        # (Only in a run again after a race: one more flush there, none here.)
                        self._place_files(cur, batch)
                self._place_files(cur, batch)
        except BaseException as exc:
            if outcome.done:
                # Raised once the index committed (Ctrl-C right after the COMMIT, a commit
                # listener): the files are what the index holds, so they stay, and the save is
                # finished as one that returned; undone, the next open recorded them as deleted
                # (or edited back), and sync pushed that.
                self._saved(batch, pending)
            else:
                # Whatever failed after files were written (a flush, the index commit, a hook),
                # the previous versions are put back so the caller's error means "nothing
                # changed".
                pending.settle()
                batch.pending.abort()
                batch.pending.restore_previous()
                self._undo_touched(
                    batch.touched, batch.ingested, batch.pending.placed, batch.orphans
                )
                self._keep_undone(batch.pending)
            if isinstance(exc, apsw.Error):  # never leaks out of the public API
                raise map_apsw_error(exc, "save") from exc
            raise
        self._saved(batch, pending)
        return results

    def _saved(self, batch: _Batch, pending: fs.PendingWrites) -> None:
        """Finish a save attempt whose write committed (or was released into a caller's)."""
        pending.settle()  # (after the commit: the unlinks ran beside it)
        if batch.touched:
            # Inside a caller's transaction (the sync engine's pass) this write was only a
            # savepoint: if that transaction rolls back later, these files must go back too, or
            # they stay on disk with no index row (a conflict copy that reconcile then adopts as
            # a new blueprint). Dropped at once when this write was the outermost (committed).
            touched, written, ingested = batch.touched, batch.written, batch.ingested
            orphans = batch.orphans
            self.index.undo_on_rollback(
                lambda: self._undo_released(touched, written, ingested, pending, orphans)
            )
        if pending.kept:
            # Kept until the outermost commit (at once if this write was it); on a rollback
            # the undo above puts them back instead and drops the rest.
            self.index.after_commit(pending.discard_previous)
        self.events.publish(batch.events)

    @staticmethod
    def _place_files(cur: Any, batch: _Batch) -> None:
        """Rename the batch's temps into place, then record the placed files' change times.

        The rename sets them (the temps' stats in the rows have the times before it): without
        this, no saved pair would match its row, and every open would read every file again.
        """
        if batch.placing:
            # FTS5 keeps a transaction's new entries in memory and writes them out as a segment
            # at COMMIT (~100-150 us of CPU a 2 KB blueprint, the largest part of its commit).
            # Written here instead, the work runs while the flusher thread waits for the temps'
            # fsyncs, not after the folder's fsync on the way to the acknowledgement. A no-op
            # for a table with nothing pending; it never changes what gets indexed.
            for table in (_FULL, _DESCRIBED):
                cur.execute(f"INSERT INTO {table}({table}) VALUES ('flush')")
        batch.pending.commit()
        placed = batch.pending.take_placed()
        if not batch.placing:
            return
        cur.executemany(
            "UPDATE blueprints SET yaml_ctime_ns = ?, meta_ctime_ns = ? WHERE rid = ?",
            [
                (placed.get(yaml_abs), placed.get(meta_abs), rid)
                for yaml_abs, (rid, meta_abs) in batch.placing.items()
            ],
        )
        batch.placing.clear()

    def _undo_touched(
        self,
        touched: Sequence[tuple[Row | None, str]],
        ingested: Mapping[str, tuple[bytes, bytes | None]],
        placed: fs.PlacedFiles,
        orphans: _Orphans,
    ) -> None:
        """Put back the files of a batch's saves, newest first (see :meth:`_undo_files`)."""
        for existing, new_rel in reversed(touched):
            self._undo_files(existing, new_rel, placed, ingested, orphans)

    def _undo_released(
        self,
        touched: Sequence[tuple[Row | None, str]],
        written: Sequence[tuple[str, str]],
        ingested: Mapping[str, tuple[bytes, bytes | None]],
        pending: fs.PendingWrites,
        orphans: _Orphans,
    ) -> None:
        """Put back the files of a batch whose write was released into a caller's transaction
        that then rolled back (see Index.undo_on_rollback), newest first.

        Unlike the undo of the batch's own failure, this may come long after the files were
        written (a sync pass applies a whole page before it commits), so an editor may have
        saved over one of them since: a pair that no longer holds what the batch wrote is left
        as it is, and reconcile records it, rather than an edit put back over and lost. (A
        later undo of the same transaction that put back what this batch wrote makes the
        pair hold it again: undos run newest first.)
        """
        for (existing, new_rel), (yaml_sha, meta_sha) in reversed(
            list(zip(touched, written, strict=True))
        ):
            seen = self._held(new_rel, yaml_sha, meta_sha)
            if seen is None:
                log.warning(
                    "%s changed on disk before a failed write could put it back; left as it "
                    "is (reconcile records it)",
                    new_rel,
                )
                continue
            for rel in (new_rel, fs.meta_path_for(new_rel)):
                pending.restore_latest(str(self.abspath(rel)))
            # The files the batch placed, as they are now: a later write of the same transaction
            # undone before this one (newest first) put back what this batch wrote by a file of
            # its own (a new inode: a move's undo, a save's put-back), which the stats of the
            # batch's own placing no longer describe, so its put-back was refused as "changed
            # on disk". The bytes just checked are the batch's; their stats (taken before each
            # read) are what the put-back's swap compares: an editor's save since still shows.
            placed = {**pending.placed, **{p: st for p, st in seen.items() if p in pending.placed}}
            self._undo_files(existing, new_rel, placed, ingested, orphans)
        pending.discard_previous()
        self._keep_undone(pending)

    def _keep_undone(self, pending: fs.PendingWrites) -> None:
        """Keep the files an undo took off a name or could not put back (another program's
        save over a file the write had placed, see PendingWrites.to_keep) that no revision
        holds; remove the rest."""
        to_keep, pending.to_keep = pending.to_keep, []
        for aside, target in to_keep:
            self._keep_set_aside([aside], target)

    def _held(self, rel: str, yaml_sha: str, meta_sha: str) -> dict[str, fs.Recorded] | None:
        """If the pair at ``rel`` has exactly these bytes (by sha256), each file's stats taken
        just before its read (by absolute path); else None."""
        seen: dict[str, fs.Recorded] = {}
        try:
            for path, sha in ((rel, yaml_sha), (fs.meta_path_for(rel), meta_sha)):
                target = str(self.abspath(path))
                data, seen[target] = fs.read_regular_seen(target)
                if sha256_hex(data) != sha:
                    return None
        except (OSError, StorageError):
            return None
        return seen

    def _save_one(self, cur: Any, req: SaveRequest, origin: str, batch: _Batch) -> Blueprint:
        rel = fs.normalize_path(req.path)
        if req.id is not None and (not isinstance(req.id, str) or not is_uuid(req.id.lower())):
            raise InvalidInputError(
                f"{req.id!r} is not a valid blueprint id",
                hint="leave id out for a new blueprint, or give an existing one's UUID as text",
            )
        if req.tx_hook is not None:
            _hook_arg(req.tx_hook)
        if fs.path_key(rel) in batch.keys or (req.id or "").lower() in batch.keys:
            # An earlier item of this batch wrote this blueprint or path: put its files in place
            # first, so renames and reads below see the disk as the index describes it.
            self._place_files(cur, batch)
        existing, holder = self._find_for_save(cur, rel, req.id)
        if existing is None or existing.deleted or existing.path != rel:
            # (A path already indexed passed this when it came.)
            if batch.rules is None:
                batch.rules = fs.IgnoreRules.for_root(self.root)
            self._check_scanned(rel, batch.rules)
            fs.check_new_name(rel)
        target = self._abspath_in(rel, batch)
        if existing is not None and not existing.deleted:
            yaml_abs = target if existing.path == rel else self._abspath_in(existing.path, batch)
            if self._edited_on_disk(existing, yaml_abs):
                # An editor's change the watcher has not recorded yet (none running, or inside
                # its settle window): record it before deciding anything, so expected_rev and
                # the identical-save check compare with the disk, and nothing is overwritten
                # unseen. A stat pair per save; reading the files every time was the rejected
                # alternative.
                on_disk = existing.path
                self._record_first(batch, on_disk)
                self._settle_first(batch, on_disk)
                recorded = self._ingest_first(cur, on_disk, batch)
                if recorded and origin == "remote":
                    self._refuse_remote(on_disk)
                self._refuse_not_files(on_disk)  # (here: a stat pair differed, no cost per save)
                existing, holder = self._find_for_save(cur, rel, req.id)
        if (existing is None or existing.deleted or existing.path != rel) and self._may_exist(
            target, batch
        ):
            # A file the index has not seen yet (an editor was faster than the watcher, or it
            # was created where a deleted blueprint lived): record it in history before anything
            # is decided, so the path check below sees it and nothing is overwritten unseen.
            self._record_first(batch, rel)
            self._settle_first(batch, rel)
            recorded = self._ingest_first(cur, rel, batch)
            existing, holder = self._find_for_save(cur, rel, req.id)
            if recorded and holder is not None and origin == "remote":
                self._refuse_remote(rel)
            if holder is None and os.path.lexists(target):
                self._refuse_not_files(rel, indexed=False)
                # The file could not be recorded (its YAML or meta does not parse, or it is not a
                # regular file): writing over it would lose it with no revision anywhere.
                raise _not_a_blueprint(rel)
        if req.expected_rev is not None and (existing.rev if existing else 0) != req.expected_rev:
            raise RevisionConflictError(
                f"{rel} is at revision {existing.rev if existing else 0}, not {req.expected_rev}",
                hint="load it again and reapply your change",
            )
        if existing is None or existing.deleted or existing.path != rel:
            # (A live row at exactly this path owns the path's case-folded key already.)
            owner = existing.id if existing else req.id
            self._check_path_free(cur, rel, owner, batch, target, holder)
            if origin in ("local", "import"):
                # Not for what sync applies: the server has the path already, and refusing it
                # here would leave this device out of step for good (a Linux device's ``q/``
                # beside another's ``Q/`` is a real pair of folders there).
                leaving = existing.path if existing is not None and not existing.deleted else None
                self._check_folders_case(cur, rel, batch.folders, leaving)
        content = req.content
        if content is None:
            if existing is None or existing.deleted:
                raise InvalidInputError(f"{rel} does not exist yet: give content to create it")
            content = self._read_current_yaml(existing)
        keep_modified = req.meta is not None and origin in ("remote", "import", "merge")
        base_meta = existing.meta if existing else None
        new_meta = self._merge_meta(base_meta, rel, req.id, req.meta, req.fields, keep_modified)
        if existing is None and req.meta is not None and new_meta.id != (req.id or "").lower():
            self._check_id_free(cur, rel, new_meta.id)
        prepared = self._prepare(rel, content, new_meta, existing)
        if existing is not None and existing.holds(rel, prepared.content_hash):
            bp = self._blueprint_from(existing, prepared.text)
        else:
            batch.touched.append((existing, rel))
            batch.keys.update((fs.path_key(rel), new_meta.id))
            if existing is not None:
                batch.keys.add(fs.path_key(existing.path))
            # (A flagged row's attribute: no file is read for any other save.)
            kept = self._keep_flagged(cur, existing, batch) if existing and existing.flagged else ""
            if existing is None or existing.deleted or _moves_to_a_new_name(existing, rel):
                orphan = self._keep_orphan_meta(cur, rel, target, batch, existing)
                kept = "; ".join(filter(None, (kept, orphan)))
            mark = len(batch.events)
            bp = self._commit_pair(cur, existing, prepared, origin, batch, target)
            if kept:
                batch.events[mark:] = [
                    dataclasses.replace(e, detail=e.detail or kept) for e in batch.events[mark:]
                ]
        if req.tx_hook is not None:
            try:
                req.tx_hook(cur, bp)
            except _ITEM_ERRORS as exc:
                raise _ItemRefused(exc) from exc
        return bp

    def _keep_flagged(self, cur: Any, row: Row, batch: _Batch) -> str:
        """Before a save replaces a flagged pair (a file that does not parse: its bytes are in
        no revision), keep them in <data>/recovered/ (see _kept_edits); returns the event's note.

        The bytes also become the batch's to put back: a failed save's undo otherwise wrote the
        last good revision over the person's file (it differs from the row's hashes)."""
        # (A link or folder in a file's place reads as missing: the save replaces the name.)
        yaml_bytes, meta_bytes = self._read_pair(row.path)
        if yaml_bytes is not None:
            batch.ingested.setdefault(row.path, (yaml_bytes, meta_bytes))
        return keep_flagged(self, cur, row, yaml_bytes, meta_bytes, "a save replaced")

    def _keep_orphan_meta(
        self, cur: Any, rel: str, target: str, batch: _Batch, existing: Row | None
    ) -> str:
        """Before a save creates the pair at ``rel`` (or moves ``existing``'s there) where a meta
        file sits without its YAML (an orphan: the YAML deleted by hand, another blueprint's meta
        copied there), keep that file as reconcile would (see _reconcile.orphan_home); returns
        the event's sentence ('' when nothing was kept). Raises StorageError.

        Written over, its bytes were gone, in no revision and no report. Only the leftover of an
        interrupted move (its blueprint lives elsewhere, its bytes a version the store has) is
        replaced quietly, as reconcile removes it; any other is copied to <data>/recovered/ and
        noted (check reports it until deleted). The batch then replaces only that very file,
        and puts it back if it fails (after a kill before the commit, check reports the copy,
        whose note rolled back, as one without a note: see _kept_edits.report_kept)."""
        from localstore._reconcile import keep_orphan_meta, orphan_home

        meta_abs = fs.meta_path_for(target)
        if not self._may_exist(meta_abs, batch):  # (a download's new names: its listing)
            return ""
        try:
            raw, seen = fs.read_regular_seen(meta_abs)
        except FileNotFoundError:  # (or a folder or link there: the write refuses it, says why)
            return ""
        batch.orphans[meta_abs] = (seen, raw)
        meta_rel = fs.meta_path_for(rel)
        lives, leftover = orphan_home(cur, meta_rel, raw)
        if leftover:
            return ""
        digest = sha256_hex(raw)
        done = batch.orphans_kept.get(meta_abs)
        if done is not None and done[0] == digest:
            kept, detail = done[1], done[2]
            note_kept(cur, self.paths.data, kept, meta_rel, detail)
        else:
            live = existing is not None and not existing.deleted
            when = (
                f"a move brought {fs.printable(existing.path)} there" if live and existing else ""
            )
            kept, detail = keep_orphan_meta(
                self, cur, meta_rel, raw, lives, when or f"a save created {rel}"
            )
            batch.orphans_kept[meta_abs] = (digest, kept, detail)
        return f"a meta file without its YAML was at its name; kept at {kept}"

    def revalidate(self, *, every: bool = False) -> RevalidateReport:
        """Judge blueprints again with this store's validator, and make it the home's.

        By default only those judged by another validator, or by none (an edit the daemon's
        watcher or the CLI recorded: they have no validator); ``every`` judges all (rules that
        changed under the same ``validator_name``; verdicts reached ahead of a save, by
        ``check_yaml``, are forgotten too). Records no revision and writes no file: a
        blueprint's current text is judged, and its ``valid`` and ``problems`` updated, also of
        a flagged one (its last good revision). A store without a validator makes the home
        have none: every blueprint counts as valid again (how an app drops its rules).

        The validator runs outside the write lock, a few hundred blueprints at a time; one
        changed meanwhile is left to the verdict its writer gave (counted in ``skipped``), and
        so is every one left when another store makes its validator the home's meanwhile.
        Raises InvalidInputError for a non-bool ``every``.
        """
        self._check_writable("judge blueprints again")
        _flag_arg("every", every)
        if every:
            # The rules changed under the same validator: a verdict reached ahead of a save
            # (check_yaml, _prejudge) is by the old ones, and would be taken for those bytes.
            with self._judged_lock:
                self._judged.clear()
        with self.index.write() as cur:
            if self.validator is None:
                cur.execute("DELETE FROM settings WHERE key = ?", (HOME_VALIDATOR_KEY,))
            else:
                cur.execute(
                    "INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "value = excluded.value WHERE value != excluded.value",
                    (HOME_VALIDATOR_KEY, self.validator_name),
                )
        return self._rejudge(
            "1" if every else "b.judged_by IS NOT ?", () if every else (self.validator_name,)
        )

    def home_validator(self) -> str | None:
        """The name of the home's validator (the one the app last opened it with), or None."""
        self._check_open()
        with self.index.read() as cur:
            row = cur.execute(
                "SELECT value FROM settings WHERE key = ?", (HOME_VALIDATOR_KEY,)
            ).fetchone()
        return None if row is None else str(row[0])

    def _may_claim_home(self) -> bool:
        """Claim the home's validator for this store's if it has none; whether it is ours now.

        In one write, so an app that registers its validator meanwhile is never overwritten:
        the daemon's config may name the rules of an older (or newer) version of the app, and
        replacing the app's name would judge everything by them and hold the app's own edits.
        """
        with self.index.write() as cur:
            cur.execute(
                "INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                (HOME_VALIDATOR_KEY, self.validator_name),
            )
            row = cur.execute(
                "SELECT value FROM settings WHERE key = ?", (HOME_VALIDATOR_KEY,)
            ).fetchone()
        return row is not None and row[0] == self.validator_name

    def _rejudge(self, where: str, args: Sequence[Any]) -> RevalidateReport:
        """Judge the live rows matching ``where`` (over ``b``) again, in rounds."""
        report = RevalidateReport()
        after = 0
        while True:
            with self.index.read() as cur:
                rows = cur.execute(
                    "SELECT b.rid, b.path, b.rev, b.content_hash, b.valid, r.content "
                    "FROM blueprints b JOIN revisions r ON r.id = b.id AND r.rev = b.rev "
                    f"WHERE b.deleted = 0 AND b.rid > ? AND ({where}) ORDER BY b.rid LIMIT ?",
                    (after, *args, _REJUDGE_ROWS),
                ).fetchall()
            if not rows:
                return report
            after = int(rows[-1][0])
            verdicts = [(r, self._verdict(revision_text(r[5]).encode("utf-8"))) for r in rows]
            with self.index.write() as cur:
                home = cur.execute(
                    "SELECT value FROM settings WHERE key = ?", (HOME_VALIDATOR_KEY,)
                ).fetchone()
                if (home[0] if home is not None else "") != self.validator_name:
                    # Another store made its validator the home's while this one judged (an
                    # app opening beside the daemon's sync pass) and may have judged these
                    # rows already: written now, these verdicts by rules no longer the home's
                    # made the rows held again, the app's verdicts lost until its next open.
                    report.skipped += len(verdicts)
                    return report
                for (rid, path, rev, chash, was_valid, _), problems in verdicts:
                    cur.execute(
                        "UPDATE blueprints SET valid = ?, problems = ?, judged_by = ? "
                        "WHERE rid = ? AND rev = ? AND content_hash = ? AND deleted = 0",
                        (
                            int(not problems),
                            json.dumps(list(problems), ensure_ascii=False),
                            self.validator_name,
                            rid,
                            rev,
                            chash,
                        ),
                    )
                    if not cur.connection.changes():
                        report.skipped += 1  # written meanwhile: judged by its writer
                        continue
                    report.judged += 1
                    if bool(was_valid) != (not problems):
                        (report.now_valid if not problems else report.now_invalid).append(path)

    def _verdict(self, raw: bytes) -> tuple[str, ...]:
        """The problems this store's validator finds in a recorded revision's text."""
        if self.validator is None:
            return ()
        try:
            return run_validator(self.validator, parse_yaml(raw, self.limits))
        except LocalStoreError as exc:
            # A revision that no longer loads under this store's limits (lowered since).
            return (exc.message,)

    def _check_id_free(self, cur: Any, rel: str, blueprint_id: str) -> None:
        """Refuse a new blueprint whose meta carries an id the index already has (a copied meta
        file); the unique index would otherwise fail the whole transaction."""
        other = self._row_by(cur, "id = ?", (blueprint_id,))
        if other is None:
            return
        state = "deleted blueprint" if other.deleted else "blueprint"
        raise AlreadyExistsError(
            f"the meta for {rel} carries id {blueprint_id}, which belongs to the {state} at "
            f"{other.path}",
            hint="drop 'id' from the meta to create a new blueprint, or pass id= to update "
            "(or restore) that one",
        )

    def check_scanned(self, path: fs.StrPath, rules: fs.IgnoreRules | None = None) -> None:
        """Refuse ``path`` as a save to a new path would: a place reconcile and the watcher never
        look at (a hidden folder, a name matching an ignore pattern). Sync checks a server row
        with it before writing anything for the row (a conflict copy, a blueprint moved aside),
        and an import plan checks each new path (passing ``rules`` read once for all of them).

        Raises UnsafePathError naming the folder or pattern, or for a path the rules refuse.
        """
        rules = rules if rules is not None else fs.IgnoreRules.for_root(self.root)
        self._check_scanned(fs.normalize_path(path), rules)

    def _check_scanned(self, rel: str, rules: fs.IgnoreRules) -> None:
        """Refuse a path that reconcile and the watcher never look at (a hidden folder, a name
        matching an ignore pattern, a folder that is a symbolic link): its blueprint would be
        recorded as deleted on the next open although its files are intact. The rules are the
        walk's own (files.IgnoreRules).

        Raises UnsafePathError naming the folder or pattern."""
        hidden = next((f for f in rel.split("/")[:-1] if f.startswith(".")), None)
        if hidden is not None:
            raise UnsafePathError(
                f"{rel}: the folder {hidden!r} is hidden (its name starts with '.'), and "
                "LocalStore does not look inside hidden folders",
                hint="use a folder name that does not start with '.'",
            )
        # A link to a folder inside the root passed resolve_inside, and the files landed in
        # the link's target: the walk, which follows no link, then found them there as new
        # blueprints (new ids: every one twice, pushed twice) and kept the saved one as
        # not-scanned. (An lstat a folder of a new path; an indexed path is not asked.)
        link = fs.linked_folder(self._root_str, rel)
        if link is not None:
            self.abspath(rel)  # (a link that leads outside, or loops, is refused as such first)
            raise UnsafePathError(
                f"{rel}: the folder {link!r} is a symbolic link, and LocalStore does not look "
                "inside linked folders",
                hint="save under the folder the link leads to, or replace the link by a folder",
            )
        for path in (rel, fs.meta_path_for(rel)):
            if rules.ignored(path):
                part, pattern = _ignore_match(rules, path)
                custom = pattern not in fs.DEFAULT_IGNORE_PATTERNS
                raise UnsafePathError(
                    f"{rel}: {part!r} matches the ignore pattern {pattern!r}"
                    f"{f' of {fs.IGNORE_FILE_NAME}' if custom else ' (editor temp and backup files)'}"
                    ", so LocalStore would never see this blueprint's files",
                    hint=f"rename it, or remove the pattern from {fs.IGNORE_FILE_NAME}"
                    if custom
                    else "give that folder or file another name",
                )

    def _refuse_not_files(self, rel: str, *, indexed: bool = True) -> None:
        """Refuse a save to the pair at ``rel`` if a folder, a link or a special file has the
        name of one of its files (AlreadyExistsError naming it).

        A rename over a folder failed with "Is a directory (check the disk and try again)" after
        the other file was written; one over a link replaced the link (a git checkout's, say),
        and a move renamed a folder in the YAML's place to the new name. Two lstats, only on the
        paths where a stat already differed from the index (a cost per save was rejected).
        """
        for name in (rel, fs.meta_path_for(rel)):
            try:
                mode = os.lstat(self.abspath(name)).st_mode
            except OSError:
                continue  # (missing; or unreadable: the write says why)
            if not stat.S_ISREG(mode):
                what = fs.kind_of(mode)
                kept = " (the blueprint's last version is in history)" if indexed else ""
                raise AlreadyExistsError(
                    f"{name} is taken by a {what}: LocalStore keeps a blueprint's files as "
                    "regular files, and never reads or writes through a link",
                    hint=f"move the {what} away{kept}, or save under another path",
                )

    @staticmethod
    def _edited_on_disk(row: Row, yaml_abs: str) -> bool:
        """True if a live row's files differ from its stat cache (an edit not recorded yet).

        A missing YAML is not an edit: it holds nothing to keep, and a vanished file is the
        watcher's and reconcile's call (editors delete and recreate files while saving). The
        names are not followed: a link in a file's place is a change (see _refuse_not_files)."""
        try:
            y = os.lstat(yaml_abs)
        except FileNotFoundError:
            return False
        if not fs.stat_unchanged(
            y, row.yaml_size, row.yaml_mtime_ns, row.yaml_ctime_ns, row.yaml_ino
        ):
            return True
        meta_abs = yaml_abs[: -len(fs.YAML_SUFFIX)] + fs.META_SUFFIX
        try:
            m = os.lstat(meta_abs)
        except FileNotFoundError:
            return row.meta_size != -1  # (-1: indexed without a meta file, a flagged row)
        return not fs.stat_unchanged(
            m, row.meta_size, row.meta_mtime_ns, row.meta_ctime_ns, row.meta_ino
        )

    @staticmethod
    def _record_first(batch: _Batch, rel: str) -> None:
        """Have the pair at ``rel`` (an edit nobody recorded) committed before this batch
        replaces it, when the batch can (raises _RecordFirst, once a path).

        Recorded inside the batch's transaction only, the edit's revision rolled back with a
        save killed after its renames and before its commit: the file it replaced was the
        edit's only copy, and the next open recorded the save's version over the older one.
        Committed first, a kill leaves the edit in history. A batch inside a caller's
        transaction cannot commit on its own, nor can an editor still writing be caught up
        with forever: those record it in the batch, as before."""
        if batch.recorded_first is not None and rel not in batch.recorded_first:
            raise _RecordFirst(rel)

    def _settle_first(self, batch: _Batch, rel: str) -> None:
        """Wait for the unrecorded pair at ``rel`` to settle (_await_settled) before this batch
        records it inside its transaction, where it cannot commit it first (_record_first,
        whose commit waits the same way); once a path and write.

        Met at an item's first look (a sync pass's download, a write inside an app's
        transaction), an in-place editor's file between its truncate and its write was recorded
        at once: the empty or half-written file as a revision (an invalid one), the finished
        edit as another after it. Only a file found changed comes here, so an unchanged one
        costs nothing. The wait holds the lock (at most _SETTLE_WAIT_MAX_S; the watcher cannot
        record meanwhile, so it ends when the change is older than the watcher's write-quiet
        period, or at the limit): rejected, undoing the attempt to wait outside it, which
        inside a caller's transaction holds the lock all the same."""
        if batch.recorded_first is None and rel not in batch.settled:
            batch.settled.add(rel)
            self._await_settled([rel])

    def _commit_ingest(self, rels: Iterable[str]) -> None:
        """Record the pairs at ``rels`` as external changes in a transaction of their own, and
        publish their events (see _record_first)."""
        from localstore._reconcile import Reconciler

        rels = list(rels)
        self._await_settled(rels)
        self._judge_files_ahead(rels)
        reconciler = Reconciler(self)
        with self.index.write() as cur:
            for rel in rels:
                reconciler.ingest_locked(cur, rel, may_delete=False)
        self.events.publish(reconciler.events)

    def _await_settled(self, rels: Sequence[str]) -> None:
        """Wait (outside the write lock) until the unrecorded files at ``rels`` are no longer
        being written, when a watcher runs on this home (here or in another process), at most
        _SETTLE_WAIT_MAX_S.

        A write meets an editor's file exactly while the editor writes it: its swap
        (files.replace_recorded) finds the file changed because the editor's truncate changed
        it, and the write then records that file first. Read at once, it recorded the
        truncated or half-written file as a revision (an invalid one when empty). The watcher
        waits for such a file to settle (close-write, or its write-quiet period); the write now
        waits by the same rule (_settling, as load uses) and stops waiting as soon as the
        watcher has recorded the file (its row matches the disk again) or the change is older
        than the watcher's write-quiet period. Without a watcher, no one waits for a write to
        settle (load, reconcile), and neither does this: the file is recorded as it is, as
        before. Rejected: leaving the recording to the watcher and retrying the write, which
        needs the same wait (the write may not replace the edit before it is recorded) and a
        second path through the batch."""
        waiting = list(rels)
        deadline = time.monotonic() + _SETTLE_WAIT_MAX_S
        while True:
            waiting = [rel for rel in self._unrecorded_paths(waiting) if self._being_written(rel)]
            if not waiting or time.monotonic() >= deadline:
                return
            _settle_pause(_SETTLE_POLL_S)

    def _being_written(self, rel: str) -> bool:
        """Whether the pair at ``rel`` changed too recently for a running watcher to have
        recorded it (see _settling)."""
        try:
            yaml_abs = self.abspath(rel)
            st = os.lstat(yaml_abs)
        except (LocalStoreError, OSError):
            return False  # (gone or out of the folder: nothing to wait for, the ingest judges it)
        try:
            m_st: os.stat_result | None = os.lstat(self.abspath(fs.meta_path_for(rel)))
        except OSError:
            m_st = None
        return self._settling(rel, st, m_st)

    def _judge_files_ahead(self, rels: Iterable[str]) -> None:
        """Run the validator on the YAML files at ``rels`` before a write ingests them (an edit
        found unrecorded by a save, a delete or a restore, or by a sync pass): the ingest
        inside the lock uses the verdict only if it reads the very same bytes. A file that
        cannot be read here is left to the ingest, which reports it."""
        if self.validator is None:
            return
        texts: list[bytes] = []
        for rel in rels:
            try:
                texts.append(fs.read_regular(self.abspath(rel), self.limits.max_bytes))
            except (LocalStoreError, OSError):
                continue
        self._judge_texts_ahead(texts)

    def _record_edits_first(
        self, rels: Iterable[str], origin: str, new_files: Callable[[str], bool] | None = None
    ) -> None:
        """Commit, before a write that replaces or removes the pairs at ``rels``, what they hold
        that the index has not recorded (an edit, or a file where no live blueprint is and
        ``new_files`` passes the path): see _record_first. Nothing for a remote write (it
        refuses an edit) or inside a caller's transaction (reconcile keeps what a kill leaves
        set aside); a remote write's are judged ahead instead (see _judge_unrecorded_ahead)."""
        if self.index.write_open:
            return
        if origin == "remote":
            self._judge_unrecorded_ahead(rels, new_files)
            return
        todo = self._unrecorded_paths(rels, new_files)
        if todo:
            self._commit_ingest(todo)

    def _judge_unrecorded_ahead(
        self, rels: Iterable[str], new_files: Callable[[str], bool] | None = None
    ) -> None:
        """Run the validator, before a remote write takes the lock, on what the pairs at
        ``rels`` hold that the index has not recorded.

        A remote write records such an edit inside its own transaction and refuses itself (an
        edit beats a remote write); it cannot commit the edit first, as a local one does: the
        write would then no longer see it, and replace it. That ingest judged the edit inside
        the lock; it now takes this verdict for the very bytes. Stats only, and only with a
        validator and outside a caller's transaction (a sync pass judges its rows' edits ahead
        itself, sync._apply.Applier.judge_ahead)."""
        if self.validator is None or self.index.write_open:
            return
        self._judge_files_ahead(self._unrecorded_paths(rels, new_files))

    def _unrecorded_paths(
        self, rels: Iterable[str], new_files: Callable[[str], bool] | None = None
    ) -> builtins.list[str]:
        """The paths of ``rels`` whose pair holds what the index has not recorded (its stats
        differ from the live row's, or a file is where no live blueprint is, when ``new_files``
        passes that path). A path that leads out of the blueprints folder is left out: the write
        refuses it (an item's error), where raised here it failed the whole batch."""
        todo = []
        with self.index.read() as cur:
            for rel in dict.fromkeys(rels):
                try:
                    yaml_abs = str(self.abspath(rel))
                except LocalStoreError:
                    continue
                row = self._row_by(cur, "path = ? AND deleted = 0", (rel,))
                if (
                    self._edited_on_disk(row, yaml_abs)
                    if row is not None
                    else os.path.lexists(yaml_abs) and (new_files is None or new_files(rel))
                ):
                    todo.append(rel)
        return todo

    def _new_path_check(self) -> Callable[[str], bool]:
        """Whether a save may create a path (not ignored, a valid new name): only such a path of
        a batch is recorded ahead (an ingest does not look at the ignore rules; the save refuses
        the others before it records anything there). The rules are read once."""
        rules = fs.IgnoreRules.for_root(self.root)

        def may_create(rel: str) -> bool:
            try:
                self._check_scanned(rel, rules)
                fs.check_new_name(rel)
            except LocalStoreError:
                return False
            return True

        return may_create

    def _request_paths(self, requests: Sequence[SaveRequest]) -> builtins.list[str]:
        """The paths a batch's requests may replace: each one's path, and the path of the
        blueprint its id names (a move). A path that is not one is the save's to refuse."""
        rels: list[str] = []
        ids: list[str] = []
        for req in requests:
            with contextlib.suppress(LocalStoreError, TypeError, AttributeError):
                rels.append(fs.normalize_path(req.path))
            if isinstance(req.id, str) and is_uuid(req.id.lower()):
                ids.append(req.id.lower())
        if ids:
            with self.index.read() as cur:
                for bp_id in ids:
                    row = self._row_by(cur, "id = ? AND deleted = 0", (bp_id,))
                    if row is not None:
                        rels.append(row.path)
        return rels

    def _ingest_first(self, cur: Any, rel: str, batch: _Batch) -> bool:
        """Record the pair at ``rel`` as an external change inside this transaction (its events
        are published with the batch's), keeping its bytes for an undo of the batch.

        Returns True if the index changed (a revision, a new blueprint, a flag), False if the
        files only had new stats (a touch)."""
        from localstore._reconcile import Reconciler

        reconciler = Reconciler(self)
        reconciler.ingest_locked(cur, rel, may_delete=False)
        batch.events.extend(reconciler.events)
        try:
            # Regular files only: these bytes are written back if the batch fails, and a link's
            # target read here became a regular file in the blueprints folder.
            yaml_bytes = fs.read_regular(self.abspath(rel), self.limits.max_bytes)
        except (FileNotFoundError, StorageError):
            return bool(reconciler.events)
        try:
            meta_bytes: bytes | None = fs.read_regular(self.abspath(fs.meta_path_for(rel)))
        except (FileNotFoundError, StorageError):
            meta_bytes = None
        batch.ingested.setdefault(rel, (yaml_bytes, meta_bytes))
        if reconciler.events:
            batch.recorded_here.add(rel)
        return bool(reconciler.events)

    @staticmethod
    def _refuse_remote(rel: str, what: str = "version") -> None:
        """A pulled row must not replace (or delete) an edit it was never merged with (the sync
        engine planned it against the index before the editor saved): the edit is recorded, and
        the caller applies the row through its merging path instead."""
        raise ChangedOnDiskError(
            f"{rel} changed on disk after the remote {what} was planned; the change is "
            f"recorded and the remote {what} was not applied",
            hint=f"apply the remote {what} through a merge (sync does this itself)",
        )

    def _find_for_save(
        self, cur: Any, rel: str, blueprint_id: str | None
    ) -> tuple[Row | None, Row | _Unknown | None]:
        """The row a save updates, and (when already known) the live row holding the path's
        case-folded key, which _check_path_free would otherwise look up again."""
        if blueprint_id is not None:
            # One statement for both (a download saves thousands of blueprints by id).
            rows = cur.execute(
                f"SELECT 0, {_ROW_COLUMNS} FROM blueprints WHERE id = ? UNION ALL "
                f"SELECT 1, {_ROW_COLUMNS} FROM blueprints WHERE path_key = ? AND deleted = 0",
                (blueprint_id.lower(), fs.path_key(rel)),
            ).fetchall()
            by_id = next((Row.from_tuple(r[1:]) for r in rows if r[0] == 0), None)
            on_path = next((r for r in rows if r[0] == 1), None)
            if on_path is None:
                return by_id, None
            if by_id is not None and on_path[1] == by_id.rid:
                return by_id, by_id
            return by_id, Row.from_tuple(on_path[1:])
        # Exact path only: a save to a case variant of another blueprint's path is a collision,
        # not a rename (renames go through move(), which passes the id). One lookup by the
        # case-folded key answers both questions.
        holder = self._row_by(cur, "path_key = ? AND deleted = 0", (fs.path_key(rel),))
        if holder is not None and holder.path == rel:
            return holder, holder
        return self._exact_row(cur, rel), holder

    def _check_path_free(
        self,
        cur: Any,
        rel: str,
        owner_id: str | None,
        batch: _Batch | None = None,
        target: str | None = None,
        holder: Row | _Unknown | None = _UNKNOWN,
    ) -> None:
        other = (
            self._row_by(cur, "path_key = ? AND deleted = 0", (fs.path_key(rel),))
            if isinstance(holder, _Unknown)
            else holder
        )
        if other is not None and other.id != owner_id:
            if other.path == rel:
                raise AlreadyExistsError(
                    f"{rel} is already taken by blueprint {other.id}",
                    hint=_TAKEN_HINT,
                )
            raise UnsafePathError(
                f"{rel} differs only by case from {other.path}",
                hint=_case_clash_hint(other.path, rel, moving=owner_id is not None),
            )
        if other is not None:
            return  # the only file that can collide by case is this blueprint's own
        self._check_file_case(rel, batch.folders if batch is not None else None, target)

    def _check_file_case(
        self, rel: str, folders: dict[str, dict[str, str]] | None, target: str | None = None
    ) -> None:
        """Refuse a name that differs only by case from a file on disk the index does not know
        yet (created while nothing ran). ``folders``: the listings a batch (or a plan) keeps."""
        folder, name = os.path.split(target or str(self.abspath(rel)))
        names = self._folder_names(folder, folders)
        existing = names.get(fs.path_key(name))
        if existing is not None and existing != name:
            other = posixpath.join(posixpath.dirname(rel), existing)
            raise UnsafePathError(
                f"{rel} differs only by case from {other}, a file here not recorded yet",
                hint="rename one of them",
            )

    def _check_folders_case(
        self,
        cur: Any,
        rel: str,
        folders: dict[str, dict[str, str]] | None,
        leaving: str | None = None,
    ) -> None:
        """Refuse a new folder whose name differs only by case from one beside it.

        The file check above looks in the file's own folder, which for ``team/b`` beside an
        existing ``Team/`` does not exist yet: both were made, one folder on macOS and Windows
        (a device there syncing both mixes two folders' blueprints into one). A folder a live
        blueprint is in exists already, with this exact case; otherwise each level is looked up.
        ``leaving``: the path a moved blueprint leaves. Its own folder in another case is no
        neighbour once nothing else stays in it (the move fixes a folder's letter case).
        """
        folder = rel.rpartition("/")[0]
        if (
            not folder
            or cur.execute(
                "SELECT 1 FROM blueprints WHERE folder = ? AND deleted = 0 LIMIT 1", (folder,)
            ).fetchall()
        ):
            return
        parent = str(self.paths.blueprints)
        done = ""
        for seg in folder.split("/"):
            names = self._folder_names(parent, folders)
            existing = names.get(fs.path_key(seg))
            if existing is not None and existing != seg:
                self._refuse_folder_case(rel, seg, posixpath.join(done, existing), leaving)
            if existing is None:
                names[fs.path_key(seg)] = (
                    seg  # (made by this save: a later one in the batch sees it)
                )
            parent = os.path.join(parent, seg)
            done = posixpath.join(done, seg)

    def _folder_as_here(self, folder: str, folders: dict[str, dict[str, str]] | None) -> str:
        """``folder`` with each part spelled as the folder of that name (files.path_key) is
        here, where there is one: the spelling _check_folders_case lets a new path take."""
        parent, parts = str(self.paths.blueprints), []
        for seg in folder.split("/") if folder else []:
            seg = self._folder_names(parent, folders).get(fs.path_key(seg), seg)
            parts.append(seg)
            parent = os.path.join(parent, seg)
        return "/".join(parts)

    def _refuse_folder_case(self, rel: str, seg: str, other: str, leaving: str | None) -> None:
        """Raise UnsafePathError for ``rel``'s folder ``seg`` beside ``other`` (its folder
        of another case), unless ``other`` is the folder the move from ``leaving`` empties."""
        name = other.rpartition("/")[2]
        stays = None
        if leaving is not None and leaving.startswith(other + "/"):
            stays = self._left_behind(other, leaving)
            if stays is None:
                return
        message = (
            f"{rel}: the folder {seg!r} differs only by case from the folder {name!r} beside it"
        )
        if stays is None:
            raise UnsafePathError(
                message,
                hint=f"use {name!r}, or rename that folder first: see 'localstore mv --help'",
            )
        raise UnsafePathError(
            f"{message}, which holds {stays} too",
            hint=f"move the rest of {name!r} elsewhere first with 'localstore mv', or keep {name!r}",
        )

    def _left_behind(self, folder: str, leaving: str) -> str | None:
        """The first thing under ``folder`` that is not the pair at ``leaving`` (a path below
        it) or a folder on the way to it: what a move of that pair would leave there."""
        parts = leaving[len(folder) + 1 :].split("/")
        for depth, seg in enumerate(parts):
            last = depth == len(parts) - 1
            wanted = {seg, fs.meta_path_for(seg)} if last else {seg}
            try:
                names = sorted(os.listdir(self.abspath(folder)))
            except OSError:
                return None  # (gone: nothing stays)
            stays = next((n for n in names if n not in wanted), None)
            if stays is not None:
                return fs.printable(posixpath.join(folder, stays))
            folder = posixpath.join(folder, seg)
        return None

    @staticmethod
    def _may_exist(target: str, batch: _Batch) -> bool:
        """Whether something may be at ``target``: False when this batch listed its folder and
        no name there has the target's key (the listing holds what the batch staged since), else
        an lstat. A download creates thousands of new names in a few folders: one listing per
        folder and batch replaces an lstat of a missing name per blueprint (each a search of the
        whole folder). The listing is as old as the batch, which holds the write lock; an editor
        (which takes no lock of ours) creating the name later in the batch is not renamed over:
        such a name is placed with files.place_new, and the batch runs again if it was taken
        (see _save_batch)."""
        folder, _, name = target.rpartition(os.sep)
        listed = batch.folders.get(folder)
        if listed is not None and fs.path_key(name) not in listed:
            return False
        return os.path.lexists(target)

    @staticmethod
    def _folder_names(folder: str, folders: dict[str, dict[str, str]] | None) -> dict[str, str]:
        """Key (files.path_key) -> name of a folder's entries; listed once per batch (the batch
        holds the write lock, and adds what it stages; ``folders`` is its listings), so a batch
        into one folder stays linear."""
        if folders is not None and folder in folders:
            return folders[folder]
        try:
            names = {fs.path_key(n): n for n in os.listdir(folder)}
        except OSError:
            names = {}
        if folders is not None:
            folders[folder] = names
        return names

    def _read_current_yaml(self, row: Row) -> bytes:
        try:
            return fs.read_regular(self.abspath(row.path), self.limits.max_bytes)
        except FileNotFoundError:
            with self.index.read() as cur:
                rows = cur.execute(
                    "SELECT content FROM revisions WHERE id = ? AND rev = ?", (row.id, row.rev)
                ).fetchall()
            if not rows:
                raise NotFoundError(f"the YAML file of {row.path} is missing") from None
            return revision_text(rows[0][0]).encode("utf-8")

    def _commit_pair(
        self,
        cur: Any,
        existing: Row | None,
        p: _Prepared,
        origin: str,
        batch: _Batch,
        yaml_abs: str,
    ) -> Blueprint:
        """Stage both files (made durable by the batch's commit), then the index row and revision."""
        folder, yaml_name = os.path.split(yaml_abs)
        meta_name = fs.meta_path_for(yaml_name)
        meta_abs = folder + os.sep + meta_name  # same folder, checked above
        if not batch.root_checked:
            from localstore._reconcile import refuse_a_vanished_root

            refuse_a_vanished_root(self, cur)
            batch.root_checked = True
        if folder not in batch.made_dirs:
            fs.ensure_dir(Path(folder))
            batch.made_dirs.add(folder)
        old_path = existing.path if existing is not None and not existing.deleted else None
        moved = old_path is not None and old_path != p.path
        # What the index recorded of the files this save replaces, checked when the save
        # reached them (_edited_on_disk): the batch places its files later, and replaces only
        # those (an editor's save in between is put back, see files.replace_recorded).
        yaml_was: fs.Recorded | None = None
        meta_was: fs.Recorded | None = None
        if existing is not None and old_path is not None:
            yaml_was = (
                existing.yaml_size,
                existing.yaml_mtime_ns,
                existing.yaml_ctime_ns,
                existing.yaml_ino,
            )
            meta_was = (
                existing.meta_size,
                existing.meta_mtime_ns,
                existing.meta_ctime_ns,
                existing.meta_ino,
            )
        if moved:
            # Rename first, then write: a crash in between leaves one pair with one id (a move
            # that reconcile recognises). Writing the new pair before removing the old one would
            # leave two pairs with the same id, indistinguishable from a user's copy.
            assert old_path is not None
            orphan = batch.orphans.get(meta_abs)
            self._rename_pair(old_path, p.path, over=None if orphan is None else orphan[0])
            batch.made_dirs.clear()  # the move may have removed the folder it left
            batch.folders.clear()  # (and put names the listings do not hold: read them again)
            # The renames set the files' change times (taken again); size, mtime and inode stay
            # the row's: a file an editor saved at the old name after the check moved with the
            # pair, and taken again whole it counted as the recorded file, unlinked unrecorded.
            yaml_was = _moved_recorded(yaml_was, yaml_abs)
            meta_was = _moved_recorded(meta_was, meta_abs)
        # Names this batch's listing of the folder does not hold are new: no replaced file's
        # mode to keep, so no lstat for it (see _may_exist).
        listed = batch.folders.get(folder)
        yaml_new = meta_new = False
        if listed is not None:
            yaml_key, meta_key = fs.path_key(yaml_name), fs.path_key(meta_name)
            yaml_new, meta_new = yaml_key not in listed, meta_key not in listed
            listed[yaml_key] = yaml_name
            listed[meta_key] = meta_name
        # A rename keeps size and mtime, so the temp files' stats are the final files' stats (but
        # for the change time, which the rename sets: _place_files records it).
        if old_path is not None and old_path in batch.recorded_here:
            # The pair holds an edit only this transaction records: kept when replaced, a kill
            # before the commit leaves its bytes set aside, for reconcile to keep, rather than
            # nowhere (moved, the pair now holds them at the new path).
            batch.pending.keep_before_replacing(yaml_abs)
            batch.pending.keep_before_replacing(meta_abs)
        if moved:
            # (A file the move did not bring, gone since: its name is placed as a new one.)
            yaml_new, meta_new = yaml_was is None, meta_was is None
        elif old_path is None and meta_abs in batch.orphans:
            meta_was, meta_new = batch.orphans[meta_abs][0], False
        y_st = batch.pending.add(yaml_abs, p.yaml_bytes, new=yaml_new, recorded=yaml_was)
        m_st = batch.pending.add(meta_abs, p.meta_bytes, new=meta_new, recorded=meta_was)
        batch.pending.start_flush()  # both fsyncs run while the index statements below do
        rev = (existing.rev if existing else 0) + 1
        op_id = self.index.next_op_id(cur)
        yaml_sha, meta_sha, rid = self._upsert_row(cur, existing, p, rev, op_id, y_st, m_st)
        batch.written.append((yaml_sha, meta_sha))
        batch.placing[yaml_abs] = (rid, meta_abs)
        self._add_revision(
            cur,
            p.meta.id,
            rev,
            op_id,
            origin,
            p.path,
            p.yaml_bytes,
            p.meta,
            False,
            meta_bytes=p.meta_bytes,
            chash=p.content_hash,
            text=p.text,
        )
        bp = Blueprint(
            path=p.path,
            content=p.text,
            meta=p.meta,
            rev=rev,
            content_hash=p.content_hash,
            valid=p.valid,
            problems=p.problems,
        )
        batch.events.extend(change_events(existing, p, rev, origin))
        return bp

    def _undo_files(
        self,
        existing: Row | None,
        new_rel: str,
        placed: fs.PlacedFiles,
        ingested_pairs: Mapping[str, tuple[bytes, bytes | None]] | None = None,
        orphans: _Orphans | None = None,
    ) -> None:
        """Put the committed version back after a failed save (best effort; reconcile heals).

        ``placed``: the files the save put in place, with their stats. A new pair's file that
        is not one of them was never written (the save failed first), or is another program's
        (an editor created the name the save found free): removed, it was lost with no
        revision anywhere; so was an editor's save over a placed file (fs.remove_placed).
        ``orphans``: the meta files without their YAML the batch replaced (_keep_orphan_meta),
        put back at a name the new pair's meta left."""
        if existing is None or existing.deleted:
            try:
                for rel in (new_rel, fs.meta_path_for(new_rel)):
                    target = str(self.abspath(rel))
                    if target in placed:
                        left = fs.remove_placed(target, placed[target])
                        if left is not None:
                            self._keep_set_aside([left], target)
                        if left is None:
                            _put_orphan_back(target, orphans)
                self._prune_empty_dirs(self.abspath(new_rel).parent)
            except (OSError, StorageError):
                log.warning("could not remove %s after a failed save", new_rel)
            return
        # Only the files the save put in place go back. One it never placed holds what it held
        # (the save failed first), or another program's file: one it saved over the recorded
        # version after the save checked it, put back in place by files.replace_recorded.
        # Written over with the recorded version, that program's save was lost.
        written = (
            str(self.abspath(new_rel)) in placed,
            str(self.abspath(fs.meta_path_for(new_rel))) in placed,
        )
        if existing.path != new_rel:
            if os.path.lexists(self.abspath(existing.path)):
                # A file at the old name: the move never happened (its destination was taken
                # first, see _rename_pair: nothing to put back), or another program made the
                # name since. Either way nothing goes back over it: the restore below wrote the
                # committed revision over that program's file, lost unrecorded. Reconcile
                # records both pairs on the next open.
                return
            self._rename_pair_quiet(new_rel, existing.path)
            placed = self._moved_back(placed, new_rel, existing.path)
            try:
                _put_orphan_back(str(self.abspath(fs.meta_path_for(new_rel))), orphans)
            except StorageError:  # (its copy in <data>/recovered/ stays: check reports it)
                log.warning("could not put back %s after a failed move", fs.meta_path_for(new_rel))
        if not any(written):
            return
        ingested = ingested_pairs.get(existing.path) if ingested_pairs is not None else None
        self._restore_pair_best_effort(existing, ingested, written, placed)

    def _moved_back(self, placed: fs.PlacedFiles, new_rel: str, old_rel: str) -> fs.PlacedFiles:
        """``placed`` with the pair's files at ``new_rel`` taken back to ``old_rel``: each is
        the file placed if its inode, size and mtime are (a rename sets only the change time,
        taken anew here for the check without a swap)."""
        moved = dict(placed)
        for new, old in (
            (new_rel, old_rel),
            (fs.meta_path_for(new_rel), fs.meta_path_for(old_rel)),
        ):
            seen = moved.pop(str(self.abspath(new)), None)
            if seen is None:
                continue
            try:
                now = fs.recorded_of(os.lstat(self.abspath(old)))
            except OSError:
                continue
            moved[str(self.abspath(old))] = (
                now if now[:2] + now[3:] == seen[:2] + seen[3:] else None
            )
        return moved

    def _restore_pair_best_effort(
        self,
        existing: Row,
        ingested: tuple[bytes, bytes | None] | None = None,
        written: tuple[bool, bool] = (True, True),
        placed: fs.PlacedFiles | None = None,
    ) -> None:
        """After a failed write, put back the committed version if a file was already replaced
        (``ingested``: the bytes of an edit recorded in the failed transaction, which rolled its
        revision back; the disk is the truth, so those bytes go back, not the older revision).
        ``written``: whether the write placed the YAML, the meta file: only those go back.
        ``placed``: the stats of the files the write placed: a file that is no longer the one
        placed there is another program's save, left as it is (see _put_back)."""
        yaml_abs = self.abspath(existing.path)
        meta_abs = self.abspath(fs.meta_path_for(existing.path))
        if ingested is not None:
            try:
                if fs.read_regular(yaml_abs) == ingested[0] and (
                    ingested[1] is None or fs.read_regular(meta_abs) == ingested[1]
                ):
                    return  # (put back by a rename already: the disk may be full)
            except (OSError, StorageError):
                pass
            items = [(yaml_abs, ingested[0])] if written[0] else []
            if ingested[1] is not None and written[1]:
                items.append((meta_abs, ingested[1]))
            self._put_back(existing.path, items, placed)
            return
        try:
            current = sha256_hex(fs.read_regular(yaml_abs))
            current_meta = sha256_hex(fs.read_regular(meta_abs))
        except (OSError, StorageError):
            current = current_meta = ""
        if current == existing.yaml_sha256 and current_meta == existing.meta_sha256:
            return
        try:
            with self.index.read() as cur:
                rows = cur.execute(
                    "SELECT content, meta FROM revisions WHERE id = ? AND rev = ?",
                    (existing.id, existing.rev),
                ).fetchall()
        except (OSError, StorageError):  # reconcile on the next open records what is on disk
            log.warning("could not put back %s after a failed write", existing.path)
            return
        if rows:
            items = [
                (path, revision_text(text).encode())
                for path, text, put in (
                    (yaml_abs, rows[0][0], written[0]),
                    (meta_abs, rows[0][1], written[1]),
                )
                if put
            ]
            self._put_back(existing.path, items, placed)

    def _put_back(
        self, rel: str, items: Sequence[tuple[Path, bytes]], placed: fs.PlacedFiles | None
    ) -> None:
        """Write a version back over the files a failed write placed (best effort).

        Each file is written over only if it is still the one the write placed (``placed``):
        an editor's save over it since (the failed commit, or a sync page's statements, ran
        in between) was replaced by the plain rename, in no revision. That save stays at its
        name, which reconcile records; a version it saved twice meanwhile is kept. (Without
        ``placed``, the caller knows the file is its own: written over as before.)"""
        for path, data in items:
            target = str(path)
            try:
                if placed is None:
                    fs.atomic_write(path, data)
                    continue
                seen = placed.get(target)
                if seen is None:
                    continue  # (no longer ours just after the rename: that program's)
                fs.write_checked(path, data, seen)
            except fs.TargetChangedError as changed:
                log.warning(
                    "%s changed on disk before a failed write could put it back; left "
                    "as it is (reconcile records it)",
                    target,
                )
                self._keep_set_aside(changed.set_aside, target)
            except (OSError, StorageError):  # reconcile on the next open records the disk
                log.warning("could not put back %s after a failed write", rel)

    def _rename_pair(self, old_rel: str, new_rel: str, *, over: fs.Recorded | None = None) -> None:
        """Move both files of a pair (YAML first; reconcile re-pairs a YAML that moved alone).

        The new names were found free: a file another program put at one since is not renamed
        over (it was lost, unrecorded). Raises NameTakenError then, the pair back where it was.
        ``over``: the meta file without its YAML at the new meta name, kept first (see
        _keep_orphan_meta), replaced only if it is still that file (TargetChangedError else)."""
        self._match_folder_case(old_rel, new_rel)
        moved: list[tuple[Path, Path]] = []
        for src, dst, recorded in (
            (old_rel, new_rel, None),
            (fs.meta_path_for(old_rel), fs.meta_path_for(new_rel), over),
        ):
            src_abs, dst_abs = self.abspath(src), self.abspath(dst)
            try:
                # (The platform's rename: on Windows written through, the folder cannot be
                # flushed there, and retried while an editor or a scanner has the file open.)
                if recorded is not None:
                    _rename_over(src_abs, dst_abs, recorded)
                elif not fs.rename_new(src_abs, dst_abs):
                    raise fs.NameTakenError(str(dst_abs))
            except fs.NameTakenError:
                self._move_back(moved, old_rel, new_rel)
                raise
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    if not os.path.lexists(src_abs):
                        continue  # (Linux says EXDEV before it looks for the file: none here)
                    raise _cross_disk_error(old_rel, new_rel) from exc
                raise fs.map_os_error(exc, "cannot move", src_abs) from exc
            moved.append((src_abs, dst_abs))
        fs.fsync_dir(self.abspath(new_rel).parent)
        old_dir = self.abspath(old_rel).parent
        if old_dir != self.abspath(new_rel).parent:
            fs.fsync_dir(old_dir)
            self._prune_empty_dirs(old_dir)

    def _match_folder_case(self, old_rel: str, new_rel: str) -> None:
        """Give the folders a move leaves their new letter case where both spellings are one
        folder (macOS, Windows): renamed alone, the files stayed in the old spelling the
        index no longer held. Only a folder holding nothing but this pair (the rule save
        checks; a move sync applies is not checked, and renaming a folder that holds more
        would move the rest unrecorded). Raises StorageError."""
        old_dirs, new_dirs = old_rel.split("/")[:-1], new_rel.split("/")[:-1]
        for depth, (was, now) in enumerate(zip(old_dirs, new_dirs, strict=False)):
            if fs.path_key(was) != fs.path_key(now):
                return
            folder = "/".join(old_dirs[: depth + 1])
            here, there = self.abspath(folder), self.abspath("/".join(new_dirs[: depth + 1]))
            if was == now or not fs.same_file(here, there):
                continue  # (two folders: the files move to the new one, the old one is pruned)
            if self._left_behind(folder, old_rel) is not None:
                return
            try:
                fs.rename_case(here, there)
            except OSError as exc:
                raise fs.map_os_error(exc, "cannot rename the folder", here) from exc

    def _move_back(self, moved: Sequence[tuple[Path, Path]], old_rel: str, new_rel: str) -> None:
        """Rename the files a failed ``_rename_pair`` moved back to their old names.

        Raises StorageError if one cannot go back (another program took its old name since: that
        file is its, and stays). The moved file is then set aside beside its new name, for
        reconcile to remove as a version the store has, or keep in ``<data>/recovered/``. Left at
        the new name, it was half a pair with the file that made the move fail (another program's
        meta): the retry recorded this blueprint's YAML as a new blueprint under that meta's id,
        and refused the move as if the name were that blueprint's.
        """
        stranded: list[str] = []
        for back_src, back_dst in moved:
            if fs.rename_new(back_dst, back_src):
                continue
            fs.set_aside(str(back_dst))
            fs.fsync_dir(back_dst.parent)
            stranded.append(
                fs.printable(os.path.relpath(back_src, self._root_str).replace(os.sep, "/"))
            )
        if stranded:
            log.error(
                "moving %s to %s failed half way: %s was taken meanwhile; the moved file is "
                "set aside",
                old_rel,
                new_rel,
                ", ".join(stranded),
            )
            raise StorageError(
                f"moving {fs.printable(old_rel)} to {fs.printable(new_rel)} failed: another "
                f"program created files at both names meanwhile ({', '.join(stranded)} too); "
                "nothing was moved",
                hint="'localstore check' shows what is there now; its last version is in "
                "'localstore history'",
            )

    def _rename_pair_quiet(self, old_rel: str, new_rel: str) -> None:
        try:
            fs.ensure_dir(self.abspath(new_rel).parent)
            self._rename_pair(old_rel, new_rel)
        except StorageError:  # reconcile on the next open records wherever the pair is
            log.warning("could not move %s back to %s after a failed write", old_rel, new_rel)

    def _prune_empty_dirs(self, directory: Path) -> None:
        root = self.root.resolve()
        d = directory
        removed = False
        while d.resolve() != root and root in d.resolve().parents:
            try:
                # (Not retried on Windows: a folder another program has open, as Explorer's
                # current folder, stays, empty; it is harmless and goes with the next prune.)
                d.rmdir()
            except OSError:
                break
            removed = True
            d = d.parent
        if removed:
            # The removals are durable once the folder left standing is flushed (one fsync per
            # pass, only when a folder went: a move or delete that emptied it, never a plain
            # save). Without it an emptied folder could come back after a power cut.
            try:
                fs.fsync_dir(d)
            except StorageError:
                log.warning("could not flush %s after removing empty folders", d)

    def _upsert_row(
        self,
        cur: Any,
        existing: Row | None,
        p: _Prepared,
        rev: int,
        op_id: int,
        y_st: os.stat_result | fs.FileStat,
        m_st: os.stat_result | fs.FileStat,
    ) -> tuple[str, str, int]:
        """Insert or update the blueprint's row; returns the sha256 of its YAML and meta bytes,
        and the row's rid."""
        m = p.meta
        yaml_sha, meta_sha = p.yaml_sha256, sha256_hex(p.meta_bytes)
        values = (
            m.id,
            p.path,
            fs.path_key(p.path),
            fs.folder_of(p.path),
            m.name,
            m.description,
            m.author,
            m.version,
            tags_json(m.tags),
            m.created,
            m.modified,
            yaml_sha,
            meta_sha,
            p.content_hash,
            y_st.st_size,
            y_st.st_mtime_ns,
            m_st.st_size,
            m_st.st_mtime_ns,
            int(p.valid),
            json.dumps(list(p.problems), ensure_ascii=False) if p.problems else "[]",
            p.meta_bytes.decode("utf-8"),  # the meta file's own JSON (reconcile stores the same)
            rev,
            op_id,
            # (For a save, the temps' times: _place_files records the renamed files' ones.)
            y_st.st_ctime_ns,
            m_st.st_ctime_ns,
            # (A rename keeps the inode: the temp's is the placed file's, which _place_files
            # checks before it records the change times.)
            fs.ino_key(y_st.st_ino),
            fs.ino_key(m_st.st_ino),
            p.judged_by,
        )
        if existing is None:
            cur.execute(
                f"INSERT INTO blueprints ({', '.join(_ROW_WRITE)}, flagged, deleted) "
                f"VALUES ({','.join('?' * len(_ROW_WRITE))}, NULL, 0)",
                values,
            )
            rid = cur.connection.last_insert_rowid()  # (RETURNING costs a statement journal)
        else:
            rid = existing.rid
            # SET only what changed: SQLite rewrites the entry of every index whose column is in
            # the SET list, changed or not (eight indexes: a third of a save's pages).
            before = (
                existing.id,
                existing.path,
                fs.path_key(existing.path),
                fs.folder_of(existing.path),
                existing.name,
                existing.description,
                existing.author,
                existing.version,
                tags_json(existing.tags),
                existing.created,
                existing.modified,
                existing.yaml_sha256,
                existing.meta_sha256,
                existing.content_hash,
                existing.yaml_size,
                existing.yaml_mtime_ns,
                existing.meta_size,
                existing.meta_mtime_ns,
                int(existing.valid),
                json.dumps(list(existing.problems), ensure_ascii=False),
                existing.meta_json,
                existing.rev,
                existing.op_id,
                existing.yaml_ctime_ns,
                existing.meta_ctime_ns,
                existing.yaml_ino,
                existing.meta_ino,
                existing.judged_by,
            )
            changed = [
                (c, v) for c, v, old in zip(_ROW_WRITE, values, before, strict=True) if v != old
            ]
            if existing.flagged is not None:
                changed.append(("flagged", None))
            if existing.deleted:
                changed.append(("deleted", 0))
            cur.execute(
                f"UPDATE blueprints SET {', '.join(c + '=?' for c, _ in changed)} WHERE rid=?",
                (*(v for _, v in changed), rid),
            )
        same_tags = existing is not None and not existing.deleted and existing.tags == m.tags
        self._reindex_text(
            cur,
            rid,
            existing if existing is not None and not existing.deleted else None,
            m,
            p.path,
            p.text,
            tags_indexed=same_tags,
            new_row=existing is None,
        )
        return yaml_sha, meta_sha, rid

    def _reindex_text(
        self,
        cur: Any,
        rid: int,
        indexed: Row | None,
        m: BlueprintMeta,
        rel: str,
        text: str | None,
        *,
        tags_indexed: bool = False,
        new_row: bool = False,
    ) -> None:
        """Replace a blueprint's search entries; ``indexed`` is the live row it was indexed from,
        ``new_row`` says the row was just inserted (so it has no tags to remove)."""
        tags_source = fts_tags(m.tags)
        tags_text = indexed_text(tags_source)
        # The small index of the described columns is left alone when none of them changed
        # (most saves change only the content).
        described_same = (
            indexed is not None
            and text is not None
            and indexed.name == m.name
            and indexed.description == m.description
            and tuple(indexed.tags) == tuple(m.tags)
            and indexed.path == rel
        )
        if indexed is not None:
            # External content: FTS5 removes an entry given exactly the values it indexed, which
            # are the row's fields and the text of its current revision.
            old = cur.execute(
                "SELECT content FROM revisions WHERE id = ? AND rev = ?", (indexed.id, indexed.rev)
            ).fetchall()
            old_name, old_description, old_path = (
                indexed_text(indexed.name),
                indexed_text(indexed.description),
                indexed_text(indexed.path),
            )
            old_tags = indexed_text(fts_tags(indexed.tags))
            cur.execute(
                "INSERT INTO blueprints_fts(blueprints_fts, rowid, name, description, tags, "
                "content, path) VALUES ('delete', ?, ?, ?, ?, ?, ?)",
                (
                    rid,
                    old_name,
                    old_description,
                    old_tags,
                    indexed_text(revision_text(old[0][0])) if old else "",
                    old_path,
                ),
            )
            if not described_same:
                cur.execute(
                    "INSERT INTO blueprints_described(blueprints_described, rowid, name, "
                    "description, tags, path) VALUES ('delete', ?, ?, ?, ?, ?)",
                    (rid, old_name, old_description, old_tags, old_path),
                )
        if (not tags_indexed or text is None) and not new_row:
            cur.execute("DELETE FROM blueprint_tags WHERE rid = ?", (rid,))
            tags_indexed = False
        if text is None:
            cur.execute("DELETE FROM fts_plain WHERE rid = ?", (rid,))
            return
        # As the blueprints_text view gives them (localstore._fts_text: CJK characters apart).
        name, description, path = (
            indexed_text(m.name),
            indexed_text(m.description),
            indexed_text(rel),
        )
        content = indexed_text(text)
        cur.execute(
            "INSERT INTO blueprints_fts(rowid, name, description, tags, content, path) "
            "VALUES (?,?,?,?,?,?)",
            (rid, name, description, tags_text, content, path),
        )
        # The view calls indexed_text() only for rows missing from fts_plain (index.py, v6);
        # indexed_text() gives back the very object it was given when there is nothing to split.
        plain = (
            name is m.name
            and description is m.description
            and path is rel
            and content is text
            and tags_text is tags_source
        )
        cur.execute(
            "INSERT OR IGNORE INTO fts_plain VALUES (?)"
            if plain
            else "DELETE FROM fts_plain WHERE rid = ?",
            (rid,),
        )
        if not described_same:
            cur.execute(
                "INSERT INTO blueprints_described(rowid, name, description, tags, path) "
                "VALUES (?,?,?,?,?)",
                (rid, name, description, tags_text, path),
            )
        if not tags_indexed and m.tags:
            cur.executemany("INSERT INTO blueprint_tags VALUES (?, ?)", [(rid, t) for t in m.tags])

    def _add_revision(
        self,
        cur: Any,
        blueprint_id: str,
        rev: int,
        op_id: int,
        origin: str,
        rel: str,
        yaml_bytes: bytes,
        meta: BlueprintMeta,
        deleted: bool,
        *,
        meta_bytes: bytes | None = None,
        chash: str | None = None,
        text: str | None = None,
    ) -> None:
        """Record one revision; ``meta_bytes``/``chash``/``text`` (``yaml_bytes`` decoded) when
        the caller has them already."""
        cur.execute(
            "INSERT INTO revisions (id, rev, op_id, origin, device, ts, path, content, meta, "
            "content_hash, deleted) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                blueprint_id,
                rev,
                op_id,
                origin,
                self._revision_device(cur),
                utc_now(),
                rel,
                text if text is not None else yaml_bytes.decode("utf-8"),
                (meta_bytes if meta_bytes is not None else encode_meta(meta)).decode("utf-8"),
                chash if chash is not None else content_hash(yaml_bytes, meta),
                int(deleted),
            ),
        )

    def _blueprint_from(self, row: Row, text: str) -> Blueprint:
        return Blueprint(
            path=row.path,
            content=text,
            meta=row.meta,
            rev=row.rev,
            content_hash=row.content_hash,
            valid=row.valid and row.flagged is None,
            problems=row.problems + ((row.flagged,) if row.flagged else ()),
        )

    # -- load --------------------------------------------------------------------------------------

    def load(self, ref: fs.StrPath) -> Blueprint:
        """Read a blueprint (its YAML verbatim and its meta). Raises NotFoundError, AmbiguousRefError.

        If its YAML or meta file changed on disk since it was indexed (an edit not yet seen by a
        watcher), the change is ingested first, so what is returned always matches the files;
        except an empty YAML (an editor's in-place save before its write), which is left to the
        watcher and the next reconcile: the last good revision is returned, as for a file that
        does not parse. While a Watcher runs on this store, a YAML that vanished is left to it
        too (an editor's save may rename it away and write it anew; the watcher gives that a
        grace period) and the last revision is returned; without one its delete is recorded
        and NotFoundError raised. While a Watcher runs, a change it has pending or younger than
        its write-quiet period (1 s) is left to it as well (it waits for the write to end; half
        an in-place save that parses was recorded): the file's current text is returned with
        the last recorded ``rev`` and meta, unrecorded (the last revision if it does not parse).
        Without a watcher nothing tells when a write ends: the change is recorded at once;
        unless another process (the daemon, an app) runs a watcher on this home (a CLI command
        beside it): a change younger than that watcher's write-quiet period is then left to it
        too, and so is a vanished YAML whose folder changed within its delete grace.
        """
        self._check_open()
        with self.index.read() as cur:
            try:
                row = self._resolve(cur, ref)
            except NotFoundError:
                if self.read_only_reason is not None:
                    self._refuse_unindexed(ref)
                raise
        yaml_abs = str(self.abspath(row.path))
        meta_abs = yaml_abs[: -len(fs.YAML_SUFFIX)] + fs.META_SUFFIX
        # Both files' stats, taken before any read: an edit landing after them is seen by the
        # next look. The meta's counts as much as the YAML's (its name, tags and description
        # are the blueprint's too): a meta edited while no watcher ran was served stale.
        st = _lstat_or_none(yaml_abs)
        m_st = _lstat_or_none(meta_abs)
        yaml_stale = st is None or not fs.stat_unchanged(
            st, row.yaml_size, row.yaml_mtime_ns, row.yaml_ctime_ns, row.yaml_ino
        )
        meta_stale = (
            row.meta_size != -1  # (-1: indexed without a meta file, a flagged row)
            if m_st is None
            else not fs.stat_unchanged(
                m_st, row.meta_size, row.meta_mtime_ns, row.meta_ctime_ns, row.meta_ino
            )
        )
        stale = yaml_stale or meta_stale
        if stale and self.read_only_reason is not None:
            # Nothing may be recorded: what the files hold now, as the reconcile would read it.
            return self._as_files_hold(row, yaml_abs, meta_abs, gone=st is None)
        if stale and st is not None and st.st_size == 0:
            # Most likely an editor's in-place save between its truncate and its write. An
            # empty YAML is never a revision (it would be flagged, and load of a flagged row
            # returns the last good revision anyway): recording it here only told the app's
            # subscribers "invalid" for an edit about to complete. The watcher waits for the
            # close; one left empty is flagged by it or the next reconcile (open, check).
            return self._blueprint_from(row, self._revision_content(row.id, row.rev))
        if st is None and self._vanish_settling(row.path):
            # Gone for a moment in an editor's save (vim renames the file away and writes a new
            # one; IDEs delete and create). The watcher gives a vanished file a grace period
            # before it records a delete; load recorded it at once, and the file written next
            # became a new blueprint with a new id. Without a watcher nothing else would see
            # the delete before the next open, so load still records it then (so it does when
            # the watcher is another process's and the file's folder has been still longer
            # than its grace: that watcher would have recorded the delete by now).
            return self._blueprint_from(row, self._revision_content(row.id, row.rev))
        if (
            stale
            and not row.flagged
            and st is not None
            and m_st is not None
            and st.st_size == row.yaml_size
            and m_st.st_size == row.meta_size
        ):
            # The bytes decide. A file put back by a rename (a failed save's undo on a full disk)
            # has a new change time but the indexed bytes: recording that time is a write, which
            # a read must not need (load failed with DiskFullError). Reconcile records it later.
            try:
                data = fs.read_regular(yaml_abs, self.limits.max_bytes)
                same = sha256_hex(data) == row.yaml_sha256 and (
                    not meta_stale
                    or sha256_hex(fs.read_regular(meta_abs, MAX_META_BYTES)) == row.meta_sha256
                )
            except FileNotFoundError:
                same = False
            if same:
                return self._blueprint_from(row, data.decode("utf-8"))
        if stale and st is not None and self._settling(row.path, st, m_st):
            # A change this fresh is the running watcher's to record: it waits for the write's
            # close. An in-place save is truncate then write, maybe in chunks; read in a pause,
            # half a file cut at a line often parses, and was recorded as a revision (an event,
            # history, a sync push of a blueprint nobody saved). The file as it is now is
            # returned, unrecorded; one that does not parse (yet) gives the last revision.
            return self._unrecorded(row, yaml_abs)
        if stale:
            from localstore._reconcile import Reconciler

            Reconciler(self).ingest_path(row.path)
            with self.index.read() as cur:
                row = self._resolve(cur, row.id)
        if row.flagged:
            text = self._revision_content(row.id, row.rev)
        else:
            try:
                text = fs.read_regular(yaml_abs, self.limits.max_bytes).decode("utf-8")
            except FileNotFoundError:
                text = self._revision_content(row.id, row.rev)
        return self._blueprint_from(row, text)

    def _refuse_unindexed(self, ref: fs.StrPath) -> None:
        """load() on a read-only store of a path the index does not hold: when a blueprint file
        is there (added after the index's last commit), raise NotFoundError saying so; it said
        only "no blueprint matches" of a file the user could see. (Not read as a blueprint: it
        has no recorded id, and a meta, if any, no revision.)"""
        try:
            rel = fs.normalize_path(ref)
            path = self.abspath(rel)
        except LocalStoreError:  # (not a path: an id or id prefix the index does not hold)
            return
        if os.path.isfile(path):
            raise NotFoundError(
                f"{rel} is in {self._root_str} but not in the index: it was added after the "
                "index's last save, and this store is read-only, so it cannot record it",
                hint=f"read the file itself ({path}), or copy the home to a folder you may "
                "write and open the copy (that records it); 'localstore check' lists such files",
            ) from None

    def _as_if_recorded(self, row: Row) -> tuple[Row, str | None] | None:
        """The row as recording the unrecorded edit of its files would make it, and the YAML
        text they hold, recording nothing (a dry run's view: it may not write, and load()
        records); None when its files hold no such edit, or the row is deleted.

        A YAML that does not read or parse, or a meta file that does not decode, flags the row
        (no text), as the recording would; a missing meta, or one naming another id, leaves the
        recorded meta (as _as_files_hold). A new revision's number is the recorded one's + 1."""
        yaml_abs = str(self.abspath(row.path))
        if row.deleted or not self._edited_on_disk(row, yaml_abs):
            return None
        try:
            data = fs.read_regular(yaml_abs, self.limits.max_bytes)
            check_yaml(data, self.limits)  # (first: it says what to do with bytes not UTF-8)
            text = data.decode("utf-8")
            meta = self._meta_file_of(row, yaml_abs[: -len(fs.YAML_SUFFIX)] + fs.META_SUFFIX)
        except (OSError, UnicodeDecodeError, LocalStoreError) as exc:
            from localstore._reconcile import flag_reason

            why = flag_reason(exc, row.path) if isinstance(exc, LocalStoreError) else str(exc)
            return dataclasses.replace(row, flagged=why), None
        chash = content_hash(data, meta)
        if chash == row.content_hash:  # a touch, or only 'modified' changed: no revision
            return dataclasses.replace(row, flagged=None), text
        return dataclasses.replace(
            row,
            content_hash=chash,
            yaml_sha256=sha256_hex(data),
            meta_json=encode_meta(meta).decode("utf-8"),
            created=meta.created,
            flagged=None,
            rev=row.rev + 1,
        ), text

    def _meta_file_of(self, row: Row, meta_abs: str) -> BlueprintMeta:
        """The meta ``row``'s meta file holds, or the recorded one when it is missing or names
        another id. Raises InvalidMetaError for a file that does not decode."""
        try:
            found = decode_meta(fs.read_regular(meta_abs, MAX_META_BYTES))
        except FileNotFoundError:
            return row.meta
        return found if found.id == row.id else row.meta

    def _as_files_hold(self, row: Row, yaml_abs: str, meta_abs: str, *, gone: bool) -> Blueprint:
        """load() on a read-only store of a blueprint whose files changed after the index's last
        commit (a snapshot that caught a save between its files' rename and its commit, or an
        edit nobody recorded): the YAML and meta the files hold, unrecorded, with the recorded
        ``rev`` and verdict. The last revision when the YAML does not read or parse, or when
        the blueprints folder itself is not there (a copy of data/ alone). Raises NotFoundError
        when the YAML is gone from a folder that is there: deleted after the last commit.
        """
        if gone and os.path.isdir(self._root_str):
            raise NotFoundError(
                f"{row.path} is no longer in {self._root_str}: it was deleted after the index's "
                "last save (this store is read-only, so the index still lists it)",
                hint=f"'localstore history {row.id}' lists its revisions; 'localstore show "
                f"{row.id} --rev {row.rev}' prints the last one",
            )
        read = self._checked_file(yaml_abs)
        if read is None:
            return self._blueprint_from(row, self._revision_content(row.id, row.rev))
        data, text = read
        meta = row.meta
        try:
            found: BlueprintMeta | None = decode_meta(fs.read_regular(meta_abs, MAX_META_BYTES))
        except (OSError, LocalStoreError):
            found = None  # (missing or damaged: the reconcile would keep the indexed meta too)
        if found is not None and found.id == row.id:
            meta = found
        return dataclasses.replace(
            self._blueprint_from(row, text), meta=meta, content_hash=content_hash(data, meta)
        )

    def _settling(self, rel: str, st: os.stat_result, m_st: os.stat_result | None) -> bool:
        """Whether a running Watcher of this store, or the daemon's watching this home from
        another process, is still to record the change at ``rel``."""
        from localstore.watcher import change_settling, running_watcher

        watcher = running_watcher(self)
        stats = [st] if m_st is None else [st, m_st]
        if watcher is not None:
            return change_settling(watcher, rel, stats)
        # No watcher here, but the daemon or an app may watch this home from its own process (a
        # CLI command beside it): the same age rule, without its pending set. Asked only for a
        # change that would be recorded now (a few syscalls, no network).
        periods = self._watching_elsewhere()
        return periods is not None and fs.changed_within(stats, periods.write_quiet_s)

    def _watching_elsewhere(self) -> WatchPeriods | None:
        """The periods of the watchers other processes run on this home (the daemon's, an app's),
        or None when none runs."""
        from localstore._presence import watching_elsewhere

        return watching_elsewhere(self.settings)

    def _vanish_settling(self, rel: str) -> bool:
        """Whether the YAML at ``rel``, gone, is a watcher's to judge: one runs on this store, or
        in another process and its folder changed within that watcher's delete grace."""
        if self._watched():
            return True
        periods = self._watching_elsewhere()
        return periods is not None and fs.folder_changed_within(self.root, rel, periods.grace_s)

    def _unrecorded(self, row: Row, yaml_abs: str) -> Blueprint:
        """The blueprint with its YAML as the file holds it now, not recorded: the recorded
        revision's number and meta, the content's own hash. The last revision if the file does
        not read or parse as a blueprint (as for an empty one)."""
        read = self._checked_file(yaml_abs)
        if read is None:
            return self._blueprint_from(row, self._revision_content(row.id, row.rev))
        data, text = read
        bp = self._blueprint_from(row, text)
        return dataclasses.replace(bp, content_hash=content_hash(data, row.meta))

    def _checked_file(self, yaml_abs: str) -> tuple[bytes, str] | None:
        """The YAML file's bytes and text when it reads and parses as a blueprint, else None."""
        try:
            data = fs.read_regular(yaml_abs, self.limits.max_bytes)
            check_yaml(data, self.limits)  # (first: it says what to do with bytes not UTF-8)
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError, LocalStoreError):
            return None
        return data, text

    def _watched(self) -> bool:
        """Whether a Watcher runs on this store object (it then decides what a vanished file is)."""
        # Imported here: the watcher module imports this one, and watchdog costs start-up time.
        from localstore.watcher import running_watcher

        return running_watcher(self) is not None

    def _revision_content(self, blueprint_id: str, rev: int) -> str:
        with self.index.read() as cur:
            rows = cur.execute(
                "SELECT content FROM revisions WHERE id = ? AND rev = ?", (blueprint_id, rev)
            ).fetchall()
        if not rows:
            raise RevisionNotFoundError(f"revision {rev} of {blueprint_id} is not in history")
        return revision_text(rows[0][0])

    def exists(self, ref: fs.StrPath) -> bool:
        """True if a live blueprint matches the reference."""
        try:
            self.resolve(ref)
        except NotFoundError:
            return False
        return True

    # -- delete / move -----------------------------------------------------------------------------

    def delete(
        self, ref: fs.StrPath, *, origin: str = "local", tx_hook: TxHook | None = None
    ) -> Revision:
        """Delete a blueprint's files; its history stays and ``restore`` brings it back.

        Raises NotFoundError, StorageError (the blueprint and its files are left as they were),
        ChangedOnDiskError for a remote delete of a blueprint with an edit not recorded yet (the
        edit is recorded and nothing is deleted: an edit beats a delete).
        """
        self._check_writable("delete")
        _origin_arg(origin)
        if tx_hook is not None:
            _hook_arg(tx_hook)
        with self.index.read() as cur:
            path = self._resolve(cur, ref).path
        # The edit must be in history before the pair is set aside: recorded only in the
        # delete's transaction, a kill before its commit rolled the edit back, and the next open
        # recorded the delete with the older version (and swept the file set aside).
        self._record_edits_first([path], origin)
        events: list[Event] = []
        removing: tuple[str, list[tuple[str, str]]] | None = None
        aside: list[tuple[str, str]] = []  # (temp name, file) of the pair's files set aside
        refused: str | None = None
        recorded_rev: Revision | None = None
        outcome = WriteOutcome()
        try:
            with self.index.write(outcome) as cur:
                row, recorded = self._record_before_delete(cur, self._resolve(cur, ref), events)
                if recorded and origin == "remote":
                    # The deleting device never saw this edit: an edit beats a delete. The
                    # edit is committed, not rolled back, so the error's "recorded" holds.
                    refused = row.path
                else:
                    yaml_bytes, meta_bytes = self._read_pair(row.path)
                    kept = ""
                    if row.flagged or yaml_bytes is None:
                        content = self._revision_content(row.id, row.rev).encode("utf-8")
                        if row.flagged:
                            # The file that does not parse goes with the delete: kept first.
                            kept = keep_flagged(
                                self, cur, row, yaml_bytes, meta_bytes, "a delete removed"
                            )
                    else:
                        content = yaml_bytes
                    rev = self._mark_deleted(cur, row, content, origin)
                    recorded_rev = self._revision_row(cur, row.id, rev)
                    bp = self._blueprint_from(row, content.decode("utf-8"))
                    if tx_hook is not None:
                        tx_hook(cur, bp)
                    events.append(
                        Event(
                            kind="deleted",
                            id=row.id,
                            path=row.path,
                            origin=origin,
                            rev=rev,
                            content_hash=row.content_hash,
                            detail=kept,
                        )
                    )
                    # The files go last, once the index statements and the hook succeeded:
                    # only the commit can still fail. They are renamed aside, not unlinked,
                    # until the commit is done, so a failed commit puts them back with a rename
                    # (rewriting their bytes needed space: on a full disk the pair was lost).
                    # A kill after the renames leaves a vanished pair, which reconcile records
                    # as this same delete (the index already holds what the files held), and
                    # temp files it removes once stale.
                    removing = (row.path, aside)
                    self._set_pair_aside(row.path, aside)
        except BaseException as exc:
            if outcome.done:
                # Raised once the index committed the delete (see _save_attempt): the pair
                # stays gone, as the index says, and the delete is finished.
                self._deleted(removing, events)
            elif removing is not None:
                self._put_back_pair(*removing)
            if isinstance(exc, apsw.Error):
                raise map_apsw_error(exc, "delete") from exc
            raise
        self._deleted(removing, events)
        if refused is not None:
            self._refuse_remote(refused, "delete")
        assert recorded_rev is not None  # (set on every path that does not raise)
        return recorded_rev

    def _deleted(
        self, removing: tuple[str, builtins.list[tuple[str, str]]] | None, events: Sequence[Event]
    ) -> None:
        """Finish a delete whose write committed (or was released into a caller's)."""
        if removing is not None:
            # A caller's transaction that rolls back later must find the files back (see
            # _save_attempt); nothing is registered when this delete committed by itself.
            removed = removing
            self.index.undo_on_rollback(lambda: self._put_back_pair(*removed))
            self.index.after_commit(lambda: self._discard_pair(*removed))
        self.events.publish(events)

    @staticmethod
    def _revision_row(cur: Any, blueprint_id: str, rev: int) -> Revision:
        """The revision as history() shows it (its recorded time and content hash)."""
        r = cur.execute(
            "SELECT id, rev, origin, device, ts, path, content_hash, deleted FROM revisions "
            "WHERE id = ? AND rev = ?",
            (blueprint_id, rev),
        ).fetchall()[0]
        return Revision(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]))

    def _record_before_delete(self, cur: Any, row: Row, events: list[Event]) -> tuple[Row, bool]:
        """Ingest an edit not recorded yet: the delete revision must hold what the user last had,
        not the older indexed version. Returns the row as it is now and whether it changed."""
        if not self._edited_on_disk(row, str(self.abspath(row.path))):
            return row, False
        from localstore._reconcile import Reconciler

        reconciler = Reconciler(self)
        reconciler.ingest_locked(cur, row.path, may_delete=False)
        events.extend(reconciler.events)
        return self._resolve(cur, row.id), bool(reconciler.events)

    def _read_pair(self, rel: str) -> tuple[bytes | None, bytes | None]:
        """The bytes of a pair's YAML and meta files as they are on disk (None: missing)."""
        out: list[bytes | None] = []
        for path in (rel, fs.meta_path_for(rel)):
            try:
                # Whole (a put-back restores them), and regular files only: a link's target
                # would be put back as a file of the blueprints folder.
                out.append(fs.read_regular(self.abspath(path)))
            except FileNotFoundError:
                out.append(None)
        return out[0], out[1]

    def _set_pair_aside(self, rel: str, aside: list[tuple[str, str]]) -> None:
        """Rename the pair's files to temp names beside them (``aside`` gets each as it goes),
        then flush the folder: a committed delete must not come back after a power cut."""
        for path in (rel, fs.meta_path_for(rel)):
            target = str(self.abspath(path))
            temp = fs.set_aside(target)
            if temp is not None:
                aside.append((temp, target))
        if aside:
            fs.fsync_dir(os.path.dirname(aside[0][1]))

    def _put_back_pair(self, rel: str, aside: list[tuple[str, str]]) -> None:
        """Rename the files of a failed delete back (no space needed); reconcile heals a miss."""
        while aside:
            temp, target = aside.pop()
            try:
                # Never over a file another program put at the name meanwhile (it is kept):
                # the plain rename after a look lost one made between the two.
                if not fs.place_new(temp, target):
                    fs.discard(temp)
            except OSError:  # reconcile on the next open records the vanished pair
                log.error("could not put back %s after a failed delete", rel)

    def _discard_pair(self, rel: str, aside: list[tuple[str, str]]) -> None:
        """Remove a committed delete's files (set aside) and the folders it left empty."""
        while aside:
            fs.discard(aside.pop()[0])
        self._prune_empty_dirs(self.abspath(rel).parent)

    def _mark_deleted(self, cur: Any, row: Row, content: bytes, origin: str) -> int:
        rev = row.rev + 1
        op_id = self.index.next_op_id(cur)
        # The path's key too: a row core v11 kept under a key of its own (see _exact_row) is
        # found by its path once deleted, like any other (restore, history by path). It costs
        # nothing extra: this UPDATE moves the row from the live-path index to the deleted-path
        # one (core v12) whatever its key.
        cur.execute(
            "UPDATE blueprints SET deleted = 1, rev = ?, op_id = ?, flagged = NULL, path_key = ? "
            "WHERE rid = ?",
            (rev, op_id, fs.path_key(row.path), row.rid),
        )
        self._reindex_text(cur, row.rid, row, row.meta, row.path, None)
        self._add_revision(cur, row.id, rev, op_id, origin, row.path, content, row.meta, True)
        return rev

    def move(
        self,
        ref: fs.StrPath,
        new_path: fs.StrPath,
        *,
        origin: str = "local",
        tx_hook: TxHook | None = None,
    ) -> Blueprint:
        """Move or rename a blueprint; its id, content and history are kept.

        Raises NotFoundError, UnsafePathError, AlreadyExistsError, StorageError.
        """
        self._check_writable("move")
        _origin_arg(origin)
        try:
            with self.index.read() as cur:
                row = self._resolve(cur, ref)
        except NotFoundError as exc:
            folder = self._folder_given(ref, new_path)
            if folder is not None:
                raise folder from exc
            raise
        try:
            return self.save(new_path, None, id=row.id, origin=origin, tx_hook=tx_hook)
        except AlreadyExistsError as exc:
            if exc.hint != _TAKEN_HINT:
                raise  # (a folder or link in a file's place: its own hint says what to do)
            # (save's hint, "or save with that blueprint's id", would overwrite that blueprint,
            # which no move means.)
            raise AlreadyExistsError(
                exc.message, hint="choose another path, or first move or delete the blueprint there"
            ) from exc

    def _folder_given(self, ref: fs.StrPath, new_path: fs.StrPath) -> NotFoundError | None:
        """The error for a folder given to move as its REF (``mv team Team``), saying how to
        move what is in it; None if ``ref`` names no folder of blueprints."""
        if not isinstance(ref, str) or not isinstance(new_path, str) or not ref.strip("/ "):
            return None
        try:
            inside = self.list(folder=ref, limit=2)
        except InvalidInputError:
            return None
        if not inside:
            return None
        depth = len(fs.normalize_path(ref).split("/"))
        first = inside[0].path.removesuffix(fs.YAML_SUFFIX)
        target = posixpath.join(new_path.strip("/ "), *first.split("/")[depth:])
        hint = f"move the blueprints in it one by one: 'localstore mv {first} {target}'"
        if len(inside) > 1:
            hint += (
                "; to change only its letter case, move them through a folder of another name"
                " (a folder takes its new case with the last blueprint that leaves it)"
            )
        return NotFoundError(f"{ref!r} is a folder, not a blueprint", hint=hint)

    # -- queries -----------------------------------------------------------------------------------

    def list(
        self,
        *,
        folder: fs.StrPath | None = None,
        tag: str | None = None,
        sort: str = "path",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        recursive: bool = True,
    ) -> builtins.list[BlueprintInfo]:
        """List live blueprints, filtered by folder and tag, sorted and paged.

        ``folder="/"`` lists the top folder only. A folder matches whatever its case and Unicode
        form, as paths collide (files.path_key: ``"projects"`` lists ``Projects/``); a tag as
        written, case and all. A tag matches in either Unicode form (NFC or
        NFD: rows saved before tags were normalized, meta files written by other tools).

        Raises InvalidInputError for an unknown sort, a folder or tag that is not a string, a
        folder no blueprint can be in (a form a save refuses: a backslash, '.' or '..' parts), an
        empty or blank folder or tag (``None`` is no filter; ``folder="/"`` the top folder), a limit or offset
        that is not a whole number >= 0 (``limit=None`` lists everything), a ``descending`` or
        ``recursive`` that is not a bool.
        """
        self._check_open()
        folder = _folder_arg(folder)
        tags = _tag_forms(_tag_arg(tag))
        limit = None if limit is None else _count_arg("limit", limit)
        offset = _count_arg("offset", offset)
        _flag_arg("descending", descending)
        _flag_arg("recursive", recursive)
        # (isinstance first: a list or dict as the sort was a raw "unhashable type" TypeError.)
        if not isinstance(sort, str) or sort not in SORT_COLUMNS:
            raise InvalidInputError(
                f"cannot sort by {sort!r}", hint=f"use one of {', '.join(SORT_COLUMNS)}"
            )
        join = ""
        if len(tags) == 1:
            join = " JOIN blueprint_tags t ON t.rid = b.rid AND t.tag = ?"
        elif tags:  # (a blueprint may hold both forms: joined once)
            marks = ", ".join("?" * len(tags))
            join = f" JOIN (SELECT DISTINCT rid FROM blueprint_tags WHERE tag IN ({marks})) t"
            join += " ON t.rid = b.rid"
        # (One snapshot: the folder's spellings, whether a stamp sorts by its moment, the rows.)
        with self.index.read() as cur, one_snapshot(cur):
            if folder is None and not join and not self.index.write_open:
                # (No filter in the query: ``folder is None``, since "/" strips to "" and still
                # filters to the top folder.)
                # The full listing comes from the cache (see localstore._listing); a page of it
                # only when it is cached already (reading 10,000 rows for one page would not pay).
                view = self._listing.lookup(cur, sort, descending, load=limit is None)
                if view is not None:
                    return view[offset:] if limit is None else view[offset : offset + limit]
            where, args = "b.deleted = 0", builtins.list[Any](tags)
            if folder is not None:
                in_folder, values = folder_filter(
                    cur, folder, recursive=recursive, known=self._spellings
                )
                where, args = f"{where} AND {in_folder}", args + values
            args += [] if limit is None else [limit, offset]
            args += [offset] if limit is None and offset else []
            sql = f"SELECT {INFO_COLUMNS} FROM blueprints b{join} WHERE {where} "
            sql += _order_sql(cur, sort, descending, paged=limit is not None, offset=offset)
            with collector_paused(limit is None or limit > 1000):
                return infos(cur.execute(sql, args).fetchall())

    def count(self) -> int:
        """Number of live blueprints."""
        self._check_open()
        with self.index.read() as cur:
            return int(
                cur.execute("SELECT count(*) FROM blueprints WHERE deleted = 0").fetchall()[0][0]
            )

    def search(
        self,
        query: str,
        *,
        limit: int = 20,
        offset: int = 0,
        folder: fs.StrPath | None = None,
        tag: str | None = None,
    ) -> builtins.list[SearchHit]:
        """Full-text search over name, description, tags, content and path, best first (BM25).

        Words match whole, and the last one also as a prefix (search as you type: ``kube``
        finds kubernetes); quote a phrase to match it exactly. Blueprints matching the words as
        typed come before those matching only through the prefix. Ranking costs time in
        proportion to the number of matches, so a query matching more than ``SEARCH_RANK_CAP``
        blueprints is answered in two tiers: those whose name, tags, description or path match
        (ranked, or newest first if they too are over the cap), then the rest newest first
        (score 0); hits that tie in score come newest first, so ``offset`` pages through one
        order (``search(q, limit=n, offset=k)`` is ``search(q, limit=k + n)[k:]``: each skipped
        hit is ranked too, but only the page's hits are given snippets). Chinese, Japanese,
        Korean and Thai text is searched by character, so any part of a run without spaces is
        found (``東京`` in ``東京都の天気``). Any character that is neither a letter, a digit nor a
        combining mark separates words, a NUL too (``kube\\x00deploy`` searches ``kube deploy``;
        no indexed text holds one). See docs/architecture.md, "Search". Folder and tag filter as
        in :meth:`list`. Raises InvalidInputError for an empty
        query or one that is not a string, a limit or offset that is not a whole number >= 0, a
        folder or tag that is not a string, a folder no blueprint can be in, an empty folder or tag;
        LimitExceededError for a query of more than ``SEARCH_MAX_WORDS`` words.
        """
        self._check_open()
        limit = _count_arg("limit", limit)
        offset = _count_arg("offset", offset)
        folder = _folder_arg(folder)
        tags = _tag_forms(_tag_arg(tag))
        exact, typed = _fts_queries(query)
        filters = ""
        args: list[Any] = []
        if tags:
            marks = ", ".join("?" * len(tags))
            filters += (
                " AND EXISTS (SELECT 1 FROM blueprint_tags t WHERE t.rid = b.rid"
                f" AND t.tag IN ({marks}))"
            )
            args += tags
        if offset:
            # The answer's order does not depend on the limit (ties broken by rowid, tiers
            # fixed by counts), so a page is the tail of a longer answer. (Offset 0, the
            # common case, runs exactly as before.)
            return self._search(
                exact,
                typed,
                filters,
                args,
                min(limit + offset, _SQL_INT_MAX),
                skip=offset,
                folder=folder,
            )
        return self._search(exact, typed, filters, args, limit, folder=folder)

    def _search(
        self,
        exact: str,
        typed: str,
        filters: str,
        args: Sequence[Any],
        limit: int,
        *,
        skip: int = 0,
        folder: str | None = None,
    ) -> builtins.list[SearchHit]:
        # One snapshot for all of a search's statements (folder rows, counts, hits, their
        # rows and snippets): each in its own read, another connection's commit in between
        # (the daemon's watcher or sync next to an app) answered a hit with the row of after
        # and the snippet of before, a deleted blueprint as a hit, and a page past the first
        # failed with a KeyError (a hit no longer matched when its snippet was made).
        with self.index.read() as cur, one_snapshot(cur):
            # Past the first page, snippets only for the hits kept (FTS5 tokenizes a hit's
            # text again for its snippet, ~60 us: page 50 made 1,000 of them for 20).
            rows = None
            if folder is not None:  # (before the tag filter, in the SQL and in its values)
                in_folder, values = folder_filter(
                    cur, folder, recursive=True, known=self._spellings
                )
                filters, args = f" AND {in_folder}{filters}", [*values, *args]
                rows = _folder_rows(cur, in_folder, values)
            if rows is not None and not rows[0]:
                return []  # (an empty folder, or none: nothing to walk the matches for)
            search = _Search(cur, filters, args, snippets=not skip, rows=rows)
            if skip:
                return search.add_snippets(self._hits(search, exact, typed, limit)[skip:])
            return self._hits(search, exact, typed, limit)

    @staticmethod
    def _hits(search: _Search, exact: str, typed: str, limit: int) -> builtins.list[SearchHit]:
        # Whole words first: a prefix makes FTS5 merge the doclists of every word it matches
        # before it can count or rank, and a common word fills the page on its own.
        hits = search.answer(exact, limit)
        if len(hits) < limit and typed != exact:
            rest = f"({typed}) NOT ({exact})"
            if hits:
                # Below whole-word hits, the prefix-only ones newest first: counting and
                # ranking them cost as much as the whole-word pass (a name like
                # workflow-123 matched one blueprint, then paid 2 ms for the remainder).
                hits += search.top(rest, limit - len(hits))
            else:  # the prefix is all there is (search as you type): ranked as usual
                hits += search.answer(rest, limit)
        return hits

    # -- history -----------------------------------------------------------------------------------

    def history(
        self, ref: fs.StrPath, *, limit: int | None = None, before: int | None = None
    ) -> builtins.list[Revision]:
        """A blueprint's revisions (deleted ones too), newest first.

        ``limit``: at most this many (``None``, the default, is every revision: a caller that
        checks a whole lineage, such as import, must not get a silently cut list). ``before``:
        only revisions older than this revision number. Page through a long history by passing
        the last revision's ``rev`` as ``before`` for the next page (a cursor, not an offset:
        a save between two pages neither repeats nor skips a revision); a page shorter than
        ``limit`` is the last. Raises NotFoundError, InvalidInputError for a limit that is not
        a whole number >= 0 or a ``before`` that is not an int.
        """
        self._check_open()
        limit = None if limit is None else _count_arg("limit", limit)
        before = None if before is None else _rev_arg("before", before)
        with self.index.read() as cur:
            row = self._resolve(cur, ref, include_deleted=True)
            rows = cur.execute(
                "SELECT id, rev, origin, device, ts, path, content_hash, deleted FROM revisions "
                "WHERE id = ? AND rev < ? ORDER BY rev DESC LIMIT ?",
                (
                    row.id,
                    # (SQLite's integers are 64-bit; LIMIT -1 is no limit)
                    _SQL_INT_MAX if before is None else max(min(before, _SQL_INT_MAX), -1),
                    -1 if limit is None else limit,
                ),
            ).fetchall()
        return [Revision(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows]

    def load_revision(self, ref: fs.StrPath, rev: int) -> Blueprint:
        """A past revision's content and meta. Raises RevisionNotFoundError, InvalidInputError
        for a revision number that is not an int."""
        self._check_open()
        rev = _rev_arg("rev", rev)
        with self.index.read() as cur:
            row = self._resolve(cur, ref, include_deleted=True)
            rows = cur.execute(
                "SELECT path, content, meta, content_hash FROM revisions WHERE id = ? AND rev = ?",
                (row.id, min(rev, _SQL_INT_MAX)),  # (SQLite's integers are 64-bit)
            ).fetchall()
        if not rows:
            raise RevisionNotFoundError(
                f"{row.path} has no revision {rev}", hint="see 'localstore history REF'"
            )
        path, text, meta_json, chash = rows[0]
        meta = BlueprintMeta.from_dict(json.loads(revision_text(meta_json)))
        return Blueprint(
            path=path, content=revision_text(text), meta=meta, rev=rev, content_hash=chash
        )

    def restore(
        self,
        ref: fs.StrPath,
        rev: int,
        *,
        path: fs.StrPath | None = None,
        origin: str = "local",
        expected_rev: int | None = None,
    ) -> Blueprint:
        """Make a past revision current again (also brings back a deleted blueprint).

        The blueprint stays where it is, or comes back where it was deleted (a restore brings
        back content and meta, it does not undo a move); ``path`` puts it elsewhere. Restoring
        the content it already has records nothing and returns the current revision.

        Raises RevisionNotFoundError, AlreadyExistsError or UnsafePathError (its path is taken
        or collides by case: pass ``path``), RevisionConflictError (``expected_rev`` is given
        and the blueprint is no longer at that revision, deleted counting as one),
        InvalidInputError for a revision that is not an int.
        """
        self._check_writable("restore")
        _origin_arg(origin)
        if expected_rev is not None:
            _rev_arg("expected_rev", expected_rev)
        old = self.load_revision(ref, rev)
        meta = old.meta.replace(modified="")
        failed: LocalStoreError | None = None
        # Its save runs inside the transaction below, so it cannot commit an edit it replaces
        # first (see _record_first): the blueprint's pair and the target are done here.
        self._record_edits_first(self._restore_targets(old.id, path), origin)
        # Judged before the write lock below (its save runs inside it): a revision that no longer
        # loads is left to the save, which refuses it there as before.
        self._judge_texts_ahead([old.content])
        # One write transaction from reading where the blueprint is to the save: otherwise a
        # move committed in between (another thread or process) was undone by saving at the
        # path read before it.
        with self.index.write():
            current = self.row(old.id, include_deleted=True)
            try:
                bp = self.save(
                    path or current.path,
                    old.content,
                    meta=meta,
                    id=old.id,
                    origin=origin,
                    expected_rev=expected_rev,
                )
            except LocalStoreError as exc:
                # Raised once the transaction commits: a save that refuses still keeps an
                # edit it found unrecorded on disk (see save), so this must not roll back.
                failed = exc
        if failed is None:
            return bp
        if isinstance(failed, (AlreadyExistsError, UnsafePathError)) and path is None:
            # The path is taken (or now collides or is ignored). The save's hint ("... or
            # save with that blueprint's id") would overwrite the other blueprint: a restore's
            # way out is another path.
            raise type(failed)(
                failed.message,
                hint="restore it to another path: restore(ref, rev, path=...), "
                "'localstore restore REF REV --path NEWPATH'",
            ) from failed
        raise failed

    def _restore_targets(self, blueprint_id: str, path: fs.StrPath | None) -> builtins.list[str]:
        """The paths a restore may replace: the blueprint's (live or where it was deleted) and
        ``path`` (when it is one a save takes: a bad one is the save's to refuse)."""
        with self.index.read() as cur:
            row = self._row_by(cur, "id = ?", (blueprint_id,))
        rels = [] if row is None else [row.path]
        if path is not None:
            with contextlib.suppress(LocalStoreError):
                rels.append(fs.normalize_path(path))
        return rels

    # -- reconcile / check -------------------------------------------------------------------------

    def reconcile(self) -> CheckReport:
        """Bring the index in line with the files (files are the truth); returns what changed."""
        self._check_writable("reconcile")
        from localstore._reconcile import Reconciler

        return Reconciler(self).run(fix=True)

    def check(self, *, fix: bool = False) -> CheckReport:
        """Compare index and files; with ``fix`` repair what can be repaired safely."""
        self._check_open()
        _flag_arg("fix", fix)
        if fix:
            self._check_writable("repair")
        from localstore._reconcile import Reconciler

        report = Reconciler(self).run(fix=fix)
        report_kept(self, report, fix=fix)
        if self.recovered_index is not None:
            report.fixed.insert(
                0,
                {
                    "kind": "index-rebuilt",
                    "path": str(self.recovered_index),
                    "detail": "the index was damaged and was rebuilt from the files; history "
                    "(revisions, deletions) before this point was not recovered; the damaged "
                    "index is kept at this path",
                },
            )
        problems = self.index.integrity_check()
        if fix and any(p.startswith("search index") for p in problems):
            # (Each check re-reads all indexed text: only a broken index pays for a second one.)
            for table in self.index.rebuild_search_indexes():
                report.fixed.append({"kind": "search-index-rebuilt", "path": "", "detail": table})
            problems = self.index.integrity_check()
        for problem in problems:
            report.problems.append({"kind": "index-integrity", "path": "", "detail": problem})
        if fix and not problems and self.index.page_usage()["auto_vacuum"] != 2:
            self._vacuum_index(report)
        return report

    def _vacuum_index(self, report: CheckReport) -> None:
        """Convert an index made before incremental auto_vacuum (check --fix, once): its free
        pages were only ever reused, so a burst, an upgrade's history compaction or purged app
        data left the file at its peak size for good."""
        try:
            freed = self.index.vacuum()
        except DiskFullError as exc:  # the repairs above stand; only the conversion waits
            report.problems.append(
                {"kind": "index-not-vacuumed", "path": str(self.paths.index_db), "detail": str(exc)}
            )
            return
        report.fixed.append(
            {
                "kind": "index-vacuumed",
                "path": str(self.paths.index_db),
                "detail": f"rewritten to give free space back as it accumulates; "
                f"{freed / 1_000_000:.1f} MB given back now",
            }
        )


def change_events(previous: Row | None, p: _Prepared, rev: int, origin: str) -> list[Event]:
    """The events of one recorded change: created, moved and/or modified, and invalid."""
    old_path = previous.path if previous is not None and not previous.deleted else None
    events = []
    if old_path is None:
        events.append(Event("created", p.meta.id, p.path, origin, rev, content_hash=p.content_hash))
    else:
        assert previous is not None
        if old_path != p.path:
            events.append(Event("moved", p.meta.id, p.path, origin, rev, old_path, p.content_hash))
        if old_path == p.path or previous.content_hash != p.content_hash:
            events.append(
                Event("modified", p.meta.id, p.path, origin, rev, content_hash=p.content_hash)
            )
    if not p.valid:
        events.append(
            Event(
                "invalid",
                p.meta.id,
                p.path,
                origin,
                rev,
                content_hash=p.content_hash,
                detail="; ".join(p.problems),
            )
        )
    return events


# The listing projection: only what BlueprintInfo needs (no content hashes of files, no meta JSON).
class _Search:
    """The queries of one search. Deleted blueprints have no FTS row, so without filters counting
    and ranking read the FTS table alone and only the hits are joined to their index rows."""

    def __init__(
        self,
        cur: Any,
        filters: str,
        args: Sequence[Any],
        *,
        snippets: bool = True,
        rows: tuple[int, int, int] | None = None,
    ) -> None:
        self._cur = cur
        self._filters = filters
        self._args = tuple(args)
        # The number of live blueprints in the folder searched and their lowest and highest
        # row id, if it has at most _SEARCH_FOLDER_ROWS (else None).
        self._rows = None if rows is None else rows[0]
        if rows is not None:
            self._args = (rows[1], rows[2], *self._args)
        self._snippets = snippets
        # Without snippets: by blueprint id, the full-text table, query and rowid each hit was
        # found by, for its snippet later (add_snippets).
        self._found_by: dict[str, tuple[str, str, int]] = {}

    def _source(self, table: str) -> str:
        if not self._filters:
            return f"FROM {table} WHERE {table} MATCH ?"
        if self._rows is not None:
            # The filtered row ids gathered once (SQLite keeps them in a sorted list behind a
            # Bloom filter), each match tested against them: a lookup of the match's index row
            # costs several times that; and only the matches between the lowest and the highest
            # id are walked (FTS5 seeks to them). The '+' keeps the test itself away from FTS5,
            # which would take each id as a query of its own and compute BM25's statistics (a
            # walk of each word's whole doclist) again for each.
            return (
                f"FROM {table} WHERE {table} MATCH ? AND {table}.rowid >= ? "
                f"AND {table}.rowid <= ? AND +{table}.rowid IN "
                f"(SELECT b.rid FROM blueprints b WHERE b.deleted = 0{self._filters})"
            )
        return (
            f"FROM {table} JOIN blueprints b ON b.rid = {table}.rowid "
            f"WHERE {table} MATCH ? AND b.deleted = 0{self._filters}"
        )

    def answer(self, match: str, limit: int) -> builtins.list[SearchHit]:
        """Ranked when there are few enough matches, else in tiers (see BlueprintStore.search)."""
        # (A folder of at most SEARCH_RANK_CAP blueprints has no more matches than that: not
        # counted, a walk of every match of the words in the whole store.)
        if (self._rows is not None and self._rows <= SEARCH_RANK_CAP) or self.count(
            match
        ) <= SEARCH_RANK_CAP:
            return self.top(match, limit, ranked=True)
        # The described tier from the small index of those columns: asking the full one with a
        # column filter decodes every position list of the words (0.4-1.7 ms).
        found = self.count(match, _DESCRIBED)
        hits = (
            self.top(match, limit, ranked=found <= SEARCH_RANK_CAP, table=_DESCRIBED)
            if found
            else []
        )
        if len(hits) < limit:
            rest = f"({match}) NOT ({{name description tags path}} : ({match}))" if found else match
            hits += self.top(rest, limit - len(hits))
        return hits

    def count(self, match: str, table: str = _FULL) -> int:
        """Matches, counted up to one past the cap (walks doclists, ranks nothing)."""
        sql = f"SELECT count(*) FROM (SELECT 1 {self._source(table)} LIMIT {SEARCH_RANK_CAP + 1})"
        return int(self._cur.execute(sql, (match, *self._args)).fetchall()[0][0])

    def top(
        self, match: str, limit: int, *, ranked: bool = False, table: str = _FULL
    ) -> builtins.list[SearchHit]:
        """The first ``limit`` matches, by BM25 or newest first (score 0: BM25's first call scans
        every phrase's whole doclist, the very cost this order avoids), with snippets (unless this
        search makes them later, see add_snippets)."""
        if ranked:
            weights = _BM25_WEIGHTS if table == _FULL else _BM25_DESCRIBED_WEIGHTS
            # Ties (identical blueprints) newest first, as unranked hits: without a total order
            # SQLite's sorter returned tied hits in an order that changed with the LIMIT, so
            # pages overlapped and skipped hits.
            score, order = f"bm25({table}, {weights})", f"score, {table}.rowid DESC"
        else:
            score, order = "0.0", f"{table}.rowid DESC"
        snippet = _snippet_sql(table) if self._snippets else "''"
        picked = self._cur.execute(
            f"SELECT {table}.rowid, {score} AS score, {snippet} {self._source(table)} "
            f"ORDER BY {order} LIMIT ?",
            (match, *self._args, limit),
        ).fetchall()
        if not picked:
            return []
        marks = ",".join("?" * len(picked))
        by_rid = {
            r[0]: r[1:]
            for r in self._cur.execute(
                f"SELECT b.rid, {INFO_COLUMNS} FROM blueprints b WHERE b.rid IN ({marks})",
                [p[0] for p in picked],
            ).fetchall()
        }
        hits = infos([by_rid[p[0]] for p in picked])
        if not self._snippets:
            for info, p in zip(hits, picked, strict=True):
                self._found_by[info.id] = (table, match, p[0])
        return [
            SearchHit(info, -float(p[1]), *shown(_snippet(self._cur, p[2], match, p[0])))
            for info, p in zip(hits, picked, strict=True)
        ]

    def add_snippets(self, hits: builtins.list[SearchHit]) -> builtins.list[SearchHit]:
        """``hits`` (found without snippets) with their snippets, as top() would have made them:
        by the same table and query, one statement per pair."""
        by_query: dict[tuple[str, str], builtins.list[int]] = {}
        for hit in hits:
            table, match, rid = self._found_by[hit.info.id]
            by_query.setdefault((table, match), []).append(rid)
        snippets: dict[int, str] = {}
        for (table, match), rids in by_query.items():
            marks = ",".join("?" * len(rids))
            for rid, made in self._cur.execute(
                f"SELECT rowid, {_snippet_sql(table)} FROM {table} "
                f"WHERE {table} MATCH ? AND rowid IN ({marks})",
                (match, *rids),
            ).fetchall():
                snippets[rid] = _snippet(self._cur, made, match, rid)
        return [
            SearchHit(hit.info, hit.score, *shown(snippets[self._found_by[hit.info.id][2]]))
            for hit in hits
        ]


def _folder_rows(cur: Any, sql_filter: str, args: Sequence[Any]) -> tuple[int, int, int] | None:
    """The number of live blueprints a folder filter passes and their lowest and highest row id;
    None if more than _SEARCH_FOLDER_ROWS (read from one range of the folder index, which holds
    the row ids, no further than one past the bound)."""
    sql = (
        "SELECT count(*), min(rid), max(rid) FROM (SELECT b.rid FROM blueprints b "
        f"WHERE b.deleted = 0 AND {sql_filter} LIMIT {_SEARCH_FOLDER_ROWS + 1})"
    )
    rows, low, high = cur.execute(sql, args).fetchall()[0]
    return (rows, low, high) if rows <= _SEARCH_FOLDER_ROWS else None


def _snippet_sql(table: str) -> str:
    """A hit's snippet, its hits marked by characters no indexed text holds (see _fts_text);
    NULL for a large blueprint (its content is searched), whose snippet _snippet() makes."""
    whole_max = _snippets.SNIPPET_WHOLE_MAX if table == _FULL else None
    return _snippets.snippet_sql(table, whole_max=whole_max)


def _snippet(cur: Any, made: Any, match: str, rid: int) -> str:
    """The snippet the query made (``made``), or for a large blueprint (NULL) one from a window
    of its content: FTS5's snippet() of a whole large text costs the square of its hits."""
    return _snippets.window_snippet(cur, match, rid) if made is None else str(made)


def fts_tags(tags: Sequence[str]) -> str:
    """The tags text search indexes: the index row's JSON with its brackets, quotes and commas
    blanked, exactly as the ``blueprints_text`` view computes it before its indexed_text() (FTS5
    removes an entry given the values it indexed, and reads snippets and checks from that view)."""
    text = tags_json(tags)
    return text.replace("[", "").replace("]", "").replace('"', "").replace(",", " ")


def _fts_queries(query: str) -> tuple[str, str]:
    """The FTS5 queries for what someone typed: whole words only, and with the last word also as
    a prefix (see _fts_query). Text that has two Unicode forms (composed NFC, decomposed NFD:
    macOS hands out NFD) is searched in both, OR-ed: saves store names, descriptions and tags
    NFC, but older rows, content and meta files of other tools may hold NFD, and the tokenizer
    folds only Latin accents, not, say, Hangul jamo into syllables. (ASCII: nothing to do.)"""
    if not isinstance(query, str) or query.isascii():
        return _fts_query(query, prefix=False), _fts_query(query)
    forms = dict.fromkeys(
        (query, unicodedata.normalize("NFC", query), unicodedata.normalize("NFD", query))
    )
    if len(forms) == 1:
        return _fts_query(query, prefix=False), _fts_query(query)
    # The word limit is the shortest form's (NFC's): each of the NFD form's Hangul jamo is a term
    # of its own, so 29 Korean syllables typed (71 jamo) were refused as "71 words, more than
    # the 64 a search takes". The cost: NFD has at most three terms a syllable, so the forms
    # together hold up to about seven times the limit's terms (three times before, each form
    # under it); measured, a 42-syllable query on 2,000 Korean blueprints holding every one of
    # its syllables took 75 ms (a 64-term one 13 ms). Long pasted text is still refused.
    words = min(_fts_words(f) for f in forms)
    if words > SEARCH_MAX_WORDS:
        raise _too_many_words(words)
    return (
        " OR ".join(f"({_fts_query(f, prefix=False, counted=False)})" for f in forms),
        " OR ".join(f"({_fts_query(f, counted=False)})" for f in forms),
    )


def _too_many_words(words: int) -> LimitExceededError:
    return LimitExceededError(
        f"the search query has {words:,} words, more than the {SEARCH_MAX_WORDS} a search takes",
        hint="search for fewer words (each character of Chinese, Japanese, Korean or Thai "
        "counts as one): a few distinctive ones find the same blueprints",
    )


def _fts_words(query: str) -> int:
    """The terms of ``query`` counted against SEARCH_MAX_WORDS, as _fts_query() counts them."""
    # (Quoted or not, a chunk's words count the same: the quotes only split the text.)
    return sum(
        _terms(indexed_text(w))
        for chunk in _UNSEARCHABLE.sub(" ", query).split('"')
        for w in _query_words(chunk)
    )


def _fts_query(query: str, *, prefix: bool = True, counted: bool = True) -> str:
    """The FTS5 query for what someone typed: whole words, the last one also as a prefix (it may
    still be being typed), quoted text as a phrase. Prefixes cost: FTS5 merges the doclists of
    every word they match before it can count or rank, so only the last word gets one.
    ``counted``: refuse more than SEARCH_MAX_WORDS words (else the caller counted them)."""
    if not isinstance(query, str):
        raise wrong_type(
            "the search query", query, "a string", hint="pass the words to search for as text"
        )
    if not query.strip():
        raise InvalidInputError("empty search query", hint="give one or more words")
    # A lone surrogate (an argument decoded with surrogateescape) cannot be bound as UTF-8, and
    # a NUL ends FTS5's string early ("unterminated string"): neither is in any indexed text.
    query = _UNSEARCHABLE.sub(" ", query)
    parts: list[str] = []
    words = 0
    tokens = query.split('"')
    for i, chunk in enumerate(tokens):
        if i % 2 == 1:
            # Counted as indexed, as unquoted words are: each character of a run written without
            # spaces is a term of the phrase (a quoted paragraph of Chinese counted one word).
            words += sum(_terms(indexed_text(w)) for w in _query_words(chunk))
            if chunk.strip():
                parts.append('"' + indexed_text(chunk) + '"')
            continue
        found = [indexed_text(word) for word in _query_words(chunk)]
        words += sum(_terms(w) for w in found)
        parts.extend('"' + word + '"' for word in found)
    if counted and words > SEARCH_MAX_WORDS:
        raise _too_many_words(words)
    if not parts:
        raise InvalidInputError(f"nothing to search for in {query!r}", hint="use letters or digits")
    # The last word, unless the query ends with a closed phrase or a character indexed as a
    # token of its own (a prefix of one character finds nothing more, at a prefix's cost).
    open_end = not query.rstrip().endswith('"') or len(tokens) % 2 == 0
    if prefix and open_end and not parts[-1].endswith(SPLIT + '"'):
        parts[-1] += "*"
    return " ".join(parts)


def _terms(word: str) -> int:
    """The FTS5 terms of one query word (as indexed): one, or as many as the tokenizer cuts it
    into: one a character of a run written without spaces (``東京`` is the phrase of two; see
    localstore._fts_text), three for ``हिन्दी`` (cut at its vowel signs). Counted as one, 'हिन्दी'
    pasted 700 times (2,100 terms) held the index for 5 s on 5,000 blueprints."""
    if word.isascii():  # (the query's words are letters and digits: one token)
        return 1
    return max(1, _snippets.terms(word))


def _query_words(text: str) -> builtins.list[str]:
    """The words of unquoted query text, split where the tokenizer splits: at every character
    that is neither a letter, a digit nor a combining mark (FTS5 tokenizes each quoted word as
    it does the documents, so marks stay in). Deleting the other characters instead glued
    'config.yaml', 'a/b' and 'v1.2' into words no document holds."""
    words = []
    for word in text.split():
        if not word.isalnum():
            word = "".join(c if c.isalnum() or _in_token(c) else " " for c in word)
        words += [w for w in word.split() if any(c.isalnum() or _private(c) for c in w)]
    return words


def _in_token(c: str) -> bool:
    """A character inside a token that isalnum() does not say: a combining mark, or a private-use
    one (unicode61's token characters are "L* N* Co": a Powerline or Nerd Font glyph glued to a
    word, as in a branch name, is part of it; split off, the word was never found)."""
    category = unicodedata.category(c)
    return category.startswith("M") or category == "Co"


def _private(c: str) -> bool:
    return unicodedata.category(c) == "Co"


def _collected_unclosed(
    maintainer: Maintainer | None, flusher: ThreadPoolExecutor, mark: OpenMark, root: str
) -> None:
    """Stop the threads of a store collected without close() (its finalizer: holds no store)."""
    if maintainer is not None:
        maintainer.stop()
    flusher.shutdown(wait=False)
    # (Its index connection is closed by its own collection; the mark would keep 'check --fix'
    # from rebuilding for the life of the process.)
    mark.close()
    warnings.warn(
        f"a LocalStore store of {root} was never closed: call store.close() (or open it in a "
        "with block) when the app is done with it",
        ResourceWarning,
        stacklevel=2,
    )


class _CloseHook:
    """One registration of a close hook. Compared by identity: removing it takes this one out,
    never an equal callback registered again (bound methods of one object compare equal)."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback

    def __call__(self) -> None:
        self.callback()

    def __repr__(self) -> str:
        return repr(self.callback)


def _lstat_or_none(path: str) -> os.stat_result | None:
    """The file's own stat (a link's, not its target's), or None if nothing has the name
    (also when one of its folders is a file now: ENOTDIR, the file is gone as surely)."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _cross_disk_error(old_rel: str, new_rel: str) -> StorageError:
    """EXDEV from a move: a folder of the blueprints folder is a mount point (another disk)."""
    old_dir, new_dir = fs.folder_of(old_rel) or ".", fs.folder_of(new_rel) or "."
    return StorageError(
        f"cannot move {old_rel} to {new_rel}: the folders {old_dir!r} and {new_dir!r} are on "
        "different disks (one is mounted inside the blueprints folder), and a move renames the "
        "files, which cannot cross disks",
        hint="move it to a folder on the same disk; or save a copy at the new path (it gets a new "
        "id) and delete this one; or mount that disk outside the blueprints folder",
    )


def _ignore_match(rules: fs.IgnoreRules, rel: str) -> tuple[str, str]:
    """The part of ``rel`` and the pattern that ignore it, for the error message only (the
    decision is IgnoreRules.ignored's)."""
    return rules.reason(rel) or (rel, "?")


_SQL_INT_MAX = 2**63 - 1


def _count_arg(name: str, value: Any) -> int:
    """A limit or offset: a whole number >= 0 (a negative one used to mean "no limit" to
    SQLite, a float was truncated, None leaked a TypeError)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(
            f"{name} must be a whole number, not {type(value).__name__} {value!r}",
            hint=f"pass an int >= 0 as {name}",
        )
    if value < 0:
        raise InvalidInputError(
            f"{name} must be >= 0, not {value}", hint=f"pass 0 or more as {name}"
        )
    # SQLite binds 64-bit integers (a raw OverflowError above); no store holds that many rows,
    # so a larger limit or offset means the same as the largest.
    return min(value, _SQL_INT_MAX)


def _rev_arg(name: str, value: Any) -> int:
    """A revision number: an int (int() made "x" a raw ValueError and 1.7 or True revision 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(
            f"{name} must be a whole number, not {type(value).__name__} {value!r}",
            hint="give a revision number as an int; 'localstore history REF' lists them",
        )
    return value


def _text_arg(name: str, value: Any) -> Any:
    """A folder or tag filter: a string or None (a list was handed to SQLite as is)."""
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(
            f"{name} must be a string, not {type(value).__name__}",
            hint=f"pass one {name} as text"
            + ("; filter by one tag at a time" if name == "tag" else ""),
        )
    if value is not None and not value.isascii():
        try:
            value.encode("utf-8")  # (SQLite binds text as UTF-8: a raw UnicodeEncodeError)
        except UnicodeEncodeError as exc:
            raise _not_unicode(f"the {name} filter", exc, InvalidInputError) from exc
    return value


def _tag_arg(value: Any) -> str | None:
    """A tag filter: None for no filter, else a tag a blueprint can have.

    An empty (or blank) tag was taken as no filter and answered every blueprint, where the caller
    asked for those with a tag no save keeps (saves drop empty tags): refused instead."""
    tag = _text_arg("tag", value)
    if tag is not None and not tag.strip():
        raise InvalidInputError(
            f"the tag filter is empty ({tag!r}): no blueprint has an empty tag",
            hint="pass tag=None (leave --tag out) for every blueprint, or give a tag",
        )
    return tag


def _folder_arg(value: Any) -> str | None:
    """A folder filter as the index stores folders: None for no filter, else NFC like every
    stored path (macOS hands out NFD names) without its outer slashes ("" for "/": the top
    folder). A form a save refuses holds no blueprint: refused too, not answered [].

    An empty or blank folder is refused, as the CLI's ``--folder ''`` is: taken as "no filter"
    it answered every blueprint to an app whose folder variable was left unset."""
    folder = _text_arg("folder", fs.path_text(value))
    if folder is None:
        return None
    if not folder.strip():
        raise InvalidInputError(
            f"the folder filter is empty ({value!r})",
            hint="pass folder=None for every blueprint, or folder='/' for the top folder only",
        )
    folder = unicodedata.normalize("NFC", folder).strip("/")
    if not folder:
        return ""
    if "\\" in folder:
        raise InvalidInputError(
            f"the folder filter {value!r} contains a backslash",
            hint="use '/' between folders, as in 'team/ops'",
        )
    for seg in folder.split("/"):
        try:
            fs._check_segment(seg, str(value))
        except UnsafePathError as exc:
            raise InvalidInputError(
                f"the folder filter {value!r} names no folder a blueprint can be in: {exc.message}",
                hint=exc.hint or "give the folder as 'localstore ls' shows paths: 'team/ops'",
            ) from exc
        if seg.casefold().endswith((fs.YAML_SUFFIX, fs.META_SUFFIX)):
            raise InvalidInputError(
                f"the folder filter {value!r} names a blueprint's file, not a folder",
                hint="give the folder the blueprint is in (the path without its file name)",
            )
    return folder


def _tag_forms(tag: str | None) -> builtins.list[str]:
    """The forms of a tag filter to match: saves store tags NFC, but rows saved before that and
    meta files written by other tools may hold them NFD (a migration would rewrite every such
    row, its meta file and its content hash; two keys of an index lookup cost nothing)."""
    if not tag:
        return []
    if tag.isascii():
        return [tag]
    forms = dict.fromkeys(
        (unicodedata.normalize("NFC", tag), unicodedata.normalize("NFD", tag), tag)
    )
    return builtins.list(forms)


def _flag_arg(name: str, value: Any) -> bool:
    """A bool flag of the public API: True or False (``descending="no"`` counted as true)."""
    if not isinstance(value, bool):
        raise InvalidInputError(
            f"{name} must be True or False, not {type(value).__name__} {value!r}",
            hint=f"pass a bool as {name}",
        )
    return value


def _requests_arg(requests: Any) -> builtins.list[SaveRequest]:
    """save_many()'s items: SaveRequest objects (a dict of save()'s arguments failed deep in the
    save path with an AttributeError), from a list or any other iterable."""
    if isinstance(requests, str | bytes | Mapping | SaveRequest) or not isinstance(
        requests, Iterable
    ):
        raise InvalidInputError(
            f"save_many() takes a list of SaveRequest items, not a {type(requests).__name__}",
            hint="pass [localstore.SaveRequest(path=..., content=...), ...]",
        )
    items = builtins.list(requests)
    for i, item in enumerate(items):
        if not isinstance(item, SaveRequest):
            raise InvalidInputError(
                f"save_many() item {i} is a {type(item).__name__}, not a SaveRequest",
                hint="build each item as localstore.SaveRequest(path=..., content=...), with "
                "the arguments save() takes",
            )
        if not isinstance(item.fields, Mapping):
            raise wrong_type(
                f"save_many() item {i}: fields",
                item.fields,
                "a mapping",
                hint="pass fields={'name': ..., 'tags': [...]} (save()'s meta keywords)",
            )
    return items


def _hook_arg(hook: Any) -> None:
    """A tx_hook: called as hook(cursor, blueprint) inside the index transaction (one that was
    not callable failed there with a raw TypeError, after the files were written)."""
    if not callable(hook):
        raise wrong_type(
            "tx_hook",
            hook,
            "callable",
            hint="pass a function taking (cursor, blueprint), or leave tx_hook out",
        )


def _no_nul(name: str, value: str) -> None:
    if "\x00" in value:
        # (Saved, it could never sync: the cloud's jsonb holds no NUL and quarantined it.)
        raise InvalidMetaError(
            f"{name} {value!r} contains a NUL character",
            hint=f"remove the NUL ('\\x00') from {name}",
        )


def _ambiguous_prefix(prefix: str, paths: builtins.list[str], count: int) -> AmbiguousRefError:
    """The error for an id prefix that ``count`` blueprints have, naming the first ``paths``.

    "matches more than one blueprint" alone left the person to find which, with 'ls' and ids
    cut to 8 characters that may all start alike."""
    more = f" and {count - len(paths)} more" if count > len(paths) else ""
    return AmbiguousRefError(
        f"id prefix {prefix!r} matches {count} blueprints: {', '.join(paths)}{more}",
        hint="give more characters of the id, or the blueprint's path",
    )


def _meta_text_arg(name: str, value: Any) -> None:
    """A text meta field given to save (name, description, author, version)."""
    if not isinstance(value, str):
        raise InvalidMetaError(
            f"{name} must be a string, not {type(value).__name__} {value!r}",
            hint=f"pass {name} as text (str({value!r}) if that is what you mean)",
        )
    _no_nul(name, value)


def _tags_arg(tags: Any) -> str | builtins.list[str]:
    """save's tags: one tag as a str, or a list (any iterable but a mapping) of str."""
    if isinstance(tags, str):
        _no_nul("the tag", tags)
        _new_tag(tags)
        return tags
    if isinstance(tags, Mapping | bytes) or not isinstance(tags, Iterable):
        raise InvalidMetaError(
            f"tags must be a list of strings, not {type(tags).__name__}",
            hint="pass tags=['a', 'b'] (or leave tags out to keep them)",
        )
    tags = builtins.list(tags)  # (a generator is read once, here)
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidMetaError(
                f"tags must be strings, not {type(tag).__name__} {tag!r}",
                hint="pass each tag as text, e.g. tags=['a', 'b']",
            )
        _no_nul("the tag", tag)
        _new_tag(tag)
    count = len(normalize_tags(tags))
    if count > MAX_TAGS:
        raise InvalidMetaError(
            f"{count:,} tags, over the limit of {MAX_TAGS} a blueprint has",
            hint="keep the tags to a few labels; the description holds longer text",
        )
    return tags


def _new_tag(tag: str) -> None:
    """Refuse a tag given to a save that is empty, too long or not on one line.

    An empty one (tags="", `--tag ""` from an unset variable) was dropped, and so cleared every
    tag the blueprint had."""
    problem = tag_problem(tag)
    if problem:
        raise InvalidMetaError(
            f"the tag {tag[:60]!r}{'...' if len(tag) > 60 else ''} {problem}",
            hint=f"give each tag as a label of 1-{MAX_TAG_CHARS} characters on one line "
            "(tags=[] removes them all)",
        )


def _origin_arg(origin: Any) -> str:
    """The origin of a change: one of ORIGINS (history and sync read it)."""
    if origin not in ORIGINS or not isinstance(origin, str):
        raise InvalidInputError(
            f"unknown origin {origin!r}",
            hint=f"use one of {', '.join(ORIGINS)} (an app's own changes are 'local')",
        )
    return origin


def _nfc(text: Any) -> Any:
    """Text in composed form (NFC); anything else as it is, for the checks further on."""
    if type(text) is not str or text.isascii():
        return text
    return unicodedata.normalize("NFC", text)


def _composed_meta(meta: Any) -> Any:
    """A meta given by the app with its name, description and tags in NFC."""
    if isinstance(meta, BlueprintMeta):
        changes = {k: _nfc(getattr(meta, k)) for k in _TEXT_FIELDS}
        return meta.replace(tags=[_nfc(t) for t in meta.tags], **changes)
    if isinstance(meta, Mapping):
        out = dict(meta)
        for key in _TEXT_FIELDS:
            if key in out:
                out[key] = _nfc(out[key])
        if isinstance(out.get("tags"), list):
            out["tags"] = [_nfc(t) for t in out["tags"]]
        return out
    return meta


def _content_bytes(content: str | bytes | Mapping[str, Any]) -> bytes:
    """The YAML bytes a save writes for ``content`` (raises UnicodeEncodeError for a lone
    surrogate, InvalidInputError for another type)."""
    if isinstance(content, Mapping):
        return dump_yaml(content).encode("utf-8")
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode("utf-8")
    raise wrong_type(
        "content",
        content,
        "YAML text or a mapping",
        hint="pass the YAML as a str or bytes, or the document as a dict",
    )


def _composed_request(req: SaveRequest) -> SaveRequest:
    """A save request with the meta text it sets in NFC (see BlueprintStore._save_batch)."""
    fields = dict(req.fields)
    for key in _TEXT_FIELDS:
        if key in fields:
            fields[key] = _nfc(fields[key])
    tags = fields.get("tags")
    if isinstance(tags, str):
        fields["tags"] = _nfc(tags)
    elif tags is not None and isinstance(tags, Sequence):
        fields["tags"] = [_nfc(t) for t in tags]
    return dataclasses.replace(req, fields=fields, meta=_composed_meta(req.meta))


def _not_unicode(what: str, exc: UnicodeEncodeError, kind: type[E]) -> E:
    """The error for text holding a lone surrogate, which cannot be written as UTF-8."""
    return kind(
        f"{what} is not valid Unicode text: it holds the lone surrogate {exc.object[exc.start]!r}",
        hint="decode the text from its real encoding (errors='surrogateescape' keeps the"
        " bytes of a file name or argument that is not UTF-8 as such surrogates)",
    )


def _order_sql(cur: Any, sort: str, descending: bool, *, paged: bool, offset: int) -> str:
    """A listing's ORDER BY, LIMIT and OFFSET (their values are bound by the caller).

    A stamp sorts by its text, unless the store holds one not in its own form: then by the
    moment each names (localstore._time_key; the cached listing sorts alike). Ties by path.
    """
    column = f"b.{SORT_COLUMNS[sort]}"
    if sort in TIME_SORTS:
        column = time_order_sql(column, by_moment=sorts_by_moment(cur))
    sql = f"ORDER BY {column} {'DESC' if descending else 'ASC'}"
    if sort != "path":
        sql += ", b.path"
    if paged:
        return sql + " LIMIT ? OFFSET ?"
    # (SQLite has no OFFSET without a LIMIT; -1 = none)
    return sql + " LIMIT -1 OFFSET ?" if offset else sql


def open_store(
    home: str | os.PathLike[str] | None = None,
    *,
    validator: Validator | None = None,
    validator_name: str | None = None,
    settings: Settings | None = None,
    reconcile: bool = True,
    maintenance: bool = True,
    read_only: bool = False,
    **overrides: Any,
) -> BlueprintStore:
    """Open the store of a home (``LOCALSTORE_HOME`` or the platform folders when None).

    ``overrides`` are settings (see :class:`localstore.config.Settings`). Give either ready
    ``settings`` or ``home`` and ``overrides``, not both (they would be ignored).
    ``read_only=True`` opens a home this user cannot write (a backup snapshot, a read-only
    disk, another user's home) and writes nothing there; every write then raises
    ReadOnlyStoreError (see :class:`BlueprintStore`). An open without it never falls back to
    read-only by itself: a home that cannot be written fails with PermissionDeniedError, which
    an app that only reads may answer by opening again with ``read_only=True``. Raises
    ConfigError.
    """
    if settings is not None:
        if home is not None or overrides:
            given = (["home"] if home is not None else []) + sorted(overrides)
            raise ConfigError(
                f"open() got settings and also {', '.join(given)}, which settings already fix",
                hint="pass only settings (change it with settings.replace(...)), or leave "
                "settings out and pass home and the setting keywords",
            )
    else:
        settings = load_settings(home=home, **overrides)
    return BlueprintStore(
        settings,
        validator=validator,
        validator_name=validator_name,
        reconcile=reconcile,
        maintenance=maintenance,
        read_only=read_only,
    )
