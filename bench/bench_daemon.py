"""Idle cost of the daemon on a home of N blueprints: CPU, RSS, threads, open files.

Runs `localstore daemon` as a subprocess twice on the same home: offline (not logged in: watcher +
control API) and online (logged in to a local Supabase-compatible stack: + sync engine, realtime
channel, 30 s polling), then online again after a restart ("restarted": the steady state of a
daemon on an already-synced home, without the heap the initial upload left). For each it records the time to ready, then samples the daemon's
cpu_times() every second over an idle window and prints the per-second CPU % and RSS as median /
p99 / mean. Online, it also times the initial upload of every blueprint. Goals (issue 7): idle CPU
< 1 %, RSS <= 120 MB. The online run needs the OS keychain and PostgreSQL, so run it like the
tests:

    dbus-run-session -- bash scripts/_in_keyring_session .venv/bin/python bench/bench_daemon.py
    .venv/bin/python bench/bench_daemon.py --quick       # 1,000 blueprints, 10 s windows
    .venv/bin/python bench/bench_daemon.py --offline-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from bench_store import WORDS as STORE_WORDS
from bench_store import pct  # one percentile rule for every benchmark

import localstore
from localstore.config import load_settings
from sync.control import ControlClient
from sync.embed import daemon_running

WORDS = STORE_WORDS[:12]  # the store bench's vocabulary: the same documents as before
# Published by the field notes (Syncthing 1.19 on this kind of machine), not measured here.
SYNCTHING_IDLE_CPU_PCT = 0.03
SYNCTHING_RSS_MIB = (73, 81)


def make_doc(rng: random.Random, i: int, size: int = 2048) -> str:
    lines = [f"name: workflow-{i}", "steps:"]
    n = 0
    while sum(len(x) + 1 for x in lines) < size:
        n += 1
        lines.append(f"  - name: step-{n}")
        lines.append(f"    run: {' '.join(rng.choice(WORDS) for _ in range(6))}")
    return "\n".join(lines) + "\n"


def build_home(home: Path, n: int) -> float:
    """Write N blueprint files, then let the store's reconcile-on-open index them.

    Much faster than N durable saves (~19 ms each on a loaded VM) and the same home for the daemon.
    """
    from localstore.blueprint import BlueprintMeta, encode_meta, new_id, utc_now

    rng = random.Random(1)
    started = time.perf_counter()
    root = home / "blueprints"
    now = utc_now()
    for i in range(n):
        folder = root / f"f{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"bp-{i:05d}.blueprint.yaml").write_text(make_doc(rng, i))
        meta = BlueprintMeta(id=new_id(), name=f"bp-{i:05d}", created=now, modified=now)
        (folder / f"bp-{i:05d}.blueprint.meta.json").write_bytes(encode_meta(meta))
    with localstore.open(home=home) as store:
        assert store.count() == n, store.count()
    return time.perf_counter() - started


def spawn(home: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    args = [sys.executable, "-c", "from localstore.cli import main; main()"]
    args += ["--home", str(home), "daemon", "--log-level", "WARNING", "--no-stderr"]
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=out, env=env)


def wait_ready(home: Path, proc: subprocess.Popen[bytes], timeout: float = 300) -> float:
    started = time.perf_counter()
    settings = load_settings(home=home, environ={})
    while time.perf_counter() - started < timeout:
        state = daemon_running(settings)
        if state is not None and state.get("pid") == proc.pid:
            return time.perf_counter() - started
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode}")
        time.sleep(0.02)
    raise SystemExit("the daemon did not become ready")


def wait_synced(home: Path, timeout: float = 1800) -> float:
    """Seconds until the daemon reports nothing pending (the initial upload)."""
    started = time.perf_counter()
    with ControlClient.connect(load_settings(home=home, environ={}), timeout=60) as c:
        while time.perf_counter() - started < timeout:
            s = c.status()["sync"]
            if s.get("state") == "idle" and s.get("pending") == 0 and s.get("last_synced_at"):
                return time.perf_counter() - started
            time.sleep(0.5)
    raise SystemExit("the initial sync did not finish")


def idle_window(pid: int, seconds: float) -> dict[str, Any]:
    proc = psutil.Process(pid)
    cpu: list[float] = []
    rss: list[float] = []
    t0 = proc.cpu_times()
    start = prev_t = time.monotonic()
    prev = t0.user + t0.system
    while time.monotonic() - start < seconds:
        time.sleep(1.0)
        with proc.oneshot():
            t = proc.cpu_times()
            now = time.monotonic()
            total = t.user + t.system
            cpu.append(100 * (total - prev) / (now - prev_t))
            rss.append(proc.memory_info().rss / 2**20)
            threads, fds = proc.num_threads(), proc.num_fds()
        prev, prev_t = total, now
    t1 = proc.cpu_times()
    return {
        "cpu_pct_mean": 100 * ((t1.user + t1.system) - (t0.user + t0.system)) / seconds,
        "cpu_pct_median": statistics.median(cpu),
        "cpu_pct_p99": pct(cpu, 99),
        "rss_mib_median": statistics.median(rss),
        "rss_mib_p99": pct(rss, 99),
        "threads": threads,
        "open_fds": fds,
    }


def stop(proc: subprocess.Popen[bytes]) -> float:
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    return time.perf_counter() - started


def run_mode(home: Path, mode: str, window: float, log: Path) -> dict[str, Any]:
    proc = spawn(home, log)
    try:
        out: dict[str, Any] = {"mode": mode, "ready_s": wait_ready(home, proc)}
        if mode == "online":
            out["initial_upload_s"] = wait_synced(home)
        elif mode == "restarted":
            wait_synced(home)  # the first cycle after start (nothing to push or pull)
        time.sleep(3)  # let the start-up work (rescan, first cycle) finish before measuring
        out.update(idle_window(proc.pid, window))
        out["stop_s"] = stop(proc)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def login_home(home: Path, cloud: Any) -> None:
    from sync.supabase_remote import login

    email = f"bench-{uuid.uuid4().hex[:10]}@example.test"
    password = "bench-password-123"
    cloud.create_user(email, password)
    login(load_settings(home=home, environ={}), cloud.url, cloud.anon_key, email, password)


def report(results: list[dict[str, Any]], n: int, window: float) -> None:
    print(f"\ndaemon idle cost, {n:,} blueprints, {window:.0f} s windows, {os.cpu_count()} cores")
    head = f"{'mode':8} {'ready s':>8} {'upload s':>9} {'CPU% med':>9} {'p99':>6} {'mean':>6}"
    head += f" {'RSS MiB med':>12} {'p99':>6} {'thr':>4} {'fds':>4} {'stop s':>7}"
    print(head)
    for r in results:
        upload = f"{r['initial_upload_s']:9.1f}" if "initial_upload_s" in r else f"{'-':>9}"
        print(
            f"{r['mode']:8} {r['ready_s']:8.2f} {upload} {r['cpu_pct_median']:9.3f} "
            f"{r['cpu_pct_p99']:6.2f} {r['cpu_pct_mean']:6.3f} {r['rss_mib_median']:12.1f} "
            f"{r['rss_mib_p99']:6.1f} {r['threads']:4d} {r['open_fds']:4d} {r['stop_s']:7.2f}"
        )
    for r in results:
        print(
            f"{r['mode']}: goals CPU < 1 % -> {'met' if r['cpu_pct_mean'] < 1 else 'MISSED'}, "
            f"RSS <= 120 MB -> {'met' if r['rss_mib_p99'] * 1.048576 <= 120 else 'MISSED'}; "
            f"vs Syncthing (field notes, not this run): CPU x{r['cpu_pct_mean'] / SYNCTHING_IDLE_CPU_PCT:.1f}, "
            f"RSS x{r['rss_mib_median'] / SYNCTHING_RSS_MIB[1]:.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 blueprints, 10 s windows")
    ap.add_argument("--blueprints", type=int, default=None)
    ap.add_argument("--window", type=float, default=None, help="idle window in seconds")
    ap.add_argument("--offline-only", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    n = args.blueprints or (1000 if args.quick else 10_000)
    window = args.window or (10.0 if args.quick else 60.0)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        home = Path(tmp) / "home"
        print(f"building a home of {n:,} blueprints ...", flush=True)
        print(f"  built in {build_home(home, n):.1f} s", flush=True)
        results.append(run_mode(home, "offline", window, Path(tmp) / "daemon.out"))
        print(f"  offline done: {json.dumps(results[-1])}", flush=True)
        if not args.offline_only:
            from sync.localcloud.stack import LocalCloud

            with LocalCloud() as cloud:
                login_home(home, cloud)
                for mode in ("online", "restarted"):
                    results.append(run_mode(home, mode, window, Path(tmp) / "daemon.out"))
                    print(f"  {mode} done: {json.dumps(results[-1])}", flush=True)
    print(f"\nmachine: {platform.platform()}, python {platform.python_version()}")
    report(results, n, window)
    if args.json:
        args.json.write_text(json.dumps({"blueprints": n, "window": window, "results": results}))


if __name__ == "__main__":
    main()
