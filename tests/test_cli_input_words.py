"""Input the CLI refused in click's or a parser's words (session 25): a folder given where a file
goes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localstore.cli import cli


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


def _unchanged(run) -> None:
    assert json.loads(run("--json", "ls").stdout)[0]["path"] == "team/flow.blueprint.yaml"
    assert len(json.loads(run("--json", "ls").stdout)) == 1
    assert [r["rev"] for r in json.loads(run("--json", "history", "team/flow").stdout)] == [1]


def test_import_of_a_folder_says_what_import_takes_and_how_a_folder_gets_in(
    run, home: Path, tmp_path: Path
) -> None:
    """`import SOMEDIR` printed click's usage text and "File 'SOMEDIR' is a directory"."""
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "a.blueprint.yaml").write_text("a: 2\n", encoding="utf-8")
    err = _one_error_line(run("import", str(folder)), 2)
    assert f"{folder} is a folder" in err and "Usage" not in err
    assert "one .lsbundle file, as 'localstore export -o FILE' writes it" in err
    assert f"copy its .blueprint.yaml files into {home / 'blueprints'}" in err
    assert "'localstore save PATH -f FILE'" in err
    as_json = json.loads(run("--json", "import", str(folder)).stderr)["error"]
    assert as_json["exit_code"] == 2 and "is a folder" in as_json["message"]
    _unchanged(run)


def test_save_from_a_folder_says_it_takes_one_file(run, tmp_path: Path) -> None:
    err = _one_error_line(run("save", "team/flow", "-f", str(tmp_path)), 2)
    assert f"{tmp_path} is a folder" in err and "Usage" not in err
    assert "-f takes one YAML file" in err
    _unchanged(run)
