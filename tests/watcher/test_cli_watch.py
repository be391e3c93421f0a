"""``localstore watch`` as a real process: events on stdout as they happen, SIGTERM stops it."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
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


def _start(home: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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
