"""The save path's YAML check on two kinds of blueprint, against the C safe loader.

``bench_store.py``'s generated blueprints hold only words and step names; real workflows also
hold snake_case keys, shell commands (``&&``, ``VAR=1``), URLs with query strings, globs and
percentages, which decide which path ``check_yaml`` takes (libyaml's ``raw_parse``, or the event
scan in Python). Prints medians and p99 per blueprint, and the ratio to ``yaml.load`` with
``CSafeLoader`` (what a store that builds every document would pay), measured in the same run.

    .venv/bin/python bench/bench_yaml.py
    .venv/bin/python bench/bench_yaml.py --quick
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml
from bench_store import make_doc

from localstore.blueprint import _needs_events, check_yaml


def make_workflow_doc(rng: random.Random, i: int, steps: int = 12) -> str:
    """A CI-style workflow: what people actually keep in such files."""
    out = [
        f"# workflow {i}",
        f"name: deploy_pipeline_{i}",
        "description: Builds, tests and ships the service...",
        "on_push: true",
        "steps:",
    ]
    for n in range(steps):
        out += [
            f"  - name: build_step_{n}",
            f"    timeout_minutes: {rng.randint(5, 60)}",
            "    retry_count: 3",
            "    env:",
            "      LOG_LEVEL: debug",
            f"      BUILD_TARGET: {rng.choice(['release', 'debug'])}",
            "    run: cd src && make test VERBOSE=1 PARALLEL=4  # 100% of the suite",
            f"    url: https://ci.example.com/api/v1/jobs?id={i}&step={n}",
            "    artifacts: ['dist/**/*.whl', 'logs/*.txt']",
        ]
    return "\n".join(out) + "\n"


def per_doc_us(fn: Callable[[bytes], object], docs: list[bytes], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        for d in docs:
            t0 = time.perf_counter()
            fn(d)
            samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 3 if args.quick else 15
    rng = random.Random(7)
    kinds = {
        "bench_store's generated blueprint": [make_doc(rng, i).encode() for i in range(200)],
        "CI-style workflow": [make_workflow_doc(rng, i).encode() for i in range(200)],
    }
    print(
        f"{'blueprint':<36} {'bytes':>6} {'path':>10} {'check p50':>10} {'p99':>8}"
        f" {'CSafeLoader p50':>16} {'ratio':>6}"
    )
    for name, docs in kinds.items():
        for d in docs:
            check_yaml(d)  # warm up, and every document must pass
        path = "event scan" if _needs_events(docs[0]) else "raw_parse"
        check = per_doc_us(check_yaml, docs, rounds)
        load = per_doc_us(
            lambda d: yaml.load(d, Loader=yaml.CSafeLoader), docs, max(1, rounds // 3)
        )
        size = statistics.mean(len(d) for d in docs)
        c50, l50 = statistics.median(check), statistics.median(load)
        print(
            f"{name:<36} {size:>6.0f} {path:>10} {c50:>8.1f}us {pct(check, 0.99):>6.0f}us"
            f" {l50:>14.1f}us {c50 / l50:>6.2f}"
        )


if __name__ == "__main__":
    main()
