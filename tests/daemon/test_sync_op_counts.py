"""The control API's `sync` op counts new files that never parsed, as `status` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sync.memory_remote import MemoryRemote, MemoryServer

from .conftest import write_external

BROKEN = "name: new\nsteps: [1, 2\n"  # (never parsed: no index row, so no engine count)


def test_the_sync_op_reply_counts_and_lists_unparsed_new_files(
    inproc_daemon: Any, tmp_path: Path
) -> None:
    """The op replied with the engine's status, whose `flagged` counts index rows only: a YAML
    file dropped in that never parsed was left out, and `needs attention` with it. The CLI
    added them itself; any other ControlClient.sync() caller (an app) got the low count."""
    server = MemoryServer()
    d = inproc_daemon(remote_factory=lambda s: MemoryRemote(server), poll_interval_s=3600)
    root = d.daemon.settings.paths.blueprints
    write_external(root, "d/ok.blueprint.yaml", "v: 1\n")
    write_external(root, "d/new.blueprint.yaml", BROKEN)
    with d.client(timeout=30) as c:
        waited = c.sync(wait=True)
        assert waited["report"]["pushed"] == 1
        assert waited["status"]["flagged"] == 1
        assert [(f["path"], f["id"]) for f in waited["flagged_files"]] == [
            ("d/new.blueprint.yaml", "")
        ]
        assert "YAML does not parse" in waited["flagged_files"][0]["reason"]
        requested = c.sync(wait=False)
        assert requested["requested"] is True and requested["status"]["flagged"] == 1
