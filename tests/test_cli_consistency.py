"""CLI consistency fixes from a user's sweep (session 24): exit codes per docs/cli.md and error
lines that say what to do, in this command's words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localstore.cli import cli
from localstore.store import BlueprintStore


@pytest.fixture
def run(home: Path):
    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None) -> Result:
        return runner.invoke(cli, ["--home", str(home), *args], input=input)

    assert invoke("save", "team/flow", input="a: 1\n").exit_code == 0
    return invoke


def _one_error_line(done: Result, code: int) -> str:
    assert done.exit_code == code, (done.output, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def _save_with_ids(home: Path, count: int) -> None:
    from localstore.config import load_settings

    with BlueprintStore(load_settings(home=str(home))) as store:
        for k in range(count):
            store.save(f"dup/b{k}", "a: 1\n", id=f"abcd{k:04x}-0000-4000-8000-000000000000")


def test_an_ambiguous_id_prefix_is_bad_usage_naming_the_blueprints(run, home: Path) -> None:
    """`show abcd` with two ids starting abcd exited 1 (an error a script may retry) and did not
    say which blueprints it matched."""
    _save_with_ids(home, 2)
    err = _one_error_line(run("show", "abcd"), 2)
    assert "dup/b0.blueprint.yaml, dup/b1.blueprint.yaml" in err
    assert "more characters of the id, or the blueprint's path" in err
    assert json.loads(run("--json", "rm", "abcd").stderr)["error"]["exit_code"] == 2
    assert run("show", "dup/b1").exit_code == 0  # (rm removed nothing)


def test_an_ambiguous_prefix_of_many_names_five_and_counts_the_rest(run, home: Path) -> None:
    _save_with_ids(home, 8)
    err = _one_error_line(run("history", "abcd"), 2)
    assert "matches 8 blueprints: dup/b0.blueprint.yaml, " in err
    assert "dup/b4.blueprint.yaml and 3 more" in err and "dup/b5" not in err


@pytest.mark.parametrize("args", [["save", "team/flow", "-f"], ["import"]])
def test_a_missing_input_file_is_bad_usage(run, tmp_path: Path, args: list[str]) -> None:
    """A missing `save -f FILE` exited 1 and a missing `import FILE` 4, where a folder given for
    the same `-f` (click's check) and a missing `conflicts resolve --take FILE` exit 2."""
    missing = str(tmp_path / "nope.yaml")
    err = _one_error_line(run(*args, missing), 2)
    assert f": {missing} (check the file name)" in err
    as_json = run("--json", *args, missing)
    assert json.loads(as_json.stderr)["error"]["exit_code"] == as_json.exit_code == 2
    assert run("show", "team/flow").output == "a: 1\n"
