"""Which older indexes a read-only open reads as they are (core.CORE_READ_WITHOUT).

A read-only open (a backup, a snapshot, a disk mounted read-only) cannot migrate: it reads an
index that lacks only steps adding indexes, and refuses any older one with what to do. The
declaration must cover every step, and a step declared readable without must add indexes only.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from localstore.errors import IndexStoreError
from localstore.index import CORE_MIGRATIONS, CORE_READ_WITHOUT, oldest_core_read_as_is
from localstore.store import open_store
from tests.store.test_read_only_home import as_reader, fingerprint, freeze, thaw

REPO = Path(__file__).resolve().parents[2]
FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("home-*.tar.gz"))
# Homes made by a build whose index lacks only steps that add indexes (core v11 and later): a
# read-only open reads them as they are. Every other fixture home is older and refused.
READ_AS_IS = [p for p in FIXTURES if p.name in {"home-07836cb.tar.gz"}]  # core v12
REFUSED = [p for p in FIXTURES if p not in READ_AS_IS]
_COMMENT = re.compile(r"--[^\n]*")


def test_each_core_step_says_whether_an_index_without_it_is_read() -> None:
    assert len(CORE_READ_WITHOUT) == len(CORE_MIGRATIONS)
    for version, (step, read_without) in enumerate(
        zip(CORE_MIGRATIONS, CORE_READ_WITHOUT, strict=True), 1
    ):
        if not read_without:
            continue
        assert isinstance(step, str), f"v{version} runs code: it is more than an index"
        statements = [s.strip() for s in _COMMENT.sub("", step).split(";") if s.strip()]
        assert statements, f"v{version} adds nothing"
        for statement in statements:
            assert re.match(r"CREATE (UNIQUE )?INDEX ", statement), (version, statement)


def test_no_query_names_an_index() -> None:
    """A step that adds an index is read without only if no query needs that index to run."""
    for source in (REPO / "localstore").rglob("*.py"):
        # (Case-sensitive: the SQL here is upper case, and prose says "indexed by".)
        assert "INDEXED BY" not in source.read_text(encoding="utf-8"), source


def _ids(paths: list[Path]) -> list[str]:
    return [p.name.removesuffix(".tar.gz") for p in paths]


@pytest.mark.parametrize("fixture", REFUSED, ids=_ids(REFUSED))
def test_an_old_home_older_than_the_steps_that_add_indexes_is_refused_read_only(
    fixture: Path, tmp_path: Path
) -> None:
    with tarfile.open(fixture) as tar:
        tar.extractall(tmp_path, filter="data")
    index = tmp_path / "home" / "data" / "index.db"
    before = index.read_bytes()
    read = f"this version reads v{oldest_core_read_as_is()} to v{len(CORE_MIGRATIONS)}"
    with pytest.raises(IndexStoreError, match=f"made by an older localstore.*{read}"):
        open_store(tmp_path / "home", read_only=True)
    assert index.read_bytes() == before


# What a read-only open of the home in argv[1] says about it, in make_fixture.py's words (its
# expected.json) plus the listing's questions and the index's version; argv[2] names the deleted
# paths to look up (by path: v12's index is not there to find them, the table answers).
_READ_BACK = """
import json, sys, localstore
from localstore.kv import KVStore
from sync import _local
with localstore.open(home=sys.argv[1], read_only=True) as s, KVStore(s.index) as kv:
    def history(ref):
        return [[r.rev, r.path, r.origin, r.deleted] for r in s.history(ref)]
    gone = {p: s.row(p, include_deleted=True).id for p in json.loads(sys.argv[2])}
    print(json.dumps({
        "live": {i.path: {"id": i.id, "content": s.load(i.path).content, "history": history(i.id)}
                 for i in s.list()},
        "deleted": {p: {"id": rid, "history": history(rid)} for p, rid in gone.items()},
        "kv": {"prefs": kv.load("prefs"), "notes.yaml": kv.load("notes.yaml")},
        "kv_blob": kv.load("blob").hex(),
        "conflicts": [{"id": c.id, "path": c.path, "copy_id": c.copy_id, "copy_path": c.copy_path}
                      for c in _local.list_conflicts(s)],
        "pending": _local.local_status(s).pending,
        "by_modified": [i.path for i in s.list(sort="modified", descending=True, limit=2)],
        "search": [[h.info.path for h in s.search(w)] for w in ("ship", "Mover", "zebra")],
        "tagged": [i.path for i in s.list(tag="ops")],
        "core": s.index.conn.execute("PRAGMA user_version").fetchall()[0][0],
        "clean": s.check().clean,
    }))
"""


@pytest.mark.parametrize("fixture", READ_AS_IS, ids=_ids(READ_AS_IS))
def test_a_home_made_by_a_build_a_step_that_adds_an_index_ago_is_read_read_only_as_it_is(
    fixture: Path, tmp_path: Path
) -> None:
    """A real older build's home (not one set back by hand), made read-only as a backup is: a
    read-only open reads everything its build said about it, and writes not a byte."""
    with tarfile.open(fixture) as tar:
        tar.extractall(tmp_path, filter="data")
    home = tmp_path / "home"
    expected: dict[str, Any] = json.loads((tmp_path / "expected.json").read_text())
    freeze(home)
    before = fingerprint(home)
    try:
        done = as_reader("-c", _READ_BACK, str(home), json.dumps(sorted(expected["deleted"])))
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        assert fingerprint(home) == before
    finally:
        thaw(home)
    for key in ("live", "deleted", "kv", "kv_blob", "conflicts", "pending"):
        assert got[key] == expected[key], key
    assert oldest_core_read_as_is() <= got["core"] < len(CORE_MIGRATIONS)
    # (The order of the build's last changes to live blueprints: the move came after the save.)
    assert got["by_modified"] == ["moved/again.blueprint.yaml", "pending/new.blueprint.yaml"]
    assert got["search"] == [["ops/deploy.blueprint.yaml"], ["moved/again.blueprint.yaml"], []]
    assert got["tagged"] == ["ops/deploy.blueprint.yaml"] and got["clean"]
