"""A new user's first run on a fresh machine (session 16): real `localstore` processes.

No home yet, a home that is a file, no keychain, a bundle written where no file should go. Each
test is one thing such a run got wrong: a traceback-free but wrong answer, a wrong exit code, or
state changed by a command that failed.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import keyring.core
import pytest
from click.testing import CliRunner

from localstore.cli import cli as cli_group
from tests.conftest import run_cli

# keyring's own "no backend" choice: what a plain shell without a D-Bus session gets.
NO_KEYCHAIN = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}


def cli(
    home: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(home, *args, env=env, stdin=stdin)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    saved = cli(h, "save", "a/x", stdin="n: 1\n")
    assert saved.returncode == 0, saved.stderr
    return h


@pytest.mark.parametrize("args", [("rm", "a/x"), ("mv", "a/x", "b/x"), ("restore", "a/x", "1")])
def test_a_command_that_needs_a_blueprint_does_not_make_a_home_at_a_typo(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """`localstore --home TYPO rm a/x` made a whole home at TYPO (folders and an index), then
    said "no blueprint matches": a command that acts on an existing blueprint can never succeed
    in a home that does not exist, so it says so (exit 4) as the reading commands do."""
    typo = tmp_path / "homee"
    done = cli(typo, *args)
    assert done.returncode == 4, done.stderr
    assert f"no LocalStore home at {typo}" in done.stderr
    assert not typo.exists(), sorted(str(p) for p in typo.rglob("*"))


def test_watch_does_not_make_a_home_at_a_typo(tmp_path: Path) -> None:
    """`watch` on a mistyped home made it and then watched the new, empty folder for ever."""
    typo = tmp_path / "homee"
    done = cli(typo, "watch")
    assert done.returncode == 4, done.stderr
    assert "no LocalStore home" in done.stderr
    assert not typo.exists()


@pytest.mark.parametrize("args", [("--json", "ls"), ("--json", "--bogus", "ls")])
def test_a_usage_error_in_the_global_options_is_json_with_json(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """docs/cli.md: with --json bad usage is one JSON object too. A --home that is a file, or an
    unknown global option, printed click's usage text: the group's own options are parsed before
    the code that turned usage errors into JSON ran."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a home\n")
    done = cli(a_file, *args)
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stderr)["error"]
    assert error["exit_code"] == 2 and error["message"], error
    assert a_file.read_text() == "not a home\n"


def test_login_without_a_keychain_fails_before_signing_in(tmp_path: Path) -> None:
    """The design: with no usable keychain, fail with a clear error naming the fix. `login`
    signed in first (to a server that answers: a session left behind unrevoked, and the home's
    account recorded) and only then found nowhere to keep the session; with a server that does
    not answer, it said "cannot reach", never the keychain. Checked before the network now."""
    home = tmp_path / "h"
    done = run_cli(
        home,
        "login",
        "--url",
        "http://127.0.0.1:9",  # (the discard port: nothing answers there)
        "--anon-key",
        "k",
        "--email",
        "a@example.com",
        "--password-stdin",
        env=NO_KEYCHAIN,
        stdin="pw\n",
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "no usable OS keychain" in done.stderr, done.stderr
    assert "LOCALSTORE_KEYCHAIN_FILE_FALLBACK" in done.stderr  # the fix is named
    assert "cannot reach" not in done.stderr


def test_export_does_not_replace_a_pipe_or_device_with_a_file(home: Path, tmp_path: Path) -> None:
    """`export -o /dev/full` (as root) said "exported" and replaced the device node with a
    regular file: the bundle is written beside the destination and renamed over it. A pipe or
    device at -o is refused, and left as it was."""
    fifo = tmp_path / "out.pipe"
    os.mkfifo(fifo)
    for args in (("export", "-o", str(fifo)), ("export", "--yaml", "-o", str(fifo), "a/x")):
        done = cli(home, *args)
        assert done.returncode == 2, done.stderr  # (-o names no file: bad usage)
        assert "is not a regular file" in done.stderr, done.stderr
        assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out.pipe"]  # no temp file left


def test_login_at_a_terminal_without_a_keychain_fails_before_asking_for_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `cred set` does: nobody types a password only to learn there is no keychain."""
    # keyring picks its backend once per process: forget it so it reads PYTHON_KEYRING_BACKEND,
    # as a fresh `localstore` process would (monkeypatch puts the chosen one back afterwards).
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)
    monkeypatch.setenv(*next(iter(NO_KEYCHAIN.items())))
    argv = ["--home", str(tmp_path / "h"), "login", "--url", "http://127.0.0.1:9"]
    argv += ["--anon-key", "k", "--email", "a@example.com"]
    done = CliRunner().invoke(cli_group, argv, input="pw\n")
    assert done.exit_code == 1, done.output
    assert "Password" not in done.output, done.output  # (the prompt; CliRunner echoes it)
    assert "no usable OS keychain" in done.output and "cannot reach" not in done.output
