"""`python -m localstore` and `python -m localstore.cli` run the same CLI as the console script.

Before: `-m localstore` failed (no __main__.py) and `-m localstore.cli` exited 0 having done nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("module", ["localstore", "localstore.cli"])
def test_help_shows_the_usage_under_the_program_name(module: str) -> None:
    r = _run(module, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: localstore [OPTIONS] COMMAND [ARGS]...")
    assert "Exit codes:" in r.stdout


@pytest.mark.parametrize("module", ["localstore", "localstore.cli"])
def test_a_command_runs_with_its_context(module: str, home: Path) -> None:
    """A command reached through the lazy group gets the CliContext the group made."""
    assert _run(module, "--home", str(home), "init").returncode == 0
    r = _run(module, "--home", str(home), "--json", "ls")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
