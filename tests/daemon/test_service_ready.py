"""`localstore daemon` tells systemd it is ready (READY=1 on $NOTIFY_SOCKET) once it serves, and
never when it fails to start, so `systemctl --user start` of the Type=notify unit reports a start
that failed (a home another process syncs, an index it cannot open) instead of "started".

The socket is a real AF_UNIX datagram socket bound here, as systemd binds its own; the sender's
pid is read from its credentials (SO_PASSCRED), as systemd reads it to check NotifyAccess=.
"""

from __future__ import annotations

import shlex
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from localstore.config import Settings
from sync import cli_daemon
from sync.cli_daemon import service_plan
from sync.embed import daemon_running
from tests.conftest import run_cli

from .conftest import (
    DaemonProc,
    daemon_command,
    home_settings,
    process_holding_home_lock,
)
from .test_packaging import PACKAGING, _unit_settings

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and its NOTIFY_SOCKET value (an abstract name: a path under
    tmp_path may pass the 108 bytes of sun_path)."""
    name = f"localstore-test-{tmp_path.name}-{id(tmp_path):x}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind("\0" + name)
        yield sock, "@" + name


def _receive(sock: socket.socket, timeout: float | None) -> tuple[bytes, int]:
    """One datagram and its sender's pid (None timeout: only one already queued)."""
    sock.settimeout(timeout) if timeout is not None else sock.setblocking(False)
    data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
    pids = [
        _UCRED.unpack(cdata[: _UCRED.size])[0]
        for level, kind, cdata in ancillary
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
    ]
    return data, pids[0]


def test_the_daemon_says_ready_once_it_serves(
    spawn_daemon: Callable[..., DaemonProc],
    notify_socket: tuple[socket.socket, str],
    tmp_path: Path,
) -> None:
    sock, address = notify_socket
    daemon = spawn_daemon(tmp_path / "home", env={"NOTIFY_SOCKET": address})

    data, sender = _receive(sock, timeout=60)

    assert data == b"READY=1"
    # From the daemon itself, and only once it answers: daemon.json is written and its pid is
    # the one that is ready.
    assert sender == daemon.proc.pid
    state = daemon_running(home_settings(tmp_path / "home"))
    assert state is not None and state["pid"] == daemon.proc.pid
    assert daemon.stop() == 0
    with pytest.raises(BlockingIOError):
        _receive(sock, timeout=None)  # (told once; nothing on the way out)


# What the one-file build's bootloader (PyInstaller) does: the process the service manager
# starts makes a child that runs Python, forwards the stop signals to it and exits as it does.
_BOOTLOADER = """
import os, signal
_child = os.fork()
if _child:
    for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(_sig, lambda n, _f: os.kill(_child, n))
    os._exit(os.waitstatus_to_exitcode(os.waitpid(_child, 0)[1]))
"""


def _systemd_takes(notify_access: str, sender: int, main_pid: int) -> bool:
    """Whether systemd takes a notification from ``sender`` for a service whose main process is
    ``main_pid`` (systemd.exec(5), NotifyAccess=: ``main``, and ``exec`` outside ExecStartPre
    and the like, only from the main process; ``all`` from any process of the service)."""
    return notify_access == "all" or (notify_access in ("main", "exec") and sender == main_pid)


def test_the_one_file_binarys_ready_notice_is_taken(
    spawn_daemon: Callable[..., DaemonProc],
    notify_socket: tuple[socket.socket, str],
    tmp_path: Path,
) -> None:
    """The one-file build runs as two processes, and READY=1 comes from the second: its
    bootloader, the unit's main process, runs Python as its child. Under NotifyAccess=main
    systemd dropped the notice, and with TimeoutStartSec=infinity a service run from that
    build stayed "activating" for good: `service install` (and every `systemctl --user
    restart`) waited for it until its own timeout and said the daemon had not started."""
    sock, address = notify_socket
    home = tmp_path / "home"
    daemon = spawn_daemon(home, env={"NOTIFY_SOCKET": address}, prelude=_BOOTLOADER)
    try:
        data, sender = _receive(sock, timeout=60)
    finally:
        # (SIGTERM, which the bootloader passes on: the fixture's SIGKILL would leave its child.)
        assert daemon.stop() == 0

    assert data == b"READY=1"
    assert sender != daemon.proc.pid  # (the bootloader's child)
    for text in (
        (PACKAGING / "localstore.service").read_text(),
        service_plan(home_settings(home), str(home), platform="linux").text,
    ):
        (access,) = _unit_settings(text)["NotifyAccess"]
        assert _systemd_takes(access, sender, main_pid=daemon.proc.pid), access


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    with process_holding_home_lock(home / "state"):
        yield


@contextmanager
def _unopenable_index(home: Path) -> Iterator[None]:
    index = home / "data" / "index.db"
    index.unlink()
    index.mkdir()  # (no user can open a directory as a database)
    yield


@pytest.mark.parametrize(
    ("fault", "code"), [(_locked, 75), (_unopenable_index, 1)], ids=["locked", "bad-index"]
)
def test_a_daemon_that_cannot_start_never_says_ready(
    notify_socket: tuple[socket.socket, str],
    tmp_path: Path,
    fault: Callable[[Path], AbstractContextManager[None]],
    code: int,
) -> None:
    sock, address = notify_socket
    home = tmp_path / "home"
    assert run_cli(home, "init").returncode == 0
    with fault(home):
        done = run_cli(home, "daemon", "--no-stderr", env={"NOTIFY_SOCKET": address})
        assert done.returncode == code, done.stderr
    with pytest.raises(BlockingIOError):
        _receive(sock, timeout=None)


def test_the_unit_waits_for_the_daemons_ready_notice(tmp_path: Path) -> None:
    """Type=simple: `systemctl --user start` (and `service install`) said started as soon as the
    process was forked, whatever the daemon did next."""
    home = tmp_path / "h"
    for text in (
        (PACKAGING / "localstore.service").read_text(),
        service_plan(home_settings(home), str(home), platform="linux").text,
    ):
        keys = _unit_settings(text)
        assert keys["Type"] == ["notify"] and keys["NotifyAccess"] == ["all"]
        # (A slow start is waited for, not killed and restarted into the same wait.)
        assert keys["TimeoutStartSec"] == ["infinity"]


def _install_with(monkeypatch: pytest.MonkeyPatch, home: Path, enable: list[list[str]]) -> Any:
    """`service install` on ``home`` whose user manager runs ``enable`` (a reachable one)."""
    real = cli_daemon.service_plan

    def plan(settings: Settings, home_arg: str | None) -> cli_daemon.ServicePlan:
        return replace(real(settings, home_arg), enable=enable, reachable=True)

    monkeypatch.setenv("XDG_CONFIG_HOME", str(home.parent / "config"))
    monkeypatch.setattr(cli_daemon, "service_plan", plan)
    return CliRunner().invoke(cli, ["--home", str(home), "service", "install"])


def test_install_says_why_the_service_did_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manager's start runs the daemon, which exits at once (an app syncs the home): install
    printed "not enabled (a command failed)" and the commands, not what failed or why."""
    held_home = tmp_path / "held"
    with _locked(held_home):
        result = _install_with(monkeypatch, held_home, [daemon_command(held_home)])
    assert result.exit_code == 1
    assert f"`{shlex.join(daemon_command(held_home))}` failed: error: " in result.stderr
    assert "already syncs this home" in result.stderr  # (the manager's words: its stderr)
    assert "the daemon's log says: " in result.stderr
    assert "already syncs this home" in result.stderr.split("the daemon's log says: ")[1]


def test_a_service_start_still_waiting_is_reported_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`systemctl start` of a Type=notify unit waits for READY=1: a start slower than install's
    wait for the command was an uncaught TimeoutExpired."""
    monkeypatch.setattr(cli_daemon, "SERVICE_COMMAND_TIMEOUT_S", 0.2)
    result = _install_with(monkeypatch, tmp_path / "h", [["sleep", "30"]])
    assert result.exit_code == 1 and result.exception is not None
    assert isinstance(result.exception, SystemExit)
    assert "`sleep 30` failed: no answer within 0.2 s (the service may still be starting" in (
        result.stderr
    )
