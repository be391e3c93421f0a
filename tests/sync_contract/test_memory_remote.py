"""MemoryRemote runs the shared contract, plus its own fault-injection and hint rules."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest

from sync.errors import AuthExpiredError, ProtocolError, SyncError, TransientError
from sync.memory_remote import MemoryRemote, MemoryServer, jsonb_text_bytes
from sync.remote import Remote

from .contract import RemoteContract, Writer, pull_all


class MemoryFactory:
    """Fresh users on one fresh MemoryServer per test."""

    def __init__(self) -> None:
        self.server = MemoryServer()

    def make_remote(self, user_label: str) -> Remote:
        return MemoryRemote(self.server, user=user_label)

    def purge(self, remote: Remote) -> int:
        assert isinstance(remote, MemoryRemote)
        return remote.purge_tombstones()

    def poison_meta(self, remote: Remote, row_id: str, kind: str) -> None:
        deep: list[Any] = []
        for _ in range(2000):
            deep = [deep]
        value = {"huge_integer": 10**5000, "deep": deep, "infinite": float("inf")}[kind]
        owned = self.server.rows[row_id]
        owned.row = replace(owned.row, meta={**owned.row.meta, "n": value})


@pytest.fixture
def remote_factory() -> MemoryFactory:
    return MemoryFactory()


class TestMemoryRemoteContract(RemoteContract):
    """The contract, in process."""


@pytest.fixture
def server() -> MemoryServer:
    return MemoryServer()


@pytest.fixture
def dev(server: MemoryServer) -> Writer:
    return Writer(MemoryRemote(server, user="u"), "dev-1")


def test_memory_remote_is_a_remote() -> None:
    assert isinstance(MemoryRemote(), Remote)


def test_lost_response_is_applied_once_and_replays(dev: Writer) -> None:
    remote = dev.remote
    assert isinstance(remote, MemoryRemote)
    batch = [dev.change(path="a.yaml"), dev.change(path="b.yaml")]
    remote.drop_response_next()
    with pytest.raises(TransientError) as info:
        dev.push(*batch)
    assert info.value.action == "retry"
    rows, cursor = pull_all(remote)
    assert sorted(r.path for r in rows) == ["a.yaml", "b.yaml"]
    results = dev.push(*batch)
    assert [(r.status, r.rev) for r in results] == [("applied", 1), ("applied", 1)]
    assert [r.seq for r in results] == [r.seq for r in rows]
    assert remote.pull(cursor).changes == []


def test_fail_next_raises_before_anything_happens(dev: Writer) -> None:
    remote = dev.remote
    assert isinstance(remote, MemoryRemote)
    remote.fail_next(2, AuthExpiredError("JWT expired", code="PGRST303"), method="push")
    change = dev.change()
    for _ in range(2):
        with pytest.raises(AuthExpiredError):
            dev.push(change)
    assert remote.pull(0).changes == []  # other methods are not affected
    assert dev.push_one(change).status == "applied"
    assert remote.calls == {"push": 3, "pull": 1}


def test_fail_next_defaults_to_a_transient_fault_on_any_call(dev: Writer) -> None:
    remote = dev.remote
    assert isinstance(remote, MemoryRemote)
    remote.fail_next()
    with pytest.raises(TransientError):
        remote.server_info()
    assert remote.server_info().protocol == 1


def test_a_server_with_a_smaller_max_batch_announces_it_and_refuses_more_whole(
    server: MemoryServer, dev: Writer
) -> None:
    """What a server restored or upgraded with another limit does (the SQL's 22023 check, as
    SupabaseRemote maps it): the engine's tests lower the limit under a running engine."""
    server.max_batch, server.protocol = 2, 7
    info = dev.remote.server_info()
    assert (info.protocol, info.max_batch) == (7, 2)
    with pytest.raises(ProtocolError) as refused:
        dev.push(*(dev.change(path=f"{n}.yaml") for n in range(3)))
    assert (refused.value.code, refused.value.action) == ("22023", "tell_user")
    assert "too many changes" in refused.value.message
    assert dev.remote.pull(0).changes == []  # nothing of the call was applied
    assert [r.status for r in dev.push(dev.change(), dev.change())] == ["applied", "applied"]


def test_subscription_hints_other_handles_synchronously(server: MemoryServer) -> None:
    a = Writer(MemoryRemote(server, user="u"), "a")
    b = MemoryRemote(server, user="u")
    other_user = MemoryRemote(server, user="v")
    heard: list[str] = []
    unsub_b = b.subscribe(lambda: heard.append("b"))
    a.remote.subscribe(lambda: heard.append("self"))
    other_user.subscribe(lambda: heard.append("other-user"))
    a.create()
    assert heard == ["b"]  # not the writer itself, not another user
    a.push_one(a.change(base_rev=4))  # a conflict writes nothing: no hint
    assert heard == ["b"]
    unsub_b()
    a.create()
    assert heard == ["b"]


def test_a_hint_callback_may_pull_at_once(server: MemoryServer) -> None:
    a = Writer(MemoryRemote(server, user="u"), "a")
    b = MemoryRemote(server, user="u")
    pulled: list[int] = []
    b.subscribe(lambda: pulled.append(len(b.pull(0).changes)))
    a.push(a.change(), a.change())
    assert pulled == [2]  # called after the whole batch, outside the lock


def test_close_drops_subscriptions_and_refuses_calls(server: MemoryServer) -> None:
    a = Writer(MemoryRemote(server, user="u"), "a")
    b = MemoryRemote(server, user="u")
    heard = threading.Event()
    b.subscribe(heard.set)
    b.close()
    b.close()
    a.create()
    assert not heard.is_set()
    with pytest.raises(SyncError):
        b.pull(0)


def test_server_keeps_every_revision(dev: Writer, server: MemoryServer) -> None:
    c, _ = dev.create(content="a: 1\n")
    dev.push_one(dev.change(c.id, base_rev=1, content="a: 2\n"))
    dev.push_one(dev.change(c.id, base_rev=2, deleted=True))
    history = server.history(c.id)
    assert [(r.rev, r.content, r.deleted) for r in history] == [
        (1, "a: 1\n", False),
        (2, "a: 2\n", False),
        (3, "", True),
    ]


def test_purge_up_to_a_seq_keeps_newer_tombstones(dev: Writer, server: MemoryServer) -> None:
    tombs = []
    for i in range(3):
        c, _ = dev.create(path=f"{i}.yaml")
        tombs.append(dev.push_one(dev.change(c.id, base_rev=1, path=c.path, deleted=True)))
    assert server.purge_tombstones(max_seq=tombs[1].seq) == 2
    page = dev.remote.pull(0)
    assert page.reset_required and page.horizon == tombs[1].seq
    rows, _ = pull_all(dev.remote, page.horizon)
    assert [r.seq for r in rows] == [tombs[2].seq]


def test_meta_is_copied_in_and_out(dev: Writer) -> None:
    meta: dict[str, Any] = {"id": "m", "tags": ["a"]}
    dev.create(meta=meta)
    meta["tags"].append("mutated")
    (row,) = pull_all(dev.remote)[0]
    assert row.meta["tags"] == ["a"]
    row.meta["tags"].append("again")
    assert pull_all(dev.remote)[0][0].meta["tags"] == ["a"]


def test_a_lowered_pull_budget_pages_by_bytes_as_the_sql_does(
    dev: Writer, server: MemoryServer
) -> None:
    # pull_changes' rule with a budget a test can reach with small rows: a row goes while the
    # ones already taken hold less than the budget, the first always.
    made = [dev.create(path=f"f{i}.yaml", content="x" * 10)[0] for i in range(5)]
    one = len(made[0].content) + jsonb_text_bytes(made[0].meta)
    server.pull_page_bytes = 2 * one
    sizes = []
    cursor = 0
    while True:
        page = dev.remote.pull(cursor)
        sizes.append(len(page.changes))
        cursor = page.next
        if not page.more:
            break
    assert sizes == [2, 2, 1]
    server.pull_page_bytes = 2 * one + 1  # two rows hold less than this: a third goes
    assert len(dev.remote.pull(0).changes) == 3
    server.pull_page_bytes = 1  # one row alone is over it, and still comes
    page = dev.remote.pull(0, limit=3)
    assert [r.id for r in page.changes] == [made[0].id] and page.more
