"""Where this OS's service file goes and the service manager's commands (:class:`ServicePlan`).

``localstore service install|uninstall|status`` (:mod:`sync.cli_daemon`) act on the plan;
``service_plan`` takes a ``platform`` so tests render another OS's plan on this one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import click

from localstore.config import Settings
from sync._service_files import (
    LAUNCHD_LABEL,
    SERVICE_NAME,
    TASK_NAME,
    daemon_args,
    render_launchd_plist,
    render_systemd_unit,
    render_task_xml,
    service_environment,
    service_suffix,
    systemd_escape,
    windows_user,
)


@dataclass(frozen=True)
class ServicePlan:
    """Where this OS's service file goes and the commands that enable/disable it."""

    kind: str
    path: Path
    text: str
    enable: list[list[str]]
    disable: list[list[str]]
    reachable: bool
    # The file the manager itself opens for the daemon's stdout and stderr (launchd's daemon.out),
    # made 0600 before it does: launchd would create it 0666 less its umask.
    output: Path | None = None
    # Run before ``enable``, failures ignored (nothing loaded yet): unloads what an earlier
    # install loaded, which ``enable`` would refuse (launchctl bootstrap of a loaded label),
    # or stops the daemon an earlier install started (Windows).
    stop_first: list[list[str]] = field(default_factory=list)
    # A command that succeeds while what ``stop_first`` stopped is still there: install waits
    # (up to STOPPED_WAIT_S) for it to fail before ``enable`` (none: stop_first is done when it
    # returns).
    gone: list[str] = field(default_factory=list)
    # Run before ``disable``, failures ignored (no daemon running, no instance to end): stops
    # the daemon where ``disable`` does not (Windows: `schtasks /Delete` removes the task and
    # leaves its running instance alone until logoff). systemd's `disable --now` and launchd's
    # `bootout` stop theirs themselves.
    stop_before_disable: list[list[str]] = field(default_factory=list)
    # What the user should know about the service as planned ('' when nothing): `service
    # install` prints it.
    warning: str = ""


def _executable(platform: str = sys.platform, interpreter: str = sys.executable) -> str:
    """The `localstore` command a service runs: this one's (may not exist; install checks).

    ``platform`` and ``interpreter`` are this machine's (parameters for tests): service_plan does
    not pass its own platform, which tests set to render another OS's plan here.
    """
    if getattr(sys, "frozen", False):
        return interpreter
    installed = _installed_script()
    if installed is not None:
        return installed
    # pip's script is localstore.exe on Windows: looked for as "localstore" it was never found
    # there, and the service ran the first localstore on PATH (another Python's, an older one).
    beside = Path(interpreter).with_name("localstore.exe" if platform == "win32" else "localstore")
    return str(beside) if beside.exists() else (shutil.which("localstore") or str(beside))


def _installed_script() -> str | None:
    """The console script installed with the running package, from its wheel's RECORD.

    Looked for beside the interpreter only, the script of a `pip install --user` (in
    ~/.local/bin, which pip says is not on PATH until the next login) or a `--prefix` install was
    missed: `python3 -m localstore service install` wrote a unit running /usr/bin/localstore,
    which does not exist, reported as written, so the daemon never started. None when the
    running package is not that distribution's (an editable install, a checkout on PYTHONPATH).
    """
    import importlib.metadata

    import localstore

    try:
        dist = importlib.metadata.distribution("localstore")
        files = dist.files or []
    except (importlib.metadata.PackageNotFoundError, OSError):
        return None

    def located(name: object) -> Path:
        return Path(os.path.normpath(str(dist.locate_file(str(name)))))

    running = Path(os.path.normpath(localstore.__file__))
    if not any(f.as_posix() == "localstore/__init__.py" and located(f) == running for f in files):
        return None
    for f in files:
        if f.name in ("localstore", "localstore.exe") and f.parent.name in ("bin", "Scripts"):
            script = located(f)
            if os.access(script, os.X_OK):
                return str(script)
    return None


def service_plan(settings: Settings, home: str | None, platform: str = sys.platform) -> ServicePlan:
    """The service for this OS. Raises click.ClickException where none is supported."""
    home_arg = str(settings.paths.state.parent) if home else None
    args = daemon_args(_executable(), home_arg)
    suffix = service_suffix(settings, home)
    environment = service_environment(home_arg)
    if platform.startswith("linux"):
        return _systemd_plan([systemd_escape(a) for a in args], suffix, environment)
    if platform == "darwin":
        label = LAUNCHD_LABEL + suffix
        path = Path.home() / "Library" / "LaunchAgents" / f"{label}.plist"
        text = render_launchd_plist(args, str(settings.paths.state), label, environment)
        # (made on macOS, and by tests on Linux: never on Windows, which has no getuid)
        domain = f"gui/{os.getuid()}"  # type: ignore[attr-defined,unused-ignore]
        bootout = [["launchctl", "bootout", f"{domain}/{label}"]]
        return ServicePlan(
            "launchd",
            path,
            text,
            [["launchctl", "bootstrap", domain, str(path)]],
            bootout,
            shutil.which("launchctl") is not None,
            settings.paths.state / "daemon.out",
            # bootstrap of a loaded label fails ("5: Input/output error"): a second install (an
            # upgrade) failed and the old agent ran on. bootout stops and unloads it first.
            stop_first=bootout,
            # bootout returns before launchd has stopped the daemon (a clean stop takes a
            # moment) and unloaded it; a bootstrap until then fails with the same EIO.
            gone=["launchctl", "print", f"{domain}/{label}"],
        )
    if platform in ("win32", "cygwin"):
        return _task_plan(settings, home_arg, suffix)
    raise click.ClickException(
        f"no service manager is supported on {platform}; run `localstore daemon` from your "
        "session's startup instead"
    )


def _task_plan(settings: Settings, home_arg: str | None, suffix: str) -> ServicePlan:
    console = _executable()
    program = windowless_command(console)
    path = settings.paths.config / f"localstore-task{suffix}.xml"
    name = TASK_NAME + suffix
    stop = [
        # A re-install (an upgrade) left the old daemon running, and an uninstall too. Stopped
        # through its control API (outbox flushed, index closed, lock released), not by
        # `schtasks /End` alone, which is TerminateProcess.
        [*daemon_args(console, home_arg), "--stop"],
        # Then the task's instance: under IgnoreNew a /Run while the stopped daemon is still
        # exiting is ignored. It kills only what the clean stop left (one that did not
        # stop within STOP_TIMEOUT_S); nothing when no instance runs (its error ignored).
        ["schtasks", "/End", "/TN", name],
    ]
    return ServicePlan(
        "schtasks",
        path,
        render_task_xml(daemon_args(program, home_arg), windows_user()),
        # /Run after /Create: /Create alone started nothing before the next logon, while
        # install said "enabled and started".
        [
            ["schtasks", "/Create", "/TN", name, "/XML", str(path), "/F"],
            ["schtasks", "/Run", "/TN", name],
        ],
        [["schtasks", "/Delete", "/TN", name, "/F"]],
        shutil.which("schtasks") is not None,
        warning="" if program != [console] else _console_task_warning(console),
        stop_first=stop,
        # /Delete leaves the running daemon alone: it synced on until logoff. Stopped first,
        # while the task still exists for /End.
        stop_before_disable=stop,
    )


def windowless_command(console: str, interpreter: str = sys.executable) -> list[str]:
    """The program a Windows task runs the daemon with: one that opens no console window.

    ``console`` (`localstore.exe`) is a console program: run by Task Scheduler at logon it
    opened a console window, and closing that window ended the daemon (the task's ``Hidden``
    hides it in Task Scheduler's list, not its window). pip makes `localstorew.exe`, a GUI
    launcher of the same main ([project.gui-scripts]), beside it, and the one-file build a
    `localstorew.exe` beside `localstore.exe`. Without one (an install from before it, an
    editable one), ``interpreter``'s pythonw.exe runs the package; with neither, ``console``.
    """
    script = Path(console)
    gui = script.with_name(f"{script.stem}w{script.suffix}")
    if gui.exists():
        return [str(gui)]
    pythonw = Path(interpreter).with_name("pythonw.exe")
    # (Frozen, the interpreter is the binary itself: a pythonw.exe beside it is not ours.)
    if not getattr(sys, "frozen", False) and pythonw.exists():
        return [str(pythonw), "-m", "localstore"]
    return [console]


def _console_task_warning(console: str) -> str:
    return (
        f"found no windowless localstore program (localstorew.exe beside {console}, or "
        "pythonw.exe beside this Python): the task runs the console program, which opens a "
        "console window at each logon, and closing that window stops the daemon; reinstall "
        "localstore with pip (it makes localstorew.exe), then run `service install` again"
    )


def _systemd_plan(args: list[str], suffix: str, environment: Mapping[str, str]) -> ServicePlan:
    # The XDG spec (and systemd) ignore a relative XDG_CONFIG_HOME; taken as is, the unit went
    # under the working directory, where `systemctl --user enable` cannot find it.
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    config = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"
    unit = f"{SERVICE_NAME}{suffix}.service"
    return ServicePlan(
        "systemd",
        config / "systemd" / "user" / unit,
        render_systemd_unit(args, environment),
        [
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", unit],
            # Not `enable --now`: it leaves a running unit alone, so a re-install (an upgrade,
            # new arguments) said started while the old program ran on until the next login.
            ["systemctl", "--user", "restart", unit],
        ],
        [
            ["systemctl", "--user", "disable", "--now", unit],
            ["systemctl", "--user", "daemon-reload"],
        ],
        _user_systemd_reachable(),
    )


def _user_systemd_reachable() -> bool:
    if shutil.which("systemctl") is None:
        return False
    try:
        done = subprocess.run(
            ["systemctl", "--user", "is-system-running"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    # Exit 0 (running) or 1 (degraded/starting) both mean a user manager answers; 'offline' or a
    # bus error ("Failed to connect to bus") means there is none to talk to.
    out = done.stdout.decode(errors="replace").strip()
    return out in ("running", "degraded", "starting", "initializing")
