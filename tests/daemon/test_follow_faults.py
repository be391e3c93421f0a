"""The follower of other processes' changes loses none of them when the index fails a read.

Only the failure is injected (the index's read() raising once); the store, the other process's
connection and the rows are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.errors import IndexStoreError
from sync._follow import ForeignChanges, foreign_events


@contextmanager
def failing_reads(store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def fail() -> Any:
        raise IndexStoreError("read the index: disk I/O error", hint="run 'localstore check'")

    with monkeypatch.context() as m:
        m.setattr(store.index, "read", fail)
        yield


def test_a_row_found_before_a_failed_look_is_still_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    with localstore.open(home=home) as here, localstore.open(home=home) as other:
        follower = ForeignChanges(here)
        saved = other.save("theirs/one", "v: 1\n")
        assert follower.poll(True) == []  # found; waits one tick for this store's own events
        with failing_reads(here, monkeypatch), pytest.raises(IndexStoreError):
            follower.poll(True)
        rows = follower.poll(False)
        assert [(str(r[0]), int(r[3])) for r in rows] == [(saved.id, 1)]


def test_an_event_is_made_from_the_row_when_its_history_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    with localstore.open(home=home) as here, localstore.open(home=home) as other:
        follower = ForeignChanges(here)
        saved = other.save("theirs/one", "v: 1\n")
        follower.poll(True)
        (row,) = follower.poll(False)
        with failing_reads(here, monkeypatch):
            (event,) = foreign_events(here, row)
        assert (event.kind, event.id, event.path, event.rev, event.process) == (
            "created",
            saved.id,
            "theirs/one.blueprint.yaml",
            1,
            "other",
        )


def test_a_look_that_failed_is_made_again_at_the_next_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process sync looks only when the index's data_version moved, and reads it before
    looking: a look that failed had used up that change, the next ticks saw none, and the row
    was never reported (until some later commit of another process)."""
    home = tmp_path / "home"
    with localstore.open(home=home) as here, localstore.open(home=home) as other:
        follower = ForeignChanges(here)
        saved = other.save("theirs/one", "v: 1\n")
        real_read = here.index.read
        calls = 0

        def read_then_fail() -> Any:
            nonlocal calls
            calls += 1
            if calls > 1:  # data_version is read; the look then fails
                raise IndexStoreError(
                    "read the index: disk I/O error", hint="run 'localstore check'"
                )
            return real_read()

        with monkeypatch.context() as m:
            m.setattr(here.index, "read", read_then_fail)
            with pytest.raises(IndexStoreError):
                follower.poll(follower.index_changed())
        rows = [r for _ in range(3) for r in follower.poll(follower.index_changed())]
        assert [(str(r[0]), int(r[3])) for r in rows] == [(saved.id, 1)]
