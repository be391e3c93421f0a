"""``load`` returns what the files hold, the meta file included.

load compared only the YAML's stat with the index: a meta file edited while no watcher ran (a
name, tags or a description changed by hand, or by another tool) was passed by, and load served
the indexed meta, while a save of the same blueprint (``_edited_on_disk``) did see the edit.

Real files and a real index; nothing is mocked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import localstore
from localstore.store import BlueprintStore

V1 = "v: 1\n"


def _edit_meta(meta_file: Path, **fields: object) -> None:
    """Change fields of the meta file as an editor would (an mtime the index cannot hold)."""
    meta = json.loads(meta_file.read_text())
    meta.update(fields)
    meta_file.write_text(json.dumps(meta, indent=2))
    st = meta_file.stat()
    os.utime(meta_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _origins(store: BlueprintStore, ref: str) -> list[str]:
    return [r.origin for r in reversed(store.history(ref))]


def test_load_returns_a_meta_edited_on_disk(store: BlueprintStore, home: Path) -> None:
    bp = store.save("a", V1, tags=["t1"])
    _edit_meta(
        home / "blueprints/a.blueprint.meta.json",
        name="Renamed by hand",
        tags=["edited"],
        description="typed in an editor",
    )
    loaded = store.load(bp.id)
    assert loaded.meta.name == "Renamed by hand"
    assert loaded.meta.tags == ("edited",)
    assert loaded.meta.description == "typed in an editor"
    assert loaded.content == V1
    # Recorded as the external change it is, once.
    assert _origins(store, bp.id) == ["local", "external"]
    assert store.load(bp.id).meta.tags == ("edited",)
    assert _origins(store, bp.id) == ["local", "external"]


def test_load_of_a_touched_meta_records_nothing(home: Path) -> None:
    """A meta whose times changed but whose bytes are the indexed ones (a touch; a failed save's
    undo renames files back) is served without a write, as a YAML so touched is."""
    with localstore.open(home=home) as store:
        bp = store.save("a", V1, tags=["t1"])
        meta_file = home / "blueprints/a.blueprint.meta.json"
        st = meta_file.stat()
        os.utime(meta_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        with store.index.read() as cur:
            before = cur.execute("SELECT meta_mtime_ns, op_id FROM blueprints").fetchall()
        loaded = store.load(bp.id)
        assert loaded.meta.tags == ("t1",) and loaded.rev == bp.rev
        with store.index.read() as cur:
            assert cur.execute("SELECT meta_mtime_ns, op_id FROM blueprints").fetchall() == before
        assert _origins(store, bp.id) == ["local"]


def test_load_of_a_removed_meta_keeps_the_blueprint(store: BlueprintStore, home: Path) -> None:
    """A meta file removed by hand: load (as reconcile) writes it back from the index."""
    bp = store.save("a", V1, tags=["t1"])
    meta_file = home / "blueprints/a.blueprint.meta.json"
    meta_file.unlink()
    loaded = store.load(bp.id)
    assert loaded.id == bp.id and loaded.meta.tags == ("t1",)
    assert json.loads(meta_file.read_text())["id"] == bp.id
