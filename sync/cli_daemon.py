"""``localstore daemon``, ``localstore service install|uninstall|status`` and ``localstore doctor``.

The commands and their wiring live here; what they use is in private modules beside this one:
``sync._daemon_stop`` (``daemon --stop`` and ``--pause/--resume``), ``sync._service_files`` (the
systemd unit, launchd agent and scheduled task rendered as text, so an installed wheel or a
one-file binary needs no data files), ``sync._service_plan`` (where each OS's file goes and its
service manager's commands) and ``sync._doctor`` (doctor's checks). Their public names are
importable from here too.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import click

from localstore import files as fs
from localstore._daemon_state import (
    EXIT_HOME_GONE,
    EXIT_HOME_LOCKED,
    EXIT_HOME_READ_ONLY,
    EXIT_INDEX_NEWER,
    background_popen_options,
    make_output_private,
    open_private_append,
)
from localstore.cli import (
    EXIT_ATTENTION,
    EXIT_ERROR,
    EXIT_OK,
    CliContext,
    errors_to_exit,
    fail,
    pass_ctx,
)
from localstore.config import Settings
from localstore.errors import LockHeldError, NewerIndexError, ReadOnlyStoreError, StorageError
from sync._daemon_stop import STOP_TIMEOUT_S, _pause_daemon, _stop_daemon, _warn, hard_stop_command
from sync._doctor import (
    CHECKS,
    INSTANCES_FIX,
    MIN_FREE_BYTES,
    WATCH_MARGIN,
    WATCHES_FIX,
    Finding,
    check_cloud,
    check_daemon,
    check_disk,
    check_index,
    check_keychain,
    check_old_index,
    check_validator,
    check_watch_limits,
    run_checks,
)
from sync._sd_notify import notify, take_notify_socket
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
    systemd_environment_line,
    systemd_escape,
    windows_user,
)
from sync._service_plan import ServicePlan, _executable, service_plan, windowless_command
from sync.embed import daemon_running

if TYPE_CHECKING:
    from sync.daemon import Daemon

__all__ = [
    "CHECKS",
    "DETACH_TIMEOUT_S",
    "INSTANCES_FIX",
    "LAUNCHD_LABEL",
    "MIN_FREE_BYTES",
    "SERVICE_COMMAND_TIMEOUT_S",
    "SERVICE_NAME",
    "STOPPED_WAIT_S",
    "STOP_TIMEOUT_S",
    "TASK_NAME",
    "WATCHES_FIX",
    "WATCH_MARGIN",
    "Finding",
    "ServicePlan",
    "check_cloud",
    "check_daemon",
    "check_disk",
    "check_index",
    "check_keychain",
    "check_old_index",
    "check_validator",
    "check_watch_limits",
    "daemon_args",
    "daemon_cmd",
    "doctor_cmd",
    "hard_stop_command",
    "render_launchd_plist",
    "render_systemd_unit",
    "render_task_xml",
    "run_checks",
    "service_environment",
    "service_group",
    "service_install",
    "service_plan",
    "service_status",
    "service_suffix",
    "service_uninstall",
    "systemd_environment_line",
    "systemd_escape",
    "windowless_command",
    "windows_user",
    "write_service_files",
]

DETACH_TIMEOUT_S = 60.0
SERVICE_COMMAND_TIMEOUT_S = 60.0
# How long `service install` waits for what its stop_first stopped to be gone (ServicePlan.gone).
STOPPED_WAIT_S = 30.0


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
    _refuse_read_only(ctx, detach=detach, no_restart_code=no_restart_code)
    if detach:
        _detach(ctx, log_level, log_json, port, metrics_port)
        return
    daemon, code = _run_daemon(
        ctx,
        log_level=log_level,
        log_json=log_json,
        port=port,
        metrics_port=metrics_port,
        no_stderr=no_stderr,
        no_restart_code=no_restart_code,
    )
    if code == EXIT_HOME_GONE and no_restart_code is not None:
        code = no_restart_code
    _exit(code, stopped_cleanly=daemon.stopped_cleanly)


def _refuse_read_only(ctx: CliContext, *, detach: bool, no_restart_code: int | None) -> None:
    """End the command with a clear error when this user cannot write the home."""
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


def _run_daemon(
    ctx: CliContext,
    *,
    log_level: str,
    log_json: bool,
    port: int,
    metrics_port: int | None,
    no_stderr: bool,
    no_restart_code: int | None,
) -> tuple[Daemon, int]:
    """Run the daemon in this process until it stops; return it and its exit code.

    A start that fails is written to daemon.log and ends the command with its exit code.
    """
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
    return daemon, code


def _exit(code: int, *, stopped_cleanly: bool) -> NoReturn:
    """Exit with ``code``; at once (no interpreter shut-down) when work was left running."""
    if not stopped_cleanly:
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


# -- service files ---------------------------------------------------------------------------------


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
