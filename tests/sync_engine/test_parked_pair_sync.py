"""Sync of a home holding a pair core v11 kept whole (index._v11_path_keys): two blueprints
whose names are one on macOS and Windows, the second under a key of its own until one is renamed.

Made by the last build before v11 (tests/upgrade/fixtures/name-keys-72e8b8d.tar.gz): both were
pushed as two blueprints, and the server (keyed on ``lower(path)``) holds both. An edit of the
kept one from another device must land in it, at its own path: not in the blueprint holding the
key, and not as a path conflict moving either aside.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.engine import SyncEngine
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change

FIXTURE = Path(__file__).parents[1] / "upgrade" / "fixtures" / "name-keys-72e8b8d.tar.gz"
HELD, KEPT = "greek/\u0390.blueprint.yaml", "greek/\u03aa\u0301.blueprint.yaml"


def test_a_server_edit_of_the_kept_one_lands_in_it_where_it_is(tmp_path: Path) -> None:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    server = MemoryServer()
    store = BlueprintStore(load_settings(home=tmp_path / "pairs"), maintenance=False)
    remote = MemoryRemote(server, user="u")
    engine = SyncEngine(store, remote)
    try:
        held, kept = store.load(HELD), store.load(KEPT)
        engine.sync_once()
        assert {server.rows[b.id].row.path for b in (held, kept)} == {HELD, KEPT}
        # Another device edits the kept one on the server.
        row = server.rows[kept.id].row
        other = MemoryRemote(server, user="u")
        edit = Change(1, kept.id, row.rev, KEPT, "side: second\nfrom: server\n", row.meta, "h")
        assert other.push([edit], device="other")[0].status == "applied"
        other.close()
        report = engine.sync_once()
        assert report.conflicts == 0 and engine.conflicts() == []
        assert store.load(KEPT).id == kept.id
        assert store.load(KEPT).content == "side: second\nfrom: server\n"
        assert store.abspath(KEPT).read_text(encoding="utf-8") == "side: second\nfrom: server\n"
        assert (store.load(HELD).id, store.load(HELD).content) == (held.id, held.content)
        assert sorted(i.path for i in store.list() if i.path.startswith("greek/")) == sorted(
            [HELD, KEPT, "greek/\u03aa\u0342.blueprint.yaml", "greek/\u1fd7.blueprint.yaml"]
        )
    finally:
        engine.stop()
        engine.join(10)
        remote.close()
        store.close()


def test_one_pull_of_both_edited_and_the_holder_renamed_lands_each_in_its_own(
    tmp_path: Path,
) -> None:
    """The batched path for rows that need no decision (Applier.plan_clean_save) finds the
    kept one's path key held (by the other blueprint) and leaves its row to apply_row, which
    finds it by its exact path: in one pull with the holder's row (edited, or renamed away),
    each lands in its own blueprint, with no conflict. (A check, session 20: no fix needed.)"""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    server = MemoryServer()
    store = BlueprintStore(load_settings(home=tmp_path / "pairs"), maintenance=False)
    remote = MemoryRemote(server, user="u")
    engine = SyncEngine(store, remote)
    moved = "greek/moved.blueprint.yaml"
    try:
        held, kept = store.load(HELD), store.load(KEPT)
        engine.sync_once()
        for n, path in ((1, HELD), (2, moved)):
            other = MemoryRemote(server, user="u")
            edits = [
                Change(
                    2 * n - 1,
                    held.id,
                    server.rows[held.id].row.rev,
                    path,
                    f"held: {n}\n",
                    server.rows[held.id].row.meta,
                    "h",
                ),
                Change(
                    2 * n,
                    kept.id,
                    server.rows[kept.id].row.rev,
                    KEPT,
                    f"kept: {n}\n",
                    server.rows[kept.id].row.meta,
                    "h",
                ),
            ]
            assert [r.status for r in other.push(edits, device="other")] == ["applied"] * 2
            other.close()
            report = engine.sync_once()
            assert report.conflicts == 0 and engine.conflicts() == []
            assert (store.load(path).id, store.load(path).content) == (held.id, f"held: {n}\n")
            assert (store.load(KEPT).id, store.load(KEPT).content) == (kept.id, f"kept: {n}\n")
            assert store.abspath(KEPT).read_text(encoding="utf-8") == f"kept: {n}\n"
        assert not store.abspath(HELD).exists()
    finally:
        engine.stop()
        engine.join(10)
        remote.close()
        store.close()
