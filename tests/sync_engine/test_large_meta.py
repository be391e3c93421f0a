"""Every meta a local meta file can hold goes up (the server's meta limit, as jsonb).

The server bounds a change's meta by ``pg_column_size`` of its jsonb (migration
20261122000500; the memory remote counts it the same way). jsonb is not smaller than the JSON
text: a meta file of 980 KB holding an array of one-digit numbers (2 bytes of text, 12 of jsonb
each) is 1.7 MB of jsonb. At a 1 MiB limit, a blueprint whose meta file the store accepted (it
reads up to 1 MiB) was refused as ``too_large`` on every push, for good.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from localstore.blueprint import BlueprintMeta, content_hash, decode_meta, utc_now
from sync.memory_remote import MemoryServer, jsonb_size
from sync.remote import Change

from .conftest import Device, server_snapshot


def test_a_meta_file_under_1_mib_with_many_numbers_syncs(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    saved = a.store.save("ops/layout", "steps: [1]\n")
    meta_path = a.store.abspath("ops/layout.blueprint.meta.json")
    meta = json.loads(meta_path.read_bytes())
    # Compact JSON, as another tool may write it: the store takes any meta file up to 1 MiB.
    meta["grid"] = [1] * 500_000
    raw = json.dumps(meta, separators=(",", ":")).encode()
    assert len(raw) < 2**20
    decode_meta(raw)  # (the store accepts it)
    assert jsonb_size(meta) > 2**20 * 5  # what the server counts
    meta_path.write_bytes(raw)
    a.store.reconcile()
    assert len(a.store.load(saved.id).meta.extra["grid"]) == 500_000

    report = a.sync()
    assert (report.pushed, report.quarantined, report.errors) == (1, 0, [])
    assert list(server_snapshot(server)) == [saved.id]
    b.sync()
    assert b.store.load(saved.id).meta.extra["grid"] == [1] * 500_000
    # B wrote it in a form its own reads take (indented it was 3.5 MB): a reconcile keeps it.
    b_meta = b.store.abspath("ops/layout.blueprint.meta.json")
    assert b_meta.stat().st_size <= 2**20
    report = b.store.reconcile()
    assert b.store.load(saved.id).meta.extra["grid"] == [1] * 500_000
    assert [i.valid for i in b.store.list()] == [True]
    assert report.clean


def test_a_pulled_meta_no_store_could_read_is_quarantined_and_the_rest_applied(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """Another client pushed a meta whose file would be over 1 MiB even compact: the device
    writes nothing for it (a file it could not read back), says why, and applies the rest."""
    a, b = make_device("a"), make_device("b")
    a.store.save("ok", "v: 1\n")
    a.sync()
    big = BlueprintMeta(
        id=str(uuid.uuid4()), name="big", description="d" * (2**20 + 10), created=utc_now()
    )
    raw = b"v: 2\n"
    (result,) = a.remote.push(
        [
            Change(
                op_id=10_000,
                id=big.id,
                base_rev=None,
                path="big.blueprint.yaml",
                content=raw.decode(),
                meta=big.to_dict(),
                content_hash=content_hash(raw, big),
            )
        ],
        device="another-client",
    )
    assert result.status == "applied"

    report = b.sync()
    assert report.quarantined == 1
    assert any("over the 1,048,576-byte limit of meta files" in e for e in report.errors)
    assert [i.path for i in b.store.list()] == ["ok.blueprint.yaml"]
    assert not b.store.abspath("big.blueprint.yaml").exists()
    assert not b.store.abspath("big.blueprint.meta.json").exists()
