"""`localstore sync` and `status` hand over to a running daemon of the same home."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import localstore
from localstore.cli import cli
from sync.memory_remote import MemoryServer


def test_sync_and_status_go_through_the_daemon(daemon_home: tuple[Path, MemoryServer]) -> None:
    home, server = daemon_home
    with localstore.open(home=home) as store:
        store.save("d/x", "v: 1\n")
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "sync"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["daemon"] is True and data["status"]["pending"] == 0
    assert [o.row.path for o in server.rows.values()] == ["d/x.blueprint.yaml"]
    status = json.loads(CliRunner().invoke(cli, ["--home", str(home), "--json", "status"]).stdout)
    assert status["daemon"] is True and status["pending"] == 0


def test_a_daemon_that_refuses_the_sync_is_the_answer(
    daemon_home: tuple[Path, MemoryServer],
) -> None:
    """The daemon answered with an error: say it (exit 1, its hint), do not sync here.

    It was taken for an unreachable daemon: "did not run the sync (...); syncing here", then
    "another process is syncing this home", since the daemon holds the home's lock.
    """
    from sync.control import ControlClient

    home, _ = daemon_home
    with ControlClient.connect(home) as client:
        client.pause()
    result = CliRunner().invoke(cli, ["--home", str(home), "sync"])
    assert result.exit_code == 1, result.output
    assert result.stderr == "error: the daemon did not sync: sync is paused (resume it first)\n"
    assert "syncing here" not in result.output


def test_sync_and_status_through_the_daemon_report_flagged_files(
    daemon_home: tuple[Path, MemoryServer],
) -> None:
    home, server = daemon_home
    with localstore.open(home=home) as store:
        store.save("s/broken", "v: 1\n")
    assert CliRunner().invoke(cli, ["--home", str(home), "sync"]).exit_code == 0
    (home / "blueprints/s/broken.blueprint.yaml").write_text("v: [2\n")
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "sync"])
    assert result.exit_code == 3, result.output  # the edit cannot leave this device
    data = json.loads(result.stdout)
    assert data["daemon"] is True and data["status"]["flagged"] == 1
    human = CliRunner().invoke(cli, ["--home", str(home), "sync"])
    assert human.exit_code == 3 and "1 file(s) cannot be read as blueprints" in human.output
    status = CliRunner().invoke(cli, ["--home", str(home), "--json", "status"])
    assert status.exit_code == 3, status.output
    data = json.loads(status.stdout)
    assert data["daemon"] is True and data["flagged"] == 1
    assert [f["path"] for f in data["flagged_files"]] == ["s/broken.blueprint.yaml"]
    assert [o.row.content for o in server.rows.values()] == ["v: 1\n"]
