"""Search with a large blueprint among the hits: the cost of its snippet.

FTS5's ``snippet()`` costs the square of a blueprint's hits (docs/architecture.md, "Snippets of
large blueprints"); a hit over ``SNIPPET_WHOLE_MAX`` gets its snippet from a window of its content.
Each size: 20 small blueprints and one large one whose every line holds ``deploy``, ``build`` and
``pipeline``, in a home on tmpfs (the disk is not the point), then top-20 searches.

    .venv/bin/python bench/bench_snippets.py [--sizes 0.5 1] [--rounds 5] [--code CHECKOUT] [--quick]

``--code`` imports localstore from another checkout (a worktree of an older commit), for A/B runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

QUERIES = ("deploy build", "deploy", "pipeline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.5, 1.0], help="MB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--code", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--quick", action="store_true", help="0.5 MB only, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.rounds = [0.5], 2
    sys.path.insert(0, str(Path(args.code).resolve()))
    import localstore

    print(f"localstore from {localstore.__file__}")
    where = "/dev/shm" if Path("/dev/shm").is_dir() else None
    for mb in args.sizes:
        tmp = tempfile.mkdtemp(prefix="bench-snippets-", dir=where)
        try:
            with localstore.open(home=Path(tmp) / "h") as store:
                for i in range(20):
                    store.save(f"small/w{i}", f"name: w{i}\nsteps:\n  - run: deploy build {i}\n")
                lines, size = ["name: huge", "steps:"], 0
                while size < mb * 2**20:
                    k = len(lines)
                    lines.append(
                        f"  - {{id: s{k}, run: make deploy, then build step {k} of the pipeline}}"
                    )
                    size += len(lines[-1]) + 1
                store.save("huge/b", "\n".join(lines) + "\n")
                for query in QUERIES:
                    took = []
                    for _ in range(args.rounds):
                        t = time.perf_counter()
                        store.search(query, limit=20)
                        took.append((time.perf_counter() - t) * 1e3)
                    print(
                        f"{mb:4.1f} MB  {query!r:16} median {statistics.median(took):9.1f} ms"
                        f"  max {max(took):9.1f} ms  (n={args.rounds})"
                    )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
