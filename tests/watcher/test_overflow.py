"""Acceptance 3: an event storm that overflows the kernel queue still ends with index == disk.

The deterministic test holds watchdog's inotify reader (fault injection) while tens of thousands of
real changes pile up in the kernel queue, so a real IN_Q_OVERFLOW happens; the watcher must notice it
(through watchdog's log) and rescan. The stress variant just storms as fast as it can.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from localstore.store import BlueprintStore
from localstore.watcher import OVERFLOW_LOGGERS, Watcher

from .conftest import STRESS

N_FILES = 200


def _max_queued() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def _assert_index_equals_disk(store: BlueprintStore) -> None:
    on_disk = {
        p.relative_to(store.root).as_posix(): p.read_text()
        for p in store.root.rglob("*.blueprint.yaml")
    }
    indexed = {i.path for i in store.list()}
    assert indexed == set(on_disk)
    for rel, text in on_disk.items():
        assert store.load(rel).content == text
    report = store.check()
    assert report.clean, report.problems


def _storm(root: Path, events: int) -> None:
    """Fill the kernel queue with cheap events, then change content (whose events are lost).

    Touches alternate between files (the kernel merges only identical consecutive events). The
    rewrites, creations and deletions after that are what the index must end up matching.
    """
    names = sorted(root.glob("storm/*.blueprint.yaml"))
    for k in range(events):
        os.utime(names[k % len(names)])
    for i, p in enumerate(names):
        fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, f"i: {i}\nrewritten: true\n".encode())
        os.close(fd)
    for i in range(40):
        (root / "storm" / f"late-{i}.blueprint.yaml").write_text(f"late: {i}\n")
    for p in names[:25]:
        p.unlink()


def overflow(watcher: Watcher) -> None:
    """Overflow ``watcher``'s inotify queue with a storm in its folder, its reader held meanwhile."""
    reader = watcher._observer._inotify_fd  # watchdog's inotify reader thread (fault injection)
    gate, held = threading.Event(), threading.Event()
    original = reader.read_events

    def held_read(*args: object, **kwargs: object) -> object:
        held.set()
        gate.wait(60)
        return original(*args, **kwargs)

    reader.read_events = held_read
    (watcher.root / "wake.tmp").write_text("wake the reader so it parks in held_read")
    assert held.wait(10)
    _storm(watcher.root, _max_queued() + 1000)
    reader.read_events = original
    gate.set()


@pytest.fixture(params=["WARNING", "ERROR"])
def root_level(request: pytest.FixtureRequest) -> Iterator[str]:
    """The root logger's level; ERROR is what `localstore daemon --log-level ERROR` sets."""
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in ("", *OVERFLOW_LOGGERS)}
    root.setLevel(request.param)
    yield request.param
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def test_overflow_triggers_rescan_and_index_equals_disk(
    store: BlueprintStore, make_watcher, root_level: str
) -> None:
    for i in range(N_FILES):
        store.save(f"storm/f{i}", f"i: {i}\n")
    watcher: Watcher = make_watcher(store)
    watcher.start()
    assert watcher.wait_idle()
    overflow(watcher)
    assert watcher.wait_idle(120)
    assert watcher.stats.overflows >= 1
    assert watcher.stats.rescans >= 2
    _assert_index_equals_disk(store)


@pytest.mark.stress
@pytest.mark.skipif(not STRESS, reason="stress run: LOCALSTORE_STRESS=1")
def test_storm_from_another_process(store: BlueprintStore, make_watcher) -> None:
    for i in range(N_FILES):
        store.save(f"storm/f{i}", f"i: {i}\n")
    watcher: Watcher = make_watcher(store)
    watcher.start()
    assert watcher.wait_idle()
    code = (
        "import sys, pathlib; sys.path.insert(0, sys.argv[2]);"
        "from tests.watcher.test_overflow import _storm; _storm(pathlib.Path(sys.argv[1]), int(sys.argv[3]))"
    )
    root_dir = str(Path(__file__).resolve().parents[2])
    subprocess.run(
        [sys.executable, "-c", code, str(store.root), root_dir, str(4 * _max_queued())], check=True
    )
    assert watcher.wait_idle(300)
    _assert_index_equals_disk(store)
