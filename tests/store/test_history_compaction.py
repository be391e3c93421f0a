"""Superseded revisions are stored compacted by the maintainer, and every one stays restorable.

An app autosaving one 2 KB blueprint grew the index by about 4 KB a save (one revision row per
page), 98% of the index. The maintainer now stores each revision that a newer one superseded as
zlib BLOBs; every reader decodes through ``localstore._revisions.revision_text``. The current
revision stays plain text (the full-text view and the sync outbox read it in SQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

import localstore
from localstore.index import CORE_MIGRATIONS, Maintainer
from localstore.store import BlueprintStore
from sync import _state as sync_state


@pytest.fixture
def store(home: Path) -> Iterator[BlueprintStore]:
    # No maintainer thread: each test runs the rounds it wants, when it wants them.
    s = BlueprintStore(localstore.load_settings(home=home), maintenance=False)
    try:
        yield s
    finally:
        s.close()


def text(n: int) -> str:
    """About 2 KB, a different line changed in each version (an autosave's small edit)."""
    lines = [f"  - run: step {j} make build && ./deploy --env prod-{j}\n" for j in range(30)]
    lines[n % 30] = f"  - run: edited in version {n}\n"
    return "name: deploy\nsteps:\n" + "".join(lines)


def compact(store: BlueprintStore) -> None:
    Maintainer(store.paths.index_db).run_once()


def stored_types(store: BlueprintStore, ident: str) -> dict[int, tuple[str, str]]:
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT rev, typeof(content), typeof(meta) FROM revisions WHERE id = ? ORDER BY rev",
            (ident,),
        ).fetchall()
    return {int(r[0]): (str(r[1]), str(r[2])) for r in rows}


def used_bytes(store: BlueprintStore) -> int:
    with store.index.read() as cur:
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        pages = int(cur.execute("PRAGMA page_count").fetchall()[0][0])
        free = int(cur.execute("PRAGMA freelist_count").fetchall()[0][0])
        size = int(cur.execute("PRAGMA page_size").fetchall()[0][0])
    return (pages - free) * size


def test_superseded_revisions_are_compacted_and_each_restores_exactly(
    store: BlueprintStore,
) -> None:
    ident = store.save("app/deploy.blueprint.yaml", text(0), tags=["ops"]).id
    for n in range(1, 20):
        store.save("app/deploy.blueprint.yaml", text(n), description=f"v{n}")
    before = {r.rev: store.load_revision(ident, r.rev) for r in store.history(ident)}
    history = store.history(ident)
    compact(store)
    types = stored_types(store, ident)
    assert all(types[rev] == ("blob", "blob") for rev in range(1, 20)), types
    assert types[20] == ("text", "text")  # the current one: read in SQL by search and sync
    assert store.history(ident) == history
    for rev, old in before.items():
        now = store.load_revision(ident, rev)
        assert (now.content, now.meta, now.path, now.content_hash) == (
            old.content,
            old.meta,
            old.path,
            old.content_hash,
        )
    restored = store.restore(ident, 4)  # (revision n + 1 saved text(n))
    assert restored.content == text(3)
    assert store.load("app/deploy").content == text(3)
    assert store.check().problems == []  # includes FTS5's check against the live text
    assert [h.info.path for h in store.search("edited")] == ["app/deploy.blueprint.yaml"]


def test_a_deleted_blueprint_comes_back_from_compacted_history(store: BlueprintStore) -> None:
    ident = store.save("gone.blueprint.yaml", text(1)).id
    store.save("gone.blueprint.yaml", text(2))
    store.delete(ident)
    store.save("other.blueprint.yaml", text(5))
    compact(store)
    assert stored_types(store, ident)[1] == ("blob", "blob")
    assert store.restore(ident, 1).content == text(1)
    assert store.check().problems == []


def test_a_sync_base_found_in_compacted_history_is_decoded(store: BlueprintStore) -> None:
    """The engine finds a merge base among past revisions by content hash (sync bases)."""
    first = store.save("b.blueprint.yaml", text(1))
    store.save("b.blueprint.yaml", text(2))
    compact(store)
    assert stored_types(store, first.id)[1] == ("blob", "blob")
    with store.index.read() as cur:
        base = sync_state.local_revision_with_hash(cur, first.id, first.content_hash)
    assert base is not None and base.content == text(1)
    assert base.meta["id"] == first.id


def test_compaction_runs_once_per_revision_and_shrinks_history(store: BlueprintStore) -> None:
    for n in range(300):
        store.save("app/deploy.blueprint.yaml", text(n))
    plain = used_bytes(store)
    compact(store)
    compacted = used_bytes(store)
    # 300 rows of ~2.3 KB took a page each; compacted they take about a sixth of that.
    assert compacted < plain * 0.4, (plain, compacted)
    # A later round looks only at revisions added since (the watermark), and saves go on.
    for n in range(300, 310):
        store.save("app/deploy.blueprint.yaml", text(n))
    compact(store)
    ident = store.load("app/deploy").id
    types = stored_types(store, ident)
    assert [rev for rev, t in types.items() if t[0] == "text"] == [310]
    assert store.load_revision(ident, 306).content == text(305)


def test_no_compaction_once_a_newer_localstore_upgraded_the_index(store: BlueprintStore) -> None:
    """The maintainer writes with its own connection, which `Index.write`'s refusal of an index
    a newer localstore upgraded (the app updated while the daemon ran) did not cover: it went on
    rewriting history rows in this version's format, which the newer one may read otherwise."""
    ident = store.save("deploy", text(0)).id
    for n in range(1, 4):
        store.save("deploy", text(n))
    newer = len(CORE_MIGRATIONS) + 1
    other = apsw.Connection(str(store.paths.index_db))  # the newer localstore's open
    with other:
        other.execute(
            "UPDATE component_versions SET version = ? WHERE component = 'core'", (newer,)
        )
        other.execute(f"PRAGMA user_version = {newer}")
    other.close()
    before = stored_types(store, ident)
    compact(store)
    assert stored_types(store, ident) == before
    assert {t for t, _ in before.values()} == {"text"}
