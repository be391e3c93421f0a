"""The commands `localstore service install` and `uninstall` give each service manager, checked as
data (``ServicePlan``): no launchd or Task Scheduler here, and no user systemd in CI. What each
manager does with them is from its manual, cited where it matters."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from localstore.config import Settings, load_settings
from sync import cli_daemon
from sync.cli_daemon import service_plan


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    return tmp_path / "home"


def test_systemd_reinstall_restarts_a_running_daemon(home: Path) -> None:
    """`systemctl enable --now` starts a unit that is stopped and leaves a running one alone: run
    again after an upgrade (a new executable, new arguments), install said "enabled and started"
    while the daemon went on running the old program until the next login."""
    plan = service_plan(load_settings(home=home, environ={}), str(home), platform="linux")
    unit = plan.path.name
    assert plan.enable == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", unit],
        # restart: stops a running unit (SIGTERM, as the unit says) and starts it again; starts
        # a stopped one (systemctl(1)).
        ["systemctl", "--user", "restart", unit],
    ]


def test_launchd_reinstall_boots_out_the_loaded_agent_first(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`launchctl bootstrap` of a label already loaded fails ("Bootstrap failed: 5: Input/output
    error"): a second `service install` (an upgrade) failed, and the old agent ran on. The agent
    is booted out first, whose failure when nothing is loaded ("Boot-out failed: 3: No such
    process") is expected and ignored."""
    monkeypatch.setattr(os, "getuid", lambda: 501)  # (the uid in the domain; any uid would do)
    plan = service_plan(load_settings(home=home, environ={}), str(home), platform="darwin")
    label = plan.path.stem
    assert plan.stop_first == [["launchctl", "bootout", f"gui/501/{label}"]]
    assert plan.enable == [["launchctl", "bootstrap", "gui/501", str(plan.path)]]
    assert plan.disable == plan.stop_first


def test_install_goes_on_when_there_was_nothing_to_stop(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop before the enable fails when no agent is loaded (the first install): that is not
    an install failure; the enable commands run and decide."""
    not_loaded = [sys.executable, "-c", "raise SystemExit('Boot-out failed: 3: No such process')"]
    ok = [sys.executable, "-c", "pass"]
    real = cli_daemon.service_plan

    def plan(settings: Settings, home_arg: str | None) -> cli_daemon.ServicePlan:
        return replace(
            real(settings, home_arg), stop_first=[not_loaded], enable=[ok], reachable=True
        )

    monkeypatch.setattr(cli_daemon, "service_plan", plan)
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "service", "install"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["enabled"] is True
    assert [r["rc"] for r in out["stopped"]] == [1]
    assert [r["rc"] for r in out["results"]] == [0]
