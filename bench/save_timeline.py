"""Where a single durable save's time goes: the median moment each step starts, in one process.

The save ratio of issue #2 (a save against the bare durable pair write) is bounded by what a save
must do after the files are in place; this shows each step's place on the save's timeline, so a
change to the save path can be judged by the step it moves. It updates blueprints of a
300-blueprint store on disk (the homes of bench/_homes.py), alternating with the bare pair write
of bench_store.py, and wraps, only in this process, the file layer's fsync and rename steps and
traces the index statements (apsw's exec trace) to timestamp them:

- ``BEGIN``:        the write lock taken (BEGIN IMMEDIATE issued);
- ``temps``:        the first temp file's create, the second's write done, the flush handed over;
- ``fsync``:        each temp's fsync on a flusher thread (start: the hand-over's thread wake-up);
- ``renames``:      the wait for both fsyncs over, the renames begun;
- ``folder fsync``: the directory's fsync;
- ``COMMIT``:       the index commit issued; ``COMMIT done``: its WAL write and flush over (the
                    WAL hook; then the after-commit callbacks and the change events);
- ``acknowledged``: save() returns.

The wrapping costs a few microseconds a step, so the total is a little above bench_store.py's.

    .venv/bin/python bench/save_timeline.py [--saves 300]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import apsw
from _homes import bench_dir, cpu_probe
from bench_store import bare_pair_write, make_doc

import localstore
from localstore import files as fs
from localstore._index_connect import _WalGuard
from localstore.store import SaveRequest

_events: list[tuple[str, int]] = []


def _mark(name: str) -> None:
    _events.append((name, time.perf_counter_ns()))


def _around(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _mark(name + " start")
        try:
            return fn(*args, **kwargs)
        finally:
            _mark(name + " end")

    return wrapped


def _instrument() -> None:
    """Timestamps around the file layer's steps (module globals, looked up at each call)."""
    fs._fsync_and_close = _around("fsync", fs._fsync_and_close)
    fs.fsync_dir = _around("folder fsync", fs.fsync_dir)
    fs.PendingWrites.add = _around("temp write", fs.PendingWrites.add)  # type: ignore[method-assign]
    fs.PendingWrites.commit = _around("renames", fs.PendingWrites.commit)  # type: ignore[method-assign]
    start_flush = fs.PendingWrites.start_flush

    def start_flush_marked(self: fs.PendingWrites) -> None:
        if self._unflushed:
            _mark("flush handed over")
        start_flush(self)

    fs.PendingWrites.start_flush = start_flush_marked  # type: ignore[method-assign]


def _wal_hook(guard: _WalGuard) -> Callable[[apsw.Connection, str, int], int]:
    """The store's WAL hook (its writer's checkpoint past WAL_HARD_LIMIT), timestamped."""

    def hook(conn: apsw.Connection, dbname: str, pages: int) -> int:
        _mark("COMMIT done")
        return guard(conn, dbname, pages)

    return hook


def _trace(_cursor: Any, sql: str, _bindings: Any) -> bool:
    if sql.startswith(("BEGIN", "COMMIT")):
        _mark(sql.split()[0])
    return True


# (step, which of its occurrences in a save: first or last)
_STEPS = [
    ("BEGIN", 0),
    ("temp write start", 0),
    ("temp write end", -1),
    ("flush handed over", 0),
    ("fsync start", 0),
    ("fsync start", -1),
    ("fsync end", 0),
    ("fsync end", -1),
    ("renames start", 0),
    ("folder fsync start", 0),
    ("folder fsync end", 0),
    ("renames end", 0),
    ("COMMIT", 0),
    ("COMMIT done", 0),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--saves", type=int, default=300)
    args = ap.parse_args()
    _instrument()
    base, _how = bench_dir("ls-timeline-")
    try:
        print(f"cpu reference now: {cpu_probe():.2f} ms (bench/_homes.py cpu_probe)")
        rng = random.Random(3)
        docs = [make_doc(rng, i) for i in range(300)]
        steps: dict[tuple[str, int], list[float]] = defaultdict(list)
        totals: list[float] = []
        bare: list[float] = []
        peer = base / "bare"
        peer.mkdir()
        with localstore.open(home=base / "home") as store:
            store.save_many(
                [SaveRequest(path=f"f{i % 50}/w{i}", content=docs[i]) for i in range(300)]
            )
            store.index.conn.exec_trace = _trace
            page_size = int(str(store.index.conn.execute("PRAGMA page_size").fetchall()[0][0]))
            store.index.conn.setwalhook(_wal_hook(_WalGuard(store.paths.index_db, page_size)))
            for k in range(args.saves):
                i = rng.randrange(300)
                text = docs[i] + f"# edit {k}\n"
                _events.clear()
                t0 = time.perf_counter_ns()
                store.save(f"f{i % 50}/w{i}", text)
                totals.append((time.perf_counter_ns() - t0) / 1000)
                seen: dict[str, list[int]] = defaultdict(list)
                for name, t in _events:
                    seen[name].append(t)
                for name, which in _STEPS:
                    if seen.get(name):
                        steps[(name, which)].append((seen[name][which] - t0) / 1000)
                t1 = time.perf_counter()
                bare_pair_write(peer, text.encode(), os.urandom(280), f"w{k % 300}")
                bare.append((time.perf_counter() - t1) * 1e6)
        print(f"{'step':<28} {'median us from the save start':>30}")
        for name, which in _STEPS:
            xs = steps.get((name, which))
            if xs:
                label = name + (" (2nd)" if which == -1 else "")
                print(f"{label:<28} {statistics.median(xs):>30.0f}")
        save_p50, bare_p50 = statistics.median(totals), statistics.median(bare)
        print(f"{'acknowledged':<28} {save_p50:>30.0f}")
        print(f"bare pair write p50 {bare_p50:.0f} us; save / bare {save_p50 / bare_p50:.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
