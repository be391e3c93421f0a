"""CLI commands beside a watcher of another process: what that watcher is still to record is left
to it, for an app syncing in-process as for the daemon, and for files new or gone as for changed.

Before, only the daemon's watcher was seen (through daemon.json) and only for changes to indexed
files: beside an app syncing in-process a `show` in an editor's pause recorded half an in-place
save, and beside either a new pair being written was recorded half-way, and a YAML gone for a
moment in a save dance was recorded deleted, by any command's open.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localstore import files as fs
from localstore.store import BlueprintStore
from tests.conftest import run_cli

from .conftest import REPO, home_settings, python_process
from .test_cli_during_editor_write import FULL, HALF, LONG_QUIET, OLD

# The watchers here decide only on events (no timing in these tests): periods longer than them.
LONG_GRACE_MS = "600000"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    r = run_cli(home, *args)
    assert r.returncode == 0, r.stderr
    return r


def _history(home: Path, ref: str) -> list[tuple[str, bool]]:
    """(text, deleted) of the recorded revisions, newest first, read without reconciling."""
    with BlueprintStore(home_settings(home), reconcile=False, maintenance=False) as store:
        return [(store.load_revision(ref, r.rev).content, r.deleted) for r in store.history(ref)]


def _listed(home: Path) -> list[str]:
    with BlueprintStore(home_settings(home), reconcile=False, maintenance=False) as store:
        return [info.path for info in store.list()]


APP = (
    LONG_QUIET
    + """
import json, sys, localstore
from sync.memory_remote import MemoryRemote, MemoryServer
store = localstore.open(sys.argv[1])
store.subscribe(lambda e: print(json.dumps(e.to_dict()), flush=True))
store.start_sync(remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
print("ready", flush=True)
sys.stdin.read()
store.close()
"""
)


@contextmanager
def _app_syncing_in_process(
    home: Path,
) -> Iterator[Callable[[Callable[[dict[str, Any]], bool]], Any]]:
    """An app process syncing ``home`` in-process (start_sync, its own Watcher; no daemon.json).
    Yields wait_for(predicate): the first event of the app's store that matches."""
    proc = subprocess.Popen(
        [sys.executable, "-c", APP, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stdin is not None
    lines: queue.Queue[str] = queue.Queue()
    out = proc.stdout

    def read() -> None:
        for line in out:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait_for(match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            line = lines.get(timeout=60)
            event = json.loads(line)
            if match(event):
                return event

    try:
        assert lines.get(timeout=60).strip() == "ready"
        yield wait_for
    finally:
        proc.stdin.close()  # the app closes its store and exits
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        proc.stdout.close()


def test_cli_in_an_editors_pause_leaves_the_half_save_to_an_app_syncing_in_process(
    tmp_path: Path,
) -> None:
    home = tmp_path / "h"
    with BlueprintStore(home_settings(home)) as store:
        bp = store.save("team/deploy", OLD)
        path = store.abspath(bp.path)
    with _app_syncing_in_process(home) as wait_for:
        with open(path, "r+", encoding="utf-8") as f:  # an editor's in-place save, two chunks
            f.truncate(0)
            f.write(HALF)
            f.flush()
            assert _cli(home, "show", bp.id).stdout == HALF  # the file as it is now...
            assert _history(home, bp.id) == [(OLD, False)]  # ...not recorded
            _cli(home, "ls")
            assert _history(home, bp.id) == [(OLD, False)]
            f.write(FULL[len(HALF) :])
        saved = wait_for(lambda e: e["event"] == "modified" and e["path"] == bp.path)
        assert saved["origin"] == "external"
        assert _history(home, bp.id) == [(FULL, False), (OLD, False)]  # the whole file, once


def _a_pair_from_elsewhere(tmp_path: Path) -> tuple[bytes, str]:
    """The meta file of a blueprint saved in another home (with FULL), and its id."""
    with BlueprintStore(home_settings(tmp_path / "other")) as other:
        bp = other.save("team/deploy", FULL)
        return (other.root / fs.meta_path_for(bp.path)).read_bytes(), bp.id


def test_cli_leaves_a_new_pair_being_written_to_the_daemons_watcher(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    home = tmp_path / "h"
    with BlueprintStore(home_settings(home)) as store:
        other = store.save("team/other", OLD).path
        root = store.root
    meta, blueprint_id = _a_pair_from_elsewhere(tmp_path)
    rel = "team/deploy" + fs.YAML_SUFFIX
    d = spawn_daemon(home, prelude=LONG_QUIET)
    d.wait_ready()
    c = d.client()
    c.subscribe()
    # A pair copied in (meta first), its YAML still being written when a command runs.
    (root / fs.meta_path_for(rel)).write_bytes(meta)
    with open(root / rel, "w", encoding="utf-8") as f:
        f.write(HALF)
        f.flush()
        _cli(home, "ls")
        assert _listed(home) == [other]  # not recorded half-way
        f.write(FULL[len(HALF) :])
    created = c.wait_for(lambda e: e["event"] == "saved" and e["data"]["path"] == rel, 60)
    assert created["data"]["id"] == blueprint_id
    assert _history(home, blueprint_id) == [(FULL, False)]
    assert d.stop() == 0


def test_cli_leaves_a_yaml_gone_in_a_save_dance_to_the_daemons_watcher(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    home = tmp_path / "h"
    with BlueprintStore(home_settings(home)) as store:
        bp = store.save("team/deploy", OLD)
        path = store.abspath(bp.path)
    d = spawn_daemon(home, env={"LOCALSTORE_DELETE_GRACE_MS": LONG_GRACE_MS})
    d.wait_ready()
    c = d.client()
    c.subscribe()
    # vim's save: the file renamed away, a new one written in its place.
    backup = path.with_name("deploy.yaml~")
    path.rename(backup)
    assert _cli(home, "show", bp.id).stdout == OLD  # the last revision, not "not found"
    _cli(home, "ls")
    assert _history(home, bp.id) == [(OLD, False)]  # no delete recorded
    path.write_text(FULL, encoding="utf-8")
    saved = c.wait_for(lambda e: e["event"] == "saved" and e["data"]["path"] == bp.path, 60)
    assert saved["data"]["id"] == bp.id
    assert _history(home, bp.id) == [(FULL, False), (OLD, False)]
    backup.unlink()
    assert d.stop() == 0


def test_a_watcher_marks_itself_while_it_runs_and_a_dead_ones_mark_is_removed(
    tmp_path: Path,
) -> None:
    """The marks other processes read (localstore._presence): there while the watcher runs,
    gone when it stops; a mark left by a process killed with its watcher counts for nothing."""
    from localstore._presence import WATCHERS_DIR, watching_elsewhere
    from localstore.watcher import Watcher

    home = tmp_path / "h"
    settings = home_settings(home)
    marks = settings.paths.state / WATCHERS_DIR
    with BlueprintStore(settings) as store, Watcher(store, write_quiet_ms=1234):
        (mark,) = marks.iterdir()
        assert json.loads(mark.read_text())["write_quiet_ms"] == 1234
        # (this process's own watchers answer for their stores themselves)
        assert watching_elsewhere(settings) is None
    assert list(marks.iterdir()) == []

    code = (
        "import os, sys, localstore; from localstore.watcher import Watcher; "
        "store = localstore.open(sys.argv[1]); Watcher(store, write_quiet_ms=4321).start(); "
        "print('watching', flush=True); sys.stdin.read()"
    )
    with python_process(code, str(home), ready="watching"):
        periods = watching_elsewhere(settings)
        assert periods is not None and periods.write_quiet_s == 4.321
    assert len(list(marks.iterdir())) == 1  # killed: nothing removed it
    assert watching_elsewhere(settings) is None
    assert list(marks.iterdir()) == []  # the reader removed it


@contextmanager
def _another_process_watching(home: Path) -> Iterator[None]:
    """Another process holding a running watcher's mark on ``home`` (long periods: whatever it is
    still to record stays its to record throughout the test)."""
    code = (
        "import sys; from pathlib import Path; "
        "from localstore._presence import WatchMark, WatchPeriods; "
        "WatchMark.take(Path(sys.argv[1]), WatchPeriods(600.0, 600.0)); "
        "print('watching', flush=True); sys.stdin.read()"
    )
    with python_process(code, str(home / "state"), ready="watching"):
        yield


def test_a_folder_replaced_by_a_file_beside_a_watcher_leaves_the_open_working(
    tmp_path: Path,
) -> None:
    """The vanished YAML's folder is aged by its nearest folder still there; a file in the place
    of one of them ended that walk with NotADirectoryError, raised out of every open (any CLI
    command) for as long as the other process watched."""
    home = tmp_path / "h"
    with BlueprintStore(home_settings(home)) as store:
        bp = store.save("team/sub/deploy", OLD)
        root = store.root
    with _another_process_watching(home):
        shutil.rmtree(root / "team")
        (root / "team").write_text("not a folder\n", encoding="utf-8")
        with BlueprintStore(home_settings(home)) as store:
            # Changed just now (the file 'team' is new): the watcher's to judge, not recorded.
            assert store.load(bp.id).content == OLD
        assert _history(home, bp.id) == [(OLD, False)]


def test_a_watcher_that_starts_removes_the_marks_of_dead_ones(tmp_path: Path) -> None:
    """A dead watcher's mark was removed only by another process's reader (a store without a
    watcher recording a change: a CLI command). A daemon alone on its home, killed now and then
    (SIGKILL, OOM, a power cut) left one mark a death, for good. A watcher starting removes them."""
    from localstore._presence import WATCHERS_DIR
    from localstore.watcher import Watcher

    home = tmp_path / "h"
    settings = home_settings(home)
    marks = settings.paths.state / WATCHERS_DIR
    code = (
        "import sys, localstore; from localstore.watcher import Watcher; "
        "store = localstore.open(sys.argv[1]); Watcher(store).start(); "
        "print('watching', flush=True); sys.stdin.read()"
    )
    left = []
    for _ in range(2):
        with python_process(code, str(home), ready="watching"):
            pass
        left.append(sorted(p.name for p in marks.iterdir()))
    # Each killed with its mark in place; the second, starting, removed the first one's.
    assert len(left[0]) == 1 and len(left[1]) == 1 and left[0] != left[1]
    with BlueprintStore(settings) as store, Watcher(store):
        (mark,) = marks.iterdir()
        assert mark.name.startswith(f"{os.getpid()}-")
    assert list(marks.iterdir()) == []


def test_marks_named_with_this_processs_pid_are_judged_by_their_lock_not_their_name(
    tmp_path: Path,
) -> None:
    """Own marks were told by the pid in their names. A daemon in a container has the same pid
    after every restart: its dead marks were skipped as its own, for good; and in two pid
    namespaces sharing a home (both pid 1) a command skipped the other one's live watcher."""
    from localstore._presence import WATCHERS_DIR, watching_elsewhere

    home = tmp_path / "h"
    settings = home_settings(home)
    BlueprintStore(settings).close()
    marks = settings.paths.state / WATCHERS_DIR
    marks.mkdir(mode=0o700, exist_ok=True)
    # A watcher of an earlier life of this pid, killed: nobody holds its mark.
    dead = marks / f"{os.getpid()}-0badc0de.json"
    dead.write_text(json.dumps({"write_quiet_ms": 9000, "delete_grace_ms": 9000}))
    assert watching_elsewhere(settings) is None
    assert not dead.exists()  # removed like any dead watcher's mark

    # A live watcher in another pid namespace that has this pid there: its mark, held.
    live = marks / f"{os.getpid()}-1ivec0de.json"
    code = (
        "import fcntl, json, os, sys; "
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
        "fcntl.flock(fd, fcntl.LOCK_EX); "
        "os.write(fd, json.dumps({'write_quiet_ms': 4321, 'delete_grace_ms': 765}).encode()); "
        "print('watching', flush=True); sys.stdin.read()"
    )
    with python_process(code, str(live), ready="watching"):
        periods = watching_elsewhere(settings)
        assert periods is not None
        assert (periods.write_quiet_s, periods.grace_s) == (4.321, 0.765)
