"""Benchmark the blueprint watcher.

Measures, in one run on this machine:
1. external edit -> indexed-and-event latency (median, p95, p99), for an in-place save and a
   rename-based (gedit-style) save, with the raw watchdog callback latency as the floor (ratio);
2. 1,000 files changed at once by a git-checkout-style rewrite: time until all are indexed;
3. rescan of 10,000 unchanged blueprints;
4. watcher CPU while idle;
5. external delete -> deleted event (the 400 ms grace plus the fence a delete waits for), one file
   at a time and a folder of 1,000 at once.

Run: .venv/bin/python bench/bench_watcher.py [--quick] [--only-deletes]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localstore.blueprint import BlueprintMeta, encode_meta, new_id, utc_now
from localstore.config import load_settings
from localstore.events import Event
from localstore.store import BlueprintStore
from localstore.watcher import Watcher


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, ms: list[float]) -> str:
    return (
        f"{name:<44} n={len(ms):<5} median {statistics.median(ms):7.1f} ms   "
        f"p95 {pct(ms, 0.95):7.1f} ms   p99 {pct(ms, 0.99):7.1f} ms"
    )


def open_store(home: Path) -> BlueprintStore:
    return BlueprintStore(load_settings(home=home, environ={}), reconcile=False)


class Waiter:
    """Wakes the benchmark when an external event for a path arrives."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seen: dict[str, float] = {}

    def __call__(self, ev: Event) -> None:
        if ev.origin == "external" and ev.kind in ("created", "modified"):
            with self.cond:
                self.seen[ev.path] = time.perf_counter()
                self.cond.notify_all()

    def wait_for(self, path: str, timeout: float = 10.0) -> float:
        with self.cond:
            self.cond.wait_for(lambda: path in self.seen, timeout)
            return self.seen.pop(path)


def bench_latency(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp))
        waiter = Waiter()
        store.subscribe(waiter)
        rel = "lat/edit.blueprint.yaml"
        store.save(rel, "i: 0\n")
        with Watcher(store) as w:
            w.wait_idle()
            path = store.abspath(rel)
            inplace, renamed = [], []
            for i in range(1, n + 1):
                t0 = time.perf_counter()
                path.write_bytes(f"i: {i}\n".encode())
                inplace.append((waiter.wait_for(rel) - t0) * 1000)
                tmp_file = path.with_name(".goutputstream-BENCH")
                tmp_file.write_bytes(f"i: {i}\nrenamed: true\n".encode())
                t0 = time.perf_counter()
                os.rename(tmp_file, path)
                renamed.append((waiter.wait_for(rel) - t0) * 1000)
                time.sleep(0.01)  # let the echo of the previous edit pass, as between real edits
        store.close()
    floor = raw_watchdog_latency(n)
    print(summary("edit -> indexed+event, in-place write", inplace))
    print(summary("edit -> indexed+event, rename over (gedit)", renamed))
    print(summary("raw watchdog callback (floor)", floor))
    print(
        f"ratio to raw callback (median): in-place {statistics.median(inplace) / statistics.median(floor):.0f}x"
        f" (the 40 ms settle window is most of it)"
    )


def raw_watchdog_latency(n: int) -> list[float]:
    got = threading.Event()
    stamp: list[float] = []

    class H(FileSystemEventHandler):
        def dispatch(self, event: FileSystemEvent) -> None:
            if event.event_type == "closed":
                stamp.append(time.perf_counter())
                got.set()

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        obs = Observer()
        obs.schedule(H(), tmp, recursive=True)
        obs.start()
        p = Path(tmp) / "x.yaml"
        for i in range(n):
            got.clear()
            t0 = time.perf_counter()
            p.write_bytes(f"i: {i}\n".encode())
            got.wait(5)
            out.append((stamp[-1] - t0) * 1000)
        obs.stop()
        obs.join()
    return out


def make_blueprints(store: BlueprintStore, count: int, folder: str) -> None:
    """Write pairs (YAML and meta) directly, then index them with one watcher rescan."""
    root = store.root / folder
    root.mkdir(parents=True, exist_ok=True)
    now = utc_now()
    for i in range(count):
        (root / f"bp-{i}.blueprint.yaml").write_text(f"n: {i}\nsteps: [a, b, c]\n")
        meta = BlueprintMeta(id=new_id(), name=f"bp-{i}", created=now, modified=now)
        (root / f"bp-{i}.blueprint.meta.json").write_bytes(encode_meta(meta))
    Watcher(store).rescan()


def bench_checkout(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp))
        make_blueprints(store, count, "repo")
        seen: set[str] = set()
        done = threading.Event()

        def on_event(ev: Event) -> None:
            if ev.origin == "external" and ev.kind == "modified":
                seen.add(ev.path)
                if len(seen) >= count:
                    done.set()

        store.subscribe(on_event)
        with Watcher(store) as w:
            w.wait_idle()
            t0 = time.perf_counter()
            for i in range(count):  # git checkout: unlink, then create
                p = store.root / "repo" / f"bp-{i}.blueprint.yaml"
                p.unlink()
                p.write_text(f"n: {i}\nsteps: [a, b, c, d]\n")
            written = time.perf_counter() - t0
            done.wait(120)
            total = time.perf_counter() - t0
        print(
            f"checkout of {count} files: written in {written:.2f} s, all indexed+events in "
            f"{total:.2f} s ({len(seen)} modified events)"
        )
        store.close()


def bench_rescan(count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp))
        t0 = time.perf_counter()
        make_blueprints(store, count, "many")
        print(
            f"set-up: {count} new blueprints indexed by one rescan in {time.perf_counter() - t0:.1f} s"
        )
        w = Watcher(store)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            report = w.rescan()
            times.append((time.perf_counter() - t0) * 1000)
            assert report.changed == 0 and report.missing == 0
        print(summary(f"rescan of {count} unchanged blueprints", times))
        idle_cpu(store, 3.0 if rounds < 5 else 10.0)
        store.close()


def idle_cpu(store: BlueprintStore, seconds: float) -> None:
    with Watcher(store) as w:
        w.wait_idle()
        c0, t0 = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        cpu = time.process_time() - c0
        wall = time.perf_counter() - t0
    print(f"idle CPU of the watcher (whole process, {wall:.0f} s): {100 * cpu / wall:.3f} %")


class DeleteWaiter:
    """Records when the external 'deleted' event of each path arrived."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seen: dict[str, float] = {}

    def __call__(self, ev: Event) -> None:
        if ev.origin == "external" and ev.kind == "deleted":
            with self.cond:
                self.seen[ev.path] = time.perf_counter()
                self.cond.notify_all()

    def wait_until(self, count: int, prefix: str, timeout: float) -> bool:
        def enough() -> bool:
            return sum(p.startswith(prefix) for p in self.seen) >= count

        with self.cond:
            return self.cond.wait_for(enough, timeout)


def bench_delete(n: int, folder_count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp))
        waiter = DeleteWaiter()
        store.subscribe(waiter)
        rels = [store.save(f"del/d-{i}", f"i: {i}\n").path for i in range(n)]
        make_blueprints(store, folder_count, "tree")
        with Watcher(store) as w:
            w.wait_idle()
            grace_ms = w.grace_s * 1000
            one = []
            for rel in rels:
                t0 = time.perf_counter()
                store.abspath(rel).unlink()
                assert waiter.wait_until(1, rel, 10), f"no delete event for {rel}"
                one.append((waiter.seen[rel] - t0) * 1000)
            t0 = time.perf_counter()
            # rm -rf semantics: once a YAML's grace is over the watcher removes its meta file
            # itself, which a slow rmtree (a loaded machine) would otherwise trip over.
            shutil.rmtree(store.root / "tree", ignore_errors=True)
            complete = waiter.wait_until(folder_count, "tree/", 120)
            folder_s = time.perf_counter() - t0
        store.close()
    print(summary(f"delete -> event (grace {grace_ms:.0f} ms included)", one))
    print(f"  beyond the grace: median {statistics.median(one) - grace_ms:.1f} ms")
    state = "all" if complete else "NOT all"
    print(f"folder of {folder_count} deleted: {state} delete events in {folder_s:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run for a smoke check")
    ap.add_argument("--only-deletes", action="store_true", help="run only the delete benchmark")
    args = ap.parse_args()
    print(
        f"bench_watcher {time.strftime('%Y-%m-%d %H:%M')} cpus={os.cpu_count()} quick={args.quick}"
        f" load={os.getloadavg()[0]:.1f}"
    )
    bench_delete(20 if args.quick else 100, 1000)
    if args.only_deletes:
        return
    bench_latency(40 if args.quick else 300)
    bench_checkout(1000)
    bench_rescan(2000 if args.quick else 10_000, 3 if args.quick else 10)


if __name__ == "__main__":
    main()
