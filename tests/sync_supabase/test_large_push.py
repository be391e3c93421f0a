"""Large blueprints on the local stack: one sync uploads them all (push batches bounded by bytes).

Before the byte bound, a push batch was up to ``sync_batch`` (200) changes whatever their size:
36 blueprints of 2 MiB went as one 75 MiB request, over the gateway's request limit (64 MiB: HTTP
413; on a slower server the role's statement timeout, 57014), and the same request was retried
forever. Now a push carries a few MiB, and a call the server refuses as too large is split.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from sync.engine import SyncEngine
from sync.localcloud.stack import LocalCloud

from .conftest import new_email
from .devices import Device, open_device

COUNT = 36
# Just over 2 MiB of text each, random so nothing on the way compresses it away.
LINE_CHARS = 64
LINES = 2 * 1024 * 1024 // (LINE_CHARS + 5) + 64


def _big_yaml(rng: random.Random, n: int) -> str:
    data = rng.randbytes(LINES * LINE_CHARS // 2).hex()
    rows = (f"  - {data[i : i + LINE_CHARS]}" for i in range(0, len(data), LINE_CHARS))
    return f"name: big{n}\nrows:\n" + "\n".join(rows) + "\n"


def _save_many_large(dev: Device) -> set[str]:
    rng = random.Random(7)
    return {dev.store.save(f"big/b{n:02}", _big_yaml(rng, n)).id for n in range(COUNT)}


def _assert_all_arrived(dev: Device, ids: set[str]) -> None:
    assert dev.engine.status().pending == 0
    assert dev.engine.verify().differences == []
    rows = dev.remote.fetch(sorted(ids))
    assert len(rows) == COUNT
    for row in rows:
        assert row.content == dev.store.load(row.id).content


def test_one_sync_uploads_many_large_blueprints(cloud: LocalCloud, tmp_path: Path) -> None:
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, new_email(), timeout_s=30.0)
    try:
        ids = _save_many_large(a)
        # (No time bound: the retried-forever push never returned; the suite's timeout would
        # say so. How fast it goes is the benchmarks' business, not a test's.)
        report = a.engine.sync_once()
        assert (report.pushed, report.quarantined, report.errors) == (COUNT, 0, []), report
        _assert_all_arrived(a, ids)
    finally:
        a.close()


def test_a_push_the_gateway_refuses_as_too_large_is_split(
    cloud: LocalCloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No byte bound of its own: the first call is all 36 (75 MiB), which the gateway refuses
    # (413), and the engine must split it rather than send it again.
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, new_email(), timeout_s=30.0)
    try:
        ids = _save_many_large(a)
        engine = SyncEngine(a.store, a.remote, batch_bytes=2**30)
        with caplog.at_level(logging.INFO, logger="sync.engine"):
            report = engine.sync_once()
        assert (report.pushed, report.quarantined, report.errors) == (COUNT, 0, []), report
        splits = [r.getMessage() for r in caplog.records if "in halves" in r.getMessage()]
        assert len(splits) == 1 and "[413]" in splits[0], splits
        _assert_all_arrived(a, ids)
    finally:
        a.close()
