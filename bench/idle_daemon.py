"""What an idle daemon and an idle in-process (embedded) sync cost: CPU, wakeups, disk writes, SQL.

A daemon runs on a laptop for months, so idle it must cost next to nothing. This runs each
checkout given (one, or two to compare: ``--before`` and this one, interleaved run by run) on a
home of N blueprints (default 1,000) in these modes:

* ``daemon-offline``: ``localstore daemon``, not logged in (watcher + control API + its tick);
* ``embed-memory``: an app's ``start_sync`` (EmbeddedSync: watcher, engine, follower thread) on
  an in-process MemoryRemote, i.e. without a cloud (``start_sync`` needs a remote);
* ``daemon-online`` / ``embed-online``: the same logged in to the local Supabase stack
  (``sync.localcloud``; needs PostgreSQL and the keychain: run under the keyring wrapper).

Each run starts from a fresh copy of a home the checkout itself built (an older localstore cannot
open a newer one's index), waits until the process is ready and its first sync cycle is done,
lets it settle, then measures a window (default 60 s) from /proc: CPU time (``stat`` utime +
stime, all threads), context switches (``voluntary`` + ``nonvoluntary`` summed over
``task/*/status``: each voluntary one is a wakeup after a sleep), bytes written to disk
(``io`` write_bytes: page cache dirtied, the flushes of a commit included) and ``wchar`` /
``syscw`` (write system calls), and the SQL statements run (an apsw exec tracer installed on every
connection of the child by ``apsw.connection_hooks``, read by a SIGUSR1 at both ends of the
window; the tracer's own cost is in the CPU figure, ~1 us a statement).

    .venv/bin/python bench/idle_daemon.py --offline-only
    .venv/bin/python bench/idle_daemon.py --before /tmp/idle-before --offline-only --rounds 2
    dbus-run-session -- bash scripts/_in_keyring_session .venv/bin/python bench/idle_daemon.py \\
        --before /tmp/idle-before
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODES = ("daemon-offline", "embed-memory", "daemon-online", "embed-online")


# -- the child: a daemon or an app with in-process sync, SQL counted -------------------------------


def _count_sql(dump: Path) -> None:
    """Count every statement of every apsw connection made from now on; SIGUSR1 writes the counts
    (statement text -> count) to ``dump``."""
    import apsw

    counts: collections.Counter[str] = collections.Counter()

    def tracer(_cursor: Any, sql: str, _bindings: Any) -> bool:
        counts[sql] += 1
        return True

    apsw.connection_hooks.append(lambda conn: conn.set_exec_trace(tracer))

    def on_usr1(_signum: int, _frame: Any) -> None:
        tmp = dump.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(counts)))
        os.replace(tmp, dump)

    signal.signal(signal.SIGUSR1, on_usr1)


def child(mode: str, home: Path, dump: Path, cloud: str | None) -> None:
    _count_sql(dump)
    if mode.startswith("daemon"):
        from localstore.cli import main

        sys.argv = ["localstore", "--home", str(home), "daemon", "--log-level", "WARNING"]
        sys.argv += ["--no-stderr"]
        main()
        return
    import localstore
    from sync.embed import start_sync

    store = localstore.open(home=home)
    if mode == "embed-memory":
        from sync.memory_remote import MemoryRemote, MemoryServer

        handle = start_sync(store, remote=MemoryRemote(MemoryServer(), user="bench"))
    else:
        handle = start_sync(store)
    # Ready once the first cycle is done (the parent waits for this file).
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        s = handle.engine.status()
        if s.state == "idle" and s.last_synced_at and not s.pending:
            break
        time.sleep(0.2)
    _quiesce(store)  # (the initial upload's aftermath)
    (dump.parent / "ready").write_text(str(os.getpid()))

    def on_term(_signum: int, _frame: Any) -> None:
        handle.stop()
        store.close()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    while True:
        signal.pause()


# -- the parent ------------------------------------------------------------------------------------


def proc_counters(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out = {"cpu_ticks": int(fields[11]) + int(fields[12])}  # utime + stime (fields 14, 15)
    vol = nonvol = threads = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        nonvol += int(line.split()[1])
            threads += 1
        except FileNotFoundError:  # (a thread that ended meanwhile)
            pass
    out.update(voluntary=vol, nonvoluntary=nonvol, threads=threads)
    with open(f"/proc/{pid}/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    out.update(write_bytes=int(io["write_bytes"]), wchar=int(io["wchar"]), syscw=int(io["syscw"]))
    return out


def _env(checkout: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    env["PYTHONPATH"] = str(checkout)
    return env


def build_home(checkout: Path, home: Path, n: int) -> None:
    """N blueprints of ~2 KB in folders of 100 (as bench_daemon.py), indexed by ``checkout``'s
    reconcile on open (an older localstore cannot open a newer one's index)."""
    args = [sys.executable, str(Path(__file__).resolve()), "--build", str(home)]
    args += ["--blueprints", str(n)]
    subprocess.run(args, check=True, env=_env(checkout), cwd=checkout)


def _quiesce(store: Any) -> int:
    """Run the store's maintainer rounds until one commits nothing (at most 100); returns the
    rounds. A home just built (or just uploaded) has catching up to do (the history compaction's
    watermark over every new revision, FTS merges, a checkpoint): a few rounds of work that an
    idle window must not measure."""
    maintainer = store._maintainer
    if maintainer is None:
        return 0
    for rounds in range(1, 101):
        with store.index.read() as cur:
            before = cur.execute("PRAGMA data_version").fetchall()[0][0]
        maintainer.run_once()
        with store.index.read() as cur:
            if cur.execute("PRAGMA data_version").fetchall()[0][0] == before:
                return rounds
    return 100


def _settle_home(home: Path) -> None:
    """Open a copied home once (its reconcile takes the copies' new inodes and times) and let
    its maintainer finish, so the measured process starts on a settled home."""
    import localstore

    with localstore.open(home=home) as store:
        _quiesce(store)


def _build(home: Path, n: int) -> None:
    import random

    import localstore
    from localstore.blueprint import BlueprintMeta, encode_meta, new_id, utc_now

    words = ["fetch", "build", "deploy", "test", "lint", "package", "release", "notify"]
    rng = random.Random(1)
    now = utc_now()
    for i in range(n):
        folder = home / "blueprints" / f"f{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"name: workflow-{i}", "steps:"]
        while sum(len(x) + 1 for x in lines) < 2048:
            lines.append(f"  - name: step-{len(lines)}")
            lines.append(f"    run: {' '.join(rng.choice(words) for _ in range(6))}")
        (folder / f"bp-{i:05d}.blueprint.yaml").write_text("\n".join(lines) + "\n")
        meta = BlueprintMeta(id=new_id(), name=f"bp-{i:05d}", created=now, modified=now)
        (folder / f"bp-{i:05d}.blueprint.meta.json").write_bytes(encode_meta(meta))
    with localstore.open(home=home) as store:
        assert store.count() == n, store.count()
        _quiesce(store)


def _snapshot(pid: int, dump: Path) -> dict[str, int]:
    dump.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not dump.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the child did not write its SQL counts")
        time.sleep(0.05)
    return {k: int(v) for k, v in json.loads(dump.read_text()).items()}


def _wait_daemon_ready(checkout: Path, home: Path, pid: int, online: bool) -> None:
    code = (
        f"import os, sys, time; sys.path[:0] = [{str(checkout)!r}]\n"
        "from localstore.config import load_settings\n"
        "from sync.embed import daemon_running\n"
        "from sync.control import ControlClient\n"
        f"settings = load_settings(home={str(home)!r}, environ={{}})\n"
        "for _ in range(6000):\n"
        f"    if not os.path.exists('/proc/{pid}/status') or 'zombie' in "
        f"open('/proc/{pid}/status').read(): raise SystemExit('the daemon exited')\n"
        "    s = daemon_running(settings)\n"
        f"    if s is not None and s.get('pid') == {pid}: break\n"
        "    time.sleep(0.05)\n"
        "else: raise SystemExit('not ready')\n"
        f"if {online}:\n"
        "    with ControlClient.connect(settings, timeout=60) as c:\n"
        "        for _ in range(3000):\n"
        "            s = c.status()['sync']\n"
        "            if s.get('state') == 'idle' and not s.get('pending') and s.get('last_synced_at'):\n"
        "                break\n"
        "            time.sleep(0.2)\n"
        "        else: raise SystemExit('the first sync did not finish')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(checkout), cwd=checkout)


def run_one(
    checkout: Path,
    mode: str,
    template: Path,
    work: Path,
    window: float,
    settle: float,
    cloud: Any = None,
) -> dict[str, Any]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    home = work / "home"
    shutil.copytree(template, home, symlinks=True)
    args = [sys.executable, str(Path(__file__).resolve()), "--settle-home", str(home)]
    subprocess.run(args, check=True, env=_env(checkout), cwd=checkout)
    if mode.endswith("online"):
        login_home(checkout, home, cloud)  # (here: the session is the home's, by its path)
    dump = work / "sql.json"
    args = [sys.executable, str(Path(__file__).resolve()), "--child", mode]
    args += ["--home", str(home), "--dump", str(dump)]
    with open(work / "child.out", "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out, env=_env(checkout), cwd=checkout)
    try:
        if mode.startswith("daemon"):
            _wait_daemon_ready(checkout, home, proc.pid, mode.endswith("online"))
            if proc.poll() is not None:
                raise SystemExit(f"{mode} exited: see {work / 'child.out'}")
        else:
            deadline = time.monotonic() + 600
            while not (work / "ready").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{mode} did not start: see {work / 'child.out'}")
                time.sleep(0.1)
        time.sleep(settle)
        sql0 = _snapshot(proc.pid, dump)
        c0, t0 = proc_counters(proc.pid), time.monotonic()
        time.sleep(window)
        c1, t1 = proc_counters(proc.pid), time.monotonic()
        sql1 = _snapshot(proc.pid, dump)
        if proc.poll() is not None:
            raise SystemExit(f"{mode} exited during the window: see {work / 'child.out'}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    sql = {k: v - sql0.get(k, 0) for k, v in sql1.items() if v - sql0.get(k, 0)}
    seconds = t1 - t0
    return {
        "mode": mode,
        "checkout": str(checkout),
        "seconds": seconds,
        "cpu_ms": 1000 * (c1["cpu_ticks"] - c0["cpu_ticks"]) / CLK_TCK,
        "ctxt_voluntary": c1["voluntary"] - c0["voluntary"],
        "ctxt_nonvoluntary": c1["nonvoluntary"] - c0["nonvoluntary"],
        "threads": c1["threads"],
        "write_bytes": c1["write_bytes"] - c0["write_bytes"],
        "wchar": c1["wchar"] - c0["wchar"],
        "syscw": c1["syscw"] - c0["syscw"],
        "sql": sum(sql.values()),
        "sql_top": sorted(sql.items(), key=lambda kv: -kv[1])[:6],
    }


def login_home(checkout: Path, home: Path, cloud: Any) -> None:
    email = f"bench-{uuid.uuid4().hex[:10]}@example.test"
    password = "bench-password-123"
    cloud.create_user(email, password)
    code = (
        f"import sys; sys.path[:0] = [{str(checkout)!r}]\n"
        "from localstore.config import load_settings\n"
        "from sync.supabase_remote import login\n"
        f"login(load_settings(home={str(home)!r}, environ={{}}), {cloud.url!r}, "
        f"{cloud.anon_key!r}, {email!r}, {password!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(checkout), cwd=checkout)


def report(results: list[dict[str, Any]], labels: dict[str, str], window: float) -> None:
    print(f"\nidle cost over {window:.0f} s windows (median of the rounds; per minute)")
    head = f"{'mode':15} {'code':7} {'CPU ms':>7} {'vol cs':>7} {'invol':>6} {'thr':>4}"
    head += f" {'disk KiB':>9} {'wchar KiB':>10} {'write()':>8} {'SQL':>6}"
    print(head)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["mode"], r["checkout"]), []).append(r)
    for (mode, checkout), rs in groups.items():

        def med(key: str, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.median(60 * r[key] / r["seconds"] for r in rs)

        print(
            f"{mode:15} {labels[checkout]:7} {med('cpu_ms'):7.0f} {med('ctxt_voluntary'):7.0f} "
            f"{med('ctxt_nonvoluntary'):6.0f} {rs[-1]['threads']:4d} "
            f"{med('write_bytes') / 1024:9.1f} {med('wchar') / 1024:10.1f} {med('syscw'):8.0f} "
            f"{med('sql'):6.0f}"
        )
    print("\nmost run statements (last round, per window):")
    seen: set[tuple[str, str]] = set()
    for r in reversed(results):
        key = (r["mode"], r["checkout"])
        if key in seen:
            continue
        seen.add(key)
        top = ", ".join(f"{n} x {' '.join(s.split())[:60]!r}" for s, n in r["sql_top"])
        print(f"  {r['mode']:15} {labels[r['checkout']]:7} {top or '-'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, help="another checkout to compare (e.g. a worktree)")
    ap.add_argument("--code", type=Path, default=HERE, help="the checkout measured (default: this)")
    ap.add_argument("--blueprints", type=int, default=1000)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument(
        "--settle",
        type=float,
        default=35.0,
        help="seconds between ready and the window (default: past one 30 s maintainer round)",
    )
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--offline-only", action="store_true")
    ap.add_argument("--modes", help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--settle-home", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.settle_home:
        _settle_home(args.settle_home)
        return
    if args.build:
        _build(args.build, args.blueprints)
        return
    if args.child:
        child(args.child, args.home, args.dump, None)
        return
    code = args.code.resolve()
    checkouts = [code] if args.before is None else [args.before.resolve(), code]
    labels = {str(code): "this"} | ({str(checkouts[0]): "before"} if args.before else {})
    modes = args.modes.split(",") if args.modes else list(MODES)
    if args.offline_only:
        modes = [m for m in modes if not m.endswith("online")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-idle-", dir="/tmp") as tmp:
        templates: dict[Path, Path] = {}
        for c in checkouts:
            templates[c] = Path(tmp) / f"template-{labels[str(c)]}"
            print(f"building a home of {args.blueprints:,} blueprints with {c} ...", flush=True)
            build_home(c, templates[c], args.blueprints)
        cloud = None
        if any(m.endswith("online") for m in modes):
            from sync.localcloud.stack import LocalCloud

            cloud = LocalCloud().start()
        try:
            for rnd in range(args.rounds):
                for mode in modes:
                    # Interleaved, and alternating which goes first: a noisy neighbour on the
                    # shared cores then falls on both.
                    order = checkouts if rnd % 2 == 0 else checkouts[::-1]
                    for c in order:
                        work = Path(tmp) / "run"
                        r = run_one(c, mode, templates[c], work, args.window, args.settle, cloud)
                        results.append(r)
                        print(
                            f"  round {rnd + 1} {mode} {labels[str(c)]}: "
                            + json.dumps({k: v for k, v in r.items() if k != "sql_top"}),
                            flush=True,
                        )
        finally:
            if cloud is not None:
                cloud.stop()
    report(results, labels, args.window)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
