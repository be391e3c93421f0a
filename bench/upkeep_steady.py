"""Index upkeep under steady saving: does each maintenance task get its turn, how long does upkeep
hold the write lock, does the WAL stay bounded (also with a long-running reader)?

Builds a home on disk (``--blueprints`` 2 KB blueprints, then ``--history`` updates of random
ones, saved with the maintainer off so that a backlog of superseded, uncompacted revisions is
left, as a burst or an upgrade leaves one), then for ``--seconds``:

- an "app" process saves one random blueprint every 20-200 ms, with a burst of ``--burst``
  back-to-back saves every 15 s, and writes app data with a short TTL (its KV purger runs every
  10 s); its maintainer runs as in any store;
- a "daemon" process opens the same home (its maintainer runs too) and saves one blueprint every
  1-3 s (``--daemon-gap 0``: none, a daemon that only watches);
- from ``--reader-at`` s on, a reader process holds one read transaction open for
  ``--reader-for`` s (an export's snapshot, a slow ``list()`` page walk in another process);
- this process samples the WAL's size every 50 ms.

Each writer process instruments its own maintainer (only there; nothing changes in localstore):
an SQLite profile trace and a busy handler on the maintainer's connection give, for each of its
write transactions, how long it held the write lock (its time less the time spent waiting for
the lock), and wrappers count each task's turns: compaction chunks and rows, FTS merges, the
change-log trim, free pages given back, checkpoints and WAL truncates, and the BusyErrors.
Save latencies are measured around ``save()``.

    PYTHONPATH=. .venv/bin/python bench/upkeep_steady.py [--blueprints 10000] [--history 30000]
        [--seconds 240] [--daemon-gap 1] [--reader-at 60] [--reader-for 60]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import apsw
from _homes import bench_dir

import localstore
from localstore import _index_connect, _index_upkeep, _revisions, index
from localstore.kv import KVStore
from localstore.store import SaveRequest

_WORDS = [
    "build",
    "test",
    "deploy",
    "lint",
    "cache",
    "image",
    "node",
    "python",
    "docker",
    "step",
    "run",
    "env",
    "secret",
]


def _doc(rng: random.Random, i: int, salt: str = "") -> str:
    lines = [f"# blueprint {i} {salt}", f"name: workflow-{i}", "steps:"]
    n = 0
    while sum(len(x) + 1 for x in lines) < 2048:
        n += 1
        lines.append(f"  - name: step-{n}")
        lines.append("    run: " + " ".join(rng.choice(_WORDS) for _ in range(6)))
    return "\n".join(lines) + "\n"


def build(home: Path, blueprints: int, history: int) -> None:
    rng = random.Random(1)
    store = localstore.open(home=home, maintenance=False)
    try:
        batch = 500
        for start in range(0, blueprints, batch):
            reqs = [
                SaveRequest(path=f"f{i % 50}/bp{i}", content=_doc(rng, i))
                for i in range(start, min(blueprints, start + batch))
            ]
            store.save_many(reqs)
        # Deep history, concentrated (a fifth of the blueprints get all the edits).
        hot = max(1, blueprints // 5)
        done = 0
        while done < history:
            picks = rng.sample(range(hot), min(batch, history - done, hot))
            reqs = [
                SaveRequest(path=f"f{i % 50}/bp{i}", content=_doc(rng, i, f"h{done}-{i}"))
                for i in picks
            ]
            store.save_many(reqs)
            done += len(picks)
        store.index.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        store.close()


# -- instrumentation of this process's maintainer ---------------------------------------------

_stats: dict[str, Any] = {"holds": defaultdict(list), "turns": Counter(), "rounds": []}
_waited = [0.0]  # seconds the maintainer's busy handler slept, in all
# Seconds its writes waited for their turn (_write_turn.begin_taking_turns: polls with no busy
# handler, between statements, so a hold's start needs no correction for them).
_turn_waited = [0.0]


def _busy_handler(tries: int) -> bool:
    # SQLite's default schedule (ms), up to the maintainer's 5 s, recorded.
    delays = (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)
    total = sum(delays[: min(tries, len(delays))]) + max(0, tries - len(delays)) * 100
    if total >= 5000:
        return False
    delay = delays[tries] if tries < len(delays) else 100
    time.sleep(delay / 1000)
    _waited[0] += delay / 1000
    return True


class _HoldTracer:
    """Times each write transaction of the maintainer's connection, less its lock waits."""

    def __init__(self) -> None:
        self.start: float | None = None  # when the write lock was taken
        self.kind = ""
        self.explicit = False
        self.begun = False  # (by BEGIN IMMEDIATE: only its COMMIT or ROLLBACK ends it)
        self.wait_mark = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("code") != apsw.SQLITE_TRACE_PROFILE:
            return
        end = time.perf_counter()
        full = " ".join(str(event.get("sql", "")).split()).upper()
        head = full[:60]
        took = event["nanoseconds"] / 1e9
        waited, self.wait_mark = _waited[0] - self.wait_mark, _waited[0]
        if head.startswith("BEGIN IMMEDIATE"):
            # Every write of the maintainer begins so since it takes turns (a busy attempt
            # too: the one that succeeds starts the hold). Named after what it then writes.
            self.start, self.kind, self.explicit, self.begun = end - took, "", True, True
            return
        writes = head.startswith(("INSERT", "DELETE", "UPDATE")) or (
            "INCREMENTAL_VACUUM" in head or "CHECKPOINT(TRUNCATE)" in head
        )
        if self.start is None and writes:
            # The lock was taken after the waits of this statement.
            self.start = end - took + waited
            self.kind = _kind(full)
            self.explicit, self.begun = _in_savepoint[0], False
        if self.start is None:
            return
        if not self.kind and (writes or "REVISIONS" in full):
            self.kind = _kind(full)
        ends = ("COMMIT", "ROLLBACK") if self.begun else ("COMMIT", "ROLLBACK", "RELEASE")
        if self.explicit and not head.startswith(ends):
            return
        _stats["holds"][self.kind or "?"].append(end - self.start)
        self.start = None


_in_savepoint = [False]


def _kind(head: str) -> str:
    if "REVISIONS" in head or head.startswith("INSERT INTO SETTINGS VALUES"):
        return "compaction chunk"  # (the second: a chunk that only moves the watermark)
    if "MERGE" in head or "_FTS" in head or "DESCRIBED" in head:
        return "fts merge"
    if "BLUEPRINT_CHANGES" in head:
        return "change-log trim"
    if "INCREMENTAL_VACUUM" in head:
        return "free pages"
    if "TRUNCATE" in head:
        return "wal truncate"
    return head[:30]


def instrument(db: Path) -> None:
    orig_open = index.Maintainer._open

    def _open(self: index.Maintainer) -> apsw.Connection:
        conn = orig_open(self)
        conn.set_busy_handler(_busy_handler)
        conn.trace_v2(apsw.SQLITE_TRACE_PROFILE, _HoldTracer())
        return conn

    index.Maintainer._open = _open  # type: ignore[method-assign]

    orig_begin = _index_upkeep.begin_taking_turns

    def begin(*args: Any, **kw: Any) -> None:
        started = time.perf_counter()
        try:
            orig_begin(*args, **kw)
        finally:
            if threading.current_thread().name == "localstore-maintainer":
                _turn_waited[0] += time.perf_counter() - started

    _index_upkeep.begin_taking_turns = begin

    orig_compact = _revisions.compact_superseded

    def compact(conn: apsw.Connection, **kw: Any) -> int:
        try:
            n = orig_compact(conn, **kw)
        except apsw.BusyError:
            _stats["turns"]["compaction busy"] += 1
            raise
        _stats["turns"]["compaction rows"] += n
        return n

    _index_upkeep.compact_superseded = compact

    orig_merge = _index_upkeep._merge_search_indexes

    def merge(conn: apsw.Connection, *, idle: bool) -> None:
        _in_savepoint[0] = True
        try:
            orig_merge(conn, idle=idle)
        except apsw.BusyError:
            _stats["turns"]["fts merge busy"] += 1
            raise
        finally:
            _in_savepoint[0] = False
        _stats["turns"]["fts merge"] += 1

    _index_upkeep._merge_search_indexes = merge

    orig_release = _index_upkeep.release_free_pages

    def release(conn: apsw.Connection, **kw: Any) -> int:
        n = orig_release(conn, **kw)
        _stats["turns"]["free pages given back"] += n
        return n

    _index_upkeep.release_free_pages = release

    orig_truncate = _index_upkeep.truncate_wal_now

    def truncate(conn: apsw.Connection, busy_timeout_ms: int) -> None:
        before = _wal_starts(db)
        orig_truncate(conn, busy_timeout_ms)
        conn.set_busy_handler(_busy_handler)  # (setbusytimeout replaced it)
        _stats["turns"]["idle truncate tried"] += 1
        _stats["turns"]["idle truncate done"] += int(_wal_starts(db) != before or not _wal(db))

    _index_upkeep.truncate_wal_now = truncate

    orig_round = index.Maintainer._round

    def round_(self: index.Maintainer, conn: apsw.Connection) -> None:
        idle = self._pending == 0
        t0 = time.perf_counter()
        try:
            orig_round(self, conn)
            outcome = "ok"
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            mark, top = _compaction_lag(db)
            _stats["rounds"].append(
                {
                    "t": time.time(),
                    "idle": idle,
                    "took": time.perf_counter() - t0,
                    "outcome": outcome,
                    "mark": mark,
                    "top": top,
                    "wal": _wal(db),
                }
            )

    index.Maintainer._round = round_  # type: ignore[method-assign]


def _compaction_lag(db: Path) -> tuple[int, int]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.setbusytimeout(1000)
        rows = conn.execute(
            "SELECT (SELECT value FROM settings WHERE key = ?), (SELECT max(seq) FROM revisions)",
            (_revisions.WATERMARK_KEY,),
        ).fetchall()
        return int(rows[0][0] or 0), int(rows[0][1] or 0)
    finally:
        conn.close()


def _wal(db: Path) -> int:
    return index.wal_size(db)


def _wal_starts(db: Path) -> int:
    try:
        with open(f"{db}-wal", "rb") as wal:
            head = wal.read(16)
    except OSError:
        return -1
    return int(struct.unpack(">I", head[12:16])[0]) if len(head) == 16 else -1


# -- roles ------------------------------------------------------------------------------------


def writer(home: Path, seconds: float, gap: tuple[float, float], burst: int, out: Path) -> None:
    db = home / "data" / "index.db"
    instrument(db)
    store = localstore.open(home=home, reconcile=False)
    kv = KVStore(store.index)
    purger = kv.start_purger(interval=10) if burst else None
    rng = random.Random(os.getpid())
    count = int(str(store.index.conn.execute("SELECT count(*) FROM blueprints").fetchall()[0][0]))
    latencies: list[float] = []
    end = time.monotonic() + seconds
    next_burst = time.monotonic() + 15
    n = 0
    print("ready", flush=True)
    while time.monotonic() < end:
        many = 1
        if burst and time.monotonic() >= next_burst:
            many, next_burst = burst, time.monotonic() + 15
        for _ in range(many):
            i = rng.randrange(count)
            t0 = time.perf_counter()
            store.save(f"f{i % 50}/bp{i}", _doc(rng, i, f"s{os.getpid()}-{n}"))
            latencies.append(time.perf_counter() - t0)
            n += 1
            if burst and n % 5 == 0:
                kv.save(f"cache/{n}", {"n": n}, ttl=2)
        time.sleep(rng.uniform(*gap))
    if purger is not None:
        purger.stop()
        purger.join(10)
    health = store.index_health() if hasattr(store, "index_health") else None
    store.close()
    holds = {k: sorted(v) for k, v in _stats["holds"].items()}
    out.write_text(
        json.dumps(
            {
                "saves": n,
                "latency": sorted(latencies),
                "holds": holds,
                "turns": _stats["turns"],
                "rounds": _stats["rounds"],
                "waited": _waited[0] + _turn_waited[0],
                "purger_rounds": None if purger is None else purger._rounds,
                "health": health,
            },
            default=str,
        )
    )


def reader(home: Path, hold: float) -> None:
    conn = apsw.Connection(str(home / "data" / "index.db"), flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(5000)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM blueprints").fetchall()
    print("reading", flush=True)
    time.sleep(hold)
    conn.execute("COMMIT")
    conn.close()


def _q(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="main")
    ap.add_argument("--home")
    ap.add_argument("--out")
    ap.add_argument("--blueprints", type=int, default=10_000)
    ap.add_argument("--history", type=int, default=30_000)
    ap.add_argument("--seconds", type=float, default=240)
    ap.add_argument("--gap", type=float, nargs=2, default=(0.02, 0.2))
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--daemon-gap", type=float, default=1.0, help="0: the daemon never saves")
    ap.add_argument("--reader-at", type=float, default=60)
    ap.add_argument("--reader-for", type=float, default=60)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.role == "writer":
        writer(Path(args.home), args.seconds, tuple(args.gap), args.burst, Path(args.out))
        return
    if args.role == "reader":
        reader(Path(args.home), args.reader_for)
        return

    base, how = bench_dir("ls-upkeep-")
    home = base / "home"
    print(f"homes in {how}")
    t0 = time.perf_counter()
    build(home, args.blueprints, args.history)
    db = home / "data" / "index.db"
    mark, top = _compaction_lag(db)
    print(
        f"built {args.blueprints} blueprints + {args.history} revisions in "
        f"{time.perf_counter() - t0:.0f} s; index {db.stat().st_size / 1e6:.1f} MB; "
        f"uncompacted backlog: revisions {mark}..{top}"
    )
    me = [sys.executable, __file__, "--home", str(home), "--seconds", str(args.seconds)]
    procs = {
        "app": subprocess.Popen(
            [
                *me,
                "--role",
                "writer",
                "--out",
                str(base / "app.json"),
                "--gap",
                *map(str, args.gap),
                "--burst",
                str(args.burst),
            ],
            stdout=subprocess.PIPE,
            text=True,
        ),
        "daemon": subprocess.Popen(
            [
                *me,
                "--role",
                "writer",
                "--out",
                str(base / "daemon.json"),
                "--gap",
                str(args.daemon_gap or args.seconds),
                str(args.daemon_gap * 3 or args.seconds),
                "--burst",
                "0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        ),
    }
    for p in procs.values():
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    start = time.monotonic()
    samples: list[tuple[float, int]] = []
    rdr: subprocess.Popen[str] | None = None
    reader_span = (args.reader_at, args.reader_at + args.reader_for)
    while any(p.poll() is None for p in procs.values()):
        now = time.monotonic() - start
        if rdr is None and args.reader_for > 0 and now >= args.reader_at:
            rdr = subprocess.Popen(
                [*me, "--role", "reader", "--reader-for", str(args.reader_for)],
                stdout=subprocess.PIPE,
                text=True,
            )
        samples.append((now, _wal(db)))
        time.sleep(0.05)
    if rdr is not None:
        rdr.wait()
    mark, top = _compaction_lag(db)
    print(f"after the run: compaction watermark {mark}, newest revision {top}")

    def wal_max(lo: float, hi: float) -> float:
        return max((w for t, w in samples if lo <= t < hi), default=0) / 1e6

    print(
        f"WAL max (MB): before the reader {wal_max(0, reader_span[0]):.1f}, "
        f"while it reads {wal_max(*reader_span):.1f}, "
        f"after it {wal_max(reader_span[1] + 5, 1e9):.1f}; at the end {_wal(db) / 1e6:.1f}; "
        f"WAL_HARD_LIMIT {_index_connect.WAL_HARD_LIMIT / 1e6:.1f}, WAL_SIZE_LIMIT "
        f"{_index_connect.WAL_SIZE_LIMIT / 1e6:.1f}"
    )
    for name in procs:
        r = json.loads((base / f"{name}.json").read_text())
        lat = r["latency"]
        print(
            f"\n[{name}] {r['saves']} saves; save ms p50 {_q(lat, 0.5) * 1e3:.1f} "
            f"p99 {_q(lat, 0.99) * 1e3:.1f} max {max(lat, default=0) * 1e3:.1f}; "
            f"maintainer waited {r['waited']:.1f} s for locks in all; purger rounds "
            f"{r['purger_rounds']}"
        )
        print(f"  turns: {dict(r['turns'])}")
        for kind, holds in sorted(r["holds"].items()):
            print(
                f"  write-lock holds, {kind}: n={len(holds)} p50 {_q(holds, 0.5) * 1e3:.1f} ms "
                f"max {max(holds) * 1e3:.1f} ms"
            )
        for rd in r["rounds"]:
            print(
                f"  round +{rd['t'] - r['rounds'][0]['t']:6.1f}s idle={rd['idle']!s:5} "
                f"{rd['took'] * 1e3:7.0f} ms {rd['outcome']:9} compacted to {rd['mark']} of "
                f"{rd['top']}  wal {rd['wal'] / 1e6:.1f} MB"
            )
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"kept {base}")


if __name__ == "__main__":
    main()
