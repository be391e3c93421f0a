"""A/B runs against another checkout: the same measurement on this code and on ``CODE``.

    git worktree add /tmp/before <rev>
    for i in 1 2 3; do for c in /tmp/before .; do
        .venv/bin/python bench/ab.py $c save-one; done; done

Run alternately, code before and after, in the same minutes: this VM's disk and CPU have phases
that move a figure by 2x, so only interleaved runs compare code (docs/benchmarks.md).

Measurements (each prints one number):

* ``save-one``: median us of 300 durable single saves updating a 300-blueprint store on disk;
* ``save-many``: us a blueprint of ``save_many`` in batches of 500 (1,500 blueprints, tmpfs);
* ``download``: CPU seconds of one initial sync of 3,000 blueprints into an empty home on disk
  (MemoryRemote);
* ``idle-poll``: median ms of ``sync_once()`` with nothing to do (3,000 blueprints);
* ``search``: median us of 600 top-20 searches of bench_store's realistic-vocabulary corpus
  (5,000 blueprints, tmpfs; the queries of its "realistic vocabulary, mixed" row).
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _homes import bench_dir


def _load(code: str) -> None:
    """Import localstore, sync and the bench helpers from ``code`` (a checkout)."""
    root = str(Path(code).resolve())
    sys.path[:0] = [root, root + "/bench"]
    import localstore

    if not localstore.__file__ or not localstore.__file__.startswith(root):
        raise SystemExit(f"localstore came from {localstore.__file__}, not {root}")


def save_one(tmp: Path) -> float:
    from bench_store import make_doc

    import localstore
    from localstore.store import SaveRequest

    rng = random.Random(3)
    docs = [make_doc(rng, i) for i in range(300)]
    with localstore.open(home=tmp / "h") as s:
        s.save_many([SaveRequest(path=f"f{i % 50}/w{i}", content=docs[i]) for i in range(300)])
        took = []
        for k in range(300):
            i = rng.randrange(300)
            t = time.perf_counter()
            s.save(f"f{i % 50}/w{i}", docs[i] + f"# e {k}\n")
            took.append((time.perf_counter() - t) * 1e6)
    return statistics.median(took)


def save_many(tmp: Path) -> float:
    from bench_store import WORDS, make_doc

    import localstore
    from localstore.store import SaveRequest

    rng = random.Random(3)
    n = 1500
    reqs = [
        SaveRequest(
            path=f"f{i % 50}/w{i}", content=make_doc(rng, i), fields={"tags": [WORDS[i % 7]]}
        )
        for i in range(n)
    ]
    with localstore.open(home=tmp / "h") as s:
        t = time.perf_counter()
        for k in range(0, n, 500):
            s.save_many(reqs[k : k + 500])
        return (time.perf_counter() - t) / n * 1e6


def _synced(tmp: Path, n: int) -> tuple[object, object]:
    from bench_sync import fill, open_store

    from sync.engine import SyncEngine
    from sync.memory_remote import MemoryRemote, MemoryServer

    server = MemoryServer()
    a = open_store(tmp, "a")
    fill(a, n, 500)
    SyncEngine(a, MemoryRemote(server, user="u")).sync_once()
    return server, a


def download(tmp: Path) -> float:
    from bench_sync import open_store

    from sync.engine import SyncEngine
    from sync.memory_remote import MemoryRemote

    server, a = _synced(tmp, 3000)
    a.close()  # type: ignore[attr-defined]
    b = open_store(tmp, "b")
    try:
        engine = SyncEngine(b, MemoryRemote(server, user="u"))  # type: ignore[arg-type]
        c0 = time.process_time()
        engine.sync_once()
        return time.process_time() - c0
    finally:
        b.close()


def idle_poll(tmp: Path) -> float:
    from sync.engine import SyncEngine
    from sync.memory_remote import MemoryRemote

    server, a = _synced(tmp, 3000)
    try:
        engine = SyncEngine(a, MemoryRemote(server, user="u"))  # type: ignore[arg-type]
        engine.sync_once()
        took = []
        for _ in range(60):
            t = time.perf_counter()
            engine.sync_once()
            took.append((time.perf_counter() - t) * 1e3)
        return statistics.median(took)
    finally:
        a.close()  # type: ignore[attr-defined]


def search(tmp: Path) -> float:
    from bench_store import WORDS, make_corpus_doc, search_queries, zipf_vocabulary

    import localstore
    from localstore.store import SaveRequest

    rng = random.Random(5)
    vocab, weights = zipf_vocabulary(rng)
    n = 5000
    reqs = [
        SaveRequest(
            path=f"f{i % 50}/workflow-{i}",
            content=make_corpus_doc(rng, i, vocab, weights),
            fields={"tags": [WORDS[i % 7]]},
        )
        for i in range(n)
    ]
    queries = search_queries(rng, vocab, weights, 600)
    with localstore.open(home=tmp / "h") as s:
        for k in range(0, n, 500):
            s.save_many(reqs[k : k + 500])
        for q in queries[:50]:  # warm the page cache and the statement cache
            s.search(q, limit=20)
        took = []
        for q in queries:
            t = time.perf_counter()
            s.search(q, limit=20)
            took.append((time.perf_counter() - t) * 1e6)
    return statistics.median(took)


MEASUREMENTS = {
    "save-one": (save_one, None),
    "save-many": (save_many, "/dev/shm"),
    "download": (download, None),
    "idle-poll": (idle_poll, None),
    "search": (search, "/dev/shm"),
}


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[2] not in MEASUREMENTS:
        raise SystemExit(f"usage: ab.py CODE {{{'|'.join(MEASUREMENTS)}}}")
    _load(sys.argv[1])
    fn, where = MEASUREMENTS[sys.argv[2]]
    if where and Path(where).is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="ab-", dir=where))
    else:
        tmp = bench_dir("ab-")[0]  # (a block group of its own: see _homes.py)
    try:
        print(f"{fn(tmp):.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
