"""A new user's first hour with the CLI (session 12): the README's steps and the usual mistakes.

Each test is one mistake a person following README.md and docs/cli.md made, and what the CLI
must say then: what went wrong, how to fix it, and the exit code docs/cli.md's table gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localstore.cli import cli


@pytest.fixture
def run(home: Path):
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        argv = ["--home", str(home), *args]
        return runner.invoke(cli, argv, input=input, prog_name="localstore")

    assert invoke("init").exit_code == 0
    return invoke


def test_a_yaml_syntax_error_names_its_line_not_pyyamls_unicode_string(run) -> None:
    """PyYAML's text was passed on as it was: 'while parsing a flow sequence in "<unicode
    string>", line 1, column 4 did not find expected ...', with no hint."""
    r = run("save", "x/bad", input="name: a\nsteps: [1, 2\n")
    assert r.exit_code == 1
    assert "<unicode string>" not in r.stderr
    assert r.stderr.startswith("error: YAML does not parse at line 3, column 1: ")
    assert "flow sequence" in r.stderr and "line 2, column 8" in r.stderr
    assert "(fix the YAML there" in r.stderr
    r = run("--json", "save", "x/bad", input="a: b: c\n")
    error = json.loads(r.stderr)["error"]
    assert error["message"].startswith("YAML does not parse at line 1, column 5: ")
    assert error["hint"] and r.stdout == ""


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "a list"), ("just text\n", "a single value"), ("42\n", "a single value")],
)
def test_a_top_level_that_is_not_a_mapping_is_named_in_words(run, text: str, kind: str) -> None:
    """'must be a mapping, not a str' named a Python type a YAML author does not know."""
    r = run("save", "x/y", input=text)
    assert r.exit_code == 1
    assert f"must be a mapping, not {kind}" in r.stderr
    assert " str" not in r.stderr and " int" not in r.stderr


@pytest.mark.parametrize("option", ["--json", "--home=/tmp/elsewhere", "--debug"])
def test_a_global_option_after_the_command_says_where_it_goes(run, option: str) -> None:
    """`localstore ls --json` said "No such option '--json'. Did you mean '--sort'?"."""
    r = run("ls", option)
    assert r.exit_code == 2
    name = option.split("=")[0]
    assert f"{name} is a global option: put it before the command" in r.stderr
    assert f"localstore {name}" in r.stderr and "--sort" not in r.stderr


def test_a_global_option_after_the_command_with_json_is_one_json_error(run) -> None:
    r = run("--json", "search", "deploy", "--debug")
    assert r.exit_code == 2 and r.stdout == ""
    error = json.loads(r.stderr)["error"]
    assert "--debug is a global option" in error["hint"]


def test_a_query_that_starts_with_a_dash_says_to_put_double_dash_first(run) -> None:
    """`localstore search -deploy` said "No such option '-d'." and nothing else."""
    r = run("search", "-deploy")
    assert r.exit_code == 2
    assert "localstore search -- -deploy" in r.stderr
    r = run("search", "--", "-deploy")
    assert r.exit_code == 0


def test_the_double_dash_advice_keeps_the_other_words_and_skips_a_mistyped_option(run) -> None:
    """The example dropped the command's other words ('localstore search -- -deploy' for a search
    with --folder), and a mistyped one-letter option (`save -q x`) got the advice too, whose
    example ('localstore save -- -q') saves a blueprint named '-q'."""
    r = run("search", "--folder", "ops", "-deploy")
    assert r.exit_code == 2
    assert "as in 'localstore search --folder ops -- -deploy'" in r.stderr
    r = run("save", "-q", "x/y", input="a: 1\n")
    assert r.exit_code == 2
    assert "No such option '-q'" in r.stderr and "'--'" not in r.stderr


@pytest.mark.parametrize(
    "args",
    [("ls", "--limit", "-1"), ("ls", "--offset", "-5"), ("search", "a", "--limit", "-1")],
)
def test_a_negative_limit_or_offset_is_bad_usage(run, args: tuple[str, ...]) -> None:
    """docs/cli.md: 2 is usage; a negative --limit was exit 1, as if something had failed."""
    r = run(*args)
    assert r.exit_code == 2, r.stderr
    assert "x>=0" in r.stderr or "--limit must be 1 or more, not -1" in r.stderr


def test_every_option_of_ls_and_search_has_help(run) -> None:
    assert "Order by path, name, modified or created." in run("ls", "--help").stdout
    for command in ("ls", "search"):
        limit = [ln for ln in run(command, "--help").stdout.splitlines() if "--limit" in ln]
        assert len(limit) == 1 and "At most this many" in limit[0]


def test_importing_a_yaml_file_points_at_save(run, tmp_path: Path) -> None:
    """A person with a .yaml file tries `localstore import file.yaml` first."""
    plain = tmp_path / "deploy.yaml"
    plain.write_text("steps: []\n")
    r = run("import", str(plain))
    assert r.exit_code == 1
    assert "is not a .lsbundle" in r.stderr and "localstore save PATH -f" in r.stderr


def test_an_import_that_skips_conflicts_says_how_to_take_them(run, tmp_path: Path) -> None:
    """Exit 3 with 'skip ... (changed on both sides)' and no word on --on-conflict."""
    other = tmp_path / "other"
    runner = CliRunner()

    def there(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, ["--home", str(other), *args], input=input)

    first, second = tmp_path / "1.lsbundle", tmp_path / "2.lsbundle"
    assert run("save", "a/x", input="v: 1\n").exit_code == 0
    assert run("export", "-o", str(first)).exit_code == 0
    assert there("import", str(first)).exit_code == 0
    assert run("save", "a/x", input="v: 2\n").exit_code == 0
    assert run("export", "-o", str(second)).exit_code == 0
    assert there("save", "a/x", input="v: 3\n").exit_code == 0
    r = there("import", str(second))
    assert r.exit_code == 3, r.output
    assert "--on-conflict merge" in r.stderr and "keep-both" in r.stderr
    r = there("--json", "import", str(second))
    assert r.exit_code == 3 and json.loads(r.stdout)["items"]


@pytest.mark.parametrize(
    "args",
    [
        ("show", "x/a", "--rev", "-1"),
        ("show", "x/a", "--rev=-1"),
        ("show", "x/a", "--rev", "0"),
        ("restore", "x/a", "--", "-1"),
        ("restore", "x/a", "0"),
    ],
)
def test_a_revision_below_1_is_bad_usage_that_says_where_revisions_start(
    run, args: tuple[str, ...]
) -> None:
    """`show --rev -1 REF` (the latest, as a Python index?) was "x/a has no revision -1", exit 4
    (not found), as if the blueprint had lost a revision."""
    assert run("save", "x/a", input="a: 1\n").exit_code == 0
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "is not a revision (revisions count from 1" in r.stderr
    assert "'localstore history REF' lists them" in r.stderr
    assert ("leave --rev out for the latest" in r.stderr) == (args[0] == "show")
    error = json.loads(run("--json", *args).stderr)["error"]
    assert error["exit_code"] == 2 and "revisions count from 1" in error["message"]
    assert run("show", "x/a", "--rev", "1").stdout == "a: 1\n"  # (1 is the first)


def test_a_negative_number_read_as_an_option_gets_advice(run) -> None:
    """`restore REF -1` and `search -1` said only "No such option '-1'.": the advice to put a
    value that starts with '-' after '--' skipped words of two characters (for `save -q x`).
    A negative number is never an option; for a revision, '--' would lead to the next error."""
    assert run("save", "x/a", input="a: 1\n").exit_code == 0
    r = run("restore", "x/a", "-1")
    assert r.exit_code == 2
    assert "No such option '-1'" in r.stderr
    assert "-1 is not a revision either: revisions count from 1" in r.stderr
    assert "'--'" not in r.stderr
    error = json.loads(run("--json", "restore", "x/a", "-1").stderr)["error"]
    assert error["exit_code"] == 2 and "revisions count from 1" in error["hint"]
    r = run("search", "-1")
    assert r.exit_code == 2
    assert "as in 'localstore search -- -1'" in r.stderr
    r = run("search", "--limit", "3", "-12")
    assert "as in 'localstore search --limit 3 -- -12'" in r.stderr


def test_a_file_given_after_save_path_says_to_use_dash_f(run, tmp_path: Path) -> None:
    """`localstore save flows/deploy deploy.yaml` (the file as a second word, as cp takes it)
    said only "Got unexpected extra argument (deploy.yaml)"; the command reads stdin or -f."""
    source = tmp_path / "deploy.yaml"
    source.write_text("name: deploy\n")
    r = run("save", "flows/deploy", str(source), "--tag", "ci")
    assert r.exit_code == 2
    assert "unexpected extra argument" in r.stderr
    assert (
        f"to save the YAML in a file, give it with -f: 'localstore save flows/deploy --tag ci -f {source}'"
        in r.stderr
    )
    r = run("--json", "save", "flows/deploy", str(source))
    assert r.exit_code == 2 and r.stdout == ""
    assert "-f" in json.loads(r.stderr)["error"]["hint"]
    r = run("save", "flows/deploy", "-f", str(source))
    assert r.exit_code == 0
    # Two words that are not a file: click's own text, no guess.
    r = run("save", "flows/a", "flows/b")
    assert r.exit_code == 2 and "-f" not in r.stderr.split("Error:")[-1]
