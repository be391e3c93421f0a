"""Large blueprints come down too: a pull pages them and a full reconcile fetches them in pieces.

Over 256 MiB of blueprints (33 of just under 8 MiB, the local YAML limit; each one pushed alone
as the push byte budget does) were one pull page, and one ``fetch_rows`` call in a full
reconcile (200 ids a call): both over jsonb's 256 MiB, so the server failed them with 54000 on
every retry and a new device of that user never got the blueprints.

Both are bounded by bytes now. ``pull_changes`` ends a page at 16 MiB of content and meta plus
one row (migration 20261122001100), and the engine pulls on from ``next``. A full reconcile still
takes the ids 200 at a time, but asks ``fetch_rows_page`` for each chunk (migration
20261122001300): an answer ends at the same budget and names the ids left, which the engine asks
for next, applying each answer first (``SyncEngine._fetch_pages``), so the 33 rows come in
several byte-bounded answers, not one call.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from sync.localcloud.stack import LocalCloud

from .conftest import new_email
from .devices import Device, open_device

COUNT = 33
# Just under the store's 8 MiB YAML limit: 33 of them are over jsonb's 256 MiB.
PAD = 8 * 1024 * 1024 - 1024


def _content(n: int) -> str:
    return f"name: big{n}\npad: {chr(97 + n % 26) * PAD}\n"


def _assert_has_all(dev: Device, ids: set[str]) -> None:
    for rid in ids:
        assert dev.store.load(rid).content.startswith("name: big")
    assert dev.engine.verify().differences == []


def test_a_new_device_gets_over_256_mib_by_pull_and_by_full_reconcile(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    email = new_email()
    devices: list[Device] = []
    try:
        a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, email, timeout_s=60.0)
        devices.append(a)
        ids = {a.store.save(f"big/b{n:02}", _content(n)).id for n in range(COUNT)}
        report = a.engine.sync_once()
        assert (report.pushed, report.errors) == (COUNT, []), report

        # A pull from 0: pages of at most 16 MiB (migration 20261122001100).
        b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, email, timeout_s=60.0)
        devices.append(b)
        report = b.engine.sync_once()
        assert (report.pulled, report.errors, report.reset) == (COUNT, [], False), report
        _assert_has_all(b, ids)

        # A purged tombstone above every big row: a new device's cursor (0) is below the
        # horizon, so it does a full reconcile and fetches all of them by id, in pages of
        # fetch_rows_page (migration 20261122001300).
        gone = a.store.save("small/gone", "name: gone\n").id
        a.engine.sync_once()
        a.store.delete(gone)
        assert a.engine.sync_once().errors == []
        with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
            conn.execute("select public.purge_tombstones(interval '0')")
        c = open_device(tmp_path, "c", cloud.url, cloud.anon_key, email, timeout_s=60.0)
        devices.append(c)
        report = c.engine.sync_once()
        assert (report.reset, report.errors) == (True, []), report
        _assert_has_all(c, ids)
    finally:
        for dev in devices:
            dev.close()
