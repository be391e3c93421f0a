"""Blueprint paths and references may be ``pathlib`` paths (any ``os.PathLike``), as ``home`` is.

``localstore.open(home=Path(...))`` takes a Path, but ``store.save(Path("a/p.blueprint.yaml"), ...)``
raised UnsafePathError "the path must be a string, not PosixPath" (a type check meant for ints and
bytes), and so did every call naming a blueprint by a Path. A relative path object now names what
its '/'-separated text names (a PureWindowsPath's backslashes too); an absolute one is refused as
that text is; ints, bytes and None are refused as before.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pytest

from localstore import SaveRequest, UnsafePathError
from localstore import archive as ar
from localstore.errors import InvalidInputError, InvalidRefError, NotFoundError

# The store under test is typed for str; these pass path objects on purpose.
Store = Any


class _AppPath(os.PathLike[str]):
    """An app's own path type (neither str nor pathlib)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __fspath__(self) -> str:
        return self.text


@pytest.mark.parametrize(
    "given",
    [
        Path("team/deploy.blueprint.yaml"),
        PurePosixPath("team/deploy"),
        PureWindowsPath("team\\deploy.blueprint.yaml"),
        _AppPath("team/deploy"),
    ],
    ids=["Path", "PurePosixPath", "PureWindowsPath", "os.PathLike"],
)
def test_a_relative_path_object_saves_where_its_text_does(store: Store, given: Any) -> None:
    bp = store.save(given, "v: 1\n")
    assert bp.path == "team/deploy.blueprint.yaml"
    assert store.save("team/deploy", "v: 2\n").id == bp.id  # one blueprint, not two
    assert store.load(given).content == "v: 2\n"


def test_every_call_naming_a_blueprint_takes_a_path_object(store: Store, tmp_path: Path) -> None:
    first = store.save(Path("team/deploy"), "v: 1\n", tags=["ops"])
    store.save(Path("team/deploy"), "v: 2\n")
    here = Path("team/deploy.blueprint.yaml")
    assert store.resolve(here).id == first.id and store.row(here).id == first.id
    assert store.exists(here)
    assert [r.rev for r in store.history(here)] == [2, 1]
    assert store.load_revision(here, 1).content == "v: 1\n"
    assert [i.id for i in store.list(folder=Path("team"))] == [first.id]
    assert [h.info.id for h in store.search("v", folder=Path("team"))] == [first.id]
    assert ar.export_yaml(store, here, None) == b"v: 2\n"
    ar.export_bundle(store, tmp_path / "b.zip", refs=[here], folder=Path("team"))
    moved = store.move(here, Path("ops/deploy"))
    assert moved.path == "ops/deploy.blueprint.yaml" and moved.id == first.id
    store.delete(Path("ops/deploy"))
    back = store.restore(Path("ops/deploy"), 1, path=Path("ops/again"))
    assert back.path == "ops/again.blueprint.yaml" and back.content == "v: 1\n"
    [made] = store.save_many([SaveRequest(path=Path("team/other"), content="v: 3\n")])
    assert not isinstance(made, Exception) and made.path == "team/other.blueprint.yaml"
    store.check_scanned(Path("team/new"))
    assert store.abspath(Path(made.path)) == store.abspath(made.path)
    with pytest.raises(NotFoundError, match="no blueprint in folder 'nope' "):
        ar.export_bundle(store, tmp_path / "c.zip", folder=Path("nope"))


@pytest.mark.parametrize(
    "given",
    [Path("/etc/deploy"), PureWindowsPath("C:\\team\\deploy"), PureWindowsPath("\\team\\deploy")],
    ids=["posix", "windows-drive", "windows-root"],
)
def test_an_absolute_path_object_is_refused_as_its_text_is(
    store: Store, home: Path, given: Any
) -> None:
    with pytest.raises(UnsafePathError, match="is absolute") as info:
        store.save(given, "v: 1\n")
    assert "relative to the blueprints folder" in info.value.hint
    with pytest.raises(NotFoundError):
        store.load(given)
    assert store.count() == 0 and not list((home / "blueprints").rglob("*.yaml"))


def test_an_empty_path_object_is_refused_as_an_empty_path(store: Store) -> None:
    with pytest.raises(UnsafePathError, match="empty path"):
        store.save(Path(""), "v: 1\n")
    with pytest.raises(InvalidRefError, match="empty reference"):
        store.load(Path(""))
    with pytest.raises(InvalidInputError, match="empty"):
        store.list(folder=Path(""))
    assert store.count() == 0


def test_what_is_not_text_nor_a_path_is_still_refused_with_what_to_pass(store: Store) -> None:
    for wrong in (5, b"team/x", None):
        with pytest.raises(UnsafePathError, match="must be a string") as info:
            store.save(wrong, "v: 1\n")
        assert "pathlib" in info.value.hint
        with pytest.raises(InvalidRefError, match="must be a string"):
            store.load(wrong if wrong is not None else 5)
    with pytest.raises(UnsafePathError, match="must be a string"):
        store.save(_BytesPath(), "v: 1\n")  # (an os.PathLike of bytes is no text either)
    assert store.count() == 0


class _BytesPath(os.PathLike[bytes]):
    def __fspath__(self) -> bytes:
        return b"team/x"
