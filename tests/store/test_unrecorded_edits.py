"""Edits made on disk that the index has not recorded yet (no watcher running, or inside its settle
window) are never overwritten unseen: every write first compares the files with the index's stat
cache and records a difference as an external revision.

Real files and a real index; nothing is mocked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import localstore
from localstore.errors import (
    AlreadyExistsError,
    ChangedOnDiskError,
    RevisionConflictError,
    UnsafePathError,
)
from localstore.store import SaveRequest

V1 = "v: 1\n"
EDIT = "v: typed-in-an-editor\n"


def _edit(path: Path, text: str) -> None:
    """Write like an editor would, with an mtime the index cannot already hold."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _contents(store, ref: str) -> list[tuple[str, str]]:
    return [
        (r.origin, store.load_revision(ref, r.rev).content) for r in reversed(store.history(ref))
    ]


def test_save_records_an_unrecorded_edit_before_overwriting(store, home: Path) -> None:
    bp = store.save("a", V1)
    _edit(home / "blueprints/a.blueprint.yaml", EDIT)
    saved = store.save("a", "v: 2\n")
    assert saved.rev == 3
    assert _contents(store, bp.id) == [("local", V1), ("external", EDIT), ("local", "v: 2\n")]


def test_save_equal_to_the_index_while_the_disk_differs_is_written(store, home: Path) -> None:
    store.save("b", V1)
    yaml_file = home / "blueprints/b.blueprint.yaml"
    _edit(yaml_file, EDIT)
    saved = store.save("b", V1)
    assert saved.rev == 3 and yaml_file.read_text() == V1
    assert [c for _, c in _contents(store, "b")] == [V1, EDIT, V1]


def test_expected_rev_sees_an_unrecorded_edit_and_keeps_it(store, home: Path) -> None:
    loaded = store.save("doc", V1)
    yaml_file = home / "blueprints/doc.blueprint.yaml"
    _edit(yaml_file, EDIT)
    with pytest.raises(RevisionConflictError):
        store.save("doc", "v: 2\n", expected_rev=loaded.rev)
    # The refusal still committed the edit's revision, and the file is untouched.
    assert yaml_file.read_text() == EDIT
    assert _contents(store, "doc") == [("local", V1), ("external", EDIT)]


def test_move_keeps_an_external_meta_edit(store, home: Path) -> None:
    bp = store.save("a", V1, tags=["t1"])
    meta_file = home / "blueprints/a.blueprint.meta.json"
    meta = json.loads(meta_file.read_text())
    meta["tags"], meta["description"] = ["edited"], "typed in an editor"
    meta_file.write_text(json.dumps(meta, indent=2))
    st = meta_file.stat()
    os.utime(meta_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    moved = store.move(bp.id, "b")
    after = json.loads((home / "blueprints/b.blueprint.meta.json").read_text())
    assert after["tags"] == ["edited"] and after["description"] == "typed in an editor"
    assert moved.meta.tags == ("edited",)
    assert [r.origin for r in reversed(store.history(bp.id))] == ["local", "external", "local"]


def test_delete_records_an_unrecorded_edit_first(store, home: Path) -> None:
    bp = store.save("d", V1)
    _edit(home / "blueprints/d.blueprint.yaml", EDIT)
    store.delete("d")
    history = store.history(bp.id)
    assert [(r.origin, r.deleted) for r in reversed(history)] == [
        ("local", False),
        ("external", False),
        ("local", True),
    ]
    assert store.load_revision(bp.id, history[0].rev).content == EDIT
    assert store.restore(bp.id, 2).content == EDIT


def test_a_remote_delete_of_an_unrecorded_edit_records_it_and_deletes_nothing(
    store, home: Path
) -> None:
    """An edit beats a delete: the deleting device never saw it (saves refuse the same way)."""
    bp = store.save("d", V1)
    yaml_file = home / "blueprints/d.blueprint.yaml"
    _edit(yaml_file, EDIT)
    (home / "blueprints/d.blueprint.meta.json").unlink()  # sync's own look missed this case
    with pytest.raises(ChangedOnDiskError, match="remote delete"):
        store.delete(bp.id, origin="remote")
    assert yaml_file.read_text() == EDIT and store.count() == 1
    assert _contents(store, bp.id) == [("local", V1), ("external", EDIT)]  # committed
    assert store.delete(bp.id, origin="remote").deleted  # once recorded, it is the caller's call


def test_a_touch_without_a_change_records_nothing(store, home: Path) -> None:
    store.save("t", V1)
    yaml_file = home / "blueprints/t.blueprint.yaml"
    _edit(yaml_file, V1)  # same bytes, new mtime
    assert store.save("t", V1).rev == 1
    assert store.save("t", "v: 2\n").rev == 2
    assert [o for o, _ in _contents(store, "t")] == ["local", "local"]


def test_restore_refuses_an_unindexed_file_at_the_old_path(store, home: Path) -> None:
    bp = store.save("a", V1)
    store.delete("a")
    yaml_file = home / "blueprints/a.blueprint.yaml"
    yaml_file.write_text(EDIT)  # created in an editor, not seen by a watcher
    with pytest.raises(AlreadyExistsError):
        store.restore(bp.id, 1)
    with pytest.raises(AlreadyExistsError):
        store.save("a", V1, id=bp.id)
    assert yaml_file.read_text() == EDIT
    # The new file is its own blueprint now, and the deleted one can come back elsewhere.
    newcomer = store.resolve("a")
    assert newcomer.id != bp.id and store.load("a").content == EDIT
    assert store.restore(bp.id, 1, path="a-restored").content == V1


@pytest.mark.parametrize("broken", ["yaml", "meta"])
def test_save_refuses_an_unindexed_file_it_cannot_record(store, home: Path, broken: str) -> None:
    yaml_file = home / "blueprints/draft.blueprint.yaml"
    draft = "steps: [one, two,\n  # a long draft being typed\n" if broken == "yaml" else V1
    yaml_file.write_text(draft)
    if broken == "meta":
        (home / "blueprints/draft.blueprint.meta.json").write_text('{"id": "not-json"')
    with pytest.raises(AlreadyExistsError, match="not a valid blueprint"):
        store.save("draft", "v: 2\n")
    results = store.save_many([SaveRequest("draft", "v: 2\n"), SaveRequest("other", V1)])
    assert isinstance(results[0], AlreadyExistsError) and not isinstance(results[1], Exception)
    assert yaml_file.read_text() == draft and not store.exists("draft")
    # Once the file is readable it is recorded first, and the save goes on top of it.
    yaml_file.write_text(EDIT)
    (home / "blueprints/draft.blueprint.meta.json").unlink(missing_ok=True)
    saved = store.save("draft", "v: 2\n")
    assert [c for _, c in _contents(store, saved.id)] == [EDIT, "v: 2\n"]


def test_a_remote_save_over_an_unrecorded_edit_records_it_and_writes_nothing(
    store, home: Path
) -> None:
    a = store.save("a", V1)
    b = store.save("b", V1)
    yaml_file = home / "blueprints/a.blueprint.yaml"
    _edit(yaml_file, EDIT)
    remote = "v: from-the-server\n"
    results = store.save_many(
        [SaveRequest("a", remote, id=a.id), SaveRequest("b", remote, id=b.id)], origin="remote"
    )
    assert isinstance(results[0], ChangedOnDiskError) and isinstance(
        results[0], RevisionConflictError
    )
    assert not isinstance(results[1], Exception) and results[1].content == remote
    assert yaml_file.read_text() == EDIT
    assert _contents(store, a.id) == [("local", V1), ("external", EDIT)]
    with pytest.raises(ChangedOnDiskError):
        _edit(yaml_file, EDIT + "more: 1\n")
        store.save("a", remote, id=a.id, origin="remote")
    # A touch (same bytes, new mtime) is no edit: the remote save goes through.
    _edit(yaml_file, EDIT + "more: 1\n")
    assert store.save("a", remote, id=a.id, origin="remote").content == remote


@pytest.mark.parametrize("origin", ["local", "remote"])
def test_a_batch_item_through_a_link_is_refused_alone_while_edits_are_looked_for(
    tmp_path: Path, origin: str
) -> None:
    """Before a batch takes the lock it looks at what its paths hold that the index has not
    recorded (a local batch commits such an edit first; a remote one, with a validator, judges
    it ahead). A path that leads out of the blueprints folder through a link is the item's to
    refuse (UnsafePathError, the other items saved): looked at there, it raised out of the whole
    batch (a remote batch with a validator, every time; a local one once an edit was found)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    with localstore.open(
        home=tmp_path / "home", validator=lambda text: [], validator_name="rules"
    ) as store:
        store.save("a", V1)
        (store.root / "linked").symlink_to(outside, target_is_directory=True)
        _edit(store.abspath("a.blueprint.yaml"), EDIT)
        results = store.save_many(
            [SaveRequest("a", "v: 2\n"), SaveRequest("linked/x", "v: 3\n")], origin=origin
        )
        assert isinstance(results[1], UnsafePathError)
        assert not list(outside.iterdir())
        if origin == "local":
            assert [c for _, c in _contents(store, "a")] == [V1, EDIT, "v: 2\n"]
        else:
            # (An edit beats a remote write: recorded, and the item refused.)
            assert isinstance(results[0], ChangedOnDiskError)
            assert [c for _, c in _contents(store, "a")] == [V1, EDIT]
