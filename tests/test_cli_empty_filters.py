"""Filters that are empty or match nothing, as a person typing them meets them.

`ls --tag ''` listed every blueprint (an empty filter was no filter), and `export --tag nope`
wrote a bundle of nothing and exited 0 without a word: a typo in the tag gave a backup of
nothing. An import's dry run said exit 0 where the import itself would exit 3. The CLI runs in
a process of its own, on a real home.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localstore import InvalidInputError, NotFoundError
from localstore.archive import export_bundle
from localstore.store import open_store
from tests.conftest import run_cli


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    assert run_cli(h, "save", "team/x", "--tag", "t1", stdin="a: 1\n").returncode == 0
    assert run_cli(h, "save", "y", stdin="a: 2\n").returncode == 0
    return h


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--tag", ""],
        ["ls", "--tag", "  "],
        ["ls", "--folder", ""],
        ["search", "a", "--tag", ""],
        ["search", "a", "--folder", ""],
        ["export", "--tag", "", "-o", "OUT"],
        ["export", "--folder", "", "-o", "OUT"],
    ],
)
def test_an_empty_filter_is_bad_usage_with_a_hint(
    home: Path, tmp_path: Path, args: list[str]
) -> None:
    out = tmp_path / "out.lsbundle"
    args = [str(out) if a == "OUT" else a for a in args]
    done = run_cli(home, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    option = "--tag" if "--tag" in args else "--folder"
    assert done.stderr.startswith(f"error: {option} is empty"), done.stderr
    assert "leave" in done.stderr and done.stdout == ""
    assert not out.exists()
    done = run_cli(home, "--json", *args)
    assert done.returncode == 2 and done.stdout == ""
    error = json.loads(done.stderr)["error"]
    assert error["exit_code"] == 2 and error["hint"], error


def test_the_api_refuses_an_empty_tag_filter_as_the_cli_does(home: Path) -> None:
    """An empty tag can match nothing (saves drop empty tags), and taking it as "no filter"
    answered everything: refused, as `--tag ''` is."""
    store = open_store(home)
    try:
        for tag in ("", " \t"):
            with pytest.raises(InvalidInputError, match="tag filter is empty"):
                store.list(tag=tag)
            with pytest.raises(InvalidInputError, match="tag filter is empty"):
                store.search("a", tag=tag)
            with pytest.raises(InvalidInputError, match="tag filter is empty"):
                export_bundle(store, home / "x.lsbundle", refs=["y"], tag=tag)
        assert not (home / "x.lsbundle").exists()
        assert [i.path for i in store.list(tag=None)] == [
            "team/x.blueprint.yaml",
            "y.blueprint.yaml",
        ]
    finally:
        store.close()


def test_the_api_refuses_an_empty_folder_filter_as_the_cli_does(home: Path) -> None:
    """folder="" was "no filter" in the API (every blueprint answered to an app whose folder
    variable was left unset) while the CLI refused `--folder ''`: refused in both."""
    store = open_store(home)
    try:
        for folder in ("", "  "):
            with pytest.raises(InvalidInputError, match="folder filter is empty") as info:
                store.list(folder=folder)
            assert "folder='/'" in (info.value.hint or "")
            with pytest.raises(InvalidInputError, match="folder filter is empty"):
                store.search("a", folder=folder)
            with pytest.raises(InvalidInputError, match="folder filter is empty"):
                export_bundle(store, home / "x.lsbundle", folder=folder)
        assert not (home / "x.lsbundle").exists()
        assert [i.path for i in store.list(folder="/")] == ["y.blueprint.yaml"]
        assert len(store.list(folder=None)) == 2
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "asked"),
    [
        (["--tag", "nope"], "with tag 'nope'"),
        (["--folder", "missing"], "in folder 'missing'"),
        (["--folder", "team", "--tag", "nope"], "in folder 'team' with tag 'nope'"),
        (["y", "--tag", "nope"], "with tag 'nope'"),
    ],
)
def test_an_export_whose_filter_matches_nothing_writes_no_bundle_and_exits_4(
    home: Path, tmp_path: Path, args: list[str], asked: str
) -> None:
    out = tmp_path / "out.lsbundle"
    done = run_cli(home, "export", *args, "-o", str(out))
    assert done.returncode == 4, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"error: no blueprint {asked}"), done.stderr
    assert "localstore ls" in done.stderr
    assert not out.exists() and list(tmp_path.glob("out*")) == []
    done = run_cli(home, "--json", "export", *args, "-o", str(out))
    assert done.returncode == 4 and done.stdout == ""
    assert json.loads(done.stderr)["error"]["exit_code"] == 4
    assert not out.exists()


def test_an_encrypted_export_refuses_a_filter_that_matches_nothing_before_asking(
    home: Path, tmp_path: Path
) -> None:
    """`export --encrypt --tag nope` asked for the passphrase (twice, on a terminal; with no
    terminal it failed for want of one, exit 2) before finding that nothing matched."""
    out = tmp_path / "out.lsbundle"
    done = run_cli(home, "export", "--encrypt", "--tag", "nope", "-o", str(out), stdin="")
    assert done.returncode == 4, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: no blueprint with tag 'nope'"), done.stderr
    assert "passphrase" not in done.stderr
    assert not out.exists()
    # A selection that matches still needs the passphrase (tests/archive: the export itself).
    done = run_cli(home, "export", "--encrypt", "--tag", "t1", "-o", str(out), stdin="")
    assert done.returncode == 2 and "passphrase" in done.stderr, done.stderr
    assert not out.exists()


def test_an_encrypted_export_refuses_a_missing_destination_folder_before_asking(
    home: Path, tmp_path: Path
) -> None:
    """`export --encrypt -o typo/out.lsbundle` asked for the passphrase (twice, on a terminal)
    before the export found that the folder it was to write into does not exist."""
    out = tmp_path / "no-such-folder" / "out.lsbundle"
    done = run_cli(home, "export", "--encrypt", "-o", str(out), stdin="")
    assert "passphrase" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.stdout, done.stderr)  # (a mistyped -o: bad usage)
    assert "does not exist" in done.stderr
    assert not out.parent.exists()


def test_the_export_api_raises_not_found_for_a_filter_that_matches_nothing(home: Path) -> None:
    store = open_store(home)
    try:
        with pytest.raises(NotFoundError, match="no blueprint in folder 'missing'"):
            export_bundle(store, home / "x.lsbundle", folder="missing")
        assert not (home / "x.lsbundle").exists()
        # A folder or tag that does match still exports, and so does a whole home.
        assert export_bundle(store, home / "x.lsbundle", tag="t1").count == 1
    finally:
        store.close()


def test_exporting_an_empty_home_still_writes_an_empty_bundle(tmp_path: Path) -> None:
    """No filter: the bundle is a true copy of an empty home (a backup script's first run)."""
    home = tmp_path / "empty"
    assert run_cli(home, "init").returncode == 0
    out = tmp_path / "all.lsbundle"
    done = run_cli(home, "export", "-o", str(out))
    assert done.returncode == 0 and out.exists(), done.stderr
    assert "exported 0 blueprint(s)" in done.stderr


@pytest.mark.parametrize(
    ("args", "title", "asked"),
    [
        (["ls", "--tag", "nope"], "0 blueprint(s) with tag 'nope'", "with tag 'nope'"),
        (
            ["ls", "--folder", "missing"],
            "0 blueprint(s) in folder 'missing'",
            "in folder 'missing'",
        ),
        (
            ["search", "a", "--folder", "missing", "--tag", "t1"],
            "0 match(es) for 'a' in folder 'missing' with tag 't1'",
            "in folder 'missing' with tag 't1'",
        ),
    ],
)
def test_a_listing_whose_filter_matches_nothing_says_what_was_asked(
    home: Path, args: list[str], title: str, asked: str
) -> None:
    """Exit 0 (a query that finds nothing is an answer; scripts read `[]`), but the title names
    the filter and stderr says nothing is there, so a typo is not taken for an empty folder."""
    done = run_cli(home, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == title, done.stdout
    assert done.stderr.startswith(f"note: no blueprint {asked}"), done.stderr
    done = run_cli(home, "--json", *args)
    assert done.returncode == 0 and json.loads(done.stdout) == [] and done.stderr == ""


def test_a_listing_names_its_filter_when_it_finds_something_too(home: Path) -> None:
    done = run_cli(home, "ls", "--folder", "team", "--tag", "t1")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines()[0] == "1 blueprint(s) in folder 'team' with tag 't1'"


def test_a_dry_run_that_would_skip_conflicts_exits_3_as_the_import_would(
    home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b.lsbundle"
    assert run_cli(home, "export", "-o", str(out)).returncode == 0
    dst = tmp_path / "dst"
    assert run_cli(dst, "import", str(out)).returncode == 0
    assert run_cli(dst, "save", "y", stdin="mine: 1\n").returncode == 0
    assert run_cli(home, "save", "y", stdin="theirs: 1\n").returncode == 0
    assert run_cli(home, "export", "-o", str(out)).returncode == 0
    dry = run_cli(dst, "import", str(out), "--dry-run")
    assert dry.returncode == 3, (dry.stdout, dry.stderr)
    assert "would be left as they are here" in dry.stderr
    dry = run_cli(dst, "--json", "import", str(out), "--dry-run")
    assert dry.returncode == 3 and json.loads(dry.stdout)["dry_run"] is True
    assert (dst / "blueprints" / "y.blueprint.yaml").read_text() == "mine: 1\n"
    assert run_cli(dst, "import", str(out)).returncode == 3
    # With a policy that decides, the dry run (and the import) need nothing more.
    assert (
        run_cli(dst, "import", str(out), "--dry-run", "--on-conflict", "keep-both").returncode == 0
    )


def test_importing_an_empty_bundle_says_it_is_empty(tmp_path: Path) -> None:
    """'would: nothing' read the same for an empty bundle as for one already imported."""
    empty = tmp_path / "empty"
    assert run_cli(empty, "init").returncode == 0
    out = tmp_path / "none.lsbundle"
    assert run_cli(empty, "export", "-o", str(out)).returncode == 0
    for dry in (["--dry-run"], []):
        done = run_cli(tmp_path / "dst", "import", str(out), *dry)
        assert done.returncode == 0, done.stderr
        verb = "would" if dry else "did"
        assert f"{verb}: nothing (the bundle holds no blueprints)" in done.stderr


def test_show_and_history_of_a_deleted_blueprint(home: Path) -> None:
    """Pinned: show is 'not found' (exit 4) naming history and restore; history still lists the
    revisions (exit 0), the delete marked, which is where the number to restore comes from."""
    assert run_cli(home, "rm", "y").returncode == 0
    done = run_cli(home, "show", "y")
    assert done.returncode == 4 and done.stdout == ""
    assert "was deleted" in done.stderr and "localstore restore" in done.stderr
    done = run_cli(home, "--json", "show", "y")
    assert done.returncode == 4 and json.loads(done.stderr)["error"]["exit_code"] == 4
    done = run_cli(home, "history", "y")
    assert done.returncode == 0 and "2 (deleted)" in done.stdout, done.stdout
    done = run_cli(home, "--json", "history", "y")
    assert done.returncode == 0
    assert [(r["rev"], r["deleted"]) for r in json.loads(done.stdout)] == [(2, True), (1, False)]


@pytest.mark.parametrize(
    "args",
    [
        ["search", "nosuchword", "--tag", "t1"],
        ["search", "nosuchword", "--folder", "team"],
        ["search", "a", "--folder", "team", "--offset", "5"],
        ["ls", "--tag", "t1", "--offset", "5"],
        ["ls", "--folder", "team", "--offset", "5"],
    ],
)
def test_no_note_blames_a_filter_that_matches_blueprints(home: Path, args: list[str]) -> None:
    """The note said "no blueprint with tag 't1' (check the spelling)" whenever the answer was
    empty: for a search whose words found nothing among the blueprints tagged t1, and for an
    --offset past the end, the tag was right and the user was sent to look for a typo that was
    not there."""
    done = run_cli(home, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("0 "), done.stdout
    assert "note: no blueprint" not in done.stderr, done.stderr
