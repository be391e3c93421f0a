"""A path with spaces at a name's start, or before its suffix, is a reference to that blueprint.

Only a part's last character may not be a space (Windows drops it), so `` lead`` and ``trail ``
(the file ``trail .blueprint.yaml``) are names a save takes. References were stripped before the
path was looked up: those blueprints could not be loaded, moved or deleted by path, and when the
stripped name was taken too, a ``rm " lead"`` deleted ``lead``.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import localstore
from localstore.cli import cli


def test_each_spaced_name_resolves_to_its_own_blueprint(tmp_path: Path) -> None:
    store = localstore.open(home=tmp_path / "home")
    try:
        plain = store.save("lead", "n: 1\n").id
        lead = store.save(" lead", "n: 2\n").id
        trail = store.save("lead ", "n: 3\n").id
        assert store.load(" lead").id == lead
        assert store.load("lead ").id == trail
        assert store.load(" lead.blueprint.yaml").id == lead
        assert store.load("lead").id == plain
        # A reference pasted with a newline still finds the blueprint without it.
        assert store.load("lead\n").id == plain
        store.move(" lead", "moved")
        assert store.load("moved").id == lead and store.load("lead").id == plain
        store.delete("lead ")
        assert store.exists(trail) is False and store.exists(plain)
        # Deleted, the name is still what history and restore are asked by.
        assert store.resolve("lead ", include_deleted=True).id == trail
    finally:
        store.close()


def test_cli_rm_of_a_spaced_name_deletes_that_one(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> str:
        result = runner.invoke(cli, ["--home", home, "--json", *args], input=input)
        assert result.exit_code == 0, result.output
        return result.output

    plain = json.loads(run("save", "lead", input="n: 1\n"))["id"]
    spaced = json.loads(run("save", " lead", input="n: 2\n"))["id"]
    run("rm", " lead")
    assert [b["id"] for b in json.loads(run("ls"))] == [plain]
    assert json.loads(run("history", spaced))[0]["deleted"] is True
