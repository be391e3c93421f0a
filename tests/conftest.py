"""Suite-wide guards: no test may leak a localstore thread, and env knobs for long runs.

Knobs: LOCALSTORE_STRESS=1 runs the long stress variants, LOCALSTORE_SLOW=1 the slow builds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

STRESS = os.environ.get("LOCALSTORE_STRESS") == "1"
SLOW = os.environ.get("LOCALSTORE_SLOW") == "1"

# Threads owned by session-scoped fixtures (a shared local cloud stack) live across tests by design;
# every thread a component starts per use carries one of these prefixes and must be gone after the test.
_GUARDED_PREFIXES = ("localstore-", "watchdog", "sync-")


def _guarded(t: threading.Thread) -> bool:
    if t.name.startswith(("localcloud", "gateway", "pg-", "session-")):
        return False
    return t.name.startswith(_GUARDED_PREFIXES) or type(t).__module__.startswith(
        ("watchdog", "localstore", "sync")
    )


@pytest.fixture(scope="session", autouse=True)
def _no_gateway_left_running() -> Iterator[None]:
    """Set up first, so torn down last: by then every session-scoped local cloud (tests/cloud and
    tests/sync_supabase each have one, and an xdist worker may hold both) is stopped, and any
    gateway thread still running was leaked. Checked here rather than in one of those fixtures,
    whose teardown would see the other's live gateway."""
    yield
    leaked = [t.name for t in threading.enumerate() if t.name == "localcloud-gateway"]
    assert not leaked, f"gateway threads left running: {leaked}"


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [
            t for t in threading.enumerate() if t not in before and t.is_alive() and _guarded(t)
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh LocalStore home folder."""
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def store(home: Path) -> Iterator[object]:
    """An open store on a fresh home, closed after the test."""
    import localstore

    s = localstore.open(home=home)
    try:
        yield s
    finally:
        s.close()


def eventually(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it is true (for states no event announces, such as a health check
    that runs on a timer); False if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def replace_keeping_stat(path: Path, text: str) -> None:
    """Put ``text`` at ``path`` as a sync tool does (Syncthing, ``rsync -t``, ``cp -p``, unzip):
    a temp given the old file's mtime, renamed over it. Same size: the size and mtime the index
    recorded still match; only the change time tells.

    The temp's change time is first made to pass the old file's: a kernel before 6.13 stamps
    change times from a clock that steps once a tick (1-4 ms), and a replacement put down in
    the tick of the store's own save would carry the same change time as the recorded one (the
    window docs/watcher.md names as left open). These tests are about a tool that writes
    later; on such a kernel they failed at once. (A wait for the clock, not for the code.)
    """
    before = os.stat(path)
    assert len(text.encode()) == before.st_size
    tmp = path.with_name(f".{path.name}.syncing")
    tmp.write_text(text)
    os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
    while os.stat(tmp).st_ctime_ns <= before.st_ctime_ns:
        os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))  # (sets the change time)
    os.replace(tmp, path)
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def rename_in_same_tick(store: Any, rel: str, text: str) -> None:
    """Put ``text`` over the YAML at ``rel`` as a sync tool does (a same-size temp given the
    file's mtime, renamed over it) within the clock tick of the store's own save.

    Size and mtime are equal for real. The kernel handing out the same change time twice (one
    jiffy, 1-4 ms, before Linux 6.13; 2 s on FAT) cannot be made on demand, so the row's recorded
    change time is then set to the new file's: exactly the index that race leaves (the save
    recorded the change time its file had after its own rename, and the tool's rename in the
    same tick got the same value from the same coarse clock). Only the inode tells (core v9).
    """
    path = store.abspath(rel)
    before = os.stat(path)
    assert len(text.encode()) == before.st_size
    tmp = path.with_name(f".{path.name}.syncing")
    tmp.write_text(text)
    os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tmp, path)
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino  # (the temp existed beside the old file)
    with store.index.write() as cur:
        cur.execute(
            "UPDATE blueprints SET yaml_ctime_ns = ? WHERE path = ? AND deleted = 0",
            (after.st_ctime_ns, rel),
        )


REPO = Path(__file__).resolve().parents[1]


def bound_by_file_modes(argv: list[str]) -> list[str]:
    """``argv`` run so that file permissions bind it even when the tests run as root (setpriv
    drops the capabilities that override them), for tests of homes a user cannot write."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("as root these tests need setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", *argv]


def run_cli(
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    keep_localstore_env: bool = False,
    unset: tuple[str, ...] = (),
    prelude: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run the `localstore` CLI in a process of its own (what a user's shell runs), on ``home``.

    ``prelude``: Python run before the CLI in that process (a test's stand-in for another
    version, e.g. one more core migration).

    The test's own LOCALSTORE_* variables are dropped unless ``keep_localstore_env`` (then only
    LOCALSTORE_HOME is), and so are the variables named in ``unset``; ``env`` is added on top.
    """
    if keep_localstore_env:
        environ = {k: v for k, v in os.environ.items() if k != "LOCALSTORE_HOME"}
    else:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    for name in unset:
        environ.pop(name, None)
    environ.update(env or {})
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"{prelude}from localstore.cli import main; main()",
            "--home",
            str(home),
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        cwd=REPO,
        timeout=120,
        check=False,
    )
