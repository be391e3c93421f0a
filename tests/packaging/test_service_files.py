"""The service files, checked the way their managers read them: the Windows task XML against the
Task Scheduler schema's types and ranges for the elements it uses (no schtasks here), the launchd
plist with plistlib (no plutil here), and every command line they hold parsed by the `localstore`
command itself, so an option the CLI does not know fails here rather than at every login.
(systemd-analyze verify runs in tests/daemon/test_packaging.py and, on the installed wheel, in
tests/packaging/test_wheel.py.)"""

from __future__ import annotations

import plistlib
import re
import shlex
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from localstore.cli import cli
from localstore.config import load_settings
from sync.cli_daemon import (
    LAUNCHD_LABEL,
    render_task_xml,
    service_plan,
    windows_user,
    write_service_files,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
NS = "{http://schemas.microsoft.com/windows/2004/02/mit/task}"

# MS-TSCH 2.5 / the Task Scheduler schema: settingsType is an xs:all of these (minOccurs 0).
SETTINGS: dict[str, str] = {
    "AllowStartOnDemand": "boolean",
    "RestartOnFailure": "restart",
    "MultipleInstancesPolicy": "policy",
    "DisallowStartIfOnBatteries": "boolean",
    "StopIfGoingOnBatteries": "boolean",
    "AllowHardTerminate": "boolean",
    "StartWhenAvailable": "boolean",
    "NetworkProfileName": "string",
    "RunOnlyIfNetworkAvailable": "boolean",
    "WakeToRun": "boolean",
    "Enabled": "boolean",
    "Hidden": "boolean",
    "DeleteExpiredTaskAfter": "duration",
    "IdleSettings": "complex",
    "NetworkSettings": "complex",
    "ExecutionTimeLimit": "duration",
    "Priority": "priority",
    "RunOnlyIfIdle": "boolean",
}
POLICIES = {"Parallel", "Queue", "IgnoreNew", "StopExisting"}
LOGON_TYPES = {"S4U", "Password", "InteractiveToken", "InteractiveTokenOrPassword"}
RUN_LEVELS = {"LeastPrivilege", "HighestAvailable"}
_DURATION = re.compile(
    r"^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$"
)


def _seconds(duration: str) -> int:
    match = _DURATION.match(duration)
    assert match, f"not an xs:duration: {duration!r}"
    y, mo, d, h, mi, s = (int(g or 0) for g in match.groups())
    return (((y * 365 + mo * 31 + d) * 24 + h) * 60 + mi) * 60 + s


def schema_problems(xml_text: str) -> list[str]:
    """What Task Scheduler's validation of the task XML would refuse, for what our file uses."""
    root = ET.fromstring(xml_text.replace('encoding="UTF-16"', ""))
    problems: list[str] = []
    if root.tag != f"{NS}Task" or root.get("version") not in ("1.2", "1.3", "1.4"):
        problems.append(f"root {root.tag} version {root.get('version')}")
    settings = root.find(f"{NS}Settings")
    for child in settings if settings is not None else []:
        name = child.tag.removeprefix(NS)
        kind = SETTINGS.get(name)
        text = (child.text or "").strip()
        if kind is None:
            problems.append(f"Settings/{name} is not in settingsType")
        elif kind == "boolean" and text not in ("true", "false"):
            problems.append(f"Settings/{name}: {text!r} is not a boolean")
        elif kind == "duration":
            _seconds(text)
        elif kind == "policy" and text not in POLICIES:
            problems.append(f"MultipleInstancesPolicy {text!r}")
        elif kind == "restart":
            interval = child.findtext(f"{NS}Interval")
            count = child.findtext(f"{NS}Count")
            if interval is None or not 60 <= _seconds(interval) <= 31 * 86400:
                problems.append(f"RestartOnFailure/Interval {interval!r} not in PT1M..P31D")
            if count is None or not count.isdigit() or not 1 <= int(count) <= 255:
                problems.append(f"RestartOnFailure/Count {count!r} not in 1..255 (unsignedByte)")
    principal = root.find(f"{NS}Principals/{NS}Principal")
    actions = root.find(f"{NS}Actions")
    if principal is None or actions is None:
        return [*problems, "no Principal or no Actions"]
    if principal.findtext(f"{NS}LogonType") not in LOGON_TYPES:
        problems.append(f"LogonType {principal.findtext(f'{NS}LogonType')!r}")
    if principal.findtext(f"{NS}RunLevel") not in RUN_LEVELS:
        problems.append(f"RunLevel {principal.findtext(f'{NS}RunLevel')!r}")
    if actions.get("Context") != principal.get("id"):
        problems.append("Actions Context names no Principal")
    if not (actions.findtext(f"{NS}Exec/{NS}Command") or "").strip():
        problems.append("Exec has no Command")
    return problems


def _task_texts(tmp_path: Path) -> list[str]:
    home = tmp_path / "a b&c"
    rendered = service_plan(load_settings(home=home, environ={}), str(home), platform="win32")
    return [(PACKAGING / "localstore-task.xml").read_text(encoding="utf-16"), rendered.text]


def test_windows_task_xml_is_valid_for_the_task_scheduler_schema(tmp_path: Path) -> None:
    """`<Count>999</Count>` in RestartOnFailure: the schema's Count is an unsignedByte of 1-255,
    so the file `localstore service install` wrote was out of range for `schtasks /XML`."""
    for text in _task_texts(tmp_path):
        assert schema_problems(text) == []
    # The check is real: what it exists for is found.
    bad = _task_texts(tmp_path)[1].replace("<Count>255</Count>", "<Count>999</Count>")
    assert schema_problems(bad) == ["RestartOnFailure/Count '999' not in 1..255 (unsignedByte)"]


def test_windows_task_sample_is_utf16_as_schtasks_reads_it() -> None:
    raw = (PACKAGING / "localstore-task.xml").read_bytes()
    assert raw.startswith(b"\xff\xfe")  # the BOM that goes with encoding="UTF-16"
    assert ET.parse(PACKAGING / "localstore-task.xml").getroot().tag == f"{NS}Task"


def _daemon_args_parse(args: list[str]) -> None:
    """Parse the arguments after the program the way `localstore` does (no command runs)."""
    ctx = cli.make_context("localstore", list(args))  # the global options (--home)
    rest = args[2:] if args[:1] == ["--home"] else args
    assert rest[:1] == ["daemon"], args
    cmd = cli.get_command(ctx, "daemon")
    assert cmd is not None
    cmd.make_context("daemon", rest[1:], parent=ctx)


@pytest.mark.parametrize("home_flag", [False, True])
def test_every_service_command_line_is_one_localstore_accepts(
    tmp_path: Path, home_flag: bool
) -> None:
    home = tmp_path / "h o m e"
    settings = load_settings(home=home, environ={})
    home_arg = str(home) if home_flag else None
    unit = service_plan(settings, home_arg, platform="linux").text
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    systemd = [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(exec_start[10:])]
    plist = plistlib.loads(service_plan(settings, home_arg, platform="darwin").text.encode())
    task = ET.fromstring(
        service_plan(settings, home_arg, platform="win32").text.replace('encoding="UTF-16"', "")
    )
    arguments = task.findtext(f"{NS}Actions/{NS}Exec/{NS}Arguments") or ""
    windows = shlex.split(arguments)  # (list2cmdline quoting of these paths is shell-like)
    for args in (systemd[1:], plist["ProgramArguments"][1:], windows):
        try:
            _daemon_args_parse(args)
        except click.ClickException as exc:  # pragma: no cover - the failure being guarded
            pytest.fail(f"{args}: {exc.format_message()}")
        if home_flag:
            assert args[:2] == ["--home", str(home)]


def test_launchd_plist_types_are_what_launchd_reads() -> None:
    data = plistlib.loads((PACKAGING / "dev.localstore.daemon.plist").read_bytes())
    assert data["Label"] == LAUNCHD_LABEL
    assert all(isinstance(a, str) for a in data["ProgramArguments"])
    assert data["RunAtLoad"] is True and data["KeepAlive"] == {"SuccessfulExit": False}
    assert isinstance(data["ExitTimeOut"], int) and data["ProcessType"] == "Background"
    assert data["StandardOutPath"] == data["StandardErrorPath"]
    # What macOS's plutil would refuse: the sample is an XML plist 1.0 with its DOCTYPE.
    head = (PACKAGING / "dev.localstore.daemon.plist").read_text().splitlines()[:3]
    assert (
        head[0] == '<?xml version="1.0" encoding="UTF-8"?>' and head[2] == '<plist version="1.0">'
    )


def test_sample_unit_passes_systemd_analyze_with_an_existing_binary(tmp_path: Path) -> None:
    """The packaged sample names %h/.local/bin/localstore: with that file present (as after
    `pip install --user`), systemd-analyze accepts it."""
    user_home = tmp_path / "user"
    binary = user_home / ".local" / "bin" / "localstore"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    unit = tmp_path / "localstore.service"
    unit.write_text((PACKAGING / "localstore.service").read_text())
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env={"HOME": str(user_home), "XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_installed_task_starts_at_its_users_logon_only(tmp_path: Path) -> None:
    """A LogonTrigger without a UserId fires at every user's logon (MS-TSCH 2.5.3.7): on a
    shared PC each person's sign-in started the installing user's daemon. The task
    `localstore service install` writes names the signed-in user in the trigger and principal."""
    home = tmp_path / "h"
    plan = service_plan(load_settings(home=home, environ={}), str(home), platform="win32")
    root = ET.fromstring(plan.text.replace('encoding="UTF-16"', ""))
    user = windows_user()
    assert root.findtext(f"{NS}Triggers/{NS}LogonTrigger/{NS}UserId") == user
    assert root.findtext(f"{NS}Principals/{NS}Principal/{NS}UserId") == user
    # Schema order: the trigger's own elements after the common ones, the principal's first.
    trigger = root.find(f"{NS}Triggers/{NS}LogonTrigger")
    principal = root.find(f"{NS}Principals/{NS}Principal")
    assert trigger is not None and principal is not None
    assert [c.tag.removeprefix(NS) for c in trigger] == ["Enabled", "UserId"]
    assert principal[0].tag == f"{NS}UserId"
    assert schema_problems(plan.text) == []


def test_the_task_user_is_domain_and_name_as_windows_gives_them() -> None:
    assert windows_user({"USERNAME": "ann", "USERDOMAIN": "OFFICE"}) == "OFFICE\\ann"
    assert windows_user({"USERNAME": "ann"}) == "ann"
    text = render_task_xml(["C:\\ls.exe", "daemon"], windows_user({"USERNAME": "a&b"}))
    assert "<UserId>a&amp;b</UserId>" in text


@pytest.mark.parametrize("existing", [False, True])
def test_the_launchd_agents_daemon_out_is_made_private_before_launchd_opens_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    """launchd opens the plist's StandardOutPath/StandardErrorPath (state/daemon.out) itself,
    creating it 0666 less the job's umask: 0644 under the usual 022, where `daemon --detach`
    makes it 0600 (a crash's traceback names paths and blueprints). `service install` creates it
    0600 first, so launchd opens a private file; one already there keeps what it holds."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # ~/Library/LaunchAgents
    home = tmp_path / "h"
    plan = service_plan(load_settings(home=home, environ={}), str(home), platform="darwin")
    plist = plistlib.loads(plan.text.encode())
    out = Path(plist["StandardOutPath"])
    assert out == Path(plist["StandardErrorPath"]) == home / "state" / "daemon.out"
    if existing:  # an agent installed by an older version, launchd's 0644
        out.parent.mkdir(parents=True, mode=0o700)
        out.write_text("a crash's traceback\n")
        out.chmod(0o644)
    write_service_files(plan)
    assert plan.path == tmp_path / "user" / "Library" / "LaunchAgents" / f"{plist['Label']}.plist"
    assert plistlib.loads(plan.path.read_bytes()) == plist
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    assert out.read_text() == ("a crash's traceback\n" if existing else "")
    assert "Umask" not in plist  # the daemon would inherit it (its new blueprints 0600)


def test_a_service_whose_output_its_manager_does_not_open_makes_no_output_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd gives the daemon's output to journald, and the Windows task has none: no
    daemon.out is made for them."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    home = tmp_path / "h"
    plan = service_plan(load_settings(home=home, environ={}), str(home), platform="linux")
    assert plan.output is None
    write_service_files(plan)
    assert plan.path.exists() and not (home / "state").exists()


def test_daemon_help_names_every_exit_the_unit_does_not_restart() -> None:
    """The help said 75, 66 and 78, not 77 (a read-only home): someone whose service stayed
    down after `systemctl status` showed 77 found no word of it in `localstore daemon --help`."""
    unit = (PACKAGING / "localstore.service").read_text()
    line = next(ln for ln in unit.splitlines() if ln.startswith("RestartPreventExitStatus="))
    codes = line.partition("=")[2].split()
    assert codes
    text = " ".join(CliRunner().invoke(cli, ["daemon", "--help"]).output.split())
    assert [c for c in codes if c not in text] == []
