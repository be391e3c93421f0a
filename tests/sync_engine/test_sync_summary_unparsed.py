"""`localstore sync` says that a blueprint file dropped into the folder cannot be synced (session 8).

A file that never parsed (or whose meta is broken) has no index row, so the engine's counts never
have it: `localstore status` listed it (session 7), but `localstore sync` printed its summary, said
nothing of it and exited 0, run here or by the daemon, and a user never learnt why the file never
reached the other devices.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import localstore
from localstore.cli import cli
from sync import cli_sync
from sync.memory_remote import MemoryRemote, MemoryServer

EXIT_ATTENTION = 3
BROKEN = "name: new\nsteps: [1, 2\n"


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


def drop_files(home: Path) -> None:
    """A blueprint that never parsed, and one with a meta that is not JSON, as dropped in."""
    (home / "blueprints" / "d" / "new.blueprint.yaml").write_text(BROKEN, encoding="utf-8")
    (home / "blueprints" / "d" / "m.blueprint.yaml").write_text("v: 1\n", encoding="utf-8")
    (home / "blueprints" / "d" / "m.blueprint.meta.json").write_text("{not", encoding="utf-8")


def check_summary(home: Path, server: MemoryServer) -> None:
    result = run(home, "--json", "sync")
    assert result.exit_code == EXIT_ATTENTION, result.output
    data = json.loads(result.stdout)
    assert data["status"]["flagged"] == 2
    assert [f["path"] for f in data["flagged_files"]] == [
        "d/m.blueprint.yaml",
        "d/new.blueprint.yaml",
    ]
    human = run(home, "sync")
    assert human.exit_code == EXIT_ATTENTION, human.output
    assert "2 file(s) cannot be read as blueprints" in human.stdout
    assert "d/new.blueprint.yaml: YAML does not parse" in human.stdout
    assert "d/m.blueprint.yaml: invalid meta file" in human.stdout
    assert sorted(o.row.path for o in server.rows.values()) == ["d/x.blueprint.yaml"]

    # Fixed: taken and synced, nothing needs attention any more.
    (home / "blueprints" / "d" / "new.blueprint.yaml").write_text("v: 2\n", encoding="utf-8")
    (home / "blueprints" / "d" / "m.blueprint.meta.json").unlink()
    fixed = run(home, "--json", "sync")
    assert fixed.exit_code == 0, fixed.output
    data = json.loads(fixed.stdout)
    assert data["status"]["flagged"] == 0 and data["flagged_files"] == []


def test_sync_here_counts_new_files_that_never_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    server = MemoryServer()
    with localstore.open(home=home) as store:
        store.save("d/x", "v: 1\n")
    # The CLI signs in to Supabase; here its remote is a handle on this test's server instead.
    monkeypatch.setattr(cli_sync, "_open_remote", lambda settings: MemoryRemote(server, user="u"))
    assert run(home, "sync").exit_code == 0
    drop_files(home)
    check_summary(home, server)


def test_sync_through_the_daemon_counts_new_files_that_never_parsed(
    daemon_home: tuple[Path, MemoryServer],
) -> None:
    home, server = daemon_home
    with localstore.open(home=home) as store:
        store.save("d/x", "v: 1\n")
    assert run(home, "sync").exit_code == 0
    drop_files(home)
    check_summary(home, server)
