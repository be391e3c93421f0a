"""``localstore cloud start|stop|status``: the local Supabase-compatible stack as a background process.

``start`` launches ``python -m sync.localcloud serve`` detached, waits for its state file and prints
the URL and keys; ``stop`` signals it and waits; ``status`` reads the state file and checks that the
gateway answers. The stack is throw-away: each start is an empty project with new keys.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from localstore._daemon_state import background_popen_options, open_private_append, pid_alive
from localstore.cli import CliContext, fail, pass_ctx
from sync.localcloud.service import LOG_FILE, STATE_FILE, read_state, running_state

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# The longest access-token lifetime `cloud start --ttl` takes: a week.
MAX_TTL_S = 7 * 24 * 3600


@click.group(name="cloud")
def cloud_group() -> None:
    """Start/stop the local Supabase-compatible stack (PostgreSQL + gateway)."""


def _json_option(fn: Any) -> Any:
    """``--json`` after the subcommand too (``localstore cloud start --json``)."""

    def enable(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(CliContext).json = True  # type: ignore[union-attr]

    return click.option(
        "--json", is_flag=True, expose_value=False, callback=enable, help="Machine-readable output."
    )(fn)


def _show(ctx: CliContext, state: dict[str, Any], status: str) -> None:
    public: dict[str, Any] = {
        k: state[k] for k in ("url", "anon_key", "service_key", "pid") if k in state
    }
    public["status"] = status

    def human() -> None:
        click.echo(f"{status}: {state['url']}")
        click.echo(f"anon key:    {state['anon_key']}")
        click.echo(f"service key: {state['service_key']}")

    ctx.emit(public, human)


@cloud_group.command("start")
# Ranges, checked before anything starts: `--port 70000` started PostgreSQL, then the gateway's
# bind() failed ("the local cloud did not start", exit 1); `--ttl -100` made every session
# token expired when issued (sync failed "JWT expired"), and `--ttl 1000000000000` killed the
# supabase client's refresh-timer thread (OverflowError) at login. A week is more than any
# test of the throw-away stack waits for.
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Gateway port (default: a free one).",
)
@click.option(
    "--ttl",
    type=click.IntRange(1, MAX_TTL_S),
    default=3600,
    help="Access-token lifetime in seconds (at most a week).",
)
@_json_option
@pass_ctx
def start_cmd(ctx: CliContext, port: int, ttl: int) -> None:
    """Start the stack in the background and print its URL and keys."""
    from sync.localcloud.cluster import PostgresNotFoundError, find_bindir

    try:
        find_bindir()
    except PostgresNotFoundError as exc:
        fail(
            "PostgreSQL server binaries (initdb, postgres) are not installed",
            hint=f"install them: {exc.hint}",
        )
    state_dir = ctx.settings.paths.state
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = running_state(state_dir)
    if existing is not None:
        _show(ctx, existing, "already running")
        return
    proc = _spawn(state_dir, port, ttl)
    state = _wait_ready(state_dir, proc)
    _show(ctx, state, "running")


def _spawn(state_dir: Path, port: int, ttl: int) -> subprocess.Popen[bytes]:
    log_path = state_dir / LOG_FILE
    args = [sys.executable, "-m", "sync.localcloud", "serve", "--state-dir", str(state_dir)]
    args += ["--port", str(port), "--ttl", str(ttl)]
    # 0600 whatever the umask: the stack logs the project's URL and errors naming its rows.
    with os.fdopen(open_private_append(log_path), "ab") as log:
        # Detached: the stack outlives this command and ignores the terminal's Ctrl-C.
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, **background_popen_options()
        )


def _wait_ready(state_dir: Path, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state is not None and state.get("pid") == proc.pid:
            return state
        if proc.poll() is not None:
            fail(
                f"the local cloud did not start: {_last_error(state_dir)}",
                hint=f"see {state_dir / LOG_FILE}",
            )
        time.sleep(0.1)
    proc.terminate()
    fail("the local cloud did not become ready in time", hint=f"see {state_dir / LOG_FILE}")


def _last_error(state_dir: Path) -> str:
    try:
        lines = (state_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no log"])[-1]


@cloud_group.command("stop")
@_json_option
@pass_ctx
def stop_cmd(ctx: CliContext) -> None:
    """Stop the stack (its data is discarded)."""
    state_dir = ctx.settings.paths.state
    state = running_state(state_dir)
    if state is None:
        (state_dir / STATE_FILE).unlink(missing_ok=True)  # a stale file from a killed stack
        ctx.emit({"status": "not running"}, lambda: click.echo("not running"))
        return
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid) and sys.platform != "win32":  # (there SIGTERM was TerminateProcess)
        os.kill(pid, signal.SIGKILL)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    ctx.emit({"status": "stopped", "pid": pid}, lambda: click.echo("stopped"))


@cloud_group.command("status")
@_json_option
@pass_ctx
def status_cmd(ctx: CliContext) -> None:
    """Show whether the stack runs and answers; exit 1 (and say what to do) when it does not."""
    state_dir = ctx.settings.paths.state
    state = running_state(state_dir)
    if state is None:
        ctx.emit({"status": "not running"}, lambda: click.echo("not running"))
        # (Exit 1 is an error with its line on stderr saying what to do; it had none.)
        fail("the local cloud is not running", hint="start it with `localstore cloud start`")
    try:
        response = httpx.get(
            f"{state['url']}/auth/v1/health", headers={"apikey": state["anon_key"]}, timeout=5
        )
        healthy = response.status_code == 200
    except httpx.HTTPError:
        healthy = False
    _show(ctx, state, "running" if healthy else "not answering")
    if not healthy:
        fail(
            f"the local cloud (process {state.get('pid')}) does not answer at {state['url']}",
            hint=f"see {state_dir / LOG_FILE}; `localstore cloud stop`, then "
            "`localstore cloud start` (a new, empty project)",
        )
