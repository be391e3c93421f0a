"""Pause and resume: against an engine that is starting (offline -> a login is picked up), and\nacross daemon restarts (a pause is kept in state/ until `resume`)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import sync._daemon_ops as daemon_ops  # (the pause op reads write_pause and clear_pause there)
import sync._engine_core as engine_core  # (status() reads read_status there)
import sync.daemon as daemon_module
from localstore.cli import cli
from localstore.errors import StorageError
from sync.errors import NotLoggedInError
from sync.memory_remote import MemoryRemote, MemoryServer
from tests.conftest import run_cli


@pytest.mark.parametrize("first", [False, True], ids=["pause", "resume"])
def test_a_pause_or_resume_while_the_engine_starts_is_kept(
    inproc_daemon: Any, monkeypatch: pytest.MonkeyPatch, first: bool
) -> None:
    """_attach_engine read the pause flag before starting the engine and published the engine
    after: a `pause` handled in between saw no engine, only set the flag, and the daemon said
    'paused' while its engine synced (a `resume` was lost the same way)."""
    server = MemoryServer()
    logged_in = False

    def remote_factory(settings: Any) -> MemoryRemote:
        if not logged_in:
            raise NotLoggedInError("not logged in")
        return MemoryRemote(server)

    d = inproc_daemon(remote_factory=remote_factory)
    assert d.daemon.engine is None  # offline
    d.daemon._op_pause(first)  # the state before the login: paused for the "resume" case
    real_start = daemon_module._MeteredEngine.start

    def start_with_a_request_in_between(engine: Any) -> None:
        d.daemon._op_pause(not first)  # the control op, handled while the engine starts
        real_start(engine)

    monkeypatch.setattr(daemon_module._MeteredEngine, "start", start_with_a_request_in_between)
    logged_in = True
    assert d.daemon._attach_engine()
    assert d.daemon._paused is (not first)
    assert d.daemon.engine is not None and d.daemon.engine._paused is (not first)


def _stop(d: Any) -> None:
    d.daemon.stop()
    d.thread.join(30)
    assert not d.thread.is_alive()


def test_a_pause_outlives_a_daemon_restart(inproc_daemon: Any, tmp_path: Path) -> None:
    """Paused on a metered connection, then a reboot: the new daemon synced at once (the pause
    lived in memory only). It stays paused until `resume`, and `status` says so."""
    server = MemoryServer()
    home = tmp_path / "home"

    def remote_factory(settings: Any) -> MemoryRemote:
        return MemoryRemote(server)

    first = inproc_daemon(home, remote_factory=remote_factory)
    with first.client() as c:
        c.pause()
    _stop(first)

    second = inproc_daemon(home, remote_factory=remote_factory)
    assert second.daemon.engine is not None and second.daemon.engine._paused
    with second.client() as c:
        sync = c.status()["sync"]
        assert sync["state"] == "paused" and sync["paused_since"] > 0
        assert "localstore daemon --resume" in sync["detail"]
        status = json.loads(
            CliRunner().invoke(cli, ["--home", str(home), "--json", "status"]).stdout
        )
        assert status["state"] == "paused" and status["daemon"] is True
        c.resume()
        assert c.status()["sync"]["state"] != "paused"
    _stop(second)

    third = inproc_daemon(home, remote_factory=remote_factory)
    assert third.daemon.engine is not None and not third.daemon.engine._paused
    _stop(third)  # (all three share the home: the fixture checks its lock is free after each)


def test_pause_and_resume_from_the_cli_with_and_without_a_daemon(
    inproc_daemon: Any, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "init").returncode == 0

    def cli_json(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(cli, ["--home", str(home), "--json", *args])
        assert result.exit_code == 0, result.output
        out: dict[str, Any] = json.loads(result.stdout)
        return out

    # No daemon: remembered for the next one, and `status` shows it.
    assert cli_json("daemon", "--pause")["paused"] is True
    status = cli_json("status")
    assert status["state"] == "paused" and status["daemon"] is False
    d = inproc_daemon(home)  # (offline: not logged in)
    with d.client() as c:
        assert c.status()["sync"]["state"] == "paused"
        # A daemon runs: the CLI asks it.
        assert cli_json("daemon", "--resume")["paused"] is False
        assert c.status()["sync"]["state"] == "offline"
        assert cli_json("daemon", "--pause")["paused"] is True
        assert c.status()["sync"]["state"] == "paused"
    _stop(d)
    assert cli_json("daemon", "--resume")["paused"] is False
    assert cli_json("status")["state"] != "paused"


def test_a_resume_done_by_the_daemon_is_reported_done_when_its_status_read_fails(
    inproc_daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon resumed (the pause file removed, its engine un-paused), then read the
    status its reply carries from the index; that read failing (a locked or damaged index)
    sent an error reply, and `daemon --resume` said "daemon N did not answer" and exited 1:
    the user resumed again, or thought sync was still paused."""
    server = MemoryServer()
    home = tmp_path / "home"
    d = inproc_daemon(home, remote_factory=lambda settings: MemoryRemote(server))
    with d.client() as c:
        c.pause()
    engine = d.daemon.engine
    assert engine is not None and engine._paused

    def unreadable(*args: Any, **kwargs: Any) -> Any:  # fault injection: the index read fails
        raise StorageError("cannot read the index: disk I/O error", hint="see `localstore check`")

    monkeypatch.setattr(engine_core, "read_status", unreadable)
    r = CliRunner().invoke(cli, ["--home", str(home), "--json", "daemon", "--resume"])
    monkeypatch.undo()
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["paused"] is False and out["daemon"] is True
    assert "disk I/O error" in out["warning"]["message"]
    warning = json.loads(r.stderr)["warning"]  # and said on stderr, as the CLI's warnings are
    assert "resumed" in warning["message"] and "disk I/O error" in warning["message"]
    assert not engine._paused
    assert not (home / "state" / "sync-paused.json").exists()

    # The words a person reads.
    with d.client() as c:
        c.pause()
    monkeypatch.setattr(engine_core, "read_status", unreadable)
    r = CliRunner().invoke(cli, ["--home", str(home), "daemon", "--resume"])
    monkeypatch.undo()
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("sync resumed for daemon ")
    assert r.stderr.startswith("warning: sync resumed, but the daemon could not report ")


def test_a_pause_and_a_resume_from_two_clients_at_once_leave_the_file_and_the_daemon_agreeing(
    inproc_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control ops run on a pool of 4 threads, so a `pause` and a `resume` from two clients (the
    CLI and an app) ran at once. A resume that removed the file while a pause was still writing
    it (a slow disk) left the daemon paused with no file, or the file with the daemon syncing: a
    restart then did the opposite of what the daemon had said. They now run one at a time."""
    d = inproc_daemon()
    real_write, real_clear = daemon_ops.write_pause, daemon_ops.clear_pause
    writing, written, cleared = threading.Event(), threading.Event(), threading.Event()
    overlapped: list[bool] = []

    def slow_write(state_dir: Path) -> float:
        writing.set()
        try:
            since = real_write(state_dir)
            # A slow disk: the pause's flush takes a while (until the resume's clear, if that
            # comes in meanwhile). The bound only ends the wait; nothing is timed.
            cleared.wait(5)
            return since
        finally:
            written.set()

    def clear_and_note(state_dir: Path) -> None:
        overlapped.append(writing.is_set() and not written.is_set())
        real_clear(state_dir)
        cleared.set()

    monkeypatch.setattr(daemon_ops, "write_pause", slow_write)
    monkeypatch.setattr(daemon_ops, "clear_pause", clear_and_note)
    replies: dict[str, Any] = {}

    def send(op: str) -> None:
        with d.client(timeout=30) as c:
            replies[op] = c.request(op)

    pauser = threading.Thread(target=send, args=("pause",))
    pauser.start()
    assert writing.wait(10)  # the pause is writing its file
    resumer = threading.Thread(target=send, args=("resume",))
    resumer.start()
    pauser.join(30)
    resumer.join(30)
    assert set(replies) == {"pause", "resume"}
    assert overlapped == [False], "the resume ran while the pause was still being recorded"
    on_disk = (d.daemon.settings.paths.state / "sync-paused.json").exists()
    assert on_disk == d.daemon._paused
    with d.client() as c:
        assert (c.status()["sync"]["state"] == "paused") == on_disk
