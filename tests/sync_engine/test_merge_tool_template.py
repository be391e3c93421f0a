"""A merge_tool template that cannot work is refused before the tool runs, saying what to fix.

An unbalanced quote reached the command line as "unexpected ValueError: No closing quotation
... report it"; a template without %MERGED ran the tool, whose merge (written to %LOCAL, or
nowhere) was then read from an untouched MERGED: the conflict stayed open with "merge and save in
the tool", and the person's merging went with the temp folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Device
from .test_cli_conflicts import _conflicted, run


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{py} '{tool} %BASE %LOCAL %REMOTE %MERGED", "quot"),
        ("{py} '{tool}' %BASE %LOCAL %REMOTE", "%MERGED"),
    ],
)
def test_a_merge_tool_template_that_cannot_work_is_refused_before_the_tool_runs(
    make_device: Callable[..., Device], tmp_path: Path, template: str, says: str
) -> None:
    _, b, ident = _conflicted(make_device)
    ran = tmp_path / "ran"
    tool = tmp_path / "tool.py"
    # A tool that merges into LOCAL (vimdiff's way) and notes that it ran.
    tool.write_text(
        f"import sys\nopen({str(ran)!r}, 'w').write('yes')\n"
        "open(sys.argv[2], 'w').write('name: flow\\nsteps: 45\\n')\n",
        encoding="utf-8",
    )
    env = {"LOCALSTORE_MERGE_TOOL": template.format(py=sys.executable, tool=tool)}
    result = run(b.home, "conflicts", "resolve", "1", "--tool", env=env)
    assert result.exit_code == 1, result.output
    assert "unexpected" not in result.output and "merge_tool" in result.output, result.output
    assert says in result.output, result.output
    assert not ran.exists()  # refused before anyone merged in vain
    assert b.store.load(ident).content == "name: flow\nsteps: 4\n"  # conflict left open
