"""Pulled rows and their recovery paths: parked rows whose server row goes away, and the full
reconcile after a tombstone horizon breach meeting a file that does not parse (MemoryRemote)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change

from .conftest import Device, converge


def _raw_change(
    op: int,
    ident: str,
    path: str,
    content: str,
    *,
    base_rev: int | None = None,
    deleted: bool = False,
) -> Change:
    # Another client's write (not a LocalStore device): anything the server takes.
    meta = {"id": ident, "name": "x", "created": "", "modified": ""}
    return Change(op, ident, base_rev, path, content, meta, "0" * 64, deleted)


def test_a_parked_row_deleted_on_the_server_is_no_longer_parked(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """A row this device could not store (invalid YAML from another client) is parked; once the
    server deletes it, nothing is left to store or to retry.

    The tombstone was applied as "nothing here to delete" without a record, so the entry stayed
    listed, counted as quarantined and needing attention for good (until a person ran
    ``--retry-quarantined``), although a newer live row of the id does drop it.
    """
    raw = MemoryRemote(server, user="u")
    bad = str(uuid.uuid4())
    (made,) = raw.push(
        [_raw_change(1, bad, "p/bad.blueprint.yaml", "a: [unclosed\n")], device="raw"
    )
    b = make_device("b")
    assert b.sync().quarantined == 1
    assert [(q.id, q.direction) for q in b.engine.quarantined()] == [(bad, "pull")]

    (gone,) = raw.push(
        [_raw_change(2, bad, "p/bad.blueprint.yaml", "", base_rev=made.rev, deleted=True)],
        device="raw",
    )
    assert gone.status == "applied"
    report = b.sync()
    assert report.pulled == 1 and report.quarantined == 0
    assert b.engine.quarantined() == []
    status = b.engine.status()
    assert status.quarantined == 0 and not status.needs_attention
    assert not b.store.exists(bad)
    assert b.engine.verify().clean


def test_a_purged_delete_does_not_remove_a_file_that_does_not_parse(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """b is editing a blueprint (its file does not parse yet) while a deletes it; the tombstone is
    purged before b syncs, so b's cycle is a full reconcile.

    A delta pull parks such a delete and leaves the file alone (Applier._wait_for_parse: an edit
    in progress beats the delete once it parses). The full reconcile deleted the file: the
    person's half-typed edit vanished from under their editor (its bytes only in
    data/recovered/). It is kept now, and goes up again as new once it parses.
    """
    a, b = make_device("a"), make_device("b")
    x = a.store.save("s/x", "v: 1\n").id
    converge(a, b)
    f = b.home / "blueprints/s/x.blueprint.yaml"
    f.write_text("v: [2  # half-typed\n")
    b.store.reconcile()
    assert b.engine.status().flagged == 1
    a.store.delete(x)
    a.sync()
    assert a.remote.purge_tombstones() == 1

    report = b.sync()
    assert report.reset
    assert f.read_text() == "v: [2  # half-typed\n"  # left exactly as it is
    assert any("s/x.blueprint.yaml" in e and "does not parse" in e for e in report.errors)
    status = b.engine.status()
    assert status.flagged == 1 and status.needs_attention and status.pending == 0

    # Fixed: the edit beats the delete, and goes up as the blueprint again.
    f.write_text("v: 2\n")
    b.store.reconcile()
    converge(a, b)
    assert a.store.load(x).content == "v: 2\n"
    assert b.engine.verify().clean and a.engine.verify().clean


def test_a_parked_row_whose_tombstone_was_purged_is_no_longer_parked(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """As above, but the tombstone is purged before this device pulls it: the full reconcile
    learns of the delete only from the row's absence, and looked only at ids it held a base for
    (a parked row has none), so the entry stayed for good."""
    raw = MemoryRemote(server, user="u")
    bad = str(uuid.uuid4())
    (made,) = raw.push(
        [_raw_change(1, bad, "p/bad.blueprint.yaml", "a: [unclosed\n")], device="raw"
    )
    b = make_device("b")
    assert b.sync().quarantined == 1
    raw.push(
        [_raw_change(2, bad, "p/bad.blueprint.yaml", "", base_rev=made.rev, deleted=True)],
        device="raw",
    )
    assert raw.purge_tombstones() == 1

    report = b.sync()
    assert report.reset and report.quarantined == 0
    assert b.engine.quarantined() == []
    assert not b.engine.status().needs_attention
