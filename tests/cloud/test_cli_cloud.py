"""``localstore cloud start|status|stop`` across separate CLI invocations."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from supabase import ClientOptions, create_client

from localstore._daemon_state import pid_alive
from localstore.cli import cli
from sync.localcloud.cluster import PostgresNotFoundError

pytestmark = pytest.mark.cloud


def _localstore(home, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("localstore")), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def home(tmp_path):
    yield tmp_path
    _localstore(tmp_path, "cloud", "stop")  # whatever the test did, nothing keeps running


def test_start_status_stop(home):
    started = _localstore(home, "cloud", "start", "--json")
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    assert info["status"] == "running" and info["url"].startswith("http://127.0.0.1:")
    state_file = home / "state" / "localcloud.json"
    assert stat.S_IMODE(os.stat(state_file).st_mode) == 0o600
    # (The log was created 0644 under the usual umask: readable by every user of the machine.)
    assert stat.S_IMODE(os.stat(home / "state" / "localcloud.log").st_mode) == 0o600

    with httpx.Client() as http:
        client = create_client(info["url"], info["anon_key"], ClientOptions(httpx_client=http))
        res = client.auth.sign_up({"email": "cli@example.test", "password": "correct-horse"})
        assert res.session is not None
        client.auth._remove_session()

    again = _localstore(home, "--json", "cloud", "start")
    assert json.loads(again.stdout)["status"] == "already running"
    status = _localstore(home, "--json", "cloud", "status")
    assert status.returncode == 0 and json.loads(status.stdout)["url"] == info["url"]

    stopped = _localstore(home, "--json", "cloud", "stop")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["status"] == "stopped"
    assert not pid_alive(info["pid"]) and not state_file.exists()
    after = _localstore(home, "cloud", "status")
    assert after.returncode == 1 and "not running" in after.stdout


def test_missing_postgres_is_one_clear_line(tmp_path, monkeypatch):
    def missing():
        raise PostgresNotFoundError("PostgreSQL server binaries (initdb, postgres) not found")

    # Fault injection: pretend the server binaries are not installed.
    monkeypatch.setattr("sync.localcloud.cluster.find_bindir", missing)
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "cloud", "start"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install postgresql" in lines[0]


def test_status_of_a_stack_that_does_not_run_says_what_to_do_on_stderr(tmp_path):
    """docs/cli.md: exit 1 is an error with one line on stderr saying what and how to fix.
    `cloud status` exited 1 with "not running" on stdout and nothing on stderr."""
    plain = _localstore(tmp_path, "cloud", "status")
    assert plain.returncode == 1 and plain.stdout == "not running\n"
    assert plain.stderr.startswith("error: ") and "localstore cloud start" in plain.stderr
    assert len(plain.stderr.splitlines()) == 1
    with_json = _localstore(tmp_path, "--json", "cloud", "status")
    assert json.loads(with_json.stdout) == {"status": "not running"}
    error = json.loads(with_json.stderr)["error"]
    assert error["exit_code"] == 1 and "localstore cloud start" in error["hint"]


# A process holding the stack's lock as `serve` does (pid written in), then sleeping: a stack
# whose gateway hangs, as far as the CLI can tell.
_HOLD_LOCK = """
import sys, time
from sync.embed import HomeLock
from sync.localcloud.service import LOCK_FILE
assert HomeLock(sys.argv[1], LOCK_FILE).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _sleeper(*code: str) -> subprocess.Popen[str]:
    """A live process of this user's that is no stack (never this test's pid, which a `cloud
    stop` would signal); the caller kills it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", *(code or ("import time; time.sleep(120)",))],
        stdout=subprocess.PIPE,
        text=True,
    )
    if code:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate()  # (reaped, its pipe closed)


def test_stop_leaves_alone_a_process_that_took_a_dead_stacks_pid(tmp_path):
    """A stack killed by SIGKILL or a power cut leaves localcloud.json behind; after a reboot its
    pid can name any process of the user's. `cloud stop` sent that process SIGTERM, then SIGKILL
    (an editor, a browser), and `cloud status` called the stack running but not answering."""
    from sync.localcloud.service import write_state

    stranger = _sleeper()
    try:
        state = {"pid": stranger.pid, "url": "http://127.0.0.1:9", "anon_key": "k"}
        write_state(tmp_path / "state", state | {"service_key": "s"})
        status = _localstore(tmp_path, "--json", "cloud", "status")
        stopped = _localstore(tmp_path, "--json", "cloud", "stop")
        assert stranger.poll() is None, "cloud stop killed a process that is no stack"
    finally:
        _stop(stranger)
    assert status.returncode == 1 and json.loads(status.stdout) == {"status": "not running"}
    assert stopped.returncode == 0 and json.loads(stopped.stdout) == {"status": "not running"}
    assert not (tmp_path / "state" / "localcloud.json").exists()


def test_status_of_a_stack_that_does_not_answer_says_what_to_do_on_stderr(tmp_path):
    """The same for a stack whose process lives but whose gateway does not answer."""
    from sync.localcloud.service import write_state

    # A live process holding the stack's lock, and a port nothing listens on.
    (tmp_path / "state").mkdir(mode=0o700)
    stand_in = _sleeper(_HOLD_LOCK, str(tmp_path / "state"))
    try:
        write_state(
            tmp_path / "state",
            {"pid": stand_in.pid, "url": "http://127.0.0.1:9", "anon_key": "k", "service_key": "s"},
        )
        done = _localstore(tmp_path, "--json", "cloud", "status")
    finally:
        _stop(stand_in)
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "not answering"
    error = json.loads(done.stderr)["error"]
    assert str(stand_in.pid) in error["message"] and "localstore cloud start" in error["hint"]
