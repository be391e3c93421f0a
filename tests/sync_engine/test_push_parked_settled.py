"""A parked push whose change stopped being one leaves the quarantine.

A push the server refused is parked at the op id it failed at (``sync_quarantine``); a later
edit un-parks it, and an accepted push drops the entry. A change can also stop being one
without any push: a blueprint never synced is deleted (its delete settles without a call), or a
pulled row is taken over the local copy (a remote-wins merge, a keep-both's server side). The
entry stayed for good then: `localstore status` showed a blueprint needing attention (gone, or
equal to the server) until someone ran ``--retry-quarantined``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sync.memory_remote import MemoryServer
from sync.remote import Change, PushResult

from .conftest import Device, assert_converged, converge, refuse_id


def test_a_refused_create_deleted_before_it_synced_leaves_the_quarantine(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_device("a")
    refused = a.store.save("mine/refused", "v: 1\n").id
    refuse_id(a, refused, monkeypatch)
    assert a.sync().quarantined == 1
    a.store.delete(refused)  # never on the server: its delete settles without a push
    pushes = a.remote.calls.get("push", 0)
    report = a.sync()
    assert a.remote.calls.get("push", 0) == pushes and report.quarantined == 0
    assert a.engine.quarantined() == []
    status = a.engine.status()
    assert status.quarantined == 0 and status.pending == 0 and not status.needs_attention


def test_a_refused_edit_the_server_row_replaced_leaves_the_quarantine(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = make_device("a", policy="prefer-remote"), make_device("b")
    ident = a.store.save("x/one", "v: 1\n").id
    converge(a, b)
    a.store.save("x/one", "v: 2\n")
    real = a.remote.push
    refuse_id(a, ident, monkeypatch)
    assert a.sync().quarantined == 1
    monkeypatch.setattr(a.remote, "push", real)
    b.store.save("x/one", "v: 3\n")
    b.sync()
    a.sync()  # the pulled row wins over the parked edit: the local copy is the server's now
    assert a.text(ident) == "v: 3\n"
    assert a.engine.quarantined() == []
    assert a.engine.status().quarantined == 0
    assert_converged(server, a, b)


def test_a_refused_edit_kept_as_a_conflict_copy_leaves_the_original_unparked(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep-both: the original id takes the server's row (clean), the parked edit lives on in
    the copy, which is pushed as a new blueprint. Only a refusal of the copy may park it."""
    a, b = make_device("a", policy="keep-both"), make_device("b")
    ident = a.store.save("x/one", "v: 1\n").id
    converge(a, b)
    a.store.save("x/one", "v: 2\n")
    real = a.remote.push

    def push(changes: list[Change], *, device: str) -> list[PushResult]:
        # Refuses the edit of the original once; everything else goes to the server.
        if any(c.id == ident for c in changes) and not refused:
            refused.append(ident)
            answers = iter(real([c for c in changes if c.id != ident], device=device))
            return [
                PushResult(c.op_id, c.id, "rejected", code="invalid_path", message="refused")
                if c.id == ident
                else next(answers)
                for c in changes
            ]
        return real(changes, device=device)

    refused: list[str] = []
    monkeypatch.setattr(a.remote, "push", push)
    assert a.sync().quarantined == 1
    b.store.save("x/one", "v: 3\n")
    b.sync()
    converge(a, b)
    assert a.text(ident) == "v: 3\n"
    assert len(a.engine.conflicts()) == 1
    assert a.engine.quarantined() == []
    assert_converged(server, a, b)
