"""Pulled rows and their recovery paths: parked rows whose server row goes away, and the full
reconcile after a tombstone horizon breach (MemoryRemote)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change

from .conftest import Device


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
