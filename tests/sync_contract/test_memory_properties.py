"""Hypothesis state machine: MemoryRemote against a small reference model of the protocol.

Two devices of one user (and a bystander user) push random batches of creates, updates, deletes
and moves, with stale bases, reused and case-folded paths and bad paths, replay old batches and
purge tombstones, and push against the revs of purged rows whose ids were created again. After
every step the model's prediction, pull, verify and fetch must agree.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sync.memory_remote import MemoryRemote, MemoryServer, jsonb_text_bytes
from sync.remote import Change, PushResult, ServerRow

from .contract import pull_all, verify_all

PATHS = ["a.yaml", "A.yaml", "b/c.yaml", "B/C.yaml", "d.yaml", "../bad.yaml"]
DEVICES = ["d1", "d2"]


@dataclass
class ModelRow:
    rev: int
    seq: int
    path: str
    content: str
    deleted: bool
    device: str


class RemoteMachine(RuleBasedStateMachine):
    """Pushes random batches and checks every result against the model."""

    def __init__(self) -> None:
        super().__init__()
        self.server = MemoryServer()
        self.remotes = {d: MemoryRemote(self.server, user="u") for d in DEVICES}
        self.bystander = MemoryRemote(self.server, user="other")
        self.rows: dict[str, ModelRow] = {}
        self.ids: list[str] = []
        self.ops = {d: itertools.count(1) for d in DEVICES}
        self.sent: list[tuple[str, list[Change], list[PushResult]]] = []
        self.last_seq = 0
        self.horizon = 0
        # id -> the highest rev a purged row of that id had: a base at or below it is a stale
        # device's, and never a fast-forward onto the row created again (migration 20261122001400).
        self.purged_revs: dict[str, int] = {}
        self.bystander_id = str(uuid.uuid4())
        self.bystander.push([_change(1, self.bystander_id, None, "a.yaml", "x")], device="z")

    # -- rules -----------------------------------------------------------------------------------

    @rule(
        device=st.sampled_from(DEVICES),
        specs=st.lists(
            st.tuples(
                st.sampled_from(
                    ["create", "update", "delete", "stale", "foreign", "recreate", "purged-base"]
                ),
                st.integers(0, 50),
                st.sampled_from(PATHS),
                st.sampled_from(["x: 1\n", "x: 2\n", "# c\ny: 3\n"]),
            ),
            min_size=1,
            max_size=6,
        ),
    )
    def push_batch(self, device: str, specs: list[tuple[str, int, str, str]]) -> None:
        changes = [self._make(device, *spec) for spec in specs]
        results = self.remotes[device].push(changes, device=device)
        assert [r.op_id for r in results] == [c.op_id for c in changes]
        for change, result in zip(changes, results, strict=True):
            self._check(change, result, device)
        self.sent.append((device, changes, results))

    @precondition(lambda self: bool(self.sent))
    @rule(pick=st.integers(0, 10_000))
    def replay(self, pick: int) -> None:
        device, changes, results = self.sent[pick % len(self.sent)]
        before = self.server.seq
        assert self.remotes[device].push(changes, device=device) == results
        assert self.server.seq == before

    @rule()
    def purge(self) -> None:
        tombs = [r.seq for r in self.rows.values() if r.deleted]
        count = self.remotes["d1"].purge_tombstones()
        assert count == len(tombs)
        if tombs:
            self.horizon = max(self.horizon, *tombs)
        for i, r in self.rows.items():
            if r.deleted:
                self.purged_revs[i] = max(self.purged_revs.get(i, 0), r.rev)
        self.rows = {i: r for i, r in self.rows.items() if not r.deleted}

    # -- model -----------------------------------------------------------------------------------

    def _make(self, device: str, kind: str, pick: int, path: str, content: str) -> Change:
        op = next(self.ops[device])
        if kind == "foreign":
            return _change(op, self.bystander_id, 1, path, content)
        if kind == "create" or not self.ids:
            rid = str(uuid.uuid4())
            self.ids.append(rid)
            return _change(op, rid, None, path, content)
        rid = self.ids[pick % len(self.ids)]
        row = self.rows.get(rid)
        rev = row.rev if row else 1
        if kind == "recreate":
            return _change(op, rid, None, path, content)
        if kind == "stale":
            return _change(op, rid, rev + 1 + pick % 3, path, content)
        if kind == "purged-base" and rid in self.purged_revs:
            # What a device that never saw the purge pushes: one of the purged row's revs.
            return _change(op, rid, 1 + pick % self.purged_revs[rid], path, content)
        return _change(op, rid, rev, path, content, deleted=kind == "delete")

    def _predict(self, c: Change) -> tuple[str, str | None]:
        if c.path == "../bad.yaml":
            return "rejected", "invalid_path"
        if c.id == self.bystander_id:
            return "rejected", "not_owner"
        row = self.rows.get(c.id)
        if c.base_rev is None and row is not None:
            return "conflict", "exists"
        if c.base_rev is not None and row is None:
            return "conflict", "missing"
        if c.base_rev is not None and c.base_rev <= self.purged_revs.get(c.id, 0):
            return "conflict", "rev_mismatch"  # never a rev the row created again has
        if row is not None and row.rev != c.base_rev:
            return "conflict", "rev_mismatch"
        if not c.deleted and any(
            i != c.id and not r.deleted and r.path.lower() == c.path.lower()
            for i, r in self.rows.items()
        ):
            return "conflict", "path_taken"
        return "applied", None

    def _check(self, c: Change, result: PushResult, device: str) -> None:
        status, detail = self._predict(c)
        assert result.status == status, (c, result)
        if status == "rejected":
            assert result.code == detail
            return
        if status == "conflict":
            assert result.reason == detail
            if detail in ("exists", "rev_mismatch"):
                assert result.current is not None and result.current.rev == self.rows[c.id].rev
            return
        assert result.seq is not None and result.seq > self.last_seq
        self.last_seq = result.seq
        prev = self.rows.get(c.id)
        # A create starts above the horizon: above every rev a purged row had.
        assert result.rev == (prev.rev + 1 if prev else self.horizon + 1)
        self.rows[c.id] = ModelRow(
            result.rev, result.seq, c.path, "" if c.deleted else c.content, c.deleted, device
        )

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def pull_matches_model(self) -> None:
        remote = self.remotes["d2"]
        if self.horizon:
            assert remote.pull(self.horizon - 1).reset_required
        rows, _ = pull_all(remote, self.horizon, limit=3)
        newer = {i: r for i, r in self.rows.items() if r.seq > self.horizon}
        assert {r.id: _model(r) for r in rows} == newer
        fingerprints = verify_all(remote, limit=2)
        assert [v.id for v in fingerprints] == sorted(self.rows)
        assert all(v.rev == self.rows[v.id].rev for v in fingerprints)
        fetched = remote.fetch([*self.rows, self.bystander_id])
        assert {r.id: _model(r) for r in fetched} == self.rows

    @invariant()
    def live_paths_are_unique_ignoring_case(self) -> None:
        live = [r.path.lower() for r in self.rows.values() if not r.deleted]
        assert len(live) == len(set(live))

    @invariant()
    def bystander_is_untouched(self) -> None:
        (row,) = pull_all(self.bystander)[0]
        assert (row.rev, row.content) == (1, "x")


def _change(
    op: int, rid: str, base: int | None, path: str, content: str, *, deleted: bool = False
) -> Change:
    body = "" if deleted else content
    return Change(
        op,
        rid,
        base,
        path,
        body,
        {"id": rid},
        hashlib.sha256(body.encode()).hexdigest(),
        deleted,
    )


def _model(row: ServerRow) -> ModelRow:
    return ModelRow(row.rev, row.seq, row.path, row.content, row.deleted, row.device)


RemoteMachine.TestCase.settings = settings(settings.get_profile("localstore-sync"))
TestRemoteMachine = RemoteMachine.TestCase


class SmallPagesRemoteMachine(RemoteMachine):
    """The same model through a server whose pull pages, fetch answers and verify pages end after
    a row or two (the default 16 MiB budgets never cut a page of these rows): following ``more``,
    ``next`` and ``rest`` must still give every row exactly once."""

    @initialize(
        pull_bytes=st.sampled_from([1, 100, 250]),
        fetch_bytes=st.sampled_from([1, 100, 250]),
        verify_rows=st.integers(1, 3),
    )
    def small_pages(self, pull_bytes: int, fetch_bytes: int, verify_rows: int) -> None:
        self.server.pull_page_bytes = pull_bytes
        self.server.fetch_page_bytes = fetch_bytes
        self.server.verify_page_rows = verify_rows

    @invariant()
    def pages_are_cut_where_the_budget_says(self) -> None:
        remote = self.remotes["d1"]
        page = remote.pull(self.horizon, limit=1000)
        _assert_cut(page.changes, page.more, self.server.pull_page_bytes)
        newer = sum(1 for r in self.rows.values() if r.seq > self.horizon)
        assert page.more == (len(page.changes) < newer)
        ids = sorted([*self.rows, self.bystander_id])
        answer = remote.fetch_page(ids)
        _assert_cut(answer.rows, bool(answer.rest), self.server.fetch_page_bytes)
        # The ids after the last row are left when rows of this user are (the bystander's and
        # purged ids are never found, so they are left only behind a cut).
        cut = len(answer.rows) < len(self.rows)
        assert answer.rest == ([i for i in ids if i > answer.rows[-1].id] if cut else [])
        verify = remote.verify(None, limit=1000)
        assert len(verify.rows) == min(len(self.rows), self.server.verify_page_rows)


def _assert_cut(rows: list[ServerRow], cut: bool, budget: int) -> None:
    """Every row but the last went while the rows before it held less than the budget, and a
    cut page ends only once the budget is reached (the first row always goes)."""
    # What the SQL counts of a row: octet_length(content) + octet_length(meta::text).
    sizes = [len(r.content.encode("utf-8")) + jsonb_text_bytes(r.meta) for r in rows]
    assert len(rows) <= 1 or sum(sizes[:-1]) < budget
    if cut:
        assert sum(sizes) >= budget


SmallPagesRemoteMachine.TestCase.settings = settings(settings.get_profile("localstore-sync"))
TestSmallPagesRemoteMachine = SmallPagesRemoteMachine.TestCase
