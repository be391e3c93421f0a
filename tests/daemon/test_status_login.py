"""`localstore status` says when sync is off for want of a login (session 16), through real CLI
processes, a real daemon subprocess and a real login against the local stack.

A new user ran `status` after `init` and read "state: idle (local index)", exit 0: nothing said
that sync needs `localstore login`. A daemon said "offline (daemon: not logged in)" but not how to
log in, and on a machine without a keychain it named the keychain instead, for a home that never
logged in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sync.errors import NotLoggedInError
from sync.localcloud.stack import LocalCloud
from tests.conftest import run_cli

from .conftest import PASSWORD, new_email, process_holding_home_lock

# keyring's own "no backend" choice: what a plain shell without a D-Bus session gets.
NO_KEYCHAIN = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
LOGIN_HINT = NotLoggedInError.hint


def status_json(home: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_cli(home, "--json", "status", env=env)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_a_new_home_says_it_is_not_logged_in_and_how_to_log_in(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert run_cli(home, "init").returncode == 0
    for env in (None, NO_KEYCHAIN):  # (no keychain is no different: nothing was stored)
        human = run_cli(home, "status", env=env)
        assert human.returncode == 0, human.stderr  # (not an error, as documented)
        assert "state: offline (local index: not logged in)" in human.stdout
        assert f"to sync: {LOGIN_HINT}" in human.stdout
        data = status_json(home, env)
        assert data["state"] == "offline" and data["daemon"] is False
        assert data["logged_in"] is False and data["detail"] == "not logged in"
        assert data["hint"] == LOGIN_HINT


def test_a_sync_of_a_home_never_logged_in_without_a_keychain_says_not_logged_in(
    tmp_path: Path,
) -> None:
    """`localstore sync` said "read the cloud project: no usable OS keychain ..." while `status`
    said "not logged in": the person went to fix a keychain before there was a login to keep."""
    home = tmp_path / "h"
    assert run_cli(home, "init").returncode == 0
    for env in (None, NO_KEYCHAIN):
        result = run_cli(home, "sync", env=env)
        assert result.returncode == 1, result.stderr
        assert result.stderr == (
            f"error: this home is not logged in to a cloud project ({LOGIN_HINT})\n"
        )


def test_a_logged_in_home_says_nothing_of_a_login_but_names_a_keychain_it_cannot_read(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    home = tmp_path / "h"
    login = run_cli(
        home,
        *("login", "--url", cloud.url, "--anon-key", cloud.anon_key, "--email", new_email()),
        *("--password-stdin", "--signup"),
        stdin=PASSWORD + "\n",
    )
    assert login.returncode == 0, login.stderr
    human = run_cli(home, "status")
    assert human.returncode == 0, human.stderr
    assert "state: idle (local index)" in human.stdout
    assert "not logged in" not in human.stdout and "to sync:" not in human.stdout
    data = status_json(home)
    assert data["state"] == "idle" and data["logged_in"] is True
    assert "hint" not in data and data.get("detail") is None

    # The same home where the keychain cannot be reached: the session is out of reach.
    data = status_json(home, NO_KEYCHAIN)
    assert data["state"] == "offline" and data["logged_in"] is False
    assert "keychain" in data["detail"] and "not logged in" not in data["detail"]
    human = run_cli(home, "status", env=NO_KEYCHAIN)
    assert human.returncode == 0, human.stderr
    assert f"state: offline (local index: {data['detail']})" in human.stdout
    assert f"to sync: {data['hint']}" in human.stdout and data["hint"]
    # A sync there names the keychain too, not a login it has.
    result = run_cli(home, "sync", env=NO_KEYCHAIN)
    assert result.returncode == 1 and "keychain" in result.stderr
    assert "not logged in" not in result.stderr


def test_a_daemon_without_a_login_shows_how_to_log_in(spawn_daemon: Any, tmp_path: Path) -> None:
    home = tmp_path / "h"
    d = spawn_daemon(home)
    d.wait_ready()
    human = run_cli(home, "status")
    assert human.returncode == 0, human.stderr
    assert "state: offline (daemon: not logged in)" in human.stdout
    assert f"to sync: {LOGIN_HINT}" in human.stdout
    data = status_json(home)
    assert data["daemon"] is True and data["logged_in"] is False
    assert data["detail"] == "not logged in" and data["hint"] == LOGIN_HINT
    assert d.stop() == 0


def test_a_daemon_without_a_keychain_on_a_home_never_logged_in_says_not_logged_in(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    """It said "sync is off: read the cloud project: no usable OS keychain ...", so a new user
    on a headless machine went to fix a keychain they had no use for yet."""
    home = tmp_path / "h"
    d = spawn_daemon(home, env=NO_KEYCHAIN)
    d.wait_ready()
    data = status_json(home)
    assert data["daemon"] is True and data["state"] == "offline"
    assert data["detail"] == "not logged in" and data["hint"] == LOGIN_HINT
    assert d.stop() == 0


def test_an_app_syncing_in_process_is_not_said_to_be_not_logged_in(tmp_path: Path) -> None:
    """An app holding the home's lock syncs with a remote of its own, maybe with no login here:
    status cannot tell, so it says nothing of a login."""
    home = tmp_path / "h"
    assert run_cli(home, "init").returncode == 0
    with process_holding_home_lock(home / "state"):
        human = run_cli(home, "status")
        assert human.returncode == 0, human.stderr
        assert "not logged in" not in human.stdout and "to sync:" not in human.stdout
        data = status_json(home)
    assert "logged_in" not in data and data["state"] == "idle"


def test_a_sync_request_to_a_daemon_without_a_keychain_gives_the_keychain_hint(
    cloud: LocalCloud, spawn_daemon: Any, tmp_path: Path
) -> None:
    """A logged-in home whose daemon cannot read the keychain: `localstore sync` said "log in
    with `localstore login`", though the login was there and only the keychain was out of
    reach (status gave the keychain's hint)."""
    home = tmp_path / "h"
    login = run_cli(
        home,
        *("login", "--url", cloud.url, "--anon-key", cloud.anon_key, "--email", new_email()),
        *("--password-stdin", "--signup"),
        stdin=PASSWORD + "\n",
    )
    assert login.returncode == 0, login.stderr
    d = spawn_daemon(home, env=NO_KEYCHAIN)
    d.wait_ready()
    data = status_json(home)
    assert data["daemon"] is True and data["logged_in"] is False
    assert "keychain" in data["detail"] and data["hint"]
    result = run_cli(home, "sync")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "keychain" in result.stderr and data["hint"] in result.stderr, result.stderr
    assert "localstore login" not in result.stderr, result.stderr
    assert d.stop() == 0
