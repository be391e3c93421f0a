"""Bad input on the command line exits 2 (usage), as docs/cli.md says; bad content exits 1.

A refused search query exited 1, the code of a failure, so a script could not tell "you typed it
wrong" from "it broke"; so did an unsafe path, a malformed REF or credential name, a backslash
in --folder and an -o folder that does not exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore.cli import cli

MANY_WORDS = " ".join(f"w{k}" for k in range(300))


@pytest.fixture
def run(home: Path):
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None):
        return runner.invoke(cli, ["--home", str(home), *args], input=input, env=env)

    assert invoke("save", "team/flow", input="a: 1\n").exit_code == 0
    return invoke


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["search", '"'], "nothing to search for"),
        (["search", "   "], "empty search query"),
        (["search", MANY_WORDS], "more than the 64 a search takes"),
        (["search", "a", "--folder", "a\\b"], "backslash"),
        (["ls", "--folder", "team/flow.blueprint.yaml"], "not a folder"),
        (["save", "../escape"], "'..' part"),
        (["mv", "team/flow", "../out"], "'..' part"),
        (["restore", "team/flow", "1", "--path", "/abs"], "relative"),
        (["show", ""], "empty reference"),
        (["export", "-o", "/nonexistent-folder/x.lsbundle"], "does not exist"),
        (["cred", "set", "bad\nname"], "invalid credential name"),
    ],
)
def test_refused_input_is_bad_usage(run, args: list[str], said: str) -> None:
    done = run(*args, input="a: 2\n")
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert said in done.stderr
    as_json = run("--json", *args, input="a: 2\n")
    assert as_json.exit_code == 2, as_json.output
    assert json.loads(as_json.stderr)["error"]["exit_code"] == 2
    # Nothing was changed: the blueprint is where it was, with its one revision.
    assert [r["rev"] for r in json.loads(run("--json", "history", "team/flow").stdout)] == [1]


@pytest.mark.parametrize(
    ("content", "said"),
    [("a: [\n", "YAML does not parse"), ("- a\n", "mapping"), ("a: {b: 1}\n", "nested deeper")],
)
def test_refused_content_is_an_error_not_usage(run, content: str, said: str) -> None:
    """The command line was right, the file was not: exit 1 (the YAML's line is named)."""
    env = {"LOCALSTORE_MAX_DEPTH": "1"} if said == "nested deeper" else None
    done = run("save", "team/other", input=content, env=env)
    assert done.exit_code == 1 and said in done.stderr, done.output
