"""Benchmark: sync through the local Supabase stack with SupabaseRemote and SyncEngine.

Measures, on loopback:

1. initial sync of N blueprints each way (device A uploads, a fresh device B downloads), items/s
   (goal >= 2,000/s), split into the remote's RPCs, ``store.save_many`` (the local store's
   writes) and the engine's own bookkeeping, wall-clock and thread CPU;
2. a save on device A reaching device B's file through realtime + B's engine: median and p99
   (goal median <= 300 ms, p99 <= 1 s). A's engine is stepped right after the save (a daemon's
   debounce, 150 ms by default, would add to this);
3. convergence after a partition heals: B is cut off by a black-holing proxy while both devices
   edit, then the proxy heals and both sync until byte-identical and verified;
4. memory of the engine during an N-item initial download (tracemalloc peak and RSS growth), on
   a third device whose download is not timed (tracemalloc slows Python severalfold).

Run (needs PostgreSQL and a keychain; the wrapper gives a throw-away one):

    dbus-run-session -- bash scripts/_in_keyring_session .venv/bin/python bench/bench_sync_cloud.py
    ... bench/bench_sync_cloud.py --quick     # 1,000 blueprints, 15 latency samples
"""

from __future__ import annotations

import argparse
import gc
import operator
import os
import shutil
import statistics
import sys
import threading
import time
import tracemalloc
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _homes import bench_dir, disk_report
from bench_sync import Timer  # the same wall/CPU split as the MemoryRemote benchmark

from localstore.events import Event
from localstore.store import SaveRequest
from sync.localcloud.stack import LocalCloud
from tests.sync_supabase.devices import Device, open_device
from tests.sync_supabase.faultproxy import FaultProxy


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _fill(dev: Device, n: int) -> None:
    body = "steps:\n" + "".join(f"  - id: s{i}\n    run: echo {i}\n" for i in range(20))
    for start in range(0, n, 500):
        dev.store.save_many(
            [
                SaveRequest(
                    f"bench/{i // 500}/bp-{i}.blueprint.yaml",
                    f"# {i}\n{body}",
                    fields={"name": f"bp{i}"},
                )
                for i in range(start, min(n, start + 500))
            ]
        )


def _timed_sync(dev: Device) -> dict[str, float]:
    """One sync_once() with the remote's RPCs and the store's save_many timed apart."""
    rpc, saves = Timer(), Timer()
    dev.remote.push = rpc.wrap(dev.remote.push)  # type: ignore[method-assign]
    dev.remote.pull = rpc.wrap(dev.remote.pull)  # type: ignore[method-assign]
    dev.store.save_many = saves.wrap(dev.store.save_many)  # type: ignore[method-assign]
    t0, c0 = time.perf_counter(), time.thread_time()
    dev.engine.sync_once()
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    del dev.remote.push, dev.remote.pull, dev.store.save_many
    return {
        "wall": wall,
        "rpc": rpc.wall,
        "save": saves.wall,
        "save_cpu": saves.cpu,
        "engine": wall - rpc.wall - saves.wall,
        "engine_cpu": cpu - rpc.cpu - saves.cpu,
    }


def _memory(dev: Device) -> tuple[float, float]:
    proc = psutil.Process()
    gc.collect()
    rss0 = proc.memory_info().rss
    tracemalloc.start()
    try:
        dev.engine.sync_once()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20, (proc.memory_info().rss - rss0) / 2**20


def initial_sync(cloud: LocalCloud, base: Path, n: int) -> dict[str, Any]:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.test"
    a = open_device(base, "a", cloud.url, cloud.anon_key, email, timeout_s=60)
    b = open_device(base, "b", cloud.url, cloud.anon_key, email, timeout_s=60)
    m = open_device(base, "m", cloud.url, cloud.anon_key, email, timeout_s=60)
    try:
        _fill(a, n)
        up = _timed_sync(a)
        down = _timed_sync(b)
        assert b.store.count() == n, (b.store.count(), n)
        assert b.engine.verify().clean
        peak, rss = _memory(m)
        assert m.store.count() == n
        return {"up": up, "down": down, "peak_traced_mib": peak, "rss_growth_mib": rss}
    finally:
        m.close()
        b.close()
        a.close()


def _print_sync(label: str, n: int, t: dict[str, float]) -> None:
    us = 1e6 / n
    print(f"  {label} {t['wall']:.2f} s = {n / t['wall']:,.0f}/s (goal >= 2,000/s)")
    print(
        f"    per blueprint: RPCs {t['rpc'] * us:.0f} us, store.save_many {t['save'] * us:.0f} us "
        f"(CPU {t['save_cpu'] * us:.0f}), engine {t['engine'] * us:.0f} us "
        f"(CPU {t['engine_cpu'] * us:.0f})"
    )


def remote_only(cloud: LocalCloud, base: Path, n: int) -> dict[str, float]:
    """SupabaseRemote alone (no engine, no files): push in 500-change batches, pull all pages."""
    from sync.remote import Change
    from tests.sync_contract.contract import sha

    email = f"bench-{uuid.uuid4().hex[:8]}@example.test"
    dev = open_device(base, "ro", cloud.url, cloud.anon_key, email, timeout_s=60)
    try:
        body = "steps:\n" + "".join(f"  - id: s{i}\n    run: echo {i}\n" for i in range(20))
        changes = [
            Change(
                i + 1, str(uuid.uuid4()), None, f"ro/{i}.yaml", body, {"name": f"r{i}"}, sha(body)
            )
            for i in range(n)
        ]
        t0 = time.perf_counter()
        for i in range(0, n, 500):
            dev.remote.push(changes[i : i + 500], device="bench")
        push_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cursor, got = 0, 0
        while True:
            page = dev.remote.pull(cursor, limit=1000)
            got += len(page.changes)
            cursor = page.next
            if not page.more:
                break
        pull_s = time.perf_counter() - t0
        assert got == n
        return {"push_per_s": n / push_s, "pull_per_s": n / pull_s}
    finally:
        dev.close()


def realtime_latency(cloud: LocalCloud, base: Path, samples: int) -> list[float]:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.test"
    a = open_device(base, "ra", cloud.url, cloud.anon_key, email)
    b = open_device(base, "rb", cloud.url, cloud.anon_key, email)
    arrived: dict[str, float] = {}
    got = threading.Condition()

    def on_event(ev: Event) -> None:
        if ev.origin == "remote":
            with got:
                arrived[ev.path] = time.perf_counter()
                got.notify_all()

    b.store.subscribe(on_event)
    try:
        b.engine.start()
        out: list[float] = []
        for i in range(samples):
            path = f"rt/{i}.blueprint.yaml"
            t0 = time.perf_counter()
            a.store.save(path, f"v: {i}\n", name=f"r{i}")
            a.engine.sync_once()
            with got:
                if not got.wait_for(partial(operator.contains, arrived, path), 10):
                    raise RuntimeError(f"{path} never reached device B")
            out.append(arrived[path] - t0)
        return out
    finally:
        b.close()
        a.close()


def partition_heal(cloud: LocalCloud, base: Path, edits: int) -> float:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.test"
    with FaultProxy(cloud.port) as proxy:
        a = open_device(base, "pa", cloud.url, cloud.anon_key, email, timeout_s=1)
        b = open_device(base, "pb", proxy.url, cloud.anon_key, email, timeout_s=1)
        try:
            proxy.blackhole()
            for i in range(edits):
                a.store.save(f"pa/{i}.blueprint.yaml", f"a: {i}\n", name=f"a{i}")
                b.store.save(f"pb/{i}.blueprint.yaml", f"b: {i}\n", name=f"b{i}")
            a.engine.sync_once()
            b.sync()  # fails: the partition
            proxy.heal()
            t0 = time.perf_counter()
            while True:
                errors = [d.sync() for d in (a, b)]
                converged = not any(errors) and a.snapshot() == b.snapshot()
                if converged and a.engine.verify().clean and b.engine.verify().clean:
                    return time.perf_counter() - t0
        finally:
            b.close()
            a.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 blueprints, 15 samples")
    args = parser.parse_args()
    n = 1_000 if args.quick else 10_000
    samples = 15 if args.quick else 100
    edits = 50 if args.quick else 200
    # Homes where no recent delete slows file creation (bench/_homes.py): in a plain temp folder
    # the same download read 2,579/s and then 1,144/s minutes later, when the first run's
    # deleted files made each create skip recently deleted inodes.
    base, how = bench_dir("bench-sync-cloud-")
    print(disk_report(base, how))
    try:
        _run(base, n, samples, edits)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(base: Path, n: int, samples: int, edits: int) -> None:
    with LocalCloud() as cloud:
        raw = remote_only(cloud, base, n)
        print(f"SupabaseRemote alone, {n} rows (RPC only, no files):")
        print(f"  push {raw['push_per_s']:,.0f}/s, pull {raw['pull_per_s']:,.0f}/s")
        init = initial_sync(cloud, base, n)
        print(f"initial sync of {n} blueprints (load average {os.getloadavg()}):")
        _print_sync("upload  ", n, init["up"])
        _print_sync("download", n, init["down"])
        print(
            f"  engine memory during download: tracemalloc peak {init['peak_traced_mib']:.1f} MiB,"
            f" RSS growth {init['rss_growth_mib']:.1f} MiB"
        )
        lat = realtime_latency(cloud, base, samples)
        print(f"save on A -> file on B via realtime, {samples} samples:")
        print(
            f"  median {statistics.median(lat) * 1000:.0f} ms, p99 {_p(lat, 0.99) * 1000:.0f} ms,"
            f" max {max(lat) * 1000:.0f} ms (goal median <= 300 ms, p99 <= 1 s)"
        )
        heal = partition_heal(cloud, base, edits)
        print(f"convergence after a partition heals ({edits} edits per side): {heal:.2f} s")


if __name__ == "__main__":
    main()
