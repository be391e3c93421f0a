"""A home ten times the other benchmarks': 100,000 blueprints of about 2 KB in 10,000 folders.

Looks for cliffs (work or memory that grows faster than the home): open with reconcile,
listings (all, one folder, below a folder), search in a folder, the watcher's start and rescan.
Each part reports wall time, CPU time and the process's RSS. Fill once, then measure:

    .venv/bin/python bench/bench_scale.py --home /dev/shm/scale --fill   # ~2 min, 1.4 GB
    .venv/bin/python bench/bench_scale.py --home /dev/shm/scale

Layout: 3 folders of 2,500 blueprints (5,000 files each), the rest in team<k>/proj<j> (100 x 100
folders), 3 blueprints of 2, 4 and 7 MB in huge/. The CLI's `ls` and `check` of the same home
are measured with /usr/bin/time (docs/benchmarks/store.md, session 11).
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from bench_store import WORDS, make_doc

import localstore
from localstore.store import SaveRequest
from localstore.watcher import Watcher

BIG_FOLDERS = 3
BIG_FOLDER_SIZE = 2_500


def fill(home: Path, n: int) -> None:
    rng = random.Random(1)
    paths = [f"big{i % BIG_FOLDERS}/workflow-{i}" for i in range(BIG_FOLDERS * BIG_FOLDER_SIZE)]
    paths += [f"team{k % 100}/proj{(k // 100) % 100}/workflow-{k}" for k in range(n - len(paths))]
    t0 = time.perf_counter()
    with localstore.open(home=home) as store:
        for start in range(0, len(paths), 1000):
            store.save_many(
                [
                    SaveRequest(path=p, content=make_doc(rng, i), fields={"tags": [WORDS[i % 7]]})
                    for i, p in enumerate(paths[start : start + 1000], start)
                ]
            )
        for j, mb in enumerate((2, 4, 7)):
            lines, size = ["name: huge", "steps:"], 0
            while size < mb * 2**20:
                words = " ".join(rng.choice(WORDS) for _ in range(40))
                lines.append(f"  - name: step-{len(lines)}\n    run: {words}")
                size += len(lines[-1]) + 1
            store.save(f"huge/blueprint-{j}", "\n".join(lines) + "\n")
    print(f"filled {n} blueprints in {time.perf_counter() - t0:.0f} s")


def measure(label: str, fn: Callable[[], object], rounds: int = 3) -> object:
    proc = psutil.Process()
    walls, cpus, result = [], [], None
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append((time.perf_counter() - t) * 1000)
        cpus.append((time.process_time() - c) * 1000)
    size = f" ({len(result)} rows)" if isinstance(result, list) else ""
    print(
        f"{label + size:<52} wall {min(walls):>9.1f} ms  cpu {min(cpus):>9.1f} ms  "
        f"rss {proc.memory_info().rss / 2**20:7.1f} MiB"
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--fill", action="store_true", help="create the home first")
    args = ap.parse_args()
    if args.fill:
        fill(args.home, args.n)
    proc = psutil.Process()
    print(f"interpreter and imports: rss {proc.memory_info().rss / 2**20:.1f} MiB")
    measure("open + reconcile (unchanged)", lambda: localstore.open(home=args.home).close())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS so far (the opens): {peak:.1f} MiB")
    store = localstore.open(home=args.home)
    try:
        measure("list all, first (full read; arms the cache)", store.list, rounds=1)
        measure("list all, cached", store.list)
        measure("list one folder of 2,500", lambda: store.list(folder="big0"))
        measure("list one folder of 10", lambda: store.list(folder="team5/proj7"))
        measure("list below a folder (925)", lambda: store.list(folder="team5"))
        measure("search 'deploy' (every blueprint has it)", lambda: store.search("deploy"))
        measure(
            "search 'deploy' in a folder of 10",
            lambda: store.search("deploy", folder="team5/proj7"),
        )
        measure(
            "search 'deploy' below a folder (925)",
            lambda: store.search("deploy", folder="team5"),
        )
        measure(
            "search 'deploy' in a folder of 2,500",
            lambda: store.search("deploy", folder="big0"),
        )
        measure(
            "search a rare word in a folder of 2,500",
            lambda: store.search("5000", folder="big0"),
        )
        measure("search a name", lambda: store.search("workflow-5000"))
        measure("load a 7 MB blueprint", lambda: store.load("huge/blueprint-2"))
        watcher = Watcher(store)
        measure("watcher start (one watch per folder)", watcher.start, rounds=1)
        measure("watcher: first wait_idle", lambda: watcher.wait_idle(timeout=300), rounds=1)
        measure("watcher rescan (unchanged)", watcher.rescan)
        watcher.stop()
    finally:
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {peak:.1f} MiB")


if __name__ == "__main__":
    main()
