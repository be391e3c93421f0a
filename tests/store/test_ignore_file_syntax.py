"""`.localstoreignore` takes a .gitignore's two slash rules: a trailing '/' matches folders only,
and a leading '/' anchors a pattern at the blueprints folder.

A person writing `archive/` (as in every .gitignore) matched nothing: the whole folder was
imported at the next open, each of its files a blueprint synced to every device.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from localstore.errors import UnsafePathError
from localstore.files import IgnoreRules

PAIRS = [
    "archive/old",
    "team/archive/older",
    "drafts/mine",
    "team/drafts/theirs",
    "notes/plan",
    "keep/notes",
]


def _write_pair(root: Path, rel: str) -> None:
    path = root / f"{rel}.blueprint.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: {rel}\n")


def test_a_trailing_slash_ignores_folders_and_a_leading_one_only_at_the_top(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    with localstore.open(home=home) as store:
        root = store.root
    (root / ".localstoreignore").write_text("# as in a .gitignore\narchive/\n/drafts\nnotes/\n")
    for rel in PAIRS:
        _write_pair(root, rel)
    # A file named like a folder-only pattern is not a folder: `notes/` leaves keep/notes.
    with localstore.open(home=home) as store:
        found = sorted(bp.path for bp in store.list())
        assert found == [
            "keep/notes.blueprint.yaml",
            "team/drafts/theirs.blueprint.yaml",
        ]
        # The save refused at an ignored path names the pattern as the person wrote it.
        with pytest.raises(UnsafePathError, match="'archive/'"):
            store.save("team/archive/new", "v: 1\n")
        with pytest.raises(UnsafePathError, match="'/drafts'"):
            store.save("drafts/new", "v: 1\n")
        store.save("team/drafts/new", "v: 1\n")
        assert store.check().clean


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        (["archive/"], "archive/x.blueprint.yaml", True),
        (["archive/"], "a/b/archive/x.blueprint.yaml", True),
        (["archive/"], "archive.blueprint.yaml", False),
        (["x.blueprint.yaml/"], "x.blueprint.yaml", False),
        (["/drafts"], "drafts/x.blueprint.yaml", True),
        (["/drafts"], "a/drafts/x.blueprint.yaml", False),
        (["/top.blueprint.yaml"], "top.blueprint.yaml", True),
        (["/top.blueprint.yaml"], "a/top.blueprint.yaml", False),
        (["a/*/"], "a/b/x.blueprint.yaml", True),
        (["a/*/"], "a/x.blueprint.yaml", False),
        (["tmp-*"], "tmp-1/x.blueprint.yaml", True),
        (["tmp-*"], "tmp-1.blueprint.yaml", True),
        (["/"], "x.blueprint.yaml", False),
    ],
)
def test_each_rule(patterns: list[str], path: str, ignored: bool) -> None:
    rules = IgnoreRules(patterns)
    assert rules.ignored(path) is ignored
    assert (rules.reason(path) is not None) is ignored
    # A fresh rules object asked about the folder first answers the same (the folder cache).
    fresh = IgnoreRules(patterns)
    folder = path.rpartition("/")[0]
    if folder:
        head, _, last = folder.rpartition("/")
        fresh.folder_ignored(f"{head}/" if head else "", last)
    assert fresh.ignored(path) is ignored
