"""Adversarial review of the CLI's error handling (session 7): real `localstore` processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli


def cli(
    home: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(home, *args, env=env, stdin=stdin)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    assert cli(h, "init").returncode == 0
    saved = cli(h, "save", "a/x", stdin="n: 1\n")
    assert saved.returncode == 0, saved.stderr
    return h


@pytest.mark.parametrize("value", ["2", "all", "verbose"])
def test_a_debug_variable_of_any_value_never_breaks_a_command(home: Path, value: str) -> None:
    """LOCALSTORE_DEBUG was also the --debug flag's envvar, which click parses as a boolean: any
    other value (2, all) made every command, even `ls`, a usage error (exit 2)."""
    done = cli(home, "--json", "ls", env={"LOCALSTORE_DEBUG": value})
    assert done.returncode == 0, done.stderr
    assert [b["path"] for b in json.loads(done.stdout)] == ["a/x.blueprint.yaml"]


@pytest.mark.parametrize("value", ["false", "no", "OFF"])
def test_a_debug_variable_that_says_off_is_off(
    home: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_debug_mode` read LOCALSTORE_DEBUG=false as on (anything but "" and "0")."""
    from localstore.cli import DEBUG_ENV, _debug_mode

    monkeypatch.setenv(DEBUG_ENV, value)
    assert _debug_mode() is False
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert _debug_mode() is True


@pytest.mark.parametrize(
    "args",
    [("show",), ("ls", "--bogus"), ("no-such-command",), ("ls", "--limit", "many")],
)
def test_usage_errors_are_json_with_json(home: Path, args: tuple[str, ...]) -> None:
    """docs/cli.md: with --json an error is one JSON object on stderr. A usage error printed
    click's text (Usage: ... Error: ...), which a script that asked for JSON cannot parse."""
    done = cli(home, "--json", *args)
    assert done.returncode == 2
    error = json.loads(done.stderr)["error"]
    assert error["exit_code"] == 2 and error["message"]
    # Without --json the usage text stays as click prints it.
    plain = cli(home, *args)
    assert plain.returncode == 2 and "Usage:" in plain.stderr
