"""`localstore daemon --detach` without --home or LOCALSTORE_HOME: the platform folders' home.

The detached child was always given ``--home <state folder's parent>``: right for a home folder
(its state is ``<home>/state``), wrong for the platform folders, whose state folder is
``~/.local/state/LocalStore``. The child then ran on a second, new home at ``~/.local/state``
(blueprints, index and all), the parent waited the full minute for a daemon.json that came in the
other home's state folder, said "the daemon did not become ready in time" and stopped it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localstore.config import load_settings
from sync.embed import daemon_running

CLI = [sys.executable, "-c", "from localstore.cli import main; main()"]


@pytest.fixture
def platform_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment whose platform folders are under tmp_path (no LocalStore home set); every
    daemon a test starts there (in the right home or the wrong one) is stopped after."""
    user = tmp_path / "user"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALSTORE_", "XDG_"))}
    env.update(
        HOME=str(user),
        XDG_DATA_HOME=str(user / "share"),
        XDG_CONFIG_HOME=str(user / "config"),
        XDG_CACHE_HOME=str(user / "cache"),
        XDG_STATE_HOME=str(user / "state"),
        XDG_DOCUMENTS_DIR=str(user / "Documents"),
    )
    if "XDG_RUNTIME_DIR" in os.environ:  # (the session's D-Bus and keychain live there)
        env["XDG_RUNTIME_DIR"] = os.environ["XDG_RUNTIME_DIR"]
    yield env
    # (platformdirs reads os.environ, not load_settings' environ: the CLI finds this home.)
    subprocess.run([*CLI, "daemon", "--stop"], env=env, capture_output=True, timeout=60)
    # The wrong home the child ran on before the fix (the parent stops it only at its timeout).
    state = daemon_running(load_settings(home=user / "state", environ={}))
    if state is not None:
        os.kill(int(state["pid"]), signal.SIGKILL)


def test_detach_starts_the_daemon_of_the_platform_folders_home(
    platform_env: dict[str, str], tmp_path: Path
) -> None:
    user = tmp_path / "user"
    init = subprocess.run([*CLI, "init"], env=platform_env, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    done = subprocess.run(
        [*CLI, "daemon", "--detach"],
        env=platform_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "daemon started" in done.stdout
    # Its files are in the platform state folder, and no second home was made beside it.
    assert (user / "state" / "LocalStore" / "daemon.json").exists()
    assert not (user / "state" / "blueprints").exists()
    assert not (user / "state" / "state").exists()
    status = subprocess.run(
        [*CLI, "--json", "daemon", "--stop"], env=platform_env, capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
