"""`localstore login` and `logout` as a new user meets them (the README's steps, session 12)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from localstore.cli import cli
from sync.localcloud.stack import LocalCloud

from .conftest import PASSWORD, new_email


def _run(home: Path, *args: str, input: str | None = None) -> Result:
    argv = ["--home", str(home), *args]
    return CliRunner().invoke(cli, argv, input=input, prog_name="localstore")


def test_login_to_an_account_that_does_not_exist_mentions_signup(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    """README's login line has no --signup, and `localstore cloud start` is an empty project:
    the answer was "wrong email or password (check them and retry)" only."""
    args = ("login", "--url", cloud.url, "--anon-key", cloud.anon_key, "--email", new_email())
    r = _run(tmp_path / "h", *args, "--password-stdin", input=PASSWORD + "\n")
    assert r.exit_code == 1
    assert "wrong email or password" in r.stderr and "add --signup" in r.stderr
    r = _run(tmp_path / "h", *args, "--password-stdin", "--signup", input=PASSWORD + "\n")
    assert r.exit_code == 0, r.stderr
    # With --signup the account exists now: a wrong password is no sign-up matter.
    r = _run(tmp_path / "h", *args, "--password-stdin", "--signup", input="wrong-pass\n")
    assert r.exit_code == 1 and "wrong email or password" in r.stderr
    assert "--signup" not in r.stderr


def test_logout_of_a_home_never_logged_in_says_so(cloud: LocalCloud, tmp_path: Path) -> None:
    """It said "the server could not confirm; the local session is gone", a network failure."""
    home = tmp_path / "h"
    assert _run(home, "init").exit_code == 0  # (a home that does not exist is exit 4)
    r = _run(home, "logout")
    assert r.exit_code == 0
    assert "not logged in" in r.stdout and "could not confirm" not in r.stdout
    r = _run(home, "--json", "logout")
    assert json.loads(r.stdout)["was_logged_in"] is False
    args = ("login", "--url", cloud.url, "--anon-key", cloud.anon_key, "--email", new_email())
    assert _run(home, *args, "--password-stdin", "--signup", input=PASSWORD + "\n").exit_code == 0
    r = _run(home, "--json", "logout")
    assert r.exit_code == 0 and json.loads(r.stdout) == {
        "logged_out": True,
        "revoked": True,
        "was_logged_in": True,
    }


def test_the_local_stack_over_http_is_not_warned_about(cloud: LocalCloud, tmp_path: Path) -> None:
    """`localstore cloud` serves http://127.0.0.1: plain http that never leaves this machine."""
    home = tmp_path / "h"
    assert cloud.url.startswith("http://127.")
    args = ("login", "--url", cloud.url, "--anon-key", cloud.anon_key, "--email", new_email())
    r = _run(home, *args, "--password-stdin", "--signup", input=PASSWORD + "\n")
    assert r.exit_code == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr
    r = _run(home, "doctor")
    cloud_line = next(line for line in r.stdout.splitlines() if "] cloud:" in line)
    assert cloud_line.startswith("[ok  ]") and "warning" not in cloud_line, r.stdout
