"""Pull safety under commit-order skew: a puller never skips a row that commits late.

The mechanism (docs/sync-protocol.md, "Pull safety"): every writer of an owner's rows takes that
owner's transaction-scoped advisory lock before it draws a seq, so within one owner seq order is
commit order, and a pull (which sees one owner's rows only) can never pass a seq that a still-open
transaction will later commit below.

``test_naive_sequence_skips_a_late_commit`` shows the hazard on a plain table, so the other tests
are known to be able to fail.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .helpers import Api, Db, change, wait_for

pytestmark = pytest.mark.cloud

PUSHERS = 8
TXS_PER_PUSHER = 20
CHANGES_PER_TX = 15


def _waiting_on_advisory_lock(db: Db) -> Callable[[], bool]:
    def check() -> bool:
        with psycopg.connect(db.superuser_dsn, autocommit=True) as conn:
            row = conn.execute(
                "select count(*) from pg_locks where locktype = 'advisory' and not granted"
            ).fetchone()
        return bool(row and row[0] > 0)

    return check


def test_naive_sequence_skips_a_late_commit(db: Db) -> None:
    """The hazard: seq drawn from a plain sequence, committed out of order, pulled by cursor."""
    table = f"naive_{uuid.uuid4().hex[:8]}"
    setup = psycopg.connect(db.superuser_dsn, autocommit=True)
    t1 = psycopg.connect(db.superuser_dsn, autocommit=True)
    t2 = psycopg.connect(db.superuser_dsn, autocommit=True)
    try:
        setup.execute(f"create table public.{table} (seq bigserial primary key, v text)")
        with t1.transaction():
            t1.execute(f"insert into public.{table} (v) values ('early seq, late commit')")
            with t2.transaction():
                t2.execute(f"insert into public.{table} (v) values ('late seq, early commit')")
            seen = setup.execute(f"select seq from public.{table} where seq > 0").fetchall()
            cursor = max(r[0] for r in seen)
        missed = setup.execute(f"select v from public.{table} where seq > %s", (cursor,)).fetchall()
        everything = setup.execute(f"select count(*) from public.{table}").fetchone()
        assert missed == [] and everything == (2,)  # the late commit is never pulled
    finally:
        setup.execute(f"drop table if exists public.{table}")
        for conn in (setup, t1, t2):
            conn.close()


@pytest.mark.parametrize("first_writer", ["push_changes", "direct_insert"])
def test_a_second_writer_waits_until_the_first_commits(db: Db, first_writer: str) -> None:
    """The same choreography as the naive test, on blueprints: the late commit is not skipped."""
    uid = db.new_user()
    first, second, puller = db.api(uid), db.api(uid), db.api(uid)
    cursor = puller.pull(0)["next"]
    early = change(1, path="early.yaml")
    late = change(2, path="late.yaml")
    second_result: list[Any] = []
    errors: list[BaseException] = []

    def push_second() -> None:
        try:
            second_result.extend(second.push([late], "dev-2"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=push_second)
    try:
        with first.transaction() as conn:
            if first_writer == "push_changes":
                conn.execute("select public.push_changes(%s, 'dev-1')", (Jsonb([early]),))
            else:
                conn.execute(
                    "insert into public.blueprints (id, path, content, meta, content_hash, rev,"
                    " seq, device) values (%s, %s, '', '{}', 'h', 0, 0, 'dev-1')",
                    (early["id"], early["path"]),
                )
            thread.start()
            wait_for(_waiting_on_advisory_lock(db), "the second writer to block")
            assert puller.pull(cursor)["changes"] == []  # neither is visible yet
        # The first writer has committed; only now can the second draw its seq.
    finally:
        if thread.ident is not None:
            thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    page = puller.pull(cursor)
    assert [r["id"] for r in page["changes"]] == [early["id"], late["id"]]
    assert page["changes"][0]["seq"] < page["changes"][1]["seq"] == second_result[0]["seq"]


class _Pusher(threading.Thread):
    """Pushes batches for one user; sleeps inside each transaction after its seqs are drawn."""

    def __init__(
        self, api: Api, device: str, seed: int, txs: int, committed: threading.Event
    ) -> None:
        super().__init__(name=f"pusher-{device}")
        self.api, self.device, self.txs = api, device, txs
        self.committed = committed
        self.rng = random.Random(seed)
        self.mine: dict[str, dict[str, Any]] = {}  # id -> last applied change (+ rev)
        self.op_id = 0
        self.applied = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(self.txs):
                self._one_transaction()
        except BaseException as exc:
            self.error = exc

    def _next_change(self, taken: set[str]) -> dict[str, Any]:
        self.op_id += 1
        choices = [rid for rid, c in self.mine.items() if rid not in taken]
        roll = self.rng.random()
        if choices and roll < 0.3:
            rid = self.rng.choice(choices)
            prev = self.mine[rid]
            return change(
                self.op_id,
                rid,
                base_rev=prev["rev"],
                path=prev["path"],
                content=f"edit {self.op_id}\n",
                deleted=roll < 0.1,
            )
        return change(self.op_id, path=f"{self.device}/{self.op_id}.yaml")

    def _one_transaction(self) -> None:
        taken: set[str] = set()
        batch = []
        for _ in range(CHANGES_PER_TX):
            c = self._next_change(taken)
            taken.add(c["id"])
            batch.append(c)
        with self.api.transaction() as conn:
            row = conn.execute(
                "select public.push_changes(%s, %s)", (Jsonb(batch), self.device)
            ).fetchone()
            # The skew window: seqs are drawn, the commit comes later.
            conn.execute("select pg_sleep(%s)", (self.rng.uniform(0, 0.004),))
        self.committed.set()  # wake the puller, as a realtime hint would
        assert row is not None
        for c, res in zip(batch, row[0], strict=True):
            assert res["status"] == "applied", res
            self.mine[c["id"]] = {**c, "rev": res["rev"]}
            self.applied += 1


class _Puller(threading.Thread):
    """Pulls after every commit hint until told to stop, then drains; checks order as it goes.

    Other pushers are mid-transaction (seqs drawn, not committed) during most pulls.
    """

    def __init__(self, api: Api, stop: threading.Event, committed: threading.Event) -> None:
        super().__init__(name="puller")
        self.api, self.stop, self.committed = api, stop, committed
        self.cursor = 0
        self.state: dict[str, tuple[int, str, bool]] = {}
        self.pulls = 0
        self.rows = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.committed.wait(timeout=1.0)
                self.committed.clear()
                self._pull_all()
            self._pull_all()  # after the last commit
        except BaseException as exc:
            self.error = exc

    def _pull_all(self) -> None:
        while True:
            page = self.api.pull(self.cursor, 200)
            self.pulls += 1
            assert page["reset_required"] is False
            for row in page["changes"]:
                assert row["seq"] > self.cursor, "seq went backwards"
                prev = self.state.get(row["id"])
                assert prev is None or row["rev"] > prev[0], "rev went backwards or repeated"
                self.state[row["id"]] = (row["rev"], row["content_hash"], row["deleted"])
                self.cursor = row["seq"]
                self.rows += 1
            assert page["next"] == self.cursor
            if not page["more"]:
                return


def test_concurrent_pushers_with_skewed_commits_never_make_the_puller_skip(db: Db) -> None:
    alice, bob = db.new_user(), db.new_user()
    stop, committed = threading.Event(), threading.Event()
    puller = _Puller(db.api(alice), stop, committed)
    pushers = [
        _Pusher(db.api(alice), f"a{i}", i, TXS_PER_PUSHER, committed) for i in range(PUSHERS)
    ]
    # Another owner's pushers interleave the global sequence (gaps in alice's seqs).
    pushers += [
        _Pusher(db.api(bob), f"b{i}", 100 + i, TXS_PER_PUSHER // 4, committed) for i in (0, 1)
    ]
    puller.start()
    for p in pushers:
        p.start()
    for p in pushers:
        p.join(timeout=120)
    stop.set()
    puller.join(timeout=60)
    assert not any(t.is_alive() for t in [puller, *pushers])
    assert [p.error for p in pushers] == [None] * len(pushers)
    assert puller.error is None

    alice_applied = sum(p.applied for p in pushers[:PUSHERS])
    assert alice_applied == PUSHERS * TXS_PER_PUSHER * CHANGES_PER_TX
    server = {
        str(r[0]): (r[1], r[2], r[3])
        for r in db.api(alice).rows("select id, rev, content_hash, deleted from public.blueprints")
    }
    assert puller.state == server
    expected = {rid: c["rev"] for p in pushers[:PUSHERS] for rid, c in p.mine.items()}
    assert {rid: v[0] for rid, v in puller.state.items()} == expected
    assert puller.pulls > 2  # it really pulled while the pushers were running
