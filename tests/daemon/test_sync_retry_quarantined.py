"""`localstore sync --retry-quarantined` while a daemon syncs the home: the daemon retries them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from sync.control import ControlRequestError
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change, PushResult

from .conftest import write_external


def test_retry_quarantined_from_the_cli_runs_in_the_daemon(
    inproc_daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status` prints `localstore sync --retry-quarantined` for each quarantined change, and
    the daemon (the README's set-up) holds the home's lock: the command retried in the CLI's
    own process and failed with "another process is syncing this home", so the change stayed
    parked until the user found out to stop the daemon first."""
    server = MemoryServer()
    remote = MemoryRemote(server)
    refusing = True
    real_push = remote.push

    def push(changes: list[Change], *, device: str) -> list[PushResult]:
        # A permanent-looking rejection the server stops giving (its operator fixed it).
        if refusing:
            return [
                PushResult(c.op_id, c.id, "rejected", code="invalid_path", message="refused")
                for c in changes
            ]
        return real_push(changes, device=device)

    monkeypatch.setattr(remote, "push", push)  # (fault injection: the server is real)
    home = tmp_path / "home"
    d = inproc_daemon(home, remote_factory=lambda s: remote, poll_interval_s=3600)
    write_external(d.daemon.settings.paths.blueprints, "d/one.blueprint.yaml", "v: 1\n")
    with d.client(timeout=30) as c:
        assert c.sync(wait=True)["status"]["quarantined"] == 1
        with pytest.raises(ControlRequestError) as bad:
            c.request("sync", wait=True, retry_quarantined="yes")
        assert bad.value.code == "bad_request"

    refusing = False
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "sync", "--retry-quarantined"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["daemon"] is True and out["retried"] == 1
    # (The engine's own loop, woken by the retry, may push it before the requested cycle.)
    assert out["status"]["quarantined"] == 0 and out["status"]["pending"] == 0
    assert [o.row.path for o in server.rows.values()] == ["d/one.blueprint.yaml"]
