"""A meta file without its YAML larger than any meta file LocalStore reads is never cut short.

Reconcile reads a meta file up to META_READ_LIMIT + 1 bytes. Were an orphan meta kept in
<data>/recovered/ from those bytes and its original removed (Reconciler._handle_orphan), the
copy would be the file's first megabyte only and the rest gone. A read cut at the limit is never
kept nor judged (nor would it decode: a meta file over 1 MiB is refused; the first test fails
with neither guard), so reconcile leaves such a file where it is, whole, and reports it; a save
or a move that takes its name reads it whole and keeps all of it.

Real homes and files; the orphan holds a live blueprint's id (the case reconcile keeps), padded
past the limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localstore._reconcile import META_READ_LIMIT
from localstore.store import BlueprintStore

REL = "personal/plan"
META = "personal/plan.blueprint.meta.json"


def _big_orphan(store: BlueprintStore) -> bytes:
    """An edited copy of a live blueprint's meta at META, past the read limit by padding."""
    store.save("elsewhere/x", "x: 1\n", tags=["one"])
    meta = json.loads(store.abspath("elsewhere/x.blueprint.meta.json").read_bytes())
    meta["tags"] = ["one", "edited"]
    data = json.dumps(meta).encode() + b" " * (2 * META_READ_LIMIT)
    path = store.abspath(META)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _kept(home: Path) -> list[Path]:
    return sorted((home / "data" / "recovered").glob(f"*/{META}"))


def test_reconcile_leaves_a_large_orphan_meta_whole_where_it_is(
    store: BlueprintStore, home: Path
) -> None:
    data = _big_orphan(store)
    report = store.check(fix=True)
    assert store.abspath(META).read_bytes() == data
    assert all(k.read_bytes() == data for k in _kept(home))
    assert [p["path"] for p in report.problems if p["kind"] == "orphan-meta"] == [META]


@pytest.mark.parametrize("write", ["save", "move"])
def test_a_write_taking_the_name_of_a_large_orphan_meta_keeps_it_whole(
    store: BlueprintStore, home: Path, write: str
) -> None:
    data = _big_orphan(store)
    if write == "save":
        store.save(REL, "steps: [1]\n")
    else:
        store.save("work/a", "steps: [1]\n")
        store.move("work/a", REL)
    (kept,) = _kept(home)
    assert kept.read_bytes() == data
    assert store.load(REL).content == "steps: [1]\n"
