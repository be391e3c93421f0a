"""A blueprint the cloud cannot be sent does not stop the home's other uploads (real stack)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from sync.localcloud.stack import LocalCloud

from .conftest import new_email
from .devices import open_device


def test_a_meta_file_holding_a_nul_is_quarantined_and_the_rest_goes_up(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    # A meta file written by another tool may hold "\u0000": valid JSON, so the store indexes
    # it, but jsonb cannot hold a NUL. The Supabase remote sent it with the rest of the batch
    # and PostgREST refused the whole call (22P05), an unclassified error retried every cycle:
    # none of the home's edits reached the cloud, for good.
    dev = open_device(tmp_path, "a", cloud.url, cloud.anon_key, new_email())
    try:
        dev.store.save("d/fine", "v: 1\n")
        bad_id = str(uuid.uuid4())
        folder = Path(dev.store.root) / "d"
        (folder / "bad.blueprint.yaml").write_text("v: 2\n", encoding="utf-8")
        (folder / "bad.blueprint.meta.json").write_text(
            json.dumps({"id": bad_id, "name": "bad", "description": "a\u0000b"}),
            encoding="utf-8",
        )
        dev.store.reconcile()
        assert dev.store.load("d/bad").meta.description == "a\x00b"

        assert dev.sync() is None
        (entry,) = dev.engine.quarantined()
        assert (entry.id, entry.code, entry.path) == (
            bad_id,
            "invalid_change",
            "d/bad.blueprint.yaml",
        )
        assert "NUL" in entry.message
        rows = dev.remote.fetch([dev.store.resolve("d/fine").id, bad_id])
        assert [r.path for r in rows] == ["d/fine.blueprint.yaml"]
    finally:
        dev.close()
