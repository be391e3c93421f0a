"""Every meta a local meta file can hold goes up (the server's meta limit, as jsonb).

The server bounds a change's meta by ``pg_column_size`` of its jsonb (migration
20261122000500; the memory remote counts it the same way). jsonb is not smaller than the JSON
text: a meta file of 980 KB holding an array of one-digit numbers (2 bytes of text, 12 of jsonb
each) is 1.7 MB of jsonb. At a 1 MiB limit, a blueprint whose meta file the store accepted (it
reads up to 1 MiB) was refused as ``too_large`` on every push, for good.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from localstore.blueprint import decode_meta
from sync.memory_remote import MemoryServer, jsonb_size

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
