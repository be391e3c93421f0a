"""The commands `localstore service install` and `uninstall` give each service manager, checked as
data (``ServicePlan``): no launchd or Task Scheduler here, and no user systemd in CI. What each
manager does with them is from its manual, cited where it matters."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from localstore.config import Settings, load_settings
from sync import _service_plan, cli_daemon
from sync.cli_daemon import service_plan, windowless_command

REPO = Path(__file__).resolve().parents[2]


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


def _scripts(folder: Path, *names: str) -> Path:
    """``folder`` holding empty files named ``names`` (where pip puts the scripts)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_the_windows_task_runs_the_windowless_script_beside_the_console_one(tmp_path: Path) -> None:
    """The task ran `localstore.exe`, a console program: a console window opened at every logon,
    and closing it ended the daemon (`<Hidden>` hides the task in Task Scheduler, not a window).
    pip makes `localstorew.exe`, a GUI-subsystem launcher of the same main, beside it."""
    scripts = _scripts(tmp_path / "Scripts", "localstore.exe", "localstorew.exe")
    python = _scripts(tmp_path / "Python", "python.exe", "pythonw.exe") / "python.exe"
    assert windowless_command(str(scripts / "localstore.exe"), str(python)) == [
        str(scripts / "localstorew.exe")
    ]


def test_without_the_windowless_script_the_task_runs_pythonw(tmp_path: Path) -> None:
    """An install without `localstorew.exe` (one made before it existed, an editable one in a
    checkout): this interpreter's pythonw.exe, which opens no console, runs the package."""
    scripts = _scripts(tmp_path / "Scripts", "localstore.exe")
    python = _scripts(tmp_path / "Python", "python.exe", "pythonw.exe") / "python.exe"
    assert windowless_command(str(scripts / "localstore.exe"), str(python)) == [
        str(python.with_name("pythonw.exe")),
        "-m",
        "localstore",
    ]


def test_with_no_windowless_program_install_says_a_console_window_will_show(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Neither is there: the console script, and `service install` says what that means (a
    window at each logon that stops the daemon when closed) rather than nothing."""
    console = _scripts(tmp_path / "bin", "localstore.exe") / "localstore.exe"
    monkeypatch.setattr(_service_plan, "_executable", lambda: str(console))
    plan = service_plan(load_settings(home=home, environ={}), str(home), platform="win32")
    assert f"<Command>{console}</Command>" in plan.text
    assert "console window" in plan.warning and "localstorew" in plan.warning


def test_the_task_xml_names_the_windowless_program(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scripts = _scripts(tmp_path / "Scripts", "localstore.exe", "localstorew.exe")
    monkeypatch.setattr(_service_plan, "_executable", lambda: str(scripts / "localstore.exe"))
    plan = service_plan(load_settings(home=home, environ={}), str(home), platform="win32")
    assert f"<Command>{scripts / 'localstorew.exe'}</Command>" in plan.text
    assert plan.warning == ""


def test_pip_makes_a_windowless_script_of_the_same_main() -> None:
    """`[project.gui-scripts]`: on Windows pip writes `localstorew.exe` without a console."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["gui-scripts"] == {"localstorew": project["scripts"]["localstore"]}


def test_windows_install_stops_the_running_daemon_cleanly_then_runs_the_task(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Install only ran `schtasks /Create ... /F` and printed "enabled and started": nothing
    started until the next logon, and on a re-install (an upgrade) the old daemon ran on. The
    daemon is now stopped first through its control API (`daemon --stop`: outbox flushed, index
    closed; `schtasks /End` is TerminateProcess), then the task's instance is ended (so /Run is
    not ignored under IgnoreNew while it exits), and /Run starts it after /Create."""
    scripts = _scripts(tmp_path / "Scripts", "localstore.exe", "localstorew.exe")
    console = str(scripts / "localstore.exe")
    monkeypatch.setattr(_service_plan, "_executable", lambda: console)
    plan = service_plan(load_settings(home=home, environ={}), str(home), platform="win32")
    name = "LocalStore daemon" + cli_daemon.service_suffix(
        load_settings(home=home, environ={}), str(home)
    )
    assert plan.stop_first == [
        [console, "--home", str(home), "daemon", "--stop"],
        ["schtasks", "/End", "/TN", name],
    ]
    assert plan.enable == [
        ["schtasks", "/Create", "/TN", name, "/XML", str(plan.path), "/F"],
        ["schtasks", "/Run", "/TN", name],
    ]


# launchd as launchctl(1) and its users report it: `bootout` returns at once while the job is
# stopped (SIGTERM, up to its exit timeout) and then unloaded; until then `print` still finds the
# label and `bootstrap` of it fails with EIO.
_FAKE_LAUNCHCTL = """#!{python}
import json, pathlib, sys, time
state = pathlib.Path({state!r})
s = json.loads(state.read_text())
now = time.time()
if s["gone_at"] is not None and now >= s["gone_at"]:
    s = {{"loaded": False, "gone_at": None}}
verb, code, said = sys.argv[1], 0, ""
if verb == "bootout":
    if not s["loaded"]:
        code, said = 3, "Boot-out failed: 3: No such process"
    elif s["gone_at"] is None:
        s["gone_at"] = now + {unload_s}
elif verb == "print" and not s["loaded"]:
    code, said = 113, "Could not find service"
elif verb == "bootstrap":
    if s["loaded"]:
        code, said = 5, "Bootstrap failed: 5: Input/output error"
    else:
        s = {{"loaded": True, "gone_at": None}}
state.write_text(json.dumps(s))
with open({calls!r}, "a") as f:
    f.write(f"{{verb}} {{code}}\\n")
print(said, file=sys.stderr)
sys.exit(code)
"""


def test_launchd_reinstall_waits_for_the_booted_out_agent_to_go(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`launchctl bootout` returns before launchd has stopped and unloaded the agent (the
    daemon's clean stop takes a moment): the `bootstrap` run right after it failed with "5:
    Input/output error", so a re-install (an upgrade) exited 1 with the agent booted out and
    nothing running. Install now waits until `launchctl print` no longer finds the label."""
    state, calls = tmp_path / "launchd.json", tmp_path / "calls.txt"
    state.write_text(json.dumps({"loaded": True, "gone_at": None}))  # (an earlier install's)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "launchctl"
    fake.write_text(
        _FAKE_LAUNCHCTL.format(
            python=sys.executable, state=str(state), calls=str(calls), unload_s=1
        )
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    real = cli_daemon.service_plan
    monkeypatch.setattr(cli_daemon, "service_plan", lambda s, h: real(s, h, platform="darwin"))

    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "service", "install"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["enabled"] is True
    made = calls.read_text().split("\n")
    assert made[0] == "bootout 0" and made[-2:] == ["bootstrap 0", ""], made
    assert json.loads(state.read_text())["loaded"] is True


def test_windows_uninstall_stops_the_running_daemon_before_deleting_the_task(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Uninstall ran `schtasks /Delete` only, which removes the task and leaves its running
    instance alone: the daemon synced on until logoff, where systemd's `disable --now` and
    launchd's `bootout` stop theirs. It is stopped first, as install does (`daemon --stop`
    through the control API, then `schtasks /End`), while the task still exists to be ended."""
    scripts = _scripts(tmp_path / "Scripts", "localstore.exe", "localstorew.exe")
    monkeypatch.setattr(_service_plan, "_executable", lambda: str(scripts / "localstore.exe"))
    plan = service_plan(load_settings(home=home, environ={}), str(home), platform="win32")
    assert plan.stop_before_disable == plan.stop_first
    assert plan.disable == [["schtasks", "/Delete", "/TN", plan.stop_first[1][3], "/F"]]


def test_the_other_managers_stop_their_daemon_in_disable_itself(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 501)
    for platform in ("linux", "darwin"):
        plan = service_plan(load_settings(home=home, environ={}), str(home), platform=platform)
        assert plan.stop_before_disable == []


def _recorder(log: Path, name: str, rc: int) -> list[str]:
    """A command that appends ``name`` to ``log`` and exits ``rc``."""
    code = f"open({str(log)!r}, 'a').write({name!r} + '\\n'); raise SystemExit({rc})"
    return [sys.executable, "-c", code]


def test_uninstall_stops_first_and_goes_on_when_nothing_ran(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The stop commands run before the disable ones, and their failures (no daemon running, no
    task instance to end, a localstore command that is gone) do not keep the task installed."""
    log = tmp_path / "ran.txt"
    real = cli_daemon.service_plan
    missing = str(tmp_path / "gone" / "localstore.exe")

    def plan(settings: Settings, home_arg: str | None) -> cli_daemon.ServicePlan:
        stops = [[missing, "daemon", "--stop"], _recorder(log, "end", 1)]
        return replace(
            real(settings, home_arg),
            stop_before_disable=stops,
            disable=[_recorder(log, "delete", 0)],
            reachable=True,
        )

    monkeypatch.setattr(cli_daemon, "service_plan", plan)
    service_file = cli_daemon.service_plan(load_settings(home=home, environ={}), str(home)).path
    service_file.parent.mkdir(parents=True, exist_ok=True)
    service_file.write_text("installed")
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "service", "uninstall"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert log.read_text().split() == ["end", "delete"]
    assert [r["rc"] for r in out["stopped"]] == [None, 1]
    assert "gone" in out["stopped"][0]["stderr"]
    assert [r["rc"] for r in out["results"]] == [0]
    assert out["removed"] is True and not service_file.exists()


def test_the_service_runs_the_localstore_exe_beside_a_windows_interpreter(tmp_path: Path) -> None:
    """Beside the interpreter it looked for `localstore`, which pip names `localstore.exe` on
    Windows: never found, so the service ran whichever `localstore` was first on PATH (another
    Python's, an older install) instead of the one installed with this Python."""
    assert _service_plan._installed_script() is None  # (this checkout: the RECORD names no script)
    scripts = _scripts(tmp_path / "venv" / "Scripts", "python.exe", "localstore.exe")
    found = _service_plan._executable("win32", str(scripts / "python.exe"))
    assert found == str(scripts / "localstore.exe")


def test_the_service_runs_the_localstore_beside_a_posix_interpreter(tmp_path: Path) -> None:
    assert _service_plan._installed_script() is None
    bin_dir = _scripts(tmp_path / "venv" / "bin", "python3", "localstore", "localstore.exe")
    assert _service_plan._executable("linux", str(bin_dir / "python3")) == str(
        bin_dir / "localstore"
    )
