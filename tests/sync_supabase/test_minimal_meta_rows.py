"""A row another client wrote with a minimal meta, through the real server: every device stores
it with the same bytes (``created``/``modified`` from the row's ``updated_at``, a timestamptz as
PostgREST sends it) and verifies clean (tests/sync_engine/test_minimal_meta_rows.py has the rest)."""

from __future__ import annotations

import uuid
from pathlib import Path

from sync.localcloud.stack import LocalCloud
from sync.remote import Change

from .conftest import new_email
from .devices import open_device


def test_a_minimal_meta_row_is_stored_alike_everywhere(cloud: LocalCloud, tmp_path: Path) -> None:
    email = new_email()
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, email)
    b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, email)
    try:
        ident = str(uuid.uuid4())
        meta = {"id": ident, "name": "x"}
        (res,) = a.remote.push(
            [Change(1, ident, None, "p/x.blueprint.yaml", "v: 1\n", meta, "0" * 64, False)],
            device="other-client",
        )
        assert res.status == "applied"
        assert a.sync() is None
        assert b.sync() is None
        assert a.snapshot() == b.snapshot()
        assert a.engine.verify().clean and b.engine.verify().clean
    finally:
        a.close()
        b.close()
