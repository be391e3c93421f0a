"""The daemon as a real subprocess: events over the control API, one instance per home, crash
recovery without cleanup, SIGTERM, and two devices converging through the local stack."""

from __future__ import annotations

import os
import signal
import stat
import time

import pytest

from localstore._daemon_state import EXIT_HOME_LOCKED
from localstore.config import load_settings
from sync.control import ControlRequestError
from sync.embed import daemon_running, lock_holder, read_state
from sync.errors import AccountMismatchError
from sync.supabase_remote import login, logout, remote_from_settings
from tests.conftest import run_cli

from .conftest import PASSWORD, eventually, home_settings, log_in, new_email, write_external

OFFLINE = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}


def test_daemon_streams_edits_syncs_and_stops_on_sigterm(cloud, spawn_daemon, tmp_path) -> None:
    home = tmp_path / "a"
    log_in(home_settings(home), cloud, new_email())
    d = spawn_daemon(home)
    state = d.wait_ready()
    path = home / "state" / "daemon.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert state["port"] > 0 and len(state["token"]) >= 32

    c = d.client()
    assert c.status()["sync"]["logged_in"] is True
    c.subscribe()
    write_external(home / "blueprints", "work/report.blueprint.yaml", "title: Report\nsteps: []\n")
    saved = c.wait_for(lambda e: e["event"] == "saved", 30)
    assert saved["data"]["path"] == "work/report.blueprint.yaml"
    assert saved["data"]["origin"] == "external"
    # The engine pushes it by itself (debounced local change): the stream shows the cycle end.
    c.wait_for(
        lambda e: (
            e["event"] == "sync" and e["data"]["state"] == "idle" and e["data"]["pending"] == 0
        ),
        60,
    )
    # The counter is added when sync_once returns, just after the idle status went out.
    assert eventually(lambda: c.metrics()["counters"]["pushed"] >= 1, 10)

    # A second daemon on the same home refuses to start, naming the holder.
    second = spawn_daemon(home)
    assert second.proc.wait(60) == EXIT_HOME_LOCKED  # (one a service does not restart)
    assert f"process {d.proc.pid} already syncs this home" in second.output()
    state = read_state(home / "state")
    assert state is not None and state["pid"] == d.proc.pid  # untouched by the loser

    started = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0, d.output()
    assert time.monotonic() - started < 5
    assert not path.exists()
    assert lock_holder(home / "state") is None


def test_a_sigkilled_daemon_is_replaced_without_cleanup(spawn_daemon, tmp_path) -> None:
    home = tmp_path / "k"
    first = spawn_daemon(home)
    first.wait_ready()
    first.stop(signal.SIGKILL)
    # Its daemon.json stays behind, but nobody trusts it: the pid is gone and the flock released.
    stale = read_state(home / "state")
    assert stale is not None and stale["pid"] == first.proc.pid
    assert daemon_running(load_settings(home=home, environ={})) is None
    second = spawn_daemon(home)
    state = second.wait_ready()
    assert state["pid"] == second.proc.pid and state["token"] != stale["token"]
    status = second.client().status()
    assert status["sync"]["state"] == "offline" and status["sync"]["logged_in"] is False
    assert second.stop() == 0


def test_two_devices_converge_through_their_daemons(cloud, spawn_daemon, tmp_path) -> None:
    email = new_email()
    homes = [tmp_path / "dev-a", tmp_path / "dev-b"]
    for h in homes:
        log_in(home_settings(h), cloud, email)
    a, b = (spawn_daemon(h) for h in homes)
    a.wait_ready()
    b.wait_ready()
    ca, cb = a.client(), b.client()
    cb.subscribe(["saved", "deleted", "moved", "conflict"])
    text = "name: shared\nsteps:\n  - fetch\n"
    write_external(homes[0] / "blueprints", "shared/flow.blueprint.yaml", text)
    # Device A pushes (sync op waits for the watcher first); B hears the realtime hint and pulls.
    report = ca.sync(wait=True)["report"]
    assert report["pushed"] >= 1
    got = cb.wait_for(lambda e: e["event"] == "saved" and e["data"]["origin"] == "remote", 60)
    assert got["data"]["path"] == "shared/flow.blueprint.yaml"
    assert (homes[1] / "blueprints/shared/flow.blueprint.yaml").read_text() == text
    # And back: B edits, A receives.
    ca.subscribe(["saved"])
    write_external(homes[1] / "blueprints", "shared/flow.blueprint.yaml", text + "  - store\n")
    cb.sync(wait=True)
    ca.wait_for(lambda e: e["data"].get("origin") == "remote", 60)
    assert (homes[0] / "blueprints/shared/flow.blueprint.yaml").read_text().endswith("- store\n")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_stop_an_offline_daemon_cleanly(spawn_daemon, tmp_path, sig) -> None:
    """SIGHUP too: a foreground daemon whose terminal closes gets one, and died of it without
    removing daemon.json or finishing its sync cycle."""
    home = tmp_path / f"s{int(sig)}"
    d = spawn_daemon(home)
    d.wait_ready()
    d.proc.send_signal(sig)
    assert d.proc.wait(5) == 0
    assert not (home / "state" / "daemon.json").exists()
    assert "daemon stopping" in (home / "state" / "daemon.log").read_text()
    assert os.path.exists(home / "state" / "daemon.lock")  # kept: deleting it would race


def _account_paths(cloud, home, email) -> list[str]:
    """The live paths in ``email``'s account (read through a fresh home of that user)."""
    settings = home_settings(home)
    log_in(settings, cloud, email)
    remote = remote_from_settings(settings)
    try:
        return sorted(r.path for r in remote.pull(0, limit=1000).changes if not r.deleted)
    finally:
        remote.close()


def test_logout_and_another_users_login_while_the_daemon_runs(cloud, spawn_daemon, tmp_path):
    """Review r3 (f_logout_daemon, f_user_switch2): after `logout` the daemon stops using the
    session at once (an edit made after it is never uploaded); another user of the project cannot
    log in on the home; with --switch-user the daemon picks the new session up and syncs as them.
    """
    home = tmp_path / "a"
    settings = home_settings(home)
    alice, bob = new_email(), new_email()
    log_in(settings, cloud, alice)
    d = spawn_daemon(home)
    d.wait_ready()
    c = d.client()
    write_external(home / "blueprints", "a/diary.blueprint.yaml", "secret: alice-only\n")
    assert c.sync(wait=True)["report"]["pushed"] == 1

    logout(settings)
    assert eventually(lambda: c.status()["sync"]["logged_in"] is False, 10), d.output()
    write_external(home / "blueprints", "a/after-logout.blueprint.yaml", "v: 1\n")
    with pytest.raises(ControlRequestError) as info:
        c.sync(wait=True)
    assert info.value.code == "not_logged_in"

    with pytest.raises(AccountMismatchError):
        log_in(settings, cloud, bob)
    result = login(settings, cloud.url, cloud.anon_key, bob, PASSWORD, switch_user=True)
    assert eventually(lambda: result.user_id in c.status()["sync"].get("identity", ""), 10)
    assert c.sync(wait=True)["status"]["pending"] == 0  # its first cycle may have pushed them

    assert _account_paths(cloud, tmp_path / "alice", alice) == ["a/diary.blueprint.yaml"]
    assert _account_paths(cloud, tmp_path / "bob", bob) == [
        "a/after-logout.blueprint.yaml",
        "a/diary.blueprint.yaml",
    ]
    assert d.stop() == 0


# What pythonw.exe and a windowed (console=False) build give the daemon of the Windows task: no
# standard streams, sys.stdout and sys.stderr None and their descriptors not open.
_NO_STD_STREAMS = "import os, sys\nos.close(1)\nos.close(2)\nsys.stdout = sys.stderr = None"


@pytest.mark.parametrize("extra", [("--no-stderr",), ()])
def test_a_daemon_without_stdout_and_stderr_runs_and_stops_cleanly(
    spawn_daemon, tmp_path, extra
) -> None:
    """The task runs `localstorew daemon --no-stderr` (or `pythonw -m localstore`), whose
    sys.stdout and sys.stderr are None: the daemon starts, serves, logs to daemon.log and stops
    through `daemon --stop` with exit 0, with no traceback anywhere (without --no-stderr too, as
    a person running `localstorew daemon` gets)."""
    home = tmp_path / "w"
    d = spawn_daemon(home, *extra, env=OFFLINE, prelude=_NO_STD_STREAMS)
    d.wait_ready()
    # The null device in their place, not the first file the daemon opened (its lock, its log),
    # which a process it starts would take for its stdout and write into.
    for fd in (1, 2):
        assert os.readlink(f"/proc/{d.proc.pid}/fd/{fd}") == os.devnull
    stop = run_cli(home, "daemon", "--stop", env=OFFLINE)
    assert stop.returncode == 0, stop.stderr
    assert d.proc.wait(15) == 0, d.output()
    log = (home / "state" / "daemon.log").read_text()
    assert "daemon stopping" in log and "Traceback" not in log
    assert d.output() == ""  # (its closed streams wrote nothing to the file the test gave them)
