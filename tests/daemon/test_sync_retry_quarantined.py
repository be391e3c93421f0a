"""`localstore sync --retry-quarantined` while a daemon syncs the home: the daemon retries them."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from sync.control import ControlRequestError
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change, PushResult

from ._refusing import daemon_with_a_quarantined_change
from .conftest import write_external


def test_retry_quarantined_from_the_cli_runs_in_the_daemon(
    inproc_daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status` prints `localstore sync --retry-quarantined` for each quarantined change, and
    the daemon (the README's set-up) holds the home's lock: the command retried in the CLI's
    own process and failed with "another process is syncing this home", so the change stayed
    parked until the user found out to stop the daemon first."""
    home = tmp_path / "home"
    d, remote = daemon_with_a_quarantined_change(inproc_daemon, home)
    server = remote.server
    with d.client(timeout=30) as c:
        with pytest.raises(ControlRequestError) as bad:
            c.request("sync", wait=True, retry_quarantined="yes")
        assert bad.value.code == "bad_request"

    remote.refusing = False
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "sync", "--retry-quarantined"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["daemon"] is True and out["retried"] == 1
    # (The engine's own loop, woken by the retry, may push it before the requested cycle.)
    assert out["status"]["quarantined"] == 0 and out["status"]["pending"] == 0
    assert [o.row.path for o in server.rows.values()] == ["d/one.blueprint.yaml"]


@pytest.mark.parametrize("retry", [False, True])
def test_a_daemon_cycle_longer_than_the_cli_waits_is_said_so(
    inproc_daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retry: bool
) -> None:
    """A daemon still busy with the cycle (a first download, a slow network) when the CLI stops
    waiting for its reply: the CLI said "the daemon did not run the sync; syncing here", then
    failed with "another process is syncing this home" (the daemon holds the lock), which sent
    the user looking for another process while the daemon was doing what was asked."""
    from sync import cli_sync

    server = MemoryServer()
    remote = MemoryRemote(server)
    real_push = remote.push
    release = threading.Event()

    def push(changes: list[Change], *, device: str) -> list[PushResult]:
        release.wait(60)  # (fault injection: a slow server; released once the CLI returned)
        return real_push(changes, device=device)

    home = tmp_path / "home"
    d = inproc_daemon(home, remote_factory=lambda s: remote, poll_interval_s=3600)
    monkeypatch.setattr(remote, "push", push)
    monkeypatch.setattr(cli_sync, "DAEMON_SYNC_WAIT_S", 0.5)  # (the CLI's wait, shortened)
    write_external(d.daemon.settings.paths.blueprints, "one.blueprint.yaml", "v: 1\n")
    args = ["--home", str(home), "sync"] + (["--retry-quarantined"] if retry else [])
    try:
        # (The push blocks until the CLI returned: the daemon cannot answer in time.)
        result = CliRunner().invoke(cli, args)
    finally:
        release.set()
    assert result.exit_code == 1, result.output
    assert "another process is syncing" not in result.output
    assert "syncing here" not in result.output
    assert "the daemon is still syncing" in result.output
    assert "localstore status" in result.output
    with d.client(timeout=30) as c:  # the daemon's cycle went on: the change is up
        assert c.sync(wait=True)["status"]["pending"] == 0
    assert [o.row.path for o in server.rows.values()] == ["one.blueprint.yaml"]
