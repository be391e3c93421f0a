"""Build one upgrade fixture: a home made by an OLDER LocalStore, plus its MemoryServer's rows.

Run it with the old code on the path (see tests/upgrade/fixtures/README.md)::

    git worktree add --detach /tmp/old-REV REV
    PYTHONPATH=/tmp/old-REV /work/main/.venv/bin/python tests/upgrade/make_fixture.py OUT.tar.gz

It uses only API that every LocalStore since the first sync engine has (open_store, save, move,
delete, KVStore, SyncEngine.sync_once, MemoryRemote) and writes a tar.gz holding:

* ``home/``: the home of device A (blueprints with history, a move, a delete, kv entries, a
  conflict record, and changes made after its last sync that are still waiting to be pushed);
* ``server.json``: the MemoryServer's rows and revisions (MemoryServer lives in memory only);
* ``expected.json``: what the old code itself said about the home, for the tests to compare.

``make_fixture.py --reopen IN.tar.gz OUT.tar.gz`` instead opens the home of an existing fixture with
the code on the path (store, kv and sync tables, nothing else) and saves it again: a home that an
intermediate version upgraded before this one opens it.

Device B (used to make the conflict) is not kept. Times are whatever the clock said: the tests
compare contents, paths, ids and counts, never times.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from localstore.store import BlueprintStore, open_store

try:  # (the first builds had neither app data nor sync: their homes are store-only fixtures)
    from localstore.kv import KVStore
    from sync import _local
    from sync.engine import SyncEngine
    from sync.memory_remote import MemoryRemote, MemoryServer
except ImportError:
    STORE_ONLY = True
else:
    STORE_ONLY = False

try:  # (bundles came with the daemon; fixtures made before imports were added have none)
    from localstore.archive import export_bundle, import_bundle
except ImportError:
    HAS_IMPORT = False
else:
    HAS_IMPORT = True

SERVER_NAME = "upgrade-fixture"


def _blueprints(a: BlueprintStore) -> dict[str, Any]:
    """What the old code says about the blueprints: live ones with content and history, and
    deleted ones with history."""
    out: dict[str, Any] = {
        "live": {
            i.path: {
                "id": i.id,
                "content": a.load(i.path).content,
                "history": [[r.rev, r.path, r.origin, r.deleted] for r in a.history(i.id)],
            }
            for i in a.list()
        },
        "deleted": {},
    }
    with a.index.read() as cur:
        gone = [
            (str(i), str(p))
            for i, p in cur.execute("SELECT id, path FROM blueprints WHERE deleted = 1")
        ]
    for rid, path in gone:
        out["deleted"][path] = {
            "id": rid,
            "history": [[r.rev, r.path, r.origin, r.deleted] for r in a.history(rid)],
        }
    return out


def _rev() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=Path(sys.modules["localstore"].__file__ or "").parent,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _first_saves(a: BlueprintStore) -> None:
    a.save("ops/deploy", "steps:\n  - build\n", name="Deploy", tags=["ops", "ci"])
    a.save("ops/deploy", "steps:\n  - build\n  - test\n", name="Deploy", tags=["ops", "ci"])
    a.save("ops/deploy", "steps:\n  - build\n  - test\n  - ship\n", name="Deploy", tags=["ops"])
    a.save("notes/kubernetes", "cluster: prod\nnodes: 3\n", description="zebra cluster notes")
    a.save("old/place", "where: here\n", name="Mover")
    a.move("old/place", "new/place")
    a.save("trash/gone", "bye: true\n", name="Gone")
    a.delete("trash/gone")


def build_store_only(work: Path) -> dict[str, Any]:
    """A home of a build before app data and sync: blueprints, history, a move, deletes."""
    home = work / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.yaml").write_text("device_name: laptop\n", encoding="utf-8")
    a = open_store(home)
    _first_saves(a)
    a.save("ops/deploy", "steps:\n  - build\n  - test\n  - ship\n  - tell\n", name="Deploy")
    a.save("pending/new", "fresh: true\n", name="Pending new")
    a.move("new/place", "moved/again")
    a.delete("notes/kubernetes")
    expected = {"rev": _rev(), "device_id": a.device_id, "store_only": True, **_blueprints(a)}
    a.close()
    return {"server": {}, "expected": expected}


def _server_dump(server: MemoryServer) -> dict[str, Any]:
    return {
        "name": server.name,
        "seq": server.seq,
        "horizons": dict(server.horizons),
        "rows": [{"owner": o.owner, **dataclasses.asdict(o.row)} for o in server.rows.values()],
        "revisions": [dataclasses.asdict(r) for _, r in server.revisions],
    }


def _imports(a: BlueprintStore, work: Path) -> dict[str, Any]:
    """Import two bundles made by another home (device C, not kept) into ``a``: a create, an
    update of it, and a keep-both (C's blueprint at a path ``a`` holds with another id). The
    second bundle is kept as ``bundle-old.lsbundle``, for the tests to import again."""
    c = open_store(work / "third")
    c.save("imported/one", "one: 1\n", name="One")
    c.save("shared/plan", "from: c\n", name="C's plan")
    export_bundle(c, work / "first.lsbundle", folder="imported")
    import_bundle(a, work / "first.lsbundle", on_conflict="keep-both")
    c.save("imported/one", "one: 2\n", name="One")
    export_bundle(c, work / "bundle-old.lsbundle")
    result = import_bundle(a, work / "bundle-old.lsbundle", on_conflict="keep-both")
    c.close()
    with a.index.read() as cur:
        rows = cur.execute(
            "SELECT src_id, src_hash, result_id, action FROM archive_imports ORDER BY ts, src_id"
        ).fetchall()
    return {
        "actions": {i.path: i.action for i in result.items},
        "records": sorted([str(v) for v in row] for row in rows),
    }


def build(work: Path) -> dict[str, Any]:
    server = MemoryServer(name=SERVER_NAME)
    home_a, home_b = work / "home", work / "other"
    (home_a / "config").mkdir(parents=True)
    # Every key is one an old config.yaml could hold; the current code must still accept them.
    (home_a / "config" / "config.yaml").write_text(
        "device_name: laptop\nconflict_policy: keep-both\npoll_interval_s: 60\nsettle_ms: 300\n",
        encoding="utf-8",
    )
    a = open_store(home_a)
    _first_saves(a)
    a.save("shared/plan", "a: 1\nb: 2\nc: 3\n", name="Plan")
    kv = KVStore(a.index)
    kv.save("prefs", {"theme": "dark", "size": 12})
    kv.save("notes.yaml", {"x": [1, 2]}, format="yaml", tags=["t1"])
    kv.save("blob", b"\x00\x01binary", format="binary", compress=True)
    # Imported before the first sync, so the changes waiting to be pushed stay the same four.
    imports = _imports(a, work) if HAS_IMPORT else None

    engine_a = SyncEngine(a, MemoryRemote(server), policy="keep-both")
    engine_a.sync_once()

    # Device B changes shared/plan on the server; A changes it too, then syncs: a conflict.
    b = open_store(home_b)
    engine_b = SyncEngine(b, MemoryRemote(server), policy="keep-both")
    engine_b.sync_once()
    b.save("shared/plan", "a: 1\nb: server\nc: 3\n", name="Plan")
    b.save("from/b", "made: on b\n", name="FromB")
    engine_b.sync_once()
    a.save("shared/plan", "a: 1\nb: local\nc: 3\n", name="Plan")
    engine_a.sync_once()

    # Changes after the last sync: still waiting to be pushed when the old version stopped.
    a.save("ops/deploy", "steps:\n  - build\n  - test\n  - ship\n  - tell\n", name="Deploy")
    a.save("pending/new", "fresh: true\n", name="Pending new")
    a.move("new/place", "moved/again")
    a.delete("notes/kubernetes")

    status = _local.local_status(a)
    expected: dict[str, Any] = {
        "rev": _rev(),
        "device_id": a.device_id,
        "pending": status.pending,
        "conflicts": [
            {"id": c.id, "path": c.path, "copy_id": c.copy_id, "copy_path": c.copy_path}
            for c in _local.list_conflicts(a)
        ],
        **_blueprints(a),
        "kv": {"prefs": kv.load("prefs"), "notes.yaml": kv.load("notes.yaml")},
        "kv_blob": kv.load("blob").hex(),
    }
    if imports is not None:
        expected["imports"] = imports
    for closer in (engine_a, engine_b):
        getattr(closer, "close", lambda: None)()
    kv.close()
    a.close()
    b.close()
    return {"server": _server_dump(server), "expected": expected}


def reopen(src: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with tarfile.open(src) as tar:
            tar.extractall(work, filter="data")
        store = open_store(work / "home")
        if not STORE_ONLY:
            KVStore(store.index).close()
            _local.ensure_schema(store)
        store.close()
        with tarfile.open(out, "w:gz") as tar:
            for name in ("server.json", "expected.json"):
                tar.add(work / name, arcname=name)
            tar.add(work / "home", arcname="home", filter=_no_cache)
    print(out, out.stat().st_size)


def main() -> None:
    if sys.argv[1] == "--reopen":
        reopen(Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve())
        return
    out = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        made = build_store_only(work) if STORE_ONLY else build(work)
        with tarfile.open(out, "w:gz") as tar:
            for name in ("server", "expected"):
                data = json.dumps(made[name], indent=1, sort_keys=True, default=str).encode()
                info = tarfile.TarInfo(f"{name}.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            # Caches are not part of what an upgrade must keep; the index, state and config are.
            tar.add(work / "home", arcname="home", filter=_no_cache)
            if (work / "bundle-old.lsbundle").exists():
                tar.add(work / "bundle-old.lsbundle", arcname="bundle-old.lsbundle")
    print(out, out.stat().st_size)


def _no_cache(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if info.name.startswith("home/cache") or info.name.endswith(".lock"):
        return None
    return info


if __name__ == "__main__":
    main()
