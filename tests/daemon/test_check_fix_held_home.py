"""`check --fix` must not move a damaged index aside while another process has the home open.

That process (the daemon, an app syncing in-process or only with the store open) keeps its
connection to the moved file and goes on writing there: the files stay right, but the history it
writes meanwhile is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
from click.testing import CliRunner, Result

from localstore.cli import cli
from localstore.store import BlueprintStore

from .conftest import (
    REPO,
    eventually,
    home_settings,
    process_holding_home_lock,
    python_process,
)
from .test_embed_fork import _fork_sleeper


def _cli(home: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], input=input)


def _damage_pages(db: Path) -> None:
    """Overwrite every page after the header page with garbage: the header still opens."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    data[page:] = b"\xa5" * (len(data) - page)
    db.write_bytes(bytes(data))


def test_check_fix_refuses_to_rebuild_while_another_process_holds_the_home(
    tmp_path: Path,
) -> None:
    home = tmp_path / "h"
    for i in range(3):
        assert _cli(home, "save", f"b{i}", input=f"k: {i}\n").exit_code == 0
    data = home / "data"
    for side in ("index.db-wal", "index.db-shm"):
        (data / side).unlink(missing_ok=True)
    _damage_pages(data / "index.db")
    before = (data / "index.db").read_bytes()

    with process_holding_home_lock(home / "state") as holder:
        r = _cli(home, "--json", "check", "--fix")
        assert r.exit_code == 1, r.output  # an error (docs/cli.md), not "problems remain"
        err = json.loads(r.stderr)["error"]
        assert "another process has this home open" in err["message"]
        assert f"pid {holder.pid}" in err["message"]
        assert "stop it" in err["hint"] and "check --fix" in err["hint"]
        # Nothing moved: the index is where it was, as it was, and no copy was set aside.
        assert sorted(p.name for p in data.iterdir() if "damaged" in p.name) == []
        assert (data / "index.db").read_bytes() == before

    # The holder gone, the same command rebuilds the index.
    r = _cli(home, "--json", "check", "--fix")
    assert r.exit_code == 0, r.output
    fixed = json.loads(r.stdout)["fixed"]
    assert [f["kind"] for f in fixed].count("index-rebuilt") == 1
    assert len(json.loads(_cli(home, "--json", "ls").stdout)) == 3


def _checkpointed(db: Path) -> bool:
    """Empty the WAL into the main file (True when done), so that damaged main-file pages are
    what a reader meets."""
    conn = apsw.Connection(str(db))
    try:
        conn.setbusytimeout(1000)
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
        return busy == 0
    finally:
        conn.close()


def _damage_in_place(db: Path) -> None:
    """Garbage after the header page, written in place (same inode: open connections stay on it)."""
    with open(db, "r+b") as f:
        data = f.read()
        page = int.from_bytes(data[16:18], "big") or 65536
        f.seek(page)
        f.write(b"\xa5" * (len(data) - page))


def test_check_fix_refuses_to_rebuild_under_a_running_daemon(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    """The index damaged while the daemon runs on it (the case that lost history): the daemon is
    named, with its pid, and nothing is moved."""
    home = tmp_path / "h"
    for i in range(3):
        assert _cli(home, "save", f"b{i}", input=f"k: {i}\n").exit_code == 0
    d = spawn_daemon(home)
    d.wait_ready()
    db = home / "data" / "index.db"
    assert eventually(lambda: _checkpointed(db), 10)
    _damage_in_place(db)  # the daemon's connection stays on this file

    r = _cli(home, "--json", "check", "--fix")
    assert r.exit_code == 1, r.output
    err = json.loads(r.stderr)["error"]
    assert f"the daemon, pid {d.proc.pid}" in err["message"], err
    assert "daemon --stop" in err["hint"]
    assert sorted(p.name for p in db.parent.iterdir() if "damaged" in p.name) == []
    assert d.proc.poll() is None, d.output()


@contextmanager
def _app_with_the_store_open(home: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process with the home's store open and no sync (an embedded app): it holds no
    home lock. Killed after."""
    code = (
        "import time, localstore; "
        f"store = localstore.open({str(home)!r}); print('open', flush=True); time.sleep(600)"
    )
    with python_process(code, ready="open") as proc:
        yield proc


def test_check_fix_refuses_to_rebuild_under_an_app_that_has_the_store_open(
    tmp_path: Path,
) -> None:
    """An app that opened the store without syncing holds no home lock: the rebuild went ahead
    under it, and the history it wrote afterwards went into the index moved aside."""
    home = tmp_path / "h"
    for i in range(3):
        assert _cli(home, "save", f"b{i}", input=f"k: {i}\n").exit_code == 0
    db = home / "data" / "index.db"
    with _app_with_the_store_open(home) as app:
        assert _checkpointed(db)
        _damage_in_place(db)  # its connection stays on this file
        r = _cli(home, "--json", "check", "--fix")
        assert r.exit_code == 1, r.output
        err = json.loads(r.stderr)["error"]
        assert "another process has this home open" in err["message"], err
        assert "an app with the store open" in err["message"], err
        if Path("/proc/locks").exists():  # (the pids come from there; the refusal does not)
            assert f"pid {app.pid} " in err["message"], err
        assert "quit the app" in err["hint"] and "check --fix" in err["hint"]
        assert sorted(p.name for p in db.parent.iterdir() if "damaged" in p.name) == []
        assert app.poll() is None

    # The app gone, the same command rebuilds the index.
    r = _cli(home, "--json", "check", "--fix")
    assert r.exit_code == 0, r.output
    assert [f["kind"] for f in json.loads(r.stdout)["fixed"]].count("index-rebuilt") == 1
    assert len(json.loads(_cli(home, "--json", "ls").stdout)) == 3


def test_a_forked_child_does_not_keep_the_store_marked_open(tmp_path: Path) -> None:
    """A child forked while the app had the store open (a ``multiprocessing`` worker pool)
    inherited the open-store mark's file description, and an flock belongs to the description:
    after the app closed its store, ``check --fix`` still refused, for as long as the child lived
    (the sync home lock had the same trap: tests/daemon/test_embed_fork.py)."""
    home = tmp_path / "h"
    for i in range(3):
        assert _cli(home, "save", f"b{i}", input=f"k: {i}\n").exit_code == 0
    store = BlueprintStore(home_settings(home))
    pid, pipe = _fork_sleeper()
    try:
        store.close()
        data = home / "data"
        for side in ("index.db-wal", "index.db-shm"):
            (data / side).unlink(missing_ok=True)
        _damage_pages(data / "index.db")
        r = _cli(home, "--json", "check", "--fix")
        assert r.exit_code == 0, r.output
        assert [f["kind"] for f in json.loads(r.stdout)["fixed"]].count("index-rebuilt") == 1
    finally:
        os.close(pipe)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_forked_child_does_not_keep_a_dead_apps_watcher_marked(tmp_path: Path) -> None:
    """The running watcher's mark too: an app killed while a child it forked lives on left its
    watcher marked, and every command beside the child left fresh changes to no one."""
    from localstore._presence import watching_elsewhere

    home = tmp_path / "h"
    code = (
        "import os, sys, time, localstore; from localstore.watcher import Watcher; "
        "store = localstore.open(sys.argv[1]); Watcher(store).start(); child = os.fork()\n"
        "if child == 0:\n"
        "    os.close(1); os.close(2); time.sleep(600); os._exit(0)  # (killed by the test)\n"
        "print(child, flush=True); os._exit(0)  # (as if killed: no stop, no close)"
    )
    app = subprocess.run(
        [sys.executable, "-c", code, str(home)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    child = int(app.stdout)
    try:
        assert watching_elsewhere(home_settings(home)) is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
