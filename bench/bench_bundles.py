"""Benchmark bundle export and import (plain and encrypted) at 1,000 and 10,000 blueprints.

For each size: a source home is filled with ~2 KB blueprints (files written directly, then indexed
by the reconcile pass on open, which is much faster than N durable saves), then timed:

* export plain / encrypted (default scrypt cost, N=2**17) of every blueprint;
* import plain / encrypted into an empty home (every blueprint through the durable save path);
* a repeated import of the same bundle (all no-ops);
* where one plain and one encrypted import spend their time, wall clock and CPU (``--phases``):
  reading, decrypting and verifying the bundle; planning; the YAML check done by the archive code;
  and ``store.save_many`` (everything the store does: its own YAML check, files, index, fsync);
* the floor of any import under the durability rules: the same N blueprints saved one by one
  with ``store.save`` (both files fsynced, one index transaction each) into an empty home;
* peers in the same run, as ratios: ``zipfile`` writing the raw blueprints folder (the floor for
  export: same bytes, no index reads, no manifest) and ``extractall`` of that zip (the floor for
  import: no verification, no fsync, no index).

Run: .venv/bin/python bench/bench_bundles.py [--quick] [--sizes 1000,10000] [--repeat 3]

The machine is shared: the load average is printed at the start and end of every size, and the
CPU time of the phase split is the figure to compare across runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import localstore
from localstore import _bundle_apply, archive
from localstore.blueprint import BlueprintMeta, encode_meta, new_id, utc_now
from localstore.crypto import PassphraseKey
from localstore.store import SaveRequest

PASSPHRASE = "bench passphrase"


def _doc(i: int) -> bytes:
    body = f"# workflow {i}\nname: workflow {i}\nsteps:\n" + "".join(
        f"  - id: s{j}\n    run: echo {i}-{j}   # step {j}\n" for j in range(50)
    )
    return body[:2048].encode()


def fill(home: Path, n: int) -> None:
    """Write n blueprint pairs straight to disk; the store indexes them on open."""
    root = home / "blueprints"
    now = utc_now()
    for i in range(n):
        folder = root / f"team-{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        meta = BlueprintMeta(id=new_id(), name=f"wf-{i}", created=now, modified=now, tags=("b",))
        (folder / f"wf-{i:06d}.blueprint.yaml").write_bytes(_doc(i))
        (folder / f"wf-{i:06d}.blueprint.meta.json").write_bytes(encode_meta(meta))


def save_many_all(home: Path, n: int) -> None:
    """The store alone: n blueprints through save_many in import's batch size, no bundle."""
    with localstore.open(home=home) as store:
        for start in range(0, n, archive.APPLY_CHUNK):
            store.save_many(
                [
                    SaveRequest(path=f"team-{i % 20:02d}/wf-{i:06d}", content=_doc(i))
                    for i in range(start, min(n, start + archive.APPLY_CHUNK))
                ],
                origin="import",
            )


def save_all(home: Path, n: int) -> None:
    """The import floor: n durable saves, one transaction each, into an empty home."""
    with localstore.open(home=home) as store:
        for i in range(n):
            store.save(f"team-{i % 20:02d}/wf-{i:06d}", _doc(i), tags=["b"])


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Phases:
    """Wall-clock and CPU seconds per named phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def add(self, name: str, since: tuple[float, float]) -> None:
        wall, cpu = self.now()
        self.wall[name] = self.wall.get(name, 0.0) + wall - since[0]
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu - since[1]

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        since = self.now()
        try:
            yield
        finally:
            self.add(name, since)

    def report(self, title: str, n: int) -> None:
        total = sum(self.wall.values())
        print(f"  phases of one {title} ({total:.2f} s wall, {sum(self.cpu.values()):.2f} s CPU):")
        for name, wall in self.wall.items():
            print(
                f"    {name:<34} wall {wall:7.3f} s ({100 * wall / total:4.1f}%)"
                f"   cpu {self.cpu[name]:7.3f} s   {1000 * wall / n:6.3f} ms/blueprint"
            )


def import_phases(home: Path, bundle: Path, pw: str | None, n: int, title: str) -> None:
    """One import into an empty home, split as import_bundle runs it (same calls, same order)."""
    ph = Phases()
    with localstore.open(home=home) as dst:
        limits = archive.BundleLimits.for_store(dst)
        since = ph.now()
        with archive.open_bundle(
            bundle, staging_root=dst.paths.cache, passphrase=pw, limits=limits
        ) as verified:
            ph.add("read, decrypt, verify (archive)", since)
            archive._ensure_schema(dst)  # (import_bundle's, before the plan: it never writes)
            with ph("plan (archive)"):
                items = archive.plan_import(dst, verified)
            with ph("YAML check (archive)"):
                archive._check_yaml(items, dst)
            with ph("store.save_many"):
                for start in range(0, len(items), archive.APPLY_CHUNK):
                    _bundle_apply._apply_items(dst, items[start : start + archive.APPLY_CHUNK], [])
            since = ph.now()
        ph.add("staging cleanup (archive)", since)
        assert dst.count() == n
    shutil.rmtree(home)
    ph.report(title, n)


def stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"median {statistics.median(samples):7.3f} s   p99 {p99:7.3f} s   (n={len(samples)})"


def bench_size(
    work: Path, n: int, repeat: int, floor_max: int, phases: bool
) -> dict[str, list[float]]:
    src_home = work / f"src-{n}"
    print(f"  setup: writing {n} pairs took {timed(partial(fill, src_home, n)):.1f} s", end="")
    started = time.perf_counter()
    results: dict[str, list[float]] = {}
    with localstore.open(home=src_home) as src:
        print(f", indexing them on open {time.perf_counter() - started:.1f} s", flush=True)
        assert src.count() == n
        plain, sealed = work / f"b{n}.lsbundle", work / f"b{n}-enc.lsbundle"
        results["export plain"] = [
            timed(lambda: archive.export_bundle(src, plain)) for _ in range(repeat)
        ]
        results["export encrypted"] = [
            timed(lambda: archive.export_bundle(src, sealed, passphrase=PASSPHRASE))
            for _ in range(repeat)
        ]
        raw_zip = work / f"raw{n}.zip"
        results["peer: zip folder"] = [
            timed(lambda: shutil.make_archive(str(raw_zip)[:-4], "zip", src.root))
            for _ in range(repeat)
        ]
    for label, bundle, pw in (
        ("import plain", plain, None),
        ("import encrypted", sealed, PASSPHRASE),
    ):
        samples, again = [], []
        for r in range(repeat):
            home = work / f"dst-{n}-{label[-5:]}-{r}"
            with localstore.open(home=home) as dst:
                samples.append(timed(partial(archive.import_bundle, dst, bundle, passphrase=pw)))
                assert dst.count() == n
                again.append(timed(partial(archive.import_bundle, dst, bundle, passphrase=pw)))
            shutil.rmtree(home)
        results[label] = samples
        results[f"re-{label} (no-op)"] = again
        if phases:
            import_phases(work / f"ph-{n}-{label[-5:]}", bundle, pw, n, label)
    results["floor: store.save_many alone"] = [
        timed(partial(save_many_all, work / f"many-{n}-{r}", n)) for r in range(repeat)
    ]
    if n <= floor_max:
        results["floor: N x store.save"] = [
            timed(partial(save_all, work / f"saves-{n}-{r}", n)) for r in range(repeat)
        ]
    results["peer: unzip folder"] = [
        timed(partial(zipfile.ZipFile(raw_zip).extractall, work / f"x{n}-{r}"))
        for r in range(repeat)
    ]
    results["scrypt derive (in each encrypted run)"] = [
        timed(lambda: PassphraseKey.derive(PASSPHRASE)) for _ in range(repeat)
    ]
    print(f"bundle sizes: plain {plain.stat().st_size:,} B, encrypted {sealed.stat().st_size:,} B")
    return results


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 and 1,000 blueprints, 2 runs")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--floor-max", type=int, default=1000, help="measure the N x save floor up to this N"
    )
    parser.add_argument(
        "--no-phases", action="store_true", help="skip the two extra imports split into phases"
    )
    args = parser.parse_args()
    sizes = [200, 1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 2 if args.quick else args.repeat
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench-bundles-") as tmp:
        for n in sizes:
            print(f"\n== {n} blueprints (~2 KB each); load average {load()}")
            runs = repeat if n <= 1000 else max(1, repeat - 1)
            res = bench_size(Path(tmp), n, runs, args.floor_max, not args.no_phases)
            for label, samples in res.items():
                print(f"  {label:<40} {stats(samples)}")
            ratio = statistics.median(res["export plain"]) / statistics.median(
                res["peer: zip folder"]
            )
            ratio_in = statistics.median(res["import plain"]) / statistics.median(
                res["peer: unzip folder"]
            )
            print(f"  export plain / zip folder   = {ratio:5.2f}x")
            print(f"  import plain / unzip folder = {ratio_in:5.2f}x")
            if "floor: N x store.save" in res:
                floor = statistics.median(res["import plain"]) / statistics.median(
                    res["floor: N x store.save"]
                )
                print(f"  import plain / N x save     = {floor:5.2f}x")
            many = statistics.median(res["import plain"]) / statistics.median(
                res["floor: store.save_many alone"]
            )
            print(f"  import plain / save_many    = {many:5.2f}x")
            print(f"  load average at the end: {load()}")


if __name__ == "__main__":
    main()
