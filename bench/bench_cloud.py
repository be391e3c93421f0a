"""Benchmark the local stack's gateway with the official client.

* push and pull throughput: N blueprints of ~2 KB in batches of 500 (push_changes / pull_changes),
  with the CPU each side spent per batch: the cluster's Postgres processes, the gateway thread and
  the client (they share this process), so the split does not depend on the machine's load;
* realtime latency commit -> client callback (median, p99) for postgres_changes;
* gateway cost: the same push batch and pull page through the gateway vs psycopg directly (same
  role, claims and transaction shape), so the difference is what HTTP + JSON + the gateway add.

Run: .venv/bin/python bench/bench_cloud.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb
from realtime import PostgresChangesPayload, RealtimePostgresChangesListenEvent
from supabase import AsyncClientOptions, ClientOptions, acreate_client, create_client

from sync.localcloud.stack import LocalCloud

BATCH = 500


def _blueprint(i: int) -> dict:
    body = f"name: workflow {i}\nsteps:\n" + "".join(
        f"  - id: s{j}\n    run: echo {i}-{j}\n" for j in range(60)
    )
    body = body[:2048].ljust(2048, "#")
    return {
        "op_id": i + 1,
        "id": str(uuid.uuid4()),
        "base_rev": None,
        "path": f"bench/wf-{i:06d}.blueprint.yaml",
        "content": body,
        "meta": {"name": f"workflow {i}", "tags": ["bench"]},
        "content_hash": hashlib.sha256(body.encode()).hexdigest(),
        "deleted": False,
    }


def _object(value: object) -> dict[str, Any]:
    """A PostgREST answer as the JSON object it must be (the client types it as any JSON)."""
    assert isinstance(value, dict), value
    return value


def _list(value: object) -> list[Any]:
    """A PostgREST answer as the JSON array it must be."""
    assert isinstance(value, list), value
    return value


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cluster_cpu(postmaster: int) -> float:
    """CPU seconds used so far by a cluster's postmaster and its children (backends, walsenders),
    including children that already exited."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU per side over a stretch of work: Postgres, this thread (the client), the rest of this
    process (the gateway's thread)."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster

    def __enter__(self) -> CpuMeter:
        self._pg, self._proc, self._me = (
            _cluster_cpu(self.postmaster),
            time.process_time(),
            time.thread_time(),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        me = time.thread_time() - self._me
        self.postgres = _cluster_cpu(self.postmaster) - self._pg
        self.client = me
        self.gateway = time.process_time() - self._proc - me


def bench_push_pull(cloud: LocalCloud, n: int) -> dict:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.test"
    cloud.create_user(email, "bench-password")
    with httpx.Client(timeout=120) as http:
        client = create_client(
            cloud.url, cloud.anon_key, ClientOptions(httpx_client=http, auto_refresh_token=False)
        )
        client.auth.sign_in_with_password({"email": email, "password": "bench-password"})
        rows = [_blueprint(i) for i in range(n)]
        push_times = []
        postmaster = cloud.cluster.pid
        assert postmaster is not None
        with CpuMeter(postmaster) as push_cpu:
            t0 = time.perf_counter()
            for start in range(0, n, BATCH):
                t = time.perf_counter()
                res = client.rpc(
                    "push_changes", {"changes": rows[start : start + BATCH], "device": "bench"}
                ).execute()
                push_times.append(time.perf_counter() - t)
                assert all(_object(r)["status"] == "applied" for r in _list(res.data))
            push_s = time.perf_counter() - t0
        pull_times = []
        with CpuMeter(postmaster) as pull_cpu:
            t0 = time.perf_counter()
            since, got = 0, 0
            while True:
                t = time.perf_counter()
                page = _object(
                    client.rpc("pull_changes", {"since": since, "lim": BATCH}).execute().data
                )
                pull_times.append(time.perf_counter() - t)
                got += len(page["changes"])
                since = page["next"]
                if not page["more"]:
                    break
            pull_s = time.perf_counter() - t0
        assert got == n, (got, n)
        session = client.auth.get_session()
        assert session is not None  # signed in above
        token = session.access_token
        client.auth._remove_session()
    return {
        "n": n,
        "push_per_s": n / push_s,
        "pull_per_s": n / pull_s,
        "push_batch_p50_ms": statistics.median(push_times) * 1e3,
        "push_batch_p99_ms": _pct(push_times, 0.99) * 1e3,
        "pull_page_p50_ms": statistics.median(pull_times) * 1e3,
        "pull_page_p99_ms": _pct(pull_times, 0.99) * 1e3,
        "push_cpu": push_cpu,
        "pull_cpu": pull_cpu,
        "batches": len(push_times),
        "pages": len(pull_times),
        "token": token,
        "email": email,
    }


def bench_push_cost(cloud: LocalCloud, token: str, rounds: int) -> dict:
    """Time push batches of 500 fresh creates via the gateway and via psycopg directly, alternating
    so both see the same table size and machine load."""
    claims = json.dumps(cloud.keys.verify(token))
    via_gateway, direct = [], []
    base = 10_000_000
    with (
        httpx.Client(timeout=120) as http,
        psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn,
    ):
        client = create_client(
            cloud.url, cloud.anon_key, ClientOptions(httpx_client=http, auto_refresh_token=False)
        )
        client.postgrest.auth(token)
        for r in range(rounds):
            rows = [_blueprint(base + (2 * r) * BATCH + i) for i in range(BATCH)]
            t = time.perf_counter()
            client.rpc("push_changes", {"changes": rows, "device": "cost"}).execute()
            via_gateway.append(time.perf_counter() - t)
            rows = [_blueprint(base + (2 * r + 1) * BATCH + i) for i in range(BATCH)]
            t = time.perf_counter()
            with conn.transaction():
                conn.execute(
                    "select set_config('role', 'authenticated', true),"
                    " set_config('request.jwt.claims', %s, true)",
                    (claims,),
                )
                conn.execute(
                    "select public.push_changes(%s, 'cost')::text", (Jsonb(rows),)
                ).fetchone()
            direct.append(time.perf_counter() - t)
    return _versus(via_gateway, direct)


def _versus(via_gateway: list[float], direct: list[float]) -> dict:
    """Medians, p99s and the ratio of the same call made through the gateway and directly."""
    g, d = statistics.median(via_gateway), statistics.median(direct)
    return {
        "gateway_p50_ms": g * 1e3,
        "gateway_p99_ms": _pct(via_gateway, 0.99) * 1e3,
        "direct_p50_ms": d * 1e3,
        "direct_p99_ms": _pct(direct, 0.99) * 1e3,
        "ratio": g / d,
    }


def bench_gateway_cost(cloud: LocalCloud, token: str, rounds: int) -> dict:
    """Time one pull_changes page of 500 rows via the gateway and via psycopg directly."""
    claims = json.dumps(cloud.keys.verify(token))
    via_gateway, direct = [], []
    with httpx.Client(timeout=120) as http:
        client = create_client(
            cloud.url, cloud.anon_key, ClientOptions(httpx_client=http, auto_refresh_token=False)
        )
        client.postgrest.auth(token)
        for _ in range(rounds):
            t = time.perf_counter()
            client.rpc("pull_changes", {"since": 0, "lim": BATCH}).execute()
            via_gateway.append(time.perf_counter() - t)
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        for _ in range(rounds):
            t = time.perf_counter()
            conn.execute("begin read only")
            conn.execute(
                "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                (claims,),
            )
            conn.execute("select public.pull_changes(0, %s)::text", (BATCH,)).fetchone()
            conn.execute("commit")
            direct.append(time.perf_counter() - t)
    return _versus(via_gateway, direct)


async def bench_realtime(cloud: LocalCloud, email: str, events: int) -> dict:
    async with httpx.AsyncClient(timeout=60) as http:
        client = await acreate_client(
            cloud.url,
            cloud.anon_key,
            AsyncClientOptions(httpx_client=http, auto_refresh_token=False),
        )
        await client.auth.sign_in_with_password({"email": email, "password": "bench-password"})
        await asyncio.sleep(0)
        arrived: dict[str, float] = {}
        waiter: asyncio.Queue[str] = asyncio.Queue()

        def on_change(payload: PostgresChangesPayload) -> None:
            rec = payload["data"].get("record") or {}
            arrived[rec.get("id", "")] = time.perf_counter()
            waiter.put_nowait(rec.get("id", ""))

        ch = client.channel("bench")
        ch.on_postgres_changes(
            RealtimePostgresChangesListenEvent.Insert,
            on_change,
            schema="public",
            table="blueprints",
        )
        ready: asyncio.Queue = asyncio.Queue()
        await ch.subscribe(lambda s, e: ready.put_nowait(s))
        await asyncio.wait_for(ready.get(), 10)
        latencies = []
        with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
            found = conn.execute("select id from auth.users where email = %s", (email,)).fetchone()
            assert found is not None  # the user signed up above
            owner = found[0]
            for i in range(events):
                row_id = str(uuid.uuid4())
                conn.execute(
                    "insert into public.blueprints (id, owner, path, content, meta, content_hash, rev, seq, device)"
                    " values (%s, %s, %s, 'a: 1', '{}', 'h', 0, 0, 'rt')",
                    (row_id, owner, f"rt/{i}.yaml"),
                )
                committed = time.perf_counter()  # autocommit: execute returns after COMMIT
                while True:
                    got = await asyncio.wait_for(waiter.get(), 10)
                    if got == row_id:
                        break
                latencies.append(arrived[row_id] - committed)
        await client.remove_all_channels()
        await client.realtime.close()
        await client.auth.sign_out()
    return {
        "events": events,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": _pct(latencies, 0.99) * 1e3,
        "max_ms": max(latencies) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1,000 rows, fewer rounds")
    parser.add_argument("--rows", type=int, default=None, help="blueprints to push and pull")
    args = parser.parse_args()
    n = args.rows or (1000 if args.quick else 10_000)
    rounds = 10 if args.quick else 40
    events = 30 if args.quick else 200
    with LocalCloud() as cloud:
        pp = bench_push_pull(cloud, n)
        push_cost = bench_push_cost(cloud, pp["token"], max(3, rounds // 4))
        cost = bench_gateway_cost(cloud, pp["token"], rounds)
        rt = asyncio.run(bench_realtime(cloud, pp["email"], events))
    print(
        f"push: {pp['push_per_s']:,.0f} blueprints/s  (batch of {BATCH}: p50 {pp['push_batch_p50_ms']:.0f} ms, p99 {pp['push_batch_p99_ms']:.0f} ms)"
    )
    print(
        f"pull: {pp['pull_per_s']:,.0f} blueprints/s  (page of {BATCH}: p50 {pp['pull_page_p50_ms']:.0f} ms, p99 {pp['pull_page_p99_ms']:.0f} ms)"
    )
    for what, key, count in (
        ("push batch", "push_cpu", "batches"),
        ("pull page", "pull_cpu", "pages"),
    ):
        m = pp[key]
        k = 1e3 / pp[count]
        print(
            f"CPU per {what}: postgres {m.postgres * k:.0f} ms, gateway {m.gateway * k:.0f} ms,"
            f" client {m.client * k:.0f} ms"
        )
    print(
        f"push batch via gateway p50 {push_cost['gateway_p50_ms']:.1f} ms (p99 {push_cost['gateway_p99_ms']:.1f}) vs psycopg direct "
        f"p50 {push_cost['direct_p50_ms']:.1f} ms (p99 {push_cost['direct_p99_ms']:.1f}): ratio {push_cost['ratio']:.2f}x"
    )
    print(
        f"pull page via gateway p50 {cost['gateway_p50_ms']:.1f} ms (p99 {cost['gateway_p99_ms']:.1f}) vs psycopg direct "
        f"p50 {cost['direct_p50_ms']:.1f} ms (p99 {cost['direct_p99_ms']:.1f}): ratio {cost['ratio']:.2f}x"
    )
    print(
        f"realtime commit->callback over {rt['events']} events: p50 {rt['p50_ms']:.1f} ms, p99 {rt['p99_ms']:.1f} ms, max {rt['max_ms']:.1f} ms"
    )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
