"""Rows another (non-LocalStore) client wrote with a minimal meta (MemoryRemote).

Each device filled the missing ``created``/``modified`` with its own clock at its own save, so
the devices' files (and content hashes: ``created`` is part of the hash) differed from each
other and from the server, and ``sync --verify`` reported every such row as differing, for good.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime

from localstore.blueprint import BlueprintMeta, content_hash
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change

from .conftest import Device, converge


def _foreign(server: MemoryServer, op: int, ident: str, content: str, base: int | None) -> int:
    """Write a row as another client would: a meta with only id and name; its own hash."""
    raw = MemoryRemote(server, user="u")
    meta = {"id": ident, "name": "x"}
    (res,) = raw.push(
        [Change(op, ident, base, "p/x.blueprint.yaml", content, meta, "0" * 64, False)],
        device="other-client",
    )
    assert res.status == "applied" and res.rev is not None
    return res.rev


def _meta_file(d: Device) -> str:
    return (d.home / "blueprints/p/x.blueprint.meta.json").read_text()


def test_every_device_stores_a_minimal_meta_row_with_the_same_bytes(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    ident = str(uuid.uuid4())
    _foreign(server, 1, ident, "v: 1\n", None)
    a = make_device("a")
    a.sync()
    b = make_device("b")
    b.sync()  # later than a: its own clock gave another `created`
    assert _meta_file(a) == _meta_file(b)
    assert a.store.row(ident).content_hash == b.store.row(ident).content_hash
    stored = json.loads(_meta_file(a))
    with server.lock:
        updated_at = server.rows[ident].row.updated_at
    # Filled from the row alone: the server's timestamp of it.
    assert datetime.fromisoformat(stored["created"]) == datetime.fromisoformat(updated_at)
    assert stored["modified"] == stored["created"]
    assert a.engine.verify().clean and b.engine.verify().clean


def test_a_row_with_this_clients_hash_of_its_meta_verifies_clean(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The other client hashed its own meta the way LocalStore does: still clean here."""
    raw = MemoryRemote(server, user="u")
    ident = str(uuid.uuid4())
    meta = {"id": ident, "name": "x"}
    digest = content_hash(b"v: 1\n", BlueprintMeta.from_dict(meta))
    raw.push(
        [Change(1, ident, None, "p/x.blueprint.yaml", "v: 1\n", meta, digest, False)],
        device="other-client",
    )
    a = make_device("a")
    a.sync()
    assert a.engine.verify().clean


def test_minimal_meta_rows_stay_converged_through_edits_on_both_sides(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    ident = str(uuid.uuid4())
    rev = _foreign(server, 1, ident, "v: 1\n", None)
    a, b = make_device("a"), make_device("b")
    converge(a, b)
    rev = _foreign(server, 2, ident, "v: 2\n", rev)  # the other client writes again
    converge(a, b)
    assert a.text(ident) == "v: 2\n" and _meta_file(a) == _meta_file(b)
    a.store.save("p/x", "v: 3\n", id=ident)  # a LocalStore edit: sent with the full meta
    converge(a, b)
    assert b.text(ident) == "v: 3\n" and _meta_file(a) == _meta_file(b)
    assert a.engine.verify().clean and b.engine.verify().clean


def test_verify_still_reports_a_server_row_changed_under_the_same_rev(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """Comparing like with like must not hide a server row whose hash changed."""
    ident = str(uuid.uuid4())
    _foreign(server, 1, ident, "v: 1\n", None)
    a = make_device("a")
    a.sync()
    with server.lock:
        owned = server.rows[ident]
        owned.row = type(owned.row)(**{**owned.row.to_json(), "content_hash": "f" * 64})
    assert [d["kind"] for d in a.engine.verify().differences] == ["content_differs"]


def test_a_move_here_does_not_revive_a_row_the_other_client_deleted(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """Only moved here, the copy is no edit: the other client's delete applies.

    Whether the copy was edited was told by comparing its hash with the server's, which the
    other client computed its own way: every such move counted as an edit, and revived the row.
    """
    ident = str(uuid.uuid4())
    rev = _foreign(server, 1, ident, "v: 1\n", None)
    a = make_device("a")
    a.sync()
    a.store.move(ident, "p/moved")
    raw = MemoryRemote(server, user="u")
    meta = {"id": ident, "name": "x"}
    (gone,) = raw.push(
        [Change(2, ident, rev, "p/x.blueprint.yaml", "", meta, "0" * 64, True)],
        device="other-client",
    )
    assert gone.status == "applied"
    a.sync()
    assert not a.store.exists(ident)
    with server.lock:
        assert server.rows[ident].row.deleted
    assert a.engine.verify().clean
