"""Docs are kept true by tests: the CLI reference matches --help, every command is documented."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click

from localstore import _daemon_state
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


def test_cli_reference_names_every_daemon_exit_code() -> None:
    # The exit-code table's pointer to the daemon's own codes missed 77 (a read-only home) when
    # that code was added: a service author reading docs/cli.md would not have excluded it.
    codes = {v for k, v in vars(_daemon_state).items() if k.startswith("EXIT_")}
    text = (ROOT / "docs/cli.md").read_text(encoding="utf-8")
    (row,) = [line for line in text.splitlines() if line.startswith("| 1 |")]
    listed = {int(n) for n in re.findall(r"\b(\d{2})\b", row.split("its own codes", 1)[1])}
    assert listed == codes, f"docs/cli.md lists {sorted(listed)}, the daemon has {sorted(codes)}"


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    first_code = readme[readme.index("```sh") + 1 : readme.index("```sh") + 3]
    assert first_code[0].startswith("scripts/demo") and first_code[1].startswith("scripts/test")


def test_ci_runs_the_readme_test_command() -> None:
    assert "scripts/test" in (ROOT / ".ci/run").read_text(encoding="utf-8")


def _code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _fresh_user_env(home: Path) -> dict[str, str]:
    """The environment of a new user: our HOME, no LOCALSTORE_* or XDG_* of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALSTORE_", "XDG_"))}
    env["HOME"] = str(home)
    # The console script next to this interpreter, as after `pip install`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    blocks = _code_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "python")
    assert blocks, "README.md has no python example"
    for code in blocks:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=_fresh_user_env(tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr


def test_readme_shell_example_runs_as_written(tmp_path: Path) -> None:
    assert shutil.which("localstore", path=str(Path(sys.executable).parent))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in _code_blocks(readme, "sh") if "localstore --home" in b]
    # /tmp/h is the README's home; a private one keeps runs apart.
    script = block.replace("/tmp/h", str(tmp_path / "h"))
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={**_fresh_user_env(tmp_path), "COLUMNS": "200"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"tags": ["demo"]' in proc.stdout.splitlines()[-1]


def test_every_localstore_variable_is_documented() -> None:
    # Knobs the code read but no page named (LOCALSTORE_NEED_SYSTEMD in scripts/setup, the
    # keyring session's variables, some test knobs) could only be found by reading the source.
    from localstore.config import _TUNABLES, ENV_PREFIX, known_env_vars

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    table = (ROOT / "docs/configuration.md").read_text(encoding="utf-8")
    settings = {ENV_PREFIX + name.upper(): name for name in _TUNABLES}
    missing = sorted(
        var
        for var in known_env_vars()
        if var not in text and f"`{settings.get(var, var)}`" not in table
    )
    assert missing == [], f"not named in README.md or docs/*.md: {missing}"
