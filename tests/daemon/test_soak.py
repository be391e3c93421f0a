"""Soak (LOCALSTORE_STRESS=1): two daemons under continuous edits for LOCALSTORE_SOAK_S seconds
(default 1800) must not grow in memory, open files or threads, and must converge at the end.

Samples go to LOCALSTORE_SOAK_OUT (JSON) when set, for docs/benchmarks/daemon.md.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import STRESS

from .conftest import home_settings, log_in, new_email, write_external

SOAK_S = float(os.environ.get("LOCALSTORE_SOAK_S", "1800"))
SAMPLE_S = max(1.0, min(30.0, SOAK_S / 60))
# Allowed growth between the first and the last third of the run (after a warm-up third).
MAX_RSS_GROWTH = 24 * 1024 * 1024
MAX_FD_GROWTH = 8
MAX_THREAD_GROWTH = 3


def sample(proc: psutil.Process) -> dict[str, float]:
    with proc.oneshot():
        t = proc.cpu_times()
        return {
            "t": time.monotonic(),
            "rss": proc.memory_info().rss,
            "fds": proc.num_fds(),
            "threads": proc.num_threads(),
            "cpu": t.user + t.system,
        }


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*.blueprint.*"))
        if p.is_file()
    }


@pytest.mark.stress
@pytest.mark.timeout(SOAK_S + 900)
@pytest.mark.skipif(not STRESS, reason="30-minute soak: LOCALSTORE_STRESS=1")
def test_two_daemons_under_continuous_edits_do_not_grow(cloud, spawn_daemon, tmp_path) -> None:
    email = new_email()
    homes = [tmp_path / "soak-a", tmp_path / "soak-b"]
    for h in homes:
        log_in(home_settings(h), cloud, email)
    daemons = [spawn_daemon(h) for h in homes]
    for d in daemons:
        d.wait_ready()
    procs = [psutil.Process(d.proc.pid) for d in daemons]
    rng = random.Random(7)
    samples: list[list[dict[str, float]]] = [[], []]
    edits = 0
    started = time.monotonic()
    next_sample = started
    while time.monotonic() - started < SOAK_S:
        # Each device edits its own folder (50 blueprints each, rewritten round-robin), moves one
        # now and then, and edits a shared one (merges and conflicts included).
        side = edits % 2
        root = homes[side] / "blueprints"
        n = rng.randrange(50)
        write_external(root, f"dev{side}/bp-{n}.blueprint.yaml", f"n: {n}\nedit: {edits}\n")
        if edits % 25 == 0:
            write_external(root, "shared/common.blueprint.yaml", f"by: {side}\nat: {edits}\n")
        edits += 1
        time.sleep(0.05)  # the edit rate (~20/s), not a wait for a result
        if time.monotonic() >= next_sample:
            for i, p in enumerate(procs):
                samples[i].append(sample(p))
            next_sample += SAMPLE_S
    # Quiesce, then the two devices must agree.
    clients = [d.client(timeout=120) for d in daemons]
    deadline = time.monotonic() + 300
    while True:
        for c in clients:
            c.sync(wait=True, timeout=300)
        snaps = [snapshot(h / "blueprints") for h in homes]
        if snaps[0] == snaps[1] or time.monotonic() > deadline:
            break
    assert snaps[0] == snaps[1], "the devices did not converge after the soak"
    report = {"seconds": SOAK_S, "edits": edits, "samples": samples}
    out = os.environ.get("LOCALSTORE_SOAK_OUT")
    if out:
        Path(out).write_text(json.dumps(report))
    for series in samples:
        third = max(1, len(series) // 3)
        first, last = series[third : 2 * third], series[-third:]
        for key, limit in (
            ("rss", MAX_RSS_GROWTH),
            ("fds", MAX_FD_GROWTH),
            ("threads", MAX_THREAD_GROWTH),
        ):
            growth = statistics.median(s[key] for s in last) - statistics.median(
                s[key] for s in first
            )
            assert growth <= limit, f"{key} grew by {growth} over the soak"
