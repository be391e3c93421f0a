"""The commands `localstore service install` and `uninstall` give each service manager, checked as
data (``ServicePlan``): no launchd or Task Scheduler here, and no user systemd in CI. What each
manager does with them is from its manual, cited where it matters."""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore.config import load_settings
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
