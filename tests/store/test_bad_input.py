"""Bad input gets a clear, typed error and changes nothing."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

import localstore
from localstore.errors import (
    InvalidInputError,
    InvalidMetaError,
    InvalidYAMLError,
    LimitExceededError,
    UnsafePathError,
)
from localstore.store import SaveRequest

# 9 levels of 9-fold aliases: expands to 9**9 (387 million) nodes when walked; under 400 bytes.
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)


def _snapshot(home: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in sorted((home / "blueprints").rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def seeded(store, home: Path):
    store.save("good/one", "steps: [a]\n")
    return store


BAD_CONTENT = [
    ("malformed", "steps: [unclosed\n", InvalidYAMLError),
    ("not-a-mapping", "- just\n- a list\n", InvalidYAMLError),
    ("scalar", "hello\n", InvalidYAMLError),
    ("empty", "", InvalidYAMLError),
    ("alias-bomb", ALIAS_BOMB, LimitExceededError),
    ("deep-nesting", "a: " + "[" * 200 + "]" * 200 + "\n", LimitExceededError),
    (
        "deep-block",
        "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v: 1\n",
        LimitExceededError,
    ),
    ("not-utf8", b"a: \xff\xfe\n", InvalidYAMLError),
    ("recursive-alias", "a: &x [*x]\n", LimitExceededError),
]


@pytest.mark.parametrize(
    ("label", "content", "error"), BAD_CONTENT, ids=[b[0] for b in BAD_CONTENT]
)
def test_bad_content_is_refused_and_nothing_changes(
    seeded, home: Path, label: str, content: str | bytes, error: type[Exception]
) -> None:
    before = _snapshot(home)
    revs = len(seeded.history("good/one"))
    for target in ("good/one", "new/two"):
        with pytest.raises(error) as info:
            seeded.save(target, content)
        assert str(info.value)
    assert _snapshot(home) == before
    assert len(seeded.history("good/one")) == revs
    assert seeded.count() == 1
    assert seeded.check().clean


def test_alias_bomb_is_small_and_rejected_fast(seeded) -> None:
    assert len(ALIAS_BOMB.encode()) <= 400
    tracemalloc.start()
    t0 = time.thread_time()
    with pytest.raises(LimitExceededError, match="alias"):
        seeded.save("bomb", ALIAS_BOMB)
    elapsed = time.thread_time() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Safety bounds of the rejection path (an expanded bomb would take minutes and gigabytes), in
    # this thread's CPU time: a loaded machine's other processes do not count.
    assert elapsed < 1.0 and peak < 16 * 1024 * 1024


def test_fifty_megabyte_file_is_over_the_limit(seeded, home: Path) -> None:
    before = _snapshot(home)
    big = "k: " + "x" * (50 * 1024 * 1024) + "\n"
    with pytest.raises(LimitExceededError, match="over the limit"):
        seeded.save("big", big)
    assert _snapshot(home) == before


UNSAFE_PATHS = [
    "../escape",
    "a/../../escape",
    "/etc/passwd",
    "C:/windows/x",
    "a\\b",
    "a//b",
    "./a",
    "con",
    "folder/NUL.txt",
    "lpt1",
    "bad\x00name",
    "tab\tname",
    "trailing./x",
    "q?",
    "x" * 300,
    "",
]


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_unsafe_paths_are_refused(seeded, home: Path, path: str) -> None:
    before = _snapshot(home)
    with pytest.raises(UnsafePathError):
        seeded.save(path, "a: 1\n")
    assert _snapshot(home) == before


def test_case_only_collision_is_refused(seeded, home: Path) -> None:
    with pytest.raises(UnsafePathError, match="case"):
        seeded.save("Good/One", "a: 1\n")
    with pytest.raises(UnsafePathError, match="case"):
        seeded.save("good/ONE", "a: 1\n")


def test_case_collision_with_unindexed_file_on_disk(seeded, home: Path) -> None:
    (home / "blueprints/good/Other.blueprint.yaml").write_text("a: 1\n")
    with pytest.raises(UnsafePathError, match="case"):
        seeded.save("good/other", "a: 2\n")


def test_symlink_escape_is_refused(seeded, home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (home / "blueprints/link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside"):
        seeded.save("link/x", "a: 1\n")
    assert not any(outside.iterdir())


def test_symlink_escape_deeper_in_the_path_is_refused(seeded, home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    seeded.save("team/first", "a: 1\n")  # a real folder, then a link inside it
    (home / "blueprints/team/link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside"):
        seeded.save("team/link/deeper/x", "a: 1\n")
    assert not any(outside.iterdir())


def test_symlink_to_a_folder_inside_the_root_is_refused(seeded, home: Path) -> None:
    # Followed, the files landed in real/, where the next open found them as new blueprints
    # (tests/store/test_linked_folders.py).
    seeded.save("real/first", "a: 1\n")
    (home / "blueprints/alias").symlink_to(home / "blueprints/real", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        seeded.save("alias/second", "a: 2\n")
    assert not (home / "blueprints/real/second.blueprint.yaml").exists()


@pytest.mark.parametrize(
    "meta",
    [
        {"id": "not-a-uuid", "name": "x"},
        {"id": "6f1c2b1e-8b1a-4c1e-9b1a-1c2b3d4e5f60", "name": 5},
        {"id": "6f1c2b1e-8b1a-4c1e-9b1a-1c2b3d4e5f60", "tags": "one"},
        {"id": "6f1c2b1e-8b1a-4c1e-9b1a-1c2b3d4e5f60", "public": "yes"},
    ],
)
def test_invalid_meta_is_refused(seeded, home: Path, meta: dict) -> None:
    before = _snapshot(home)
    with pytest.raises(InvalidMetaError):
        seeded.save("m", "a: 1\n", meta=meta)
    assert _snapshot(home) == before


def test_invalid_meta_file_on_disk_is_reported_not_lost(seeded, home: Path) -> None:
    meta_file = home / "blueprints/good/one.blueprint.meta.json"
    good_meta = meta_file.read_bytes()
    meta_file.write_text("{ not json")
    report = seeded.check()
    assert not report.clean
    seeded.reconcile()
    assert seeded.load("good/one").content == "steps: [a]\n"
    kinds = {p["kind"] for p in seeded.check().problems}
    assert kinds & {"flagged", "invalid-meta"}
    meta_file.write_bytes(good_meta)
    seeded.reconcile()
    assert seeded.check().clean


def test_wrong_content_type(seeded) -> None:
    with pytest.raises(InvalidInputError):
        seeded.save("w", 42)


UNSCANNED = [
    (".drafts/plan", "hidden"),
    ("a/.hidden/plan", "hidden"),
    ("old.bak/plan", "*.bak"),
    ("4913/plan", "'4913'"),
    ("v1.orig/deep/plan", "*.orig"),
    ("tmp~/plan", "*~"),
    (".#notes", ".#*"),
    ("custom-skip/plan", "custom-*"),
]


@pytest.mark.parametrize(("path", "named"), UNSCANNED, ids=[p for p, _ in UNSCANNED])
def test_paths_reconcile_never_sees_are_refused(store, home: Path, path: str, named: str) -> None:
    (home / "blueprints/.localstoreignore").write_text("# ours\ncustom-*\n")
    bp = store.save("visible/plan", "v: 1\n")
    with pytest.raises(UnsafePathError, match=named.replace("*", r"\*")) as info:
        store.save(path, "v: 1\n")
    assert info.value.hint
    with pytest.raises(UnsafePathError):
        store.move(bp.id, path)
    store.delete(bp.id)
    with pytest.raises(UnsafePathError):
        store.restore(bp.id, 1, path=path)
    # Nothing was written where the next open would not look, so nothing is lost there either.
    assert sorted(p.name for p in (home / "blueprints").rglob("*.blueprint.*")) == []
    assert store.reconcile().clean
    assert store.row(bp.id, include_deleted=True).path == "visible/plan.blueprint.yaml"


def test_a_hidden_file_name_is_still_accepted(store, home: Path) -> None:
    # The walk skips hidden folders, not hidden files: those are seen, so they stay allowed.
    bp = store.save(".hidden-name", "v: 1\n")
    store.close()
    with localstore.open(home=home) as reopened:
        assert not reopened.row(bp.id).deleted


def test_a_file_over_the_limit_is_not_reported_as_limit_plus_one_bytes(home: Path) -> None:
    # Files are read up to the limit and one byte more; the flag must not claim that size.
    import localstore

    with localstore.open(home=home, max_yaml_bytes=1000) as store:
        store.save("s/big", "a: 1\n")
    (home / "blueprints" / "s" / "big.blueprint.yaml").write_text("a: " + "x" * 5000 + "\n")
    with localstore.open(home=home, max_yaml_bytes=1000) as store:  # reconcile flags it
        problems = [p for p in store.check().problems if p["kind"] == "flagged"]
    assert [p["path"] for p in problems] == ["s/big.blueprint.yaml"]
    assert "over the limit of 1000 bytes" in problems[0]["detail"]
    assert "1001" not in problems[0]["detail"]


def test_a_meta_too_large_to_read_back_is_refused_and_the_old_version_kept(store) -> None:
    """A save wrote meta files of any size, which its own reads (1 MiB) then refused: the
    blueprint came back flagged at the next reconcile. It is refused before anything is written."""
    first = store.save("a", "v: 1\n", description="short")
    with pytest.raises(InvalidMetaError) as caught:
        store.save("a", "v: 2\n", description="d" * 2**20)
    assert "over the 1,048,576-byte limit of meta files" in caught.value.message
    assert caught.value.hint
    loaded = store.load(first.id)
    assert (loaded.content, loaded.meta.description, loaded.rev) == ("v: 1\n", "short", 1)
    with pytest.raises(InvalidMetaError):
        store.save("b", "v: 1\n", description="d" * 2**20)
    assert not store.exists("b.blueprint.yaml")
    assert sorted(p.name for p in store.paths.blueprints.iterdir()) == [
        ".localstore-folder",  # the folder's mark (see _reconcile.ROOT_MARK_NAME)
        "a.blueprint.meta.json",
        "a.blueprint.yaml",
    ]
    assert store.reconcile().clean


def test_extra_meta_that_only_fits_compact_is_written_compact(store) -> None:
    """Indented, a long list of small items grows 3.5x: written compact, it reads back."""
    first = store.save("a", "v: 1\n")
    saved = store.save("a", "v: 1\n", meta={**first.meta.to_dict(), "grid": [1] * 300_000})
    assert store.abspath("a.blueprint.meta.json").stat().st_size <= 2**20
    assert store.reconcile().clean
    assert store.load(saved.id).meta.extra["grid"] == [1] * 300_000


def test_a_path_differing_only_by_case_from_a_blueprints_says_what_to_do(store) -> None:
    """The refusal said why ("collide on macOS and Windows") but not what to do."""
    mine = store.save("team/flow", "v: 1\n")
    with pytest.raises(UnsafePathError, match="differs only by case") as refused:
        store.save("team/Flow", "v: 2\n")
    assert refused.value.hint == (
        "paths that differ only by case collide on macOS and Windows: use its spelling, "
        "team/flow.blueprint.yaml, or rename it first with "
        "'localstore mv team/flow.blueprint.yaml team/Flow.blueprint.yaml'"
    )
    other = store.save("other", "v: 3\n")
    with pytest.raises(UnsafePathError, match="differs only by case") as moving:
        store.move(other.id, "team/FLOW")
    assert moving.value.hint == (
        "paths that differ only by case collide on macOS and Windows: choose another path, "
        "or first move or delete the blueprint at team/flow.blueprint.yaml"
    )
    # What the first hint says works: the rename, then the save.
    store.move("team/flow.blueprint.yaml", "team/Flow.blueprint.yaml")
    assert store.save("team/Flow", "v: 2\n").id == mine.id


def test_a_new_folder_differing_only_by_case_from_one_beside_it_is_refused(store) -> None:
    """Only the file's own folder was checked: ``team/b`` beside ``Team/a`` made a second
    folder, one folder on macOS and Windows (a device there mixed both folders' blueprints)."""
    store.save("Team/a", "v: 1\n")
    store.save("Team/Sub/c", "v: 1\n")
    for rel in ("team/b", "TEAM/x/y", "Team/sub/d"):
        with pytest.raises(UnsafePathError, match="differs only by case from the folder"):
            store.save(rel, "v: 1\n")
    x = store.save("x", "v: 1\n")
    with pytest.raises(UnsafePathError):
        store.move(x.id, "team/x")
    # One batch: the folder it makes itself counts too.
    results = store.save_many([SaveRequest("New/a", "v: 1\n"), SaveRequest("new/b", "v: 1\n")])
    assert isinstance(results[1], UnsafePathError)
    store.save("Team/b", "v: 1\n")  # the folder's own case is fine
    assert sorted(p.name for p in store.paths.blueprints.iterdir()) == [
        ".localstore-folder",  # the folder's mark (see _reconcile.ROOT_MARK_NAME)
        "New",
        "Team",
        "x.blueprint.meta.json",
        "x.blueprint.yaml",
    ]
    assert store.reconcile().clean
