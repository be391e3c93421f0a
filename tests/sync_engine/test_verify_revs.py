"""``verify`` compares each clean blueprint's base revision with the server's (MemoryRemote).

The content hash leaves the path out, so a rename this device never applied matched, and a copy
left at the old path was reported clean.
"""

from __future__ import annotations

from collections.abc import Callable

from sync import _state as st
from sync.memory_remote import MemoryServer

from .conftest import Device, converge


def test_a_missed_rename_is_a_difference(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    x = a.store.save("s/x", "v: 1\n").id
    converge(a, b)
    a.store.move(x, "s/renamed")
    a.sync()
    # A row b never applied (the fault verify is there to find): its cursor passed the rename.
    with server.lock:
        seq = server.rows[x].row.seq
        rev = server.rows[x].row.rev
    with b.store.index.write() as cur:
        st.set_state(cur, "cursor", str(seq))
    b.sync()
    assert b.store.row(x).path == "s/x.blueprint.yaml"

    report = b.engine.verify()
    assert [(d["id"], d["kind"], d["server_rev"], d["base_rev"]) for d in report.differences] == [
        (x, "rev_differs", rev, rev - 1)
    ]
    assert not report.differences[0]["pending"]
    assert a.engine.verify().clean


def test_converged_devices_verify_clean_after_renames_and_merges(
    make_device: Callable[..., Device],
) -> None:
    a, b = make_device("a"), make_device("b")
    x = a.store.save("s/x", "v: 1\nw: 1\n").id
    converge(a, b)
    a.store.move(x, "s/y")
    b.store.save("s/x", "v: 1\nw: 2\n", id=x)
    converge(a, b)
    assert a.store.row(x).path == b.store.row(x).path
    assert a.engine.verify().clean and b.engine.verify().clean
