"""A batch that meets many edits nobody recorded commits them all first, in one round.

A save records an editor's unrecorded edit in a transaction of its own before replacing the
file (store._record_first). The first version undid the attempt and ran it again for each such
path, one at a time: a ``save_many`` over N blueprints edited since the index last looked (a
``git pull`` with no watcher running, then the app rewriting them) ran N+1 attempts, each
writing, flushing and undoing the files of every item before the one that stopped it. That is
N squared file writes: minutes for a thousand blueprints, hours for ten thousand.

Real home, real files; the attempts are counted by wrapping the store's own method.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from localstore.store import BlueprintStore, SaveRequest

N = 12


def _save_many_counted(
    store: BlueprintStore, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> tuple[list[object], int]:
    """The app's save_many of N blueprints ``<prefix><i>``, and how many attempts it made."""
    attempts = 0
    real = BlueprintStore._save_attempt

    def counted(self: BlueprintStore, *args: object, **kwargs: object) -> object:
        nonlocal attempts
        attempts += 1
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(BlueprintStore, "_save_attempt", counted)
    try:
        results = store.save_many(
            [SaveRequest(f"{prefix}{i}.blueprint.yaml", f"steps: [app-{i}]\n") for i in range(N)]
        )
    finally:
        monkeypatch.undo()
    return list(results), attempts


def test_save_many_over_many_unrecorded_edits_runs_two_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        for i in range(N):
            store.save(f"b{i}.blueprint.yaml", f"steps: [v1-{i}]\n")
        # The person's editor (or a git pull) changes every file; nothing records it.
        for i in range(N):
            store.abspath(f"b{i}.blueprint.yaml").write_text(f"steps: [edited-{i}]\n")

        results, attempts = _save_many_counted(store, monkeypatch, "b")

        assert all(not isinstance(r, Exception) for r in results), results
        # One attempt met the edits, committed them all, and one more saved (not N+1).
        assert attempts == 2
        for i in range(N):
            contents = [
                store.load_revision(f"b{i}.blueprint.yaml", r.rev).content
                for r in reversed(store.history(f"b{i}.blueprint.yaml"))
            ]
            # Every edit is in history before the app's save, each recorded once.
            assert contents == [
                f"steps: [v1-{i}]\n",
                f"steps: [edited-{i}]\n",
                f"steps: [app-{i}]\n",
            ]


def test_save_many_over_many_unindexed_files_runs_two_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        # Files a git pull brought, at paths the index never saw (no watcher ran).
        for i in range(N):
            store.abspath(f"n{i}.blueprint.yaml").write_text(f"steps: [pulled-{i}]\n")
        results, attempts = _save_many_counted(store, monkeypatch, "n")
        assert all(not isinstance(r, Exception) for r in results), results
        assert attempts == 2
        for i in range(N):
            history = store.history(f"n{i}.blueprint.yaml")
            assert [
                store.load_revision(f"n{i}.blueprint.yaml", r.rev).content
                for r in reversed(history)
            ] == [f"steps: [pulled-{i}]\n", f"steps: [app-{i}]\n"]
