"""`conflicts resolve --take local` after the conflict copy was edited, then deleted by hand.

The local side is the copy; with the copy gone, resolve wrote the text recorded when the
conflict happened (older than the copy's edits) over the blueprint, exit 0, nothing said. Now it
refuses, says the copy was deleted and names the choices; the conflict stays open."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sync import _local as sync_local
from sync.errors import ConflictError

from .conftest import Device
from .test_cli_conflicts import _conflicted, run

REMOTE = "name: flow\nsteps: 4\n"
EDITED = "name: flow\nsteps: 6  # merged by hand\n"


def _copy_edited_then_deleted(make_device: Callable[..., Device]) -> tuple[Device, str, dict]:
    _, b, ident = _conflicted(make_device)
    record = json.loads(run(b.home, "--json", "conflicts").output)[0]
    copy = b.home / "blueprints" / record["copy_path"]
    copy.write_text(EDITED, encoding="utf-8")
    assert run(b.home, "ls").exit_code == 0  # (the edit is recorded: in history from here)
    copy.unlink()
    return b, ident, record


def test_take_local_refuses_a_deleted_copy_and_names_the_choices(
    make_device: Callable[..., Device],
) -> None:
    b, ident, record = _copy_edited_then_deleted(make_device)
    refused = run(b.home, "conflicts", "resolve", "1", "--take", "local")
    assert refused.exit_code == 1, refused.output
    assert f"the conflict copy {record['copy_path']} was deleted" in refused.stderr
    assert "--take remote" in refused.stderr
    assert b.store.load(ident).content == REMOTE  # nothing written over it
    assert [c["cid"] for c in json.loads(run(b.home, "--json", "conflicts").output)] == [1]

    # The way back the error names: the copy from history, then --take local takes its edit.
    restore = refused.stderr.split("`localstore restore ")[1].split("`")[0].split()
    assert run(b.home, "restore", *restore).exit_code == 0
    taken = run(b.home, "conflicts", "resolve", "1", "--take", "local")
    assert taken.exit_code == 0, taken.output
    assert b.store.load(ident).content == EDITED


def test_take_remote_still_settles_it(make_device: Callable[..., Device]) -> None:
    b, ident, _ = _copy_edited_then_deleted(make_device)
    done = run(b.home, "conflicts", "resolve", "1", "--take", "remote")
    assert done.exit_code == 0, done.output
    assert b.store.load(ident).content == REMOTE
    assert json.loads(run(b.home, "--json", "conflicts").output) == []


def test_merge_tool_is_not_started_on_the_stale_text(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    b, ident, _ = _copy_edited_then_deleted(make_device)
    ran = tmp_path / "ran"
    tool = f"{sys.executable} -c \"open('{ran}', 'w').close()\" %MERGED"
    refused = run(
        b.home, "conflicts", "resolve", "1", "--tool", env={"LOCALSTORE_MERGE_TOOL": tool}
    )
    assert refused.exit_code == 1 and "was deleted" in refused.stderr, refused.output
    assert not ran.exists()
    assert b.store.load(ident).content == REMOTE


def test_the_api_refuses_too(make_device: Callable[..., Device]) -> None:
    b, ident, _ = _copy_edited_then_deleted(make_device)
    with pytest.raises(ConflictError, match="was deleted"):
        sync_local.resolve_conflict(b.store, 1, take="local")
    assert b.store.load(ident).content == REMOTE
    assert sync_local.get_conflict(b.store, 1).open
