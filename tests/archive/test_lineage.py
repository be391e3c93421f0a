"""Bundles that carry each blueprint's recent history (format 1.1): a version made from this one
elsewhere fast-forwards instead of conflicting; a blueprint put aside by keep-both keeps its id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from localstore import archive
from localstore.cli import cli
from localstore.errors import BundleFormatError
from localstore.store import BlueprintStore

from .conftest import StoreFactory
from .zipcraft import rewrite_manifest as _rewrite_manifest


def _as_format_1_0(manifest: dict[str, Any]) -> None:
    """What a writer of format 1.0 wrote: no ancestors."""
    manifest["version"] = "1.0"
    for entry in manifest["blueprints"]:
        entry.pop("ancestors", None)


def _contents(store: BlueprintStore) -> dict[str, str]:
    return {i.id: store.load(i.id).content for i in store.list()}


@pytest.mark.parametrize("policy", ["keep-both", "merge"])
def test_keep_both_over_another_ids_path_keeps_the_source_id(
    stores: StoreFactory, tmp_path: Path, policy: str
) -> None:
    src = stores("src")
    mine = src.save("team/flow", "v: 1\n").id
    b1, b2 = tmp_path / "b1.lsbundle", tmp_path / "b2.lsbundle"
    archive.export_bundle(src, b1)
    dst = stores("dst")
    theirs = dst.save("team/flow", "other: here\n").id

    (item,) = archive.import_bundle(dst, b1, on_conflict=policy).items
    # The bundle's blueprint keeps its own id, put aside at a free path; the holder is untouched.
    assert (item.action, item.target_id) == ("keep-both", mine)
    assert item.target_path.startswith("team/flow (import ")
    assert _contents(dst) == {theirs: "other: here\n", mine: "v: 1\n"}
    again = archive.import_bundle(dst, b1, on_conflict=policy)
    assert [(i.action, i.target_id) for i in again.items] == [("unchanged", mine)]

    src.save("team/flow", "v: 2\n")
    archive.export_bundle(src, b2)
    (item,) = archive.import_bundle(dst, b2, on_conflict=policy).items
    # The newer version updates that same blueprint where it was put (its path is still taken),
    # rather than making another copy under a new id.
    assert (item.action, item.target_id, item.status) == ("update", mine, "done")
    assert _contents(dst) == {theirs: "other: here\n", mine: "v: 2\n"}
    assert dst.load(mine).path.startswith("team/flow (import ")
    for bundle in (b2, b1):  # the same version again, and the older one: nothing to do
        items = archive.import_bundle(dst, bundle, on_conflict=policy).items
        assert [(i.action, i.status) for i in items] == [("unchanged", "done")]
    assert _contents(dst) == {theirs: "other: here\n", mine: "v: 2\n"}

    # Exported back, the source gets its own blueprint back (its id, its content: no new copy),
    # where it had it (the other home's path for it is no rename), and the other home's blueprint
    # as the new one it is, put aside here in turn (its path is this one's).
    back = tmp_path / "back.lsbundle"
    archive.export_bundle(dst, back)
    before = src.history(mine)
    result = archive.import_bundle(src, back, on_conflict=policy)
    assert result.conflicts_skipped == 0 and result.failed == 0
    assert _contents(src) == {theirs: "other: here\n", mine: "v: 2\n"}
    assert src.history(mine) == before
    assert src.load(mine).path == "team/flow.blueprint.yaml"
    assert src.load(theirs).path.startswith("team/flow (import ")
    assert src.count() == 2


def _cli(home: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    """Exit code and stdout then stderr of one command."""
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env={}, input=stdin)
    return result.exit_code, result.stdout + result.stderr


def _cli_json(home: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", *args], env={})
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_a_version_made_from_this_one_elsewhere_fast_forwards(tmp_path: Path) -> None:
    a, c = tmp_path / "a", tmp_path / "c"
    assert _cli(a, "save", "team/flow", "-f", "-", stdin="v: 1\n")[0] == 0
    assert _cli(a, "save", "team/flow", "-f", "-", stdin="v: 2\n")[0] == 0
    from_a, from_c = tmp_path / "a.lsbundle", tmp_path / "c.lsbundle"
    assert _cli(a, "export", "-o", str(from_a))[0] == 0
    assert _cli(c, "import", str(from_a))[0] == 0
    assert _cli(c, "save", "team/flow", "-f", "-", stdin="v: 3\n")[0] == 0
    assert _cli(c, "export", "-o", str(from_c))[0] == 0

    code, out = _cli(a, "import", str(from_c))
    assert code == 0, out
    assert "update" in out and "changed on both sides" not in out
    code, out = _cli(a, "show", "team/flow")
    assert "v: 3" in out
    assert [r["origin"] for r in _cli_json(a, "history", "team/flow")][:1] == ["import"]
    # Importing it again changes nothing.
    code, out = _cli(a, "import", str(from_c))
    assert code == 0 and "did: 1 unchanged" in out


def test_a_bundle_without_ancestors_still_conflicts(stores: StoreFactory, tmp_path: Path) -> None:
    a, c = stores("a"), stores("c")
    bp = a.save("team/flow", "v: 2\n")
    from_a, from_c = tmp_path / "a.lsbundle", tmp_path / "c.lsbundle"
    archive.export_bundle(a, from_a)
    archive.import_bundle(c, from_a)
    c.save("team/flow", "v: 3\n")
    archive.export_bundle(c, from_c)
    _rewrite_manifest(from_c, _as_format_1_0)
    code, out = _cli(tmp_path / "a", "import", str(from_c))
    assert code == 3 and "changed on both sides" in out
    assert a.load(bp.id).content == "v: 2\n"


def test_an_edit_here_since_is_still_a_conflict(stores: StoreFactory, tmp_path: Path) -> None:
    a, c = stores("a"), stores("c")
    bp = a.save("team/flow", "v: 2\n")
    from_a, from_c = tmp_path / "a.lsbundle", tmp_path / "c.lsbundle"
    archive.export_bundle(a, from_a)
    archive.import_bundle(c, from_a)
    c.save("team/flow", "v: 3\n")
    a.save("team/flow", "v: 2 and mine\n")
    archive.export_bundle(c, from_c)
    (item,) = archive.import_bundle(a, from_c).items
    assert (item.action, item.reason) == ("skip", "changed on both sides")
    assert a.load(bp.id).content == "v: 2 and mine\n"


@pytest.mark.parametrize(
    ("ancestors", "why"),
    [
        ("5e88", "must be a list"),
        (["not-a-hash"], "64 lowercase hex"),
        (["A" * 64], "64 lowercase hex"),
        (["a" * 64] * 11, "more than 10"),
    ],
)
def test_malformed_ancestors_refuse_the_bundle(
    stores: StoreFactory, tmp_path: Path, ancestors: Any, why: str
) -> None:
    a = stores("a")
    a.save("team/flow", "v: 1\n")
    bundle = tmp_path / "a.lsbundle"
    archive.export_bundle(a, bundle)

    def tamper(manifest: dict[str, Any]) -> None:
        manifest["blueprints"][0]["ancestors"] = ancestors

    _rewrite_manifest(bundle, tamper)
    with pytest.raises(BundleFormatError, match=why):
        archive.import_bundle(stores("b"), bundle)
