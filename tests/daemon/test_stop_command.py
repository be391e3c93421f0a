"""`localstore daemon --stop` when the daemon goes away by itself in the middle of it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import sync._daemon_stop as daemon_stop
from localstore.cli import cli
from localstore.config import Settings

from .conftest import DaemonProc

OFFLINE = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}


def test_stop_when_the_daemon_exits_between_the_check_and_the_signal(
    spawn_daemon: Callable[..., DaemonProc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon was found running, then stopped (by its service manager, another --stop)
    before --stop sent SIGTERM: os.kill raised ProcessLookupError and the user was told
    "unexpected ProcessLookupError ... report it" (exit 1). The daemon is stopped: say so."""
    home = tmp_path / "h"
    d = spawn_daemon(home, env=OFFLINE)
    d.wait_ready()
    real = daemon_stop.daemon_running
    raced: list[int] = []  # (the race ran: a patch that misses the call would pass without it)

    def found_then_gone(settings: Settings) -> dict[str, Any] | None:
        state = real(settings)
        assert state is not None and state["pid"] == d.proc.pid
        assert d.stop() == 0  # it exits (and is reaped) after the check: its pid is gone
        raced.append(int(state["pid"]))
        return state

    monkeypatch.setattr(daemon_stop, "daemon_running", found_then_gone)
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "daemon", "--stop"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"status": "stopped", "pid": d.proc.pid}
    assert raced == [d.proc.pid]
