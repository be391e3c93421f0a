"""``localstore daemon``, ``localstore service install|uninstall|status`` and ``localstore doctor``.

The service files are rendered here (the same text as the samples in ``packaging/``, which a test
keeps equal) so an installed wheel or a one-file binary needs no data files: a systemd user unit on
Linux, a launchd agent on macOS, a scheduled task (XML for ``schtasks``) on Windows.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import getpass
import hashlib
import logging
import os
import plistlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import click

from localstore import files as fs
from localstore._check_steps import check_steps
from localstore._daemon_state import (
    EXIT_HOME_GONE,
    EXIT_HOME_LOCKED,
    EXIT_HOME_READ_ONLY,
    EXIT_INDEX_NEWER,
    OUTDATED_DAEMON_FIX,
    background_popen_options,
    clear_pause,
    make_output_private,
    open_private_append,
    outdated_daemon,
    write_pause,
)
from localstore.cli import (
    EXIT_ATTENTION,
    EXIT_ERROR,
    EXIT_OK,
    CliContext,
    errors_to_exit,
    fail,
    json_text,
    pass_ctx,
)
from localstore.config import Settings, cleartext_url_warning, home_name
from localstore.errors import (
    LocalStoreError,
    LockHeldError,
    NewerIndexError,
    ReadOnlyStoreError,
    StorageError,
)
from sync._sd_notify import notify, take_notify_socket
from sync._timefmt import span
from sync.embed import daemon_running, lock_holder, read_state
from sync.errors import SyncError

if TYPE_CHECKING:
    from localstore.store import BlueprintStore, CheckReport

DETACH_TIMEOUT_S = 60.0
SERVICE_COMMAND_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# How long `service install` waits for what its stop_first stopped to be gone (ServicePlan.gone).
STOPPED_WAIT_S = 30.0
SERVICE_NAME = "localstore"
LAUNCHD_LABEL = "dev.localstore.daemon"
TASK_NAME = "LocalStore daemon"
MIN_FREE_BYTES = 500 * 1024 * 1024

# -- localstore daemon ------------------------------------------------------------------------------


@click.command("daemon")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Least severe log level written.",
)
@click.option("--log-json", is_flag=True, help="Write log lines as JSON objects.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Control API port on 127.0.0.1 (default: free).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus /metrics on 127.0.0.1:PORT.",
)
@click.option("--detach", is_flag=True, help="Start in the background; return once it answers.")
@click.option(
    "--stop",
    "stop_it",
    is_flag=True,
    help="Stop the running daemon of this home (found through daemon.json; a process that holds "
    "the home's lock without one, such as an app syncing in-process, is left alone with an error).",
)
@click.option(
    "--pause/--resume",
    "pause_it",
    default=None,
    help="Pause or resume this home's sync (asks the running daemon; without one, records it "
    "for the next daemon and for an app syncing in-process). A pause is kept across restarts "
    "until --resume.",
)
@click.option(
    "--no-stderr",
    is_flag=True,
    hidden=True,
    help="Log to the file only (--detach, and the launchd and Windows services).",
)
@click.option(
    "--no-restart-code",
    type=click.IntRange(0, 255),
    default=None,
    hidden=True,
    help="Exit with this code instead of 75, 66, 77 or 78, the exits a service manager must not "
    "restart (the launchd agent passes 0: launchd can only be told so by a successful exit).",
)
@pass_ctx
def daemon_cmd(
    ctx: CliContext,
    log_level: str,
    log_json: bool,
    port: int,
    metrics_port: int | None,
    detach: bool,
    stop_it: bool,
    pause_it: bool | None,
    no_stderr: bool,
    no_restart_code: int | None,
) -> None:
    """Run the background daemon (watcher, sync, control API) in the foreground.

    One daemon per home; `localstore daemon --stop` stops it cleanly (as SIGTERM, SIGHUP,
    Ctrl-C or Ctrl-Break do; on Windows a kill is a hard stop). Logs go to the state folder's
    daemon.log and to stderr. Without `localstore login` it runs offline (watching and indexing
    only). Exit 75 when another process (an app, another daemon) syncs this home, 66 when the
    home's index vanished while it ran, 77 when the home is read-only, 78 when the index was
    written by a newer localstore (upgrade): service managers are told not to restart those.
    """
    if stop_it:
        _stop_daemon(ctx)
        return
    if pause_it is not None:
        _pause_daemon(ctx, pause_it)
        return
    try:
        # A home this user cannot write (a snapshot, a read-only disk): said so, with what to
        # do. It failed on the daemon's log ("a daemon once run with sudo leaves files
        # there"), or --detach on its output file, both sending the user after another cause.
        # Its own code, which the service files do not restart (only the user's fix helps).
        ctx.refuse_read_only("run the daemon")
    except ReadOnlyStoreError as exc:
        # (--detach is a command a person runs: the CLI's code for an error, as on a newer index.)
        code = EXIT_HOME_READ_ONLY if no_restart_code is None else no_restart_code
        fail(
            exc.message,
            code=EXIT_ERROR if detach else code,
            hint=f"{exc.hint}; then start the daemon again (its service does not restart it)",
        )
    if detach:
        _detach(ctx, log_level, log_json, port, metrics_port)
        return
    from sync.daemon import Daemon, log_start_failure

    # Taken before anything else can start a process that would inherit it (sync/_sd_notify.py).
    notify_socket = take_notify_socket()
    with errors_to_exit():
        handlers = _logging_or_fail(ctx.settings, log_level, log_json, no_stderr)
        _make_outputs_private()
        try:
            daemon = Daemon(
                ctx.settings,
                port=port,
                metrics_port=metrics_port,
                on_ready=lambda: notify(notify_socket, "READY=1"),
            )
            code = daemon.run()
        except LockHeldError as exc:
            # Its own exit code: a service manager restarting it every few seconds changes
            # nothing while that app runs (the units list the code as "do not restart").
            log_start_failure(handlers[0], exc)
            held = EXIT_HOME_LOCKED if no_restart_code is None else no_restart_code
            fail(exc.message, code=held, hint=exc.hint)
        except NewerIndexError as exc:
            # Only an upgrade helps; restarted every 5 s (systemd) or 10 s (launchd), the daemon
            # re-read the refused index and logged the refusal, forever. Its own code, which the
            # service files do not restart; the hint says the restart is the user's after that.
            hint = f"{exc.hint}, then start the daemon again (its service does not restart it)"
            log_start_failure(handlers[0], NewerIndexError(exc.message, hint=hint))
            newer = EXIT_INDEX_NEWER if no_restart_code is None else no_restart_code
            fail(exc.message, code=newer, hint=hint)
        except Exception as exc:
            # A service's console output may go nowhere (launchd, a hidden task): daemon.log,
            # where its operator looks, must say why it did not start. Written to the log file
            # only; the console gets the usual one error line below.
            log_start_failure(handlers[0], exc)
            raise
    if code == EXIT_HOME_GONE and no_restart_code is not None:
        code = no_restart_code
    if not daemon.stopped_cleanly:
        # A sync cycle or request still runs (in an HTTP call, say). Interpreter shut-down would
        # join the control pool's threads and break the 5 s stop promise; the work is resumable,
        # everything of ours is flushed and unlocked, so leave now.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    raise SystemExit(code)


def _make_outputs_private() -> None:
    """Make the daemon's stdout and stderr files 0600 when they are this user's regular files.

    launchd creates the agent's daemon.out itself (0644 under the usual umask 022: everyone on
    the Mac could read a crash's traceback, which names paths and blueprints). `service install`
    creates it 0600 beforehand, but a copied sample plist, one installed by an older version or
    a shell redirection leaves it to others. Here, not in Daemon: an app running the daemon
    in-process keeps its own stdout. Never fatal: the daemon runs as well with a looser file.
    """
    log = logging.getLogger("sync.daemon")
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            old = make_output_private(fd)
        except OSError as exc:
            if exc.errno == errno.EBADF:  # started with it closed: nothing to protect
                continue
            log.warning("could not make the daemon's %s file private (0600): %s", name, exc)
            continue
        if old is not None:
            log.info("the daemon's %s file was %s: made it 0600", name, oct(old))


def _logging_or_fail(
    settings: Settings, log_level: str, log_json: bool, no_stderr: bool
) -> list[logging.Handler]:
    """configure_logging, or a StorageError naming the file (not "unexpected ...: report it")."""
    from sync.daemon import LOG_FILE, configure_logging

    state = settings.paths.state
    try:
        return configure_logging(state, level=log_level, as_json=log_json, stderr=not no_stderr)
    except OSError as exc:
        raise StorageError(
            f"cannot write the daemon's log {state / LOG_FILE}: {exc.strerror or exc}",
            hint=f"check that this user owns {state} and what is in it; a daemon once run "
            "with sudo leaves files there that only root may write",
        ) from exc


def _self_command() -> list[str]:
    """How to run this CLI again: the frozen binary, or this interpreter."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-c", "from localstore.cli import main; main()"]


def _detach(
    ctx: CliContext, log_level: str, log_json: bool, port: int, metrics_port: int | None
) -> None:
    settings = ctx.settings
    running = daemon_running(settings)
    if running is not None:
        _show_daemon(ctx, running, "already running")
        return
    # --home only for a home folder (absolute: the child may start elsewhere). Without one the
    # child finds the platform folders itself: given "--home <state folder's parent>" (right for
    # a home, whose state is <home>/state) it ran on a new home at ~/.local/state, and this
    # command waited the full timeout for a daemon.json written in that home's state folder.
    home = [] if settings.home is None else ["--home", str(settings.home)]
    args = [*_self_command(), *home, "daemon"]
    args += ["--log-level", log_level, "--port", str(port), "--no-stderr"]
    args += ["--log-json"] if log_json else []
    args += ["--metrics-port", str(metrics_port)] if metrics_port is not None else []
    settings.paths.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    out_path = settings.paths.state / "daemon.out"
    try:
        # Private as daemon.log is: a crash's traceback here names paths and blueprints, and
        # open(..., "ab") made it 0644 (everyone on the machine could read it).
        out = open_private_append(out_path)
    except OSError as exc:
        fail(
            f"cannot write the daemon's output file {out_path}: {exc.strerror or exc}",
            hint=f"check that this user owns {settings.paths.state} and what is in it",
        )
    try:
        # Detached: the daemon outlives this command, its terminal and the terminal's Ctrl-C.
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, **background_popen_options()
        )
    finally:
        os.close(out)
    deadline = time.monotonic() + DETACH_TIMEOUT_S
    while time.monotonic() < deadline:
        state = daemon_running(settings)
        if state is not None and state.get("pid") == proc.pid:
            _show_daemon(ctx, state, "started")
            return
        if proc.poll() is not None:
            fail(
                f"the daemon exited with code {proc.returncode}: {_last_line(settings)}",
                hint=f"see {settings.paths.state / 'daemon.log'}",
            )
        time.sleep(0.05)
    proc.terminate()
    fail("the daemon did not become ready in time", hint="see the state folder's daemon.log")


def _last_line(settings: Settings) -> str:
    for name in ("daemon.out", "daemon.log"):
        try:
            lines = (settings.paths.state / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        errors = [ln for ln in lines if "error" in ln.lower()]
        if errors or lines:
            return (errors or lines)[-1].strip()
    return "no log"


def _show_daemon(ctx: CliContext, state: dict[str, Any], status: str) -> None:
    public = {k: state.get(k) for k in ("pid", "port", "home", "home_name", "log")}
    public["status"] = status
    ctx.emit(public, lambda: click.echo(f"daemon {status}: pid {state.get('pid')}"))


def _stop_daemon(ctx: CliContext) -> None:
    state = daemon_running(ctx.settings)
    if state is None:
        holder = lock_holder(ctx.settings.paths.state)
        if holder:
            # The home lock is also held by apps that sync in-process (start_sync): without a
            # live daemon.json the holder is not known to be a daemon, and a SIGTERM could stop
            # someone's app in the middle of a save.
            fail(
                f"no daemon runs for this home, but process {holder} syncs it (an app that syncs "
                "in-process, or a daemon still starting); it was left alone",
                hint="close that app, or run the command again in a few seconds",
            )
        ctx.emit({"status": "not running"}, lambda: click.echo("no daemon runs for this home"))
        return
    pid = int(state["pid"])
    if not _ask_to_stop(state) and _SIGTERM_STOPS_CLEANLY:
        # No answer (a daemon from before the `stop` op, a control API that does not answer):
        # SIGTERM runs the same clean stop here. Not on Windows, where it is TerminateProcess.
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            # It exited between daemon_running() and here (its service manager, another
            # --stop): what the user asked for is done.
            ctx.emit({"status": "stopped", "pid": pid}, lambda: click.echo(f"daemon {pid} stopped"))
            return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while lock_holder(ctx.settings.paths.state) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    if lock_holder(ctx.settings.paths.state) == pid:
        fail(
            f"daemon {pid} did not stop in {STOP_TIMEOUT_S:.0f} s",
            hint=f"stop it by force: {hard_stop_command(pid)} (its sync resumes at the next start)",
        )
    ctx.emit({"status": "stopped", "pid": pid}, lambda: click.echo(f"daemon {pid} stopped"))


# os.kill(pid, SIGTERM) is a clean stop on POSIX; on Windows it is TerminateProcess (no outbox
# flush, no index close, no lock release), so there the control API's `stop` is the only way.
_SIGTERM_STOPS_CLEANLY = sys.platform != "win32"


def hard_stop_command(pid: int, *, platform: str = sys.platform) -> str:
    """The command that kills ``pid`` outright on ``platform`` (for hints)."""
    return f"taskkill /F /PID {pid}" if platform == "win32" else f"kill -9 {pid}"


def _unanswered_stop_command(pid: int) -> str:
    """How to stop a daemon whose control API does not answer (so `--stop` cannot ask it)."""
    return f"kill {pid}" if _SIGTERM_STOPS_CLEANLY else hard_stop_command(pid)


def _ask_to_stop(state: Mapping[str, Any]) -> bool:
    """Ask the daemon through its control API to stop cleanly; True once it said it will.

    The request is token-authenticated: it reaches the daemon that wrote daemon.json, never
    another process that has since taken its pid.
    """
    from sync.control import ControlClient, ControlError

    try:
        with ControlClient(int(state["port"]), str(state["token"]), timeout=5.0) as client:
            client.stop()
    except ControlError as exc:
        # (Its own error reply "shutting_down": it is stopping already.)
        return getattr(exc, "code", None) == "shutting_down"
    except (KeyError, TypeError, ValueError):  # a daemon.json without port or token
        return False
    return True


def _pause_daemon(ctx: CliContext, pause: bool) -> None:
    """Pause or resume the running daemon's sync; with none running, record it for the next."""
    from sync.control import ControlClient, ControlError, ControlRequestError

    with errors_to_exit():
        # The pause is recorded in the home's state folder: at a mistyped --home it made that
        # folder and said "paused" for a home that does not exist.
        ctx.require_home()
    settings = ctx.settings
    state = daemon_running(settings)
    warning: dict[str, Any] | None = None
    if state is not None:
        try:
            with ControlClient(int(state["port"]), str(state["token"]), timeout=10.0) as client:
                answer = client.request("pause" if pause else "resume")
        except ControlRequestError as exc:
            fail(f"daemon {state['pid']} answered with an error: {exc.message}", hint=exc.hint)
        except ControlError as exc:
            fail(f"daemon {state['pid']} did not answer: {exc.message}", hint=exc.hint)
        # Done, with something the daemon could not do after it (read its status): the
        # command succeeded (exit 0), and the user is told what to look at.
        if isinstance(answer, dict) and isinstance(answer.get("warning"), dict):
            warning = answer["warning"]
    else:
        try:
            if pause:
                write_pause(settings.paths.state)
            else:
                clear_pause(settings.paths.state)
        except OSError as exc:
            raise StorageError(
                f"cannot record the pause in {settings.paths.state}: {exc.strerror or exc}",
                hint=f"check that this user owns {settings.paths.state}",
            ) from exc
    word = "paused" if pause else "resumed"
    out: dict[str, Any] = {"paused": pause, "daemon": state is not None}
    if state is not None:
        where = f"daemon {state['pid']}"
    elif (holder := lock_holder(settings.paths.state)) is not None:
        # An app syncing in-process reads the same record within a second (docs/daemon.md).
        out["app_pid"] = holder
        where = f"the app syncing this home (process {holder}) and the next daemon"
    else:
        where = "this home (no daemon or app syncs it now)"
    if warning is not None:
        out["warning"] = warning
    ctx.emit(out, lambda: click.echo(f"sync {word} for {where}"))
    if warning is not None:
        _warn(ctx, str(warning.get("message", "")), str(warning.get("hint", "")))


def _warn(ctx: CliContext, message: str, hint: str) -> None:
    """One warning line on stderr (a JSON object with --json), as the CLI's other warnings."""
    if ctx.json:
        warning = {"message": message, "hint": hint}
        click.echo(json_text({"warning": warning}, err=True), err=True)
    else:
        click.echo(f"warning: {message}" + (f" ({hint})" if hint else ""), err=True)


# -- service files ---------------------------------------------------------------------------------


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


def _run_all(commands: list[list[str]]) -> list[dict[str, Any]]:
    """Run ``commands`` in order, up to the first that fails (rc None: it did not finish)."""
    results = []
    for cmd in commands:
        results.append(_run_one(cmd))
        if results[-1]["rc"] != 0:
            break
    return results


def _run_one(cmd: list[str]) -> dict[str, Any]:
    try:
        done = subprocess.run(
            cmd, capture_output=True, timeout=SERVICE_COMMAND_TIMEOUT_S, check=False
        )
    except OSError as exc:
        # A command that is gone (the localstore of `daemon --stop`, uninstalled before
        # `service uninstall`): a failure like any other, not a traceback that left the
        # service installed.
        return {"command": shlex.join(cmd), "rc": None, "stderr": str(exc)}
    except subprocess.TimeoutExpired:
        # `systemctl start` of the Type=notify unit waits for the daemon's READY=1, which a slow
        # start (a large home's reconcile, a keychain to unlock) may send later than this. It was
        # a traceback; the start goes on without us.
        stderr = (
            f"no answer within {SERVICE_COMMAND_TIMEOUT_S:g} s (the service may still be "
            "starting; its manager's status command says how it went)"
        )
        return {"command": shlex.join(cmd), "rc": None, "stderr": stderr}
    return {"command": shlex.join(cmd), "rc": done.returncode, "stderr": done.stderr.decode()}


def _wait_until_gone(check: list[str]) -> None:
    """Wait until ``check`` (ServicePlan.gone) fails, at most STOPPED_WAIT_S; the enable
    commands then say how it went."""
    if not check:
        return
    deadline = time.monotonic() + STOPPED_WAIT_S
    # (The service manager tells no one when a job has gone: it is asked again.)
    while _run_one(check)["rc"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)


def write_service_files(plan: ServicePlan) -> None:
    """Write ``plan``'s service file, after creating its output file (if any) 0600.

    launchd opens the plist's StandardOutPath itself, before the daemon runs, creating it 0666
    less the job's umask: 0644, readable by everyone on the Mac, where `--detach` makes its
    daemon.out 0600 (a crash's traceback names paths and blueprints). launchd opens a file that
    exists with the mode it has, so it is made here first: created 0600, or an existing one made
    0600 and kept (not truncated). Not with a ``Umask`` in the plist: the daemon would inherit it, and the
    blueprints it pulls would be 0600 under launchd only. Raises OSError (the output file) and
    StorageError (the service file).
    """
    if plan.output is not None:
        plan.output.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(open_private_append(plan.output))
    # Durably (temp, fsync, rename, fsync of the folder and of any folder made for it): a unit
    # renamed into place unflushed could be empty or gone after a power cut, and the daemon,
    # reported installed, then did not start at the next login, so nothing synced.
    fs.ensure_dir(plan.path.parent)
    # (os.linesep: the line ends write_text gave it on Windows, where the task XML is read.)
    text = plan.text.replace("\n", os.linesep)
    fs.atomic_write(plan.path, text.encode("utf-16" if plan.kind == "schtasks" else "utf-8"))


@click.group("service")
def service_group() -> None:
    """Install the daemon as a per-user service (systemd, launchd, Task Scheduler)."""


@service_group.command("install")
@click.option("--no-enable", is_flag=True, help="Only write the file; print how to enable it.")
@pass_ctx
def service_install(ctx: CliContext, no_enable: bool) -> None:
    """Write this OS's service file for this home and enable it where possible."""
    executable = _executable()
    if not os.access(executable, os.X_OK):
        # A unit naming a missing command is accepted by `enable`, then fails at every login.
        fail(
            f"cannot find the localstore command to run as the service ({executable} does not "
            "exist or is not executable)",
            hint="put the folder pip installed localstore's command into on PATH (pip named it; "
            "e.g. ~/.local/bin), or run `service install` with that command",
        )
    plan = service_plan(ctx.settings, ctx.home)
    try:
        write_service_files(plan)
    except OSError as exc:  # the output file; the service file's own errors are StorageErrors
        out_path = plan.output or plan.path
        fail(
            f"cannot write the daemon's output file {out_path}: {exc.strerror or exc}",
            hint=f"check that this user owns {out_path.parent} and what is in it",
        )
    commands = [shlex.join(c) for c in [*plan.stop_first, *plan.enable]]
    out: dict[str, Any] = {"kind": plan.kind, "path": str(plan.path), "enabled": False}
    if plan.reachable and not no_enable:
        if plan.stop_first:
            out["stopped"] = [_run_one(c) for c in plan.stop_first]
            _wait_until_gone(plan.gone)
        out["results"] = _run_all(plan.enable)
        out["enabled"] = all(r["rc"] == 0 for r in out["results"])
    else:
        out["commands"] = commands
        out["reason"] = "--no-enable" if no_enable else f"no reachable {plan.kind} user manager"

    def human() -> None:
        click.echo(f"wrote {plan.path}")
        if out["enabled"]:
            click.echo(f"enabled and started ({plan.kind})")
            return
        if "results" in out:
            # What the manager said (systemd: "Job ... failed", the daemon never said ready)
            # and why the daemon stopped, where it logs: before, only the commands to retry.
            failed = out["results"][-1]
            said = failed["stderr"].strip() or f"exit {failed['rc']}"
            click.echo(f"`{failed['command']}` failed: {said}", err=True)
            click.echo(f"the daemon's log says: {_last_line(ctx.settings)}", err=True)
        click.echo(f"not enabled ({out.get('reason', 'a command failed')}); run:")
        for c in commands:
            click.echo(f"  {c}")

    ctx.emit(out, human)
    if plan.warning:
        _warn(ctx, plan.warning, "")
    if "results" in out and not out["enabled"]:
        raise SystemExit(EXIT_ERROR)


@service_group.command("uninstall")
@pass_ctx
def service_uninstall(ctx: CliContext) -> None:
    """Disable and remove this home's service file."""
    plan = service_plan(ctx.settings, ctx.home)
    out: dict[str, Any] = {"kind": plan.kind, "path": str(plan.path), "removed": False}
    if plan.path.exists():
        if plan.reachable:
            if plan.stop_before_disable:
                out["stopped"] = [_run_one(c) for c in plan.stop_before_disable]
            out["results"] = _run_all(plan.disable[:1])
        fs.unlink_file(plan.path)
        out["removed"] = True
        if plan.reachable and len(plan.disable) > 1:
            out["results"] = out.get("results", []) + _run_all(plan.disable[1:])
    elif not plan.reachable:
        out["commands"] = [shlex.join(c) for c in [*plan.stop_before_disable, *plan.disable]]
    ctx.emit(out, lambda: click.echo(("removed " if out["removed"] else "no ") + str(plan.path)))


@service_group.command("status")
@pass_ctx
def service_status(ctx: CliContext) -> None:
    """Show whether the service file is installed and whether the daemon runs."""
    plan = service_plan(ctx.settings, ctx.home)
    running = daemon_running(ctx.settings)
    out: dict[str, Any] = {
        "kind": plan.kind,
        "path": str(plan.path),
        "installed": plan.path.exists(),
        "manager_reachable": plan.reachable,
        "daemon": {"pid": running["pid"], "port": running["port"]} if running else None,
    }
    if plan.kind == "systemd" and plan.reachable and plan.path.exists():
        done = subprocess.run(
            ["systemctl", "--user", "is-active", plan.path.name],
            capture_output=True,
            timeout=10,
            check=False,
        )
        out["active"] = done.stdout.decode().strip()

    def human() -> None:
        click.echo(
            f"{plan.kind}: {plan.path} {'installed' if out['installed'] else 'not installed'}"
        )
        click.echo(f"daemon: {'pid ' + str(running['pid']) if running else 'not running'}")

    ctx.emit(out, human)


# -- localstore doctor -------------------------------------------------------------------------------


@dataclass
class Finding:
    """One doctor check: ok / info / problem, what was seen, how to fix it."""

    check: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        """A JSON-friendly view."""
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def _in_the_way(settings: Settings, check: str) -> Finding | None:
    """A problem naming a file where the home needs one of its folders, or None.

    With `data` a regular file, the keychain check said to make data/credentials.backend
    readable and the index check to run `init`, which then failed on that very file.
    """
    paths = settings.paths
    for folder in (paths.data, paths.config, paths.cache, paths.state, paths.blueprints):
        for p in (folder, *folder.parents):
            if p.exists() and not p.is_dir():
                return Finding(
                    check,
                    "problem",
                    f"{p} is a file where the home needs a folder",
                    "move that file away (or choose another --home or LOCALSTORE_HOME), "
                    "then run `localstore init`",
                )
            if p == settings.home or p.exists():
                break  # (a folder: the ones above it are folders too)
    return None


def check_keychain(settings: Settings) -> Finding:
    """The credential backend works (a real set/get/delete probe), for a profile the
    credential commands take."""
    from localstore.credentials import keychain_report, profile_name_error

    in_the_way = _in_the_way(settings, "keychain")
    if in_the_way is not None:
        return in_the_way
    refused = profile_name_error(settings.profile)
    if refused is not None and not _profile_listed(settings):
        # `cred`, `login`, sync and KVStore with credentials refuse it (its probe worked, under
        # 'localstore:work :doctor', and doctor said "keychain: ok").
        return Finding("keychain", "problem", refused.message, refused.hint)
    report = keychain_report(settings)
    if report.get("ok"):
        return Finding("keychain", "ok", f"{report['active']} ({report['keyring_backend']})")
    return Finding(
        "keychain",
        "problem",
        str(report.get("problem") or "no usable keychain"),
        str(report.get("hint") or "install and unlock a Secret Service keychain"),
    )


def _profile_listed(settings: Settings) -> bool:
    """Whether the index lists credentials under the profile (stored before the name rule, so
    kept usable); True when it cannot tell (the index check says why)."""
    from localstore._credential_names import listed_names
    from localstore.index import Index

    if not settings.paths.index_db.exists():
        return False
    try:
        index = Index(settings.paths.index_db, busy_timeout_ms=settings.busy_timeout_ms)
    except LocalStoreError:
        return True
    try:
        return bool(listed_names(index, settings.profile))
    except LocalStoreError:
        return True
    finally:
        index.close()


def check_index(settings: Settings) -> Finding:
    """The index opens, passes SQLite's quick_check and agrees with the files."""
    in_the_way = _in_the_way(settings, "index")
    if in_the_way is not None:
        return in_the_way
    if not settings.paths.index_db.exists():
        return Finding("index", "problem", "this home has no index yet", "run `localstore init`")
    from localstore._kept_edits import unacknowledged_kept

    try:
        with _readable_store(settings) as store:
            quick = store.index.pragma_check("quick_check")
            report = store.check()
            unacknowledged = unacknowledged_kept(store)
            read_only = store.read_only_reason
    except LocalStoreError as exc:
        return Finding("index", "problem", exc.message, exc.hint or "run `localstore check --fix`")
    finding = _index_finding(quick, report, unacknowledged)
    if read_only is None:
        return finding
    # Nothing can be saved, watched or synced there: a problem whatever the index holds (a
    # home that should be writable and is not; a snapshot checked here says what it is).
    from localstore._read_only import READ_ONLY_HOME_HINT

    fix = READ_ONLY_HOME_HINT
    if finding.status == "problem" and "check --fix" in finding.fix:
        fix += "; `localstore check --fix` runs on a writable copy only"
    return Finding(
        "index",
        "problem",
        f"the home {home_name(settings)} is read-only ({read_only}): nothing can be "
        f"saved, watched or synced in it; {finding.detail}",
        fix,
    )


def _readable_store(settings: Settings) -> BlueprintStore:
    """The home's store as doctor reads it: the usual open (no reconcile, no maintainer), or,
    when that is refused, read-only as the CLI's reading commands open it (a snapshot, a
    read-only disk: it failed with "cannot write the index")."""
    from localstore.errors import PermissionDeniedError
    from localstore.store import BlueprintStore

    try:
        return BlueprintStore(settings, reconcile=False, maintenance=False)
    except PermissionDeniedError as exc:
        try:
            return BlueprintStore(settings, read_only=True)
        except LocalStoreError as refused:
            raise refused from exc


def _index_finding(quick: list[str], report: CheckReport, unacknowledged: list[str]) -> Finding:
    """What check_index says of what the index's checks found."""
    if quick:
        return Finding(
            "index",
            "problem",
            f"SQLite quick_check: {'; '.join(quick[:3])}",
            "run `localstore check --fix`",
        )
    if not report.clean:
        kinds = sorted({p["kind"] for p in report.problems})
        # Each kind's own step: check --fix repairs only some kinds (an edit kept in
        # data/recovered/, a file that does not parse are the person's), and sending them
        # there alone left those problems standing.
        steps = [what for _, what in check_steps(kinds)]
        return Finding(
            "index",
            "problem",
            f"{len(report.problems)} difference(s) between files and index ({', '.join(kinds)})",
            "; then ".join(steps),
        )
    if unacknowledged:
        # Not a problem (no save that returned lost anything), but the person may want the
        # work an interrupted save was writing: told here, as check does not list it.
        shown = ", ".join(unacknowledged[:3]) + (" ..." if len(unacknowledged) > 3 else "")
        return Finding(
            "index",
            "info",
            f"quick_check ok; files and index agree; {len(unacknowledged)} version(s) that "
            f"interrupted saves were writing are kept in the data folder ({shown})",
            "look at them, copy what you need into the blueprints folder, then delete them "
            "(no save that returned lost anything)",
        )
    return Finding("index", "ok", "quick_check ok; files and index agree")


# A damaged index's name once set aside (localstore.index.set_aside): the UTC time of the
# rebuild, then "-N" when two came in one second, then "-wal"/"-shm" for its side files.
_SET_ASIDE_RE = re.compile(r"\.damaged-(\d{8}T\d{6}Z)(?:-\d+)?$")


def _set_aside_indexes(index_db: Path) -> list[tuple[Path, float, int]]:
    """The damaged indexes set aside next to ``index_db``: (path, when set aside as a Unix
    time, bytes with its -wal and -shm), oldest first."""
    found = []
    for path in sorted(index_db.parent.glob(f"{index_db.name}.damaged-*")):
        match = _SET_ASIDE_RE.search(path.name)
        if match is None:
            continue  # (a side file, counted with its index below; or not one of ours)
        try:
            st = path.stat()
        except OSError:
            continue  # (deleted since the listing)
        size = st.st_size
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                size += path.with_name(path.name + suffix).stat().st_size
        try:
            when = float(calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ")))
        except ValueError:
            when = st.st_mtime
        found.append((path, when, size))
    return sorted(found, key=lambda f: (f[1], str(f[0])))


def _age(seconds: float) -> str:
    if seconds < 2 * 86400:
        return span(max(0.0, seconds))
    return f"{seconds / 86400:.0f} days"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{max(1, round(n / 1000))} kB"


def check_old_index(settings: Settings) -> Finding:
    """The damaged indexes set aside when the index was rebuilt from the files (information).

    Only the store object that rebuilt the index reported it (``index-rebuilt``); later
    `check` and `doctor` runs never mentioned the file, which holds the history the rebuilt
    index lacks: it was never looked at, or deleted without knowing what it held. Not a
    problem: nothing in it is to be fixed, and no exit code changes for it.
    """
    found = _set_aside_indexes(settings.paths.index_db)
    if not found:
        return Finding("old-index", "ok", "no damaged index set aside")
    now = time.time()
    named = ", ".join(
        f"{path} (set aside {_age(now - when)} ago, {_size(size)})" for path, when, size in found
    )
    one = len(found) == 1
    return Finding(
        "old-index",
        "info",
        f"{len(found)} damaged {'index' if one else 'indexes'} set aside when the index was "
        f"rebuilt from the files: {named}; {'it holds' if one else 'they hold'} the history "
        "(revisions, deletions), sync records and app data from before the rebuild, which the "
        "rebuilt index does not have (the blueprints themselves are in the files)",
        f"nothing to fix; keep {'it' if one else 'them'} while you may want that history or app "
        "data (LocalStore cannot read it back: open a copy with an SQLite tool, e.g. the sqlite3 "
        "shell's `.recover`, which rescues what the damage spared); delete "
        f"{'it' if one else 'them'} (with any -wal and -shm file beside "
        f"{'it' if one else 'them'}) once you do not and, for a home that syncs, once it has "
        "synced since the rebuild (its first sync after a rebuild looks for such a file)",
    )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(settings: Settings) -> Finding:
    """Free space where the blueprints and the index live."""
    worst: tuple[int, Path] | None = None
    for p in (settings.paths.blueprints, settings.paths.data):
        usage = shutil.disk_usage(_existing_parent(p))
        if worst is None or usage.free < worst[0]:
            worst = (usage.free, p)
    assert worst is not None
    free_mb = worst[0] // (1024 * 1024)
    if worst[0] < MIN_FREE_BYTES:
        return Finding(
            "disk", "problem", f"only {free_mb} MB free for {worst[1]}", "free disk space"
        )
    return Finding("disk", "ok", f"{free_mb} MB free")


# Watches asked for beyond the home's folders (new folders, a restart's overlap, churn of other
# programs) before `doctor` calls the watch limit too tight.
WATCH_MARGIN = 500
WATCHES_FIX = "sudo sysctl fs.inotify.max_user_watches=524288 (persist it in /etc/sysctl.d/)"
INSTANCES_FIX = (
    "sudo sysctl fs.inotify.max_user_instances=512 (persist it in /etc/sysctl.d/), or close "
    "programs that watch files"
)


def check_watch_limits(settings: Settings) -> Finding:
    """The inotify limits (below), and whether inotify sees every change of the folder: on a
    network or FUSE file system it does not see other machines' edits (info, with the rescan
    period that finds them)."""
    from localstore.watcher import remote_fs_notice

    finding = _check_inotify_limits(settings)
    notice = remote_fs_notice(settings)
    if notice is None:
        return finding
    fix = (
        "nothing to do if a delay is fine; lower remote_rescan_interval_s for a shorter one, "
        "or keep the blueprints on a local disk"
    )
    if finding.status == "problem":
        return Finding(finding.check, "problem", f"{finding.detail}; {notice}", finding.fix)
    return Finding(finding.check, "info", f"{notice}; {finding.detail}", fix)


def _check_inotify_limits(settings: Settings) -> Finding:
    """inotify watches (one per folder) and an instance are free for the blueprints tree.

    The limits are per user and shared with every program of the user (an IDE, a file indexer,
    a sync client), so what those hold is counted (``inotify_usage``, from /proc/<pid>/fdinfo);
    the watches of whatever already watches this home (a running daemon) are not taken from it.
    Where the processes cannot be read, twice the folders plus 1000 stands in for the others.
    """
    from localstore.watcher import inotify_limits, inotify_usage

    limit, instance_limit = inotify_limits()
    if limit is None:
        return Finding("watcher", "ok", "no inotify limit applies on this system")
    root = settings.paths.blueprints
    # Hidden folders count: watchdog watches every sub-folder (a .git costs hundreds).
    folders = 1 + sum(len(dirs) for _, dirs, _ in os.walk(root)) if root.exists() else 0
    usage = inotify_usage(root)
    if usage is None:
        if folders * 2 + 1000 > limit:
            return Finding(
                "watcher",
                "problem",
                f"{folders} folders to watch, max_user_watches is {limit}",
                WATCHES_FIX,
            )
        return Finding("watcher", "ok", f"{folders} folder(s); max_user_watches {limit}")
    others = usage.watches - usage.folder_watches
    free = limit - others
    problems, fixes = [], []
    if free < folders + WATCH_MARGIN:
        problems.append(
            f"{folders} folder(s) to watch, but other programs hold {others} of the "
            f"{limit} inotify watches (max_user_watches) and {max(free, 0)} are free"
        )
        fixes.append(WATCHES_FIX)
    other_instances = usage.instances - usage.folder_instances
    # A watcher of this home already has its instance (and frees it before taking a new one).
    if (
        instance_limit is not None
        and usage.folder_instances == 0
        and instance_limit - other_instances < 1
    ):
        problems.append(
            f"other programs hold {other_instances} of the {instance_limit} inotify "
            "instances (max_user_instances): a watcher cannot start"
        )
        fixes.append(INSTANCES_FIX)
    if problems:
        return Finding(
            "watcher",
            "problem",
            "; ".join(problems) + "; what is not watched is found only by a rescan every 30 s",
            "; ".join(fixes),
        )
    unknown = f", {usage.unreadable} process(es) not readable" if usage.unreadable else ""
    return Finding(
        "watcher",
        "ok",
        f"{folders} folder(s); max_user_watches {limit}, {others} held by other programs; "
        f"inotify instances {usage.instances} of {instance_limit}{unknown}",
    )


def check_cloud(settings: Settings) -> Finding:
    """Login and reachability of the configured cloud project (skipped when not logged in), and
    a warning when its URL is plain http to another machine."""
    finding, url = _cloud_reach(settings)
    warning = cleartext_url_warning(url) if url else None
    if warning is None:
        return finding
    # Said, not a problem (no exit 3): self-hosted Supabase over http on a LAN is a real setup.
    fix = "serve the project over https and log in to its https:// URL"
    return Finding(
        "cloud",
        "info" if finding.status == "ok" else finding.status,
        f"{finding.detail}; warning: {warning}",
        f"{finding.fix}; {fix}" if finding.fix else fix,
    )


def _cloud_reach(settings: Settings) -> tuple[Finding, str]:
    """check_cloud's finding without the URL warning, and the project URL seen ("" if none)."""
    from localstore._read_only import home_read_only
    from sync.errors import NotLoggedInError, SyncError
    from sync.supabase_remote import remote_from_settings

    read_only = home_read_only(settings.paths)
    if read_only is not None:
        # Not opened: the credential store opens the index to write (it failed with "cannot
        # write the index"), and no sync can run on a home that cannot record what it pulls.
        return Finding(
            "cloud",
            "info",
            f"sync is off: the home is read-only ({read_only})",
            "see the index check",
        ), settings.cloud_url
    if not settings.paths.index_db.exists():
        # Not opened: the credential store makes the home's folders and an empty index, so
        # `doctor` on a mistyped --home left a home there, and its next run said "index: ok".
        # A login lists its names in the index: with none, this home never logged in.
        return Finding(
            "cloud",
            "info",
            "sync is off: this home has no index yet, so it is not logged in",
            "run `localstore init`, then `localstore login`",
        ), settings.cloud_url
    try:
        remote = remote_from_settings(settings, timeout_s=10.0)
    except NotLoggedInError as exc:
        return Finding("cloud", "info", f"sync is off: {exc.message}", exc.hint), settings.cloud_url
    except SyncError as exc:
        if not _login_listed(settings):
            # The keychain could not be read, but this home never logged in (the index lists
            # every name stored): not logged in, as documented. It was a second FAIL with the
            # keychain check's text, two problems for one cause on a headless machine.
            return Finding(
                "cloud",
                "info",
                "sync is off: this home is not logged in to a cloud project",
                NotLoggedInError.hint,
            ), settings.cloud_url
        return Finding("cloud", "problem", exc.message, exc.hint), settings.cloud_url
    try:
        info = remote.server_info()
        detail = f"{remote.url} answers (protocol {info.protocol}); logged in"
        return Finding("cloud", "ok", detail), remote.url
    except SyncError as exc:
        return Finding("cloud", "problem", f"{remote.url}: {exc.message}", exc.hint), remote.url
    finally:
        remote.close()


def _index_core_version(settings: Settings) -> int | None:
    """The core schema version of the home's index (None when it cannot be read)."""
    from localstore.index import Index

    try:
        index = Index(settings.paths.index_db, busy_timeout_ms=settings.busy_timeout_ms)
    except LocalStoreError:
        return None
    try:
        with index.read() as cur:
            return int(cur.execute("PRAGMA user_version").fetchall()[0][0])
    except LocalStoreError:
        return None
    finally:
        index.close()


def _login_listed(settings: Settings) -> bool:
    """Whether the index lists this home's cloud session or project (True when it cannot tell)."""
    from localstore.index import Index
    from sync.login_names import login_listed

    try:
        index = Index(settings.paths.index_db, busy_timeout_ms=settings.busy_timeout_ms)
    except LocalStoreError:
        return True
    try:
        return login_listed(index, settings)
    except LocalStoreError:
        return True
    finally:
        index.close()


def check_daemon(settings: Settings) -> Finding:
    """Whether a daemon runs for this home and answers its control API."""
    from sync.control import ControlClient, ControlError

    state = daemon_running(settings)
    if state is None:
        stale = read_state(settings.paths.state)
        detail = "not running" + (
            " (a stale daemon.json from a dead daemon is ignored)" if stale else ""
        )
        return Finding("daemon", "info", detail, "start it: `localstore daemon --detach`")
    core = _index_core_version(settings)
    outdated = outdated_daemon(state, core) if core is not None else None
    if outdated is not None:
        # Checked before asking it: its watcher and sync errors would say "upgrade localstore"
        # (the old code's words for a newer index), the opposite of what to do.
        return Finding("daemon", "problem", outdated, OUTDATED_DAEMON_FIX)
    try:
        with ControlClient(int(state["port"]), str(state["token"]), timeout=5.0) as client:
            status = client.status()
    except ControlError as exc:
        return Finding(
            "daemon",
            "problem",
            f"pid {state['pid']} does not answer: {exc.message}",
            f"restart it: {_unanswered_stop_command(int(state['pid']))}; "
            "localstore daemon --detach",
        )
    sync, watcher = status.get("sync", {}), status.get("watcher", {})
    if watcher.get("state") in ("degraded", "failed"):
        # Edits in the folder are not (all) being picked up: say why, not just "running".
        return Finding(
            "daemon",
            "problem",
            f"pid {state['pid']}: the watcher is {watcher['state']}: {watcher.get('problem')}",
            "fix what it names (it recovers by itself); details in the daemon's log",
        )
    upkeep = (status.get("index") or {}).get("maintainer") or {}
    if upkeep.get("failed_rounds") or upkeep.get("running") is False:
        # Nothing checkpoints the index's write-ahead log then: it grows while the daemon runs.
        return Finding(
            "daemon",
            "problem",
            f"pid {state['pid']}: index maintenance is failing ({upkeep.get('last_error')}); "
            f"write-ahead log {status['index'].get('wal_bytes', 0) // 1_000_000} MB",
            "free disk space or fix what the error names (it retries by itself); details in "
            "the daemon's log",
        )
    if sync.get("state") == "error" and sync.get("last_error"):
        # Its last cycle failed (a full disk, a locked index, a revoked login): the error says
        # what to do; "running, sync error" alone would hide it.
        return Finding(
            "daemon",
            "problem",
            f"pid {state['pid']}: sync failed: {sync['last_error']}",
            "fix what the error names (sync retries by itself); details in the daemon's log",
        )
    return Finding("daemon", "ok", f"pid {state['pid']}, sync {sync.get('state')}")


def check_validator(settings: Settings) -> Finding:
    """Whether the daemon judges with the app's validator (daemon_validator in config.yaml), so
    edits made while the app is closed sync; a problem when it names one the daemon cannot use."""
    from sync._app_validator import AppValidator, not_the_homes

    if not settings.paths.index_db.exists() or _in_the_way(settings, "validator") is not None:
        return Finding("validator", "info", "this home has no index yet (see the index check)")
    with _readable_store(settings) as store:
        home = store.home_validator()
    status = _daemon_validator_status(settings)
    spec, name = settings.daemon_validator, settings.daemon_validator_name
    if status is None and spec:
        # No daemon answers: only what the settings say is checked here (importing the app's
        # module is the daemon's to do, in its own environment).
        if name and home is not None and name != home:
            return Finding("validator", "problem", *not_the_homes(spec, name, home))
        return Finding(
            "validator",
            "info",
            f"the daemon imports {spec} when it starts (no daemon runs to ask)",
            "start it: `localstore daemon --detach`",
        )
    if status is None:
        status = AppValidator().status(home)
    if status.get("problem"):
        return Finding("validator", "problem", str(status["detail"]), str(status["hint"]))
    if status.get("state") == "none":
        if home is None:
            return Finding("validator", "ok", "the app registered no validator for this home")
        return Finding("validator", "info", str(status["detail"]), str(status["hint"]))
    return Finding("validator", "ok", str(status["detail"]))


def _daemon_validator_status(settings: Settings) -> dict[str, Any] | None:
    """The running daemon's account of its validator, or None (none runs, or none answers:
    the daemon check says so)."""
    from sync.control import ControlClient, ControlError

    state = daemon_running(settings)
    if state is None:
        return None
    try:
        with ControlClient(int(state["port"]), str(state["token"]), timeout=5.0) as client:
            validator = client.status().get("validator")
    except ControlError:
        return None
    return validator if isinstance(validator, dict) else None


CHECKS: tuple[Callable[[Settings], Finding], ...] = (
    check_keychain,
    check_index,
    check_old_index,
    check_disk,
    check_watch_limits,
    check_cloud,
    check_daemon,
    check_validator,
)


def run_checks(settings: Settings) -> list[Finding]:
    """Every doctor check; a check that crashes is reported as a problem, not raised."""
    findings = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            findings.append(check(settings))
        except (LocalStoreError, SyncError) as exc:
            # A known condition (a damaged or unreadable index...) carries its own fix; it was
            # reported as "the check failed: ..." with "report a bug" as the fix.
            findings.append(Finding(name, "problem", exc.message, exc.hint or "see the message"))
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            findings.append(Finding(name, "problem", f"the check failed: {exc}", "report a bug"))
    return findings


@click.command("doctor")
@pass_ctx
def doctor_cmd(ctx: CliContext) -> None:
    """Check keychain, index (and damaged ones set aside), disk, watcher
    limits, cloud, daemon and the daemon's validator; say how to fix problems.

    Exit 3 when any problem is found.
    """
    findings = run_checks(ctx.settings)
    problems = [f for f in findings if f.status == "problem"]
    marks = {"ok": "ok  ", "info": "info", "problem": "FAIL"}

    def human() -> None:
        for f in findings:
            click.echo(f"[{marks[f.status]}] {f.check}: {f.detail}")
            if f.fix and f.status != "ok":
                click.echo(f"       fix: {f.fix}")
        click.echo(f"{len(problems)} problem(s)" if problems else "no problems found")

    ctx.emit({"ok": not problems, "checks": [f.to_dict() for f in findings]}, human)
    raise SystemExit(EXIT_ATTENTION if problems else EXIT_OK)
