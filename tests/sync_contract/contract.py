"""The one contract every Remote backend passes.

A backend's test module subclasses ``RemoteContract`` and provides a ``remote_factory`` fixture
returning a ``RemoteFactory``:

* ``make_remote(user_label)`` returns a fresh signed-in Remote; the same label within one test is
  the same user (a second device), a new label is a new user with no rows. Users must be fresh for
  every test (the Supabase variant signs up new users), so tests never see each other's rows.
* ``purge(remote)`` purges every tombstone of that remote's user (``purge_tombstones('0 s')``)
  and returns the count.

Nothing here knows which backend runs: only the public Remote API is used, and waits use events
with a timeout, never sleeps.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

import pytest

from sync.errors import ProtocolError
from sync.remote import (
    FETCH_PAGE_BYTES,
    MAX_CONTENT_BYTES,
    MAX_FETCH_IDS,
    MAX_MATCH_PROBES,
    MAX_META_DEPTH,
    MAX_META_INT_DIGITS,
    PULL_PAGE_BYTES,
    AncestryRemote,
    Change,
    FetchPage,
    PagedFetchRemote,
    PullPage,
    PushResult,
    Remote,
    RevisionMatch,
    RevisionProbe,
    ServerRow,
    VerifyRow,
)


class RemoteFactory(Protocol):
    """What a backend's ``remote_factory`` fixture provides."""

    def make_remote(self, user_label: str) -> Remote: ...

    def purge(self, remote: Remote) -> int: ...

    def poison_meta(self, remote: Remote, row_id: str, kind: str) -> None:
        """Write a value into row ``row_id``'s meta behind push_changes' back, as a superuser's
        UPDATE of the table does: ``kind`` is one of :data:`POISONS`."""
        ...


# Meta values the server's table holds but this client cannot (sync.remote.meta_problem), by
# what RemoteFactory.poison_meta writes under "n", with what the row's ``unreadable`` says.
POISONS = {
    "huge_integer": "integer of more than 4300 digits",  # 1e5000: int() converts at most 4,300 digits
    "deep": "nested deeper than",  # 2,000 levels of arrays: json's recursion limit
    "infinite": "out of a double's range",  # 9…9.5 (400 nines): reads as infinity
}


def nested(levels: int) -> dict[str, Any]:
    """A meta ``levels`` deep (the meta object is level 1, as the clients count)."""
    inner: Any = []
    for _ in range(levels - 2):
        inner = [inner]
    return {"n": inner}


@contextmanager
def any_int_digits() -> Iterator[None]:
    """Let this interpreter's json write integers of any length (the default stops at 4,300
    digits), as a client in another language sends them."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(old)


def sha(text: str) -> str:
    """A content hash as the client computes it (any hex sha256 will do for the server)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Writer:
    """One device of one user: builds changes with monotonic op ids and remembers revs."""

    remote: Remote
    device: str
    ops: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def change(
        self,
        id: str | None = None,
        *,
        base_rev: int | None = None,
        path: str | None = None,
        content: str = "a: 1\n",
        meta: dict[str, Any] | None = None,
        deleted: bool = False,
    ) -> Change:
        rid = id or str(uuid.uuid4())
        body = "" if deleted else content
        return Change(
            op_id=next(self.ops),
            id=rid,
            base_rev=base_rev,
            path=path if path is not None else f"flows/{rid}.blueprint.yaml",
            content=body,
            meta=meta if meta is not None else {"id": rid, "name": "Flow", "tags": ["x"]},
            content_hash=sha(body),
            deleted=deleted,
        )

    def push(self, *changes: Change) -> list[PushResult]:
        return self.remote.push(list(changes), device=self.device)

    def push_one(self, change: Change) -> PushResult:
        (result,) = self.push(change)
        return result

    def create(self, **kwargs: Any) -> tuple[Change, PushResult]:
        change = self.change(**kwargs)
        result = self.push_one(change)
        assert result.status == "applied", result
        return change, result


def pull_all(remote: Remote, since: int = 0, *, limit: int = 500) -> tuple[list[ServerRow], int]:
    """Pull every page after ``since``; return the rows in order and the final cursor."""
    rows: list[ServerRow] = []
    cursor = since
    while True:
        page = remote.pull(cursor, limit=limit)
        assert not page.reset_required
        rows.extend(page.changes)
        cursor = page.next
        if not page.more:
            return rows, cursor


def verify_all(remote: Remote, *, limit: int = 1000) -> list[VerifyRow]:
    """Every fingerprint, following the verify pages."""
    out: list[VerifyRow] = []
    after: str | None = None
    while True:
        page = remote.verify(after, limit=limit)
        out.extend(page.rows)
        if not page.more:
            return out
        after = page.next


def latest(rows: list[ServerRow]) -> dict[str, ServerRow]:
    return {r.id: r for r in rows}


class RemoteContract:
    """The rules of sync.remote.Remote, for any backend (subclass and add ``remote_factory``)."""

    # Sizes of the concurrent-pushers test; a slow backend may lower them.
    concurrent_writers = 4
    changes_per_writer = 15
    # How long to wait for a realtime hint to arrive.
    hint_timeout_s = 10.0

    @pytest.fixture
    def alice(self, remote_factory: RemoteFactory) -> Writer:
        return Writer(remote_factory.make_remote("alice"), "alice-laptop")

    @pytest.fixture
    def alice2(self, remote_factory: RemoteFactory, alice: Writer) -> Writer:
        return Writer(remote_factory.make_remote("alice"), "alice-desktop")

    @pytest.fixture
    def bob(self, remote_factory: RemoteFactory) -> Writer:
        return Writer(remote_factory.make_remote("bob"), "bob-laptop")

    # -- basics -----------------------------------------------------------------------------------

    def test_server_info(self, alice: Writer) -> None:
        info = alice.remote.server_info()
        assert (info.protocol, info.max_batch, info.max_content_bytes) == (
            1,
            500,
            MAX_CONTENT_BYTES,
        )
        # The limits of migration 20261122000500, announced by both backends.
        assert (info.extra["max_meta_bytes"], info.extra["max_device_chars"]) == (8 * 2**20, 128)

    def test_identity_differs_per_user(self, alice: Writer, alice2: Writer, bob: Writer) -> None:
        assert alice.remote.identity == alice2.remote.identity
        assert alice.remote.identity != bob.remote.identity

    def test_create_then_pull_returns_the_row_verbatim(self, alice: Writer) -> None:
        content = "# a comment\nsteps:\n  - id: s1   # trailing\n    run: echo 'hi'\n"
        meta = {"id": "x", "name": "Ünïcode ✓", "tags": ["a", "b"], "nested": {"k": [1, None]}}
        change, result = alice.create(content=content, meta=meta, path="Team/Flow 1.blueprint.yaml")
        assert (result.op_id, result.id, result.rev) == (change.op_id, change.id, 1)
        assert result.seq is not None and result.seq > 0
        (row,) = pull_all(alice.remote)[0]
        assert row.id == change.id
        assert row.path == "Team/Flow 1.blueprint.yaml"
        assert row.content == content
        assert row.meta == meta
        assert row.content_hash == change.content_hash
        assert (row.rev, row.seq, row.deleted, row.device) == (1, result.seq, False, "alice-laptop")
        assert row.updated_at

    def test_update_bumps_rev_and_seq(self, alice: Writer) -> None:
        c1, r1 = alice.create()
        r2 = alice.push_one(alice.change(c1.id, base_rev=1, path="moved.yaml", content="a: 2\n"))
        assert r2.status == "applied" and r2.rev == 2
        assert r2.seq is not None and r1.seq is not None and r2.seq > r1.seq
        (row,) = pull_all(alice.remote)[0]
        assert (row.rev, row.seq, row.path, row.content) == (2, r2.seq, "moved.yaml", "a: 2\n")

    def test_delete_leaves_a_tombstone_that_pulls(self, alice: Writer) -> None:
        c1, _ = alice.create(meta={"id": "m", "name": "Keep me"})
        r2 = alice.push_one(
            alice.change(
                c1.id, base_rev=1, path=c1.path, deleted=True, meta={"id": "m", "name": "Keep me"}
            )
        )
        assert r2.status == "applied" and r2.rev == 2
        (row,) = pull_all(alice.remote)[0]
        assert row.deleted and row.content == "" and row.rev == 2 and row.seq == r2.seq
        assert row.meta == {"id": "m", "name": "Keep me"}

    def test_tombstone_revives_only_with_its_rev(self, alice: Writer) -> None:
        c1, _ = alice.create()
        alice.push_one(alice.change(c1.id, base_rev=1, path=c1.path, deleted=True))
        stale = alice.push_one(alice.change(c1.id, base_rev=1, path=c1.path))
        assert stale.status == "conflict" and stale.reason == "rev_mismatch"
        assert stale.current is not None and stale.current.deleted and stale.current.rev == 2
        recreate = alice.push_one(alice.change(c1.id, path=c1.path))
        assert recreate.status == "conflict" and recreate.reason == "exists"
        revived = alice.push_one(alice.change(c1.id, base_rev=2, path=c1.path, content="b: 1\n"))
        assert revived.status == "applied" and revived.rev == 3
        (row,) = pull_all(alice.remote)[0]
        assert not row.deleted and row.content == "b: 1\n"

    # -- compare-and-swap conflicts --------------------------------------------------------------

    def test_create_of_existing_id_conflicts_with_current_row(self, alice: Writer) -> None:
        c1, r1 = alice.create(content="a: 1\n")
        result = alice.push_one(alice.change(c1.id, content="a: 9\n"))
        assert (result.status, result.reason, result.id) == ("conflict", "exists", c1.id)
        assert result.current is not None
        assert (result.current.rev, result.current.content, result.current.seq) == (
            1,
            "a: 1\n",
            r1.seq,
        )

    def test_update_of_unknown_id_conflicts_missing(self, alice: Writer) -> None:
        result = alice.push_one(alice.change(base_rev=3))
        assert (result.status, result.reason, result.current) == ("conflict", "missing", None)
        assert pull_all(alice.remote)[0] == []

    def test_stale_base_rev_conflicts_and_changes_nothing(
        self, alice: Writer, alice2: Writer
    ) -> None:
        c1, _ = alice.create(content="v: 1\n")
        assert alice2.push_one(alice2.change(c1.id, base_rev=1, content="v: 2\n")).rev == 2
        lost = alice.push_one(alice.change(c1.id, base_rev=1, content="v: 3\n"))
        assert (lost.status, lost.reason) == ("conflict", "rev_mismatch")
        assert lost.current is not None
        assert (lost.current.rev, lost.current.content, lost.current.device) == (
            2,
            "v: 2\n",
            "alice-desktop",
        )
        (row,) = pull_all(alice.remote)[0]
        assert (row.rev, row.content) == (2, "v: 2\n")

    def test_path_taken_is_case_insensitive_among_live_rows(self, alice: Writer) -> None:
        c1, _ = alice.create(path="Team/Flow.yaml")
        clash = alice.push_one(alice.change(path="team/FLOW.yaml"))
        assert (clash.status, clash.reason) == ("conflict", "path_taken")
        assert clash.current is not None and clash.current.id == c1.id
        # The row itself may change the case of its own path.
        same = alice.push_one(alice.change(c1.id, base_rev=1, path="team/flow.yaml"))
        assert same.status == "applied"
        # A tombstone does not hold its path.
        alice.push_one(alice.change(c1.id, base_rev=2, path="team/flow.yaml", deleted=True))
        reuse = alice.push_one(alice.change(path="TEAM/flow.yaml"))
        assert reuse.status == "applied"
        # ... and a revived tombstone cannot take a path that is taken again.
        revive = alice.push_one(alice.change(c1.id, base_rev=3, path="team/flow.yaml"))
        assert (revive.status, revive.reason) == ("conflict", "path_taken")

    @pytest.mark.parametrize(
        ("held", "wanted", "taken"),
        [
            # The server's key is PostgreSQL's lower(): glibc's towlower, one code point at a
            # time. It maps 'İ' (U+0130) to a plain 'i', where Python's lower() gives 'i' and a
            # combining dot (two names).
            ("İstanbul.yaml", "istanbul.yaml", True),
            # One code point at a time: no final sigma, so a capital sigma is the plain small one
            # wherever it stands, and a final small sigma stays itself (Python's lower() gives a
            # capital sigma at a word's end the final form).
            ("ΟΔΟΣ x.yaml", "οδοσ x.yaml", True),
            ("ΟΔΟΣ y.yaml", "οδος y.yaml", False),
            # No full case folding: 'ß' and 'ss', 'ﬀ' and 'ff' are two names.
            ("Straße.yaml", "strasse.yaml", False),
            ("ﬀ.yaml", "ff.yaml", False),
            # Simple lower-casing beyond ASCII: the Kelvin sign is 'k'.
            ("\u212a.yaml", "k.yaml", True),
        ],
        ids=["dotted-capital-i", "sigma", "final-sigma", "sharp-s", "ligature", "kelvin"],
    )
    def test_path_taken_compares_paths_as_the_servers_lower(
        self, alice: Writer, held: str, wanted: str, taken: bool
    ) -> None:
        c1, _ = alice.create(path=held)
        result = alice.push_one(alice.change(path=wanted))
        if taken:
            assert (result.status, result.reason) == ("conflict", "path_taken")
            assert result.current is not None and result.current.id == c1.id
        else:
            assert result.status == "applied", result

    def test_moving_onto_a_taken_path_conflicts(self, alice: Writer) -> None:
        c1, _ = alice.create(path="a.yaml")
        c2, _ = alice.create(path="b.yaml")
        move = alice.push_one(alice.change(c2.id, base_rev=1, path="A.yaml"))
        assert (move.status, move.reason) == ("conflict", "path_taken")
        assert move.current is not None and move.current.id == c1.id

    # -- rejections ------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "path",
        ["", "/etc/flow.yaml", "a/../b.yaml", "..", "a\\b.yaml", "x" * 1025],
        ids=["empty", "absolute", "dotdot", "bare-dotdot", "backslash", "too-long"],
    )
    def test_invalid_path_is_rejected(self, alice: Writer, path: str) -> None:
        result = alice.push_one(alice.change(path=path))
        assert (result.status, result.code) == ("rejected", "invalid_path")
        assert result.message
        assert pull_all(alice.remote)[0] == []

    def test_path_of_1024_chars_and_dots_in_names_are_fine(self, alice: Writer) -> None:
        alice.create(path="d/" + "x" * 1022)
        alice.create(path="a..b/.hidden/c...yaml")

    def test_invalid_id_is_rejected(self, alice: Writer) -> None:
        result = alice.push_one(alice.change("not-a-uuid"))
        assert (result.status, result.code) == ("rejected", "invalid_id")

    def test_too_large_content_is_rejected(self, alice: Writer) -> None:
        result = alice.push_one(alice.change(content="x" * (MAX_CONTENT_BYTES + 1)))
        assert (result.status, result.code) == ("rejected", "too_large")

    def test_meta_over_8_mib_is_rejected_as_too_large(self, alice: Writer) -> None:
        # The server counts pg_column_size of the meta's jsonb: 8 MiB of string is over it with
        # the key and headers; 4 KiB less is under it. Each refusal is for that change alone.
        big = alice.change(meta={"note": "x" * 8 * 2**20})
        fits = alice.change(meta={"note": "x" * (8 * 2**20 - 4096)})
        results = alice.push(big, fits)
        assert [(r.status, r.code) for r in results] == [
            ("rejected", "too_large"),
            ("applied", None),
        ]
        assert "meta" in (results[0].message or "")
        assert [r.id for r in pull_all(alice.remote)[0]] == [fits.id]

    def test_content_hash_over_128_characters_is_an_invalid_change(self, alice: Writer) -> None:
        long_hash = replace(alice.change(), content_hash="h" * 129)
        at_limit = replace(alice.change(), content_hash="é" * 128)  # characters, not bytes
        results = alice.push(long_hash, at_limit)
        assert [(r.status, r.code) for r in results] == [
            ("rejected", "invalid_change"),
            ("applied", None),
        ]
        assert "content_hash" in (results[0].message or "")
        (row,) = pull_all(alice.remote)[0]
        assert row.content_hash == "é" * 128

    @pytest.mark.parametrize(
        "bad,problem,fix",
        [
            (nested(MAX_META_DEPTH + 1), "nested deeper than 64 levels", "flatten it"),
            (nested(70), "nested deeper than 64 levels", "flatten it"),
            ({"n": -(10**MAX_META_INT_DIGITS)}, "integer of more than 4300 digits", "string"),
        ],
        ids=["65-levels", "70-levels", "4301-digits"],
    )
    def test_a_meta_other_devices_cannot_read_is_refused_as_invalid_meta(
        self, alice: Writer, alice2: Writer, bad: dict[str, Any], problem: str, fix: str
    ) -> None:
        # Stored, such a meta was parked as invalid_remote by every other device, and the device
        # that pushed it was told `applied`. It is that change's rejection; at the limits (64
        # levels, 4,300 digits) a meta goes up and every device reads it.
        refused = alice.change(meta=bad)
        at_limits = alice.change(meta=nested(MAX_META_DEPTH) | {"i": 10**MAX_META_INT_DIGITS - 1})
        with any_int_digits():
            results = alice.push(refused, at_limits)
        assert [(r.status, r.code) for r in results] == [
            ("rejected", "invalid_meta"),
            ("applied", None),
        ]
        message = results[0].message or ""
        assert problem in message and fix in message, message
        (row,) = pull_all(alice2.remote)[0]
        assert (row.id, row.unreadable, row.meta) == (at_limits.id, None, at_limits.meta)

    def test_a_meta_too_deep_for_json_to_encode_is_refused_alone(self, alice: Writer) -> None:
        # json encodes one level per C frame: 2,000 levels raised RecursionError out of push
        # (the whole batch, on every retry). The client answers it unsent, as the server would.
        deep = alice.change(meta=nested(2000))
        fine = alice.change()
        results = alice.push(deep, fine)
        assert [(r.op_id, r.status, r.code) for r in results] == [
            (deep.op_id, "rejected", "invalid_meta"),
            (fine.op_id, "applied", None),
        ]
        assert "flatten it" in (results[0].message or "")
        assert [r.id for r in pull_all(alice.remote)[0]] == [fine.id]

    @pytest.mark.parametrize("device", ["d" * 129, ""])
    def test_a_device_name_over_128_characters_fails_the_call(
        self, alice: Writer, device: str
    ) -> None:
        with pytest.raises(ProtocolError) as info:
            alice.remote.push([alice.change()], device=device)
        assert info.value.code == "22023"
        assert pull_all(alice.remote)[0] == []
        # 128 characters (not bytes) is fine.
        (result,) = alice.remote.push([alice.change()], device="é" * 128)
        assert result.status == "applied"
        assert [r.device for r in pull_all(alice.remote)[0]] == ["é" * 128]

    @pytest.mark.parametrize(
        "field_name,value",
        [("meta", ["not", "an", "object"]), ("content", 12), ("deleted", "yes"), ("base_rev", "1")],
    )
    def test_ill_typed_change_is_rejected(self, alice: Writer, field_name: str, value: Any) -> None:
        fields = alice.change().to_json()
        fields[field_name] = value
        result = alice.push_one(cast(Any, Change)(**fields))
        assert (result.status, result.code) == ("rejected", "invalid_change")
        assert pull_all(alice.remote)[0] == []

    @pytest.mark.parametrize(
        "content,meta",
        [
            ("nul \x00 here", None),
            ("ok: 1\n", {"k": "nul \x00"}),
            ("ok: 1\n", {"nul \x00 key": 1}),
            ("ok: 1\n", {"deep": [{"k": ["\x00"]}]}),
            ("\ud800", None),
            ("ok: 1\n", {"f": float("nan")}),
        ],
        ids=["nul-content", "nul-meta", "nul-key", "nul-nested", "surrogate", "nan"],
    )
    def test_text_jsonb_cannot_hold_is_one_rejected_change(
        self, alice: Writer, content: str, meta: dict[str, Any] | None
    ) -> None:
        # jsonb holds no NUL, UTF-8 no lone surrogate, JSON no NaN: PostgREST refused the whole
        # call (22P05) or the client could not encode it, so one such blueprint failed every
        # push of its batch, on every retry. It is that change's rejection; the others apply.
        bad = alice.change(content=content, meta=meta)
        fine = alice.change()
        results = alice.push(bad, fine)
        assert [(r.op_id, r.status, r.code) for r in results] == [
            (bad.op_id, "rejected", "invalid_change"),
            (fine.op_id, "applied", None),
        ]
        assert results[0].id == bad.id
        assert [r.id for r in pull_all(alice.remote)[0]] == [fine.id]

    def test_an_escaped_nul_spelled_in_text_is_no_nul(self, alice: Writer) -> None:
        # A backslash followed by "u0000" is six ordinary characters, in content and meta alike.
        alice.create(content='s: "\\u0000"\n', meta={"note": "\\u0000", "k\\u0000": "x"})
        (row,) = pull_all(alice.remote)[0]
        assert row.meta == {"note": "\\u0000", "k\\u0000": "x"}

    def test_foreign_id_is_rejected_as_not_owner(self, alice: Writer, bob: Writer) -> None:
        c1, _ = alice.create(content="secret: 1\n")
        for change in (
            bob.change(c1.id, content="mine: 1\n"),
            bob.change(c1.id, base_rev=1, content="mine: 1\n"),
        ):
            result = bob.push_one(change)
            assert (result.status, result.code, result.current) == ("rejected", "not_owner", None)
            assert "secret" not in (result.message or "")
        (row,) = pull_all(alice.remote)[0]
        assert (row.rev, row.content) == (1, "secret: 1\n")

    def test_one_bad_change_does_not_stop_the_batch(self, alice: Writer) -> None:
        c0, _ = alice.create(path="taken.yaml")
        batch = [
            alice.change(path="ok1.yaml"),
            alice.change(path="../escape.yaml"),
            alice.change(path="TAKEN.yaml"),
            alice.change(c0.id, base_rev=7),
            alice.change(path="ok2.yaml"),
        ]
        results = alice.push(*batch)
        assert [r.op_id for r in results] == [c.op_id for c in batch]
        assert [r.id for r in results] == [c.id for c in batch]
        assert [r.status for r in results] == [
            "applied",
            "rejected",
            "conflict",
            "conflict",
            "applied",
        ]
        assert [r.reason for r in results[2:4]] == ["path_taken", "rev_mismatch"]
        paths = sorted(r.path for r in pull_all(alice.remote)[0])
        assert paths == ["ok1.yaml", "ok2.yaml", "taken.yaml"]

    def test_a_batch_over_max_batch_fails_whole(self, alice: Writer) -> None:
        from sync.errors import ProtocolError

        batch = [alice.change() for _ in range(501)]
        with pytest.raises(ProtocolError):
            alice.push(*batch)
        assert pull_all(alice.remote)[0] == []

    def test_empty_push_returns_nothing(self, alice: Writer) -> None:
        assert alice.push() == []

    # -- idempotency -----------------------------------------------------------------------------

    def test_replayed_batch_returns_the_same_results_and_applies_nothing(
        self, alice: Writer
    ) -> None:
        c0, _ = alice.create(path="p.yaml")
        batch = [
            alice.change(path="new.yaml"),
            alice.change(c0.id, base_rev=1, content="z: 1\n", path="p.yaml"),
            alice.change(path="P.yaml"),
            alice.change(path="/bad"),
        ]
        first = alice.push(*batch)
        rows_before, cursor = pull_all(alice.remote)
        second = alice.push(*batch)  # the response was "lost": resend the same op ids
        assert second == first
        assert alice.remote.pull(cursor).changes == []
        assert pull_all(alice.remote)[0] == rows_before

    def test_replay_returns_the_stored_result_even_after_the_row_moved_on(
        self, alice: Writer
    ) -> None:
        c1, _ = alice.create()
        stale = alice.change(c1.id, base_rev=5)
        first = alice.push_one(stale)
        assert first.reason == "rev_mismatch"
        assert alice.push_one(alice.change(c1.id, base_rev=1, content="b: 2\n")).rev == 2
        assert alice.push_one(stale) == first  # verbatim: still reports rev 1 as current
        applied = alice.change(c1.id, base_rev=2, content="c: 3\n")
        r = alice.push_one(applied)
        assert alice.push_one(applied) == r
        (row,) = pull_all(alice.remote)[0]
        assert row.rev == 3

    def test_a_reused_op_id_with_another_change_is_refused_not_replayed(
        self, alice: Writer
    ) -> None:
        # A home restored from a backup (or copied) draws op ids this device already used.
        first, applied = alice.create(path="p.yaml")
        other, _ = alice.create(path="q.yaml")
        restored = Writer(alice.remote, alice.device)  # its op counter is back at 1
        edit = restored.change(first.id, base_rev=None, path="p.yaml", content="b: 2\n")
        new = restored.change(path="r.yaml")
        assert (edit.op_id, new.op_id) == (first.op_id, other.op_id)
        _, cursor = pull_all(alice.remote)
        results = restored.push(edit, new)
        for change, result in zip((edit, new), results, strict=True):
            assert (result.op_id, result.id, result.status) == (change.op_id, change.id, "rejected")
            assert result.code == "op_id_reused"
            assert result.max_op_id is not None and result.max_op_id >= other.op_id
        assert alice.remote.pull(cursor).changes == []  # nothing applied
        assert alice.push_one(first) == applied  # the stored answer is still the original's
        # Above the high-water mark the same changes are decided as usual.
        high = results[0].max_op_id
        assert high is not None
        above = Writer(alice.remote, alice.device, itertools.count(high + 1))
        retried = above.push(
            replace(edit, op_id=next(above.ops)), replace(new, op_id=next(above.ops))
        )
        assert [r.status for r in retried] == ["conflict", "applied"]
        assert retried[0].reason == "exists"

    def test_a_change_repeating_an_op_id_of_its_batch_with_other_content_is_refused(
        self, alice: Writer
    ) -> None:
        one = alice.change(path="one.yaml")
        two = replace(alice.change(path="two.yaml"), op_id=one.op_id)
        first, second = alice.push(one, two)
        assert first.status == "applied"
        assert (second.status, second.code, second.id) == ("rejected", "op_id_reused", two.id)
        assert len(pull_all(alice.remote)[0]) == 1

    def test_op_ids_are_scoped_per_device_and_user(
        self, alice: Writer, alice2: Writer, bob: Writer
    ) -> None:
        a = alice.change(path="one.yaml")
        b = alice2.change(path="two.yaml")
        assert a.op_id == b.op_id == 1
        assert alice.push_one(a).status == "applied"
        assert alice2.push_one(b).status == "applied"
        c = bob.change(path="one.yaml")
        assert c.op_id == 1 and bob.push_one(c).status == "applied"
        assert len(pull_all(alice.remote)[0]) == 2

    # -- pull ------------------------------------------------------------------------------------

    def test_pull_pages_in_seq_order_with_a_cursor(self, alice: Writer) -> None:
        created = [alice.create(path=f"f{i}.yaml")[0] for i in range(7)]
        for c in created[:3]:
            alice.push_one(alice.change(c.id, base_rev=1, path=c.path, content="u: 1\n"))
        seen: list[ServerRow] = []
        cursor = 0
        pages: list[PullPage] = []
        while True:
            page = alice.remote.pull(cursor, limit=3)
            pages.append(page)
            assert len(page.changes) <= 3
            if page.changes:
                assert page.next == page.changes[-1].seq
            else:
                assert page.next == cursor
            seen.extend(page.changes)
            cursor = page.next
            if not page.more:
                break
        assert len(pages) == 3 and [p.more for p in pages] == [True, True, False]
        seqs = [r.seq for r in seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # A row appears once, at its latest state: the 3 updated rows come last.
        assert len(seen) == 7
        assert [r.id for r in seen[-3:]] == [c.id for c in created[:3]]
        assert all(r.rev == 2 for r in seen[-3:])
        empty = alice.remote.pull(cursor)
        assert (empty.changes, empty.next, empty.more) == ([], cursor, False)

    def test_pull_after_a_cursor_returns_only_newer_rows(self, alice: Writer) -> None:
        alice.create(path="old.yaml")
        _, cursor = pull_all(alice.remote)
        c2, r2 = alice.create(path="new.yaml")
        rows, nxt = pull_all(alice.remote, cursor)
        assert [r.id for r in rows] == [c2.id] and nxt == r2.seq

    def test_pull_limit_is_capped_at_1000(self, alice: Writer) -> None:
        for size in (500, 500, 1):
            results = alice.push(*(alice.change() for _ in range(size)))
            assert {r.status for r in results} == {"applied"}
        page = alice.remote.pull(0, limit=100_000)
        assert len(page.changes) == 1000 and page.more
        rest = alice.remote.pull(page.next, limit=100_000)
        assert len(rest.changes) == 1 and not rest.more

    def test_pull_pages_rows_over_the_byte_budget(self, alice: Writer) -> None:
        """pull_changes ends a page at PULL_PAGE_BYTES of content and meta, plus one row
        (migration 20261122001100); the rows come in pages, each once, none lost."""
        # Rows of 9 MiB: the first is under the budget, so the second goes too; after them the
        # page holds 18 MiB and ends, though the limit (500) would take every row.
        big = "x" * (9 * 2**20)
        assert 2 * len(big) > PULL_PAGE_BYTES > len(big)
        made = [
            alice.create(path="big0.yaml", content=big)[0],
            alice.create(path="big1.yaml", content=big)[0],
            alice.create(path="small0.yaml")[0],
            alice.create(path="big2.yaml", content=big)[0],
            alice.create(path="small1.yaml")[0],
        ]
        pages: list[PullPage] = []
        cursor = 0
        while True:
            page = alice.remote.pull(cursor)
            pages.append(page)
            assert page.changes and page.next == page.changes[-1].seq
            cursor = page.next
            if not page.more:
                break
        assert [[r.path for r in p.changes] for p in pages] == [
            ["big0.yaml", "big1.yaml"],
            ["small0.yaml", "big2.yaml", "small1.yaml"],
        ]
        rows = [r for p in pages for r in p.changes]
        assert [r.id for r in rows] == [c.id for c in made]
        assert [r.content for r in rows] == [c.content for c in made]
        assert [r.seq for r in rows] == sorted({r.seq for r in rows})

    def test_concurrent_pushers_are_never_skipped(self, remote_factory: RemoteFactory) -> None:
        writers = [
            Writer(remote_factory.make_remote("carol"), f"carol-{i}")
            for i in range(self.concurrent_writers)
        ]
        reader = remote_factory.make_remote("carol")
        applied: dict[str, int] = {}
        lock = threading.Lock()
        errors: list[BaseException] = []

        def write(w: Writer) -> None:
            try:
                for i in range(self.changes_per_writer):
                    c, r = w.create(path=f"{w.device}/{i}.yaml")
                    with lock:
                        applied[c.id] = cast(int, r.seq)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in writers]
        for t in threads:
            t.start()
        seen: dict[str, int] = {}
        cursor = 0
        try:
            while any(t.is_alive() for t in threads):
                page = reader.pull(cursor, limit=7)
                seen.update((r.id, r.seq) for r in page.changes)
                cursor = page.next
        finally:
            for t in threads:
                t.join()
        assert not errors, errors
        rows, _ = pull_all(reader, cursor)
        seen.update((r.id, r.seq) for r in rows)
        assert seen == applied

    # -- horizon ---------------------------------------------------------------------------------

    def test_purged_tombstones_raise_the_horizon(
        self, alice: Writer, remote_factory: RemoteFactory
    ) -> None:
        keep, _ = alice.create(path="keep.yaml")
        gone, _ = alice.create(path="gone.yaml")
        tomb = alice.push_one(alice.change(gone.id, base_rev=1, path="gone.yaml", deleted=True))
        assert remote_factory.purge(alice.remote) == 1
        page = alice.remote.pull(0)
        assert page.reset_required and page.changes == []
        assert page.horizon == tomb.seq
        assert alice.remote.pull(page.horizon - 1).reset_required
        ok = alice.remote.pull(page.horizon)
        assert not ok.reset_required and ok.horizon == tomb.seq
        assert [v.id for v in verify_all(alice.remote)] == [keep.id]
        assert alice.remote.fetch([gone.id]) == []
        # The purged id can be created again (an offline edit that beat the delete).
        again = alice.push_one(alice.change(gone.id, path="gone.yaml"))
        assert again.status == "applied"

    def test_a_stale_write_of_a_purged_id_is_a_conflict_with_the_row_created_again(
        self, alice: Writer, remote_factory: RemoteFactory
    ) -> None:
        """An old client's edit of a purged row against the row created again under its id is a
        rev_mismatch, however often the new row was written: its revs start above the horizon,
        and every rev of the purged row was at most that."""
        stale = Writer(alice.remote, "stale-device")
        old, _ = alice.create(path="x.yaml", content="old\n")
        alice.push_one(alice.change(old.id, base_rev=1, path="x.yaml", content="old 2\n"))
        alice.push_one(alice.change(old.id, base_rev=2, path="x.yaml", deleted=True))
        assert remote_factory.purge(alice.remote) == 1
        horizon = alice.remote.pull(0).horizon
        _, made = alice.create(id=old.id, path="x.yaml", content="new\n")
        rev = cast(int, made.rev)
        # Each of the purged row's revs (3 was its tombstone: an edit that beats the delete)
        # once the new row has had as many writes (the rev it would be at, counted from 1).
        for base in (1, 2, 3):
            if base > 1:
                edit = alice.change(old.id, base_rev=rev, path="x.yaml", content=f"new {base}\n")
                rev = cast(int, alice.push_one(edit).rev)
            res = stale.push_one(stale.change(old.id, base_rev=base, path="x.yaml", content="s\n"))
            assert (res.status, res.reason) == ("conflict", "rev_mismatch"), res
            assert res.current is not None and res.current.rev == rev
        [row] = alice.remote.fetch([old.id])
        assert (row.rev, row.content) == (rev, "new 3\n")
        assert made.rev == horizon + 1

    def test_purge_without_tombstones_keeps_the_horizon(
        self, alice: Writer, remote_factory: RemoteFactory
    ) -> None:
        alice.create()
        assert remote_factory.purge(alice.remote) == 0
        page = alice.remote.pull(0)
        assert not page.reset_required and page.horizon == 0 and len(page.changes) == 1

    # -- verify and fetch ------------------------------------------------------------------------

    def test_verify_pages_by_id_with_fingerprints(self, alice: Writer) -> None:
        made = [alice.create(path=f"v{i}.yaml") for i in range(5)]
        dead = made[0][0]
        tomb = alice.push_one(alice.change(dead.id, base_rev=1, path=dead.path, deleted=True))
        pages = []
        after: str | None = None
        while True:
            page = alice.remote.verify(after, limit=2)
            pages.append(page)
            if page.rows:
                assert page.next == page.rows[-1].id
            if not page.more:
                break
            after = page.next
        rows = [r for p in pages for r in p.rows]
        assert [len(p.rows) for p in pages] == [2, 2, 1]
        assert [r.id for r in rows] == sorted(c.id for c, _ in made)
        by_id = {r.id: r for r in rows}
        for c, r in made[1:]:
            assert by_id[c.id] == VerifyRow(c.id, 1, c.content_hash, False, cast(int, r.seq))
        assert by_id[dead.id] == VerifyRow(dead.id, 2, sha(""), True, cast(int, tomb.seq))
        tail = alice.remote.verify(rows[-1].id)
        assert (tail.rows, tail.next, tail.more) == ([], None, False)

    def test_fetch_returns_own_rows_only(self, alice: Writer, bob: Writer) -> None:
        a1, _ = alice.create(path="a1.yaml")
        a2, _ = alice.create(path="a2.yaml")
        b1, _ = bob.create(path="b1.yaml")
        unknown = str(uuid.uuid4())
        rows = alice.remote.fetch([a2.id, b1.id, unknown, a1.id])
        assert sorted(r.id for r in rows) == sorted([a1.id, a2.id])
        assert {r.id: r for r in rows} == latest(pull_all(alice.remote)[0])
        assert alice.remote.fetch([]) == []

    def test_fetch_refuses_too_many_ids_and_bad_ids(self, alice: Writer) -> None:
        """Any number of ids was sent, and the server looked up and built every row asked for
        (the server refuses more than 1000 since migration 20261122001200)."""
        a1, _ = alice.create(path="a1.yaml")
        many = [str(uuid.uuid4()) for _ in range(MAX_FETCH_IDS)]
        with pytest.raises(ProtocolError) as info:
            alice.remote.fetch([*many, a1.id])
        assert "too many ids" in info.value.message
        assert [r.id for r in alice.remote.fetch([*many[1:], a1.id])] == [a1.id]
        with pytest.raises(ProtocolError):
            alice.remote.fetch(["not-a-uuid"])

    def test_fetch_answers_in_pieces_of_the_byte_budget(self, alice: Writer, bob: Writer) -> None:
        """fetch_rows built every row asked for into one answer (up to 1000 rows of 18 MiB);
        fetch_rows_page ends one after FETCH_PAGE_BYTES and names the ids left (migration
        20261122001300), and ``fetch`` asks again for them."""
        remote = alice.remote
        assert isinstance(remote, PagedFetchRemote)
        # Two rows of 9 MiB: the first is under the budget, so the second goes too (as a pull
        # page, a row goes while the ones before it hold less); the third is cut off.
        big = "x" * (9 * 2**20)
        assert 2 * len(big) > FETCH_PAGE_BYTES > len(big)
        ids = sorted(str(uuid.uuid4()) for _ in range(3))
        for n, rid in enumerate(ids[:2]):
            alice.create(id=rid, path=f"big{n}.yaml", content=big)
        alice.create(id=ids[2], path="small.yaml")
        theirs, _ = bob.create(path="b1.yaml")
        unknown = str(uuid.uuid4())
        first = remote.fetch_page([ids[2], theirs.id, ids[0], unknown, ids[1], ids[0]])
        assert [r.id for r in first.rows] == ids[:2]
        assert first.rows[0].content == big
        assert first.rest == sorted(i for i in {ids[2], theirs.id, unknown} if i > ids[1])
        second = remote.fetch_page(first.rest)
        assert ([r.id for r in second.rows], second.rest) == ([ids[2]], [])
        rows = remote.fetch([unknown, *reversed(ids), theirs.id])
        assert [r.id for r in rows] == ids
        assert {r.id: r for r in rows} == latest(pull_all(remote)[0])
        small = remote.fetch_page([ids[2], unknown])
        assert ([r.id for r in small.rows], small.rest) == ([ids[2]], [])
        assert remote.fetch_page([]) == FetchPage([], [])
        with pytest.raises(ProtocolError):
            remote.fetch_page(["not-a-uuid"])

    # -- the revision history (AncestryRemote) ----------------------------------------------------

    def test_match_revisions_finds_accepted_revisions_by_hash(
        self, alice: Writer, bob: Writer
    ) -> None:
        remote = alice.remote
        assert isinstance(remote, AncestryRemote)
        x, _ = alice.create(path="a/x.yaml", content="v: 1\n")
        alice.push_one(alice.change(x.id, base_rev=1, path="a/x.yaml", content="v: 2\n"))
        # Back to v1, at another path (rev 3); then deleted (rev 4, a tombstone).
        alice.push_one(alice.change(x.id, base_rev=2, path="b/x.yaml", content="v: 1\n"))
        alice.push_one(alice.change(x.id, base_rev=3, path="b/x.yaml", deleted=True))
        y, _ = alice.create(path="y.yaml", content="v: 1\n")
        unknown = str(uuid.uuid4())
        found = remote.match_revisions(
            [
                RevisionProbe(x.id, sha("v: 1\n"), "a/x.yaml"),  # a revision at that path wins
                RevisionProbe(x.id, sha("v: 1\n"), "c/x.yaml"),  # none there: the newest
                RevisionProbe(x.id, sha("v: 2\n"), "b/x.yaml"),
                RevisionProbe(x.id, sha("v: 3\n"), "a/x.yaml"),  # never had it
                RevisionProbe(x.id, sha(""), "b/x.yaml"),  # the tombstone's hash: no revision
                RevisionProbe(unknown, sha("v: 1\n"), "a/x.yaml"),
                RevisionProbe(y.id.upper(), sha("v: 1\n"), "y.yaml"),  # ids in any case
            ]
        )
        h1, h2 = sha("v: 1\n"), sha("v: 2\n")
        assert found == [
            RevisionMatch(x.id, 1, "a/x.yaml", h1),
            RevisionMatch(x.id, 3, "b/x.yaml", h1),
            RevisionMatch(x.id, 2, "a/x.yaml", h2),
            RevisionMatch(y.id, 1, "y.yaml", h1),
        ]
        # Another user's history matches nothing, and asking nothing costs nothing.
        other = bob.remote
        assert isinstance(other, AncestryRemote)
        assert other.match_revisions([RevisionProbe(y.id, h1, "y.yaml")]) == []
        assert remote.match_revisions([]) == []

    def test_match_revisions_refuses_too_many_probes_and_bad_ids(self, alice: Writer) -> None:
        remote = alice.remote
        assert isinstance(remote, AncestryRemote)
        many = [
            RevisionProbe(str(uuid.uuid4()), sha("v"), "p.yaml")
            for _ in range(MAX_MATCH_PROBES + 1)
        ]
        with pytest.raises(ProtocolError):
            remote.match_revisions(many)
        assert remote.match_revisions(many[:MAX_MATCH_PROBES]) == []
        with pytest.raises(ProtocolError):
            remote.match_revisions([RevisionProbe("not-a-uuid", sha("v"), "p.yaml")])

    # -- users and devices -----------------------------------------------------------------------

    @pytest.mark.parametrize("kind", sorted(POISONS))
    def test_a_meta_the_client_cannot_hold_marks_that_row_alone(
        self, remote_factory: RemoteFactory, alice: Writer, kind: str
    ) -> None:
        # Such a row (a direct write to the table) failed every pull page and fetch holding it
        # (json could not read or copy it); it comes as itself, marked, with an empty meta.
        ids = [alice.create(meta={"id": "m", "name": f"r{i}"})[0].id for i in range(3)]
        remote_factory.poison_meta(alice.remote, ids[1], kind)
        rows, _ = pull_all(alice.remote, limit=1)
        by_id = {r.id: r for r in rows}
        assert set(by_id) == set(ids)
        bad = by_id[ids[1]]
        assert bad.unreadable is not None and POISONS[kind] in bad.unreadable
        assert bad.meta == {}
        assert [by_id[i].meta for i in (ids[0], ids[2])] == [
            {"id": "m", "name": "r0"},
            {"id": "m", "name": "r2"},
        ]
        assert by_id[ids[0]].unreadable is None and by_id[ids[2]].unreadable is None
        (fetched,) = alice.remote.fetch([ids[1]])
        assert fetched.unreadable == bad.unreadable and fetched.meta == {}

    def test_users_see_only_their_own_rows(self, alice: Writer, bob: Writer) -> None:
        a, _ = alice.create(path="same.yaml", content="alice: 1\n")
        b, _ = bob.create(path="SAME.yaml", content="bob: 1\n")  # paths are per user
        assert [r.id for r in pull_all(alice.remote)[0]] == [a.id]
        assert [r.id for r in pull_all(bob.remote)[0]] == [b.id]
        assert [v.id for v in verify_all(bob.remote)] == [b.id]

    def test_a_second_device_pulls_and_conflicts(self, alice: Writer, alice2: Writer) -> None:
        c1, _ = alice.create(content="x: 1\n")
        (row,) = pull_all(alice2.remote)[0]
        assert row.content == "x: 1\n" and row.device == "alice-laptop"
        ok = alice2.push_one(alice2.change(c1.id, base_rev=row.rev, content="x: 2\n"))
        assert ok.status == "applied"
        lost = alice.push_one(alice.change(c1.id, base_rev=1, content="x: 3\n"))
        assert lost.reason == "rev_mismatch" and lost.current is not None
        assert lost.current.content == "x: 2\n"

    def test_subscribers_hear_of_writes_by_another_device(
        self, alice: Writer, alice2: Writer
    ) -> None:
        heard = threading.Event()
        unsubscribe = alice2.remote.subscribe(heard.set)
        try:
            alice.create()
            assert heard.wait(self.hint_timeout_s)
        finally:
            unsubscribe()
