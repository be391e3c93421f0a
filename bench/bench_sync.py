"""Benchmark the sync engine's own overhead with MemoryRemote (no network, no Postgres).

Measures, on real homes (files + SQLite, fsync on):

* initial upload: N blueprints already on device A, one ``sync_once()`` -> blueprints/s;
  the time spent inside MemoryRemote itself (the stand-in server, whose path check is a linear
  scan) is measured and subtracted, so the figures are the engine's side (client work);
* initial download: an empty device B, one ``sync_once()`` -> blueprints/s, repeated into fresh
  homes (median and p99 of the runs);
* memory of the engine during the download: tracemalloc peak and RSS growth (psutil);
* one edit's round trip (save on A, sync A, sync B) on the synced set: median and p99;
* for comparison, a bare ``store.save`` of the same blueprints (the floor the engine sits on).

The goal of the issue is >= 2,000 blueprints/s for an initial sync; the field notes give
Syncthing's 1,190 files/s (10,000 files, this machine class) as the peer figure. Both ratios are
printed. Run: ``.venv/bin/python bench/bench_sync.py`` (10,000 items) or ``--quick`` (1,000).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import psutil

from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.engine import SyncEngine
from sync.memory_remote import MemoryRemote, MemoryServer

GOAL_PER_S = 2_000.0
SYNCTHING_PER_S = 1_190.0  # field notes: 10,000 files in 8.4 s on this machine class


def content(i: int) -> str:
    """A ~2 KB blueprint with comments, like a small workflow."""
    steps = "".join(
        f"  - id: step-{j}\n    name: Step {j} of item {i}\n    run: echo {i}-{j}\n"
        for j in range(24)
    )
    return f"# workflow {i}\nname: flow-{i}\nversion: 1\nsteps:\n{steps}"


class TimedRemote(MemoryRemote):
    """MemoryRemote that adds up the time spent inside the remote (the server's share)."""

    spent = 0.0

    def push(self, changes: Any, *, device: str) -> Any:
        t0 = time.perf_counter()
        try:
            return super().push(changes, device=device)
        finally:
            self.spent += time.perf_counter() - t0

    def pull(self, since: int, *, limit: int = 500) -> Any:
        t0 = time.perf_counter()
        try:
            return super().pull(since, limit=limit)
        finally:
            self.spent += time.perf_counter() - t0


def open_store(root: Path, name: str) -> BlueprintStore:
    return BlueprintStore(load_settings(home=root / name, device_name=name), maintenance=False)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class RssSampler:
    """Samples this process's RSS every 20 ms on a thread; reports the peak."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench(n: int, repeats: int, edits: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    try:
        server = MemoryServer()
        a = open_store(root, "a")
        t0 = time.perf_counter()
        for i in range(n):
            a.save(f"f{i % 50}/item-{i}", content(i))
        save_s = time.perf_counter() - t0
        remote_a = TimedRemote(server, user="u")
        engine_a = SyncEngine(a, remote_a)
        t0 = time.perf_counter()
        up = engine_a.sync_once()
        upload_s = time.perf_counter() - t0
        upload_remote_s = remote_a.spent
        assert up.pushed == n, up

        downloads: list[float] = []
        rss_growth = 0
        traced_peak = 0
        # One extra run, first, measures memory with tracemalloc on; tracemalloc slows Python
        # severalfold, so that run is never part of the timing.
        for r in range(repeats + 1):
            b = open_store(root, f"b{r}")
            remote_b = TimedRemote(server, user="u")
            engine_b = SyncEngine(b, remote_b)
            base_rss = psutil.Process().memory_info().rss
            tracing = r == 0  # tracemalloc slows the run: measure memory on the first one only
            if tracing:
                tracemalloc.start()
            with RssSampler() as rss:
                t0 = time.perf_counter()
                down = engine_b.sync_once()
                if not tracing:
                    downloads.append(time.perf_counter() - t0 - remote_b.spent)
            if tracing:
                traced_peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            rss_growth = max(rss_growth, rss.peak - base_rss)
            assert down.pulled >= n and b.count() == n, down
            if r < repeats:
                b.close()
        trips = round_trips(a, engine_a, b, engine_b, edits)
        b.close()
        a.close()
        report(n, save_s, upload_s - upload_remote_s, downloads, traced_peak, rss_growth, trips)
        print(f"(excluded: MemoryRemote's own time, {upload_remote_s:.2f} s in the upload)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def round_trips(
    a: BlueprintStore, ea: SyncEngine, b: BlueprintStore, eb: SyncEngine, edits: int
) -> list[float]:
    out = []
    for i in range(edits):
        t0 = time.perf_counter()
        a.save(f"f{i % 50}/item-{i}", content(i) + f"# edit {i}\n")
        ea.sync_once()
        eb.sync_once()
        out.append(time.perf_counter() - t0)
        assert b.load(f"f{i % 50}/item-{i}").content.endswith(f"# edit {i}\n")
    return out


def report(
    n: int,
    save_s: float,
    upload_s: float,
    downloads: list[float],
    traced_peak: int,
    rss_growth: int,
    trips: list[float],
) -> None:
    down_med = statistics.median(downloads)
    down_rate = n / down_med
    up_rate = n / upload_s
    save_rate = n / save_s
    print(f"blueprints: {n} (~{len(content(1)) / 1024:.1f} KB YAML each)")
    print(f"bare store.save (floor):    {save_rate:8.0f} /s   ({save_s:.2f} s)")
    print(f"initial upload (one run):   {up_rate:8.0f} /s   ({upload_s:.2f} s, engine side)")
    print(
        f"initial download:           {down_rate:8.0f} /s   median {down_med:.2f} s (engine side), "
        f"p99 {pct(downloads, 0.99):.2f} s over {len(downloads)} runs"
    )
    print(f"  vs goal {GOAL_PER_S:.0f}/s:         x{down_rate / GOAL_PER_S:.2f}")
    print(
        f"  vs Syncthing {SYNCTHING_PER_S:.0f}/s:    x{down_rate / SYNCTHING_PER_S:.2f} (field notes)"
    )
    print(f"  vs bare store.save:       x{down_rate / save_rate:.2f}")
    print(
        f"engine memory during download: tracemalloc peak {traced_peak / 2**20:.1f} MiB, "
        f"RSS growth {rss_growth / 2**20:.1f} MiB"
    )
    print(
        f"edit round trip (save A, sync A, sync B): median {statistics.median(trips) * 1e3:.1f} ms, "
        f"p99 {pct(trips, 0.99) * 1e3:.1f} ms over {len(trips)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 blueprints, fewer repeats")
    parser.add_argument("-n", type=int, default=None, help="number of blueprints")
    args = parser.parse_args()
    n = args.n or (1_000 if args.quick else 10_000)
    bench(n, repeats=2 if args.quick else 3, edits=50 if args.quick else 200)


if __name__ == "__main__":
    main()
