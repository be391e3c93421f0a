"""A new user's first run, second pass (session 16): real `localstore` processes.

What tests/test_cli_firstrun.py left: more commands that made a home at a mistyped --home, a
status that said "idle" for a home that cannot sync, and error messages that named no file, no
minimum or no fix. Each test failed before its fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The first pass's helpers: a real `localstore` process per call, keyring's "no backend" choice.
from tests.test_cli_firstrun import NO_KEYCHAIN, cli


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    saved = cli(h, "save", "a/x", stdin="n: 1\n")
    assert saved.returncode == 0, saved.stderr
    return h


@pytest.mark.parametrize(
    "args",
    [
        ("logout",),
        ("cred", "ls"),
        ("cred", "get", "x"),
        ("cred", "rm", "x"),
        ("daemon", "--pause"),
        ("daemon", "--resume"),
        ("sync",),
        ("sync", "--verify"),
        ("conflicts",),
        ("status",),
        ("history", "a/x"),
        ("check",),
    ],
)
def test_a_command_that_needs_a_home_does_not_make_one_at_a_typo(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """`logout`, `cred ls/get/rm`, `daemon --pause/--resume` and `sync` at a mistyped --home
    made a home there (folders, an index, a pause record), then answered for that empty home:
    "logged out", an empty list, "paused", or a keychain error. None of them can do anything
    for a home that does not exist (only `login` makes a home syncable)."""
    typo = tmp_path / "homee"
    done = cli(typo, *args, env=NO_KEYCHAIN)
    assert done.returncode == 4, done.stderr
    assert f"no LocalStore home at {typo}" in done.stderr
    assert not typo.exists(), sorted(str(p) for p in typo.rglob("*"))


@pytest.mark.parametrize("args", [("init",), ("save", "a/x")])
def test_the_commands_that_make_a_home_still_do(tmp_path: Path, args: tuple[str, ...]) -> None:
    fresh = tmp_path / "fresh"
    done = cli(fresh, *args, stdin="n: 1\n")
    assert done.returncode == 0, done.stderr
    assert (fresh / "blueprints").is_dir()


def test_a_short_id_prefix_says_the_minimum(home: Path) -> None:
    """`show 3f` said "no blueprint matches '3f'" while an id started with 3f: a prefix needs 4
    characters, which nothing said (not the error, not --help)."""
    bp_id = json.loads(cli(home, "--json", "show", "a/x", "--meta").stdout)["id"]
    done = cli(home, "show", bp_id[:2])
    assert done.returncode == 4, done.stderr
    assert "an id prefix needs at least 4 characters" in done.stderr, done.stderr
    assert cli(home, "show", bp_id[:4]).returncode == 0
    assert "at least 4 characters" in cli(home, "--help").stdout
    # A path that is not there is still "no blueprint matches", with no word of prefixes.
    missing = cli(home, "show", "a/nothing")
    assert missing.returncode == 4 and "prefix" not in missing.stderr


def test_a_localstore_home_that_is_a_file_is_said_as_for_the_flag(tmp_path: Path) -> None:
    """`--home FILE` says the home is a file; LOCALSTORE_HOME=FILE said "cannot read
    FILE/config/config.yaml: Not a directory (check that this user may read it...)", a
    permissions hunt for a variable set to the wrong path."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a home\n")
    done = subprocess.run(
        [sys.executable, "-c", "from localstore.cli import main; main()", "ls"],
        capture_output=True,
        text=True,
        env={**_env_without_localstore(), "LOCALSTORE_HOME": str(a_file)},
        check=False,
    )
    # Exit 1, as for every other bad LOCALSTORE_* value (a relative LOCALSTORE_HOME included):
    # the command line itself is right (exit 2 is for that).
    assert done.returncode == 1, done.stderr
    assert f"LOCALSTORE_HOME ({a_file}) is a file, not a folder" in done.stderr, done.stderr
    assert "Not a directory" not in done.stderr
    assert a_file.read_text() == "not a home\n"


def _env_without_localstore() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}


def test_a_truncated_bundle_is_named_and_said_to_be_damaged(home: Path, tmp_path: Path) -> None:
    """An import of a bundle cut short (a download or copy interrupted) said only "not a zip
    file (no end of central directory)": no file named, no word of what to do."""
    bundle = tmp_path / "all.lsbundle"
    assert cli(home, "export", "-o", str(bundle)).returncode == 0
    cut = tmp_path / "cut.lsbundle"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    done = cli(tmp_path / "other", "import", str(cut))
    assert done.returncode == 1, done.stderr
    assert f"{cut} is damaged or truncated" in done.stderr, done.stderr
    assert "interrupted" in done.stderr and "central directory" not in done.stderr


def test_a_nul_in_the_yaml_is_said_with_its_line_and_column(home: Path) -> None:
    """`save` of YAML holding a NUL said PyYAML's 'unacceptable character #x0000: control
    characters are not allowed in "<unicode string>", position 5': a source name that means
    nothing to the user and a position nobody can open a file at."""
    done = cli(home, "save", "a/y", stdin="a: 1\nb: x\x00y\n")
    assert done.returncode == 1, done.stderr
    assert "control character (NUL, U+0000) at line 2, column 5" in done.stderr, done.stderr
    assert "blueprints must be text" in done.stderr
    assert "<unicode string>" not in done.stderr and "position" not in done.stderr


def test_doctor_names_a_file_in_the_way_of_the_home(tmp_path: Path) -> None:
    """With `data` a regular file, doctor said to make data/credentials.backend readable and to
    run `init`, which then failed on the very file: it names the file and says to move it."""
    h = tmp_path / "h"
    h.mkdir()
    (h / "data").write_text("in the way\n")
    done = cli(h, "--json", "doctor", env=NO_KEYCHAIN)
    assert done.returncode == 3, done.stderr
    findings = {f["check"]: f for f in json.loads(done.stdout)["checks"]}
    for name in ("keychain", "index"):
        assert f"{h / 'data'} is a file where the home needs a folder" in findings[name]["detail"]
        assert "move that file away" in findings[name]["fix"], findings[name]
    assert "credentials.backend" not in done.stdout
    assert (h / "data").read_text() == "in the way\n"
