"""Docs are kept true by tests: the CLI reference matches --help, every command is documented."""

from __future__ import annotations

from pathlib import Path

import click

from localstore._cli_docs import render
from localstore.cli import _COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current() -> None:
    current = (ROOT / "docs/cli.md").read_text(encoding="utf-8")
    assert current == render(), "docs/cli.md is stale: python -m localstore._cli_docs > docs/cli.md"


def test_every_command_and_option_is_documented() -> None:
    text = (ROOT / "docs/cli.md").read_text(encoding="utf-8")
    ctx = click.Context(cli, info_name="localstore")
    for name in _COMMANDS:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None and f"`localstore {name}`" in text
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert all(f"`{o}`" in text for o in p.opts), (name, p.opts)


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    first_code = readme[readme.index("```sh") + 1 : readme.index("```sh") + 3]
    assert first_code[0].startswith("scripts/demo") and first_code[1].startswith("scripts/test")


def test_ci_runs_the_readme_test_command() -> None:
    assert "scripts/test" in (ROOT / ".ci/run").read_text(encoding="utf-8")
