"""restore: where a deleted blueprint comes back, ``expected_rev``, and a move racing a restore.

Found by a review of history, delete and restore (DESIGN.md section 3: any earlier version can
be restored; moves keep identity).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import localstore
from localstore.errors import AlreadyExistsError, RevisionConflictError
from localstore.store import BlueprintStore, Row


@pytest.fixture
def store(home: Path) -> Iterator[BlueprintStore]:
    s = BlueprintStore(localstore.load_settings(home=home), maintenance=False)
    try:
        yield s
    finally:
        s.close()


def test_a_deleted_blueprint_comes_back_where_it_was_deleted(store: BlueprintStore) -> None:
    # A live blueprint restored to a revision from before a move stays where it is (the move
    # is kept); a deleted one must too: undeleting is not undoing the move.
    bp = store.save("drafts/x", "a: 1\n")
    store.save("drafts/x", "a: 2\n", id=bp.id)
    store.move(bp.id, "done/y")
    store.delete(bp.id)
    restored = store.restore(bp.id, 1)
    assert restored.path == "done/y.blueprint.yaml"
    assert restored.content == "a: 1\n"
    assert store.load("done/y").id == bp.id
    assert not store.abspath("drafts/x").exists()
    # (the revision's own path is still one keyword away)
    store.delete(bp.id)
    assert store.restore(bp.id, 1, path="drafts/x").path == "drafts/x.blueprint.yaml"


def test_restore_with_expected_rev_refuses_a_blueprint_changed_since(
    store: BlueprintStore,
) -> None:
    bp = store.save("p/x", "a: 1\n")
    store.save("p/x", "a: 2\n", id=bp.id)
    seen = store.row(bp.id).rev  # what a history view showed
    store.save("p/x", "a: 3\n", id=bp.id)  # another window's autosave
    with pytest.raises(RevisionConflictError):
        store.restore(bp.id, 1, expected_rev=seen)
    assert store.load(bp.id).content == "a: 3\n"
    assert [r.rev for r in store.history(bp.id)] == [3, 2, 1]
    restored = store.restore(bp.id, 1, expected_rev=3)
    assert (restored.rev, restored.content) == (4, "a: 1\n")


def test_restore_with_expected_rev_undeletes_only_the_delete_it_saw(
    store: BlueprintStore,
) -> None:
    bp = store.save("p/x", "a: 1\n")
    gone = store.delete(bp.id)
    assert store.restore(bp.id, 1, expected_rev=gone.rev).rev == 3
    with pytest.raises(RevisionConflictError):
        store.restore(bp.id, 1, expected_rev=gone.rev)


def test_a_move_made_while_a_restore_runs_is_not_undone(
    store: BlueprintStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another thread moves the blueprint just after the restore has read where it is. The
    # restore must not then save it at the path it read (undoing the move): restore and move
    # are serialized, so the move lands before or after the restore, never lost.
    bp = store.save("p/x", "a: 1\n")
    store.save("p/x", "a: 2\n", id=bp.id)
    moved = threading.Event()
    errors: list[BaseException] = []

    def mover() -> None:
        try:
            store.move(bp.id, "q/y")
        except BaseException as exc:  # (reported by the assertion below)
            errors.append(exc)
        finally:
            moved.set()

    real_row = store.row
    started: list[threading.Thread] = []

    def row_then_race(ref: str, *, include_deleted: bool = False) -> Row:
        found = real_row(ref, include_deleted=include_deleted)
        if threading.current_thread() is threading.main_thread() and not started:
            started.append(threading.Thread(target=mover))
            started[0].start()
            # (Unfixed, the move completes here; fixed, it waits for the restore's commit.)
            moved.wait(2)
        return found

    monkeypatch.setattr(store, "row", row_then_race)
    store.restore(bp.id, 1)
    started[0].join(30)
    assert not errors
    assert store.load(bp.id).path == "q/y.blueprint.yaml"
    assert store.load(bp.id).content == "a: 1\n"
    assert [(r.rev, r.path) for r in store.history(bp.id)][:2] == [
        (4, "q/y.blueprint.yaml"),
        (3, "p/x.blueprint.yaml"),
    ]


def test_a_restore_to_a_taken_path_says_to_restore_it_elsewhere(store: BlueprintStore) -> None:
    # The save's hint ("... or save with that blueprint's id") would overwrite the other
    # blueprint; the restore's says to pass another path. Given a path, the save's error stands.
    bp = store.save("x", "a: 1\n")
    store.delete(bp.id)
    store.save("x", "b: 2\n")
    with pytest.raises(AlreadyExistsError) as caught:
        store.restore(bp.id, 1)
    assert caught.value.hint is not None and "--path NEWPATH" in caught.value.hint
    assert isinstance(caught.value.__cause__, AlreadyExistsError)
    assert caught.value.message == caught.value.__cause__.message
    other = store.save("y", "c: 3\n")
    with pytest.raises(AlreadyExistsError) as caught:
        store.restore(bp.id, 1, path="y")
    assert caught.value.hint is None or "--path NEWPATH" not in caught.value.hint
    assert store.load(other.id).content == "c: 3\n"
    assert store.restore(bp.id, 1, path="z").path == "z.blueprint.yaml"
