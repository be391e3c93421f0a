"""An app's ``EmbeddedSync.status()`` says what to do when something needs attention, in the
words `localstore status` uses (one function makes both). It gave the counts alone: an app had
"conflicts: 1" to show and nothing to tell the person what to do about it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore._reconcile import CONFIRM_EMPTY_NAME
from localstore.cli import cli
from localstore.errors import FolderAwayError
from sync.embed import start_sync
from sync.engine import SyncEngine
from sync.memory_remote import MemoryRemote, MemoryServer

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")


def test_status_hint_names_what_to_do_about_a_conflict(stores: StoreOpener, tmp_path: Path) -> None:
    server = MemoryServer()
    other = stores(home=tmp_path / "other")
    other_remote = MemoryRemote(server, user="u")
    other_engine = SyncEngine(other, other_remote)
    app = stores(home=tmp_path / "app")
    handle = start_sync(
        app, remote=MemoryRemote(server, user="u"), watch=False, poll_interval_s=3600
    )
    try:
        assert handle.status()["hint"] is None  # (nothing to do)
        other.save("c/flow", "steps: 3\n")
        other_engine.sync_once()
        handle.engine.sync_once()
        other.save("c/flow", "steps: 4\n")
        app.save("c/flow", "steps: 5\n")
        other_engine.sync_once()
        handle.engine.sync_once()

        status = handle.status()
        assert status["conflicts"] == 1
        assert status["hint"] is not None
        assert "1 open conflict(s): see `localstore conflicts`" in status["hint"]
        # The same words as the CLI's status of that home (its --json "hint").
        shown = CliRunner().invoke(cli, ["--home", str(tmp_path / "app"), "--json", "status"])
        assert shown.exit_code == 3, shown.output
        assert json.loads(shown.stdout)["hint"] == status["hint"]
    finally:
        handle.stop()
        other_remote.close()


def test_status_hint_says_what_to_do_about_a_folder_away(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """A pull refused because the blueprints folder is away: what to do was only inside
    ``last_error``'s text, the status's ``hint`` None."""
    server = MemoryServer()
    other = stores(home=tmp_path / "other")
    other_remote = MemoryRemote(server, user="u")
    other_engine = SyncEngine(other, other_remote)
    app = stores(home=tmp_path / "app")
    handle = start_sync(
        app, remote=MemoryRemote(server, user="u"), watch=False, poll_interval_s=3600
    )
    try:
        app.save("c/flow", "steps: 3\n")
        handle.engine.sync_once()
        os.rename(app.root, tmp_path / "away")
        other_engine.sync_once()
        other.save("c/new", "steps: 1\n")
        other_engine.sync_once()
        with pytest.raises(FolderAwayError):
            handle.engine.sync_once()
        status = handle.status()
        assert status["state"] == "error" and "blueprints folder" in status["last_error"]
        assert status["hint"] is not None and CONFIRM_EMPTY_NAME in status["hint"], status
        os.rename(tmp_path / "away", app.root)
        handle.engine.sync_once()
        assert handle.status()["hint"] is None
    finally:
        handle.stop()
        other_remote.close()
