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


@pytest.mark.parametrize(
    ("tag", "said"),
    [
        ("", "is empty"),
        ("  ", "is empty"),
        ("two\nlines", "control character"),
        ("esc\x1b[31m", "control character"),
        ("x" * 5000, "5,000 characters long, over the limit of 128"),
    ],
)
def test_save_refuses_a_bad_tag_as_bad_usage(run, tag: str, said: str) -> None:
    """`save --tag ""` exited 0 and cleared every tag; a newline, an escape or 5,000 characters
    were saved as a tag."""
    assert run("save", "team/flow", "--tag", "keep", input="a: 1\n").exit_code == 0
    err = _one_error_line(run("save", "team/flow", "--tag", tag, input="a: 2\n"), 2)
    assert said in err and "leave --tag out to keep the tags" in err
    assert json.loads(run("--json", "show", "team/flow").stdout)["meta"]["tags"] == ["keep"]
    assert run("show", "team/flow").output == "a: 1\n"


def test_save_refuses_more_tags_than_a_blueprint_may_have(run) -> None:
    many = [arg for k in range(101) for arg in ("--tag", f"t{k}")]
    err = _one_error_line(run("save", "team/flow", *many, input="a: 2\n"), 2)
    assert "101 tags, over the limit of 100" in err
    ok = [arg for k in range(100) for arg in ("--tag", f"t{k}")]
    assert run("save", "team/flow", *ok, input="a: 2\n").exit_code == 0


@pytest.mark.parametrize(
    "tags", ["", [""], ["ok", " "], ["a\tb"], ["x" * 129], [f"t{k}" for k in range(101)]]
)
def test_the_api_refuses_a_bad_new_tag(store: BlueprintStore, tags: str | list[str]) -> None:
    from localstore.errors import InvalidMetaError

    store.save("a", "a: 1\n", tags=["keep"])
    with pytest.raises(InvalidMetaError):
        store.save("a", "a: 2\n", tags=tags)
    assert store.load("a").meta.tags == ("keep",)
    assert store.save("a", "a: 2\n", tags=[]).meta.tags == ()  # (the way to remove them all)
    assert store.save("a", "a: 2\n", tags=["x" * 128, " y "]).meta.tags == ("x" * 128, "y")


def test_tags_from_a_meta_file_are_kept_as_they_are(store: BlueprintStore) -> None:
    """Only new input is refused: a meta edited by hand (or pulled, or imported) with tags no
    save takes is read and kept, and a save that sets no tags keeps them."""
    bp = store.save("a", "a: 1\n")
    odd = ["two\nlines", "x" * 500, *(f"t{k}" for k in range(150))]
    meta = store.paths.blueprints / "a.blueprint.meta.json"
    data = json.loads(meta.read_text(encoding="utf-8"))
    meta.write_text(json.dumps({**data, "tags": odd}), encoding="utf-8")
    store.reconcile()
    assert list(store.load(bp.id).meta.tags) == odd
    assert list(store.save("a", "a: 2\n", name="n").meta.tags) == odd
    assert list(store.save("a", "a: 3\n", meta=store.load("a").meta).meta.tags) == odd


@pytest.mark.parametrize("extra", [[], ["--yaml", "team/flow"]])
def test_an_empty_export_output_is_said_in_the_options_words(run, extra: list[str]) -> None:
    """`export -o ""` said "dest '' is not a usable file path ... as dest", the API's words."""
    err = _one_error_line(run("export", "-o", "", *extra), 2)
    assert "-o is empty (give -o the path of the file to write)" in err and "dest" not in err


@pytest.mark.parametrize("same", ["team/flow", "team/flow.blueprint.yaml"])
def test_a_move_onto_its_own_path_says_nothing_moved(run, same: str) -> None:
    """`mv A A` said "moved to A", as if something had happened."""
    done = run("mv", "team/flow", same)
    assert done.exit_code == 0 and "nothing moved" in done.output and "moved to" not in done.output
    assert [r["rev"] for r in json.loads(run("--json", "history", "team/flow").stdout)] == [1]
    assert (
        "moved team/flow.blueprint.yaml to team/b.blueprint.yaml"
        in run("mv", "team/flow", "team/b").output
    )


def test_a_move_onto_a_taken_path_gives_a_hint_for_a_move(run) -> None:
    """The hint was save's, "or save with that blueprint's id", which would overwrite it."""
    assert run("save", "team/other", input="b: 1\n").exit_code == 0
    err = _one_error_line(run("mv", "team/flow", "team/other"), 1)
    assert "already taken" in err and "first move or delete the blueprint there" in err
    assert "save with" not in err
