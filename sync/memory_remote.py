"""An in-process Remote with the same semantics as the SQL functions, for fast tests.

``MemoryServer`` plays the database: rows of every user, one global ``seq``, the replay store,
the revision history and each user's tombstone horizon, all behind one lock (one lock = one
serializable transaction per call, so commit-order skew cannot happen here; the SQL side must
prove it separately).
``MemoryRemote(server, user=...)`` is one signed-in handle, like one device's Supabase client; two
handles with the same user are two devices of that user.

Fault injection for tests: ``fail_next`` raises an error before a call does anything,
``drop_response_next`` applies a push and then raises ``TransientError`` (a lost response), and
``refuse_push_above`` fails every push whose request is larger than a size, as the server's
statement timeout (57014), jsonb's size limit (54000), its stack depth (54001) or a gateway (413)
fail one. A test sets ``MemoryServer.max_batch`` (or ``protocol``) to play a server upgraded or
restored with another limit: server_info announces it and a push of more changes fails whole
(22023).

It also validates the way the SQL does, with the same limits (migration 20261122000500): a call
whose device name is empty or over 128 characters fails whole (``ProtocolError``, the server's
22023); then, in this order per change, replay (stored result; ``op_id_reused`` when the
stored one answered another change), ``invalid_change`` (a content
hash over 128 characters included), ``invalid_id``, ``invalid_path``, ``too_large`` (content over
10 MiB, meta over 8 MiB as ``pg_column_size`` of its jsonb counts it: :func:`jsonb_size`),
``invalid_meta`` (a meta past what clients read: ``sync.remote.invalid_meta``, migration
20261122001800), ``not_owner``, then the compare-and-swap (``exists`` / ``missing`` / ``rev_mismatch``) and
finally ``path_taken``. A create's rev is its user's horizon + 1 (migration 20261122001400), so
a purged id created again never passes a stale base rev of the purged row.

It pages as the SQL does too: ``pull`` ends a page and ``fetch_page`` an answer at the first row
after 16 MiB of content and meta (migrations 20261122001100 and 20261122001300), counted as
PostgreSQL counts them (:func:`jsonb_text_bytes`); ``MemoryServer.pull_page_bytes`` and
``fetch_page_bytes`` lower the budgets for tests, and ``verify_page_rows`` caps a verify page below
the 1000 rows the SQL allows.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sync.errors import ProtocolError, SyncError, TransientError
from sync.remote import (
    DEFAULT_PULL_LIMIT,
    DEFAULT_VERIFY_LIMIT,
    FETCH_PAGE_BYTES,
    MAX_BATCH,
    MAX_CONTENT_BYTES,
    MAX_PATH_CHARS,
    MAX_PULL_LIMIT,
    MAX_VERIFY_LIMIT,
    PROTOCOL_VERSION,
    PULL_PAGE_BYTES,
    Change,
    FetchPage,
    HintCallback,
    PullPage,
    PushResult,
    RevisionMatch,
    RevisionProbe,
    ServerInfo,
    ServerRow,
    Unsubscribe,
    VerifyPage,
    VerifyRow,
    canonical_uuid,
    checked_fetch_ids,
    checked_probes,
    encoding_problem,
    fetch_in_pages,
    invalid_meta,
    meta_problem,
    server_path_key,
)

_server_ids = itertools.count(1)

# The limits push_changes applies besides sync.remote's (server_info announces them).
# (A meta as jsonb: up to 6 times its JSON text, whose local file holds at most 1 MiB.)
MAX_META_BYTES = 8 * 1024 * 1024
MAX_HASH_CHARS = 128
MAX_DEVICE_CHARS = 128

# What the server says when a call is too large or too slow, by SQLSTATE (or HTTP status of a
# gateway), as SupabaseRemote maps it: a TransientError carrying that code.
_TOO_BIG = {
    "57014": "canceling statement due to statement timeout",
    "54000": "total size of jsonb array elements exceeds the maximum of 268435455 bytes",
    "54001": "stack depth limit exceeded",
    "413": "Request Entity Too Large",
}


@dataclass
class _Owned:
    owner: str
    row: ServerRow


@dataclass
class _Fault:
    method: str | None
    exc: BaseException


@dataclass
class _Subscriber:
    handle: int
    callback: HintCallback


@dataclass
class MemoryServer:
    """The shared state behind any number of MemoryRemote handles (the "database")."""

    name: str = field(default_factory=lambda: f"memory-{next(_server_ids)}")
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    rows: dict[str, _Owned] = field(default_factory=dict, repr=False)
    seq: int = 0
    # (owner, device, op_id) -> (the stored answer, the fingerprint of the change it answered).
    applied_ops: dict[tuple[str, str, int], tuple[PushResult, tuple[Any, ...]]] = field(
        default_factory=dict, repr=False
    )
    horizons: dict[str, int] = field(default_factory=dict)
    revisions: list[tuple[str, ServerRow]] = field(default_factory=list, repr=False)
    subscribers: dict[str, list[_Subscriber]] = field(default_factory=dict, repr=False)
    # (owner, server_path_key(path)) -> id of the live row there: the SQL's unique index on
    # path_key, so a path check costs O(1) instead of a scan of every row (pushes of 10,000 rows
    # were quadratic).
    live_paths: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    # The protocol and the changes per push this server announces; push refuses a call with
    # more (a test lowers it to play a server restored or upgraded with another limit).
    protocol: int = PROTOCOL_VERSION
    max_batch: int = MAX_BATCH
    # Content and meta bytes after which pull ends a page and fetch_page an answer (a test lowers
    # them to page with small rows; the SQL's budgets are PULL_PAGE_BYTES and FETCH_PAGE_BYTES).
    pull_page_bytes: int = PULL_PAGE_BYTES
    fetch_page_bytes: int = FETCH_PAGE_BYTES
    # The most fingerprints a verify page holds, whatever limit the caller asks (the SQL caps it
    # at MAX_VERIFY_LIMIT); a test lowers it to make a full reconcile follow verify's pages.
    verify_page_rows: int = MAX_VERIFY_LIMIT
    # Keys server_info announces besides the standard ones (a test's server may announce more,
    # e.g. ``max_batch_bytes``).
    announce: dict[str, Any] = field(
        default_factory=lambda: {
            "max_meta_bytes": MAX_META_BYTES,
            "max_device_chars": MAX_DEVICE_CHARS,
        }
    )

    def purge_tombstones(self, user: str | None = None, *, max_seq: int | None = None) -> int:
        """Delete tombstones (of ``user``, or everyone) with seq <= ``max_seq`` (or all).

        Their revision history goes with them (the SQL's ``blueprints_drop_revisions``). Raises
        each affected owner's horizon to the highest purged seq; returns the count.
        """
        with self.lock:
            doomed = [
                (rid, o)
                for rid, o in self.rows.items()
                if o.row.deleted
                and (user is None or o.owner == user)
                and (max_seq is None or o.row.seq <= max_seq)
            ]
            for rid, o in doomed:
                del self.rows[rid]
                self.horizons[o.owner] = max(self.horizons.get(o.owner, 0), o.row.seq)
            # A row created again under a purged id must not match the purged one's revisions.
            gone = {rid for rid, _ in doomed}
            if gone:
                self.revisions = [(rid, r) for rid, r in self.revisions if rid not in gone]
            return len(doomed)

    def history(self, row_id: str) -> list[ServerRow]:
        """Every accepted revision of a row, oldest first (the blueprint_revisions table)."""
        with self.lock:
            return [r for rid, r in self.revisions if rid == row_id]


class MemoryRemote:
    """One user's handle on a MemoryServer; meets the Remote protocol.

    ``calls`` counts the calls per method (faulted ones included), for tests that check what an
    engine did.
    """

    def __init__(self, server: MemoryServer | None = None, *, user: str = "user") -> None:
        self.server = server if server is not None else MemoryServer()
        self.user = user
        self._handle = id(self)
        self._faults: list[_Fault] = []
        self._drops = 0
        self._refuse_above: tuple[int, str] | None = None
        self._closed = False
        self._unsubs: list[Unsubscribe] = []
        self.calls: dict[str, int] = {}

    # -- fault injection -------------------------------------------------------------------------

    def fail_next(
        self, n: int = 1, exc: BaseException | None = None, *, method: str | None = None
    ) -> None:
        """Make the next ``n`` calls (of ``method``, or any) raise ``exc`` before doing anything."""
        err = exc if exc is not None else TransientError("injected network fault")
        with self.server.lock:
            self._faults.extend(_Fault(method, err) for _ in range(n))

    def drop_response_next(self, n: int = 1) -> None:
        """Apply the next ``n`` pushes, then raise TransientError as if the response was lost."""
        with self.server.lock:
            self._drops += n

    def refuse_push_above(self, n_bytes: int | None, *, code: str = "54000") -> None:
        """Fail every push whose JSON request is over ``n_bytes`` (None: stop), applying nothing.

        The error is the TransientError SupabaseRemote raises for that SQLSTATE or HTTP status:
        ``57014`` (statement timeout), ``54000`` (jsonb too large), ``54001`` (nested past the
        server's stack depth; refused here by size all the same) or ``413`` (a gateway).
        """
        if code not in _TOO_BIG:
            raise ValueError(f"code must be one of {sorted(_TOO_BIG)}")
        with self.server.lock:
            self._refuse_above = None if n_bytes is None else (n_bytes, code)

    @contextmanager
    def _call(self, method: str) -> Iterator[None]:
        with self.server.lock:
            if self._closed:
                raise SyncError("the remote was used after close()", hint="open a new remote")
            self.calls[method] = self.calls.get(method, 0) + 1
            for i, fault in enumerate(self._faults):
                if fault.method in (None, method):
                    del self._faults[i]
                    raise fault.exc
            yield

    # -- Remote ----------------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        """``memory:<server>:<user>``."""
        return f"memory:{self.server.name}:{self.user}"

    def push(self, changes: Sequence[Change], *, device: str) -> list[PushResult]:
        """Apply changes in order with compare-and-swap; see sync.remote.Remote.push."""
        if len(changes) > MAX_BATCH:
            raise ProtocolError(
                f"too many changes: {len(changes)} > {MAX_BATCH}", hint="push in smaller batches"
            )
        with self._call("push"):
            if not isinstance(device, str) or not device or len(device) > MAX_DEVICE_CHARS:
                raise ProtocolError(
                    "push_changes: device must be a non-empty string of at most "
                    f"{MAX_DEVICE_CHARS} characters [22023]",
                    code="22023",
                )
            if len(changes) > self.server.max_batch:
                # The SQL's check, as SupabaseRemote maps it: the whole call fails, nothing applied.
                raise ProtocolError(
                    "push_changes: too many changes [22023]",
                    code="22023",
                    hint="push in batches of at most server_info().max_batch",
                )
            self._refuse_if_too_big(changes)
            seq_before = self.server.seq
            results = [self._push_one(change, device) for change in changes]
            written = self.server.seq != seq_before
            dropped = self._drops > 0
            if dropped:
                self._drops -= 1
        if written:
            self._notify_others()
        if dropped:
            raise TransientError("injected lost response: the push was applied")
        return results

    def pull(self, since: int, *, limit: int = DEFAULT_PULL_LIMIT) -> PullPage:
        """Return rows after ``since`` in seq order, at most ``limit`` and the byte budget; see
        sync.remote.Remote.pull (the SQL's pull_changes)."""
        lim = max(1, min(limit, MAX_PULL_LIMIT))
        with self._call("pull"):
            horizon = self.server.horizons.get(self.user, 0)
            if since < horizon:
                return PullPage([], since, False, horizon, True)
            newer = sorted(
                (
                    o.row
                    for o in self.server.rows.values()
                    if o.owner == self.user and o.row.seq > since
                ),
                key=lambda r: r.seq,
            )
            # pull_changes' cut: a row goes while the ones already taken hold less than the
            # budget, so the first always goes (a row over the budget alone must still arrive).
            page: list[ServerRow] = []
            taken = 0
            for row in newer[:lim]:
                if taken >= self.server.pull_page_bytes:
                    break
                copy = _copy_row(row)
                page.append(copy)
                taken += _row_bytes(copy)
            nxt = page[-1].seq if page else since
            return PullPage(page, nxt, len(newer) > len(page), horizon, False)

    def verify(self, after: str | None = None, *, limit: int = DEFAULT_VERIFY_LIMIT) -> VerifyPage:
        """Return row fingerprints by id after ``after``; see sync.remote.Remote.verify."""
        lim = max(1, min(limit, MAX_VERIFY_LIMIT, self.server.verify_page_rows))
        start = "" if after is None else canonical_uuid(after)
        if start is None:
            raise ProtocolError(f"verify: {after!r} is not a uuid")
        with self._call("verify"):
            ids = sorted(
                rid for rid, o in self.server.rows.items() if o.owner == self.user and rid > start
            )
            rows = [_fingerprint(self.server.rows[rid].row) for rid in ids[:lim]]
        more = len(ids) > lim
        return VerifyPage(rows, rows[-1].id if rows else None, more)

    def fetch(self, ids: Sequence[str]) -> list[ServerRow]:
        """Return the user's rows for ``ids``, ordered by id; see sync.remote.Remote.fetch.

        As SupabaseRemote: ``fetch_page`` asked again for each answer's rest."""
        return fetch_in_pages(self.fetch_page, ids)

    def fetch_page(self, ids: Sequence[str]) -> FetchPage:
        """Return the user's rows for ``ids`` up to the byte budget, and the ids left; see
        sync.remote.PagedFetchRemote.fetch_page (the SQL's fetch_rows_page)."""
        wanted = sorted(set(checked_fetch_ids(ids)))
        with self._call("fetch"):
            found = [
                o.row
                for rid in wanted
                if (o := self.server.rows.get(rid)) is not None and o.owner == self.user
            ]
            page: list[ServerRow] = []
            taken = 0
            for row in found:
                if taken >= self.server.fetch_page_bytes:
                    break
                copy = _copy_row(row)
                page.append(copy)
                taken += _row_bytes(copy)
        if len(page) == len(found):
            return FetchPage(page, [])
        last = page[-1].id
        return FetchPage(page, [rid for rid in wanted if rid > last])

    def match_revisions(self, probes: Sequence[RevisionProbe]) -> list[RevisionMatch]:
        """Find accepted revisions by content hash; see sync.remote.AncestryRemote."""
        wanted = checked_probes(probes)
        with self._call("match_revisions"):
            ids = {rid for rid, _ in wanted}
            by_id: dict[str, list[ServerRow]] = {}
            for rid, row in self.server.revisions:
                if rid in ids:
                    by_id.setdefault(rid, []).append(row)
            out: list[RevisionMatch] = []
            for rid, probe in wanted:
                owned = self.server.rows.get(rid)
                if owned is None or owned.owner != self.user:
                    continue
                hits = [
                    r
                    for r in by_id.get(rid, [])
                    if not r.deleted and r.content_hash == probe.content_hash
                ]
                if not hits:
                    continue
                # The SQL's ORDER BY (path = probe.path) DESC, rev DESC.
                best = max(hits, key=lambda r: (r.path == probe.path, r.rev))
                out.append(RevisionMatch(rid, best.rev, best.path, best.content_hash))
        return out

    def server_info(self) -> ServerInfo:
        """Return the protocol version and limits."""
        with self._call("server_info"):
            return ServerInfo(
                self.server.protocol,
                self.server.max_batch,
                MAX_CONTENT_BYTES,
                dict(self.server.announce),
            )

    def subscribe(self, callback: HintCallback) -> Unsubscribe:
        """Call ``callback()`` synchronously after each write by another handle of this user."""
        sub = _Subscriber(self._handle, callback)
        with self._call("subscribe"):
            self.server.subscribers.setdefault(self.user, []).append(sub)

        def unsubscribe() -> None:
            with self.server.lock:
                subs = self.server.subscribers.get(self.user, [])
                if sub in subs:
                    subs.remove(sub)

        self._unsubs.append(unsubscribe)
        return unsubscribe

    def close(self) -> None:
        """Drop this handle's subscriptions; later calls raise SyncError."""
        with self.server.lock:
            self._closed = True
            unsubs, self._unsubs = self._unsubs, []
        for unsub in unsubs:
            unsub()

    def purge_tombstones(self, *, max_seq: int | None = None) -> int:
        """Purge this user's tombstones (the admin function purge_tombstones); return the count."""
        return self.server.purge_tombstones(self.user, max_seq=max_seq)

    # -- internals -------------------------------------------------------------------------------

    def _refuse_if_too_big(self, changes: Sequence[Change]) -> None:
        if self._refuse_above is None:
            return
        limit, code = self._refuse_above
        # The request body as SupabaseRemote sends it (httpx encodes JSON this way).
        size = len(json.dumps({"changes": [c.to_json() for c in changes], "device": "x"}))
        if size > limit:
            raise TransientError(
                f"push_changes: {_TOO_BIG[code]} [{code}]",
                code=code,
                hint="sync pushes smaller batches by itself; nothing is lost",
            )

    def _notify_others(self) -> None:
        # Called outside the lock: a callback that pulls right away must not deadlock or see a
        # half-applied batch.
        with self.server.lock:
            subs = [
                s for s in self.server.subscribers.get(self.user, []) if s.handle != self._handle
            ]
        for sub in subs:
            sub.callback()

    def _push_one(self, change: Change, device: str) -> PushResult:
        op_id = change.op_id
        key_ok = isinstance(op_id, int) and not isinstance(op_id, bool)
        key = (self.user, device, op_id)
        print_ = fingerprint(change)
        if key_ok and key in self.server.applied_ops:
            stored, stored_print = self.server.applied_ops[key]
            if stored_print == print_:
                return stored
            return self._reused(change, device)
        result = self._decide(change, device)
        if key_ok:
            self.server.applied_ops[key] = (result, print_)
        return result

    def _reused(self, change: Change, device: str) -> PushResult:
        """The answer to an op id this device used for another change (nothing is recorded)."""
        high = max(
            op for (user, dev, op) in self.server.applied_ops if (user, dev) == (self.user, device)
        )
        rid = canonical_uuid(change.id) if isinstance(change.id, str) else None
        return PushResult(
            change.op_id,
            rid or (change.id if isinstance(change.id, str) else ""),
            "rejected",
            code="op_id_reused",
            message=(
                f"op id {change.op_id} of device {device} was used for another change "
                f"(restored or copied home?); push it again above op id {high}"
            ),
            max_op_id=high,
        )

    def _decide(self, change: Change, device: str) -> PushResult:
        op_id = change.op_id if isinstance(change.op_id, int) else 0
        raw_id = change.id if isinstance(change.id, str) else ""
        problem = _invalid_change(change)
        if problem:
            return _rejected(op_id, raw_id, *problem)
        rid = canonical_uuid(change.id)
        if rid is None:
            return _rejected(op_id, raw_id, "invalid_id", f"id {change.id!r} is not a uuid")
        bad_path = path_problem(change.path)
        if bad_path:
            return _rejected(op_id, rid, "invalid_path", bad_path)
        size = len(change.content.encode("utf-8"))
        if size > MAX_CONTENT_BYTES:
            return _rejected(
                op_id, rid, "too_large", f"content is {size} bytes, over {MAX_CONTENT_BYTES}"
            )
        meta_size = jsonb_size(change.meta)
        if meta_size > MAX_META_BYTES:
            return _rejected(
                op_id, rid, "too_large", f"meta is {meta_size} bytes, over {MAX_META_BYTES}"
            )
        bad_meta = invalid_meta(change.meta)
        if bad_meta is not None:
            return _rejected(op_id, rid, "invalid_meta", bad_meta)
        owned = self.server.rows.get(rid)
        if owned is not None and owned.owner != self.user:
            return _rejected(op_id, rid, "not_owner", "id belongs to another user")
        current = owned.row if owned is not None else None
        conflict = self._cas_conflict(change, rid, current)
        if conflict is not None:
            return conflict
        return self._apply(change, rid, current, device)

    def _cas_conflict(
        self, change: Change, rid: str, current: ServerRow | None
    ) -> PushResult | None:
        if change.base_rev is None and current is not None:
            return _conflict(change.op_id, rid, "exists", current)
        if change.base_rev is not None and current is None:
            return _conflict(change.op_id, rid, "missing", None)
        if current is not None and change.base_rev != current.rev:
            return _conflict(change.op_id, rid, "rev_mismatch", current)
        if not change.deleted:
            other = self._live_row_at(change.path, rid)
            if other is not None:
                return _conflict(change.op_id, rid, "path_taken", other)
        return None

    def _live_row_at(self, path: str, rid: str) -> ServerRow | None:
        # The SQL's lower(path), not Python's lower(): they differ on 'İ' and a final 'Σ'.
        other_id = self.server.live_paths.get((self.user, server_path_key(path)))
        if other_id is None or other_id == rid:
            return None
        return self.server.rows[other_id].row

    def _first_rev(self) -> int:
        """The rev of a create: above every rev a purged row of this user had (each was at most
        its seq, so at most the horizon), as the SQL's stamping trigger since migration
        20261122001400. Starting at 1 again let a stale device's base rev of a purged id pass
        as a fast-forward onto the row created again under it."""
        return self.server.horizons.get(self.user, 0) + 1

    def _apply(
        self, change: Change, rid: str, current: ServerRow | None, device: str
    ) -> PushResult:
        self.server.seq += 1
        row = ServerRow(
            id=rid,
            path=change.path,
            content="" if change.deleted else change.content,
            meta=_json_copy(change.meta),
            content_hash=change.content_hash,
            rev=(current.rev + 1) if current is not None else self._first_rev(),
            seq=self.server.seq,
            deleted=change.deleted,
            device=device,
            updated_at=datetime.now(UTC).isoformat(),
        )
        if current is not None and not current.deleted:
            self.server.live_paths.pop((self.user, server_path_key(current.path)), None)
        if not row.deleted:
            self.server.live_paths[(self.user, server_path_key(row.path))] = rid
        self.server.rows[rid] = _Owned(self.user, row)
        self.server.revisions.append((rid, row))
        return PushResult(change.op_id, rid, "applied", rev=row.rev, seq=row.seq)


def path_problem(path: object) -> str | None:
    """Why ``path`` is not a valid blueprint path on the server, or None (the SQL's rules)."""
    if not isinstance(path, str) or path == "":
        return "path is empty"
    if len(path) > MAX_PATH_CHARS:
        return f"path is longer than {MAX_PATH_CHARS} characters"
    if path.startswith("/"):
        return "path is absolute"
    if "\\" in path:
        return "path contains a backslash"
    if "\x00" in path:
        return "path contains NUL"
    if ".." in path.split("/"):
        return "path contains '..'"
    return None


def _invalid_change(change: Change) -> tuple[str, str] | None:
    """The rejection (code, message) of an ill-typed change (the SQL's jsonb field checks), or
    None. A meta too deep for json to encode is ``invalid_meta`` here already, before the id
    and path checks the server runs first: it cannot be copied or sized either."""
    checks: list[tuple[str, object, tuple[type, ...]]] = [
        ("op_id", change.op_id, (int,)),
        ("id", change.id, (str,)),
        ("base_rev", change.base_rev, (int, type(None))),
        ("path", change.path, (str,)),
        ("content", change.content, (str,)),
        ("meta", change.meta, (dict,)),
        ("content_hash", change.content_hash, (str,)),
        ("deleted", change.deleted, (bool,)),
    ]
    for name, value, kinds in checks:
        if (name != "deleted" and isinstance(value, bool)) or not isinstance(value, kinds):
            return "invalid_change", f"{name} has the wrong type"
    # What jsonb cannot hold (NUL), JSON nor UTF-8 carry: this change's rejection, as the
    # Supabase remote answers it (a backslash and "u0000" spelled in the text is no NUL).
    problem = encoding_problem(change)
    if problem is not None:
        return problem
    if len(change.content_hash) > MAX_HASH_CHARS:
        return "invalid_change", f"content_hash is longer than {MAX_HASH_CHARS} characters"
    return None


def fingerprint(change: Change) -> tuple[Any, ...]:
    """What makes a resent change the same change (the SQL's ``change_fingerprint``)."""
    return (
        change.id,
        change.base_rev,
        change.path,
        change.content_hash,
        change.deleted,
    )


def jsonb_size(value: object) -> int:
    """The bytes ``pg_column_size`` gives for ``value`` as a (not compressed) jsonb datum.

    The server bounds a change's meta so (1 MiB); counting JSON text instead would differ from
    it both ways (jsonb spends 4 bytes per key and element, text spends quotes and escapes).
    The layout (PostgreSQL's jsonb.h): a 4-byte varlena header, then the root container: a
    4-byte count, a 4-byte JEntry per element (two per object pair: key and value), then the
    data: strings as raw UTF-8, numerics as numeric datums and nested containers, both aligned
    to 4 bytes; true, false and null take no data. A scalar root is a one-element array.
    """
    root = value if isinstance(value, dict | list) else [value]
    return _container_end(root, 4)


def _container_end(value: dict[str, Any] | list[Any], start: int) -> int:
    if isinstance(value, dict):
        # jsonb orders keys by length, then bytes; values follow in that order, and the
        # alignment padding depends on it.
        keys = sorted(value, key=_key_order)
        items: list[object] = [*keys, *(value[k] for k in keys)]
    else:
        items = list(value)
    pos = start + 4 + 4 * len(items)
    for item in items:
        if isinstance(item, str):
            pos += len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, dict | list):
            pos = _container_end(item, pos + (-pos % 4))
        elif isinstance(item, int | float) and not isinstance(item, bool):
            pos += -pos % 4 + _numeric_size(item)
    return pos


def _key_order(key: str) -> tuple[int, bytes]:
    raw = key.encode("utf-8", "surrogatepass")
    return len(raw), raw


def _numeric_size(number: float) -> int:
    """The bytes of a numeric datum: 4 + 2 (short header), and 2 per base-10000 digit kept.

    A number whose display scale is over 63 or whose weight (the position of its first
    base-10000 digit) is outside -64..63 takes numeric's long header, 2 bytes more (PostgreSQL's
    NUMERIC_CAN_BE_SHORT): 1e300 and 5e-324 did, and their size was 2 bytes short.
    """
    d = Decimal(repr(number)) if isinstance(number, float) else Decimal(number)
    if not d.is_finite() or d.is_zero():
        return 6
    _, digits, exponent = d.as_tuple()
    text = "".join(map(str, digits))
    exp = int(exponent)
    # Group the digits in fours around the decimal point, then drop leading and trailing zero
    # groups (numeric stores neither).
    if exp < 0:
        text = text.rjust(-exp, "0")
        whole, frac = text[: len(text) + exp], text[len(text) + exp :]
    else:
        whole, frac = text + "0" * exp, ""
    whole = whole.rjust(-(-len(whole) // 4) * 4, "0")
    frac = frac.ljust(-(-len(frac) // 4) * 4, "0")
    groups = [whole[i : i + 4] for i in range(0, len(whole), 4)]
    groups += [frac[i : i + 4] for i in range(0, len(frac), 4)]
    weight = len(whole) // 4 - 1
    while groups and groups[0] == "0000":
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == "0000":
        groups.pop()
    scale = max(0, -exp)
    header = 6 if scale <= 63 and -64 <= weight <= 63 else 8
    return header + 2 * len(groups)


def _json_copy(meta: dict[str, Any]) -> dict[str, Any]:
    # A JSON round trip is what jsonb does, and it stops a caller's later mutation leaking in.
    copied: dict[str, Any] = json.loads(json.dumps(meta))
    return copied


def _copy_row(row: ServerRow) -> ServerRow:
    # A meta the client cannot hold (a test's direct write to the table, as one through SQL on
    # the real server) goes out as SupabaseRemote decodes it: marked unreadable with an empty
    # meta, so the engine refuses that row alone. (Copied, it raised out of the call: json
    # cannot write such a meta either. Its bytes then count as "{}" against the page budget.)
    problem = meta_problem(row.meta)
    if problem is not None:
        return replace(row, meta={}, unreadable=problem)
    return replace(row, meta=_json_copy(row.meta))


def _row_bytes(row: ServerRow) -> int:
    """What pull_changes and fetch_rows_page count of a row against their budget:
    ``octet_length(content) + octet_length(meta::text)``."""
    return len(row.content.encode("utf-8")) + jsonb_text_bytes(row.meta)


def jsonb_text_bytes(value: object) -> int:
    """The bytes of ``value`` as PostgreSQL prints it as jsonb (``octet_length(meta::text)``).

    jsonb's text is json.dumps' with ``ensure_ascii=False`` (the same ", " and ": " separators
    and the same string escapes; its key order does not change the length) except for numbers:
    jsonb keeps a number as numeric, which prints without an exponent (``1e+20`` comes back as
    ``100000000000000000000``) and without a minus on zero. json.dumps' text alone was off by
    those digits, and a page cut so could differ from the server's.
    """
    if isinstance(value, dict):
        inner = sum(jsonb_text_bytes(k) + 2 + jsonb_text_bytes(v) for k, v in value.items())
        return 2 + inner + 2 * max(len(value) - 1, 0)
    if isinstance(value, list):
        inner = sum(jsonb_text_bytes(v) for v in value)
        return 2 + inner + 2 * max(len(value) - 1, 0)
    if isinstance(value, float):
        number = Decimal(repr(value))
        # numeric has no negative zero: -0.0 prints as 0.0.
        return len(format(abs(number) if number.is_zero() else number, "f"))
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _fingerprint(row: ServerRow) -> VerifyRow:
    return VerifyRow(row.id, row.rev, row.content_hash, row.deleted, row.seq)


def _rejected(op_id: int, rid: str, code: str, message: str) -> PushResult:
    return PushResult(op_id, rid, "rejected", code=code, message=message)


def _conflict(op_id: int, rid: str, reason: str, current: ServerRow | None) -> PushResult:
    row = None if current is None else _copy_row(current)
    return PushResult(op_id, rid, "conflict", reason=reason, current=row)  # type: ignore[arg-type]
