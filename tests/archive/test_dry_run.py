"""A dry run, and any plan, change nothing: not the files, not the index.

Planning created the import records' table (``archive_imports``) and its ``component_versions``
row in a home no import had run in yet, so ``localstore import --dry-run`` wrote to the index, and
failed on an index this user may read but not write. The real import still creates them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner

from localstore import archive
from localstore._bundle_records import _ARCHIVE_MIGRATIONS
from localstore.cli import cli
from localstore.errors import NewerIndexError
from tests.test_cli_errors import unprivileged

from .conftest import StoreFactory


def run(home: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def _index_rows(cur: Any) -> dict[str, Any]:
    """The schema version, every table's rows, and which tables there are."""
    tables = [
        str(name)
        for name, sql in cur.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'table'")
        if not str(sql).upper().startswith("CREATE VIRTUAL")  # (its shadow tables are dumped)
    ]
    return {
        "schema_version": cur.execute("PRAGMA schema_version").fetchall(),
        "tables": sorted(tables),
        "rows": {t: sorted(map(repr, cur.execute(f'SELECT * FROM "{t}"'))) for t in tables},
    }


def _index_state(home: Path) -> dict[str, Any]:
    """The index file's bytes (read first: a reader may create the -wal), then its rows."""
    db = home / "data" / "index.db"
    wal = db.with_name("index.db-wal")
    state: dict[str, Any] = {
        "db": hashlib.sha256(db.read_bytes()).hexdigest(),
        "wal": hashlib.sha256(wal.read_bytes() if wal.exists() else b"").hexdigest(),
    }
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        state.update(_index_rows(conn.cursor()))
    finally:
        conn.close()
    return state


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for name in ("one", "two"):
        assert run(src, "save", f"x/{name}", "-f", "-", stdin=f"v: {name}\n")[0] == 0
    out = tmp_path / "b.lsbundle"
    assert run(src, "export", "-o", str(out))[0] == 0
    return out


@pytest.fixture
def dst(tmp_path: Path) -> Path:
    """A home with a blueprint of its own, no import ever run in it."""
    home = tmp_path / "dst"
    assert run(home, "save", "y/mine", "-f", "-", stdin="v: mine\n")[0] == 0
    return home


def test_a_dry_run_leaves_the_index_byte_for_byte_as_it_was(bundle: Path, dst: Path) -> None:
    before = _index_state(dst)
    assert "archive_imports" not in before["tables"]

    code, stdout, stderr = run(dst, "import", str(bundle), "--dry-run")
    assert code == 0 and stdout.count("create") == 2 and "would: 2 create" in stderr
    assert _index_state(dst) == before

    # The import itself makes what it needs, records included.
    assert run(dst, "import", str(bundle))[0] == 0
    after = _index_state(dst)
    assert len(after["rows"]["archive_imports"]) == 2  # one record per blueprint saved
    assert f"('archive', {len(_ARCHIVE_MIGRATIONS)})" in after["rows"]["component_versions"]


def test_plan_import_writes_nothing(stores: StoreFactory, tmp_path: Path) -> None:
    src, dst = stores("src"), stores("dst")
    src.save("team/flow", "steps: [one]\n")
    dst.save("team/flow", "steps: [mine]\n")  # a path conflict: the plan reads the records
    archive.export_bundle(src, tmp_path / "b.lsbundle")
    with dst.index.read() as cur:
        before = _index_rows(cur)
    with archive.open_bundle(tmp_path / "b.lsbundle", staging_root=dst.paths.cache) as bundle:
        for policy in archive.CONFLICT_POLICIES:
            items = archive.plan_import(dst, bundle, on_conflict=policy)
            expected = policy if policy in ("skip", "overwrite") else "keep-both"
            assert [it.action for it in items] == [expected]
    with dst.index.read() as cur:
        assert _index_rows(cur) == before


def test_a_dry_run_works_on_an_index_this_user_may_not_write(bundle: Path, dst: Path) -> None:
    """It writes nothing, so it needs no write access: it failed with "cannot write the index"."""
    index = dst / "data" / "index.db"
    for side in ("-wal", "-shm"):
        index.with_name(index.name + side).unlink(missing_ok=True)
    index.chmod(0o444)
    try:
        done = unprivileged(dst, "import", str(bundle), "--dry-run")
        assert done.returncode == 0, done.stderr
        assert "would: 2 create" in done.stderr
        done = unprivileged(dst, "import", str(bundle))  # the import itself must write
        assert done.returncode == 1 and "cannot write the index" in done.stderr
    finally:
        index.chmod(0o644)


def test_a_dry_run_refuses_records_of_a_newer_version(stores: StoreFactory, tmp_path: Path) -> None:
    """Reading the records without creating them still refuses a newer version's, unchanged."""
    src, dst = stores("src"), stores("dst")
    src.save("team/flow", "steps: [one]\n")
    archive.export_bundle(src, tmp_path / "b.lsbundle")
    archive.import_bundle(dst, tmp_path / "b.lsbundle")
    with dst.index.write() as cur:
        cur.execute(
            "UPDATE component_versions SET version = ? WHERE component = 'archive'",
            (len(_ARCHIVE_MIGRATIONS) + 1,),
        )
    with pytest.raises(NewerIndexError, match="archive schema"):
        archive.import_bundle(dst, tmp_path / "b.lsbundle", dry_run=True)
