"""Which older indexes a read-only open reads as they are (core.CORE_READ_WITHOUT).

A read-only open (a backup, a snapshot, a disk mounted read-only) cannot migrate: it reads an
index that lacks only steps adding indexes, and refuses any older one with what to do. The
declaration must cover every step, and a step declared readable without must add indexes only.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from localstore.errors import IndexStoreError
from localstore.index import CORE_MIGRATIONS, CORE_READ_WITHOUT, oldest_core_read_as_is
from localstore.store import open_store

REPO = Path(__file__).resolve().parents[2]
HOMES = sorted((Path(__file__).parent / "fixtures").glob("home-*.tar.gz"))
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


@pytest.mark.parametrize("fixture", HOMES, ids=[p.name.removesuffix(".tar.gz") for p in HOMES])
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
