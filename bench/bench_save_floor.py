"""How close can any save get to the bare durable pair write? The floor under the 1.5x goal.

DESIGN.md acknowledges a save only after both files are durable (temp, fsync, rename, fsync of
the folder) *and* the index commit is done; the store commits with ``synchronous=FULL``, so a save
is at least the bare pair write plus one WAL flush. This measures that floor with no Python work
at all, in one run, alternating:

- bare:       the peer of bench_store.py (two temps, two fsyncs, two renames, one folder fsync);
- commit:     one SQLite transaction alone, sized like a save's (about 20 WAL pages: a few rows
              of a table with several indexes changed), ``synchronous=FULL``;
- sequential: bare, then the commit (the order the store uses: files first);
- overlapped: the commit while a second thread flushes the temps (what a save could do at best
              if the index were allowed to commit before the files are in place);
- one flush:  the temps flushed and renamed, the commit with ``synchronous=NORMAL`` (no flush of
              its own), then one ``syncfs`` for the folder and the WAL together (the same
              durability as bare-then-commit at the acknowledgement, with one flush fewer).

It also prints the file-create cost at the moment of the run: ext4 without a journal (the
benchmark VM's root filesystem) skips inodes freed in the last minutes (``recently_deleted`` in
the kernel's inode allocator), so right after a benchmark or a test suite deleted many files,
each create can cost 100-1,000 us of CPU instead of ~15-30 us; the homes are therefore made in
a block group of their own (bench/_homes.py), and the cost in a plain temp folder is printed
beside it.

    .venv/bin/python bench/bench_save_floor.py [--rounds 400] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import apsw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _homes import bench_dir, disk_report
from bench_store import bare_pair_write, pct

from localstore.files import syncfs


class IndexLike:
    """A WAL database with the shape that matters: a 2 KB row per item and several indexes."""

    def __init__(self, path: Path, rows: int = 20_000, synchronous: str = "FULL") -> None:
        self.db = apsw.Connection(str(path))
        self.db.execute("PRAGMA journal_mode=WAL").fetchall()
        self.db.execute(f"PRAGMA synchronous={synchronous}").fetchall()
        self.db.execute("PRAGMA wal_autocheckpoint=0").fetchall()  # checkpoints run off the path
        self.db.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT, c TEXT, body BLOB)"
        )
        for col in "abc":
            self.db.execute(f"CREATE INDEX t_{col} ON t({col})")
        with self.db:
            self.db.executemany(
                "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                (
                    (i, *(os.urandom(8).hex() for _ in range(3)), os.urandom(1500))
                    for i in range(rows)
                ),
            )
        self.rows = rows
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def commit(self) -> None:
        """One transaction of about 20 WAL pages (measured with bench/wal_pages.py on the store)."""
        self.db.execute("BEGIN IMMEDIATE")
        for _ in range(4):
            self.db.execute(
                "UPDATE t SET a = ?, b = ?, c = ?, body = ? WHERE id = ?",
                (
                    *(os.urandom(8).hex() for _ in range(3)),
                    os.urandom(1500),
                    random.randrange(self.rows),
                ),
            )
        self.db.execute("COMMIT")

    def checkpoint(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="100 rounds")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 100
    base, how = bench_dir("ls-floor-")
    try:
        print(disk_report(base, how))
        files = base / "files"
        files.mkdir()
        index = IndexLike(base / "index.db")
        unflushed = IndexLike(base / "unflushed.db", synchronous="NORMAL")
        yaml_bytes, meta_bytes = os.urandom(2100), os.urandom(300)
        pool = ThreadPoolExecutor(1)

        def bare(i: int) -> None:
            bare_pair_write(files, yaml_bytes, meta_bytes, f"w{i % 500}")

        def commit(i: int) -> None:
            index.commit()

        def sequential(i: int) -> None:
            bare(i)
            index.commit()

        def overlapped(i: int) -> None:
            done = pool.submit(bare, i)
            index.commit()
            done.result()

        def one_flush(i: int) -> None:
            bare_pair_write(files, yaml_bytes, meta_bytes, f"w{i % 500}", flush_folder=False)
            unflushed.commit()
            syncfs(str(files))

        cases: dict[str, Callable[[int], None]] = {
            "bare pair write": bare,
            "index commit alone": commit,
            "bare, then commit": sequential,
            "bare overlapped with commit": overlapped,
            "one flush for folder and WAL": one_flush,
        }
        samples: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.rounds):
            for name, fn in cases.items():  # alternating, so a drifting disk hits all alike
                t = time.perf_counter()
                fn(r)
                samples[name].append((time.perf_counter() - t) * 1000)
            if r % 50 == 49:
                index.checkpoint()
                unflushed.checkpoint()
        pool.shutdown()
        bare_p50 = statistics.median(samples["bare pair write"])
        for name, xs in samples.items():
            p50 = statistics.median(xs)
            print(
                f"{name:<30} p50={p50:7.3f} ms  p99={pct(xs, 99):7.3f} ms  "
                f"x{p50 / bare_p50:4.2f} the bare write"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
