"""Export while another process writes: the bundle is the store as it was when it was selected."""

from __future__ import annotations

from pathlib import Path

import localstore
from localstore import archive
from tests.archive.conftest import StoreFactory, tree


def test_an_export_is_a_snapshot_whatever_another_process_writes_meanwhile(
    stores: StoreFactory, tmp_path: Path
) -> None:
    store = stores("h")
    a = store.save("p/x", "name: a\n", name="a")
    b = store.save("p/y", "name: b\n", name="b")
    c = store.save("p/z", "name: c\n", name="c")
    before = tree(store)
    other = localstore.open(home=tmp_path / "h")  # another process's store on the same home
    try:

        def meanwhile(phase: str, done: int, total: int) -> None:
            # Once the first blueprint is in the bundle, the other process moves it away, moves
            # another onto its old path, edits and deletes the rest. Before: two entries at
            # p/x (a bundle every import refuses), or the export failed on the deleted one.
            if phase == "export" and done == 1:
                other.move(a.id, "p/w")
                other.move(b.id, "p/x")
                other.save("p/x", "name: b edited\n", id=b.id)
                other.delete(c.id)

        result = archive.export_bundle(store, tmp_path / "b.lsbundle", progress=meanwhile)
    finally:
        other.close()
    assert result.count == 3
    fresh = stores("fresh")
    imported = archive.import_bundle(fresh, tmp_path / "b.lsbundle")
    assert imported.counts() == {"create": 3}
    assert tree(fresh) == before
