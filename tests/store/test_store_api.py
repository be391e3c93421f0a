"""The BlueprintStore API on real files and a real index."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import localstore
from localstore.errors import (
    AlreadyExistsError,
    AmbiguousRefError,
    NotFoundError,
    RevisionConflictError,
    RevisionNotFoundError,
    StoreClosedError,
)
from localstore.events import Event
from localstore.index import CORE_MIGRATIONS
from localstore.store import SaveRequest

DOC = "# a comment that must survive\nsteps:\n  - name: fetch   # trailing\n    run: curl\n"


def test_save_creates_a_pair_with_meta(store, home: Path) -> None:
    bp = store.save("personal/workflow-1", DOC, tags=["a", "b"], description="d")
    yaml_file = home / "blueprints/personal/workflow-1.blueprint.yaml"
    meta_file = home / "blueprints/personal/workflow-1.blueprint.meta.json"
    assert yaml_file.read_text() == DOC
    meta = json.loads(meta_file.read_text())
    assert meta["id"] == bp.id and meta["tags"] == ["a", "b"] and meta["name"] == "workflow-1"
    assert set(meta) >= {
        "id",
        "name",
        "description",
        "author",
        "created",
        "modified",
        "version",
        "tags",
        "public",
        "encrypted",
    }
    assert bp.rev == 1 and bp.valid


def test_identical_save_is_a_noop(store) -> None:
    a = store.save("x", DOC)
    b = store.save("x", DOC)
    assert (a.rev, b.rev) == (1, 1)
    assert len(store.history("x")) == 1


def test_update_move_delete_restore_keep_identity(store) -> None:
    bp = store.save("one", DOC)
    store.save("one", DOC + "extra: 1\n")
    moved = store.move(bp.id, "folder/two")
    assert moved.id == bp.id and moved.path == "folder/two.blueprint.yaml"
    assert not store.exists("one")
    store.delete("folder/two")
    assert store.count() == 0
    with pytest.raises(NotFoundError):
        store.load(bp.id)
    revs = store.history(bp.id)
    assert [r.rev for r in revs] == [4, 3, 2, 1] and revs[0].deleted
    restored = store.restore(bp.id, 1)
    assert restored.id == bp.id and restored.content == DOC and restored.rev == 5
    assert store.load(bp.id).content == DOC


def test_refs_by_prefix_and_path(store) -> None:
    bp = store.save("a/b", DOC)
    assert store.load(bp.id[:8]).id == bp.id
    assert store.load("a/b").id == bp.id
    assert store.load("a/b.blueprint.yaml").id == bp.id
    with pytest.raises(NotFoundError):
        store.load("zzzz")


def test_ambiguous_prefix(store) -> None:
    store.save("p1", DOC, id="abcdef00-0000-4000-8000-000000000001")
    store.save("p2", DOC, id="abcdef00-0000-4000-8000-000000000002")
    with pytest.raises(AmbiguousRefError):
        store.load("abcdef00")
    assert store.load("abcdef00-0000-4000-8000-000000000002").path == "p2.blueprint.yaml"


def test_path_taken_and_expected_rev(store) -> None:
    a = store.save("a", DOC)
    b = store.save("b", DOC)
    with pytest.raises(AlreadyExistsError):
        store.move(b.id, "a")
    with pytest.raises(RevisionConflictError):
        store.save("a", DOC + "x: 1\n", expected_rev=0)
    assert store.save("a", DOC + "x: 1\n", expected_rev=a.rev).rev == 2


def test_list_filters_sort_and_paging(store) -> None:
    for i in range(30):
        store.save(f"f{i % 3}/bp-{i:02d}", DOC, tags=["even"] if i % 2 == 0 else ["odd"])
    assert len(store.list()) == 30
    assert len(store.list(folder="f1")) == 10
    assert len(store.list(tag="even")) == 15
    page = store.list(limit=7, offset=7)
    assert [i.path for i in page] == [i.path for i in store.list()][7:14]
    by_name = store.list(sort="name", descending=True, limit=1)
    assert by_name[0].name == "bp-29"


def test_full_listing_restores_the_garbage_collector(store) -> None:
    """A large listing pauses the cyclic collector; it is on again afterwards, and one the app
    turned off stays off."""
    import gc

    store.save("g", DOC)
    assert gc.isenabled()
    assert len(store.list()) == 1
    assert gc.isenabled()
    gc.disable()
    try:
        store.list()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_search_ranks_and_snippets(store) -> None:
    store.save("n1", "steps:\n  - run: deploy the kubernetes cluster\n", description="infra")
    store.save("n2", "steps:\n  - run: echo hi\n", name="kubernetes helper")
    store.save("n3", "steps: []\n")
    hits = store.search("kube")
    assert [h.info.path for h in hits][:2] == ["n2.blueprint.yaml", "n1.blueprint.yaml"]
    assert "[kubernetes]" in hits[1].snippet
    assert store.search('"deploy the"')[0].info.path == "n1.blueprint.yaml"
    assert store.search("infra")[0].info.path == "n1.blueprint.yaml"
    store.delete("n1")
    assert all(h.info.path != "n1.blueprint.yaml" for h in store.search("kubernetes"))


def test_events_for_every_change(store) -> None:
    seen: list[Event] = []
    store.subscribe(seen.append)
    bp = store.save("e", DOC)
    store.save("e", DOC + "k: v\n")
    store.move(bp.id, "e2")
    store.delete(bp.id)
    assert [(e.kind, e.origin) for e in seen] == [
        ("created", "local"),
        ("modified", "local"),
        ("moved", "local"),
        ("deleted", "local"),
    ]
    assert seen[2].old_path == "e.blueprint.yaml"


def test_subscriber_failure_does_not_undo_the_change(store, caplog) -> None:
    def boom(e: Event) -> None:
        raise RuntimeError("subscriber bug")

    store.subscribe(boom)
    store.save("s", DOC)
    assert store.exists("s")
    assert "subscriber" in caplog.text


def test_validator_flags_invalid_but_stores(home: Path) -> None:
    def validator(doc):
        return [] if "steps" in doc else ["a blueprint needs 'steps'"]

    s = localstore.open(home=home, validator=validator)
    try:
        bp = s.save("v", "name: x\n")
        assert not bp.valid and bp.problems == ("a blueprint needs 'steps'",)
        assert s.load("v").valid is False
        assert s.list()[0].valid is False
        assert s.save("v", "steps: []\n").valid
    finally:
        s.close()


def test_unknown_revision(store) -> None:
    store.save("r", DOC)
    with pytest.raises(RevisionNotFoundError):
        store.restore("r", 9)


def test_closed_store_refuses(home: Path) -> None:
    s = localstore.open(home=home)
    s.close()
    s.close()
    with pytest.raises(StoreClosedError):
        s.save("x", DOC)


def test_threads_share_a_store(store) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                store.save(f"t{n}/bp{i}", f"n: {n}\ni: {i}\n")
                store.load(f"t{n}/bp{i}")
                store.search("n")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.count() == 150
    assert store.check().clean


def test_reopen_keeps_everything(home: Path) -> None:
    with localstore.open(home=home) as s:
        bp = s.save("keep/me", DOC, tags=["t"])
        device = s.device_id
    with localstore.open(home=home) as s:
        assert s.load(bp.id).content == DOC
        assert s.device_id == device
        assert s.list(tag="t")[0].id == bp.id


def test_case_only_rename_through_move(store, home: Path) -> None:
    bp = store.save("docs/readme", DOC)
    moved = store.move(bp.id, "docs/README")
    assert moved.id == bp.id and moved.path == "docs/README.blueprint.yaml"
    names = sorted(p.name for p in (home / "blueprints/docs").iterdir())
    assert names == ["README.blueprint.meta.json", "README.blueprint.yaml"]
    assert store.check().clean


def test_search_index_stays_true_to_the_text_through_every_kind_of_change(home: Path) -> None:
    """The FTS table keeps no text of its own; FTS5's check compares it with the indexed text."""
    with localstore.open(home=home) as store:
        store.save("a", DOC, tags=["x", 'odd"tag', "dé,j[à]"], description="first")
        store.save("a", DOC + "# two\n", tags=["x"])
        store.save("a", None, name="renamed", description="meta only")
        b = store.save("f/b", "k: v\n")
        store.move(b.id, "g/b2")
        store.delete("a")
        store.restore("a", 1)
        store.save_many(
            [
                SaveRequest(path=f"m/{i}", content=f"n: {i}\n", fields={"tags": ["t"]})
                for i in range(20)
            ]
        )
        assert store.index.integrity_check() == []
    # Changes made while nothing ran, recorded by reconcile on the next open.
    root = home / "blueprints"
    (root / "g/b2.blueprint.yaml").write_text("k: changed outside\n")
    (root / "m/3.blueprint.yaml").unlink()
    (root / "m/3.blueprint.meta.json").unlink()
    (root / "m/4.blueprint.yaml").rename(root / "m/44.blueprint.yaml")
    (root / "m/4.blueprint.meta.json").rename(root / "m/44.blueprint.meta.json")
    (root / "new.blueprint.yaml").write_text("fresh: true\n")
    with localstore.open(home=home) as store:
        assert store.index.integrity_check() == []
        assert [h.info.path for h in store.search("outside")] == ["g/b2.blueprint.yaml"]
        # Restored to revision 1: its first description is searchable again, the later one not.
        assert [h.info.path for h in store.search("first")] == ["a.blueprint.yaml"]
        assert store.search("meta only") == []
        assert store.search("odd")[0].info.path == "a.blueprint.yaml"
        assert "[changed]" in store.search("changed")[0].snippet
        # Tampering with the text the indexes were built from is caught, in each index.
        with store.index.write() as cur:
            cur.execute("UPDATE revisions SET content = 'zzz' WHERE path = 'new.blueprint.yaml'")
        problems = store.index.integrity_check()
        assert any("search index (blueprints_fts)" in p for p in problems), problems
        assert not any("blueprints_described" in p for p in problems), problems
        with store.index.write() as cur:
            cur.execute("UPDATE blueprints SET name = 'zzz' WHERE path = 'g/b2.blueprint.yaml'")
        problems = store.index.integrity_check()
        assert any("search index (blueprints_described)" in p for p in problems), problems
        # Both are derived data: check --fix rebuilds them from the text they index.
        report = store.check(fix=True)
        rebuilt = [f["detail"] for f in report.fixed if f["kind"] == "search-index-rebuilt"]
        assert sorted(rebuilt) == ["blueprints_described", "blueprints_fts"]
        assert store.index.integrity_check() == [] and report.clean
        assert [h.info.path for h in store.search("zzz")] == [
            "g/b2.blueprint.yaml",
            "new.blueprint.yaml",
        ]


def test_search_matches_whole_words_and_the_last_as_a_prefix(store) -> None:
    store.save("k", "steps:\n  - run: kubernetes rollout restart\n")
    assert [h.info.path for h in store.search("kubernetes roll")] == ["k.blueprint.yaml"]
    assert [h.info.path for h in store.search("kube")] == ["k.blueprint.yaml"]
    assert store.search("kube rollout") == []  # only the last word may be unfinished
    assert [h.info.path for h in store.search('"rollout restart"')] == ["k.blueprint.yaml"]
    assert store.search('"rollout rest"') == []  # a closed phrase is exact
    assert [h.info.path for h in store.search('"rollout rest')] == ["k.blueprint.yaml"]


def test_search_orders_prefix_only_hits_below_whole_words(store) -> None:
    """Whole-word hits first (ranked); below them the prefix-only hits newest first. With no
    whole-word hit the prefix matches are ranked (a name above a mention in the text)."""
    # BM25 would put "older" (short, the word twice) above "newer" (long, once): recency decides.
    store.save("older", "steps:\n  - run: deployment deployment\n")
    store.save("exact", "steps:\n  - run: deploy the app\n")
    store.save("newer", "steps:\n  - run: deployments of the app to the production cluster\n")
    assert [h.info.path for h in store.search("deploy")] == [
        "exact.blueprint.yaml",
        "newer.blueprint.yaml",
        "older.blueprint.yaml",
    ]
    store.save("named", "steps: []\n", name="kubernetes operator")
    store.save("mention", "steps:\n  - run: kubernetes apply\n")
    assert [h.info.path for h in store.search("kube")] == [
        "named.blueprint.yaml",
        "mention.blueprint.yaml",
    ]


def test_search_over_the_cap_answers_in_tiers(store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above SEARCH_RANK_CAP matches: first the blueprints whose name, description, tags or path
    match (from the small index of those columns; ranked while within the cap, snippets from those
    columns), then the rest newest first with score 0."""
    import localstore._store_search as store_search

    monkeypatch.setattr(store_search, "SEARCH_RANK_CAP", 3)
    texts = [store.save(f"t/plain-{i}", f"steps:\n  - run: backup disk {i}\n") for i in range(5)]
    store.save("t/nightly", "steps:\n  - run: echo\n", description="the backup of the night")
    store.save("t/tagged", "steps:\n  - run: echo\n", tags=["backup"])
    hits = store.search("backup", limit=20)
    paths = [h.info.path for h in hits]
    assert paths[:2] == [
        "t/tagged.blueprint.yaml",
        "t/nightly.blueprint.yaml",
    ]  # tags weigh 6, description 4
    assert all(h.score > 0 for h in hits[:2])
    assert "[backup]" in hits[1].snippet and "night" in hits[1].snippet
    assert paths[2:] == [bp.path for bp in reversed(texts)]  # the rest, newest first
    assert all(h.score == 0 for h in hits[2:]) and all("[backup]" in h.snippet for h in hits[2:])
    # Over the cap in the described tier too: newest first there as well.
    for i in range(3):
        store.save(f"t/named-{i}", "steps: []\n", name=f"backup job {i}")
    hits = store.search("backup", limit=20)
    described = [h.info.path for h in hits[:5]]
    assert described == [f"t/named-{i}.blueprint.yaml" for i in (2, 1, 0)] + [
        "t/tagged.blueprint.yaml",
        "t/nightly.blueprint.yaml",
    ]
    assert [h.info.path for h in hits[5:]] == [bp.path for bp in reversed(texts)]
    # A folder filter applies to both tiers (4 matches in u/: over the cap there too).
    more = [store.save(f"u/plain-{i}", f"steps:\n  - run: backup {i}\n") for i in range(3)]
    store.save("u/other", "steps: []\n", name="backup elsewhere")
    assert [h.info.path for h in store.search("backup", folder="u")] == [
        "u/other.blueprint.yaml",
        *[bp.path for bp in reversed(more)],
    ]


def test_an_index_of_schema_v1_gets_the_described_search_index(home: Path) -> None:
    """Opening an index written before the small index of the described columns existed builds
    it from the rows (migration v2) and searches through it."""
    with localstore.open(home=home) as store:
        store.save("a", "steps: []\n", name="alpha", tags=["ops"])
        store.save("b", "steps:\n  - run: ops work\n")
        with store.index.write() as cur:
            cur.execute("DROP TABLE blueprints_described")
            cur.execute("UPDATE component_versions SET version = 1 WHERE component = 'core'")
            cur.execute("PRAGMA user_version = 1")
    with localstore.open(home=home) as store:
        assert store.index.integrity_check() == []
        with store.index.read() as cur:
            assert cur.execute("PRAGMA user_version").fetchall()[0][0] == len(CORE_MIGRATIONS)
            found = cur.execute(
                "SELECT rowid FROM blueprints_described WHERE blueprints_described MATCH 'ops'"
            ).fetchall()
        assert len(found) == 1
        assert store.search("ops")[0].info.path == "a.blueprint.yaml"


def test_search_statements_are_not_prepared_again_at_each_run(store) -> None:
    """FTS5's own segment lookup (``... WHERE segid=? AND term<=? ...``) was re-prepared from
    scratch at every run, a sixth of a search's time, until the connection turned on SQLite's
    query planner stability guarantee. SQLite counts re-preparations per statement (a schema
    change re-prepares each statement once: only growth across repeated runs counts)."""
    import apsw

    for i in range(30):
        store.save(f"f/b{i}", f"steps:\n  - run: deploy service-{i} to cluster {i % 3}\n")
    queries = ("deploy", "service-3", "cluster", "deploy cluster", '"to cluster"', "serv")
    for query in queries:
        assert store.search(query)
    counts: dict[str, list[int]] = {}
    conn = store.index.conn
    conn.trace_v2(
        apsw.SQLITE_TRACE_PROFILE,
        lambda e: counts.setdefault(e["sql"], []).append(
            e["stmt_status"]["SQLITE_STMTSTATUS_REPREPARE"]
        ),
        id="reprepare-test",
    )
    try:
        for _ in range(2):
            for query in queries:
                assert store.search(query)
    finally:
        conn.trace_v2(0, None, id="reprepare-test")
    repeated = {sql: runs for sql, runs in counts.items() if len(runs) > 1}
    assert any("MATCH" in sql for sql in repeated), "the trace saw no search run twice"
    assert {sql: runs for sql, runs in repeated.items() if runs[-1] > runs[0]} == {}


def test_delete_returns_the_revision_it_recorded(store) -> None:
    bp = store.save("d/one", "x: 1\n")
    returned = store.delete(bp.id)
    assert returned == store.history(bp.id)[0]
    assert returned.deleted and returned.content_hash == bp.content_hash
