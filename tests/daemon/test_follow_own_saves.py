"""The follower of an app's in-process sync (sync._follow.ForeignChanges) while only the app
itself writes: nothing another connection commits, so the index's ``data_version`` never moves.

With ``maintenance=False`` no maintainer commits either (its merges and checkpoints moved
``data_version`` every few saves, and so hid this): the follower never looked again. Each
distinct blueprint the app saved stayed claimed (one entry per id for the life of the store:
2,000 saves, 2,000 entries), and the op id up to which it had looked stayed where it was, so
another process's first save after a long run of the app's own was found only after one look
per LOOK_ROWS of the app's rows, a tick each (10,000 own saves: 10 ticks, 5 s).

Real stores on a real home; the follower's thread is parked and its ticks are the test's calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import sync._follow
import sync.embed
from localstore.store import BlueprintStore
from sync.embed import EmbeddedSync, start_sync
from sync.memory_remote import MemoryRemote, MemoryServer

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")


@pytest.fixture
def parked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The follower's thread waits for the test: its ticks are the test's calls."""
    monkeypatch.setattr(sync.embed, "TICK_S", 3600.0)
    monkeypatch.setattr(sync.embed, "LOCK_CHECK_S", 3600.0)


def _app(stores: StoreOpener, home: Path) -> tuple[BlueprintStore, EmbeddedSync]:
    app = stores(home=home, maintenance=False)
    handle = start_sync(app, remote=MemoryRemote(MemoryServer()), watch=False, poll_interval_s=3600)
    return app, handle


def test_the_apps_own_saves_are_not_remembered_for_ever(
    stores: StoreOpener, tmp_path: Path, parked: None
) -> None:
    app, handle = _app(stores, tmp_path / "home")
    for i in range(300):
        app.save(f"f/bp{i}", f"name: bp{i}\n")
        if i % 50 == 0:
            handle._follow_foreign_changes()
    for _ in range(3):
        handle._follow_foreign_changes()
    # Before: 300 (one claim per distinct id, until another process's commit).
    assert len(handle._foreign._published) == 0


def test_another_processs_save_after_many_own_saves_is_heard_within_two_ticks(
    stores: StoreOpener, tmp_path: Path, parked: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync._follow, "LOOK_ROWS", 10)  # (a look's rows: 1,000 in use)
    home = tmp_path / "home"
    app, handle = _app(stores, home)
    heard: list[tuple[str, str]] = []
    app.subscribe(lambda e: heard.append((e.process, e.path)))
    for i in range(60):
        app.save(f"f/bp{i}", f"name: bp{i}\n")
        if i % 5 == 0:
            handle._follow_foreign_changes()
    other = stores(home=home, maintenance=False)  # another connection: another process to it
    other.save("g/theirs", "name: theirs\n")
    handle._follow_foreign_changes()  # (a look finds it: it waits one tick)
    handle._follow_foreign_changes()
    # Before: not yet (the looks were still reading the app's own 60 rows, 10 a tick).
    assert ("other", "g/theirs.blueprint.yaml") in heard
