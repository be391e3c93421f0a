"""The daemon's log file over a long life: it is where `doctor` and every hint send an operator."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

import sync.daemon as daemon_module
from sync._daemon_log import _LogFileHandler
from sync.daemon import configure_logging
from sync.embed import daemon_running
from sync.engine import WorkerState
from sync.memory_remote import MemoryRemote, MemoryServer
from tests.store import test_disk_full
from tests.store.test_disk_full import DiskSpace

from .conftest import REPO, DaemonProc, daemon_command, eventually

# A real full disk (a small tmpfs), the store's disk-full tests' fixture.
disk = test_disk_full.disk


def test_the_log_file_is_recreated_after_state_is_deleted(spawn_daemon, tmp_path) -> None:
    """The daemon restores daemon.lock and daemon.json when state/ is deleted (a clean-up
    script), but its log handler kept writing to the deleted file: daemon.log stayed missing,
    and every line went to an unlinked inode until 5 MB had piled up there (months at INFO)."""
    home = tmp_path / "h"
    d = spawn_daemon(home)
    ready = d.wait_ready()
    state = home / "state"
    shutil.rmtree(state)
    assert eventually(lambda: daemon_running(d.settings) is not None, 15)  # restored by its tick
    assert daemon_running(d.settings) == ready
    assert d.stop(signal.SIGTERM) == 0
    log = (state / "daemon.log").read_text()
    assert "state/daemon.json was deleted; writing it again" in log
    assert "daemon stopping" in log


def test_the_log_file_still_rotates_and_is_bounded(tmp_path) -> None:
    handler = _LogFileHandler(tmp_path / "daemon.log", maxBytes=2000, backupCount=2)
    try:
        handler.setFormatter(logging.Formatter("%(message)s"))
        for i in range(200):
            handler.handle(logging.makeLogRecord({"msg": f"line {i:04d} " + "x" * 40}))
    finally:
        handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["daemon.log", "daemon.log.1", "daemon.log.2"]
    assert all((tmp_path / n).stat().st_size <= 2000 for n in names)
    assert "line 0199" in (tmp_path / "daemon.log").read_text()


def test_a_full_disk_is_reported_once_and_the_lost_records_counted(
    disk: DiskSpace, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a full disk the handler printed a whole traceback to stderr (logging.Handler.
    handleError) for every record it could not write; under systemd stderr is the journal,
    and hours of a full disk flooded it. Now: one line when writes start failing, the dropped
    records counted, and one line in the log (and on stderr) once it can be written again."""
    state = disk.root / "state"
    handlers = configure_logging(state, stderr=False)
    logger = logging.getLogger("sync.daemon")
    path = state / "daemon.log"
    padding = "x" * 200
    try:
        for episode in range(2):  # reported again after a recovery
            logger.info("before %d", episode)
            disk.fill()
            for i in range(300):
                logger.warning("on a full disk %d %d %s", episode, i, padding)
            err = capsys.readouterr().err
            assert "Traceback" not in err
            assert err.splitlines() == [
                f"localstore: cannot write the log {path}: the disk is full; its records are "
                "dropped (and counted) until it can be written again"
            ]
            disk.free()
            logger.info("after %d", episode)
            for h in handlers:
                h.flush()
            lines = path.read_text().splitlines()
            resumed = [line for line in lines if "logging resumed" in line]
            assert len(resumed) == episode + 1, lines[-5:]
            lost = int(re.search(r"(\d+) log record\(s\) were lost", resumed[-1])[1])  # type: ignore[index]
            assert f"while {path} could not be written (since " in resumed[-1]
            assert resumed[-1].endswith(": the disk is full)")
            assert lines[-1].endswith(f"INFO sync.daemon: after {episode}")
            # Every record either reached the file whole or was counted as lost, and every
            # line starts with a timestamp (a write cut short does not glue two records).
            whole = [
                line for line in lines if re.search(rf"full disk {episode} \d+ {padding}$", line)
            ]
            assert len(whole) + lost == 300
            assert all(re.match(r"\d{4}-\d\d-\d\d ", line) for line in lines), lines
            err = capsys.readouterr().err
            assert err.splitlines() == [
                f"localstore: logging to {path} works again; {lost} record(s) lost"
            ]
    finally:
        root = logging.getLogger()
        for h in handlers:
            root.removeHandler(h)
            h.close()


class LoopKilled(BaseException):
    """Ends the sync loop's thread, as an error its per-cycle boundary does not catch."""


def test_a_thread_that_dies_goes_to_the_rotated_log_not_to_stderr(
    inproc_daemon: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under `--detach`, launchd and the Windows task, stderr is `state/daemon.out`, which
    nothing rotates. A thread that ended on an unhandled error had Python print its traceback
    there: a sync loop that a bug ends at once is restarted every 5 minutes at most for as long
    as the daemon runs, so each restart added a traceback to daemon.out (about a megabyte a
    week, for months), besides the engine's own line in daemon.log. Now such a thread's end is
    a log record (daemon.log, rotated): the sync loop's once (it logs it itself), any other
    thread's with its traceback; nothing reaches stderr."""
    # What a daemon process has (pytest's own catcher stands in for it during a test).
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)
    monkeypatch.setattr(daemon_module, "SYNC_RESTART_S", 0.05)
    state = tmp_path / "logs"
    handlers = configure_logging(state, level="INFO", stderr=False)
    try:
        server = MemoryServer()
        d = inproc_daemon(remote_factory=lambda _s: MemoryRemote(server), poll_interval_s=3600)
        for _ in range(3):
            engine = d.daemon.engine
            assert engine is not None

            def die() -> None:
                raise LoopKilled("injected")

            engine._attempt = die
            engine.request_sync()
            assert engine.join(20) and engine.worker_state is WorkerState.STOPPED
            dead = engine
            assert eventually(lambda: d.daemon.engine not in (None, dead), 20)  # noqa: B023

        def other() -> None:
            raise ValueError("a worker's bug")

        worker = threading.Thread(target=other, name="some-worker")
        worker.start()
        worker.join()
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "LoopKilled" not in err and "a worker's bug" not in err
    text = (state / "daemon.log").read_text()
    # One traceback per death: the engine's line has it, the thread's end names it.
    assert text.count("LoopKilled: injected") == 3, text
    assert text.count("sync: the loop ended on an unexpected error") == 3
    assert "thread some-worker ended on an unhandled error" in text
    assert "ValueError: a worker's bug" in text


# Run in the daemon's process once its logging is set up: a library's warning, and an exception
# Python ignores (raised in __del__), each 150 times from one place, as a leak or a deprecated
# call in a loop would. "always": Python's own once-per-place filter is reset by any
# warnings.catch_warnings() a library enters, so it bounds nothing in a months-long process.
_NOISE = """
import sys, warnings
import sync.daemon as _daemon

_configure_logging = _daemon.configure_logging

class Finalized:
    def __del__(self):
        raise ValueError("a __del__ failed")

def _noisy(*args, **kwargs):
    handlers = _configure_logging(*args, **kwargs)
    warnings.simplefilter("always")
    for i in range(150):
        warnings.warn(f"a library's warning (call {i})", UserWarning)
        Finalized()
    return handlers

_daemon.configure_logging = _noisy
"""


def test_warnings_and_ignored_exceptions_go_to_the_rotated_log_not_daemon_out(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    """Python prints a warning, and an exception it has to ignore (in __del__, a finalizer, an
    async generator), on stderr: under `--detach`, launchd and the Windows task that is
    `state/daemon.out`, which nothing rotates, so a daemon running for months grew it without
    bound. They are log records in the rotated daemon.log now, each in full once and then
    counted at its 10th, 100th... occurrence (a flood would rotate everything else away)."""
    home = tmp_path / "h"
    d = spawn_daemon(home, "--no-stderr", prelude=_NOISE)  # its stdout/stderr: daemon.out
    d.wait_ready()
    assert d.stop(signal.SIGTERM) == 0
    out = d.log_path.read_text()
    assert "warning" not in out and "__del__" not in out and "Traceback" not in out, out
    log = (home / "state" / "daemon.log").read_text()
    # In full once: where, the category and text, then counted (with the text of that call).
    assert log.count("UserWarning: a library's warning") == 3, log
    assert re.search(
        r"WARNING py\.warnings: <string>:\d+: UserWarning: a library's warning \(call 0\)\n", log
    )
    assert "a library's warning (call 9) (this warning 10 times so far; logged in full" in log
    assert "a library's warning (call 99) (this warning 100 times so far; logged in full" in log
    assert log.count("Exception ignored in: <function Finalized.__del__") == 3, log
    assert log.count("Traceback") == 1 and log.count("ValueError: a __del__ failed") == 3, log
    assert "(ValueError: a __del__ failed, the same error 100 times so far; logged in" in log


def test_the_process_hooks_are_put_back_when_the_log_closes(tmp_path: Path) -> None:
    """configure_logging replaces process-wide hooks (thread end, ignored exceptions,
    warnings); closing its log file puts back the ones it found, so a daemon run in a test
    process leaves none writing to a closed log. A hook installed after ours is kept."""
    before = (threading.excepthook, sys.unraisablehook, warnings.showwarning)
    with warnings.catch_warnings():
        handlers = configure_logging(tmp_path / "state", stderr=False)
        try:
            installed = (threading.excepthook, sys.unraisablehook, warnings.showwarning)
            assert all(new is not old for new, old in zip(installed, before, strict=True))

            class Leaky:
                def __init__(self, n: int) -> None:
                    self.n = n

                def __del__(self) -> None:
                    raise ValueError(f"close failed {self.n}")

            for n in range(10):  # one place, a different text each time
                Leaky(n)
        finally:
            root = logging.getLogger()
            for h in handlers:
                root.removeHandler(h)
                h.close()
        assert (threading.excepthook, sys.unraisablehook, warnings.showwarning) == before

        def theirs(args: Any) -> None:  # a hook installed after the daemon's: kept
            pass

        handlers = configure_logging(tmp_path / "state", stderr=False)
        sys.unraisablehook = theirs
        try:
            for h in handlers:
                logging.getLogger().removeHandler(h)
                h.close()
            assert sys.unraisablehook is theirs
            assert threading.excepthook is before[0]
        finally:
            sys.unraisablehook = before[1]
    log = (tmp_path / "state" / "daemon.log").read_text()
    assert log.count("Exception ignored in: <function ") == 2, log
    assert log.count("Traceback") == 1 and "ValueError: close failed 0" in log, log
    assert "(ValueError: close failed 9, the same error 10 times so far; logged in full" in log
    assert "close failed 5" not in log


def _start_daemon(home: Path, stdout: Any, stderr: Any) -> DaemonProc:
    """`localstore daemon --no-stderr` on ``home`` with these stdout/stderr, as a service
    manager or a shell redirection gives them; the caller stops it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    proc = subprocess.Popen(
        daemon_command(home, "--no-stderr"),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
        cwd=REPO,
    )
    return DaemonProc(home, proc, home / "state" / "daemon.log")


def test_an_output_file_others_can_read_is_made_private_when_the_daemon_starts(
    tmp_path: Path,
) -> None:
    """launchd opens the agent's StandardOutPath (state/daemon.out) itself, 0666 less its
    umask: 0644 under the usual 022, so everyone on the Mac could read a crash's traceback
    (paths, blueprints), where `--detach` makes its daemon.out 0600. A copied sample plist, an
    agent installed by an older version or a shell redirection leave such a file too: the
    daemon makes its stdout/stderr file 0600 when it starts, keeping what is in it."""
    home = tmp_path / "h"
    out = tmp_path / "daemon.out"
    out.write_text("an older run's line\n")
    out.chmod(0o644)  # not left to this process's umask
    with open(out, "ab") as f:
        d = _start_daemon(home, f, f)  # both to the one file, as the plist has them
    try:
        d.wait_ready()
    finally:
        assert d.stop(signal.SIGTERM) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith("an older run's line\n")
    log = (home / "state" / "daemon.log").read_text()
    assert "the daemon's stdout file was 0o644: made it 0600" in log, log
    assert "could not make" not in log, log


@pytest.mark.parametrize("kind", ["devnull_and_pipe", "fifo", "someone_elses_file"])
def test_a_terminal_pipe_device_or_someone_elses_file_is_left_as_it_is(
    tmp_path: Path, kind: str
) -> None:
    """Only a regular file this user owns is the daemon's to make private: a pipe's, a
    device's (as root, a chmod of /dev/null would change it for the whole machine) or another
    user's file's mode is not, and the daemon starts all the same."""
    home = tmp_path / "h"
    if kind == "someone_elses_file" and os.geteuid() != 0:
        pytest.skip("making a file another user owns needs root")
    opened: list[int] = []
    try:
        if kind == "devnull_and_pipe":
            watched = [Path(os.devnull)]
            stdout, stderr = subprocess.DEVNULL, subprocess.PIPE
        elif kind == "fifo":
            fifo = tmp_path / "out.fifo"
            os.mkfifo(fifo)
            fifo.chmod(0o644)
            # Read-write, so the open does not wait for a reader (Linux and macOS allow it).
            fd = os.open(fifo, os.O_RDWR)
            opened.append(fd)
            watched = [fifo]
            stdout = stderr = fd
        else:
            theirs = tmp_path / "theirs.out"
            theirs.write_text("")
            theirs.chmod(0o644)
            os.chown(theirs, 65534, 65534)  # nobody
            fd = os.open(theirs, os.O_WRONLY | os.O_APPEND)
            opened.append(fd)
            watched = [theirs]
            stdout = stderr = fd
        before = {p: stat.S_IMODE(p.stat().st_mode) for p in watched}
        d = _start_daemon(home, stdout, stderr)
        try:
            d.wait_ready()
        finally:
            assert d.stop(signal.SIGTERM) == 0
            if d.proc.stderr is not None:
                d.proc.stderr.close()
    finally:
        for fd in opened:
            os.close(fd)
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in watched} == before
    # The pipe's mode is the kernel's (0600 already): the log says whether anything was changed.
    log = (home / "state" / "daemon.log").read_text()
    assert "made it 0600" not in log and "could not make" not in log, log
