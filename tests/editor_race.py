"""Helpers of the tests where another program (a person's editor) writes a blueprint's files
while a LocalStore write is under way: the fault is only the moment, chosen by running the
editor just before a call of the write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from localstore.store import BlueprintStore


def before_first(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, act: Callable[[], None]
) -> list[int]:
    """Run ``act`` once, just before the first call of ``owner.name``; returns its call count."""
    real = getattr(owner, name)
    calls: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            act()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return calls


def revision_contents(store: BlueprintStore, rel: str) -> list[str]:
    """The YAML of every revision of the blueprint at ``rel``, oldest first."""
    return [store.load_revision(rel, r.rev).content for r in reversed(store.history(rel))]
