"""Stopping the daemon and releasing its locks as Windows needs (run here with Windows' behaviour
injected: no Windows machine runs the suite).

- ``localstore daemon --stop`` sent SIGTERM, which on Windows is TerminateProcess: no shut-down
  ran (daemon.json stayed, the sync cycle got no budget, the index was not closed). It now asks
  the daemon through its control API, on every platform; SIGTERM is only the POSIX fallback.
- A daemon.json that a reader holds open past the retries made the shut-down raise before it
  released the home lock.
- Windows frees a byte-range lock left to its handle's close only "eventually":
  ``HomeLock.release()`` and the other lock holders now unlock first.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import sync._daemon_stop as daemon_stop
import sync.cli_daemon as cli_daemon
from localstore import _durable
from localstore import files as fs
from localstore._cred_file import _FileLock
from localstore.cli import cli
from localstore.config import load_settings
from sync.daemon import Daemon
from sync.embed import STATE_FILE, HomeLock, lock_holder, read_state

from .conftest import DaemonProc, InProcessDaemon

OFFLINE = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}


# -- daemon --stop ---------------------------------------------------------------------------------


def test_stop_asks_the_daemon_without_a_signal_as_on_windows(
    spawn_daemon: Callable[..., DaemonProc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "h"
    d = spawn_daemon(home, env=OFFLINE)
    d.wait_ready()
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(daemon_stop, "_SIGTERM_STOPS_CLEANLY", False)  # Windows
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if sig == 0:  # (the POSIX liveness probe behind daemon_running: not a signal)
            return real_kill(pid, sig)
        sent.append((pid, sig))

    monkeypatch.setattr(os, "kill", kill)
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "daemon", "--stop"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"status": "stopped", "pid": d.proc.pid}
    assert sent == []  # (on Windows any os.kill(pid, SIGTERM) is TerminateProcess)
    assert d.proc.wait(15) == 0  # its own clean exit, not a signal's
    log = (home / "state" / "daemon.log").read_text()
    assert "stop requested through the control API" in log and "daemon stopping" in log
    assert read_state(home / "state") is None  # removed by its shut-down
    assert lock_holder(home / "state") is None


def test_stop_falls_back_to_sigterm_on_posix_when_the_daemon_does_not_answer(
    spawn_daemon: Callable[..., DaemonProc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (A daemon from before the `stop` op answers unknown_op; one with a stuck control API none.)
    home = tmp_path / "h"
    d = spawn_daemon(home, env=OFFLINE)
    d.wait_ready()
    monkeypatch.setattr(daemon_stop, "_ask_to_stop", lambda state: False)
    result = CliRunner().invoke(cli, ["--home", str(home), "daemon", "--stop"])
    assert result.exit_code == 0, result.output
    assert d.proc.wait(15) == 0
    assert "stop requested through the control API" not in d.output()


def test_windows_hints_name_taskkill() -> None:
    assert cli_daemon.hard_stop_command(42, platform="win32") == "taskkill /F /PID 42"
    assert cli_daemon.hard_stop_command(42, platform="linux") == "kill -9 42"


# -- a daemon.json held open at shut-down ----------------------------------------------------------


def test_shutdown_releases_the_lock_when_daemon_json_stays_held(
    inproc_daemon: Callable[..., InProcessDaemon],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = inproc_daemon()
    state_dir = d.daemon.settings.paths.state
    real_unlink = os.unlink

    def held(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        if os.fspath(path).endswith(STATE_FILE):  # `localstore status` reading it, for good
            exc = PermissionError(errno.EACCES, "The process cannot access the file")
            exc.winerror = 32  # type: ignore[attr-defined]
            raise exc
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", held)
    prims = _durable.primitives_for("win32", unlink_once=os.unlink)
    monkeypatch.setattr(fs, "_os", _durable.calls_for(prims))
    with caplog.at_level(logging.WARNING, logger="sync.daemon"):
        d.daemon.stop()
        d.thread.join(30)
    assert not d.thread.is_alive() and d.errors == []
    assert lock_holder(state_dir) is None  # (before: the error skipped the lock's release)
    assert d.daemon.stopped_cleanly
    assert any(f"could not remove {STATE_FILE}" in r.getMessage() for r in caplog.records)


# -- Windows byte-range locks ----------------------------------------------------------------------


LK_UNLCK, LK_NBLCK = 0, 2  # msvcrt's values


class WindowsLocks:
    """msvcrt.locking as Windows documents it, for this process's handles: a lock belongs to the
    handle that took it, a second handle is refused (EACCES), unlocking a byte this handle did not
    lock is refused, and closing a handle frees its locks only "eventually" (here: never)."""

    def __init__(self) -> None:
        self.held: dict[tuple[int, int, int], int] = {}  # (dev, ino, offset) -> fd

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, os.lseek(fd, 0, os.SEEK_CUR))
        holder = self.held.get(key)
        if mode == LK_NBLCK:
            if holder is not None:
                raise OSError(errno.EACCES, "Permission denied")
            self.held[key] = fd
        elif mode == LK_UNLCK:
            if holder != fd:
                raise OSError(errno.EACCES, "Permission denied")
            del self.held[key]


@pytest.fixture
def windows_locks(monkeypatch: pytest.MonkeyPatch) -> Iterator[WindowsLocks]:
    model = WindowsLocks()
    locks = _durable.ByteRangeLock(model.locking, nb_lock=LK_NBLCK, unlock=LK_UNLCK, poll=0.001)
    monkeypatch.setattr(_durable, "try_lock", locks.try_lock)
    monkeypatch.setattr(_durable, "lock_taken", locks.lock_taken)
    monkeypatch.setattr(_durable, "unlock", locks.unlock)
    yield model


def test_home_lock_is_free_at_once_after_release(tmp_path: Path, windows_locks) -> None:
    first, second = HomeLock(tmp_path), HomeLock(tmp_path)
    assert first.acquire() and not second.acquire()
    assert lock_holder(tmp_path) == os.getpid()
    first.release()
    # (Before: the handle's close was left to free it; a daemon restarted at once got exit 75.)
    assert second.acquire()
    second.release()
    assert windows_locks.held == {} and lock_holder(tmp_path) is None


def test_credential_file_lock_is_unlocked_before_its_close(tmp_path: Path, windows_locks) -> None:
    lock = _FileLock(tmp_path / "creds.lock")
    with lock.hold():
        assert len(windows_locks.held) == 1
    # Freed at once (before: left to the close, and the next blocking hold waited for it).
    assert windows_locks.held == {}
    with lock.hold():
        pass


# -- Ctrl-Break ------------------------------------------------------------------------------------


def test_ctrl_break_stops_the_daemon_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows' console sends SIGBREAK for Ctrl-Break (Linux has none: SIGUSR1 stands in for it).
    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    daemon = Daemon(load_settings(home=tmp_path), install_signals=True)
    previous = daemon._trap_signals()
    try:
        assert signal.SIGUSR1 in previous
        os.kill(os.getpid(), signal.SIGUSR1)  # (handled before the next statement runs)
        assert daemon._stop.is_set()
    finally:
        daemon._restore_signals(previous)


# -- daemon --detach -------------------------------------------------------------------------------


def test_detached_processes_leave_the_console_on_windows() -> None:
    # start_new_session is POSIX only: on Windows `daemon --detach` (and `cloud start`) left the
    # child attached to the terminal's console, so closing that window ended the daemon.
    from localstore._daemon_state import background_popen_options

    win = background_popen_options("win32")
    assert "start_new_session" not in win
    assert win["creationflags"] & 0x00000008  # DETACHED_PROCESS: no console to close
    assert win["creationflags"] & 0x00000200  # CREATE_NEW_PROCESS_GROUP: no Ctrl-C from it
    assert background_popen_options("linux") == {"start_new_session": True}


@pytest.mark.parametrize("module", ["sync/cli_daemon.py", "sync/cli_cloud.py"])
def test_detaching_commands_take_the_platform_options(module: str) -> None:
    source = (Path(__file__).resolve().parents[2] / module).read_text(encoding="utf-8")
    assert "start_new_session" not in source
    assert "**background_popen_options()" in source
