"""Benchmarks of the local engine on a store of N blueprints of about 2 KB.

Prints medians and p99 and, measured in the same run, ratios against peers:
- save vs a bare durable atomic write of the same two files (temp, fsync, rename, fsync dir);
- save/load vs diskcache at equal durability (SQLite synchronous=FULL).

    .venv/bin/python bench/bench_store.py            # 10,000 blueprints
    .venv/bin/python bench/bench_store.py --quick    # 1,000 blueprints
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import apsw
from _homes import bench_dir, disk_report

import localstore
from localstore._listing import INFO_COLUMNS
from localstore.blueprint import BlueprintMeta, encode_meta, new_id, utc_now
from localstore.store import SaveRequest

WORDS = [
    "fetch",
    "build",
    "deploy",
    "test",
    "lint",
    "package",
    "publish",
    "notify",
    "cache",
    "restore",
    "archive",
    "sign",
    "verify",
    "kubernetes",
    "docker",
    "terraform",
    "ansible",
    "python",
    "node",
    "rust",
    "golang",
    "postgres",
    "redis",
    "kafka",
    "nginx",
    "staging",
    "production",
    "canary",
    "rollback",
    "approve",
    "schedule",
    "nightly",
    "weekly",
    "backup",
    "migrate",
]


def make_doc(rng: random.Random, i: int, size: int = 2048) -> str:
    lines = [f"# blueprint {i}", f"name: workflow-{i}", "steps:"]
    n = 0
    while sum(len(x) + 1 for x in lines) < size:
        n += 1
        words = " ".join(rng.choice(WORDS) for _ in range(6))
        lines.append(f"  - name: step-{n}  # {rng.choice(WORDS)}")
        lines.append(f"    run: {words}")
    return "\n".join(lines) + "\n"


# A realistic vocabulary for the search corpus: the domain words above plus 4,000 made-up
# identifiers (image names, hosts, variables), drawn with Zipf weights (s = 1.1) the way words
# occur in real text. Every document still holds the YAML keys (name, steps, run) and most hold the
# commonest domain words, so common-word queries still match thousands of documents.
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "sa", "do", "gu", "bi", "fe"]


def zipf_vocabulary(rng: random.Random, size: int = 4000) -> tuple[list[str], list[float]]:
    made: dict[str, None] = {}
    while len(made) < size:
        made["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))] = None
    vocab = WORDS + [w for w in made if w not in WORDS]
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(vocab))]
    return vocab, weights


def make_corpus_doc(
    rng: random.Random, i: int, vocab: list[str], weights: list[float], size: int = 2048
) -> str:
    lines = [f"# blueprint {i}", f"name: workflow-{i}", "steps:"]
    n = 0
    while sum(len(x) + 1 for x in lines) < size:
        n += 1
        words = " ".join(rng.choices(vocab, weights, k=6))
        lines.append(f"  - name: step-{n}  # {rng.choices(vocab, weights)[0]}")
        lines.append(f"    run: {words}")
    return "\n".join(lines) + "\n"


def search_queries(rng: random.Random, vocab: list[str], weights: list[float], n: int) -> list[str]:
    """What people type: one or two words drawn as often as they occur, a quoted phrase, a name."""
    out = []
    for k in range(n):
        kind = k % 4
        if kind == 0:
            out.append(rng.choices(vocab, weights)[0])
        elif kind == 1:
            out.append(" ".join(rng.choices(vocab, weights, k=2)))
        elif kind == 2:
            out.append('"' + " ".join(rng.choices(vocab, weights, k=2)) + '"')
        else:
            out.append(f"workflow-{rng.randrange(10_000)}")
    return out


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def timeit(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(name: str, samples: list[float], goal: str = "") -> dict[str, object]:
    r = {
        "what": name,
        "n": len(samples),
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(pct(samples, 99), 3),
        "goal": goal,
    }
    print(
        f"{name:<46} n={r['n']:<6} p50={r['p50_ms']:>9.3f} ms  p99={r['p99_ms']:>9.3f} ms  {goal}"
    )
    return r


def bare_pair_write(
    directory: Path, yaml_bytes: bytes, meta_bytes: bytes, name: str, *, flush_folder: bool = True
) -> None:
    """The peer: a plain durable atomic write of the same two files, nothing else (without the
    folder's fsync when ``flush_folder`` is False: bench_save_floor.py flushes it otherwise)."""
    temps = []
    for suffix, data in ((".blueprint.yaml", yaml_bytes), (".blueprint.meta.json", meta_bytes)):
        target = directory / f"{name}{suffix}"
        tmp = directory / f".{name}{suffix}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        temps.append((tmp, target))
    for tmp, target in temps:
        os.replace(tmp, target)
    if not flush_folder:
        return
    dfd = os.open(directory, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)


def rss_of_open_store(home: Path) -> float:
    code = (
        "import sys, psutil, localstore\n"
        f"s = localstore.open(home={str(home)!r})\n"
        "s.list(); s.search('deploy'); [s.load(i.id) for i in s.list(limit=200)]\n"
        "p = psutil.Process()\n"
        "print(p.memory_info().rss)\n"
        "s.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024 / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    args = ap.parse_args()
    n = args.n or (1000 if args.quick else 10_000)
    rounds = 300 if args.quick else 1000
    rng = random.Random(42)
    base, how = bench_dir("ls-bench-")
    results: list[dict[str, object]] = []
    try:
        # The disk's state matters: ext4 without a journal skips recently freed inodes, so soon
        # after a run that deleted many files each create costs several times more
        # (see bench/_homes.py).
        print(disk_report(base, how))
        home = base / "home"
        store = localstore.open(home=home)
        docs = [make_doc(rng, i) for i in range(n)]
        t0 = time.perf_counter()
        ids = []
        with store.index.write():
            for i, d in enumerate(docs):
                ids.append(store.save(f"f{i % 50}/workflow-{i}", d, tags=[WORDS[i % 7]]).id)
        fill = time.perf_counter() - t0
        print(f"filled {n} blueprints in {fill:.1f} s ({n / fill:.0f}/s, one transaction)")
        store.close()
        store = localstore.open(home=home)

        # durable save: update existing blueprints, each its own transaction (acknowledged).
        targets = [rng.randrange(n) for _ in range(rounds)]
        it = iter(range(rounds))

        def save_one() -> None:
            k = next(it)
            i = targets[k]
            store.save(f"f{i % 50}/workflow-{i}", docs[i] + f"# edit {k}\n")

        save_ms = timeit(save_one, rounds)
        results.append(row("durable save (update, 2 KB)", save_ms, "goal p50<=3 ms, p99<=15 ms"))

        bare_dir = base / "bare"
        bare_dir.mkdir()
        meta = encode_meta(BlueprintMeta(id=new_id(), name="x", created=utc_now()))
        it2 = iter(range(rounds))

        def bare_one() -> None:
            k = next(it2)
            bare_pair_write(bare_dir, docs[targets[k]].encode(), meta, f"w{targets[k] % 500}")

        bare_ms = timeit(bare_one, rounds)
        results.append(row("peer: bare durable atomic pair write", bare_ms))

        load_ids = [ids[rng.randrange(n)] for _ in range(rounds * 3)]
        it3 = iter(load_ids)
        load_ms = timeit(lambda: store.load(next(it3)), len(load_ids))
        results.append(row("load by id", load_ms, "goal p50<=0.3 ms"))
        it4 = iter(load_ids)
        load_path_ms = timeit(lambda: store.load(store.resolve(next(it4)).path), len(load_ids))
        results.append(row("load by path (resolve + load)", load_path_ms))

        list100 = timeit(lambda: store.list(limit=100, offset=rng.randrange(max(1, n - 100))), 200)
        results.append(row("list 100", list100, "goal <=1 ms"))
        # A full listing is cached (localstore._listing) and kept up to date: an app listing
        # again after its own change, or another process's (here: a second handle, another
        # connection; index schema v7's change log), reads only the changed rows. The first
        # full listing of a handle reads all of them (measured last, the cache dropped).
        other = localstore.open(home=home)
        it_l = iter(range(10**9))

        def listed_after(change: Callable[[], object]) -> list[float]:
            out = []
            for _ in range(20):
                change()
                t = time.perf_counter()
                store.list()
                out.append((time.perf_counter() - t) * 1000)
            return out

        def other_saves() -> None:
            i = rng.randrange(n)
            other.save(f"f{i % 50}/workflow-{i}", docs[i] + f"# other {next(it_l)}\n")

        def own_save() -> None:
            i = rng.randrange(n)
            store.save(f"f{i % 50}/workflow-{i}", docs[i] + f"# own {next(it_l)}\n")

        list_all = listed_after(other_saves)
        results.append(
            row(f"list all {n}, after another process's save", list_all, "goal <=25 ms (10k)")
        )
        list_own = listed_after(own_save)
        results.append(
            row(f"list all {n}, after a save by this process", list_own, "goal <=25 ms (10k)")
        )
        list_same = listed_after(lambda: None)
        results.append(row(f"list all {n}, nothing changed", list_same, "goal <=25 ms (10k)"))

        def cache_dropped() -> None:
            # As a freshly opened handle has it: no cached listing, and no page of the index
            # in SQLite's cache (another connection's commit, here of a setting, empties it).
            with other.index.write() as cur:
                cur.execute(
                    "INSERT OR REPLACE INTO settings VALUES ('bench', ?)", (str(next(it_l)),)
                )
            store._listing._views = None

        list_cold = listed_after(cache_dropped)
        results.append(
            row(f"list all {n}, first listing (full read)", list_cold, "goal <=25 ms (10k)")
        )
        other.close()
        # The floor under a full listing: a plain apsw connection fetching the same 13 columns
        # in the same order, no Python rows built (the VM's speed at this moment shows here).
        raw = apsw.Connection(str(store.paths.index_db), flags=apsw.SQLITE_OPEN_READONLY)
        raw_sql = f"SELECT {INFO_COLUMNS} FROM blueprints b WHERE b.deleted = 0 ORDER BY b.path"
        raw_ms = timeit(lambda: raw.execute(raw_sql).fetchall(), 20)
        raw.close()
        results.append(row(f"peer: apsw fetch of the listing, {n} rows", raw_ms))

        queries = [
            "deploy",
            "kubernetes rollback",
            '"canary rollback"',
            "step-3",
            "post",
            "nightly",
        ]
        qs = [queries[i % len(queries)] for i in range(rounds)]
        it5 = iter(qs)
        search_ms = timeit(lambda: store.search(next(it5), limit=20), len(qs))
        results.append(row("search top-20 (35-word corpus: worst case)", search_ms))
        # The generated corpus draws every step from a 35-word vocabulary, so each word above
        # matches nearly every document (FTS5's worst case: rank all of them). A selective term
        # (a blueprint's own name) is the common case in an app's search box.
        rare = [f"workflow-{rng.randrange(n)}" for _ in range(rounds)]
        it_r = iter(rare)
        rare_ms = timeit(lambda: store.search(next(it_r), limit=20), len(rare))
        results.append(row("search top-20 (selective: a name)", rare_ms))
        store.close()

        # Search on a corpus with a realistic vocabulary (see zipf_vocabulary), filled with
        # save_many: the goal is judged here, the 35-word corpus above is the worst case.
        vocab, weights = zipf_vocabulary(rng)
        corpus_home = base / "corpus"
        with localstore.open(home=corpus_home) as cstore:
            requests = [
                SaveRequest(
                    path=f"f{i % 50}/workflow-{i}",
                    content=make_corpus_doc(rng, i, vocab, weights),
                    fields={"tags": [WORDS[i % 7]]},
                )
                for i in range(n)
            ]
            for start in range(0, n, 500):
                cstore.save_many(requests[start : start + 500])
            real_qs = search_queries(rng, vocab, weights, rounds)
            it_q = iter(real_qs)
            real_ms = timeit(lambda: cstore.search(next(it_q), limit=20), len(real_qs))
            results.append(
                row(
                    "search top-20 (realistic vocabulary, mixed)",
                    real_ms,
                    "goal p50<=2 ms, p99<=30 ms",
                )
            )

        reopen = timeit(lambda: localstore.open(home=home).close(), 5)
        results.append(row("reopen + reconcile (unchanged store)", reopen, "goal <=1000 ms"))

        # diskcache at equal durability
        import diskcache

        cache = diskcache.Cache(str(base / "dc"), sqlite_synchronous=2)
        for i in range(min(n, 2000)):
            cache.set(f"k{i}", docs[i])
        it6 = iter(range(rounds))
        dc_set = timeit(lambda: cache.set(f"k{targets[next(it6)] % 2000}", docs[0]), rounds)
        results.append(row("peer: diskcache set (synchronous=FULL)", dc_set))
        it7 = iter(range(rounds * 3))
        dc_get = timeit(lambda: cache.get(f"k{next(it7) % 2000}"), rounds * 3)
        results.append(row("peer: diskcache get", dc_get))
        cache.close()

        gc.collect()
        rss = rss_of_open_store(home)
        print(f"peak RSS of a process with the {n}-blueprint store open: {rss:.1f} MiB")
        ratios = {
            "save_vs_bare_pair_write_p50": round(
                statistics.median(save_ms) / statistics.median(bare_ms), 2
            ),
            "save_vs_diskcache_set_p50": round(
                statistics.median(save_ms) / statistics.median(dc_set), 2
            ),
            "load_vs_diskcache_get_p50": round(
                statistics.median(load_ms) / statistics.median(dc_get), 2
            ),
            "list_all_full_read_vs_apsw_fetch_p50": round(
                statistics.median(list_cold) / statistics.median(raw_ms), 2
            ),
            "list_all_after_other_save_vs_apsw_fetch_p50": round(
                statistics.median(list_all) / statistics.median(raw_ms), 2
            ),
            "list_all_after_own_save_vs_apsw_fetch_p50": round(
                statistics.median(list_own) / statistics.median(raw_ms), 3
            ),
        }
        for k, v in ratios.items():
            print(f"ratio {k:<40} {v:>6.2f}x")
        if args.json:
            args.json.write_text(
                json.dumps({"n": n, "results": results, "ratios": ratios, "rss_mib": rss}, indent=2)
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
