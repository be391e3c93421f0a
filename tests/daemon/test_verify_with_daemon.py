"""`localstore sync --verify` while a daemon syncs the home: the daemon verifies, between cycles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from sync.memory_remote import MemoryRemote, MemoryServer

from ._refusing import daemon_with_a_quarantined_change
from .conftest import write_external


def test_verify_runs_in_the_daemon(inproc_daemon: Any, tmp_path: Path) -> None:
    """`sync --verify` opened a store, a cloud session and an engine of its own beside the
    daemon's, and compared the server with an index the daemon was changing: a push between the
    two reads was a difference that was not one (exit 3). The daemon's engine runs it between
    its cycles. (The CLI here has no cloud session of its own: only the daemon can answer.)"""
    server = MemoryServer()
    remote = MemoryRemote(server)
    home = tmp_path / "home"
    d = inproc_daemon(home, remote_factory=lambda s: remote, poll_interval_s=3600)
    write_external(d.daemon.settings.paths.blueprints, "one.blueprint.yaml", "v: 1\n")
    with d.client(timeout=30) as c:
        assert c.sync(wait=True)["status"]["pending"] == 0
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "sync", "--verify"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["clean"] is True and out["local"] == 1 and out["remote"] == 1
    human = CliRunner().invoke(cli, ["--home", str(home), "sync", "--verify"])
    assert human.exit_code == 0, human.output
    assert "local 1, server 1 live blueprints" in human.output and "in sync" in human.output


def test_verify_with_retry_quarantined_retries_in_the_daemon(
    inproc_daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sync --verify --retry-quarantined` un-parked the changes in its own process, and failed
    with "another process is syncing this home" whenever the daemon ran."""
    from sync import cli_sync

    home = tmp_path / "home"
    d, remote = daemon_with_a_quarantined_change(inproc_daemon, home)
    server = remote.server
    remote.refusing = False
    # Were the CLI to sync itself, its remote is a handle on this test's server (no keychain).
    monkeypatch.setattr(cli_sync, "_open_remote", lambda settings: MemoryRemote(server, user="u"))
    args = ["--home", str(home), "--json", "sync", "--verify", "--retry-quarantined"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["clean"] is True
    assert [o.row.path for o in server.rows.values()] == ["d/one.blueprint.yaml"]
    with d.client(timeout=30) as c:
        assert c.status()["sync"]["quarantined"] == 0


def test_the_verify_op_answers_while_paused(inproc_daemon: Any, tmp_path: Path) -> None:
    """A pause stops syncing; verify changes nothing, so a paused daemon still answers it."""
    server = MemoryServer()
    home = tmp_path / "home"
    d = inproc_daemon(home, remote_factory=lambda s: MemoryRemote(server), poll_interval_s=3600)
    write_external(d.daemon.settings.paths.blueprints, "one.blueprint.yaml", "v: 1\n")
    with d.client(timeout=30) as c:
        assert c.sync(wait=True)["status"]["pending"] == 0
        assert c.pause()["state"] == "paused"
        report = c.verify()
    assert report == {"clean": True, "local": 1, "remote": 1, "differences": []}
