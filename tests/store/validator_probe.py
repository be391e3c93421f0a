"""A validator that records, for each call, whether its store's thread held the index's write
lock then (tests of where the app's validator runs: never inside the lock when the text is
known ahead)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from localstore.store import BlueprintStore


class LockProbe:
    """Judges ``ok: false`` invalid; optionally raises instead (``fail``). Attach the store it
    judges for with ``watch`` once it is open (the store needs the validator first)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.store: BlueprintStore | None = None
        self.calls: list[tuple[dict[str, Any], bool]] = []  # (document, under the lock)

    def watch(self, store: BlueprintStore) -> BlueprintStore:
        self.store = store
        return store

    def __call__(self, doc: Mapping[str, Any]) -> list[str]:
        # The index's own record of the calling thread's open write levels: a validator that
        # runs while it is set holds every other process's writes to the home up.
        locked = self.store is not None and self.store.index.write_open
        self.calls.append((dict(doc), locked))
        if self.fail:
            raise RuntimeError("the rules service is down")
        return [] if doc.get("ok", True) else ["ok is false"]

    def under_lock(self) -> list[dict[str, Any]]:
        """The documents judged while the write lock was held."""
        return [doc for doc, locked in self.calls if locked]
