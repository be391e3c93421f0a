"""Run ``LocalCloud`` as a long-lived background process and find it again later.

``python -m sync.localcloud serve --home DIR`` starts a stack, writes ``<state>/localcloud.json``
(url, keys, pids; mode 0600, written atomically) once it is ready, and stops cleanly on SIGTERM or
SIGINT, removing the file. ``localstore cloud start|stop|status`` (``sync/cli_cloud.py``) drive it
across CLI invocations through that file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

STATE_FILE = "localcloud.json"
LOG_FILE = "localcloud.log"
# Held (flock, the server's pid written in) for the stack's whole life: the state file's pid is
# trusted only while its process holds this (see running_state).
LOCK_FILE = "localcloud.lock"


def state_dir_for(home: str | None) -> Path:
    """The state directory of a LocalStore home (platformdirs when ``home`` is None)."""
    from localstore.config import load_settings

    return load_settings(home=home).paths.state


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The state file's content, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def running_state(state_dir: Path) -> dict[str, Any] | None:
    """The state of the stack running for ``state_dir``, or None when none runs.

    A stack killed by SIGKILL or a power cut leaves its state file behind; after a reboot its pid
    can name any process of the user's, which `localstore cloud stop` then killed (SIGTERM, then
    SIGKILL). The pid counts only while it holds the stack's lock.
    """
    from localstore._daemon_state import lock_held_by

    state = read_state(state_dir)
    if state is None or not lock_held_by(state_dir, state.get("pid"), LOCK_FILE):
        return None
    return state


def write_state(state_dir: Path, data: dict[str, Any]) -> None:
    """Write the state file atomically with mode 0600 (it holds the service key)."""
    from localstore._state_temps import write_state_file

    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_state_file(state_dir / STATE_FILE, json.dumps(data, indent=2).encode("utf-8"))


def remove_state(state_dir: Path, pid: int) -> None:
    """Remove the state file if it still belongs to ``pid``."""
    current = read_state(state_dir)
    if current is not None and current.get("pid") == pid:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / STATE_FILE).unlink()


def serve(state_dir: Path, *, port: int = 0, access_token_ttl: int = 3600) -> int:
    """Run a stack until SIGTERM/SIGINT; return the process exit code."""
    from sync.embed import HomeLock
    from sync.localcloud.stack import LocalCloud

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    lock = HomeLock(state_dir, LOCK_FILE)
    if not lock.acquire(blocking=False):
        raise RuntimeError(
            f"another local cloud runs for {state_dir}: stop it first (`localstore cloud stop`)"
        )
    with contextlib.ExitStack() as stack:
        stack.callback(lock.release)
        cloud = stack.enter_context(LocalCloud(port=port, access_token_ttl=access_token_ttl))
        pid = os.getpid()
        write_state(
            state_dir,
            {
                "url": cloud.url,
                "anon_key": cloud.anon_key,
                "service_key": cloud.service_key,
                "jwt_secret": cloud.jwt_secret,
                "pid": pid,
                "postgres_port": cloud.cluster.port,
                "started_at": time.time(),
                "log": str(state_dir / LOG_FILE),
            },
        )
        logging.getLogger(__name__).info("local cloud ready at %s", cloud.url)
        try:
            stop.wait()
        finally:
            remove_state(state_dir, pid)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sync.localcloud serve --home DIR [--state-dir DIR] [--port N] [--ttl S]``."""
    parser = argparse.ArgumentParser(prog="python -m sync.localcloud")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the local Supabase-compatible stack until signalled")
    run.add_argument("--home", help="LocalStore home whose state dir gets localcloud.json")
    run.add_argument("--state-dir", help="write localcloud.json here instead")
    run.add_argument("--port", type=int, default=0, help="gateway port (0: a free one)")
    run.add_argument("--ttl", type=int, default=3600, help="access-token lifetime in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    state_dir = Path(args.state_dir) if args.state_dir else state_dir_for(args.home)
    try:
        return serve(state_dir, port=args.port, access_token_ttl=args.ttl)
    except Exception as exc:  # process boundary: logged with its traceback, exit 1
        logging.getLogger(__name__).exception("the local cloud failed")
        # The parent CLI shows this last "error:" line of the log to the user.
        hint = getattr(exc, "hint", "")
        print(
            f"error: {exc}" + (f" ({hint})" if hint and hint not in str(exc) else ""),
            file=sys.stderr,
        )
        return 1
