"""Resolving a conflict after the blueprint changed again (review of conflict resolution).

The other device edits the blueprint once more after this device recorded the conflict, and the
newer version reaches this device before the person resolves. `--take local`, `--take FILE` and
`--tool` write over the blueprint as it is now, which holds that newer edit, not the "remote"
side the record (and `conflicts show`) holds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from localstore.cli import cli

from .conftest import Device, converge

BASE = "name: flow\nsteps: 3\n"
NEWER = "name: flow\nsteps: 4\nnote: newer, from a\n"


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=env, catch_exceptions=False)


def _conflict_then_newer_edit(make_device: Callable[..., Device]) -> tuple[Device, Device, str]:
    """b holds conflict #1 (a's steps: 4 against b's steps: 5); a then edits again and b pulls
    that newer version before resolving."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("c/flow", BASE).id
    converge(a, b)
    a.store.save("c/flow", "name: flow\nsteps: 4\n")
    b.store.save("c/flow", "name: flow\nsteps: 5\n")
    a.sync()
    assert b.sync().conflicts == 1
    converge(a, b)
    a.store.save("c/flow", NEWER)
    converge(a, b)
    assert b.text(ident) == NEWER
    return a, b, ident


def test_take_local_says_it_replaces_an_edit_made_since_the_conflict(
    make_device: Callable[..., Device],
) -> None:
    """It wrote the local side over a's newer edit with nothing said: "#1 resolved: take local",
    and that edit was gone from the files on every device."""
    a, b, ident = _conflict_then_newer_edit(make_device)
    newer_rev = b.store.row(ident).rev
    result = run(b.home, "--json", "conflicts", "resolve", "1", "--take", "local")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["replaced"] == {"id": ident, "rev": newer_rev}
    assert "changed since the conflict" in data["resolution"]
    assert b.text(ident) == "name: flow\nsteps: 5\n"  # what was asked for
    human = run(b.home, "conflicts", "list", "--all")
    assert "changed since the conflict" in human.output
    converge(a, b)
    # The replaced version stays in history, and the command that brings it back works.
    back = run(b.home, "restore", ident, str(newer_rev))
    assert back.exit_code == 0, back.output
    assert b.text(ident) == NEWER


def test_take_local_says_so_on_the_terminal_with_the_restore_command(
    make_device: Callable[..., Device],
) -> None:
    _, b, ident = _conflict_then_newer_edit(make_device)
    newer_rev = b.store.row(ident).rev
    result = run(b.home, "conflicts", "resolve", "1", "--take", "local")
    assert result.exit_code == 0, result.output
    assert "changed since conflict #1" in result.stderr
    assert f"localstore restore {ident} {newer_rev}" in result.stderr


def test_take_file_says_so_too(make_device: Callable[..., Device], tmp_path: Path) -> None:
    _, b, ident = _conflict_then_newer_edit(make_device)
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text("name: flow\nsteps: 45\n", encoding="utf-8")
    result = run(b.home, "--json", "conflicts", "resolve", "1", "--take", str(chosen))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["replaced"]["id"] == ident


def test_take_remote_keeps_the_newer_edit_and_replaces_nothing(
    make_device: Callable[..., Device],
) -> None:
    a, b, ident = _conflict_then_newer_edit(make_device)
    result = run(b.home, "--json", "conflicts", "resolve", "1", "--take", "remote")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["replaced"] is None and data["resolution"] == "take remote"
    converge(a, b)
    assert a.text(ident) == NEWER and len(a.store.list()) == 1


def test_a_resolve_with_nothing_changed_since_replaces_nothing(
    make_device: Callable[..., Device],
) -> None:
    a, b = make_device("a"), make_device("b")
    a.store.save("c/flow", BASE)
    converge(a, b)
    a.store.save("c/flow", "name: flow\nsteps: 4\n")
    b.store.save("c/flow", "name: flow\nsteps: 5\n")
    a.sync()
    b.sync()
    result = run(b.home, "--json", "conflicts", "resolve", "1", "--take", "local")
    data = json.loads(result.stdout)
    assert data["replaced"] is None and data["resolution"] == "take local"
    assert run(b.home, "conflicts", "resolve", "1", "--take", "local").exit_code == 1


def test_the_merge_tool_gets_the_blueprint_as_it_is_now_as_remote(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """%REMOTE held the text recorded with the conflict: a merge made in the tool could not
    hold a's newer edit, and taking it dropped that edit with nothing said."""
    a, b, ident = _conflict_then_newer_edit(make_device)
    tool = tmp_path / "take_remote_plus.py"  # MERGED = REMOTE with one line more
    tool.write_text(
        "import sys\n"
        "text = open(sys.argv[1], encoding='utf-8').read()\n"
        "open(sys.argv[2], 'w', encoding='utf-8').write(text + 'merged: yes\\n')\n",
        encoding="utf-8",
    )
    env = {"LOCALSTORE_MERGE_TOOL": f"{sys.executable} {tool} %REMOTE %MERGED"}
    result = run(b.home, "conflicts", "resolve", "1", "--tool", env=env)
    assert result.exit_code == 0, result.output
    assert b.text(ident) == NEWER + "merged: yes\n"
    converge(a, b)
    assert a.text(ident) == NEWER + "merged: yes\n"


def test_show_says_the_blueprint_changed_since(make_device: Callable[..., Device]) -> None:
    _, b, _ = _conflict_then_newer_edit(make_device)
    shown = run(b.home, "conflicts", "show", "1")
    assert shown.exit_code == 0
    assert "changed since this conflict" in shown.output
    data = json.loads(run(b.home, "--json", "conflicts", "show", "1").stdout)
    assert data["current"] == NEWER and data["changed_since"] is True
