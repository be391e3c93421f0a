"""A blueprint an import put aside (its path was taken by another one here) goes back to its source
at the path it has there, not at the made-up one (format 1.2's ``put_aside_from``): the source's
user renamed nothing, so its tree stays as it was. A real rename after the import still travels."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from localstore import archive
from localstore._bundle_manifest import _VALUES_PER_BLUEPRINT
from localstore.cli import cli
from localstore.errors import BundleFormatError, UnsafeBundleError
from localstore.store import BlueprintStore

from .conftest import StoreFactory
from .zipcraft import rewrite_manifest as _rewrite_manifest

P = "team/flow.blueprint.yaml"


def _manifest(bundle: Path) -> dict[str, Any]:
    with zipfile.ZipFile(bundle) as zf:
        return dict(json.loads(zf.read("manifest.json")))


def _paths(store: BlueprintStore) -> dict[str, str]:
    return {i.id: i.path for i in store.list()}


def _put_aside_at_b(
    stores: StoreFactory, tmp_path: Path, policy: str = "keep-both"
) -> tuple[BlueprintStore, BlueprintStore, str, str]:
    """Home A has X at P; home B has its own Y at P and imports A's bundle: X is put aside on B."""
    a, b = stores("a"), stores("b")
    x = a.save("team/flow", "v: 1\n").id
    y = b.save("team/flow", "other: here\n").id
    from_a = tmp_path / "from-a.lsbundle"
    archive.export_bundle(a, from_a)
    (item,) = archive.import_bundle(b, from_a, on_conflict=policy).items
    assert (item.action, item.target_id, item.status) == ("keep-both", x, "done")
    assert b.load(x).path.startswith("team/flow (import ")
    return a, b, x, y


@pytest.mark.parametrize("policy", ["skip", "overwrite", "keep-both", "merge"])
def test_back_at_the_source_it_stays_where_it_was(
    stores: StoreFactory, tmp_path: Path, policy: str
) -> None:
    a, b, x, _ = _put_aside_at_b(stores, tmp_path)
    back = tmp_path / "back.lsbundle"
    archive.export_bundle(b, back, refs=[x])
    (entry,) = _manifest(back)["blueprints"]
    assert (entry["path"], entry["put_aside_from"]) == (b.load(x).path, P)
    before = a.history(x)

    (item,) = archive.import_bundle(a, back, on_conflict=policy).items
    # A's user renamed nothing and B's only put it aside: no move, no revision, no copy.
    assert (item.action, item.status, item.target_path) == ("unchanged", "done", P)
    assert item.path == b.load(x).path  # (the report still names where the bundle has it)
    assert "put aside" in item.reason
    assert _paths(a) == {x: P}
    assert a.history(x) == before


def test_the_whole_round_trip_keeps_both_homes_layouts(
    stores: StoreFactory, tmp_path: Path
) -> None:
    a, b, x, y = _put_aside_at_b(stores, tmp_path)
    back = tmp_path / "back.lsbundle"
    archive.export_bundle(b, back)
    result = archive.import_bundle(a, back, on_conflict="keep-both")
    assert (result.conflicts_skipped, result.failed) == (0, 0)
    actions = {i.id: (i.action, i.target_id) for i in result.items}
    # X stays at P; B's own Y (which holds P there) is put aside here with its id, as X was there.
    assert actions == {x: ("unchanged", x), y: ("keep-both", y)}
    paths = _paths(a)
    assert paths[x] == P and paths[y].startswith("team/flow (import ")
    assert a.count() == 2
    # And once more, both ways: nothing moves anywhere.
    again = archive.import_bundle(a, back, on_conflict="keep-both")
    assert [i.action for i in again.items] == ["unchanged", "unchanged"]
    to_b = tmp_path / "to-b.lsbundle"
    archive.export_bundle(a, to_b)
    b_before = _paths(b)
    result = archive.import_bundle(b, to_b, on_conflict="keep-both")
    assert [i.action for i in result.items] == ["unchanged", "unchanged"]
    assert _paths(b) == b_before
    assert _paths(a) == paths


def test_an_edit_at_the_other_home_still_fast_forwards_in_place(
    stores: StoreFactory, tmp_path: Path
) -> None:
    a, b, x, _ = _put_aside_at_b(stores, tmp_path)
    b.save(b.load(x).path, "v: 2\n", id=x)  # edited where it was put, not moved
    back = tmp_path / "back.lsbundle"
    archive.export_bundle(b, back, refs=[x])
    assert _manifest(back)["blueprints"][0]["put_aside_from"] == P
    (item,) = archive.import_bundle(a, back).items
    assert (item.action, item.status, item.target_path) == ("update", "done", P)
    assert (a.load(x).path, a.load(x).content) == (P, "v: 2\n")


def test_a_move_at_the_other_home_after_the_import_is_followed(
    stores: StoreFactory, tmp_path: Path
) -> None:
    a, b, x, _ = _put_aside_at_b(stores, tmp_path)
    b.move(x, "team/renamed")  # B's user really renamed it
    back = tmp_path / "back.lsbundle"
    archive.export_bundle(b, back, refs=[x])
    (entry,) = _manifest(back)["blueprints"]
    assert entry["path"] == "team/renamed.blueprint.yaml" and "put_aside_from" not in entry
    (item,) = archive.import_bundle(a, back).items
    assert (item.action, item.status) == ("move", "done")
    assert _paths(a) == {x: "team/renamed.blueprint.yaml"}


def test_a_move_here_since_wins(stores: StoreFactory, tmp_path: Path) -> None:
    a, b, x, _ = _put_aside_at_b(stores, tmp_path)
    a.move(x, "mine/moved")  # A's user moved it after exporting
    back = tmp_path / "back.lsbundle"
    archive.export_bundle(b, back, refs=[x])
    (item,) = archive.import_bundle(a, back).items
    assert (item.action, item.target_path) == ("unchanged", "mine/moved.blueprint.yaml")
    assert _paths(a) == {x: "mine/moved.blueprint.yaml"}


def test_a_home_that_never_had_it_at_that_path_takes_the_bundle_path(
    stores: StoreFactory, tmp_path: Path
) -> None:
    _, b, x, _ = _put_aside_at_b(stores, tmp_path)
    aside = b.load(x).path
    back = tmp_path / "back.lsbundle"
    archive.export_bundle(b, back, refs=[x])
    c = stores("c")
    (item,) = archive.import_bundle(c, back).items
    assert (item.action, item.target_path) == ("create", aside)
    b.save(b.load(x).path, "v: 2\n", id=x)
    archive.export_bundle(b, back, refs=[x])
    (item,) = archive.import_bundle(c, back).items  # its path here is the bundle's: it stays
    assert (item.action, item.target_path) == ("update", aside)
    assert _paths(c) == {x: aside}


def test_a_bundle_without_the_field_moves_it_as_before(
    stores: StoreFactory, tmp_path: Path
) -> None:
    a, b, x, _ = _put_aside_at_b(stores, tmp_path)
    back = tmp_path / "back.lsbundle"
    archive.export_bundle(b, back, refs=[x])

    def as_format_1_1(manifest: dict[str, Any]) -> None:
        manifest["version"] = "1.1"
        for entry in manifest["blueprints"]:
            entry.pop("put_aside_from", None)

    _rewrite_manifest(back, as_format_1_1)
    (item,) = archive.import_bundle(a, back).items
    # Without it the bundle's path is all there is, and it looks like a rename at the source.
    assert (item.action, item.target_path) == ("move", b.load(x).path)
    assert _paths(a) == {x: b.load(x).path}


@pytest.mark.parametrize(
    ("value", "error", "why"),
    [
        (None, BundleFormatError, "'put_aside_from' must be a string"),
        (["team/flow.blueprint.yaml"], BundleFormatError, "'put_aside_from' must be a string"),
        ("../flow.blueprint.yaml", UnsafeBundleError, "'put_aside_from' is unsafe"),
        ("/team/flow.blueprint.yaml", UnsafeBundleError, "'put_aside_from' is unsafe"),
        ("team/flow.yaml", UnsafeBundleError, "'put_aside_from'"),
        ("team//flow.blueprint.yaml", UnsafeBundleError, "'put_aside_from'"),
        ("team\\flow.blueprint.yaml", UnsafeBundleError, "'put_aside_from'"),
    ],
)
def test_a_malformed_field_refuses_the_bundle(
    stores: StoreFactory, tmp_path: Path, value: Any, error: type[Exception], why: str
) -> None:
    a, b, x, _ = _put_aside_at_b(stores, tmp_path)
    back = tmp_path / "back.lsbundle"
    archive.export_bundle(b, back, refs=[x])

    def tamper(manifest: dict[str, Any]) -> None:
        manifest["blueprints"][0]["put_aside_from"] = value

    _rewrite_manifest(back, tamper)
    with pytest.raises(error, match=why):
        archive.import_bundle(a, back)
    assert _paths(a) == {x: P}


def test_the_field_keeps_a_full_entry_within_a_1_0_readers_budget(
    stores: StoreFactory, tmp_path: Path
) -> None:
    _, b, x, _ = _put_aside_at_b(stores, tmp_path)
    for i in range(2, 14):  # more versions than the ancestors written
        b.save(b.load(x).path, f"v: {i}\n", id=x)
    back = tmp_path / "back.lsbundle"
    archive.export_bundle(b, back, refs=[x])
    (entry,) = _manifest(back)["blueprints"]
    assert entry["put_aside_from"] == P and len(entry["ancestors"]) == 8
    # Every reader counts a manifest's values by its commas (plus one per entry between them);
    # an entry's strings here hold none.
    assert json.dumps(entry).count(",") + 1 <= _VALUES_PER_BLUEPRINT


def _cli(home: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env={}, input=stdin)
    return result.exit_code, result.stdout + result.stderr


def _cli_paths(home: Path) -> dict[str, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), "--json", "ls"], env={})
    assert result.exit_code == 0, result.stderr
    return {r["id"]: r["path"] for r in json.loads(result.stdout)}


def test_the_round_trip_through_the_cli(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert _cli(a, "save", "team/flow", "-f", "-", stdin="v: 1\n")[0] == 0
    assert _cli(b, "save", "team/flow", "-f", "-", stdin="other: here\n")[0] == 0
    (x,) = _cli_paths(a)
    from_a, from_b = tmp_path / "a.lsbundle", tmp_path / "b.lsbundle"
    assert _cli(a, "export", "-o", str(from_a))[0] == 0
    code, out = _cli(b, "import", str(from_a), "--on-conflict", "keep-both")
    assert code == 0, out
    assert _cli_paths(b)[x].startswith("team/flow (import ")

    assert _cli(b, "export", "-o", str(from_b))[0] == 0
    code, out = _cli(a, "import", str(from_b), "--on-conflict", "keep-both")
    assert code == 0, out
    paths = _cli_paths(a)
    assert paths[x] == P and len(paths) == 2
    assert next(p for i, p in paths.items() if i != x).startswith("team/flow (import ")
    code, out = _cli(a, "import", str(from_b), "--on-conflict", "keep-both")
    assert code == 0 and "did: 2 unchanged" in out, out

    # A real rename at B after the import travels back.
    assert _cli(b, "mv", x, "team/renamed")[0] == 0
    assert _cli(b, "export", "-o", str(from_b))[0] == 0
    code, out = _cli(a, "import", str(from_b), "--on-conflict", "keep-both")
    assert code == 0, out
    assert _cli_paths(a)[x] == "team/renamed.blueprint.yaml"
