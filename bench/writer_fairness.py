"""Writer fairness: an app saving back to back beside another process saving now and then.

Two real processes on one home. The *app* saves for ``--seconds`` without pause (single saves,
or ``save_many`` batches with ``--batch``); the *other* process (a daemon, a CLI) saves one
blueprint every ``--gap-ms`` and times each save (its wait for the write lock is nearly all of
it). Prints each process's saves/s, the other's median, p90 and max save time, and how many of
its saves failed (a busy error: its wait for the lock outlasted ``--busy-timeout-ms``).

    .venv/bin/python bench/writer_fairness.py                       # 20 s, 30 s busy timeout
    .venv/bin/python bench/writer_fairness.py --busy-timeout-ms 500 # can a waiter time out?
    .venv/bin/python bench/writer_fairness.py --batch 20            # the app uses save_many
    .venv/bin/python bench/writer_fairness.py --apart               # reference: two homes
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _homes import bench_dir

import localstore
from localstore.errors import LocalStoreError
from localstore.store import SaveRequest

TEXT = "name: bp\ndescription: a blueprint of about 2 KB\nsteps:\n" + "".join(
    f"  - run: echo step {i} of a build that does something\n" for i in range(40)
)


def app(home: str, seconds: float, batch: int, busy_ms: int, out: str) -> None:
    """Save back to back until the time is up (the paced other process is told by a file)."""
    store = localstore.open(home=home, busy_timeout_ms=busy_ms)
    print("ready", flush=True)
    sys.stdin.readline()
    saves = failed = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        try:
            if batch > 1:
                store.save_many(
                    [SaveRequest(f"app/bp-{(saves + i) % 200}", TEXT) for i in range(batch)]
                )
            else:
                store.save(f"app/bp-{saves % 200}", TEXT)
        except LocalStoreError:
            failed += 1
            continue
        saves += batch
    elapsed = time.monotonic() - start
    store.close()
    Path(out).write_text(json.dumps({"saves": saves, "failed": failed, "elapsed": elapsed}))


def other(home: str, seconds: float, gap_ms: float, busy_ms: int, out: str) -> None:
    """One save every ``gap_ms`` (after the previous one ended), each timed."""
    store = localstore.open(home=home, busy_timeout_ms=busy_ms)
    print("ready", flush=True)
    sys.stdin.readline()
    times: list[float] = []
    errors: list[str] = []
    start = time.monotonic()
    deadline = start + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        t0 = time.perf_counter()
        try:
            store.save(f"other/bp-{n % 50}", TEXT)
            times.append(time.perf_counter() - t0)
        except LocalStoreError as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
        time.sleep(gap_ms / 1000)
    elapsed = time.monotonic() - start
    store.close()
    Path(out).write_text(json.dumps({"times": times, "errors": errors, "elapsed": elapsed}))


def run(args: argparse.Namespace) -> dict[str, object]:
    """Both processes on a new home; their results."""
    folder, _how = bench_dir("fairness-")
    try:
        home = folder / "home"
        localstore.open(home=home).close()
        other_home = home
        if args.apart:
            other_home = folder / "other-home"
            localstore.open(home=other_home).close()
        cmds = {
            "app": [str(home), str(args.seconds), str(args.batch), str(args.busy_timeout_ms)],
            "other": [
                str(other_home),
                str(args.seconds),
                str(args.gap_ms),
                str(args.busy_timeout_ms),
            ],
        }
        procs = {}
        for role, rest in cmds.items():
            procs[role] = subprocess.Popen(
                [sys.executable, __file__, "--role", role, *rest, str(folder / f"{role}.json")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs.values():  # both start together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for role, proc in procs.items():
            proc.communicate(timeout=args.seconds * 3 + 120)
            if proc.returncode:
                raise SystemExit(f"{role} failed ({proc.returncode})")
        return {
            role: json.loads((folder / f"{role}.json").read_text()) for role in ("app", "other")
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(res: dict[str, object], args: argparse.Namespace) -> None:
    app_r, other_r = res["app"], res["other"]
    assert isinstance(app_r, dict) and isinstance(other_r, dict)
    times = sorted(other_r["times"])
    n_ok, n_err = len(times), len(other_r["errors"])
    print(
        ("homes apart; " if args.apart else "")
        + f"app ({'save_many x' + str(args.batch) if args.batch > 1 else 'save'}): "
        f"{app_r['saves']} saves, {app_r['saves'] / app_r['elapsed']:.0f}/s"
        f" ({app_r['failed']} failed)"
    )
    line = f"other (one save every {args.gap_ms:g} ms): {n_ok} saves, {n_ok / other_r['elapsed']:.1f}/s"
    if times:
        p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
        line += (
            f"; save time median {statistics.median(times) * 1000:.1f} ms,"
            f" p90 {p90 * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms"
        )
    line += f"; {n_err} failed (busy timeout {args.busy_timeout_ms} ms)"
    print(line)
    for err in other_r["errors"][:2]:
        print(f"  e.g. {err}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role, home, seconds, x, busy, out = sys.argv[2:8]
        if role == "app":
            app(home, float(seconds), int(x), int(busy), out)
        else:
            other(home, float(seconds), float(x), int(busy), out)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=1, help="app saves with save_many(N)")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="the other's pause")
    parser.add_argument("--busy-timeout-ms", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--apart",
        action="store_true",
        help="the other process saves in a home of its own (the same CPU and disk, no lock "
        "to share): the reference for what the app loses to the lock",
    )
    args = parser.parse_args()
    for _ in range(args.runs):
        report(run(args), args)


if __name__ == "__main__":
    main()
