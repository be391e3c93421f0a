"""A folder filter matches the folder as paths collide (files.path_key), not only as spelled.

Folder names are unique by their key: ``save("projects/b")`` is refused beside ``Projects/``.
Yet ``list(folder="projects")``, ``folder="PROJECTS"`` and ``search(..., folder="projects")``
answered []. The filter must still read the folder index (a page sorted by path walks it in
order), and the rarer store that holds two spellings (files made on a case-sensitive disk) must
answer every blueprint of both without reading the whole table. Query plans, not times.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.errors import UnsafePathError
from tests.conftest import run_cli
from tests.store.query_plans import blueprint_scans, query_plans

SPELLINGS = ["Projects", "projects", "PROJECTS", "/projects/", "pRoJeCtS"]
INSIDE = ["Projects/a", "Projects/b", "Projects/sub/c"]


def _paths(infos: list[Any]) -> list[str]:
    return [i.path.removesuffix(".blueprint.yaml") for i in infos]


@pytest.fixture
def projects(store: Any) -> Any:
    for path in [*INSIDE, "projectsx/d", "other/e", "top"]:
        store.save(path, "steps: []\n", tags=["ci"], description="deploy")
    with pytest.raises(UnsafePathError):
        store.save("projects/z", "steps: []\n")  # (one folder by its key: refused)
    return store


@pytest.mark.parametrize("folder", SPELLINGS)
def test_a_folder_is_listed_and_searched_whatever_its_case(projects: Any, folder: str) -> None:
    assert _paths(projects.list(folder=folder)) == INSIDE
    assert _paths(projects.list(folder=folder, recursive=False)) == INSIDE[:2]
    assert _paths(projects.list(folder=folder, sort="name", limit=2, offset=1)) == INSIDE[1:]
    assert _paths(projects.list(folder=folder.strip("/") + "/SUB")) == INSIDE[2:]
    assert _paths(projects.list(folder=folder, tag="ci")) == INSIDE
    assert sorted(_paths([h.info for h in projects.search("deploy", folder=folder)])) == INSIDE
    assert projects.list(folder=folder, tag="CI") == []  # (tags: as written, by design)


def test_a_folder_is_matched_whatever_its_unicode_case_and_form(store: Any) -> None:
    store.save("Écoles/a", "steps: []\n")
    store.save("ΣΟΦΙΑ/b", "steps: []\n")
    for folder in ("écoles", unicodedata.normalize("NFD", "ÉCOLES")):
        assert _paths(store.list(folder=folder)) == ["Écoles/a"]
    assert _paths(store.list(folder="σοφια")) == ["ΣΟΦΙΑ/b"]  # (final sigma folds alike)
    assert _paths(store.list(folder="σοφιας")) == []


@pytest.mark.parametrize("recursive", [False, True])
def test_a_page_of_a_folder_reads_the_folder_index(projects: Any, recursive: bool) -> None:
    """The store's one spelling is found, and the folder index read as before: a folder's own
    blueprints in path order; with those below it, one range of it (sorted for the page)."""
    plans = query_plans(
        projects, lambda: projects.list(folder="projects", limit=2, recursive=recursive)
    )
    listing = [plan for sql, plan in plans if "ORDER BY" in sql]
    assert len(listing) == 1
    assert "INDEX blueprints_folder (folder" in listing[0][0]
    assert any("TEMP B-TREE" in step for step in listing[0]) == recursive
    assert blueprint_scans(projects, lambda: projects.list(folder="projects", limit=2)) == []


@pytest.fixture
def two_spellings(projects: Any, home: Path) -> Any:
    """A second spelling of the folder, made beside the first on a case-sensitive disk and
    read in by the next open's reconcile."""
    projects.close()
    folder = home / "blueprints" / "projects"
    folder.mkdir()
    (folder / "x.blueprint.yaml").write_text("steps: []\n")
    with localstore.open(home=home) as s:
        assert "projects/x.blueprint.yaml" in [i.path for i in s.list()]
        yield s


def test_a_folder_held_under_two_spellings_lists_both(two_spellings: Any) -> None:
    s = two_spellings
    both = ["Projects/a", "Projects/b", "Projects/sub/c", "projects/x"]
    for folder in ("Projects", "projects", "PROJECTS"):
        assert _paths(s.list(folder=folder)) == both
        assert _paths(s.list(folder=folder, recursive=False)) == [both[0], both[1], both[3]]
        assert _paths(s.list(folder=folder, limit=2, offset=2)) == both[2:]
        assert blueprint_scans(s, functools.partial(s.list, folder=folder, limit=2)) == []
        assert blueprint_scans(s, functools.partial(s.search, "steps", folder=folder)) == []
    assert [h.info.path for h in s.search("x", folder="PROJECTS")] == ["projects/x.blueprint.yaml"]


def test_the_cli_filters_folders_whatever_their_case(home: Path) -> None:
    with localstore.open(home=home) as s:
        s.save("Projects/a", "steps: []\n", description="deploy")
        s.save("other/b", "steps: []\n", description="deploy")
    listed = run_cli(home, "--json", "ls", "--folder", "projects")
    assert listed.returncode == 0, listed.stderr
    assert [i["path"] for i in json.loads(listed.stdout)] == ["Projects/a.blueprint.yaml"]
    found = run_cli(home, "--json", "search", "deploy", "--folder", "PROJECTS")
    assert found.returncode == 0, found.stderr
    assert [h["path"] for h in json.loads(found.stdout)] == ["Projects/a.blueprint.yaml"]


def _spelling_reads(store: Any, run: Any) -> int:
    """How many times ``run`` counts a folder's blueprints to find its spellings."""
    return sum(sql.startswith("SELECT (SELECT count(*)") for sql, _ in query_plans(store, run))


def test_a_folders_spellings_are_counted_once_while_no_blueprint_changes(
    projects: Any, home: Path
) -> None:
    """The two counts read the folder's whole range (a page of a large folder paid for all of
    it): kept per folder key until a blueprint changes, in this handle or another."""

    def ask() -> None:
        assert _paths(projects.list(folder="projects", limit=2)) == INSIDE[:2]
        assert len(projects.search("deploy", folder="PROJECTS")) == 3
        assert _paths(projects.list(folder="projects/SUB")) == INSIDE[2:]

    assert _spelling_reads(projects, ask) == 2  # (two folder keys; the search's is kept)
    assert _spelling_reads(projects, ask) == 0
    with localstore.open(home=home) as other:
        other.save("other/f", "steps: []\n")  # (any blueprint: the counter moves)
    assert _spelling_reads(projects, ask) == 2


def test_a_second_spelling_is_counted_again_once_recorded(projects: Any, home: Path) -> None:
    assert _paths(projects.list(folder="projects")) == INSIDE
    folder = home / "blueprints" / "projects"
    folder.mkdir()
    (folder / "x.blueprint.yaml").write_text("steps: []\n")
    projects.reconcile()
    assert _paths(projects.list(folder="PROJECTS")) == [*INSIDE, "projects/x"]
    assert _paths(projects.list(folder="projects", recursive=False)) == [*INSIDE[:2], "projects/x"]


def test_a_folder_asked_empty_is_found_once_another_handle_saves_in_it(
    store: Any, home: Path
) -> None:
    assert store.list(folder="team") == []  # (kept: the spelling asked, "team")
    with localstore.open(home=home) as other:
        other.save("Team/a", "steps: []\n")
    assert _paths(store.list(folder="team")) == ["Team/a"]
    assert [h.info.path for h in store.search("steps", folder="TEAM")] == ["Team/a.blueprint.yaml"]


def test_a_folder_filtered_inside_a_write_sees_its_uncommitted_rows(store: Any) -> None:
    """A save's tx_hook runs before the counter moves: a kept answer would be stale there."""
    assert store.list(folder="team") == []
    seen: list[list[str]] = []
    store.save(
        "Team/a",
        "steps: []\n",
        tx_hook=lambda cur, bp: seen.append(_paths(store.list(folder="team"))),
    )
    assert seen == [["Team/a"]]
    assert _paths(store.list(folder="team")) == ["Team/a"]
