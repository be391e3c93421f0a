"""What a rename over an existing file costs, and how much of it is freeing the replaced file.

A save renames two temps over the pair it replaces. When the replaced file has no other link,
the kernel frees its inode and blocks inside the rename, on the saving thread. Held open
(``O_PATH``) across the rename, the file is freed only when that descriptor closes, which
the store does on its flusher thread (localstore.files._hold). Linux only. Prints medians
(us) and p99 of, alternating in one run:

- over:        a rename over an existing 2 KB file (what a bare durable write pays);
- over, held:  the same with the replaced file held open (what a save pays now);
- new name:    a rename to a name nothing has (the floor);
- close held:  closing the held descriptor afterwards (the freeing, now off the save's path).

    .venv/bin/python bench/bench_rename_hold.py [--rounds 400]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _homes import bench_dir
from bench_store import pct


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=400)
    args = ap.parse_args()
    if not hasattr(os, "O_PATH"):
        raise SystemExit("Linux only (O_PATH)")
    folder, where = bench_dir("ls-rename-")
    print(f"files in {folder}: {where}")
    data = b"x" * 2000
    took: dict[str, list[float]] = {"over": [], "over, held": [], "new name": [], "close held": []}
    try:
        for k in range(args.rounds):
            for mode in ("over", "over, held", "new name"):
                target, tmp = str(folder / f"f{k % 20}"), str(folder / f".t{k}")
                if mode == "new name":
                    if os.path.exists(target):
                        os.unlink(target)
                else:
                    _write(target, data)
                _write(tmp, data)
                held = os.open(target, os.O_PATH | os.O_NOFOLLOW) if mode == "over, held" else None
                t = time.perf_counter()
                os.replace(tmp, target)
                took[mode].append((time.perf_counter() - t) * 1e6)
                if held is not None:
                    t = time.perf_counter()
                    os.close(held)
                    took["close held"].append((time.perf_counter() - t) * 1e6)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for mode, values in took.items():
        print(f"{mode:12s} p50={statistics.median(values):7.1f} us  p99={pct(values, 99):7.1f} us")


if __name__ == "__main__":
    main()
