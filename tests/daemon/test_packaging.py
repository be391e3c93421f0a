"""Service files and the one-file binary: systemd verifies the unit, the plist and task XML parse,
`localstore service` writes them, and (LOCALSTORE_SLOW=1) PyInstaller builds a working binary."""

from __future__ import annotations

import json
import os
import plistlib
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from localstore._daemon_state import (
    EXIT_HOME_GONE,
    EXIT_HOME_LOCKED,
    EXIT_HOME_READ_ONLY,
    EXIT_INDEX_NEWER,
)
from sync.cli_daemon import (
    render_launchd_plist,
    render_systemd_unit,
    render_task_xml,
    service_plan,
    systemd_escape,
    windowless_command,
)
from sync.embed import daemon_running
from tests.conftest import SLOW

from .conftest import REPO, home_settings, process_holding_home_lock

PACKAGING = REPO / "packaging"
LOCALSTORE = str(Path(sys.executable).with_name("localstore"))
_OFFLINE = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
_TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    full.update(env or {})
    return subprocess.run(
        [LOCALSTORE, *args], capture_output=True, text=True, env=full, timeout=120, check=False
    )


def systemd_verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which("systemd-analyze"), "scripts/setup installs systemd (systemd-analyze)"
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    # --user needs a runtime dir but no running user manager; the plain verify needs neither.
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    plain = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, env=env
    )
    assert plain.returncode == 0, plain.stderr
    return subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)], capture_output=True, text=True, env=env
    )


def test_packaged_samples_are_what_the_installer_writes() -> None:
    assert (PACKAGING / "localstore.service").read_text() == render_systemd_unit(
        ["%h/.local/bin/localstore", "daemon"]
    )
    assert (PACKAGING / "dev.localstore.daemon.plist").read_text() == render_launchd_plist(
        ["/usr/local/bin/localstore", "daemon"], "/tmp/LocalStore"
    )
    assert (PACKAGING / "localstore-task.xml").read_text(encoding="utf-16") == render_task_xml(
        [r"%LOCALAPPDATA%\Programs\LocalStore\localstorew.exe", "daemon"]
    )


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    home = tmp_path / "my home %h $HOME"  # specifiers and variables must be escaped
    plan = service_plan(home_settings(home), str(home), platform="linux")
    unit = tmp_path / plan.path.name
    unit.write_text(plan.text)
    user = systemd_verify(unit, tmp_path)
    assert user.returncode == 0, user.stderr
    exec_line = next(ln for ln in plan.text.splitlines() if ln.startswith("ExecStart="))
    assert "'" + str(home).replace("%", "%%").replace("$", "$$") + "'" in exec_line
    assert plan.path.name.startswith("localstore-") and plan.path.suffix == ".service"


def test_systemd_verify_rejects_a_broken_unit(tmp_path: Path) -> None:
    # The check is real: a unit whose binary is missing fails verification.
    unit = tmp_path / "broken.service"
    unit.write_text(render_systemd_unit(["/nonexistent/localstore", "daemon"]))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode != 0 and "/nonexistent/localstore" in done.stderr


def test_launchd_plist_parses(tmp_path: Path) -> None:
    home = tmp_path / "h"
    plan = service_plan(home_settings(home), str(home), platform="darwin")
    data = plistlib.loads(plan.text.encode())
    assert data["ProgramArguments"][-6:] == [
        "--home",
        str(home),
        "daemon",
        "--no-stderr",
        "--no-restart-code",
        "0",
    ]
    assert data["RunAtLoad"] is True and data["KeepAlive"] == {"SuccessfulExit": False}
    assert plan.path.parent.name == "LaunchAgents" and plan.path.suffix == ".plist"
    assert plistlib.loads((PACKAGING / "dev.localstore.daemon.plist").read_bytes())["Label"]


def test_windows_task_xml_parses(tmp_path: Path) -> None:
    home = tmp_path / "a b&c"
    plan = service_plan(home_settings(home), str(home), platform="win32")
    root = ET.fromstring(plan.text.replace('encoding="UTF-16"', ""))
    command = root.find("t:Actions/t:Exec/t:Command", _TASK_NS)
    arguments = root.find("t:Actions/t:Exec/t:Arguments", _TASK_NS)
    # (localstorew beside the console script once pip made it: a fresh install; an editable
    # install made before [project.gui-scripts] has only the console one.)
    assert command is not None and command.text == windowless_command(LOCALSTORE)[0]
    assert arguments is not None and arguments.text == f'--home "{home}" daemon --no-stderr'
    assert root.find("t:Triggers/t:LogonTrigger", _TASK_NS) is not None
    sample = ET.parse(PACKAGING / "localstore-task.xml").getroot()
    policy = sample.find("t:Settings/t:MultipleInstancesPolicy", _TASK_NS)
    assert policy is not None and policy.text == "IgnoreNew"


def test_launchd_service_keeps_log_lines_out_of_its_unrotated_daemon_out(tmp_path: Path) -> None:
    """launchd appends the daemon's stdout and stderr to daemon.out, which nothing rotates: the
    service must log to the rotated daemon.log only (as --detach does), or daemon.out grows with
    every log line for as long as the service runs. Run the plist's own command the way launchd
    does and compare the two files."""
    home = tmp_path / "h"
    settings = home_settings(home)
    plist = plistlib.loads(service_plan(settings, str(home), platform="darwin").text.encode())
    out_path = Path(plist["StandardErrorPath"])
    assert plist["StandardOutPath"] == str(out_path) and out_path.name == "daemon.out"
    # systemd keeps the stderr log: journald rotates it (and `journalctl --user -u` shows it).
    unit = service_plan(settings, str(home), platform="linux").text
    assert "--no-stderr" not in unit
    out_path.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    env.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")  # runs offline
    with open(out_path, "ab") as out:
        proc = subprocess.Popen(plist["ProgramArguments"], stdout=out, stderr=out, env=env)
    try:
        deadline = time.monotonic() + 60
        while (daemon_running(settings) or {}).get("pid") != proc.pid:
            assert proc.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    logged = (settings.paths.state / "daemon.log").read_text().splitlines()
    assert len(logged) >= 2  # started, stopped
    out_text = out_path.read_text()
    assert [line for line in logged if line in out_text] == []


def test_unsupported_platform_is_refused_clearly(tmp_path: Path) -> None:
    import click

    with pytest.raises(click.ClickException, match="no service manager is supported on sunos5"):
        service_plan(home_settings(tmp_path), None, platform="sunos5")


@pytest.mark.parametrize("xdg", ["relative/config", "~/config"])
def test_systemd_unit_ignores_a_relative_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg: str
) -> None:
    # The XDG spec and systemd ignore it; the unit went under the working directory.
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
    plan = service_plan(home_settings(tmp_path / "h"), str(tmp_path / "h"), platform="linux")
    assert plan.path.parent == tmp_path / "user" / ".config" / "systemd" / "user"


def test_service_install_status_uninstall_without_a_user_manager(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = cli("--home", str(home), "--json", "service", "install", env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    unit = Path(out["path"])
    assert unit.parent == tmp_path / "config" / "systemd" / "user" and unit.exists()
    if out["enabled"]:  # a machine with a user systemd: it was enabled for real
        cli("--home", str(home), "service", "uninstall", env=env)
        pytest.fail("this test expects no reachable user systemd (CI containers have none)")
    assert out["commands"][-1] == f"systemctl --user restart {unit.name}"
    assert systemd_verify(unit, tmp_path).returncode == 0
    human = cli("--home", str(home), "service", "install", env=env)
    assert "systemctl --user daemon-reload" in human.stdout and "not enabled" in human.stdout
    status = json.loads(cli("--home", str(home), "--json", "service", "status", env=env).stdout)
    assert status["installed"] is True and status["daemon"] is None
    gone = json.loads(cli("--home", str(home), "--json", "service", "uninstall", env=env).stdout)
    assert gone["removed"] is True and not unit.exists()


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="builds a PyInstaller binary (~2-3 min): LOCALSTORE_SLOW=1")
def test_pyinstaller_binary_runs_init_save_ls(tmp_path: Path) -> None:
    if shutil.which("pyinstaller", path=str(Path(sys.executable).parent)) is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "pyinstaller>=6.0"], check=True
        )
    build = subprocess.run(
        [
            str(Path(sys.executable).with_name("pyinstaller")),
            "--noconfirm",
            "--distpath",
            str(tmp_path / "dist"),
            "--workpath",
            str(tmp_path / "build"),
            str(PACKAGING / "localstore.spec"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    binary = tmp_path / "dist" / "localstore"

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
        return subprocess.run(
            [str(binary), *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
        )

    assert run("--version").stdout.strip() == "localstore 0.1.0"
    windowless = subprocess.run(
        [str(binary.with_name("localstorew")), "--version"], capture_output=True, text=True
    )
    assert windowless.stdout.strip() == "localstore 0.1.0"
    home = str(tmp_path / "home")
    assert run("--home", home, "init").returncode == 0
    saved = run("--home", home, "save", "team/hello", "-f", "-", stdin="steps: [a, b]\n")
    assert saved.returncode == 0, saved.stderr
    listed = json.loads(run("--home", home, "--json", "ls").stdout)
    assert [b["path"] for b in listed] == ["team/hello.blueprint.yaml"]
    # The local test stack is left out of the binary, and the CLI says so.
    dev_only = run("--home", home, "cloud")
    assert dev_only.returncode == 1 and "not available in this build" in dev_only.stderr


def _unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (comments and section headers left out), values per key."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_unit_does_not_restart_a_daemon_that_cannot_sync_this_home(tmp_path: Path) -> None:
    """`Restart=on-failure` restarted the daemon every 5 s, forever, while an app synced the home
    in-process (the daemon exits "already syncs this home"). That exit has its own code, which
    the unit lists in RestartPreventExitStatus=, as the code for a home whose index vanished."""
    for text in (
        (PACKAGING / "localstore.service").read_text(),
        service_plan(home_settings(tmp_path / "h"), str(tmp_path / "h"), platform="linux").text,
    ):
        keys = _unit_settings(text)
        assert keys["Restart"] == ["on-failure"]
        prevented = {int(code) for v in keys["RestartPreventExitStatus"] for code in v.split()}
        assert prevented == {
            EXIT_HOME_LOCKED,
            EXIT_HOME_GONE,
            EXIT_INDEX_NEWER,
            EXIT_HOME_READ_ONLY,
        }
        assert EXIT_HOME_LOCKED not in (0, 1) and EXIT_HOME_GONE not in (0, 1)
        # A user manager has no network-online.target (it cannot see system units): ordering on
        # it did nothing. The daemon starts offline and syncs once the cloud answers.
        assert "network-online.target" not in "".join(keys.get("After", []) + keys.get("Wants", []))


@pytest.fixture
def held_home(tmp_path: Path) -> Iterator[Path]:
    """A home whose lock another process holds (as an app's start_sync does); killed after."""
    home = tmp_path / "held"
    with process_holding_home_lock(home_settings(home).paths.state):
        yield home


def test_service_commands_exit_with_a_no_restart_code_when_the_home_is_held(
    held_home: Path,
) -> None:
    """Run each service's own command line on a home an app syncs: systemd gets the code its
    RestartPreventExitStatus= lists, launchd (KeepAlive: SuccessfulExit false restarts on any
    other code, every 10 s) a successful exit."""
    settings = home_settings(held_home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    systemd = service_plan(settings, str(held_home), platform="linux").text
    exec_start = _unit_settings(systemd)["ExecStart"][0]
    args = [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(exec_start)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == EXIT_HOME_LOCKED, done.stderr
    assert "already syncs this home" in done.stderr
    assert "already syncs this home" in (settings.paths.state / "daemon.log").read_text()

    plist = plistlib.loads(service_plan(settings, str(held_home), platform="darwin").text.encode())
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    done = subprocess.run(
        plist["ProgramArguments"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    log = (settings.paths.state / "daemon.log").read_text()
    assert log.count("already syncs this home") == 2  # said in the log, where launchd users look


@pytest.mark.parametrize("name", ["back\\slash", "tab\\tand \\x41", 'quote\'s "both" é'])
def test_systemd_reads_back_the_exact_path_the_installer_wrote(tmp_path: Path, name: str) -> None:
    """systemd unescapes C escapes in ExecStart, inside quotes too: a home with a backslash
    (`\\s`, `\\t`, `\\x41`) reached the daemon as another path (`back lash`), which it then
    made as a new, empty home. Checked on the executable, the one word `systemd-analyze` reads
    back (and names when it refuses it)."""
    folder = tmp_path / name
    folder.mkdir()
    exe = folder / "localstore"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / "t.service"
    unit.write_text(render_systemd_unit([systemd_escape(str(exe)), "daemon"]))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    # Accepted, or refused for its characters (systemd allows none of `\\ ' "` in an
    # executable's name, unlike in an argument such as the home): either way it read our path.
    assert done.returncode == 0 or f"special characters: {exe}\n" in done.stderr, done.stderr


def test_the_windows_install_stop_command_stops_this_homes_daemon_cleanly(
    spawn_daemon, tmp_path: Path
) -> None:
    """What `service install` runs on Windows before /Create and /Run, run for real: the
    daemon of this home stops through its control API (exit 0, a clean shut-down in its log);
    run again with none running it succeeds too (a first install)."""
    home = tmp_path / "w h"
    d = spawn_daemon(home, env=_OFFLINE)
    d.wait_ready()
    stop = service_plan(home_settings(home), str(home), platform="win32").stop_first[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    done = subprocess.run(stop, capture_output=True, text=True, env={**env, **_OFFLINE}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert d.proc.wait(15) == 0
    assert "daemon stopping" in (home / "state" / "daemon.log").read_text()
    again = subprocess.run(
        stop, capture_output=True, text=True, env={**env, **_OFFLINE}, timeout=60
    )
    assert again.returncode == 0 and "no daemon runs" in again.stdout, again.stderr


def _spec_executables() -> dict[str, bool]:
    """The one-file programs packaging/localstore.spec builds: name -> console."""
    import ast

    tree = ast.parse((PACKAGING / "localstore.spec").read_text())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "EXE":
            kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            out[kw["name"]] = kw["console"]
    return out


def test_the_one_file_build_has_a_windowless_program_for_the_service() -> None:
    """The one-file build was `localstore.exe` only, console=True: the task that `service
    install` wrote from it opened a console window at each logon, which stopped the daemon
    when closed. `localstorew.exe` (console=False) beside it is the one the task runs."""
    assert _spec_executables() == {"localstore": True, "localstorew": False}
    sample = ET.parse(PACKAGING / "localstore-task.xml").getroot()
    command = sample.findtext("t:Actions/t:Exec/t:Command", namespaces=_TASK_NS) or ""
    assert command.endswith("\\localstorew.exe")
