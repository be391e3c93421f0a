"""Paging a long history: history(limit=, before=) and `localstore history --limit --before`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from localstore.errors import InvalidInputError


def _edited(store, times: int) -> str:
    bp = store.save("team/flow", "step: 0\n")
    for k in range(1, times):
        store.save("team/flow", f"step: {k}\n")
    return bp.id


def test_pages_by_before_cover_the_history_once_newest_first(store) -> None:
    ident = _edited(store, 7)
    everything = store.history(ident)
    assert [r.rev for r in everything] == [7, 6, 5, 4, 3, 2, 1]  # (no limit: every revision)
    pages, before = [], None
    while True:
        page = store.history(ident, limit=3, before=before)
        pages.append([r.rev for r in page])
        if len(page) < 3:
            break
        before = page[-1].rev
    assert pages == [[7, 6, 5], [4, 3, 2], [1]]
    assert store.history(ident, before=3) == everything[-2:]
    assert store.history(ident, limit=0) == [] and store.history(ident, before=1) == []


def test_a_save_between_pages_neither_repeats_nor_skips(store) -> None:
    ident = _edited(store, 5)
    first = store.history(ident, limit=2)
    store.save("team/flow", "step: new\n")
    second = store.history(ident, limit=2, before=first[-1].rev)
    assert [r.rev for r in first + second] == [5, 4, 3, 2]


@pytest.mark.parametrize(
    "kwargs", [{"limit": -1}, {"limit": 1.5}, {"limit": "2"}, {"before": "3"}, {"before": True}]
)
def test_bad_paging_arguments_are_refused(store, kwargs: dict) -> None:
    ident = _edited(store, 2)
    with pytest.raises(InvalidInputError):
        store.history(ident, **kwargs)


def test_cli_pages_and_says_how_to_get_the_next_one(store, home: Path) -> None:
    ident = _edited(store, 5)
    store.close()
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["--home", str(home), *args], catch_exceptions=False)

    page = run("--json", "history", "team/flow", "--limit", "2")
    assert page.exit_code == 0, page.output
    assert [r["rev"] for r in json.loads(page.stdout)] == [5, 4] and page.stderr == ""
    page = run("--json", "history", ident, "--limit", "2", "--before", "4")
    assert [r["rev"] for r in json.loads(page.stdout)] == [3, 2]
    last = run("--json", "history", ident, "--limit", "2", "--before", "2")
    assert [r["rev"] for r in json.loads(last.stdout)] == [1]
    # Without paging options every revision, as before (scripts that read the whole list).
    assert len(json.loads(run("--json", "history", ident).stdout)) == 5

    human = run("history", "team/flow", "--limit", "2")
    assert human.exit_code == 0, human.output
    assert "note: older revisions remain: localstore history team/flow --limit 2 --before 4" in (
        human.stderr
    )
    assert "note:" not in run("history", ident, "--limit", "5").stderr  # (nothing older)
    bad = run("history", ident, "--limit", "-1")
    assert bad.exit_code == 2, bad.output
