"""A home made by an older LocalStore, opened by this one: nothing lost, nothing sent twice.

Each fixture (tests/upgrade/fixtures/home-REV.tar.gz, made by make_fixture.py running the code of
commit REV) holds a home with history, a move, a delete, kv entries, a conflict record and four
changes made after its last sync, the MemoryServer's rows, and what the old code said about it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest

from localstore._bundle_records import _ARCHIVE_MIGRATIONS
from localstore.archive import _ensure_schema, export_bundle, import_bundle
from localstore.errors import IndexStoreError
from localstore.index import CORE_MIGRATIONS
from localstore.kv import KVStore
from localstore.store import BlueprintStore, open_store
from sync import _local
from sync.engine import SyncEngine
from sync.memory_remote import MemoryRemote, MemoryServer, _Owned
from sync.remote import ServerRow
from tests.store.query_plans import blueprint_scans

CLI = "from localstore.cli import main; main()"
FIXTURES = Path(__file__).parent / "fixtures"
HOMES = sorted(FIXTURES.glob("home-*.tar.gz"))
# Homes of the first builds, before app data and sync: blueprints and history only.
STORE_ONLY = {"home-36ae549.tar.gz"}
SYNCED = [p for p in HOMES if p.name not in STORE_ONLY]
# Homes made by builds that record where the home lives (localstore._identity, session 9): once
# unpacked somewhere else they are a copied home, and a copy takes a new device id (its edits
# would otherwise reuse the original's op ids); everything else is kept.
FINGERPRINTED = {
    "home-26c933b.tar.gz",
    "home-fad19a0.tar.gz",
    "home-7597df6.tar.gz",
    "home-07836cb.tar.gz",
}
# Homes whose import records were made before archive v2 kept each keep-both copy's source path:
# that build put a bundle's blueprint aside under a new id, found again by its record only.
ARCHIVE_V1 = {"home-7597df6.tar.gz"}


def _has_imports(fixture: Path) -> bool:
    """Fixtures made since make_fixture.py imports bundles: an archive table, and the old code's
    second bundle (``bundle-old.lsbundle``) to import again."""
    with tarfile.open(fixture) as tar:
        return "bundle-old.lsbundle" in tar.getnames()


IMPORTED = [p for p in SYNCED if _has_imports(p)]
IMPORTED_BY_ARCHIVE_V1 = [p for p in IMPORTED if p.name in ARCHIVE_V1]


@dataclass
class OldHome:
    home: Path
    server: dict[str, Any]
    expected: dict[str, Any]
    fingerprinted: bool = False

    def memory_server(self) -> MemoryServer:
        """The old run's server, rebuilt (a MemoryServer lives in memory only)."""
        server = MemoryServer(name=self.server["name"])
        server.seq = self.server["seq"]
        server.horizons = dict(self.server["horizons"])
        for raw in self.server["rows"]:
            fields = {k: v for k, v in raw.items() if k != "owner"}
            row = ServerRow(**fields)
            server.rows[row.id] = _Owned(raw["owner"], row)
            if not row.deleted:
                server.live_paths[(raw["owner"], row.path.lower())] = row.id
        server.revisions = [(r["id"], ServerRow(**r)) for r in self.server["revisions"]]
        return server


def _unpack(fixture: Path, tmp_path: Path) -> OldHome:
    with tarfile.open(fixture) as tar:
        tar.extractall(tmp_path, filter="data")
    return OldHome(
        tmp_path / "home",
        json.loads((tmp_path / "server.json").read_text()),
        json.loads((tmp_path / "expected.json").read_text()),
        fixture.name in FINGERPRINTED,
    )


def _ids(paths: list[Path]) -> list[str]:
    return [p.name.removesuffix(".tar.gz") for p in paths]


@pytest.fixture(params=HOMES, ids=_ids(HOMES))
def old(request: pytest.FixtureRequest, tmp_path: Path) -> OldHome:
    """Every old home."""
    return _unpack(request.param, tmp_path)


@pytest.fixture(params=SYNCED, ids=_ids(SYNCED))
def synced(request: pytest.FixtureRequest, tmp_path: Path) -> OldHome:
    """The old homes that had app data and sync (kv entries, a conflict, pending changes)."""
    return _unpack(request.param, tmp_path)


@pytest.fixture(params=IMPORTED, ids=_ids(IMPORTED))
def imported(request: pytest.FixtureRequest, tmp_path: Path) -> OldHome:
    """The old homes that imported bundles (archive records of the old code's shape)."""
    return _unpack(request.param, tmp_path)


@pytest.fixture(params=IMPORTED_BY_ARCHIVE_V1, ids=_ids(IMPORTED_BY_ARCHIVE_V1))
def imported_v1(request: pytest.FixtureRequest, tmp_path: Path) -> OldHome:
    """The old homes whose import records are of archive v1 (no source paths)."""
    return _unpack(request.param, tmp_path)


@pytest.fixture
def store(old: OldHome) -> Iterator[BlueprintStore]:
    s = open_store(old.home)
    yield s
    s.close()


@pytest.fixture
def synced_store(synced: OldHome) -> Iterator[BlueprintStore]:
    s = open_store(synced.home)
    yield s
    s.close()


def _history(store: BlueprintStore, rid: str) -> list[list[Any]]:
    return [[r.rev, r.path, r.origin, r.deleted] for r in store.history(rid)]


def test_fixtures_are_there() -> None:
    assert len(HOMES) >= 4 and len(SYNCED) >= 3 and len(IMPORTED_BY_ARCHIVE_V1) >= 1
    assert len(IMPORTED) > len(IMPORTED_BY_ARCHIVE_V1)


def _versions(store: BlueprintStore) -> dict[str, int]:
    with store.index.read() as cur:
        return {
            str(c): int(v)
            for c, v in cur.execute("SELECT component, version FROM component_versions")
        }


def _import_records(store: BlueprintStore) -> list[list[str]]:
    with store.index.read() as cur:
        rows = cur.execute("SELECT src_id, src_hash, result_id, action FROM archive_imports")
        return sorted([str(v) for v in row] for row in rows)


def test_the_old_codes_bundle_imports_again_unchanged(imported: OldHome) -> None:
    """Whichever archive version made them, the old code's imports are known: its bundle
    imported again changes nothing, and its records stay as they were."""
    store = open_store(imported.home)
    try:
        before = {i.path: (i.id, i.content_hash) for i in store.list()}
        again = import_bundle(
            store, imported.home.parent / "bundle-old.lsbundle", on_conflict="keep-both"
        )
        assert {i.path: i.action for i in again.items} == dict.fromkeys(
            imported.expected["imports"]["actions"], "unchanged"
        )
        assert {i.path: (i.id, i.content_hash) for i in store.list()} == before
        assert _import_records(store) == imported.expected["imports"]["records"]
        assert _versions(store)["archive"] == len(_ARCHIVE_MIGRATIONS)
        assert store.check().clean
    finally:
        store.close()


def test_import_records_are_kept_and_the_archive_tables_upgraded_once(imported_v1: OldHome) -> None:
    """The old code's import records stay (a bundle it imported is still "already imported"),
    and the archive tables reach today's version on the first import, once."""
    imported = imported_v1
    exp = imported.expected["imports"]
    store = open_store(imported.home)
    try:
        assert _versions(store)["archive"] < len(_ARCHIVE_MIGRATIONS)  # made before src_path
        before = {i.path: i.id for i in store.list()}
        # (Under keep-both, as it was imported: a copy made before is found by its record.)
        again = import_bundle(
            store, imported.home.parent / "bundle-old.lsbundle", on_conflict="keep-both"
        )
        assert {i.path: i.action for i in again.items} == dict.fromkeys(exp["actions"], "unchanged")
        assert all("already imported" in i.reason for i in again.items), again.items
        assert {i.path: i.id for i in store.list()} == before
        assert _import_records(store) == exp["records"]
        assert _versions(store)["archive"] == len(_ARCHIVE_MIGRATIONS)
        with store.index.read() as cur:
            assert {str(r[0]) for r in cur.execute("SELECT src_path FROM archive_imports")} == {""}
        assert store.check().clean
    finally:
        store.close()
    # Opened again: up to date, so no migration and no write.
    files = _index_files(imported.home)
    store = open_store(imported.home)
    try:
        import_bundle(store, imported.home.parent / "bundle-old.lsbundle", on_conflict="keep-both")
        assert _versions(store)["archive"] == len(_ARCHIVE_MIGRATIONS)
    finally:
        store.close()
    assert _index_files(imported.home) == files


def test_a_dry_run_reads_old_import_records_without_upgrading_them(imported_v1: OldHome) -> None:
    """The plan reads the records as the old code left them (no src_path yet): a dry run finds
    what it imported, and leaves the tables at their version (it upgraded them, a write)."""
    imported = imported_v1
    exp = imported.expected["imports"]
    store = open_store(imported.home)
    try:
        old_version = _versions(store)["archive"]
        plan = import_bundle(
            store,
            imported.home.parent / "bundle-old.lsbundle",
            on_conflict="keep-both",
            dry_run=True,
        )
        assert {i.path: i.action for i in plan.items} == dict.fromkeys(exp["actions"], "unchanged")
        assert all("already imported" in i.reason for i in plan.items), plan.items
        assert _versions(store)["archive"] == old_version < len(_ARCHIVE_MIGRATIONS)
    finally:
        store.close()


def test_bundles_of_today_go_both_ways(imported: OldHome, tmp_path: Path) -> None:
    """Today's bundle imports into the upgraded home, and the upgraded home's export (its old
    imports and put-aside copies included) imports whole into a new home, both checking clean."""
    store = open_store(imported.home)
    fresh = open_store(tmp_path / "fresh")
    try:
        fresh.save("new/one", "made: today\n", name="New")
        export_bundle(fresh, tmp_path / "today.lsbundle")
        got = import_bundle(store, tmp_path / "today.lsbundle")
        assert [(i.path, i.action) for i in got.items] == [("new/one.blueprint.yaml", "create")]
        out = export_bundle(store, tmp_path / "upgraded.lsbundle")
        back = import_bundle(fresh, tmp_path / "upgraded.lsbundle", on_conflict="keep-both")
        assert back.counts() == {"create": out.count - 1, "unchanged": 1}, back.counts()
        assert {i.path: i.content_hash for i in fresh.list()} == {
            i.path: i.content_hash for i in store.list()
        }
        assert store.check().clean and fresh.check().clean
    finally:
        fresh.close()
        store.close()


def test_blueprints_history_and_identity_are_kept(old: OldHome, store: BlueprintStore) -> None:
    exp = old.expected
    if old.fingerprinted:
        assert store.device_id != exp["device_id"]  # a copied home (see FINGERPRINTED)
    else:
        assert store.device_id == exp["device_id"]
    live = {i.path: i.id for i in store.list()}
    assert live == {path: e["id"] for path, e in exp["live"].items()}
    for path, e in exp["live"].items():
        assert store.load(path).content == e["content"]
        assert _history(store, e["id"]) == e["history"], path
    for path, e in exp["deleted"].items():
        row = store.row(e["id"], include_deleted=True)
        assert row.deleted and row.path == path
        assert _history(store, e["id"]) == e["history"], path
    # A deleted blueprint still comes back from its history.
    gone = exp["deleted"]["trash/gone.blueprint.yaml"]["id"]
    assert store.restore(gone, 1).content == "bye: true\n"


def test_search_and_check_work(old: OldHome, store: BlueprintStore) -> None:
    assert [h.info.path for h in store.search("ship")] == ["ops/deploy.blueprint.yaml"]
    assert [h.info.path for h in store.search("Mover")] == ["moved/again.blueprint.yaml"]
    assert [h.info.path for h in store.search("ci")] == []  # (the tag went in the 3rd save)
    assert [h.info.path for h in store.search("zebra")] == []  # deleted
    assert [i.path for i in store.list(tag="ops")] == ["ops/deploy.blueprint.yaml"]
    report = store.check()
    assert report.clean, report.problems
    assert store.index.integrity_check() == [] or store.index.integrity_check() is None
    # A save after the upgrade is searchable and checks clean too.
    store.save("ops/deploy", "steps:\n  - rollback\n", name="Deploy")
    assert [h.info.path for h in store.search("rollback")] == ["ops/deploy.blueprint.yaml"]
    assert store.check().clean


def test_kv_entries_are_kept(synced: OldHome, synced_store: BlueprintStore) -> None:
    kv = KVStore(synced_store.index)
    try:
        assert kv.load("prefs") == synced.expected["kv"]["prefs"]
        assert kv.load("notes.yaml") == synced.expected["kv"]["notes.yaml"]
        assert kv.load("blob").hex() == synced.expected["kv_blob"]
        assert kv.find_by_tag("t1") == ["notes.yaml"]
        kv.save("prefs", {"theme": "light"})
        assert kv.load("prefs") == {"theme": "light"}
    finally:
        kv.close()


def test_conflict_record_is_kept(synced: OldHome, synced_store: BlueprintStore) -> None:
    got = [
        {"id": c.id, "path": c.path, "copy_id": c.copy_id, "copy_path": c.copy_path}
        for c in _local.list_conflicts(synced_store)
    ]
    assert got == synced.expected["conflicts"]
    rec = _local.list_conflicts(synced_store)[0]
    assert "b: server" in rec.remote and "b: local" in rec.local


def test_pending_changes_are_pushed_once_and_nothing_else(
    synced: OldHome, synced_store: BlueprintStore
) -> None:
    old, store = synced, synced_store
    assert _local.local_status(store).pending == old.expected["pending"] == 4
    server = old.memory_server()
    before = {rid: (o.row.rev, o.row.seq) for rid, o in server.rows.items()}
    seq0 = server.seq
    engine = SyncEngine(store, MemoryRemote(server), policy="keep-both")
    try:
        report = engine.sync_once()
    finally:
        getattr(engine, "close", lambda: None)()
    assert report.pushed == 4 and report.conflicts == 0 and not report.errors, report
    assert server.seq == seq0 + 4  # exactly the four waiting changes reached the server
    live = {i.path: i.id for i in store.list()}
    exp = old.expected["live"]
    rows = {rid: o.row for rid, o in server.rows.items()}
    assert "tell" in rows[exp["ops/deploy.blueprint.yaml"]["id"]].content
    assert rows[exp["pending/new.blueprint.yaml"]["id"]].path == "pending/new.blueprint.yaml"
    assert rows[exp["moved/again.blueprint.yaml"]["id"]].path == "moved/again.blueprint.yaml"
    assert rows[old.expected["deleted"]["notes/kubernetes.blueprint.yaml"]["id"]].deleted
    changed = {rid for rid, o in server.rows.items() if (o.row.rev, o.row.seq) != before.get(rid)}
    assert len(changed) == 4
    assert live == {p: e["id"] for p, e in exp.items()}  # nothing pulled back over the files
    assert _local.local_status(store).pending == 0


def _index_files(home: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((home / "data").glob("index.db*"))
    }


def _make_newer(home: Path, component: str) -> None:
    """Make the index look written by a future LocalStore: a higher version of ``component``."""
    conn = apsw.Connection(str(home / "data" / "index.db"))
    ver = conn.execute(
        "SELECT version FROM component_versions WHERE component = ?", (component,)
    ).fetchall()[0][0]
    assert isinstance(ver, int), ver
    conn.execute(
        "UPDATE component_versions SET version = ? WHERE component = ?", (ver + 1, component)
    )
    if component == "core":
        conn.execute(f"PRAGMA user_version = {ver + 1}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@pytest.mark.parametrize("component", ["core", "kv", "sync"])
def test_newer_index_is_refused_untouched(synced: OldHome, component: str) -> None:
    old = synced
    # First bring the home to this version (so every component is at its newest), then ahead.
    s = open_store(old.home)
    KVStore(s.index).close()
    _local.ensure_schema(s)
    s.close()
    _make_newer(old.home, component)
    blueprint_files = {
        p.relative_to(old.home): p.read_bytes()
        for p in (old.home / "blueprints").rglob("*")
        if p.is_file()
    }
    before = _index_files(old.home)
    with pytest.raises(IndexStoreError) as err:
        s = open_store(old.home)
        try:
            if component == "kv":
                KVStore(s.index)
            else:
                _local.ensure_schema(s)
        finally:
            s.close()
    assert "newer" in err.value.message and "upgrade localstore" in (err.value.hint or "").lower()
    assert _index_files(old.home) == before
    after = {
        p.relative_to(old.home): p.read_bytes()
        for p in (old.home / "blueprints").rglob("*")
        if p.is_file()
    }
    assert after == blueprint_files


def test_newer_core_index_cli_says_upgrade(old: OldHome) -> None:
    s = open_store(old.home)
    s.close()
    _make_newer(old.home, "core")
    before = _index_files(old.home)
    out = subprocess.run(
        [sys.executable, "-c", CLI, "--home", str(old.home), "ls"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "newer" in out.stderr and "upgrade" in out.stderr.lower(), out.stderr
    assert "Traceback" not in out.stderr
    assert _index_files(old.home) == before


def _schema(store: BlueprintStore, *, synced: bool) -> dict[tuple[str, str], str]:
    if synced:
        KVStore(store.index).close()
        _local.ensure_schema(store)
        _ensure_schema(store)  # the archive's tables (an import makes them)
    with store.index.read() as cur:
        return {
            (str(t), str(n)): " ".join(str(sql or "").split())
            for t, n, sql in cur.execute("SELECT type, name, sql FROM sqlite_schema")
            if not str(n).startswith(("sqlite_autoindex", "kv_", "credential")) or str(t) != "index"
        }


def test_upgraded_schema_is_the_fresh_one(old: OldHome, tmp_path: Path) -> None:
    """Core v1 was edited in place before any release: an early home must end in today's shape."""
    fresh = open_store(tmp_path / "fresh")
    upgraded = open_store(old.home)
    try:
        synced = not old.expected.get("store_only")
        assert _schema(upgraded, synced=synced) == _schema(fresh, synced=synced)
        with upgraded.index.read() as cur:
            versions = dict(cur.execute("SELECT component, version FROM component_versions"))
            assert cur.execute("PRAGMA user_version").fetchall()[0][0] == len(CORE_MIGRATIONS)
        assert versions["core"] == len(CORE_MIGRATIONS)
    finally:
        upgraded.close()
        fresh.close()


def test_a_deleted_path_is_found_by_index_after_the_upgrade(
    old: OldHome, store: BlueprintStore
) -> None:
    """Core v12 indexes the deleted rows by path: an old home's tombstones are in it too."""
    gone = old.expected["deleted"]["trash/gone.blueprint.yaml"]["id"]
    assert store.row("trash/gone", include_deleted=True).id == gone
    assert blueprint_scans(store, lambda: store.row("trash/gone", include_deleted=True)) == []


def test_newer_user_version_alone_is_refused(old: OldHome) -> None:
    """The core's version is mirrored in PRAGMA user_version: a higher one alone means newer."""
    open_store(old.home).close()
    conn = apsw.Connection(str(old.home / "data" / "index.db"))
    conn.execute(f"PRAGMA user_version = {len(CORE_MIGRATIONS) + 1}")
    conn.close()
    before = _index_files(old.home)
    with pytest.raises(IndexStoreError, match="newer localstore"):
        open_store(old.home)
    assert _index_files(old.home) == before


def test_newer_index_is_refused_while_its_writer_holds_the_lock(old: OldHome) -> None:
    """A newer version's daemon writing meanwhile must not turn the answer into a lock wait."""
    open_store(old.home).close()
    _make_newer(old.home, "core")
    holder = apsw.Connection(str(old.home / "data" / "index.db"))
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(IndexStoreError, match="newer localstore"):
            open_store(old.home, busy_timeout_ms=200)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_newer_archive_refuses_import_only(imported: OldHome, tmp_path: Path) -> None:
    """Components are checked when first used: a home whose archive tables a newer LocalStore
    made (as an earlier build meets a home today's import upgraded) refuses import, untouched,
    and still lists, reads app data, exports and checks clean."""
    store = open_store(imported.home)
    _ensure_schema(store)
    store.close()
    _make_newer(imported.home, "archive")
    store = open_store(imported.home)
    try:
        before = (_versions(store), _import_records(store), store.list())
        with pytest.raises(IndexStoreError, match="newer localstore") as err:
            import_bundle(store, imported.home.parent / "bundle-old.lsbundle")
        assert "upgrade localstore" in (err.value.hint or "").lower()
        assert (_versions(store), _import_records(store), store.list()) == before
        assert {i.path for i in store.list()} == set(imported.expected["live"])
        with KVStore(store.index) as kv:
            assert kv.load("prefs") == imported.expected["kv"]["prefs"]
        assert export_bundle(store, tmp_path / "out.lsbundle").count == len(store.list())
        assert store.check().clean
    finally:
        store.close()
