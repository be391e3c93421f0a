"""``localstore watch`` as a real process: events on stdout as they happen, SIGTERM stops it."""

from __future__ import annotations

import json
import os
import select
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

_MAIN = "from localstore.cli import main; main()"


def _read_line(proc: subprocess.Popen[bytes], stream: str, timeout: float) -> str:
    pipe = getattr(proc, stream)
    sel = selectors.DefaultSelector()
    sel.register(pipe, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"no line on {stream} within {timeout}s")
        return pipe.readline().decode()
    finally:
        sel.close()


def _start(home: Path, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra_env}
    env.pop("LOCALSTORE_HOME", None)
    return subprocess.Popen(
        [sys.executable, "-c", _MAIN, "--home", str(home), *args, "watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_watch_json_prints_events_and_stops_on_sigterm(home: Path) -> None:
    (home / "blueprints").mkdir(parents=True)
    (home / "blueprints" / "offline.blueprint.yaml").write_text("x: 1\n")
    proc = _start(home, "--json")
    try:
        first = json.loads(_read_line(proc, "stdout", 60))
        assert (first["event"], first["path"], first["origin"]) == (
            "created",
            "offline.blueprint.yaml",
            "external",
        )
        assert "watching" in _read_line(proc, "stderr", 60)
        (home / "blueprints" / "live.blueprint.yaml").write_text("y: 1\n")
        event = json.loads(_read_line(proc, "stdout", 30))
        assert (event["event"], event["path"]) == ("created", "live.blueprint.yaml")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_watch_human_lines_and_ctrl_c(home: Path) -> None:
    (home / "blueprints").mkdir(parents=True)  # a home (watch refuses a mistyped --home)
    proc = _start(home)
    try:
        assert "watching" in _read_line(proc, "stderr", 60)
        (home / "blueprints" / "h.blueprint.yaml").write_text("z: 1\n")
        line = _read_line(proc, "stdout", 30)
        assert "created" in line and "h.blueprint.yaml" in line and "rev 1" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_watch_says_a_remote_folder_is_rescanned(home: Path) -> None:
    """A folder on a network file system (here declared so: remote_fs) is rescanned on a timer;
    `localstore watch` says so when it starts, as it says a problem."""
    (home / "blueprints").mkdir(parents=True)
    proc = _start(home, LOCALSTORE_REMOTE_FS="remote")
    try:
        fd = proc.stderr.fileno()  # type: ignore[union-attr]
        text = ""
        deadline = time.monotonic() + 60
        # Raw reads: the note comes in the same burst as "watching" (a buffered readline would
        # swallow it), and only after the start-up rescan.
        while "\nnote:" not in text or not text.endswith("\n"):
            assert time.monotonic() < deadline, f"no note within 60 s: {text!r}"
            if select.select([fd], [], [], 1.0)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"stderr closed: {text!r}"
                text += chunk.decode()
        note = next(line for line in text.splitlines() if line.startswith("note:"))
        assert "remote_fs: remote" in note and "rescan every 30 s" in note
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
