"""The CLI contract for the local store: commands, --json, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import localstore
from localstore.cli import cli
from localstore.store import SaveRequest

DOC = "# keep me\nsteps:\n  - name: build  # and me\n"


@pytest.fixture
def run(home: Path):
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, json_out: bool = False):
        argv = ["--home", str(home), *(["--json"] if json_out else []), *args]
        result = runner.invoke(cli, argv, input=input, catch_exceptions=False)
        return result

    return invoke


def test_save_show_ls_search_roundtrip(run) -> None:
    r = run("save", "team/build", "--tag", "ci", input=DOC, json_out=True)
    assert r.exit_code == 0, r.output
    saved = json.loads(r.output)
    assert saved["path"] == "team/build.blueprint.yaml" and saved["meta"]["tags"] == ["ci"]
    assert run("show", "team/build").output == DOC
    meta = json.loads(run("show", saved["id"][:8], "--meta").output)
    assert meta["id"] == saved["id"]
    listed = json.loads(run("ls", "--tag", "ci", json_out=True).output)
    assert [i["id"] for i in listed] == [saved["id"]]
    hits = json.loads(run("search", "build", json_out=True).output)
    assert hits[0]["id"] == saved["id"] and "[build]" in hits[0]["snippet"]


def test_mv_rm_history_restore(run) -> None:
    ident = json.loads(run("save", "a", input=DOC, json_out=True).output)["id"]
    assert run("mv", ident, "b/c").exit_code == 0
    assert run("rm", "b/c").exit_code == 0
    hist = json.loads(run("history", ident, json_out=True).output)
    assert [h["rev"] for h in hist] == [3, 2, 1] and hist[0]["deleted"]
    assert run("restore", ident, "2").exit_code == 0
    assert run("show", "b/c").output == DOC


def test_mv_into_a_folder_keeps_the_file_name(run) -> None:
    ident = json.loads(run("save", "team/build", input=DOC, json_out=True).output)["id"]
    r = run("mv", "team/build", "archive/2026/")
    assert r.exit_code == 0, r.output
    assert r.output == (
        f"moved team/build.blueprint.yaml to archive/2026/build.blueprint.yaml (id {ident})\n"
    )
    r = run("mv", ident, "./")  # the blueprints folder itself
    assert r.exit_code == 0 and json.loads(run("show", ident, "--meta").output)["id"] == ident
    assert run("show", "build").output == DOC
    r = run("mv", "build", "/")  # (still refused: absolute)
    assert r.exit_code == 2 and "absolute" in r.stderr


def test_restore_says_when_there_was_nothing_to_restore(run) -> None:
    ident = json.loads(run("save", "a", input=DOC, json_out=True).output)["id"]
    run("save", "a", input=DOC + "# two\n")
    run("mv", ident, "b/c")
    run("rm", "b/c")
    r = run("restore", ident, "1")  # from before the move: back where it was deleted
    assert r.exit_code == 0
    assert r.output == "restored b/c.blueprint.yaml to the content of rev 1 (now rev 5)\n"
    r = run("restore", ident, "1")  # the same content again: nothing recorded
    assert r.exit_code == 0
    assert r.output == "b/c.blueprint.yaml already has the content of rev 1 (rev 5)\n"
    assert json.loads(run("history", ident, json_out=True).output)[0]["rev"] == 5


def test_restore_without_rev_undoes_an_rm(run) -> None:
    ident = json.loads(run("save", "a", input=DOC, json_out=True).output)["id"]
    run("save", "a", input=DOC + "# two\n")
    run("rm", "a")
    r = run("restore", "a")  # by path: the deleted blueprint there, as it was when deleted
    assert r.exit_code == 0, r.output
    assert r.output == "restored a.blueprint.yaml to the content of rev 2 (now rev 4)\n"
    assert run("show", ident).output == DOC + "# two\n"


def test_restore_without_rev_of_a_live_blueprint_asks_for_one(run) -> None:
    run("save", "a", input=DOC)
    run("save", "a", input=DOC + "# two\n")
    r = run("restore", "a")
    assert r.exit_code == 2
    assert "'a' is not deleted (it is at rev 2)" in r.stderr
    assert "'localstore history a' lists them" in r.stderr
    assert run("show", "a").output == DOC + "# two\n"
    assert run("restore", "missing").exit_code == 4


def test_exit_codes_and_one_line_errors(run) -> None:
    r = run("show", "missing")
    assert r.exit_code == 4
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    r = run("save", "bad", input="a: [")
    assert r.exit_code == 1 and "YAML does not parse" in r.stderr
    r = run("save", "../escape", input=DOC)
    assert r.exit_code == 2 and "relative" in r.stderr  # (a path argument refused: bad usage)
    r = run("restore")
    assert r.exit_code == 2
    r = run("no-such-command")
    assert r.exit_code == 2


def test_save_from_file(run, tmp_path: Path) -> None:
    src = tmp_path / "in.yaml"
    src.write_text(DOC)
    assert run("save", "f", "-f", str(src)).exit_code == 0
    assert run("show", "f").output == DOC
    r = run("save", "g", "-f", str(tmp_path / "nope.yaml"))
    # Bad usage, as a missing input file is for every command (docs/cli.md); it was exit 1.
    assert r.exit_code == 2 and "no such file" in r.stderr


def test_init_json(run, home: Path) -> None:
    data = json.loads(run("init", json_out=True).output)
    assert data["blueprints"] == str(home / "blueprints") and data["count"] == 0


def test_console_script_runs(home: Path) -> None:
    exe = Path(sys.executable).with_name("localstore")
    out = subprocess.run(
        [str(exe), "--home", str(home), "--json", "init"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    assert json.loads(out.stdout)["count"] == 0
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("localstore ")


def test_help_reads_well() -> None:
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    assert "Exit codes" in r.output and "search" in r.output
    for name in ("save", "ls", "search", "check"):
        sub = CliRunner().invoke(cli, [name, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output


@pytest.mark.parametrize("args", [["sync"], ["doctor"], ["cloud", "status"], ["service", "status"]])
def test_bad_config_is_one_line_for_every_command(run, home: Path, args: list[str]) -> None:
    assert run("init").exit_code == 0
    (home / "config" / "config.yaml").write_text("bogus_setting: 1\n")
    r = run(*args)
    assert r.exit_code == 1, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")


def test_home_with_a_file_in_the_way_is_one_line(run, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "data").write_text("keep me")
    for args in (["init"], ["ls"]):
        r = run(*args)
        assert r.exit_code == 1, r.output
        assert r.stderr.count("\n") == 1 and "a file is in the way" in r.stderr
    assert (home / "data").read_text() == "keep me"


@pytest.mark.parametrize("from_file", [False, True])
def test_save_reads_no_more_than_the_limit(
    run, home: Path, tmp_path: Path, from_file: bool
) -> None:
    assert run("init").exit_code == 0
    (home / "config" / "config.yaml").write_text("max_yaml_bytes: 100\n")
    big = "a: " + "x" * 5000 + "\n"
    if from_file:
        (tmp_path / "big.yaml").write_text(big)
        r = run("save", "big", "-f", str(tmp_path / "big.yaml"))
    else:
        r = run("save", "big", input=big)
    assert r.exit_code == 1, r.output
    assert r.stderr.count("\n") == 1 and "over the limit of 100 bytes" in r.stderr
    assert run("save", "small", input="a: 1\n").exit_code == 0


def test_save_stops_reading_stdin_at_the_limit(home: Path) -> None:
    # A pipe far bigger than the limit: `save` must stop after limit + 1 bytes, not slurp it all.
    code = (
        "import sys; from localstore.cli import main; sys.argv=['localstore', '--home', sys.argv[1],"
        " 'save', 'big']; main()"
    )
    init = [sys.executable, "-c", code.replace("'save', 'big'", "'init'"), str(home)]
    subprocess.run(init, check=True, capture_output=True)
    (home / "config" / "config.yaml").write_text("max_yaml_bytes: 1000\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(home)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        bufsize=0,  # unbuffered: a broken pipe surfaces on write, not on a later flush
    )
    assert proc.stdin is not None and proc.stderr is not None
    written = 0
    try:
        while written < 64 * 1024 * 1024:
            written += proc.stdin.write(b"a" * 65536) or 0
    except BrokenPipeError:
        pass
    proc.stdin.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1 and b"over the limit of 1000 bytes" in err
    assert written < 64 * 1024 * 1024  # the pipe broke: the rest was never read


def test_missing_blueprints_folder_hint_names_no_setting_that_does_not_exist(
    run, home: Path
) -> None:
    assert run("save", "x", input=DOC).exit_code == 0
    (home / "blueprints").rename(home / "bp.away")
    r = run("ls")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
    assert "--home or LOCALSTORE_HOME" in r.stderr and "config.yaml" not in r.stderr
    assert (home / "bp.away" / "x.blueprint.yaml").read_text() == DOC


BAD = "\udcff"  # what argv decoding makes of a byte that is not UTF-8


@pytest.mark.parametrize(
    "args",
    [
        ["save", "t", "--tag", BAD],
        ["save", "t", "--name", BAD],
        ["save", "t", "--description", BAD],
        ["ls", "--folder", BAD],
        ["ls", "--tag", BAD],
        ["search", "a", "--tag", BAD],
        ["search", "a", "--folder", BAD],
        ["export", "-o", "out.lsbundle", "--tag", BAD],
        ["export", "-o", "out.lsbundle", "--folder", BAD],
    ],
)
def test_non_utf8_option_is_one_line_usage_error(
    run, home: Path, tmp_path: Path, args: list[str]
) -> None:
    assert run("save", "x", input=DOC).exit_code == 0
    r = run(*[str(tmp_path / a) if a == "out.lsbundle" else a for a in args], input=DOC)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert "not UTF-8" in r.stderr
    assert json.loads(run("ls", json_out=True).output)[0]["path"] == "x.blueprint.yaml"
    assert run("check").exit_code == 0


def _damage_pages(db: Path) -> None:
    """Overwrite every page after the header page with garbage: the header still opens."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    data[page:] = b"\xa5" * (len(data) - page)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["garbage", "pages"])
def test_check_fix_recovers_a_damaged_index(run, home: Path, damage: str) -> None:
    """Every command refuses a damaged index and points at 'check --fix'; 'check --fix' must not
    fail at the same open (a dead end): it sets the index aside (kept, never deleted) and rebuilds
    it from the files, saying history before this point was not recovered."""
    for i in range(3):
        assert run("save", f"b{i}", input=f"k: {i}\n").exit_code == 0
    db = home / "data" / "index.db"
    for side in ("index.db-wal", "index.db-shm"):
        (home / "data" / side).unlink(missing_ok=True)
    if damage == "garbage":
        db.write_bytes(b"garbage\n")
    else:
        _damage_pages(db)
    before = db.read_bytes()
    r = run("ls")
    assert r.exit_code != 0 and "check --fix" in r.stderr and "damaged" in r.stderr
    r = run("check", "--fix", json_out=True)
    assert r.exit_code == 0, r.stderr
    fixed = json.loads(r.stdout)["fixed"]
    rebuilt = [f for f in fixed if f["kind"] == "index-rebuilt"]
    assert len(rebuilt) == 1 and "not recovered" in rebuilt[0]["detail"]
    aside = Path(rebuilt[0]["path"])
    assert aside.parent == home / "data" and aside.name.startswith("index.db.damaged-")
    assert aside.read_bytes() == before  # kept as it was: its history may be salvageable
    assert sorted(f["path"] for f in fixed if f["kind"] == "created") == [
        f"b{i}.blueprint.yaml" for i in range(3)
    ]
    assert len(json.loads(run("ls", json_out=True).stdout)) == 3
    assert run("check").exit_code == 0


def test_plain_check_still_refuses_a_damaged_index(run, home: Path) -> None:
    assert run("save", "b", input="k: 1\n").exit_code == 0
    (home / "data" / "index.db").write_bytes(b"garbage\n")
    r = run("check")
    assert r.exit_code != 0 and "check --fix" in r.stderr
    assert sorted(p.name for p in (home / "data").iterdir() if "damaged" in p.name) == []


@pytest.mark.parametrize(
    "args", [["ls"], ["show", "x"], ["search", "x"], ["history", "x"], ["check"], ["status"]]
)
def test_a_read_command_on_a_missing_home_says_so_and_creates_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    """A mistyped --home made an empty home, and `ls` printed nothing: work that looked lost."""
    typo = tmp_path / "typo"
    r = CliRunner().invoke(cli, ["--home", str(typo), *args], catch_exceptions=False)
    assert r.exit_code == 4, r.output
    assert r.stderr.startswith(f"error: no LocalStore home at {typo}")
    assert "localstore init" in r.stderr
    assert not typo.exists()
    # A command that writes still makes the home, and reading it then works.
    saved = CliRunner().invoke(cli, ["--home", str(typo), "save", "a", "-f", "-"], input="v: 1\n")
    assert saved.exit_code == 0, saved.output
    listed = CliRunner().invoke(cli, ["--home", str(typo), "ls"], catch_exceptions=False)
    assert listed.exit_code == 0 and "a.blueprint.yaml" in listed.output


@pytest.mark.parametrize(
    "args",
    [
        ["search", BAD],
        ["show", BAD],
        ["history", BAD],
        ["rm", BAD],
        ["mv", "x", BAD],
        ["mv", BAD, "y"],
        ["save", BAD],
        ["restore", "x", "1", "--path", BAD],
        ["export", "-o", "out.lsbundle", BAD],
        ["cred", "get", BAD],
    ],
)
def test_non_utf8_argument_is_one_line_usage_error(
    run, home: Path, tmp_path: Path, args: list[str]
) -> None:
    """Arguments (not only the text options) that are not UTF-8: 'search' said 'nothing to search
    for', the REF commands 'no blueprint matches' (exit 4), save an unsafe path (exit 1)."""
    assert run("save", "x", input=DOC).exit_code == 0
    r = run(*[str(tmp_path / a) if a == "out.lsbundle" else a for a in args], input=DOC)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert "not UTF-8" in r.stderr
    assert [h["rev"] for h in json.loads(run("history", "x", json_out=True).output)] == [1]


def test_non_utf8_bytes_in_argv_under_the_c_locale(home: Path) -> None:
    """The real decoding path (LC_ALL=C: argv bytes through surrogateescape), end to end."""
    env = {**os.environ, "LC_ALL": "C", "LOCALSTORE_HOME": str(home)}
    env.pop("LANG", None)
    base = [sys.executable, "-c", "from localstore.cli import main; main()"]
    assert subprocess.run([*base, "init"], env=env, capture_output=True).returncode == 0
    cases: list[list[str | bytes]] = [
        ["ls", "--tag", b"\xff"],
        ["search", b"caf\xe9"],
        ["show", b"\xff"],
    ]
    for args in cases:
        r = subprocess.run([*base, *args], env=env, capture_output=True)
        assert r.returncode == 2, r
        assert r.stderr.count(b"\n") == 1 and b"not UTF-8" in r.stderr and not r.stdout


def test_search_pages_with_offset(run) -> None:
    for i in range(5):
        assert run("save", f"p/d{i}", input="run: deploy\n").exit_code == 0
    whole = [h["id"] for h in json.loads(run("search", "deploy", json_out=True).output)]
    paged = []
    for offset in (0, 2, 4):
        r = run("search", "deploy", "--limit", "2", "--offset", str(offset), json_out=True)
        assert r.exit_code == 0, r.output
        paged += [h["id"] for h in json.loads(r.output)]
    assert len(whole) == 5 and paged == whole
    r = run("search", "deploy", "--offset", "-1")
    # Bad usage, as docs/cli.md's table has it (the store's own check made it exit 1).
    assert r.exit_code == 2 and "'--offset': -1 is not in the range x>=0" in r.stderr


def test_search_table_on_a_terminal_marks_hits_not_brackets(home: Path) -> None:
    """On a terminal the table shows matches in reverse video, so a blueprint's own brackets
    read as brackets; in a pipe (no colour) it keeps the [ ] of SearchHit.snippet."""
    runner = CliRunner()
    doc = "note: keep [deploy] in brackets then deploy again\n"
    assert (
        runner.invoke(cli, ["--home", str(home), "save", "b/x", "-f", "-"], input=doc).exit_code
        == 0
    )
    env = {"FORCE_COLOR": "1", "NO_COLOR": "", "COLUMNS": "200", "TERM": "xterm"}
    tty = runner.invoke(cli, ["--home", str(home), "search", "deploy"], env=env)
    assert tty.exit_code == 0, tty.output
    reverse = "\x1b[7m"
    assert tty.output.count(reverse) == 2  # both matches, and nothing else
    assert f"[{reverse}deploy" in tty.output  # the text's own bracket, then a marked match
    piped = runner.invoke(cli, ["--home", str(home), "search", "deploy"], env={"COLUMNS": "200"})
    assert "\x1b[" not in piped.output and "[[deploy]]" in piped.output


@pytest.mark.parametrize("cmd", [["ls"], ["search", "a"]])
def test_a_folder_filter_save_would_refuse_is_an_error_not_nothing(run, cmd: list[str]) -> None:
    assert run("save", "a/b/x", input="a: 1\n").exit_code == 0
    r = run(*cmd, "--folder", "a\\b")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "backslash" in r.stderr
    assert "'/'" in r.stderr


def test_an_empty_home_flag_is_an_error_not_the_users_own_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `localstore --home "$DIR" save ...` with DIR unset wrote into the platform folders.
    user = tmp_path / "user"
    monkeypatch.setenv("HOME", str(user))
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("LOCALSTORE_HOME", raising=False)
    r = CliRunner().invoke(cli, ["--home", "", "save", "x"], input=DOC)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
    assert "empty" in r.stderr and "--home" in r.stderr
    assert not user.exists()


def test_ls_of_more_than_a_table_streams_plain_lines(run, home: Path) -> None:
    # rich lays a whole table out in memory before printing: `ls` of 100,000 blueprints took
    # two minutes and 860 MB. Past TABLE_MAX_ROWS the listing is plain aligned lines.
    from localstore._cli_store import TABLE_MAX_ROWS

    n = TABLE_MAX_ROWS + 1
    with localstore.open(home=home) as store:
        store.save_many(
            [SaveRequest(path=f"f{i % 3}/w-{i:05d}", content=f"n: {i}\n") for i in range(n)]
        )
        store.save("f0/odd", "n: x\n", name="red\x1b[31mname")
        listed = store.list()
    r = run("ls")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"{n + 1} blueprint(s)"
    assert lines[1].split() == ["path", "name", "tags", "modified", "id"]
    assert [line.split()[0] for line in lines[2:]] == [i.path for i in listed]
    assert "\x1b" not in r.output and "red?[31mname" in r.output
    assert not set("│┃━") & set(r.output)
    w = max(len(i.path) for i in listed)  # the name column starts at the same place
    assert all(line[w : w + 2] == "  " and line[w + 2] != " " for line in lines[1:])
    # --json: one document, as before (built item by item).
    assert json.loads(run("ls", json_out=True).output) == [
        json.loads(json.dumps(i.to_dict())) for i in listed
    ]
    assert json.loads(run("ls", "--folder", "nowhere", json_out=True).output) == []
