"""Stop or pause the running daemon from the CLI (`localstore daemon --stop`, `--pause/--resume`).

A clean stop asks the daemon through its control API; SIGTERM is the fallback on POSIX only (on
Windows ``os.kill`` is TerminateProcess). A pause with no daemon running is recorded in the state
folder, for the next daemon and for an app syncing in-process.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

import click

from localstore._daemon_state import clear_pause, write_pause
from localstore.cli import CliContext, errors_to_exit, fail, json_text
from localstore.errors import StorageError
from sync.embed import daemon_running, lock_holder

STOP_TIMEOUT_S = 10.0


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
