"""The service files' text: a systemd user unit (Linux), a launchd agent (macOS), a scheduled task
(XML for ``schtasks``) on Windows, and the daemon's command line and environment in them.

Rendered here (the same text as the samples in ``packaging/``, which a test keeps equal) so an
installed wheel or a one-file binary needs no data files.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import plistlib
import shlex
import subprocess
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

from localstore._daemon_state import (
    EXIT_HOME_GONE,
    EXIT_HOME_LOCKED,
    EXIT_HOME_READ_ONLY,
    EXIT_INDEX_NEWER,
)
from localstore.config import Settings

SERVICE_NAME = "localstore"
LAUNCHD_LABEL = "dev.localstore.daemon"
TASK_NAME = "LocalStore daemon"


def service_suffix(settings: Settings | None, home: str | None) -> str:
    """'' for the default home, else '-<8 hex of the home path>' (one service per home)."""
    if not home or settings is None:
        return ""
    return "-" + hashlib.sha256(str(settings.paths.state.parent).encode()).hexdigest()[:8]


def daemon_args(program: str | list[str], home: str | None) -> list[str]:
    """The daemon's command line as a service runs it (``program``: a command, or an
    interpreter and its arguments)."""
    command = [program] if isinstance(program, str) else program
    return [*command, *(["--home", home] if home else []), "daemon"]


# What platformdirs reads (absolute paths only) to place the default home's folders, on Linux and,
# in its recent versions, on macOS too (XDG_DOCUMENTS_DIR: the blueprints folder, read by older
# platformdirs; newer ones read it from XDG_CONFIG_HOME/user-dirs.dirs).
_HOME_PATH_VARS = (
    "XDG_DATA_HOME",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "XDG_DOCUMENTS_DIR",
)


def service_environment(
    home: str | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables a service must set so its daemon serves the home the installer sees.

    The default home's folders come from the XDG variables, which are often set in a shell
    profile: a service manager starts the daemon without them (systemd's user manager does not
    read the profile, launchd never), and it served another home, a second index over the same
    blueprints folder (the documents folder stays put), not logged in, under another lock. A
    home given by ``--home`` (or LOCALSTORE_HOME, written as ``--home``) needs none.
    """
    if home:
        return {}
    env = os.environ if environ is None else environ
    # (platformdirs ignores a relative value; so does this.)
    return {name: env[name] for name in _HOME_PATH_VARS if os.path.isabs(env.get(name, ""))}


def systemd_environment_line(name: str, value: str) -> str:
    """One ``Environment=`` line: quoted (spaces), with ``\\`` and ``"`` escaped (systemd
    unescapes C escapes in quotes) and ``%`` doubled (specifiers are expanded there; ``$`` is
    not: Environment= does no variable expansion)."""
    assignment = f"{name}={value}".replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'Environment="{assignment}"'


def _file_log_only(args: list[str]) -> list[str]:
    """``args`` for a service manager that keeps the daemon's stderr in a file nobody rotates.

    launchd appends it to ``StandardErrorPath`` (state/daemon.out), and a Windows task has no
    console to show it: with its stderr handler the daemon wrote every log line there as well as
    to the rotated daemon.log, and daemon.out grew for as long as the service ran. What still
    reaches stderr (a crash before logging starts) stays in daemon.out, as with ``--detach``.
    systemd keeps stderr: journald rotates it, and ``journalctl --user -u`` shows it.
    """
    return args if "--no-stderr" in args else [*args, "--no-stderr"]


def systemd_escape(arg: str) -> str:
    """Quote one ExecStart argument: systemd expands ``%`` specifiers and ``$`` variables, and
    unescapes C escapes (``\\s``, ``\\t``, ``\\x41``) inside quotes too, so a backslash is
    doubled (a home with one reached the daemon as another path, made as a new, empty home)."""
    return shlex.quote(arg.replace("\\", "\\\\").replace("%", "%%").replace("$", "$$"))


def render_systemd_unit(args: list[str], environment: Mapping[str, str] | None = None) -> str:
    """A systemd user unit running ``args`` (already escaped with :func:`systemd_escape`), with
    ``environment`` set (see :func:`service_environment`)."""
    env_lines = "".join(
        f"{systemd_environment_line(k, v)}\n" for k, v in (environment or {}).items()
    )
    return f"""\
[Unit]
Description=LocalStore daemon: watch, index and sync blueprints
# No network-online.target: a user manager cannot see system units, so ordering on it did
# nothing. None is needed: without a network the daemon starts offline and syncs once the
# cloud answers (it retries by itself).

[Service]
# notify: the daemon sends READY=1 once it serves (sync/_sd_notify.py), so `systemctl --user
# start` (and `service install`) fails when it exits before that (a home another process syncs,
# an index it cannot open); with Type=simple both said started, whatever happened next.
Type=notify
# all: the one-file build runs Python as a child of its bootloader, the main process, and
# systemd dropped that child's READY=1 under NotifyAccess=main (the start never ended). The
# daemon removes NOTIFY_SOCKET from its environment, so nothing it starts can notify.
NotifyAccess=all
# Not timed: a start can be slow (the reconcile of a large home, a keychain waiting to be
# unlocked), and one killed for it would be restarted into the same wait, over and over.
TimeoutStartSec=infinity
ExecStart={" ".join(args)}
{env_lines}Restart=on-failure
RestartSec=5
# {EXIT_HOME_LOCKED}: another process (an app syncing in-process) syncs this home, so a restart
# every 5 s changes nothing; {EXIT_HOME_GONE}: the home's index vanished, and a restart would make
# a new, empty home at its path; {EXIT_INDEX_NEWER}: a newer localstore wrote the index (upgrade);
# {EXIT_HOME_READ_ONLY}: the home is read-only (a snapshot, a disk remounted read-only).
# `systemctl --user restart` starts it again when that is over.
RestartPreventExitStatus={EXIT_HOME_LOCKED} {EXIT_HOME_GONE} {EXIT_INDEX_NEWER} {EXIT_HOME_READ_ONLY}
# The daemon stops within 5 s of SIGTERM; the rest is slack before systemd sends SIGKILL.
TimeoutStopSec=15
KillSignal=SIGTERM
NoNewPrivileges=yes

[Install]
WantedBy=default.target
"""


def render_launchd_plist(
    args: list[str],
    log_dir: str,
    label: str = LAUNCHD_LABEL,
    environment: Mapping[str, str] | None = None,
) -> str:
    """A launchd agent (~/Library/LaunchAgents) running ``args`` at login, restarted on crash.

    Its stdout and stderr go to ``log_dir/daemon.out``; the daemon logs to daemon.log only.
    ``KeepAlive: {SuccessfulExit: false}`` restarts it after any exit but 0 (launchd has no list
    of codes not to restart), so the agent runs it with ``--no-restart-code 0``: a home another
    process syncs was a restart every 10 s (launchd's throttle) for as long as that app ran.
    ``environment`` (see :func:`service_environment`) goes into ``EnvironmentVariables``.
    """
    program = _file_log_only(args)
    if "--no-restart-code" not in program:
        program = [*program, "--no-restart-code", "0"]
    data: dict[str, Any] = {
        "Label": label,
        "ProgramArguments": program,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
        "ExitTimeOut": 15,
        "StandardOutPath": f"{log_dir}/daemon.out",
        "StandardErrorPath": f"{log_dir}/daemon.out",
    }
    if environment:
        data["EnvironmentVariables"] = dict(environment)
    return plistlib.dumps(data, sort_keys=False).decode()


def render_task_xml(args: list[str], user: str | None = None) -> str:
    """A Windows scheduled task (``schtasks /Create /XML``) starting ``args`` at ``user``'s logon
    (logging to daemon.log only: a hidden task has no console).

    ``user`` (``DOMAIN\\name``) goes into the logon trigger and the principal: a logon trigger
    without a UserId fires at every user's logon (MS-TSCH 2.5.3.7, LogonTrigger.UserId), so on a
    shared PC each person's sign-in started the installer's daemon. Only the packaged sample,
    a template, leaves it out (`localstore service install` fills it in).

    ``RestartOnFailure`` retries a task that failed to *start* (a start condition not met, an
    action that could not be launched: MS-TSCH 2.5.4.2), not one whose program exited non-zero,
    so the daemon's exits 66, 75 and 78 are not restarted here. Its ``Count`` is 1-255 in the
    task schema (an ``unsignedByte``); the 999 written before was out of that range, which
    Task Scheduler's validation of the XML refuses (not tried on Windows).
    """
    args = _file_log_only(args)
    command, arguments = args[0], subprocess.list2cmdline(args[1:])
    user_id = f"\n      <UserId>{escape(user)}</UserId>" if user else ""
    return f"""\
<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>LocalStore daemon: watch, index and sync blueprints</Description>
    <URI>\\{escape(TASK_NAME)}</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>{user_id}
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">{user_id}
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>255</Count>
    </RestartOnFailure>
    <Hidden>true</Hidden>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{escape(command)}</Command>
      <Arguments>{escape(arguments)}</Arguments>
    </Exec>
  </Actions>
</Task>
"""


def windows_user(environ: Mapping[str, str] | None = None) -> str:
    """The signed-in account as Task Scheduler names it: ``DOMAIN\\name`` (the computer's name
    for a local account), else the bare name."""
    env = os.environ if environ is None else environ
    name = env.get("USERNAME") or getpass.getuser()
    domain = env.get("USERDOMAIN")
    return f"{domain}\\{name}" if domain else name
