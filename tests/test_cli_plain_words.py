"""CLI errors and listings in a person's words (session 24, third sweep): an empty or manifest-less
bundle, YAML that is not UTF-8, an empty import path, and a stored tag with a newline on a
terminal."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localstore.blueprint import parse_yaml
from localstore.cli import cli
from localstore.errors import InvalidYAMLError


@pytest.fixture
def run(home: Path):
    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None, **env: str) -> Result:
        return runner.invoke(cli, ["--home", str(home), *args], input=input, env=env or None)

    assert invoke("save", "team/flow", input="a: 1\n").exit_code == 0
    return invoke


def _one_error_line(done: Result, code: int) -> str:
    assert done.exit_code == code, (done.output, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def test_an_empty_bundle_file_is_said_to_be_empty(run, tmp_path: Path) -> None:
    """A 0-byte file (a download cut short, `> x.lsbundle` by mistake) was "not a .lsbundle"."""
    empty = tmp_path / "empty.lsbundle"
    empty.write_bytes(b"")
    err = _one_error_line(run("import", str(empty)), 1)
    assert f"{empty} is empty (0 bytes)" in err and "not a .lsbundle" not in err


def test_a_zip_without_a_manifest_points_at_save_for_yaml_files(run, tmp_path: Path) -> None:
    """A zip of loose YAML files was "has no manifest.json (is it a .lsbundle?)", with no way on."""
    plain = tmp_path / "yamls.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("a.yaml", "a: 1\n")
    err = _one_error_line(run("import", str(plain)), 1)
    assert "the bundle has no manifest.json" in err
    assert "'localstore save PATH -f FILE'" in err and "'localstore export'" in err


def test_an_empty_import_path_is_said_in_the_commands_words(run) -> None:
    """`import ""` (an unset variable) said "path '' is not a usable file path ... as path"."""
    err = _one_error_line(run("import", ""), 2)
    assert "FILE is empty (give FILE the path of the bundle to import)" in err
    assert "as path" not in err and "usable" not in err
    # (`save -f ""` was "no such file:  (check the file name)".)
    err = _one_error_line(run("save", "team/new", "-f", ""), 2)
    assert "-f is empty (give -f the path of the YAML file to save)" in err


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("a: 1\n".encode("utf-16"), "YAML is UTF-16 (it starts with a UTF-16 byte order mark)"),
        (b"\xfe\xff" + "a: 1\n".encode("utf-16-be"), "YAML is UTF-16"),
        ("a: caf\u00e9\n".encode("latin-1"), "YAML is not UTF-8 (invalid continuation byte"),
    ],
)
def test_yaml_that_is_not_utf8_says_so_in_the_clis_words(
    run, tmp_path: Path, content: bytes, said: str
) -> None:
    """The hint was the API's "or pass the content as a str", which a command line cannot do,
    and a UTF-16 file (Notepad's "Unicode", PowerShell's `>`) was "invalid start byte"."""
    source = tmp_path / "in.yaml"
    source.write_bytes(content)
    err = _one_error_line(run("save", "team/new", "-f", str(source)), 1)
    assert said in err and "save it as UTF-8" in err and " str" not in err
    assert run("show", "team/new").exit_code == 4  # nothing saved
    as_json = json.loads(run("--json", "save", "team/new", input=content).stderr)["error"]
    assert said in as_json["message"] and "str" not in as_json["hint"]


def test_the_apis_not_utf8_hint_still_names_str(tmp_path: Path) -> None:
    with pytest.raises(InvalidYAMLError, match="UTF-16") as caught:
        parse_yaml("a: 1\n".encode("utf-16"))
    assert caught.value.hint == "save it as UTF-8, or pass the content as a str"


def _tag_by_hand(home: Path, tag: str) -> None:
    """Give team/flow a tag no save takes, as a hand-edited meta file can (kept as it is)."""
    meta = home / "blueprints" / "team" / "flow.blueprint.meta.json"
    data = json.loads(meta.read_text(encoding="utf-8"))
    meta.write_text(json.dumps({**data, "tags": [tag]}), encoding="utf-8")


def test_ls_on_a_terminal_shows_a_control_character_in_a_tag_as_in_a_pipe(run, home: Path) -> None:
    """On a terminal a newline in a stored tag made a two-line cell (an escape sequence went to the
    terminal as it was); a pipe showed '?'. Both now show '?'."""
    _tag_by_hand(home, "two\nlines\x1b[31m")
    terminal = {"FORCE_COLOR": "1", "NO_COLOR": "", "COLUMNS": "200", "TERM": "xterm"}
    tty = run("ls", **terminal)
    piped = run("ls", COLUMNS="200")
    assert tty.exit_code == 0 and piped.exit_code == 0, (tty.output, piped.output)
    assert "two?lines?[31m" in piped.output
    assert "two?lines?[31m" in tty.output and "\x1b[31m" not in tty.output
    assert "│ team/flow" in tty.output  # (a rich table, not the piped lines)
