"""Numbers on the command line that cannot mean anything (a count of 0, a revision below 1)
are bad usage (exit 2) that says which values are allowed, not an empty answer a script takes
for an empty store or history."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from localstore.cli import cli


@pytest.fixture
def run(home: Path):
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, ["--home", str(home), *args], input=input, prog_name="localstore")

    assert invoke("init").exit_code == 0
    assert invoke("save", "x/a", input="a: 1\n").exit_code == 0
    assert invoke("save", "x/a", input="a: 2\n").exit_code == 0
    return invoke


def _usage_error(run, args: tuple[str, ...]) -> str:
    """The one ``error:`` line of a usage error; the same, as JSON, with --json."""
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert r.stdout == "" and r.stderr.startswith("error: "), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    error = json.loads(run("--json", *args).stderr)["error"]
    assert error["exit_code"] == 2 and error["message"] == r.stderr[len("error: ") : -1]
    return r.stderr


@pytest.mark.parametrize("before", ["-1", "0"])
def test_history_before_a_revision_below_1_is_bad_usage(run, before: str) -> None:
    """`history --before -1 REF` listed nothing, exit 0: an empty history, to a script paging
    through it, where the user meant the latest (as a Python index)."""
    for args in (("history", "--before", before, "x/a"), ("history", f"--before={before}", "x/a")):
        stderr = _usage_error(run, args)
        assert f"--before {before} is not a revision (revisions count from 1" in stderr
        assert "leave --before out to start at the latest" in stderr
    # 1 is a revision: the page below it is empty, and truly so.
    r = run("--json", "history", "--before", "1", "x/a")
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    r = run("--json", "history", "--before", "2", "x/a")
    assert [item["rev"] for item in json.loads(r.stdout)] == [1]


@pytest.mark.parametrize(
    ("args", "unset"),
    [
        (("history", "x/a"), "leave --limit out for all of them"),
        (("ls",), "leave --limit out for all of them"),
        (("search", "a"), "leave --limit out for 20"),
    ],
)
@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_limit_below_1_is_bad_usage(run, args: tuple[str, ...], unset: str, limit: str) -> None:
    """`--limit 0` listed nothing, exit 0: "0 blueprint(s)" to a script that computed it."""
    stderr = _usage_error(run, (*args, "--limit", limit))
    assert f"--limit must be 1 or more, not {limit} ({unset})" in stderr
    r = run("--json", *args, "--limit", "1")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 1, r.output
    # The range is in the help too.
    assert "x>=1]" in run(args[0], "--help").stdout


@pytest.mark.parametrize("args", [("history", "x/a"), ("ls",), ("search", "a")])
def test_a_huge_limit_or_offset_is_no_error(run, args: tuple[str, ...]) -> None:
    """One past 64 bits means the same as the largest (the store clamps it for SQLite)."""
    huge = str(10**30)
    r = run("--json", *args, "--limit", huge)
    assert r.exit_code == 0 and len(json.loads(r.stdout)) >= 1, r.output
    if args[0] != "history":
        r = run("--json", *args, "--offset", huge)
        assert r.exit_code == 0 and json.loads(r.stdout) == [], r.output


@pytest.mark.parametrize(
    "args",
    [
        ("conflicts", "show", "0"),
        ("conflicts", "show", "--", "-1"),
        ("conflicts", "resolve", "0", "--take", "local"),
        ("conflicts", "resolve", "--take", "local", "--", "-2"),
    ],
)
def test_a_conflict_number_below_1_is_bad_usage(run, args: tuple[str, ...]) -> None:
    """`conflicts show -- -1` was the library's "cid must be >= 0, not -1 (pass 0 or more as
    cid)" and `conflicts show 0` "there is no conflict #0", exit 4: conflicts count from 1."""
    number = next(a for a in args if a.lstrip("-").isdigit())
    stderr = _usage_error(run, args)
    assert f"CID {number} is not a conflict number (conflicts are numbered from 1" in stderr
    assert "'localstore conflicts list --all' lists them" in stderr
    assert run("conflicts", "list", "--all").exit_code == 0  # (the command it names exists)


def test_a_negative_conflict_number_read_as_an_option_gets_advice(run) -> None:
    """`conflicts show -1` advised "as in 'localstore conflicts show show -- -1'": the word after
    `conflicts` was the subcommand's own name, repeated; and '--' only led to the next error."""
    r = run("conflicts", "show", "-1")
    assert r.exit_code == 2
    assert "-1 is not a conflict number either: conflicts are numbered from 1" in r.stderr
    assert "show show" not in r.stderr
    r = run("cred", "get", "-xy")
    assert r.exit_code == 2
    assert "as in 'localstore cred get -- -xy'" in r.stderr, r.stderr


def test_a_conflict_number_past_64_bits_is_not_found_as_typed(run) -> None:
    """It was looked up as the largest 64-bit number, and the error named that one:
    "there is no conflict #9223372036854775807"."""
    huge = str(10**30)
    r = run("conflicts", "show", huge)
    assert r.exit_code == 4
    assert r.stderr == f"error: there is no conflict #{huge} (see `localstore conflicts`)\n"


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--port", "-1", "0<=x<=65535"),
        ("--port", "70000", "0<=x<=65535"),
        ("--ttl", "0", "1<=x<=604800"),
        ("--ttl", "-100", "1<=x<=604800"),
        ("--ttl", "1000000000000", "1<=x<=604800"),
    ],
)
def test_cloud_start_refuses_a_port_or_ttl_out_of_range_before_starting(
    run, home: Path, option: str, value: str, allowed: str
) -> None:
    """`--port 70000` started PostgreSQL before the gateway's bind() failed (exit 1); a --ttl
    below 1 gave tokens expired when issued ("JWT expired" at the first sync), and one of
    10**12 s killed the client's refresh-timer thread with an OverflowError at login."""
    r = run("cloud", "start", option, value)
    if r.exit_code == 0:  # (a regression started the stack: stop it, then fail)
        run("cloud", "stop")
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{option}': {value} is not in the range {allowed}" in r.stderr
    assert not (home / "state" / "localcloud.log").exists()  # (nothing was started)


def _commands(group: click.Group, ctx: click.Context) -> Iterator[click.Command]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield command
        if isinstance(command, click.Group):
            yield from _commands(command, click.Context(command, parent=ctx, info_name=name))


def test_every_number_the_cli_takes_has_a_range() -> None:
    """A bare int took -1, 0 and 10**30 alike: `history --before -1` listed nothing, exit 0.
    Each number is a range (IntRange, or a revision or conflict number, which start at 1)."""
    bare = [
        f"{command.name} {param.name}"
        for command in _commands(cli, click.Context(cli, info_name="localstore"))
        for param in command.params
        if param.type is click.INT or param.type is click.FLOAT
    ]
    assert bare == []
