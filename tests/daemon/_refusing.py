"""A memory remote whose server refuses every push until told to stop (fault injection only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change, PushResult

from .conftest import write_external


class RefusingRemote(MemoryRemote):
    """Rejects each pushed change with a permanent-looking error (``invalid_path``) while
    ``refusing`` is true, as a server whose operator has not fixed it yet; then pushes for real
    to the same server. What is refused is quarantined by the engine."""

    def __init__(self, server: MemoryServer) -> None:
        super().__init__(server)
        self.refusing = True

    def push(self, changes: Sequence[Change], *, device: str) -> list[PushResult]:
        if self.refusing:
            return [
                PushResult(c.op_id, c.id, "rejected", code="invalid_path", message="refused")
                for c in changes
            ]
        return super().push(changes, device=device)


def daemon_with_a_quarantined_change(inproc_daemon: Any, home: Path) -> tuple[Any, RefusingRemote]:
    """An in-process daemon on ``home`` whose server refused its one change (quarantined), and
    that remote (set ``refusing`` to False for the server to take it)."""
    remote = RefusingRemote(MemoryServer())  # (fault injection: the server is real)
    d = inproc_daemon(home, remote_factory=lambda s: remote, poll_interval_s=3600)
    write_external(d.daemon.settings.paths.blueprints, "d/one.blueprint.yaml", "v: 1\n")
    with d.client(timeout=30) as c:
        assert c.sync(wait=True)["status"]["quarantined"] == 1
    return d, remote
