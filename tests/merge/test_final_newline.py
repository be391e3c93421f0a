"""A side's change of the file's final newline is kept when the other side did not change it.

Formatting only, but a change all the same: one side removing the final newline while the other
edited the last line is a line conflict (both changed that line), and the structural step's
text took the edited side's last block, final newline and all: the removal was lost. The
structural step's text now gets the final newline merged 3-way, as the line step's diff3 does
when the edits are apart.
"""

from __future__ import annotations

import pytest

from localstore.blueprint import parse_yaml
from sync.merge import merge3_text

BASE = "# a workflow\nname: build\nsteps: 3\ntimeout: 30\n"


def _both_orders(base: str, one: str, other: str) -> list[tuple[str | None, str | None]]:
    out: list[tuple[str | None, str | None]] = []
    for lo, re_ in ((one, other), (other, one)):
        merged = merge3_text(base, lo, re_)
        assert merged.status == "clean", merged.conflicts
        out.append((merged.step, merged.content))
    return out


@pytest.mark.parametrize(
    ("other", "want"),
    [
        # The last line edited: a line conflict, settled by the structural step's block text.
        (BASE.replace("timeout: 30", "timeout: 45"), "timeout: 45"),
        # A key added at the end: the same (diff3 sees both sides change the end).
        (BASE + "retries: 2\n", "timeout: 30\nretries: 2"),
        # A comment added at the end: the structural step's data is the removing side's own.
        (BASE + "# end\n", "timeout: 30\n# end"),
    ],
)
def test_removing_the_final_newline_is_kept_with_an_edit_of_the_last_line(
    other: str, want: str
) -> None:
    removed = BASE.removesuffix("\n")
    expected = BASE.replace("timeout: 30\n", want)
    for step, content in _both_orders(BASE, removed, other):
        assert content == expected, step


def test_adding_the_final_newline_is_kept_with_an_edit_of_the_last_line() -> None:
    base = BASE.removesuffix("\n")
    added = BASE
    edited = base.replace("timeout: 30", "timeout: 45")
    for step, content in _both_orders(base, added, edited):
        assert content == BASE.replace("timeout: 30", "timeout: 45"), step


def test_a_final_newline_neither_side_changed_stays_as_it_was() -> None:
    base = BASE.removesuffix("\n")
    local = base.replace("name: build", "name: test").replace("timeout: 30", "timeout: 45")
    remote = base.replace("timeout: 30", "timeout: 60").replace("steps: 3", "steps: 4")
    out = merge3_text(base, local, remote)
    assert out.status == "conflict"  # (timeout changed on both sides: the control case)
    remote = base.replace("steps: 3", "steps: 4") + "\nretries: 1"
    for step, content in _both_orders(base, local, remote):
        assert content is not None and not content.endswith("\n"), step


def test_crlf_final_line_break_removed_on_one_side() -> None:
    crlf = BASE.replace("\n", "\r\n")
    removed = crlf.removesuffix("\r\n")
    edited = crlf.replace("timeout: 30", "timeout: 45")
    for step, content in _both_orders(crlf, removed, edited):
        assert content == edited.removesuffix("\r\n"), step


def test_a_final_newline_that_is_data_is_not_taken_off() -> None:
    """The merge ends with a ``|`` scalar the other side added: its final line break is the
    value's last character, so taking it off would change the data; it stays."""
    base = "name: x\ntimeout: 30\n"
    removed = base.removesuffix("\n")
    added = base + "script: |\n  echo hi\n"
    for step, content in _both_orders(base, removed, added):
        assert content == added, step
        assert parse_yaml(content)["script"] == "echo hi\n"
