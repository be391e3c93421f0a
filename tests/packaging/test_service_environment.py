"""The service's daemon serves the home its installer sees, when that home's folders come from XDG
variables set in the installer's shell (a service manager starts the daemon without them)."""

from __future__ import annotations

import json
import os
import plistlib
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localstore.config import load_settings
from sync.cli_daemon import service_plan

LOCALSTORE = str(Path(sys.executable).with_name("localstore"))
XDG = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME")


def _base_env(user: Path) -> dict[str, str]:
    """What a service manager gives the daemon: HOME and PATH, none of the shell's XDG_*
    (and this checkout's PYTHONPATH, so the code under test runs)."""
    env = {
        "HOME": str(user),
        "PATH": os.environ["PATH"],
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",  # no keychain: offline
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _xdg(tmp_path: Path) -> dict[str, str]:
    # Characters systemd reads specially: % (specifiers), \ (C escapes), " and spaces (quoting),
    # and $ (special in ExecStart, not in Environment=).
    root = tmp_path / 'x d g 100% back\\slash "q" $HOME'
    return {name: str(root / name.lower()) for name in XDG}


def _run_until_ready(args: list[str], env: dict[str, str], user: Path, state: Path) -> Path:
    """Start the daemon as the service would; the daemon.json it wrote (installer's or not)."""
    fallback = user / ".local" / "state" / "LocalStore" / "daemon.json"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            found = [p for p in (state / "daemon.json", fallback) if p.exists()]
            if found:
                return found[0]
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_the_systemd_service_serves_the_home_of_the_installers_xdg_folders(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    xdg = _xdg(tmp_path)
    installer = {**_base_env(user), **xdg}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [LOCALSTORE, *args], env=installer, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("init")
    unit = Path(json.loads(cli("--json", "service", "install", "--no-enable"))["path"])
    assert unit == Path(xdg["XDG_CONFIG_HOME"]) / "systemd" / "user" / "localstore.service"
    # systemd reads the Environment= lines as written (it says "ignoring" for one it cannot).
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and "ignoring" not in verify.stderr, verify.stderr
    lines = unit.read_text().splitlines()
    exec_start = next(ln for ln in lines if ln.startswith("ExecStart="))
    args = [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(exec_start[10:])]
    environment = {}
    for line in lines:
        if line.startswith("Environment="):
            # (shlex undoes the \\ and \" escapes inside double quotes as systemd does.)
            (word,) = shlex.split(line.removeprefix("Environment="))
            name, _, value = word.replace("%%", "%").partition("=")
            environment[name] = value
    state = Path(xdg["XDG_STATE_HOME"]) / "LocalStore"
    assert _run_until_ready(args, {**_base_env(user), **environment}, user, state) == (
        state / "daemon.json"
    )
    assert not (user / ".local" / "share" / "LocalStore").exists()  # no second index
    assert environment == xdg


def test_the_launchd_agent_serves_the_home_of_the_installers_xdg_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(platformdirs reads the XDG variables on macOS too; launchd never gives an agent the
    shell's environment.)"""
    user = tmp_path / "user"
    user.mkdir()
    xdg = _xdg(tmp_path)
    for name, value in {**_base_env(user), **xdg}.items():
        monkeypatch.setenv(name, value)
    plan = service_plan(load_settings(), None, platform="darwin")
    plist = plistlib.loads(plan.text.encode())
    state = Path(xdg["XDG_STATE_HOME"]) / "LocalStore"
    env = {**_base_env(user), **plist.get("EnvironmentVariables", {})}
    assert _run_until_ready(plist["ProgramArguments"], env, user, state) == state / "daemon.json"
    assert plist["EnvironmentVariables"] == xdg


def test_a_home_given_by_path_needs_no_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _xdg(tmp_path).items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "h"
    settings = load_settings(home=home)
    assert "Environment=" not in service_plan(settings, str(home), platform="linux").text
    plist = plistlib.loads(service_plan(settings, str(home), platform="darwin").text.encode())
    assert "EnvironmentVariables" not in plist
