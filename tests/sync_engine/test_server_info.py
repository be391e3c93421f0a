"""The server's protocol and limits are asked again when the server may have changed.

An engine asked ``server_info`` once and used its answer for good. A daemon runs one engine for
months: a server that came back from an outage upgraded, or restored with a smaller
``max_batch``, then refused every push of a full batch (22023, "too many changes") until the
daemon was restarted, and a server speaking another protocol got pushes. The memory server plays
that server (``MemoryServer.max_batch`` / ``protocol``: announced and enforced).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sync.engine import SyncStatus
from sync.errors import OfflineError, ProtocolError, RemoteConfigError
from sync.memory_remote import MemoryServer

from .conftest import Device, server_snapshot


def _save(dev: Device, count: int, prefix: str = "n") -> dict[str, str]:
    return {dev.store.save(f"{prefix}/b{n}", f"v: {n}\n").id: f"v: {n}\n" for n in range(count)}


def _outage(dev: Device) -> None:
    """One cycle that fails as it does while the cloud cannot be reached."""
    dev.remote.fail_next(exc=OfflineError("connection refused"))
    with pytest.raises(OfflineError):
        dev.sync()


def _all_pushed(server: MemoryServer, dev: Device, saved: dict[str, str]) -> None:
    """Every saved blueprint is on the server as saved; nothing waits or is parked."""
    on_server = {rid: content for rid, (_, content) in server_snapshot(server).items()}
    assert {rid: on_server.get(rid) for rid in saved} == saved
    status = dev.engine.status()
    assert (status.pending, status.quarantined, status.last_error) == (0, 0, None)
    assert dev.engine.quarantined() == []


def test_server_info_is_asked_once_while_nothing_fails(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a", batch_size=4)
    for round_ in range(3):
        saved = _save(a, 9, prefix=f"r{round_}")
        assert a.sync().pushed == 9
        _all_pushed(server, a, saved)
    assert a.remote.calls["server_info"] == 1  # not per push, nor per cycle


def test_a_smaller_max_batch_after_an_outage_is_used_without_a_restart(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a")
    before = _save(a, 2, prefix="before")
    assert a.sync().pushed == 2
    _all_pushed(server, a, before)
    assert a.engine.batch_size == a.store.settings.sync_batch
    saved = _save(a, 8)
    _outage(a)
    server.max_batch = 3  # restored with another configuration while it was down
    pushes = a.remote.calls["push"]
    report = a.sync()
    assert report.pushed == 8
    _all_pushed(server, a, saved)
    assert a.engine.batch_size == 3
    assert a.remote.calls["server_info"] == 2  # once more, after the outage
    assert a.remote.calls["push"] - pushes == 3  # 3 + 3 + 2


def test_a_limit_raised_again_is_used_again(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The engine caps what it was asked for by what the server says now, not by the smallest
    limit it ever heard."""
    server.max_batch = 2
    a = make_device("a", batch_size=50)
    small = _save(a, 3, prefix="small")
    assert a.sync().pushed == 3
    _all_pushed(server, a, small)
    assert a.engine.batch_size == 2
    _outage(a)
    server.max_batch = 500
    saved = _save(a, 7)
    calls = a.remote.calls["push"]
    assert a.sync().pushed == 7
    _all_pushed(server, a, saved)
    assert (a.engine.batch_size, a.remote.calls["push"] - calls) == (50, 1)


def _watch(dev: Device) -> list[SyncStatus]:
    """Every status the engine shows from now on (what a UI or `localstore status` would see)."""
    seen: list[SyncStatus] = []
    dev.engine.subscribe_status(seen.append)
    return seen


def test_a_limit_lowered_under_a_running_engine_is_used_within_the_same_cycle(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """No outage, no new session: the push refused as too many changes (22023) makes the engine
    ask server_info again at once and push in batches of the new limit, in the same cycle,
    without showing an error (it cost one failed cycle, ~60 s shown as an error, before)."""
    a = make_device("a")
    assert a.sync().pushed == 0
    server.max_batch = 3  # an operator lowers the limit under the running engine
    saved = _save(a, 8)
    seen = _watch(a)
    pushes = a.remote.calls.get("push", 0)
    report = a.sync()
    assert (report.pushed, report.errors, report.quarantined) == (8, [], 0)
    _all_pushed(server, a, saved)
    assert a.engine.batch_size == 3
    assert a.remote.calls["server_info"] == 2  # asked again once, on the refusal
    assert a.remote.calls["push"] - pushes == 1 + 3  # the refused 8, then 3 + 3 + 2
    assert [s for s in seen if s.state in ("error", "offline") or s.last_error] == []
    # The next cycles use the new limit without asking or being refused again.
    more = _save(a, 4, prefix="more")
    pushes = a.remote.calls["push"]
    assert a.sync().pushed == 4
    _all_pushed(server, a, more)
    assert (a.remote.calls["server_info"], a.remote.calls["push"] - pushes) == (2, 2)


def test_a_refusal_again_under_the_new_limit_fails_the_cycle_without_a_loop(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """Asked once per cycle: a server that refuses the batches of its own new limit too fails
    the cycle as before (nothing applied of the refused call, nothing parked); the next cycle
    goes through once the server takes them."""
    a = make_device("a")
    assert a.sync().pushed == 0
    server.max_batch = 3
    saved = _save(a, 5)
    # The server refuses the full batch, then the first batch of its own new limit too.
    refusal = ProtocolError("push_changes: too many changes [22023]", code="22023")
    a.remote.fail_next(2, exc=refusal, method="push")
    pushes = a.remote.calls.get("push", 0)
    with pytest.raises(ProtocolError, match="too many changes"):
        a.sync()
    assert a.remote.calls["push"] - pushes == 2  # the full batch, one of the new limit: no loop
    assert a.remote.calls["server_info"] == 2
    assert server_snapshot(server) == {}
    status = a.engine.status()
    assert (status.pending, status.quarantined, status.state) == (5, 0, "error")
    assert a.sync().pushed == 5
    _all_pushed(server, a, saved)


def test_another_22023_refusal_is_not_pushed_again(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """22023 also means a bad argument (the device name): when the limit asked again still takes
    the refused batch, the limit was not the cause and the call is not sent again."""
    a = make_device("a")
    assert a.sync().pushed == 0
    saved = _save(a, 4)
    a.remote.fail_next(
        exc=ProtocolError("push_changes: device must be a non-empty string [22023]", code="22023"),
        method="push",
    )
    pushes = a.remote.calls.get("push", 0)
    with pytest.raises(ProtocolError, match="device must be"):
        a.sync()
    assert a.remote.calls["push"] - pushes == 1
    assert a.remote.calls["server_info"] == 2  # asked, and it still takes 4 (or more)
    status = a.engine.status()
    assert (status.pending, status.quarantined) == (4, 0)
    assert a.sync().pushed == 4
    _all_pushed(server, a, saved)


def test_another_protocol_after_an_outage_is_refused_and_nothing_is_sent(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a")
    assert a.sync().pushed == 0
    saved = _save(a, 3)
    _outage(a)
    server.protocol = 2  # upgraded while it was down
    pushes = a.remote.calls.get("push", 0)
    with pytest.raises(RemoteConfigError, match="the server speaks sync protocol 2, this client 1"):
        a.sync()
    assert a.remote.calls.get("push", 0) == pushes and server_snapshot(server) == {}
    status = a.engine.status()
    assert (status.pending, status.quarantined, status.state) == (3, 0, "error")
    assert status.last_error is not None and "protocol 2" in status.last_error
    # The operator deploys the matching schema (here: the server speaks 1 again).
    server.protocol = 1
    assert a.sync().pushed == 3
    _all_pushed(server, a, saved)
