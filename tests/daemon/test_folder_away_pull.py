"""The blueprints folder away (moved, its drive unmounted) while the daemon runs and another
device changes something: the pull must not make the folder again, which the watcher then took
for a restored copy lacking every other blueprint, and sync pushed their deletes everywhere."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from localstore._reconcile import CONFIRM_EMPTY_NAME
from sync.memory_remote import MemoryRemote, MemoryServer

from .conftest import eventually, write_external


def _yaml_names(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.blueprint.yaml"))


@pytest.mark.parametrize("away", ["moved", "empty-mount-point"])
@pytest.mark.parametrize("pulled", ["other/new.blueprint.yaml", "new.blueprint.yaml"])
def test_a_pull_while_the_folder_is_away_waits_and_deletes_nothing(
    inproc_daemon: Any, tmp_path: Path, away: str, pulled: str
) -> None:
    server = MemoryServer()
    a = inproc_daemon(tmp_path / "a", remote_factory=lambda _s: MemoryRemote(server))
    b = inproc_daemon(tmp_path / "b", remote_factory=lambda _s: MemoryRemote(server))
    root_a, root_b = a.daemon.settings.paths.blueprints, b.daemon.settings.paths.blueprints
    with a.client() as ca, b.client() as cb:
        for i in range(5):
            write_external(root_a, f"team/bp{i}.blueprint.yaml", f"n: {i}\n")
        ca.sync(wait=True)
        cb.sync(wait=True)
        everything = _yaml_names(root_b)
        assert len(everything) == 5
        os.rename(root_a, tmp_path / "a-away")
        if away == "empty-mount-point":
            root_a.mkdir()
        assert eventually(lambda: ca.status()["watcher"]["state"] == "degraded", 10)
        write_external(root_b, pulled, "x: 1\n")
        cb.sync(wait=True)
        ca.sync(wait=False)  # (with wait it is refused: the watcher cannot confirm)

        def refused() -> bool:
            status = ca.status()["sync"]
            return status["state"] == "error" and "blueprints folder" in status["last_error"]

        assert eventually(refused, 15), ca.status()
        assert not root_a.exists() or _yaml_names(root_a) == []
        cb.sync(wait=True)
        assert _yaml_names(root_b) == sorted([*everything, pulled])

        # The folder is back: the pull goes through, nothing was deleted anywhere.
        if away == "empty-mount-point":
            root_a.rmdir()
        os.rename(tmp_path / "a-away", root_a)
        assert eventually(lambda: ca.status()["watcher"]["state"] == "running", 10)
        ca.sync(wait=True)
        assert _yaml_names(root_a) == sorted([*everything, pulled])
        assert ca.status()["watcher"]["stats"]["events"].get("deleted", 0) == 0
        cb.sync(wait=True)
        assert _yaml_names(root_b) == sorted([*everything, pulled])


def test_a_folder_confirmed_empty_while_the_daemon_runs_deletes_and_syncs(
    inproc_daemon: Any, tmp_path: Path
) -> None:
    """The blueprints deleted on purpose, folder and all: the refusal's hint says to create the
    confirmation file. The daemon's watcher ignored it, so sync stayed refused (and nothing was
    deleted anywhere) until the daemon was restarted."""
    server = MemoryServer()
    a = inproc_daemon(tmp_path / "a", remote_factory=lambda _s: MemoryRemote(server))
    b = inproc_daemon(tmp_path / "b", remote_factory=lambda _s: MemoryRemote(server))
    root_a, root_b = a.daemon.settings.paths.blueprints, b.daemon.settings.paths.blueprints
    with a.client() as ca, b.client() as cb:
        for i in range(3):
            write_external(root_a, f"team/bp{i}.blueprint.yaml", f"n: {i}\n")
        ca.sync(wait=True)
        cb.sync(wait=True)
        shutil.rmtree(root_a)
        assert eventually(lambda: ca.status()["watcher"]["state"] == "degraded", 10)
        root_a.mkdir()
        (root_a / CONFIRM_EMPTY_NAME).touch()
        assert eventually(lambda: ca.status()["watcher"]["state"] == "running", 10)
        ca.sync(wait=True)
        assert ca.status()["watcher"]["stats"]["events"].get("deleted") == 3
        assert not (root_a / CONFIRM_EMPTY_NAME).exists()
        cb.sync(wait=True)
        assert _yaml_names(root_b) == []
        # Sync goes on as usual both ways.
        write_external(root_b, "new.blueprint.yaml", "x: 1\n")
        cb.sync(wait=True)
        ca.sync(wait=True)
        assert _yaml_names(root_a) == ["new.blueprint.yaml"]


def test_the_status_of_a_pull_refused_for_a_folder_away_says_what_to_do(
    inproc_daemon: Any, tmp_path: Path
) -> None:
    """The refusal's hint was only inside ``last_error``'s text; the status's ``hint`` (what to
    do, as `localstore status` and an app show it) was None."""
    server = MemoryServer()
    a = inproc_daemon(tmp_path / "a", remote_factory=lambda _s: MemoryRemote(server))
    b = inproc_daemon(tmp_path / "b", remote_factory=lambda _s: MemoryRemote(server))
    root_a, root_b = a.daemon.settings.paths.blueprints, b.daemon.settings.paths.blueprints
    with a.client() as ca, b.client() as cb:
        write_external(root_a, "team/bp.blueprint.yaml", "n: 1\n")
        ca.sync(wait=True)
        cb.sync(wait=True)
        os.rename(root_a, tmp_path / "a-away")
        assert eventually(lambda: ca.status()["watcher"]["state"] == "degraded", 10)
        write_external(root_b, "new.blueprint.yaml", "x: 1\n")
        cb.sync(wait=True)
        ca.sync(wait=False)
        assert eventually(lambda: ca.status()["sync"]["state"] == "error", 15)
        status = ca.status()["sync"]
        assert "blueprints folder" in status["last_error"]
        hint = status["hint"] or ""
        assert "put it back" in hint and CONFIRM_EMPTY_NAME in hint, status
        os.rename(tmp_path / "a-away", root_a)
        assert eventually(lambda: ca.status()["watcher"]["state"] == "running", 10)
        ca.sync(wait=True)
        status = ca.status()["sync"]
        assert status["state"] == "idle" and status["hint"] is None, status
