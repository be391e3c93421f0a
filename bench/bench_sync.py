"""Benchmark the sync engine's own overhead with MemoryRemote (no network, no Postgres).

Measures, on real homes (files + SQLite, fsync on):

* initial upload: N blueprints already on device A, one ``sync_once()`` -> blueprints/s;
  the time spent inside MemoryRemote itself (the stand-in server) is measured and subtracted,
  so the figures are the engine's side (client work);
* initial download: an empty device B, one ``sync_once()`` -> blueprints/s, repeated into fresh
  homes (median and p99 of the runs), split into: the remote's pull, ``store.save_many`` (the
  local store's save work: YAML checks, files, index rows, history, full-text) and the engine's
  bookkeeping (everything else: row lookups, bases, cursor, journal, transactions); wall-clock
  and CPU time of the thread, so a loaded machine shows in the difference;
* memory of the engine during the download: tracemalloc peak and RSS growth (psutil), in a run
  of its own that is never timed (tracemalloc slows Python severalfold);
* an idle poll of the synced N-blueprint home (``sync_once()`` with nothing to do) and
  ``status()``: what a daemon pays every poll interval (on the reopened home, whose WAL the close
  checkpointed, as a daemon's maintainer keeps it);
* one edit's round trip (save on A, sync A, sync B) on the synced set: median and p99;
* for comparison, a bare ``store.save_many`` of the same blueprints in runs of the engine's
  apply chunk (``sync.engine.DEFAULT_APPLY_BATCH``, one transaction each: the floor the download
  sits on; the engine saves clean takes the same way);
* as references for the disk's share: the cost of creating a file at the start (this VM's ext4
  has no journal and then creates cost several times more for minutes after a mass delete), and
  one more download into a home on tmpfs (``/dev/shm``), the same code with no disk under it.

The goal of the issue is >= 2,000 blueprints/s for an initial sync; the field notes give
Syncthing's 1,190 files/s (10,000 files, this machine class) as the peer figure. Both ratios are
printed. Run: ``.venv/bin/python bench/bench_sync.py`` (10,000 items) or ``--quick`` (1,000);
``--profile`` adds a cProfile of one more download, sorted by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import statistics
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from _homes import bench_dir, disk_report

from localstore.config import load_settings
from localstore.store import BlueprintStore, SaveRequest
from sync.engine import DEFAULT_APPLY_BATCH, SyncEngine
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


def path(i: int) -> str:
    return f"f{i % 50}/item-{i}"


class Timer:
    """Adds up the wall-clock and thread CPU time spent inside wrapped calls."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - t0
                self.cpu += time.thread_time() - c0

        return timed


class TimedRemote(MemoryRemote):
    """MemoryRemote that adds up the time spent inside the remote (the server's share)."""

    def __init__(self, server: MemoryServer, *, user: str) -> None:
        super().__init__(server, user=user)
        self.timer = Timer()
        self.push = self.timer.wrap(super().push)  # type: ignore[method-assign]
        self.pull = self.timer.wrap(super().pull)  # type: ignore[method-assign]


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


@dataclass
class Download:
    """One timed download: totals and the split (seconds)."""

    wall: float
    cpu: float
    remote_wall: float
    save_wall: float
    save_cpu: float
    remote_cpu: float

    @property
    def engine_side(self) -> float:
        return self.wall - self.remote_wall

    @property
    def bookkeeping_wall(self) -> float:
        return self.wall - self.remote_wall - self.save_wall

    @property
    def bookkeeping_cpu(self) -> float:
        return self.cpu - self.remote_cpu - self.save_cpu


def fill(store: BlueprintStore, n: int, batch: int) -> float:
    """Save n blueprints with save_many in runs of ``batch``; returns the seconds taken."""
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        store.save_many(
            [SaveRequest(path(i), content(i)) for i in range(start, min(n, start + batch))]
        )
    return time.perf_counter() - t0


def download(
    server: MemoryServer, root: Path, name: str, n: int
) -> tuple[Download, BlueprintStore]:
    """Sync an empty home once; the store is returned open (close it)."""
    b = open_store(root, name)
    remote = TimedRemote(server, user="u")
    saves = Timer()
    b.save_many = saves.wrap(b.save_many)  # type: ignore[method-assign]
    engine = SyncEngine(b, remote)
    t0, c0 = time.perf_counter(), time.thread_time()
    report = engine.sync_once()
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    assert report.pulled >= n and b.count() == n, report
    del b.save_many  # back to the class's method
    result = Download(wall, cpu, remote.timer.wall, saves.wall, saves.cpu, remote.timer.cpu)
    return result, b


def memory_run(server: MemoryServer, root: Path, n: int) -> tuple[int, int]:
    """Peak tracemalloc and RSS growth of one (untimed) download."""
    b = open_store(root, "mem")
    engine = SyncEngine(b, MemoryRemote(server, user="u"))
    base_rss = psutil.Process().memory_info().rss
    tracemalloc.start()
    try:
        with RssSampler() as rss:
            engine.sync_once()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        b.close()
    return peak, rss.peak - base_rss


def idle_poll(store: BlueprintStore, engine: SyncEngine, times: int) -> tuple[float, float]:
    """Median seconds of ``sync_once()`` with nothing to do, and of ``status()``."""
    engine.sync_once()
    polls, statuses = [], []
    for _ in range(times):
        t0 = time.perf_counter()
        engine.sync_once()
        polls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.status()
        statuses.append(time.perf_counter() - t0)
    return statistics.median(polls), statistics.median(statuses)


def profile_download(server: MemoryServer, root: Path, n: int) -> str:
    """cProfile of one download, top functions by cumulative time."""
    b = open_store(root, "prof")
    engine = SyncEngine(b, MemoryRemote(server, user="u"))
    prof = cProfile.Profile()
    prof.enable()
    engine.sync_once()
    prof.disable()
    b.close()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(40)
    return out.getvalue()


def tmpfs_download(server: MemoryServer, n: int) -> float | None:
    """Blueprints/s of one download into a home on tmpfs (/dev/shm): the same engine and store
    with no disk under them, as a reference for how much of the figure is the disk."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return None
    root = Path(tempfile.mkdtemp(prefix="bench-sync-", dir=shm))
    try:
        run, store = download(server, root, "tmpfs", n)
        store.close()
        return n / run.engine_side
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench(n: int, repeats: int, edits: int, *, profile: bool) -> None:
    root, how = bench_dir("bench-sync-")
    try:
        # This VM's ext4 has no journal, and then creating a file costs several times more for
        # minutes after a mass delete (see bench/_homes.py): print the cost of the moment.
        print(disk_report(root, how))
        server = MemoryServer()
        floor_store = open_store(root, "floor")
        batch = DEFAULT_APPLY_BATCH
        floor_s = fill(floor_store, n, batch)
        floor_store.close()
        a = open_store(root, "a")
        fill(a, n, 500)
        remote_a = TimedRemote(server, user="u")
        engine_a = SyncEngine(a, remote_a)
        t0 = time.perf_counter()
        up = engine_a.sync_once()
        upload_s = time.perf_counter() - t0 - remote_a.timer.wall
        assert up.pushed == n, up

        runs: list[Download] = []
        b: BlueprintStore | None = None
        for r in range(repeats):
            run, store = download(server, root, f"b{r}", n)
            runs.append(run)
            if b is not None:
                b.close()
            b = store
        assert b is not None
        # Reopened: closing checkpoints the WAL the download left (~100 MB at 10,000 items with
        # maintenance off here), as a daemon's maintainer keeps doing; a huge WAL slows every read.
        b.close()
        b = open_store(root, f"b{repeats - 1}")
        engine_b = SyncEngine(b, MemoryRemote(server, user="u"))
        poll_s, status_s = idle_poll(b, engine_b, 20)
        traced_peak, rss_growth = memory_run(server, root, n)
        trips = round_trips(a, engine_a, b, engine_b, edits)
        b.close()
        a.close()
        report(n, batch, floor_s, upload_s, runs, traced_peak, rss_growth, trips, poll_s, status_s)
        tmpfs_rate = tmpfs_download(server, n)
        if tmpfs_rate is not None:
            disk_rate = n / sorted(d.engine_side for d in runs)[len(runs) // 2]
            print(
                f"reference, one download into a home on tmpfs (no disk): {tmpfs_rate:8.0f} /s; "
                f"on disk x{disk_rate / tmpfs_rate:.2f} of that"
            )
        print(f"(excluded: MemoryRemote's own time, {remote_a.timer.wall:.2f} s in the upload)")
        if profile:
            print(profile_download(server, root, n))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def round_trips(
    a: BlueprintStore, ea: SyncEngine, b: BlueprintStore, eb: SyncEngine, edits: int
) -> list[float]:
    out = []
    for i in range(edits):
        t0 = time.perf_counter()
        a.save(path(i), content(i) + f"# edit {i}\n")
        ea.sync_once()
        eb.sync_once()
        out.append(time.perf_counter() - t0)
        assert b.load(path(i)).content.endswith(f"# edit {i}\n")
    return out


def report(
    n: int,
    batch: int,
    floor_s: float,
    upload_s: float,
    runs: list[Download],
    traced_peak: int,
    rss_growth: int,
    trips: list[float],
    poll_s: float,
    status_s: float,
) -> None:
    med = sorted(runs, key=lambda d: d.engine_side)[len(runs) // 2]
    down_rate = n / med.engine_side
    floor_rate = n / floor_s
    us = 1e6 / n
    print(f"blueprints: {n} (~{len(content(1)) / 1024:.1f} KB YAML each); load {os.getloadavg()}")
    print(f"bare store.save_many, runs of {batch} (floor): {floor_rate:8.0f} /s ({floor_s:.2f} s)")
    print(f"initial upload (one run):   {n / upload_s:8.0f} /s   ({upload_s:.2f} s, engine side)")
    print(
        f"initial download:           {down_rate:8.0f} /s   median {med.engine_side:.2f} s "
        f"(engine side), p99 {pct([d.engine_side for d in runs], 0.99):.2f} s over {len(runs)} runs"
    )
    print(
        f"  split per blueprint (median run), wall / thread CPU: "
        f"store.save_many {med.save_wall * us:.0f} / {med.save_cpu * us:.0f} us, "
        f"engine bookkeeping {med.bookkeeping_wall * us:.0f} / {med.bookkeeping_cpu * us:.0f} us, "
        f"remote pull {med.remote_wall * us:.0f} us"
    )
    print(
        f"  engine bookkeeping share of the engine side: {med.bookkeeping_wall / med.engine_side:.1%}"
    )
    print(f"  vs goal {GOAL_PER_S:.0f}/s:         x{down_rate / GOAL_PER_S:.2f}")
    print(
        f"  vs Syncthing {SYNCTHING_PER_S:.0f}/s:    x{down_rate / SYNCTHING_PER_S:.2f} (field notes)"
    )
    print(f"  vs bare store.save_many:  x{down_rate / floor_rate:.2f}")
    print(
        f"engine memory during download: tracemalloc peak {traced_peak / 2**20:.1f} MiB, "
        f"RSS growth {rss_growth / 2**20:.1f} MiB"
    )
    print(
        f"idle poll of the synced home: sync_once() median {poll_s * 1e3:.2f} ms, "
        f"status() median {status_s * 1e3:.3f} ms"
    )
    print(
        f"edit round trip (save A, sync A, sync B): median {statistics.median(trips) * 1e3:.1f} ms, "
        f"p99 {pct(trips, 0.99) * 1e3:.1f} ms over {len(trips)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 blueprints, fewer repeats")
    parser.add_argument("-n", type=int, default=None, help="number of blueprints")
    parser.add_argument("--profile", action="store_true", help="cProfile one more download")
    args = parser.parse_args()
    n = args.n or (1_000 if args.quick else 10_000)
    bench(n, repeats=3, edits=50 if args.quick else 200, profile=args.profile)


if __name__ == "__main__":
    main()
