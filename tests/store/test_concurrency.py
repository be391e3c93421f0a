"""Four processes write the same home for a minute: no update lost, no busy error surfaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import localstore
from tests.conftest import STRESS

SECONDS = float(os.environ.get("LOCALSTORE_CONCURRENCY_SECONDS", "300" if STRESS else "60"))
WORKERS = 4
pytestmark = pytest.mark.timeout(SECONDS * 3 + 300)


def test_four_processes_lose_no_update(tmp_path: Path) -> None:
    home = tmp_path / "home"
    localstore.open(home=home).close()
    root = Path(__file__).parents[2]
    procs = []
    for w in range(WORKERS):
        out = tmp_path / f"out-{w}.json"
        procs.append(
            (
                subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).with_name("concurrent_child.py")),
                        str(home),
                        str(w),
                        str(SECONDS),
                        str(out),
                    ],
                    stderr=subprocess.PIPE,
                    env={**os.environ, "PYTHONPATH": str(root)},
                ),
                out,
            )
        )
    results = []
    for proc, out in procs:
        _, err = proc.communicate(timeout=SECONDS + 120)
        assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
        results.append(json.loads(out.read_text()))
    with localstore.open(home=home) as store:
        for w, res in enumerate(results):
            for path, n in res["own"].items():
                assert store.load(path).data() == {"worker": w, "n": n}
        total = sum(store.load(f"shared/counter-{i}").data()["value"] for i in range(3))
        assert total == sum(r["increments"] for r in results)
        assert store.check().clean
        assert store.index.integrity_check() == []
    assert sum(r["ops"] for r in results) > WORKERS * 10
