"""Input the CLI refused in click's or a parser's words (session 25): a folder given where a file
goes, and a blueprint in UTF-16 without a byte order mark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localstore.cli import cli
from tests.archive import zipcraft as z


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


UTF16_WORDS = "YAML looks like UTF-16 (a NUL byte every other byte), not UTF-8"


@pytest.mark.parametrize(
    "content",
    [
        "name: x\n".encode("utf-16-le"),
        "name: x\n".encode("utf-16-be"),
        "name: caf\u00e9\nsteps: [a, b]\n".encode("utf-16-le"),  # (not even UTF-8 with NULs)
    ],
    ids=["le", "be", "le-not-ascii"],
)
def test_utf16_without_a_byte_order_mark_is_said_to_be_utf16(
    run, tmp_path: Path, content: bytes
) -> None:
    """It was "YAML holds a control character (NUL, U+0000) at line 1, column 2"."""
    source = tmp_path / "in.yaml"
    source.write_bytes(content)
    err = _one_error_line(run("save", "team/flow", "-f", str(source)), 1)
    assert UTF16_WORDS in err and "(save it as UTF-8)" in err and "control" not in err
    as_json = json.loads(run("--json", "save", "team/new", input=content).stderr)["error"]
    assert UTF16_WORDS in as_json["message"] and as_json["hint"] == "save it as UTF-8"
    _unchanged(run)


def test_import_of_a_utf16_blueprint_says_utf16(run, tmp_path: Path) -> None:
    bps = [z.Blueprint("f/wide.blueprint.yaml", yaml="name: x\n".encode("utf-16-le"))]
    bundle = tmp_path / "b.lsbundle"
    bundle.write_bytes(z.build(z.bundle_entries(bps)))
    err = _one_error_line(run("import", str(bundle)), 1)
    assert "'f/wide.blueprint.yaml': " + UTF16_WORDS in err
    _unchanged(run)


def test_a_utf16_file_put_in_the_folder_is_flagged_as_utf16(run, home: Path) -> None:
    """What reconcile (and the watcher, the same ingest) says of the file: it was the NUL."""
    (home / "blueprints" / "team" / "wide.blueprint.yaml").write_bytes(
        "name: x\n".encode("utf-16-le")
    )
    done = run("--json", "check", "--fix")
    flagged = [p for p in json.loads(done.stdout)["problems"] if p["kind"] == "invalid-yaml"]
    assert [p["path"] for p in flagged] == ["team/wide.blueprint.yaml"], done.stdout
    assert UTF16_WORDS in flagged[0]["detail"]


def test_check_says_of_a_utf16_file_what_check_fix_says_with_what_to_do(run, home: Path) -> None:
    """check said "unindexed: not in index" of the file --fix had just refused, and --fix's words
    ended with the API's "(save it as UTF-8, or pass the content as a str)"."""
    (home / "blueprints" / "wide.blueprint.yaml").write_bytes("name: x\n".encode("utf-16"))
    fixed = run("check", "--fix")
    plain = run("check")
    assert fixed.exit_code == plain.exit_code == 3
    assert fixed.stdout == plain.stdout, (fixed.stdout, plain.stdout)
    assert plain.stdout.startswith("problem invalid-yaml   wide.blueprint.yaml  YAML is UTF-16")
    assert plain.stdout.endswith("(re-save wide.blueprint.yaml as UTF-8 in your editor)\n")
    assert "pass the content" not in plain.stdout + fixed.stdout


def test_check_fix_ends_with_what_to_do_about_what_it_left_not_with_itself(run, home: Path) -> None:
    """After a --fix the closing line still said "'localstore check --fix' repairs what is safe
    to repair": the user ran it again, to the same report."""
    blueprints = home / "blueprints"
    (blueprints / "wide.blueprint.yaml").write_bytes("name: x\n".encode("utf-16"))
    (blueprints / "ok.blueprint.yaml").write_text("name: y\n")
    plain = run("check")
    assert plain.stderr.splitlines() == [
        "2 problem(s); what to do:",
        "  unindexed: run `localstore check --fix`",
        "  invalid-yaml: fix or re-save each file as `localstore check` says of it",
    ]
    fixed = run("check", "--fix")
    assert fixed.exit_code == 3
    assert fixed.stderr.splitlines() == [
        "1 problem(s) left that --fix could not repair; what to do:",
        "  invalid-yaml: fix or re-save each file as `localstore check` says of it",
    ]
