"""What happens between an import's plan and its apply, and what the plan must already know:
another writer's save is never overwritten unseen, and paths the store refuses are refused in the
plan (so a dry run shows them and nothing is half imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore import archive
from localstore import files as fs
from localstore.archive import ImportItem
from localstore.errors import BundleLimitError
from localstore.store import BlueprintStore

from . import zipcraft as z
from .conftest import StoreFactory


def _between_plan_and_apply(monkeypatch: pytest.MonkeyPatch, action: object) -> None:
    """Run ``action`` after the plan is made and before anything is applied (forces the race)."""
    orig = archive._check_yaml

    def check_then_race(items: list[ImportItem], store: BlueprintStore) -> None:
        orig(items, store)
        action()  # type: ignore[operator]

    monkeypatch.setattr(archive, "_check_yaml", check_then_race)


@pytest.mark.parametrize("policy", ["skip", "overwrite", "keep-both"])
def test_a_create_does_not_overwrite_a_save_made_after_the_plan(
    stores: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    src = stores("src")
    bp = src.save("p/x", "v: bundle\n", name="x")
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    dst = stores("dst")
    # Another writer (a sync pull, say) saves the same blueprint once the plan said "create".
    _between_plan_and_apply(
        monkeypatch, lambda: dst.save("p/x", "v: newer\n", id=bp.id, origin="remote")
    )
    result = archive.import_bundle(dst, bundle, on_conflict=policy)
    (item,) = result.items
    assert (item.action, item.status) == ("create", "failed")
    assert "revision 1, not 0" in item.error and result.failed == 1
    assert dst.load(bp.id).content == "v: newer\n"
    assert [r.origin for r in dst.history(bp.id)] == ["remote"]


# The export is a snapshot of the selection: whether another writer saved once or keeps saving,
# the bundle holds the revision that was selected, YAML and meta together.
@pytest.mark.parametrize(("saves", "want"), [(1, ("v: 1\n", "name 1")), (99, ("v: 1\n", "name 1"))])
def test_export_never_pairs_one_revision_yaml_with_another_meta(
    stores: StoreFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    saves: int,
    want: tuple[str, str],
) -> None:
    store = stores("h")
    bp = store.save("p/x", "v: 1\n", name="name 1")
    orig = fs.read_regular
    done: list[int] = []

    def read_regular(path: Path, *args: Any, **kwargs: Any) -> bytes:
        # Another writer saves between the index read (meta) and the YAML read: once, or on every
        # read (the blueprint keeps changing).
        if str(path).endswith("x.blueprint.yaml") and len(done) < saves:
            done.append(1)
            with monkeypatch.context() as m:
                m.setattr(fs, "read_regular", orig)
                n = len(done) + 1
                store.save("p/x", f"v: {n}\n", name=f"name {n}")
        return orig(path, *args, **kwargs)

    monkeypatch.setattr(fs, "read_regular", read_regular)
    archive.export_bundle(store, tmp_path / "b.lsbundle")
    monkeypatch.setattr(fs, "read_regular", orig)
    assert done  # (the other writer did save in between)
    with zipfile.ZipFile(tmp_path / "b.lsbundle") as zf:
        yaml_text = zf.read("blueprints/p/x.blueprint.yaml").decode()
        meta = json.loads(zf.read("blueprints/p/x.blueprint.meta.json"))
    assert (yaml_text, meta["name"]) == want and meta["id"] == bp.id
    # The bundle imports cleanly: its hashes and the pair agree.
    dst = stores("dst")
    (item,) = archive.import_bundle(dst, tmp_path / "b.lsbundle").items
    assert item.status == "done" and dst.load(bp.id).content == want[0]


@pytest.mark.parametrize(
    "path",
    [
        # The longest path the store accepts (1,024 characters), in 255-byte-or-less parts.
        "/".join(["f" * 200] * 4) + "/" + "n" * (1024 - 804 - len(fs.YAML_SUFFIX)),
        "/".join(["d"] * 40) + "/x",  # deeper than the reader's old 32-folder cap
        "/".join(["d"] * 500) + "/x",
    ],
    ids=["1024-chars", "40-deep", "500-deep"],
)
def test_every_path_the_store_accepts_survives_a_round_trip(
    stores: StoreFactory, tmp_path: Path, path: str
) -> None:
    src = stores("src")
    bp = src.save(path, "a: 1\n")
    assert len(bp.path) <= fs.MAX_PATH_CHARS
    archive.export_bundle(src, tmp_path / "b.lsbundle")
    dst = stores("dst")
    (item,) = archive.import_bundle(dst, tmp_path / "b.lsbundle").items
    assert (item.action, item.status) == ("create", "done")
    assert dst.load(bp.id).path == bp.path


def test_export_refuses_a_bundle_import_would_refuse(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    for i in range(3):
        src.save(f"p/{i}", f"a: {i}\n" + "# pad\n" * 100)
    dest = tmp_path / "b.lsbundle"
    small = archive.BundleLimits(max_entries=6)  # room for two blueprints, not three
    with pytest.raises(BundleLimitError, match="more than an import reads") as exc:
        archive.export_bundle(src, dest, limits=small)
    assert exc.value.hint and "--folder" in exc.value.hint
    for limits in (
        archive.BundleLimits(max_total_bytes=1000),
        archive.BundleLimits(max_manifest_bytes=500),
    ):
        with pytest.raises(BundleLimitError, match="an import reads"):
            archive.export_bundle(src, dest, limits=limits)
    assert not dest.exists() and list(tmp_path.iterdir()) == [tmp_path / "src"]
    # What export accepts under a limit, import accepts under the same limit.
    archive.export_bundle(src, dest, refs=["p/0", "p/1"], limits=small)
    result = archive.import_bundle(stores("dst"), dest, limits=small)
    assert [i.status for i in result.items] == ["done", "done"]


def test_paths_the_store_refuses_are_refused_in_the_plan(
    stores: StoreFactory, tmp_path: Path
) -> None:
    dst = stores("dst")
    (dst.root / ".localstoreignore").write_text("drafts\n")
    paths = ["a/good1", ".hidden/x", "old~/y", "drafts/z", "z/good2"]
    bps = [z.Blueprint(f"{p}.blueprint.yaml") for p in paths]
    bundle = tmp_path / "b.lsbundle"
    bundle.write_bytes(z.build(z.bundle_entries(bps)))
    plan = archive.import_bundle(dst, bundle, dry_run=True)
    want = ["create", "refused", "refused", "refused", "create"]
    assert [i.action for i in plan.items] == want
    assert plan.failed == 3 and plan.changed == 2
    assert "hidden" in plan.items[1].error and "'drafts'" in plan.items[3].error
    result = archive.import_bundle(dst, bundle)
    assert [(i.action, i.status) for i in result.items] == [
        ("create", "done"),
        *[("refused", "failed")] * 3,
        ("create", "done"),
    ]
    assert sorted(i.path for i in dst.list()) == [
        "a/good1.blueprint.yaml",
        "z/good2.blueprint.yaml",
    ]


def test_a_keep_both_copy_of_a_long_path_fits_the_store(
    stores: StoreFactory, tmp_path: Path
) -> None:
    rel = "/".join(["f" * 200] * 4) + "/" + "n" * (1005 - 804 - len(fs.YAML_SUFFIX))
    src = stores("src")
    bp = src.save(rel, "k: 1\n")
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    dst = stores("dst")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    src.save(rel, "k: source\n", id=bp.id)
    archive.export_bundle(src, tmp_path / "v2.lsbundle")
    dst.save(rel, "k: local\n", id=bp.id)
    (item,) = archive.import_bundle(dst, tmp_path / "v2.lsbundle", on_conflict="keep-both").items
    assert (item.action, item.status) == ("keep-both", "done")
    assert len(item.target_path) <= fs.MAX_PATH_CHARS and " (import " in item.target_path
    assert dst.load(item.target_id).content == "k: source\n"
    assert dst.load(bp.id).content == "k: local\n"


class _NoCreated(z.Blueprint):
    """A bundle blueprint whose meta has no 'created' (valid: the store fills it in)."""

    def meta_bytes(self) -> bytes:
        return json.dumps({"id": self.id, "name": "n"}).encode()


@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_reimporting_a_meta_without_created_changes_nothing(
    stores: StoreFactory, tmp_path: Path, policy: str
) -> None:
    bp = _NoCreated("a/x.blueprint.yaml")
    bundle = tmp_path / "b.lsbundle"
    bundle.write_bytes(z.build(z.bundle_entries([bp])))
    dst = stores("dst")
    first = archive.import_bundle(dst, bundle)
    assert [i.action for i in first.items] == ["create"] and dst.load(bp.id).meta.created
    again = archive.import_bundle(dst, bundle, on_conflict=policy)
    assert [(i.action, i.reason) for i in again.items] == [("unchanged", "identical")]
    assert again.conflicts_skipped == 0 and len(dst.history(bp.id)) == 1 and dst.count() == 1


def test_a_keep_both_killed_before_its_commit_is_not_copied_twice(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    bp = src.save("team/flow", "steps: [a, b]\n", name="flow")
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    dst_home = tmp_path / "dst"
    with localstore.open(home=dst_home) as dst:
        archive.import_bundle(dst, tmp_path / "v1.lsbundle")
        dst.save("team/flow", "steps: [a, b, local]\n", id=bp.id)
    src.save("team/flow", "steps: [a, b, remote]\n", id=bp.id)
    bundle = tmp_path / "v2.lsbundle"
    archive.export_bundle(src, bundle)
    # The process dies (os._exit: no cleanup) once the copy's files are in place and before the
    # index transaction (with the import record) commits.
    child = textwrap.dedent(
        f"""
        import os, localstore
        from localstore import archive, files as fs
        orig = fs.PendingWrites.commit
        def commit(self, *a, **k):
            orig(self, *a, **k)
            os._exit(9)
        fs.PendingWrites.commit = commit
        store = localstore.open(home={str(dst_home)!r})
        archive.import_bundle(store, {str(bundle)!r}, on_conflict="keep-both")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    assert subprocess.run([sys.executable, "-c", child], env=env, timeout=60).returncode == 9
    with localstore.open(home=dst_home) as dst:  # reconcile adopts the copy's files
        (copy,) = [i for i in dst.list() if i.id != bp.id]
        assert dst.load(copy.id).content == "steps: [a, b, remote]\n"
        for policy in ("keep-both", "merge"):
            (item,) = archive.import_bundle(dst, bundle, on_conflict=policy).items
            assert (item.action, item.target_id) == ("unchanged", copy.id)
        assert dst.count() == 2


@pytest.mark.parametrize("batch_size", [1, 256])
@pytest.mark.parametrize("policy", archive.CONFLICT_POLICIES)
def test_import_follows_a_rename_and_a_new_blueprint_at_the_old_path(
    stores: StoreFactory, tmp_path: Path, batch_size: int, policy: str
) -> None:
    src = stores("src")
    a = src.save("p/x", "who: A\n", name="A")
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    dst = stores("dst")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    # The source renames A to p/z and makes B at p/x: the bundle lists B (p/x) before A (p/z).
    src.move(a.id, "p/z")
    b = src.save("p/x", "who: B\n", name="B")
    bundle = tmp_path / "v2.lsbundle"
    archive.export_bundle(src, bundle)
    result = archive.import_bundle(dst, bundle, on_conflict=policy, batch_size=batch_size)
    # A's move (a rename only: no conflict under any policy) is planned and applied first, then
    # B is created at the path it frees.
    assert [(i.id, i.action, i.target_id, i.status) for i in result.items] == [
        (a.id, "move", a.id, "done"),
        (b.id, "create", b.id, "done"),
    ]
    got = {i.id: (i.path, i.name, dst.load(i.id).content) for i in dst.list()}
    assert got == {
        a.id: ("p/z.blueprint.yaml", "A", "who: A\n"),
        b.id: ("p/x.blueprint.yaml", "B", "who: B\n"),
    }
    again = archive.import_bundle(dst, bundle, on_conflict=policy)
    assert [i.action for i in again.items] == ["unchanged", "unchanged"]


def test_a_blueprint_the_bundle_updates_is_never_given_another_ones_content(
    stores: StoreFactory, tmp_path: Path
) -> None:
    # Here A cannot move to p/z (another blueprint holds it), so A keeps p/x and B cannot have
    # it: overwriting A with B's content would put B into A's identity.
    src = stores("src")
    a = src.save("p/x", "who: A\n", name="A")
    archive.export_bundle(src, tmp_path / "v1.lsbundle")
    src.move(a.id, "p/z")
    b = src.save("p/x", "who: B\n", name="B")
    bundle = tmp_path / "v2.lsbundle"
    archive.export_bundle(src, bundle)
    dst = stores("dst")
    archive.import_bundle(dst, tmp_path / "v1.lsbundle")
    dst.save("p/x", "who: A, edited here\n", id=a.id)
    c = dst.save("p/z", "who: C\n", name="C")
    result = archive.import_bundle(dst, bundle, on_conflict="overwrite")
    actions = {i.id: (i.action, i.target_id, i.target_path, i.status) for i in result.items}
    assert actions[a.id] == ("overwrite", a.id, "p/x.blueprint.yaml", "done")
    assert actions[b.id][0] == "keep-both" and actions[b.id][3] == "done"
    # B is put aside at a free path with its own id (no blueprint here has it), never A's or C's.
    assert actions[b.id][1] == b.id and actions[b.id][2] != "p/x.blueprint.yaml"
    assert (dst.load(a.id).content, dst.load(a.id).name) == ("who: A\n", "A")
    assert dst.load(actions[b.id][1]).content == "who: B\n"
    assert dst.load(c.id).content == "who: C\n"


@pytest.mark.parametrize("value", [b"{}", b'"ab"', b"[]"])
def test_a_manifest_of_many_tiny_values_is_refused_before_it_is_parsed(
    stores: StoreFactory, tmp_path: Path, value: bytes
) -> None:
    # 4 MiB of '{},{},...' (stored: no ratio check applies) parses into ~1.4 million objects,
    # over 100 MB, where a bundle of at most 1,000 blueprints needs a few thousand values. (The
    # default caps allow a 64 MiB manifest: 1.6 GB parsed.)
    n = 4 * 1024 * 1024 // (len(value) + 1)
    body = (
        b'{"format":"localstore-bundle","version":"1.0","blueprints":['
        + b",".join([value] * n)
        + b"]}"
    )
    bundle = tmp_path / "b.lsbundle"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("manifest.json", body)
    dst = stores("dst")
    tracemalloc.start()
    try:
        with pytest.raises(BundleLimitError, match="manifest"):
            archive.import_bundle(dst, bundle, limits=archive.BundleLimits(max_entries=2001))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"


def test_commas_in_paths_do_not_count_against_the_manifest_budget(
    stores: StoreFactory, tmp_path: Path
) -> None:
    src = stores("src")
    commas = "/".join(["," * 200] * 4)  # 800 commas in one path; two blueprints: 1,600
    for i in range(2):
        src.save(f"{commas}/{i}", f"a: {i}\n")
    small = archive.BundleLimits(max_entries=5)  # two blueprints: a budget of 1,056 values
    archive.export_bundle(src, tmp_path / "b.lsbundle", limits=small)
    result = archive.import_bundle(stores("dst"), tmp_path / "b.lsbundle", limits=small)
    assert [i.status for i in result.items] == ["done", "done"]
