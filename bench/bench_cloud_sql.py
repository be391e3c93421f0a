"""Benchmark the cloud schema directly in PostgreSQL (no HTTP): cluster start, schema setup and the
sync RPCs called the way PostgREST calls them (authenticator login, role + claims, one transaction).

* cluster start: cold (initdb into a fresh template cache) and warm (copy of the cached template);
* bootstrap + migrations on a fresh database;
* push_changes: consecutive batches of 500 blueprints of ~2 KB (shows whether cost grows with the
  owner's row count), and 500 updates;
* pull_changes pages of 500 and verify_rows pages of 1000.

Run: .venv/bin/python bench/bench_cloud_sql.py [--quick] [--rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from sync.localcloud.cluster import PostgresCluster
from sync.localcloud.schema import apply_bootstrap, apply_migrations, set_authenticator_password

BATCH = 500


def _ms(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"median {statistics.median(values) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


def _content(i: int) -> str:
    body = f"name: workflow {i}\nsteps:\n" + "".join(
        f"  - id: s{j}\n    run: echo {i}-{j}\n" for j in range(60)
    )
    return body[:2048]


def _start_times(runs: int) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="lc-bench-tpl-") as tpl:
            os.environ["LOCALSTORE_PG_TEMPLATE_DIR"] = tpl
            t = time.perf_counter()
            PostgresCluster().start().stop()
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            PostgresCluster().start().stop()
            warm.append(time.perf_counter() - t)
    os.environ.pop("LOCALSTORE_PG_TEMPLATE_DIR")
    return cold, warm


class Caller:
    def __init__(self, dsn: str, user: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.claims = json.dumps({"sub": user, "role": "authenticated"})

    def backend_cpu(self) -> float:
        """CPU seconds the server process of this connection has used (load-independent cost)."""
        stat = Path(f"/proc/{self.conn.info.backend_pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def call(self, sql: Any, params: Any) -> Any:
        with self.conn.transaction():
            self.conn.execute(
                "select set_config('role', 'authenticated', true),"
                " set_config('request.jwt.claims', %s, true)",
                (self.claims,),
            )
            row = self.conn.execute(sql, params).fetchone()
        assert row is not None
        return row[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rows and start runs")
    parser.add_argument("--rows", type=int, default=None)
    args = parser.parse_args()
    rows = args.rows or (2000 if args.quick else 10000)
    start_runs = 2 if args.quick else 5

    cold, warm = _start_times(start_runs)
    print(f"cluster start, cold (initdb): {_ms(cold)}")
    print(f"cluster start, warm (template copy): {_ms(warm)}")

    with PostgresCluster() as cluster:
        t = time.perf_counter()
        apply_bootstrap(cluster.superuser_dsn)
        apply_migrations(cluster.superuser_dsn)
        print(f"bootstrap + migrations: {(time.perf_counter() - t) * 1000:.1f} ms")
        password = secrets.token_urlsafe(16)
        set_authenticator_password(cluster.superuser_dsn, password)
        uid = str(uuid.uuid4())
        with psycopg.connect(cluster.superuser_dsn, autocommit=True) as su:
            su.execute("insert into auth.users (id, email) values (%s, %s)", (uid, f"{uid}@x"))
        api = Caller(cluster.dsn("authenticator", password), uid)

        ids: list[str] = []
        batch_times: list[float] = []
        cpu0 = api.backend_cpu()
        for start in range(0, rows, BATCH):
            batch = []
            for i in range(start, min(rows, start + BATCH)):
                rid = str(uuid.uuid4())
                ids.append(rid)
                batch.append(
                    {
                        "op_id": i + 1,
                        "id": rid,
                        "base_rev": None,
                        "path": f"b/wf-{i:06d}.yaml",
                        "content": _content(i),
                        "meta": {"name": f"wf {i}"},
                        "content_hash": secrets.token_hex(32),
                        "deleted": False,
                    }
                )
            t = time.perf_counter()
            result = api.call("select public.push_changes(%s, 'bench')", (Jsonb(batch),))
            batch_times.append(time.perf_counter() - t)
            assert all(r["status"] == "applied" for r in result)
        push_cpu = (api.backend_cpu() - cpu0) / len(batch_times)
        print(
            f"push creates, {len(batch_times)} batches of {BATCH}: {_ms(batch_times)};"
            f" first {batch_times[0] * 1000:.0f} ms, last {batch_times[-1] * 1000:.0f} ms;"
            f" {rows / sum(batch_times):,.0f} changes/s;"
            f" server CPU {push_cpu * 1000:.0f} ms per batch"
        )

        updates: list[dict[str, Any]] = [
            {
                "op_id": rows + 1 + i,
                "id": rid,
                "base_rev": 1,
                "path": f"b/wf-{i:06d}.yaml",
                "content": _content(i) + "#",
                "meta": {},
                "content_hash": secrets.token_hex(32),
                "deleted": False,
            }
            for i, rid in enumerate(ids[:BATCH])
        ]
        cpu0 = api.backend_cpu()
        t = time.perf_counter()
        result = api.call("select public.push_changes(%s, 'bench')", (Jsonb(updates),))
        assert all(r["status"] == "applied" for r in result)
        print(
            f"push 500 updates: {(time.perf_counter() - t) * 1000:.0f} ms;"
            f" server CPU {(api.backend_cpu() - cpu0) * 1000:.0f} ms"
        )
        cpu0 = api.backend_cpu()
        t = time.perf_counter()
        again = api.call("select public.push_changes(%s, 'bench')", (Jsonb(updates),))
        assert again == result
        print(
            f"replay of those 500 updates: {(time.perf_counter() - t) * 1000:.0f} ms;"
            f" server CPU {(api.backend_cpu() - cpu0) * 1000:.0f} ms"
        )

        pulls, cursor = [], 0
        while True:
            t = time.perf_counter()
            page = api.call("select public.pull_changes(%s::bigint, 500)", (cursor,))
            pulls.append(time.perf_counter() - t)
            cursor = page["next"]
            if not page["more"]:
                break
        print(
            f"pull pages of 500 ({len(pulls)} pages): {_ms(pulls)}; {rows / sum(pulls):,.0f} rows/s"
        )

        verifies, after = [], None
        while True:
            t = time.perf_counter()
            page = api.call("select public.verify_rows(%s::uuid, 1000)", (after,))
            verifies.append(time.perf_counter() - t)
            after = page["next"]
            if not page["more"]:
                break
        print(f"verify pages of 1000 ({len(verifies)} pages): {_ms(verifies)}")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
