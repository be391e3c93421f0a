"""Benchmark the app-data store (hot tier and index) against diskcache, and the keychain.

Run: .venv/bin/python bench/bench_kv.py [--quick]
For the keychain rows run it inside a Secret Service session, e.g.
  dbus-run-session -- bash scripts/_in_keyring_session .venv/bin/python bench/bench_kv.py

Prints median and p99 latency per operation in microseconds, and ratios against diskcache (the
closest peer: SQLite index + files) measured in the same run on the same value.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import diskcache

from localstore.config import load_settings
from localstore.credentials import CredentialStore, KeyringSecretBackend
from localstore.errors import KeychainUnavailableError
from localstore.index import Index
from localstore.kv import KVStore

VALUE = os.urandom(1024).hex().encode()  # 2 KB, binary: no codec cost on either side
KEYS = 200


def measure(fn: Callable[[int], object], n: int) -> list[float]:
    """Call fn(i) n times; return per-call latencies in microseconds."""
    out = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def row(name: str, samples: list[float], peer: list[float] | None = None) -> str:
    med, p99 = summary(samples)
    ratio = ""
    if peer is not None:
        ratio = f"{med / summary(peer)[0]:8.2f}x"
    return f"| {name:<44} | {med:10.1f} | {p99:10.1f} | {ratio:>9} |"


def bench_kv(root: Path, n: int) -> list[str]:
    lines = []
    cache = diskcache.Cache(str(root / "diskcache"))
    dc_set = measure(lambda i: cache.set(f"k{i % KEYS}", VALUE), n)
    dc_get = measure(lambda i: cache.get(f"k{i % KEYS}"), n)
    assert cache.get("k1") == VALUE
    cache.close()

    def store(sub: str, *, hot: int, normal: bool) -> tuple[KVStore, Index]:
        (root / sub).mkdir()
        index = Index(root / sub / "index.db")
        if normal:  # like-for-like with diskcache's default (synchronous=NORMAL)
            index.conn.execute("PRAGMA synchronous=NORMAL").fetchall()
        return KVStore(index, hot_items=hot), index

    lines.append(row("diskcache set (2 KB)", dc_set))
    lines.append(row("diskcache get (2 KB)", dc_get))
    for label, hot, normal in (
        ("kv hot tier", 4096, False),
        ("kv index only", 0, False),
        ("kv hot tier, synchronous=NORMAL", 4096, True),
        ("kv index only, synchronous=NORMAL", 0, True),
    ):
        kv, index = store(
            label.replace(" ", "_").replace(",", "").replace("=", "_"), hot=hot, normal=normal
        )

        def save(i: int, kv: KVStore = kv) -> None:
            kv.save(f"k{i % KEYS}", VALUE, format="binary")

        def load(i: int, kv: KVStore = kv) -> object:
            return kv.load(f"k{i % KEYS}")

        s = measure(save, n)
        g = measure(load, n)
        assert kv.load("k1") == VALUE
        lines.append(row(f"{label} set", s, dc_set))
        lines.append(row(f"{label} get", g, dc_get))
        kv.close()
        index.close()
    return lines


def bench_keychain(root: Path, n: int) -> list[str]:
    try:
        backend = KeyringSecretBackend()
    except KeychainUnavailableError as exc:
        return [f"| keychain: skipped ({exc.message}) | | | |"]
    settings = load_settings(home=root / "home", environ={}, profile=f"bench-{uuid.uuid4().hex}")
    settings.paths.ensure()
    index = Index(settings.paths.index_db)
    creds = CredentialStore(index, settings, backend=backend)
    lines = []
    try:
        s = measure(lambda i: creds.set(f"c{i % 20}", f"secret-{i}"), n)
        g = measure(lambda i: creds.get(f"c{i % 20}"), n)
        lines.append(row(f"keychain set ({backend.description.split('.')[-2]})", s))
        lines.append(row("keychain get", g))
        kv = KVStore(index, credentials=creds, hot_items=0)
        kv.save("warm", VALUE, format="binary", encrypt=True)  # creates the data key once
        es = measure(lambda i: kv.save(f"e{i % KEYS}", VALUE, format="binary", encrypt=True), n)
        eg = measure(lambda i: kv.load(f"e{i % KEYS}"), n)
        lines.append(row("kv index only, encrypted set (2 KB)", es))
        lines.append(row("kv index only, encrypted get (2 KB)", eg))
    finally:
        for name in creds.list_names(include_internal=True):
            creds.delete(name)
        index.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    n_kv, n_kc = (300, 30) if args.quick else (3000, 200)
    print(
        f"# bench_kv {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.platform()}, {os.cpu_count()} cpus, n={n_kv}/{n_kc}"
    )
    print("| operation | median us | p99 us | vs diskcache (median) |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for line in bench_kv(Path(tmp), n_kv) + bench_keychain(Path(tmp), n_kc):
            print(line)


if __name__ == "__main__":
    main()
