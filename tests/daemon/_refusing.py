"""A memory remote whose server refuses every push until told to stop (fault injection only)."""

from __future__ import annotations

from collections.abc import Sequence

from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change, PushResult


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
