"""How the platform folders' home (no --home, no LOCALSTORE_HOME) is named to a person.

A home folder is named by its path. The platform folders' home has no folder of its own, and was
named by the parent of one of its folders: daemon.json's and the daemon's status ``home``, the
"daemon ready" log line and DaemonNotRunningError said ``~/.local/state`` (the state folder's
parent), the read-only messages ``~/.local/share`` (the data folder's): folders that hold other
programs' files, not this home. Each now names the home as ``home_name`` does: its blueprints
folder, with where its data and state are.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import localstore
from localstore.config import Settings, home_name, load_settings
from sync.control import ControlClient, DaemonNotRunningError
from tests.conftest import bound_by_file_modes
from tests.store.test_read_only_home import freeze, thaw

from .conftest import REPO, run_on_thread

# The opt-in encrypted credentials file and no keychain, for `cred ls` in a process of its own.
FILE_BACKEND = {
    "LOCALSTORE_KEYCHAIN_FILE_FALLBACK": "1",
    "LOCALSTORE_KEYCHAIN_PASSPHRASE": "pw",
    "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
}


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user whose platform folders are under tmp_path, with no LocalStore home set (platformdirs
    reads os.environ, so this process and the CLI processes it starts both find them there)."""
    user = tmp_path / "user"
    for name in list(os.environ):
        if name.startswith(("LOCALSTORE_", "XDG_")) and name != "XDG_RUNTIME_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(user))
    for name, sub in (("DATA", "share"), ("CONFIG", "config"), ("CACHE", "cache")):
        monkeypatch.setenv(f"XDG_{name}_HOME", str(user / sub))
    monkeypatch.setenv("XDG_STATE_HOME", str(user / "state"))
    monkeypatch.setenv("XDG_DOCUMENTS_DIR", str(user / "Documents"))
    return user


def _platform_name(user: Path) -> str:
    """The platform home's name, spelt out here (not taken from home_name, which is tested)."""
    return (
        f"{user / 'Documents' / 'LocalStore' / 'Blueprints'} (the default home: data in "
        f"{user / 'share' / 'LocalStore'}, state in {user / 'state' / 'LocalStore'})"
    )


def test_home_name(user: Path, tmp_path: Path) -> None:
    assert load_settings(environ={}).home is None  # (the platform folders indeed)
    assert home_name(load_settings(environ={})) == _platform_name(user)
    folder = tmp_path / "a home"
    assert home_name(load_settings(home=folder, environ={})) == str(folder.resolve())


def test_the_daemon_names_the_platform_home(user: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sync.daemon import Daemon

    caplog.set_level(logging.INFO, logger="sync.daemon")
    d = run_on_thread(Daemon(load_settings(environ={}), install_signals=False))
    try:
        assert d.daemon.settings.paths.state == user / "state" / "LocalStore"
        with d.client() as c:
            status = c.status()["daemon"]
        ready = [r.getMessage() for r in caplog.records if "daemon ready" in r.getMessage()]
        assert len(ready) == 1, ready
        logged = re.search(r", home (.*), sync ", ready[0])
        # daemon.json's, the status', the log line's.
        named = (d.state["home_name"], status["home_name"], logged.group(1) if logged else ready[0])
        assert named == (_platform_name(user),) * 3
        # For a script: no home folder, so no --home to pass (it was the state folder's parent).
        assert d.state["home"] is None and status["home"] is None
    finally:
        d.daemon.stop()
        d.thread.join(30)
    assert not d.thread.is_alive(), "the in-process daemon did not stop"


def test_no_daemon_names_the_platform_home(user: Path, tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunningError) as caught:
        ControlClient.connect(load_settings(environ={}))
    assert caught.value.message == f"no daemon runs for {_platform_name(user)}"
    # A home folder is named by its path, as before.
    folder = tmp_path / "home"
    with pytest.raises(DaemonNotRunningError) as caught:
        ControlClient.connect(load_settings(home=folder, environ={}))
    assert caught.value.message == f"no daemon runs for {folder}"


@pytest.fixture
def read_only_platform_home(user: Path) -> Iterator[Settings]:
    """The platform folders' home with a blueprint in it, every write bit off (a snapshot)."""
    with localstore.open() as s:
        s.save("team/deploy", "v: 1\n")
    freeze(user)
    try:
        yield load_settings(environ={})
    finally:
        thaw(user)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI without --home, in a process that file modes bind (even as root)."""
    cmd = bound_by_file_modes([sys.executable, "-c", "from localstore.cli import main; main()"])
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("rm", "team/deploy"), "error: cannot delete a blueprint: the home {name} is read-only ("),
        (("ls",), "note: opened {name} read-only ("),
        (("cred", "ls"), "note: opened {name} read-only ("),
    ],
    ids=["rm", "ls", "cred-ls"],
)
def test_read_only_messages_name_the_platform_home(
    user: Path, read_only_platform_home: Settings, args: tuple[str, ...], expected: str
) -> None:
    done = _cli(*args, env=FILE_BACKEND)
    assert done.returncode == (1 if args[0] == "rm" else 0), done.stderr
    assert done.stderr.startswith(expected.format(name=_platform_name(user))), done.stderr
    assert f"this user may not write {user / 'share' / 'LocalStore'})" in done.stderr


def test_doctor_names_the_read_only_platform_home(
    user: Path, read_only_platform_home: Settings
) -> None:
    done = _cli("--json", "doctor", env=FILE_BACKEND)
    index = [f for f in json.loads(done.stdout)["checks"] if f["check"] == "index"]
    assert index[0]["detail"].startswith(f"the home {_platform_name(user)} is read-only ("), index


def test_no_home_yet_names_the_platform_home(user: Path) -> None:
    done = _cli("ls")
    assert done.returncode != 0
    assert done.stderr.startswith(f"error: no LocalStore home at {_platform_name(user)}"), (
        done.stderr
    )
