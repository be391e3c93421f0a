"""Crash safety: SIGKILL a writer at random points; no acknowledged change is ever lost.

100 kills in the default suite, 10,000 with LOCALSTORE_STRESS=1; LOCALSTORE_CRASH_KILLS=N runs N
(a bounded stress run), LOCALSTORE_CRASH_SEED picks the kill schedule.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from tests.conftest import STRESS

KILLS = int(os.environ.get("LOCALSTORE_CRASH_KILLS") or (10_000 if STRESS else 100))
CHILD = Path(__file__).with_name("crash_child.py")
# About 0.3 s a kill on an idle 2-core machine; the stress run takes hours and gets no timeout.
pytestmark = pytest.mark.timeout(0 if STRESS else 900)


@dataclass
class Model:
    """What the acknowledged log says: id -> (path, content) of live blueprints."""

    live: dict[str, tuple[str, str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    offset: int = 0


def _read_new_records(log: Path, model: Model) -> list[dict]:
    with open(log, encoding="utf-8") as fh:
        fh.seek(model.offset)
        data = fh.read()
    # A kill can cut the last line short; it was never acknowledged, so drop it, from the file too:
    # the next writer appends, and a torn line followed by its first record would not parse.
    complete, _, _ = data.rpartition("\n")
    model.offset += len(complete.encode()) + (1 if complete else 0)
    os.truncate(log, model.offset)
    return [json.loads(line) for line in complete.splitlines() if line]


def _verify(home: Path, model: Model, records: list[dict]) -> None:
    pending: dict | None = None
    for rec in records:
        if "intent" in rec:
            pending = rec
            continue
        if not (pending and pending["intent"] == "batch" and rec["ack"] == "save"):
            pending = None
        ident = rec["id"]
        if rec["ack"] == "save":
            model.live[ident] = (rec["path"], rec["content"])
        elif rec["ack"] == "move":
            model.live[ident] = (rec["path"], model.live[ident][1])
        else:
            model.live.pop(ident, None)
            model.deleted.add(ident)
    with localstore.open(home=home) as store:
        actual = {}
        for info in store.list():
            actual[info.id] = (info.path, store.load(info.id).content)
        report = store.check()
        # A crash can leave one of our own .lstmp temp files; reconcile removes those once they
        # are a minute old, so one may cross that age between reopen and check. Nothing else.
        assert all(p["kind"] == "temp-file" for p in report.problems), report.to_dict()
        assert store.index.integrity_check() == []
    _check_pairs(home)
    for ident, state in model.live.items():
        got = actual.get(ident)
        if got == state:
            continue
        assert pending is not None and pending.get("id") == ident, (
            f"acknowledged state of {ident} lost: expected {state[0]}, got {got and got[0]}"
        )
        allowed = _apply_intent(state, pending)
        assert got == allowed, f"{ident}: neither acknowledged nor in-flight state: {got}"
    extra = {ident: actual[ident] for ident in set(actual) - set(model.live)}
    if extra:
        assert pending is not None, f"unexpected blueprints {sorted(extra)}"
        if pending["intent"] == "batch":
            # A batch is atomic per blueprint (a kill during its renames leaves some items in
            # place, which reconcile records): each extra must be one whole item of the batch.
            batch_items = {(p, c) for p, c in pending["items"]}
            assert set(extra.values()) <= batch_items, "a batch item is torn or foreign"
        else:
            assert pending.get("id") is None and len(extra) == 1, f"unexpected {sorted(extra)}"
            assert next(iter(extra.values())) == (pending["path"], pending["content"])
    # Adopt whatever the in-flight operation left behind as the new baseline.
    model.live = dict(actual)


def _apply_intent(state: tuple[str, str], intent: dict) -> tuple[str, str] | None:
    if intent["intent"] == "save":
        return (intent["path"], intent["content"])
    if intent["intent"] == "move":
        return (intent["path"], state[1])
    return None


def _check_pairs(home: Path) -> None:
    root = home / "blueprints"
    yamls = {p.relative_to(root).as_posix() for p in root.rglob("*" + fs.YAML_SUFFIX)}
    metas = {p.relative_to(root).as_posix() for p in root.rglob("*" + fs.META_SUFFIX)}
    assert {fs.meta_path_for(y) for y in yamls} == metas, "half-written pair on disk"


def _acks_since(log: Path, offset: int) -> int:
    with open(log, "rb") as fh:
        fh.seek(offset)
        return fh.read().count(b'"ack"')


def _run_child(home: Path, log: Path, seed: int, rng: random.Random) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(home), str(log), str(seed)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert proc.stdout is not None
        start = log.stat().st_size
        assert proc.stdout.readline().strip() == b"ready"
        # Kill after a random number of acknowledged changes plus a random delay: every run does
        # real work whatever the machine's load, and the kill still lands at a random point.
        target = rng.randrange(0, 6)
        deadline = time.monotonic() + 10
        while _acks_since(log, start) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def test_sigkill_during_saves_moves_and_deletes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "ack.log"
    log.touch()
    rng = random.Random(int(os.environ.get("LOCALSTORE_CRASH_SEED", "20261122")))
    model = Model()
    acknowledged = 0
    for kill in range(KILLS):
        _run_child(home, log, seed=kill, rng=rng)
        records = _read_new_records(log, model)
        acknowledged += sum(1 for r in records if "ack" in r)
        _verify(home, model, records)
    # Guards against a vacuous run (every kill before the first write); a loaded machine acks fewer.
    assert acknowledged >= KILLS, f"only {acknowledged} acknowledged changes in {KILLS} runs"
