"""The merge ladder step by step, with real blueprint YAML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from sync.merge import merge3_text

BASE = """\
# Nightly report workflow
name: nightly-report   # shown in the UI
schedule: "0 2 * * *"
steps:
  - id: fetch
    run: curl -s https://example.org/data   # keep quiet
    timeout: 30
  - id: build
    run: make report
  - id: publish
    run: ./publish.sh
notify:
  email: ops@example.org
"""


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_identical_sides_settle_at_step_one() -> None:
    changed = edit(BASE, "timeout: 30", "timeout: 60")
    out = merge3_text(BASE, changed, changed)
    assert (out.status, out.step, out.content) == ("clean", "identical", changed)


@pytest.mark.parametrize("side", ["local", "remote"])
def test_one_sided_change_is_taken_verbatim(side: str) -> None:
    changed = edit(BASE, "make report", "make   report  # odd spacing kept")
    local, remote = (changed, BASE) if side == "local" else (BASE, changed)
    out = merge3_text(BASE, local, remote)
    assert (out.status, out.step, out.content) == ("clean", "one_sided", changed)


def test_one_sided_step_takes_even_invalid_yaml() -> None:
    # Step 1 does not judge content: the store already decided whether the side was valid.
    out = merge3_text(BASE, BASE, "not: [valid")
    assert (out.status, out.content) == ("clean", "not: [valid")


def test_line_step_keeps_comments_and_formatting() -> None:
    local = edit(BASE, "timeout: 30", "timeout: 45")
    remote = edit(BASE, "email: ops@example.org", "email: team@example.org")
    out = merge3_text(BASE, local, remote)
    assert (out.status, out.step) == ("clean", "line")
    assert out.content == edit(local, "email: ops@example.org", "email: team@example.org")
    assert "# keep quiet" in out.content and "# shown in the UI" in out.content


def test_line_step_refuses_a_result_that_does_not_parse() -> None:
    # Both edits are clean line-wise, but together they leave an unclosed flow sequence.
    base = "a: 1\nb: 2\nc: 3\nd: 4\n"
    local = "a: [1,\nb: 2\nc: 3\nd: 4\n"
    remote = "a: 1\nb: 2\nc: 3\nd: 5\n"
    out = merge3_text(base, local, remote)
    assert out.status == "conflict"
    assert any("local YAML does not parse" in c for c in out.conflicts)


def test_line_step_refuses_duplicate_keys_and_structure_decides() -> None:
    base = "a: 1\nb: 2\nc: 3\nd: 4\n"
    local = "a: 1\nnew: left\nb: 2\nc: 3\nd: 4\n"
    remote = "a: 1\nb: 2\nc: 3\nnew: right\nd: 4\n"
    out = merge3_text(base, local, remote)
    # Line-wise this is clean, with `new` twice: a loader would silently keep only "right".
    assert out.status == "conflict" and out.conflicts == ["new"]


def test_line_step_refuses_a_result_the_validator_rejects() -> None:
    def no_two_owners(data: Mapping[str, Any]) -> list[str]:
        return ["owner and team are exclusive"] if "owner" in data and "team" in data else []

    base = "name: x\nsteps: []\nmode: a\n"
    local = "owner: ann\nname: x\nsteps: []\nmode: a\n"
    remote = "name: x\nsteps: []\nmode: a\nteam: ops\n"
    assert merge3_text(base, local, remote).status == "clean"
    out = merge3_text(base, local, remote, validator=no_two_owners)
    assert out.status == "conflict"
    assert out.conflicts == ["merged blueprint fails validation: owner and team are exclusive"]


def test_structural_step_merges_what_lines_cannot() -> None:
    # Touching line edits conflict for diff3; the keys differ, so structure settles it.
    local = edit(BASE, "    timeout: 30", "    timeout: 31")
    remote = edit(BASE, "    timeout: 30\n", "    timeout: 30\n    retries: 2\n")
    out = merge3_text(BASE, local, remote)
    assert (out.status, out.step) == ("clean", "structural")
    data = yaml.safe_load(out.content or "")
    assert data["steps"][0] == {
        "id": "fetch",
        "run": "curl -s https://example.org/data",
        "timeout": 31,
        "retries": 2,
    }
    assert data["steps"][1:] == yaml.safe_load(BASE)["steps"][1:]
    assert "#" not in (out.content or "")  # the documented cost of this step


def test_both_sides_changing_one_value_differently_conflict() -> None:
    local = edit(BASE, "timeout: 30", "timeout: 60")
    remote = edit(BASE, "timeout: 30", "timeout: 90")
    out = merge3_text(BASE, local, remote)
    assert (out.status, out.content, out.step) == ("conflict", None, None)
    assert out.conflicts == ["steps[id='fetch'].timeout"]


def test_structural_step_reports_an_unparsable_side() -> None:
    out = merge3_text(BASE, "name: [", edit(BASE, "timeout: 30", "timeout: 1"))
    assert out.status == "conflict"
    assert out.conflicts[0].startswith("local YAML does not parse")


def test_no_base_merges_against_an_empty_document() -> None:
    out = merge3_text(None, "a: 1\n", "b: 2\n")
    assert out.status == "clean"
    assert yaml.safe_load(out.content or "") == {"a": 1, "b": 2}
    assert merge3_text(None, "a: 1\n", "a: 2\n").conflicts == ["a"]


@pytest.mark.parametrize(
    "max_step,status,step",
    [("one_sided", "conflict", None), ("line", "clean", "line"), ("structural", "clean", "line")],
)
def test_max_step_stops_the_ladder(max_step: Any, status: str, step: str | None) -> None:
    local = edit(BASE, "timeout: 30", "timeout: 45")
    remote = edit(BASE, "email: ops@example.org", "email: team@example.org")
    out = merge3_text(BASE, local, remote, max_step=max_step)
    assert (out.status, out.step) == (status, step)


def test_alias_bomb_is_a_conflict_not_an_explosion() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    out = merge3_text("z: 0\n", bomb, "z: 1\n")
    assert out.status == "conflict"


STEPS = "steps:\n  - id: a\n    run: 1\n  - id: b\n    run: 2\n  - id: c\n    run: 3\n"


def test_line_step_refuses_an_item_id_both_sides_added() -> None:
    """Both sides add step `x` at different places: clean for diff3, with `x` twice.

    With different contents the line step put two steps with one id in the document (which
    wins is up to the app: an edit silently lost or a broken blueprint); the structural step
    matches items by id and calls it a conflict. With equal contents it duplicated the step.
    """
    local = edit(STEPS, "  - id: b\n", "  - id: x\n    run: 9\n  - id: b\n")
    remote = STEPS + "  - id: x\n    run: 7\n"
    out = merge3_text(STEPS, local, remote)
    assert out.status == "conflict" and out.conflicts == ["steps[id='x'].run"]
    same = merge3_text(STEPS, local, STEPS + "  - id: x\n    run: 9\n")
    assert same.status == "clean"
    ids = [s["id"] for s in yaml.safe_load(same.content or "")["steps"]]
    assert sorted(ids) == ["a", "b", "c", "x"]  # one `x`, not two


def test_line_step_keeps_duplicate_item_ids_a_side_already_had() -> None:
    """Only duplicates the merge made are refused: a list that had them is the author's."""
    base = STEPS + "  - id: a\n    run: 4\n"
    local = edit(base, "run: 2", "run: 5")
    remote = edit(base, "run: 4", "run: 6")
    out = merge3_text(base, local, remote)
    assert (out.status, out.step) == ("clean", "line")


@pytest.mark.parametrize(
    ("base", "deleted", "moved", "expected"),
    [
        (  # a key: local deletes `name`, remote moves it to the end
            "# t\nname: x\ntimeout: 30\nowner: me\n",
            "# t\ntimeout: 30\nowner: me\n",
            "# t\ntimeout: 30\nowner: me\nname: x\n",
            {"timeout": 30, "owner": "me"},
        ),
        (  # a list item: local deletes step b, remote moves it last
            STEPS + "  - id: d\n    run: 4\n",
            edit(STEPS, "  - id: b\n    run: 2\n", "") + "  - id: d\n    run: 4\n",
            edit(STEPS, "  - id: b\n    run: 2\n", "")
            + "  - id: d\n    run: 4\n  - id: b\n    run: 2\n",
            {"steps": [{"id": "a", "run": 1}, {"id": "c", "run": 3}, {"id": "d", "run": 4}]},
        ),
    ],
)
def test_a_delete_on_one_side_and_a_move_on_the_other_stays_deleted(
    base: str, deleted: str, moved: str, expected: dict[str, Any]
) -> None:
    """diff3 sees the move as a deleted line and an added one: both deletions agree, the added
    line stayed, and the line step brought the deleted key (or step) back. The structural merge
    is clean (a move alone changes no value), so the line result with other data is refused."""
    for local, remote in ((deleted, moved), (moved, deleted)):
        out = merge3_text(base, local, remote)
        assert (out.status, out.step) == ("clean", "structural")
        assert yaml.safe_load(out.content or "") == expected


@pytest.mark.parametrize("swap", [False, True])
def test_a_comment_only_edit_next_to_a_change_keeps_the_changing_sides_text(swap: bool) -> None:
    # The comment edit touches the other side's changed line, so diff3 conflicts and the structural
    # step decides. Its data is the changing side's own: that side's text, comments and all, not a
    # dump that dropped the comments of both sides (as it did), and the comment the other side
    # wrote above the key (a comment on the changed line itself is the changing side's).
    base = "a: 1\nb: 2\nc: 3\n"
    comments = "# about a\na: 1  # one\nb: 2\nc: 3\n"
    change = "a: 10  # ten\nb: 2\n\nc: 3\n"
    local, remote = (change, comments) if swap else (comments, change)
    out = merge3_text(base, local, remote)
    assert (out.status, out.step) == ("clean", "structural")
    assert out.content == "# about a\n" + change


def test_a_structural_result_that_is_neither_side_keeps_the_changed_blocks_text() -> None:
    base = "a: 1\nb: 2\n"
    out = merge3_text(base, "a: 5  # five\nb: 2\n", "a: 1  # x\nb: 7\n")  # touching lines
    assert (out.status, out.step) == ("clean", "structural")
    # Both sides changed a's line (remote only its comment): a's value is local's, so its line
    # is; remote's comment edit on that line is the one thing not kept. It was a dump of both.
    assert out.content == "a: 5  # five\nb: 7\n"


def test_equal_data_in_two_layouts_takes_the_servers_text() -> None:
    base = "a: 1\nb: 2\n"
    local = "a: 1   # mine\nb: 2\n"
    remote = "a: 1  # theirs\nb: 2\n"
    out = merge3_text(base, local, remote)
    assert (out.status, out.step, out.content) == ("clean", "structural", remote)
