"""The Remote protocol: the contract every cloud backend meets.

A ``Remote`` is one signed-in user's view of one cloud. It speaks the sync RPCs (push_changes,
pull_changes, verify_rows, fetch_rows, server_info) and, optionally, match_revisions
(``AncestryRemote``) and fetch_rows_page (``PagedFetchRemote``); the engine holds all client
state (outbox, cursor, bases). Two backends exist: ``MemoryRemote`` (in-process, for fast tests)
and the Supabase remote; both pass the one contract suite in ``tests/sync_contract``.

The dataclasses below are the wire shapes. ``from_json`` validates a decoded reply and raises
``ProtocolError`` on anything malformed, so a backend never hands the engine a half-parsed object.

Rules every backend keeps (the contract suite checks each):

* **Push is a compare-and-swap per change, in one transaction.** ``base_rev`` must equal the
  row's current ``rev`` (``None`` = create). Results come back in request order, one per change;
  a conflict or a rejection of one change does not stop the others.
* **Push is idempotent by (user, device, op_id).** A replay returns the stored result verbatim
  (conflicts and rejections too) and applies nothing, so a push whose response was lost is safe
  to resend. A replay is the *same* change (id, base_rev, path, content_hash, deleted): an op id
  stored for another change (a home restored from a backup drew it again) is answered
  ``rejected`` / ``op_id_reused`` with ``max_op_id``, applies nothing and leaves the stored
  result as it was; the client pushes the change again under an op id above ``max_op_id``.
* **Pull is ordered and never skips.** Rows come in ascending ``seq``; a row whose transaction
  commits after a later ``seq`` was already handed out still reaches a client that pulls with
  the cursor it was given. Tombstones are rows too.
* **Below the horizon a delta is unsafe.** If ``since < horizon``, tombstones may have been
  purged, so ``pull`` returns ``reset_required=True`` and no changes; the client does a full
  reconcile with ``verify`` + ``fetch`` instead.
* **A user sees only their own rows.** An id owned by someone else is rejected as ``not_owner``
  and never appears in pull, verify or fetch. Ids are unique across all users of a project, so
  that includes a create whose id another user holds (a bundle import keeps ids): the engine
  then gives the local blueprint a new id and pushes it as new.

Failures are ``SyncError`` subclasses (see ``sync.errors``), each with an ``action``:
``TransientError`` (retry), ``AuthExpiredError`` (refresh auth, retry), ``AuthRevokedError`` /
``NotLoggedInError`` (tell the user), ``ProtocolError`` / ``RemoteConfigError`` (tell the user).
Per-change permanent failures are *results* (``status == "rejected"``), not exceptions.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, get_args, runtime_checkable

from localstore.blueprint import MAX_META_DEPTH
from sync._shown import MAX_CODE, shown
from sync.errors import ProtocolError

PROTOCOL_VERSION = 1
MAX_BATCH = 500
MAX_CONTENT_BYTES = 10 * 1024 * 1024
MAX_PATH_CHARS = 1024
MAX_PULL_LIMIT = 1000
MAX_VERIFY_LIMIT = 1000
DEFAULT_PULL_LIMIT = 500
DEFAULT_VERIFY_LIMIT = 1000
MAX_MATCH_PROBES = 1000
MAX_FETCH_IDS = 1000  # fetch_rows refuses more (migration 20261122001200)
# The server's words for "this call is past one of my limits" (SQLSTATEs as SupabaseRemote and
# MemoryRemote put them in TransientError.code; 413 from a gateway): the same call fails the same
# way every time, so the engine splits it in halves and parks a change refused alone, never sends
# it again as it was. 57014 statement timeout; class 54, program limit exceeded: 54000 (jsonb's
# 256 MiB), 54001 (statement too complex: JSON nested past the server's stack depth), 54011 and
# 54023 (too many columns or arguments).
SPLIT_CODES = frozenset({"57014", "54000", "54001", "54011", "54023", "413"})
# Content and meta bytes after which pull_changes ends a page (at least one row goes; migration
# 20261122001100; MemoryServer.pull_page_bytes plays it).
PULL_PAGE_BYTES = 16 * 1024 * 1024
# The same budget and rule for fetch_rows_page's answers (migration 20261122001300;
# MemoryServer.fetch_page_bytes plays it).
FETCH_PAGE_BYTES = PULL_PAGE_BYTES

PushStatus = Literal["applied", "conflict", "rejected"]
ConflictReason = Literal["rev_mismatch", "exists", "missing", "path_taken"]
RejectCode = Literal[
    "invalid_id",
    "invalid_path",
    "too_large",
    "invalid_meta",
    "invalid_change",
    "not_owner",
    "op_id_reused",
]

# (One list each: the Literal's own arguments.)
CONFLICT_REASONS: tuple[str, ...] = get_args(ConflictReason)
REJECT_CODES: tuple[str, ...] = get_args(RejectCode)
# What a meta may hold so that every client can read it: at most MAX_META_DEPTH levels of
# nesting (the meta object is level 1; localstore.blueprint's meta files hold no more), integers
# of at most MAX_META_INT_DIGITS digits (Python's default sys.int_info.default_max_str_digits:
# json.loads refuses more) and decimals within a double's range (past it they read as infinity).
# push_changes refuses any other meta as ``invalid_meta`` (:func:`invalid_meta`); the server's
# copy of these limits is sync_internal.meta_problem, migration 20261122001800, and
# tests/cloud_sql/test_meta_clients_hold.py holds the two together at each boundary.
MAX_META_INT_DIGITS = 4300

_T = TypeVar("_T")


def _get(obj: Mapping[str, Any], key: str, kind: type[_T] | tuple[type, ...], what: str) -> _T:
    """Return ``obj[key]`` checked against ``kind``; raise ProtocolError naming ``what``."""
    if key not in obj:
        raise ProtocolError(f"{what}: missing field {key!r}")
    value = obj[key]
    # bool is an int subclass: a JSON true where a number belongs is a broken reply, not 1.
    if isinstance(value, bool) and kind in (int, (int, type(None))):
        raise ProtocolError(f"{what}: field {key!r} must be a number, not a boolean")
    if not isinstance(value, kind):
        raise ProtocolError(f"{what}: field {key!r} has type {type(value).__name__}")
    return value  # type: ignore[return-value]


def _mapping(obj: object, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ProtocolError(f"{what}: expected an object, got {type(obj).__name__}")
    return obj


def _list(obj: object, what: str) -> list[Any]:
    if not isinstance(obj, list):
        raise ProtocolError(f"{what}: expected an array, got {type(obj).__name__}")
    return obj


class UnreadableValue:
    """What a server answer's decoder puts in place of a JSON value Python cannot hold: an
    integer of more digits than ``int()`` converts, or a value nested deeper than the decoder
    goes. :func:`meta_problem` finds it, so the one row that holds it is refused
    (``ServerRow.unreadable``), not the whole answer."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"UnreadableValue({self.reason!r})"


# NUL (which jsonb cannot hold) and UTF-16 surrogates: in a decoded str a surrogate is always a
# lone one (a pair decodes to its character), which no UTF-8 encoder takes, so the meta file
# could not be written.
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def meta_problem(meta: object, *, digits: int | None = None) -> str | None:
    """Why a server row's decoded ``meta`` cannot be held by this client, or None.

    Not an object; an :class:`UnreadableValue`; an integer of more than ``digits`` digits (by
    default this interpreter's limit, ``sys.get_int_max_str_digits()``: json could neither read
    nor write more); a float that is not finite (a decimal past a double's range, as
    ``1e400.5``, reads as infinity, which no meta file holds); nesting deeper than
    ``MAX_META_DEPTH``; a NUL or a lone surrogate in a string or key. Each of these, left to
    the decoder or the store, failed the whole answer (every pull, for good) or wrote a meta
    file this client itself refuses to read. Iterative: a meta nested thousands deep is an
    answer, not a RecursionError.
    """
    fault = _meta_fault(meta, sys.get_int_max_str_digits() if digits is None else digits)
    return None if fault is None else fault[0]


def invalid_meta(meta: object) -> str | None:
    """The ``invalid_meta`` rejection's message for a pushed meta past the limits every client
    reads (``MAX_META_DEPTH``, ``MAX_META_INT_DIGITS``, a double's range), or None: what is
    wrong, then how to fix it. push_changes answers the same texts (migration 20261122001800):
    stored, such a meta was parked as ``invalid_remote`` by every other device."""
    fault = _meta_fault(meta, MAX_META_INT_DIGITS)
    if fault is None:
        return None
    problem, fix = fault
    return f"{problem}; no other device could read it: {fix}"


_FLATTEN = f"flatten it to at most {MAX_META_DEPTH} levels of objects and arrays"
_AS_STRING = "write that number as a string"
_TEXT_FIX = "remove that character"


def _meta_fault(meta: object, digits: int) -> tuple[str, str] | None:
    """:func:`meta_problem`'s answer and how to fix it, for integers of at most ``digits``
    digits (0: any)."""
    if not isinstance(meta, dict):
        kind = "an array" if isinstance(meta, list) else f"a {type(meta).__name__}"
        return f"its meta is {kind}, not a JSON object", "make it a JSON object"
    too_big = _power_of_ten(digits) if digits else None
    stack: list[tuple[dict[Any, Any] | list[Any], int]] = [(meta, 1)]
    # Per container, not per value: this runs for every row of every pull page.
    while stack:
        container, depth = stack.pop()
        if depth > MAX_META_DEPTH:
            return f"its meta is nested deeper than {MAX_META_DEPTH} levels", _FLATTEN
        if isinstance(container, dict):
            keys = [k for k in container if isinstance(k, str)]
            if _NOT_TEXT.search("".join(keys)) is not None:
                return "a key of its meta holds a NUL or a lone UTF-16 surrogate", _TEXT_FIX
            values: Iterable[Any] = container.values()
        else:
            values = container
        texts: list[str] = []
        for value in values:
            of = type(value)
            if of is str:
                texts.append(value)
            elif of is dict or of is list:
                stack.append((value, depth + 1))
            elif value is None or of is bool:
                continue
            elif of is float:
                if not math.isfinite(value):
                    why = "its meta holds a number out of a double's range (it reads as infinity)"
                    return why, _AS_STRING
            elif of is int:
                if too_big is not None and abs(value) >= too_big:
                    return f"its meta holds an integer of more than {digits} digits", _AS_STRING
            elif isinstance(value, UnreadableValue):
                return f"its meta holds {value.reason}", "write it within what every device reads"
        if _NOT_TEXT.search("".join(texts)) is not None:
            return "its meta holds a NUL or a lone UTF-16 surrogate in a string", _TEXT_FIX
    return None


@functools.cache
def _power_of_ten(digits: int) -> int:
    # 10**4300 costs ~80 µs to compute: once, not per row.
    return 10**digits


@dataclass(frozen=True, slots=True)
class ServerRow:
    """One blueprint as the server holds it; a tombstone when ``deleted`` (content is then "").

    ``unreadable`` says why this client cannot hold the row's meta (:func:`meta_problem`):
    the meta is then ``{}``, and the engine parks a live row (``invalid_remote``) instead of
    failing the whole page; a tombstone's meta is not needed, so it applies.
    """

    id: str
    path: str
    content: str
    meta: dict[str, Any]
    content_hash: str
    rev: int
    seq: int
    deleted: bool
    device: str
    updated_at: str
    unreadable: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this row."""
        return {
            "id": self.id,
            "path": self.path,
            "content": self.content,
            "meta": self.meta,
            "content_hash": self.content_hash,
            "rev": self.rev,
            "seq": self.seq,
            "deleted": self.deleted,
            "device": self.device,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, obj: object) -> ServerRow:
        """Parse a server row. Raises ProtocolError."""
        m = _mapping(obj, "server row")
        w = "server row"
        if "meta" not in m:
            raise ProtocolError(f"{w}: missing field 'meta'")
        # A meta this client cannot hold is the row's problem, not the answer's: one such row
        # (written to the table directly, or by another client) failed every pull for good.
        meta = m["meta"]
        problem = meta_problem(meta)
        return cls(
            id=_get(m, "id", str, w),
            path=_get(m, "path", str, w),
            content=_get(m, "content", str, w),
            meta={} if problem is not None else dict(meta),
            content_hash=_get(m, "content_hash", str, w),
            rev=_get(m, "rev", int, w),
            seq=_get(m, "seq", int, w),
            deleted=_get(m, "deleted", bool, w),
            device=_get(m, "device", str, w),
            updated_at=_get(m, "updated_at", str, w),
            unreadable=problem,
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One local change to push: create (``base_rev`` None), update, or delete (``deleted``)."""

    op_id: int
    id: str
    base_rev: int | None
    path: str
    content: str
    meta: dict[str, Any]
    content_hash: str
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this change."""
        return {
            "op_id": self.op_id,
            "id": self.id,
            "base_rev": self.base_rev,
            "path": self.path,
            "content": self.content,
            "meta": self.meta,
            "content_hash": self.content_hash,
            "deleted": self.deleted,
        }


@dataclass(frozen=True, slots=True)
class PushResult:
    """The server's answer to one change, in request order.

    ``applied``: ``rev`` and ``seq`` are set. ``conflict``: ``reason`` is set and ``current`` is the
    server row (None for ``missing``). ``rejected``: ``code`` and ``message`` are set; permanent.
    ``op_id_reused`` (this device already used the op id for another change: a home restored
    from a backup, or copied) also carries ``max_op_id``, the highest op id the server holds for
    this device: the change is new and goes again under an op id above it.
    """

    op_id: int
    id: str
    status: PushStatus
    rev: int | None = None
    seq: int | None = None
    reason: ConflictReason | None = None
    current: ServerRow | None = None
    code: str | None = None
    message: str | None = None
    max_op_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this result (only the fields its status carries)."""
        out: dict[str, Any] = {"op_id": self.op_id, "id": self.id, "status": self.status}
        if self.status == "applied":
            out.update(rev=self.rev, seq=self.seq)
        elif self.status == "conflict":
            out.update(
                reason=self.reason,
                current=None if self.current is None else self.current.to_json(),
            )
        else:
            out.update(code=self.code, message=self.message)
            if self.max_op_id is not None:
                out.update(max_op_id=self.max_op_id)
        return out

    @classmethod
    def from_json(cls, obj: object) -> PushResult:
        """Parse one push result. Raises ProtocolError."""
        m = _mapping(obj, "push result")
        w = "push result"
        op_id = _get(m, "op_id", int, w)
        id_ = _get(m, "id", str, w)
        status = _get(m, "status", str, w)
        if status == "applied":
            return cls(
                op_id, id_, "applied", rev=_get(m, "rev", int, w), seq=_get(m, "seq", int, w)
            )
        if status == "conflict":
            reason = _get(m, "reason", str, w)
            if reason not in CONFLICT_REASONS:
                raise ProtocolError(f"{w}: unknown conflict reason {reason!r}")
            raw = m.get("current")
            current = None if raw is None else ServerRow.from_json(raw)
            return cls(op_id, id_, "conflict", reason=reason, current=current)  # type: ignore[arg-type]
        if status == "rejected":
            code = _get(m, "code", str, w)
            message = m.get("message")
            high = m.get("max_op_id")
            if high is not None and (not isinstance(high, int) or isinstance(high, bool)):
                raise ProtocolError(f"{w}: max_op_id is not an integer")
            # Both are stored in the quarantine record and shown by `localstore status`: a
            # server's text, escaped and cut (sync._shown).
            return cls(
                op_id,
                id_,
                "rejected",
                code=shown(code, MAX_CODE),
                message=shown(str(message or code)),
                max_op_id=high,
            )
        raise ProtocolError(f"{w}: unknown status {status!r}")


@dataclass(frozen=True, slots=True)
class PullPage:
    """One page of changes after a cursor."""

    changes: list[ServerRow]
    next: int
    more: bool
    horizon: int
    reset_required: bool

    @classmethod
    def from_json(cls, obj: object) -> PullPage:
        """Parse a pull reply. Raises ProtocolError (also when seqs are not ascending)."""
        m = _mapping(obj, "pull page")
        w = "pull page"
        changes = [ServerRow.from_json(r) for r in _list(m.get("changes"), w)]
        seqs = [r.seq for r in changes]
        if any(a >= b for a, b in itertools.pairwise(seqs)):
            raise ProtocolError(f"{w}: changes are not in ascending seq order")
        return cls(
            changes=changes,
            next=_get(m, "next", int, w),
            more=_get(m, "more", bool, w),
            horizon=_get(m, "horizon", int, w),
            reset_required=_get(m, "reset_required", bool, w),
        )


@dataclass(frozen=True, slots=True)
class FetchPage:
    """One answer to a fetch: rows in id order, and the asked ids still to ask for.

    ``rest`` is empty when the answer holds every asked row there is; otherwise the server cut
    the answer at its byte budget and ``rest`` holds the asked ids after the last row sent.
    """

    rows: list[ServerRow]
    rest: list[str]

    @classmethod
    def from_json(cls, obj: object, asked: Sequence[str]) -> FetchPage:
        """Parse a fetch_rows_page reply to a call for ``asked`` (canonical ids).

        Raises ProtocolError for a malformed reply, and for one the client could loop on for
        ever: a row or a rest id that was not asked for, a rest id that came as a row, rows out
        of id order, or a rest with no row (each further call must ask for fewer ids).
        """
        m = _mapping(obj, "fetch page")
        w = "fetch page"
        rows = [ServerRow.from_json(r) for r in _list(m.get("rows"), w)]
        rest_raw = _list(m.get("rest"), w)
        wanted = set(asked)
        rest: list[str] = []
        for raw in rest_raw:
            rid = canonical_uuid(raw)
            if rid is None or rid not in wanted:
                raise ProtocolError(f"{w}: rest holds {raw!r}, which was not asked for")
            rest.append(rid)
        ids = [r.id for r in rows]
        if any(a >= b for a, b in itertools.pairwise(ids)):
            raise ProtocolError(f"{w}: rows are not in ascending id order")
        if not wanted.issuperset(ids):
            raise ProtocolError(f"{w}: a row was not asked for")
        if set(ids) & set(rest):
            raise ProtocolError(f"{w}: an id is both a row and in rest")
        if rest and not rows:
            raise ProtocolError(f"{w}: rest without any row (the fetch would never end)")
        return cls(rows=rows, rest=rest)


def fetch_in_pages(
    fetch_page: Callable[[Sequence[str]], FetchPage], ids: Sequence[str]
) -> list[ServerRow]:
    """Every row ``fetch_page`` gives for ``ids``, asking again for each answer's rest."""
    rows: list[ServerRow] = []
    asked: Sequence[str] = ids
    while asked:
        page = fetch_page(asked)
        rows.extend(page.rows)
        asked = page.rest
    return rows


@dataclass(frozen=True, slots=True)
class VerifyRow:
    """The fingerprint of one server row, for proving convergence."""

    id: str
    rev: int
    content_hash: str
    deleted: bool
    seq: int

    @classmethod
    def from_json(cls, obj: object) -> VerifyRow:
        """Parse one verify row. Raises ProtocolError."""
        m = _mapping(obj, "verify row")
        w = "verify row"
        return cls(
            id=_get(m, "id", str, w),
            rev=_get(m, "rev", int, w),
            content_hash=_get(m, "content_hash", str, w),
            deleted=_get(m, "deleted", bool, w),
            seq=_get(m, "seq", int, w),
        )


@dataclass(frozen=True, slots=True)
class VerifyPage:
    """One page of row fingerprints ordered by id; ``next`` is the ``after`` of the next page."""

    rows: list[VerifyRow]
    next: str | None
    more: bool

    @classmethod
    def from_json(cls, obj: object) -> VerifyPage:
        """Parse a verify reply. Raises ProtocolError."""
        m = _mapping(obj, "verify page")
        w = "verify page"
        rows = [VerifyRow.from_json(r) for r in _list(m.get("rows"), w)]
        return cls(
            rows=rows, next=_get(m, "next", (str, type(None)), w), more=_get(m, "more", bool, w)
        )


@dataclass(frozen=True, slots=True)
class RevisionProbe:
    """A question for :meth:`AncestryRemote.match_revisions`: did row ``id`` ever hold this?

    ``content_hash`` is the local copy's hash, ``path`` its local path (a revision at that path is
    preferred, so a rename the server made since is told apart from one made locally).
    """

    id: str
    content_hash: str
    path: str

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this probe."""
        return {"id": self.id, "content_hash": self.content_hash, "path": self.path}


def server_path_key(path: str) -> str:
    """The server's key for ``path``: what its ``lower(path)`` (the column ``path_key``, unique
    per owner among live rows) gives, so two paths with one key are one name there.

    PostgreSQL lowers text through the C library's ``towlower``, one code point at a time: simple
    lower-casing, no case folding ('ß' and 'ss' are two names, 'K' (the Kelvin sign) and 'k' one),
    no final sigma (Python's ``lower`` gives a capital sigma at a word's end the final form, the
    server always the plain small sigma), and 'İ' (U+0130)
    becomes a plain 'i' where Python's ``lower`` gives 'i' and a combining dot. Checked against
    the local stack's PostgreSQL (glibc, C.UTF-8) for every code point: apart from U+0130, Python's
    ``lower`` of one code point is what the server gives. A database with another collation
    provider (ICU) or an older C library may lower a few more or fewer characters. This is not the
    local name rule (``localstore.files.path_key``, the file systems' caseless match): the two
    differ both ways, and a path the server takes for another one's name comes back ``path_taken``.
    """
    if path.isascii():
        return path.lower()
    return "".join(_SERVER_LOWER.get(c) or c.lower() for c in path)


# The code points whose Python ``lower`` is not the server's (see server_path_key).
_SERVER_LOWER = {"\u0130": "i"}


def canonical_uuid(value: object) -> str | None:
    """``value`` as a lower-case hyphenated uuid, or None if it is not one (as Postgres reads it)."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def text_problem(change: Change) -> str | None:
    """Why ``change`` cannot travel as JSON text into the server's jsonb (an ``invalid_change``
    message), or None.

    JSON has no NaN or infinity and UTF-8 no lone surrogate, so the client cannot even encode
    such a change; and jsonb holds no NUL (U+0000), so PostgREST refuses a body with a
    ``\\u0000`` escape before the function runs (22P05, the whole call). Sent, such a change
    failed every change of its batch with it, on every retry. Both remotes answer it as this
    change's rejection instead (SupabaseRemote without sending it).
    A backslash followed by ``u0000`` is six ordinary characters and no NUL.
    """
    try:
        json.dumps(change.to_json(), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):  # (UnicodeEncodeError is a ValueError)
        return "meta or content is not representable as JSON text"
    if _holds_nul(change.content) or _holds_nul(change.content_hash) or _holds_nul(change.meta):
        return "content or meta contains NUL"
    return None


def encoding_problem(change: Change) -> tuple[str, str] | None:
    """The rejection (code, message) of a change JSON text cannot carry, or None: the
    ``text_problem`` as ``invalid_change``; a meta nested too deep for json to encode at all as
    ``invalid_meta``, the server's answer to it (json spends a C frame per level: 2,000 levels
    raised RecursionError out of the push, its whole batch, on every retry)."""
    try:
        problem = text_problem(change)
    except RecursionError:
        # Only the meta nests (the other fields are scalars); invalid_meta walks it iteratively.
        deep = invalid_meta(change.meta) if isinstance(change.meta, dict) else None
        if deep is not None:
            return "invalid_meta", deep
        problem = "meta is nested too deep to encode as JSON text"
    return None if problem is None else ("invalid_change", problem)


def unsendable(change: Change) -> tuple[str, str] | None:
    """The rejection (code, message) of a change no server can be sent, or None: the
    ``encoding_problem``, and a NUL in the id or path (which no uuid or path holds) as
    ``invalid_id`` / ``invalid_path``, the codes their checks give."""
    problem = encoding_problem(change)
    if problem is not None:
        return problem
    if _holds_nul(change.id):
        return "invalid_id", f"id {change.id!r} is not a uuid"
    if _holds_nul(change.path):
        return "invalid_path", "path contains NUL"
    return None


def _holds_nul(value: object) -> bool:
    """Whether a NUL character is in ``value``, a JSON value (object keys included)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    return True
                stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def checked_fetch_ids(ids: Sequence[str]) -> list[str]:
    """The canonical form of each id, as both remotes check them before asking.

    Raises ProtocolError for more than MAX_FETCH_IDS ids or an id that is not a uuid.
    """
    if len(ids) > MAX_FETCH_IDS:
        raise ProtocolError(
            f"fetch: too many ids: {len(ids)} > {MAX_FETCH_IDS}", hint="ask in smaller batches"
        )
    wanted: list[str] = []
    for raw in ids:
        rid = canonical_uuid(raw)
        if rid is None:
            raise ProtocolError(f"fetch: {raw!r} is not a uuid")
        wanted.append(rid)
    return wanted


def checked_probes(probes: Sequence[RevisionProbe]) -> list[tuple[str, RevisionProbe]]:
    """Each probe with its canonical id, as both remotes check them before asking.

    Raises ProtocolError for more than MAX_MATCH_PROBES probes or an id that is not a uuid.
    """
    if len(probes) > MAX_MATCH_PROBES:
        raise ProtocolError(
            f"too many probes: {len(probes)} > {MAX_MATCH_PROBES}", hint="ask in smaller batches"
        )
    out: list[tuple[str, RevisionProbe]] = []
    for probe in probes:
        rid = canonical_uuid(probe.id)
        if rid is None:
            raise ProtocolError(f"match_revisions: {probe.id!r} is not a uuid")
        out.append((rid, probe))
    return out


@dataclass(frozen=True, slots=True)
class RevisionMatch:
    """An accepted, live revision of row ``id`` whose content hash a probe asked about."""

    id: str
    rev: int
    path: str
    content_hash: str

    @classmethod
    def from_json(cls, obj: object) -> RevisionMatch:
        """Parse one match. Raises ProtocolError."""
        m = _mapping(obj, "revision match")
        w = "revision match"
        return cls(
            id=_get(m, "id", str, w),
            rev=_get(m, "rev", int, w),
            path=_get(m, "path", str, w),
            content_hash=_get(m, "content_hash", str, w),
        )


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the server supports."""

    protocol: int = PROTOCOL_VERSION
    max_batch: int = MAX_BATCH
    max_content_bytes: int = MAX_CONTENT_BYTES
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: object) -> ServerInfo:
        """Parse server_info. Raises ProtocolError."""
        m = _mapping(obj, "server info")
        w = "server info"
        known = ("protocol", "max_batch", "max_content_bytes")
        return cls(
            protocol=_get(m, "protocol", int, w),
            max_batch=_get(m, "max_batch", int, w),
            max_content_bytes=_get(m, "max_content_bytes", int, w),
            extra={k: v for k, v in m.items() if k not in known},
        )


HintCallback = Callable[[], None]
Unsubscribe = Callable[[], None]


@runtime_checkable
class Remote(Protocol):
    """One user's connection to one cloud. Methods are blocking and thread-safe."""

    @property
    def identity(self) -> str:
        """A stable name of (server, user): the engine keys its cursor and bases by it.

        A different user or project gives a different identity, so a cursor is never reused across
        accounts.
        """
        ...

    def push(self, changes: Sequence[Change], *, device: str) -> list[PushResult]:
        """Apply ``changes`` in one transaction; return one result per change, in order.

        Idempotent by (user, ``device``, ``op_id``): a replay returns the stored result and applies
        nothing. More than ``server_info().max_batch`` changes raises ProtocolError and applies
        nothing. Raises TransientError, AuthExpiredError, AuthRevokedError, NotLoggedInError,
        ProtocolError, RemoteConfigError; after a TransientError the push may or may not have been
        applied, and resending the same op ids is the way to find out. A backend that depends on
        the server's schema raises SchemaTooOldError (a RemoteConfigError) and sends nothing when
        that schema lacks a migration it needs: the changes stay pending, none is quarantined.
        """
        ...

    def pull(self, since: int, *, limit: int = DEFAULT_PULL_LIMIT) -> PullPage:
        """Return the user's rows with ``seq > since`` in ascending seq, at most min(limit, 1000).

        A page also ends at the first row that would come after ``PULL_PAGE_BYTES`` of content
        and meta (the first row always comes), so a page may be short with ``more`` true.
        ``next`` is the cursor for the next call (``since`` when nothing came), ``more`` says
        whether to call again. ``since < horizon`` returns ``reset_required=True`` and no
        changes. Never skips a row that commits late. Raises like ``push``.
        """
        ...

    def verify(self, after: str | None = None, *, limit: int = DEFAULT_VERIFY_LIMIT) -> VerifyPage:
        """Return fingerprints of the user's rows (tombstones included) with ``id > after``, by id.

        Raises like ``push``.
        """
        ...

    def fetch(self, ids: Sequence[str]) -> list[ServerRow]:
        """Return the full rows of those ids that exist and belong to the user (others are omitted).

        Raises like ``push``; a malformed id, or more than ``MAX_FETCH_IDS`` ids, raises
        ProtocolError.
        """
        ...

    def server_info(self) -> ServerInfo:
        """Return the protocol version and limits. Raises like ``push``.

        The answer may change over a remote's life (a server upgraded, or restored with other
        limits): the engine asks again after a cycle that failed on the cloud and, for a remote
        with an int ``server_epoch`` property (optional, SupabaseRemote), whenever it moved.
        """
        ...

    def subscribe(self, callback: HintCallback) -> Unsubscribe:
        """Call ``callback()`` (from any thread) when another device may have written; return an
        unsubscribe function.

        Returns once the subscription is live as far as the backend can tell. Only a hint to
        pull: events can be lost, duplicated or early, so the engine also polls and pulls after
        every (re)subscribe. A backend without realtime returns a no-op unsubscribe.
        """
        ...

    def close(self) -> None:
        """Release connections and subscriptions. Idempotent."""
        ...


@runtime_checkable
class PagedFetchRemote(Protocol):
    """An optional capability of a Remote: fetching rows in answers bounded by bytes.

    Not part of :class:`Remote` (a backend without it still syncs: the engine then takes each
    ``fetch`` whole, and halves one the server refuses as too large). Both backends of this
    package have it, and their ``fetch`` is ``fetch_page`` asked again until the rest is empty.
    """

    def fetch_page(self, ids: Sequence[str]) -> FetchPage:
        """The user's rows for ``ids`` in id order, ending after ``FETCH_PAGE_BYTES`` of content
        and meta (at least one row when any exists), and the asked ids left to ask for.

        Unknown and foreign ids are absent, as in ``fetch``; each further call for ``rest`` asks
        for fewer ids, so asking again until ``rest`` is empty ends. Raises like ``fetch``.
        """
        ...


@runtime_checkable
class AncestryRemote(Protocol):
    """An optional capability of a Remote: asking the server's revision history.

    Not part of :class:`Remote` (a backend without it still syncs; the engine then merges a
    copy it holds without a base as before). Both backends of this package have it.
    """

    def match_revisions(self, probes: Sequence[RevisionProbe]) -> list[RevisionMatch] | None:
        """For each probe, the user's accepted live revision of ``id`` with that content hash.

        At most ``MAX_MATCH_PROBES`` probes per call (more raises ProtocolError). One match per
        probe that has one, in probe order: among the revisions with that hash, the newest one
        at the probe's ``path``, else the newest one. Other users' rows, tombstone revisions and
        unknown ids match nothing. Returns None when the server does not offer the lookup (its
        schema predates it). Raises like ``Remote.push``.
        """
        ...
