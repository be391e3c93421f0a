"""A process saving back to back does not keep another process's saves out of the index.

SQLite's write lock has no queue: without turns (localstore/_write_turn.py) a process that
saves in a loop took the lock again microseconds after each commit, and another process's save,
polling for it, waited seconds or failed past its busy timeout (bench/writer_fairness.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import localstore
from localstore._write_turn import FRESH_NS, WriteTurn, turn_path
from localstore.errors import IndexStoreError

pytestmark = pytest.mark.timeout(600)

# Saves (one at a time, or in save_many batches) until its stdin closes; prints how many
# succeeded and how many failed with the busy error.
_SAVER = """
import sys, threading
import localstore
from localstore.errors import IndexStoreError
from localstore.store import SaveRequest

store = localstore.open(home=sys.argv[1], busy_timeout_ms=int(sys.argv[3]))
batch = int(sys.argv[2])
text = "steps:\\n" + "".join(f"  - run: step {i}\\n" for i in range(60))
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
store.save("app/first", text)
print("saving", flush=True)
saves = failed = 0
while not stop.is_set():
    try:
        if batch > 1:
            reqs = [SaveRequest(f"app/bp-{(saves + i) % 100}", text) for i in range(batch)]
            store.save_many(reqs)
        else:
            store.save(f"app/bp-{saves % 100}", text)
        saves += batch
    except IndexStoreError:
        failed += 1
store.close()
print(saves, failed, flush=True)
"""

# Far below how long the processes save; before turns about one save in twenty of a process
# saving now and then waited longer than this beside a save loop (one in four beside save_many
# batches), and of two save loops one was kept out (bench/writer_fairness.py).
BUSY_TIMEOUT_MS = 500
SAVES = 150


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    localstore.open(home=home).close()
    return home


class Saver:
    """Another process saving to ``home`` back to back until stop(), with a busy timeout of
    BUSY_TIMEOUT_MS."""

    def __init__(self, home: Path, batch: int) -> None:
        root = Path(__file__).parents[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(home), str(batch), str(BUSY_TIMEOUT_MS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "saving", self.proc.communicate()[1][-3000:]

    def stop(self) -> tuple[int, int]:
        """Stop it; how many saves it made after it said it was saving, and how many failed."""
        out, err = self.proc.communicate(timeout=120)  # (closing its stdin stops it)
        assert self.proc.returncode == 0, err[-3000:]
        saves, failed = out.split()[-2:]
        return int(saves), int(failed)


@pytest.fixture
def savers(home: Path) -> Iterator[list[Saver]]:
    started: list[Saver] = []
    yield started
    for saver in started:
        if saver.proc.poll() is None:
            saver.proc.kill()
            saver.proc.communicate()


@pytest.mark.parametrize("batch", [1, 20], ids=["save", "save_many"])
def test_two_save_loops_both_get_the_lock_within_a_short_busy_timeout(
    home: Path, savers: list[Saver], batch: int
) -> None:
    """This process saves SAVES times back to back beside another that saves in a loop (one
    at a time, or in batches), each with a busy timeout far shorter than the run: no save of
    either fails, and both go on saving."""
    savers.append(Saver(home, batch))
    failed: list[str] = []
    with localstore.open(home=home, busy_timeout_ms=BUSY_TIMEOUT_MS) as store:
        for n in range(SAVES):
            try:
                store.save(f"other/bp-{n % 10}", f"n: {n}\n")
            except IndexStoreError as exc:  # the busy error: the lock stayed taken
                failed.append(str(exc))
    app_saves, app_failed = savers[0].stop()
    assert failed == [], f"{len(failed)} of {SAVES} saves failed: {failed[0]}"
    assert app_failed == 0
    # The loop went on saving meanwhile (it was not kept out in turn): the lock was contended.
    assert app_saves >= SAVES // 2
    with localstore.open(home=home) as store:
        assert store.load("other/bp-9").data() == {"n": SAVES - 1}


def test_a_waiter_that_stopped_polling_is_forgotten(home: Path) -> None:
    """A waiter killed while announced must not make every write give way from then on."""
    path = home / "data" / "index.db"
    waiter, writer = WriteTurn.open(path), WriteTurn.open(path)
    assert waiter is not None and writer is not None
    try:
        waiter.announce()
        assert writer.other_waiting()
        assert not waiter.other_waiting()  # (its own announcement)
        # The same announcement, as if made FRESH_NS ago and never refreshed.
        words = memoryview(turn_path(path).read_bytes()).cast("q")
        with open(turn_path(path), "r+b") as fh:
            fh.write((time.monotonic_ns() - 2 * FRESH_NS).to_bytes(8, sys.byteorder, signed=True))
        assert words[1] == waiter.token
        assert not writer.other_waiting()
        assert turn_path(path).read_bytes()[:8] == bytes(8)  # cleared for the next writes
        waiter.announce()
        waiter.withdraw()  # it got the lock
        assert not writer.other_waiting()
    finally:
        waiter.close()
        writer.close()


def test_saves_go_on_without_a_turn_file(home: Path) -> None:
    """Turns are advisory: where the file cannot be made the store writes as before."""
    turn = turn_path(home / "data" / "index.db")
    turn.unlink()
    turn.mkdir()  # (in its way)
    with localstore.open(home=home) as store:
        assert store.index._turn is None
        store.save("a", "x: 1\n")
        assert store.load("a").data() == {"x": 1}
