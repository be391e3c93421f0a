"""Fixtures for the daemon: real daemon subprocesses on temporary homes, the local stack, the real
keychain (run under scripts/_in_keyring_session), and in-process daemons for control API tests.

Every process, thread and port a test starts is stopped by the fixture that made it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keyring
import pytest

from localstore.config import Settings, load_settings
from localstore.credentials import unusable_reason
from sync.control import ControlClient
from sync.daemon import Daemon
from sync.embed import daemon_running, lock_holder
from sync.localcloud.cluster import PostgresNotFoundError, find_bindir
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import login
from tests.conftest import eventually  # noqa: F401  (re-exported for the daemon tests)

PASSWORD = "correct-horse-battery"
READY_TIMEOUT_S = 60.0
REPO = Path(__file__).resolve().parents[2]


def require_keychain() -> None:
    reason = unusable_reason(keyring.get_keyring())
    if reason:
        pytest.fail(
            f"the daemon tests need the OS keychain ({reason}); run them with "
            "dbus-run-session -- bash scripts/_in_keyring_session .venv/bin/python -m pytest ..."
        )


@pytest.fixture(scope="session")
def cloud() -> Iterator[LocalCloud]:
    """This worker's local Supabase-compatible stack."""
    try:
        find_bindir()
    except PostgresNotFoundError as exc:
        pytest.fail(f"the daemon tests need PostgreSQL: {exc}")
    require_keychain()
    with LocalCloud() as lc:
        yield lc


def new_email() -> str:
    return f"dm-{uuid.uuid4().hex[:12]}@example.test"


def home_settings(path: Path, **overrides: Any) -> Settings:
    """Settings of a test home; the environment (LOCALSTORE_*) is ignored on purpose."""
    return load_settings(home=path, environ={}, **overrides)


def log_in(settings: Settings, cloud: LocalCloud, email: str) -> None:
    """Sign the home in (signing the user up on first use)."""
    login(settings, cloud.url, cloud.anon_key, email, PASSWORD, signup=True)


@dataclass
class DaemonProc:
    """A `localstore daemon` subprocess on one home."""

    home: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    clients: list[ControlClient] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return home_settings(self.home)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """daemon.json of this process once it serves; fails the test if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = daemon_running(self.settings)
            if state is not None and state.get("pid") == self.proc.pid:
                return state
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited ({self.proc.returncode}):\n{self.output()}")
            time.sleep(0.05)
        pytest.fail(f"the daemon did not become ready:\n{self.output()}")

    def client(self, timeout: float = 30.0) -> ControlClient:
        c = ControlClient.connect(self.settings, timeout=timeout)
        self.clients.append(c)
        return c

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no output)"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        for c in self.clients:
            c.close()
        self.clients.clear()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


@contextmanager
def python_process(code: str, *args: str, ready: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process running ``code`` (``args`` its sys.argv[1:]) in the repository, once it
    has printed the line ``ready``; killed after, its pipes closed (stdin too: a process may
    wait on it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == ready
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


@contextmanager
def process_holding_home_lock(state_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the home's lock (as an app's start_sync does); killed after."""
    code = (
        "import time; from sync.embed import HomeLock; "
        f"HomeLock({str(state_dir)!r}).acquire(); print('held', flush=True); time.sleep(600)"
    )
    with python_process(code, ready="held") as proc:
        yield proc


def daemon_command(home: Path, *extra: str, prelude: str = "") -> list[str]:
    """The command line of `localstore daemon` on ``home``; ``prelude``, Python code run before
    the CLI in its process, injects faults."""
    return [
        sys.executable,
        "-c",
        f"{prelude}\nfrom localstore.cli import main; main()",
        "--home",
        str(home),
        "daemon",
        "--log-level",
        "DEBUG",
        *extra,
    ]


@pytest.fixture
def spawn_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProc]]:
    """Start daemon subprocesses; all are stopped (SIGKILL as a last resort) after the test."""
    made: list[DaemonProc] = []

    def spawn(
        home: Path, *extra: str, env: dict[str, str] | None = None, prelude: str = ""
    ) -> DaemonProc:
        log_path = tmp_path / f"daemon-{len(made)}.out"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
        full_env.update(env or {})
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                daemon_command(home, *extra, prelude=prelude),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=REPO,
            )
        d = DaemonProc(home, proc, log_path)
        made.append(d)
        return d

    yield spawn
    for d in made:
        d.stop(signal.SIGKILL if d.proc.poll() is None else signal.SIGTERM)


@dataclass
class InProcessDaemon:
    """A Daemon running on a thread of the test process (offline unless given a remote)."""

    daemon: Daemon
    thread: threading.Thread
    errors: list[BaseException]

    @property
    def state(self) -> dict[str, Any]:
        state = daemon_running(self.daemon.settings)
        assert state is not None
        return state

    def client(self, timeout: float = 10.0) -> ControlClient:
        return ControlClient(self.state["port"], self.state["token"], timeout=timeout)


def run_on_thread(daemon: Daemon) -> InProcessDaemon:
    """Start ``daemon.run()`` on a thread and wait until it is ready (the caller stops it)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-daemon", daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not daemon.wait_ready(0.05):
        if errors or time.monotonic() > deadline:
            thread.join(10)
            raise AssertionError(f"the daemon did not start: {errors}")
    return InProcessDaemon(daemon, thread, errors)


@pytest.fixture
def inproc_daemon(tmp_path: Path) -> Iterator[Callable[..., InProcessDaemon]]:
    """Run Daemon.run() on a thread; stopped and joined after the test."""
    made: list[InProcessDaemon] = []

    def start(home: Path | None = None, **kwargs: Any) -> InProcessDaemon:
        settings = home_settings(home or tmp_path / f"home-{len(made)}")
        made.append(run_on_thread(Daemon(settings, install_signals=False, **kwargs)))
        return made[-1]

    yield start
    for d in made:
        d.daemon.stop()
        d.thread.join(30)
        assert not d.thread.is_alive(), "the in-process daemon did not stop"
        assert lock_holder(d.daemon.settings.paths.state) is None


def write_external(root: Path, rel: str, text: str) -> None:
    """Save like an editor does: write a temp file, then rename it over the target."""
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.swp~")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


class WatcherKilled(BaseException):
    """Ends a watcher's worker thread, as an error its per-item boundary does not catch."""


def kill_watcher(watcher: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: make ``watcher``'s worker thread die (its next step raises) and wait."""

    def die() -> None:
        raise WatcherKilled("injected")

    monkeypatch.setattr(watcher, "_process_due", die)
    watcher._q.put(("noop",))  # wake the worker
    assert watcher._worker is not None
    watcher._worker.join(10)
    assert not watcher._worker.is_alive()
