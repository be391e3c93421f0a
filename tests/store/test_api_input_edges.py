"""Edge values an app passes to the public store API get a typed error with a hint (or a
sensible answer), never a builtin exception from deep inside."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from localstore.errors import InvalidInputError, InvalidMetaError, LocalStoreError


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"content": "steps: [caf\udce9]\n"}, InvalidInputError),
        ({"content": {"steps": ["caf\udce9"]}}, InvalidInputError),
        ({"name": "caf\udce9"}, InvalidMetaError),
        ({"description": "\ud800"}, InvalidMetaError),
        ({"tags": ["ok", "caf\udce9"]}, InvalidMetaError),
    ],
)
def test_text_with_lone_surrogates_is_refused_typed(
    store, kwargs: dict[str, Any], error: type[LocalStoreError]
) -> None:
    """Lone surrogates (a file name or argument decoded with surrogateescape) cannot be written as
    UTF-8: the save raised a raw UnicodeEncodeError."""
    kwargs = {"content": "steps: []\n", **kwargs}
    with pytest.raises(error, match="not valid Unicode") as info:
        store.save("a/text", kwargs.pop("content"), **kwargs)
    assert info.value.hint
    assert store.count() == 0


def test_a_limit_or_offset_beyond_64_bits_pages_as_unbounded(store) -> None:
    """SQLite integers are 64-bit: a limit of 10**20 ("everything") raised a raw OverflowError
    from list and search. It lists everything; such an offset skips everything."""
    for i in range(3):
        store.save(f"f/deploy{i}", f"deploy: {i}\n", tags=["t"])
    huge = 10**20
    assert len(store.list(limit=huge)) == 3
    assert len(store.list(folder="f", limit=huge)) == 3
    assert len(store.list(tag="t", limit=huge, offset=1)) == 2
    assert store.list(folder="f", offset=huge) == []
    assert store.list(tag="t", limit=2, offset=huge) == []
    assert len(store.search("deploy", limit=huge)) == 3
    assert len(store.search("deploy", limit=2**63)) == 3


@pytest.mark.parametrize("rev", ["x", "2", None, 1.7, True, [1]])
def test_a_revision_number_that_is_not_an_int_is_invalid_input(store, rev: Any) -> None:
    """load_revision and restore ran int(rev): "x" and None raised a raw ValueError or TypeError,
    1.7 and True silently meant revision 1."""
    bp = store.save("r/a", "a: 1\n")
    store.save("r/a", "a: 2\n")
    calls = [lambda: store.load_revision(bp.meta.id, rev), lambda: store.restore(bp.meta.id, rev)]
    if rev is not None:  # (expected_rev=None: no check)
        calls.append(lambda: store.save("r/a", "a: 3\n", expected_rev=rev))
    for call in calls:
        with pytest.raises(InvalidInputError, match="whole number") as info:
            call()
        assert "history" in info.value.hint
    assert store.load("r/a").content == "a: 2\n"


def test_a_revision_number_beyond_64_bits_is_not_found(store) -> None:
    from localstore.errors import RevisionNotFoundError

    bp = store.save("r/a", "a: 1\n")
    with pytest.raises(RevisionNotFoundError, match=str(10**20)):
        store.load_revision(bp.meta.id, 10**20)
    with pytest.raises(RevisionNotFoundError):
        store.restore(bp.meta.id, 10**20)


def test_a_folder_filter_in_decomposed_unicode_finds_its_folder(store) -> None:
    """Paths are stored NFC (a save of an NFD path lands in the NFC folder), but the folder filter
    of list and search was compared as given: a folder name taken from macOS (NFD) found nothing."""
    import unicodedata

    store.save(unicodedata.normalize("NFD", "café/menu"), "steps: [soup]\n")
    nfd = unicodedata.normalize("NFD", "café")
    assert [i.path for i in store.list(folder=nfd)] == ["café/menu.blueprint.yaml"]
    assert [i.path for i in store.list(folder=nfd, recursive=False)] == ["café/menu.blueprint.yaml"]
    assert [h.info.path for h in store.search("soup", folder=nfd)] == ["café/menu.blueprint.yaml"]


def test_restoring_onto_a_taken_path_says_to_pass_another_path(store) -> None:
    """The hint said 'choose another path, or save with that blueprint's id': restore has no path
    to choose unless told it takes ``path``, and saving with the other blueprint's id would
    overwrite that blueprint."""
    from localstore.errors import AlreadyExistsError, UnsafePathError

    gone = store.save("p/a", "a: 1\n")
    store.delete("p/a")
    store.save("p/a", "b: 1\n")
    with pytest.raises(AlreadyExistsError) as info:
        store.restore(gone.meta.id, 1)
    assert "--path" in info.value.hint and "path=" in info.value.hint
    assert "that blueprint's id" not in info.value.hint
    store.delete("p/a")
    store.save("p/A", "c: 1\n")  # only the case differs now
    with pytest.raises(UnsafePathError) as info2:
        store.restore(gone.meta.id, 1)
    assert "--path" in info2.value.hint
    assert store.restore(gone.meta.id, 1, path="p/a-restored").content == "a: 1\n"


def test_loading_a_deleted_blueprint_says_it_was_deleted_and_how_to_restore(store) -> None:
    """load/move/delete of a deleted blueprint said only 'no blueprint matches' with the hint
    "see 'localstore ls'", where it is not listed; its history and restore are what help."""
    from localstore.errors import NotFoundError

    bp = store.save("d/gone", "a: 1\n")
    store.move("d/gone", "d/moved")
    store.delete("d/moved")
    for ref in (bp.meta.id, "d/moved"):
        with pytest.raises(NotFoundError, match="was deleted") as info:
            store.load(ref)
        assert f"restore {bp.meta.id} 2" in info.value.hint
    with pytest.raises(NotFoundError, match="no blueprint matches"):
        store.load("d/never")
    assert store.restore(bp.meta.id, 2).path == "d/moved.blueprint.yaml"


def _nfd(text: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFD", text)


def test_a_decomposed_tag_is_saved_composed_and_found_by_either_form(store) -> None:
    """macOS text fields and file names hand out decomposed (NFD) text: a tag saved so was
    stored as given, and a filter typed elsewhere (composed, NFC) found nothing."""
    bp = store.save("t/a", "a: 1\n", tags=[_nfd("café"), "café"])
    assert bp.meta.tags == ("café",)  # NFC, and the two forms are one tag
    for tag in ("café", _nfd("café")):
        assert [i.path for i in store.list(tag=tag)] == ["t/a.blueprint.yaml"]
        assert [h.info.path for h in store.search("a", tag=tag)] == ["t/a.blueprint.yaml"]
    # A whole meta given by the app is its input too.
    meta = {"id": str(uuid.uuid4()), "name": _nfd("Résumé"), "tags": [_nfd("é")]}
    again = store.save("t/b", "b: 1\n", meta=meta)
    assert again.meta.tags == ("é",) and again.meta.name == "Résumé"


def test_decomposed_names_and_descriptions_are_saved_composed(store) -> None:
    """Search matches what the tokenizer makes of the text: Latin accents fold either way, but a
    decomposed Hangul name (its jamo) was not found by the composed word people type."""
    store.save("k/a", "a: 1\n", name=_nfd("한국어 guide"), description=_nfd("설명"))
    bp = store.load("k/a")
    assert bp.meta.name == "한국어 guide" and bp.meta.description == "설명"
    assert [h.info.path for h in store.search("한국어")] == ["k/a.blueprint.yaml"]
    assert [h.info.path for h in store.search(_nfd("설명"))] == ["k/a.blueprint.yaml"]


def test_rows_indexed_with_decomposed_tags_are_still_found(store, home) -> None:
    """Rows written before tags were normalized (or by another tool: a meta file edited by
    hand, a device on an older version) keep their NFD tags: a filter finds them in either form,
    once each even when the blueprint holds both forms."""
    import json

    for path, tags in (("t/both", [_nfd("café"), "café", "x"]), ("t/old", [_nfd("café"), "x"])):
        bp = store.save(path, "a: 1\n")
        meta_file = store.abspath(path + ".blueprint.meta.json")
        meta = json.loads(meta_file.read_text())
        meta["tags"] = tags
        meta_file.write_text(json.dumps(meta, ensure_ascii=False))
        store.reconcile()
        assert store.load(bp.meta.id).meta.tags == tuple(tags)  # the file as it is
    both = ["t/both.blueprint.yaml", "t/old.blueprint.yaml"]
    for tag in ("café", _nfd("café")):
        assert [i.path for i in store.list(tag=tag)] == both
        assert [i.path for i in store.list(tag=tag, folder="t", limit=5)] == both
        assert sorted(h.info.path for h in store.search("a", tag=tag)) == both


@pytest.mark.parametrize(
    "folder",
    ["a\\b", "./a", "a/./b", "a/../a", "a//b", "..", "a/x.blueprint.yaml", "a/b ", "a/CON"],
)
def test_a_folder_filter_no_blueprint_can_be_in_is_refused(store, folder: str) -> None:
    """Forms a save refuses (a backslash, '.', '..', empty parts, a name no OS allows) can hold
    no blueprint: list and search silently returned [] for a typo like 'a\\b' or './a'."""
    store.save("a/b/x", "a: 1\n")
    for call in (lambda: store.list(folder=folder), lambda: store.search("a", folder=folder)):
        with pytest.raises(InvalidInputError, match="folder") as info:
            call()
        assert info.value.hint


def test_folder_filters_with_slashes_at_the_ends_still_work(store) -> None:
    store.save("a/b/x", "a: 1\n")
    store.save("top", "a: 1\n")
    for folder in ("a", "a/", "/a", "/a/b/", "a/b"):
        assert [i.path for i in store.list(folder=folder)] == ["a/b/x.blueprint.yaml"]
        assert [h.info.path for h in store.search("a", folder=folder)] == ["a/b/x.blueprint.yaml"]
    assert [i.path for i in store.list(folder="/")] == ["top.blueprint.yaml"]
    assert [h.info.path for h in store.search("a", folder="/")] == ["top.blueprint.yaml"]
    assert len(store.list(folder=None)) == 2


def test_an_origin_that_is_not_documented_is_refused(store) -> None:
    """origin= went into history as given ('bogus', a typo of 'remote' that sync would then
    treat as local)."""
    from localstore.store import SaveRequest

    bp = store.save("o/a", "a: 1\n")
    calls = [
        lambda: store.save("o/a", "a: 2\n", origin="Remote"),
        lambda: store.save_many([SaveRequest(path="o/b", content="b: 1\n")], origin="sync"),
        lambda: store.move("o/a", "o/c", origin=""),
        lambda: store.delete("o/a", origin=None),
        lambda: store.restore("o/a", 1, origin="bogus"),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError, match="origin") as info:
            call()
        assert "local" in info.value.hint and "remote" in info.value.hint
    assert [r.origin for r in store.history(bp.meta.id)] == ["local"]
    assert store.count() == 1
    assert store.save("o/a", "a: 3\n", origin="import").rev == 2


@pytest.mark.parametrize("value", ["no", "", 0, 1, None])
def test_a_bool_flag_that_is_not_a_bool_is_refused(store, value: Any) -> None:
    """list(descending="no") sorted descending (any non-empty string is true); save(public="no")
    wrote a meta file no store reads back."""
    store.save("b/a", "a: 1\n")
    calls = [
        lambda: store.list(descending=value),
        lambda: store.list(recursive=value),
        lambda: store.resolve("b/a", include_deleted=value),
        lambda: store.row("b/a", include_deleted=value),
        lambda: store.check(fix=value),
    ]
    if value is not None:  # (None: leave the meta field as it is)
        calls += [
            lambda: store.save("b/a", "a: 2\n", public=value),
            lambda: store.save("b/a", "a: 2\n", encrypted=value),
        ]
    for call in calls:
        with pytest.raises(InvalidInputError, match="True or False") as info:
            call()
        assert info.value.hint
    assert store.load("b/a").rev == 1
    assert store.save("b/a", "a: 2\n", public=True).meta.public is True


def test_a_folder_filter_takes_in_every_folder_below_it_and_only_those(store) -> None:
    # Below "a" is every folder that starts with "a/": the old bound "a/\uffff" left out a
    # sub-folder whose name starts above U+FFFF (an emoji). The filter is one range of the
    # folder index now (and the same for search).
    for path in ["a/x", "a/b/x", "a/😀/x", "a/\U0010fffd/x", "a-b/x", "a.b/x", "ab/x", "x"]:
        store.save(path, "steps: [deploy]\n")
    below_a = [
        "a/b/x.blueprint.yaml",
        "a/x.blueprint.yaml",
        "a/😀/x.blueprint.yaml",
        "a/\U0010fffd/x.blueprint.yaml",
    ]
    assert [i.path for i in store.list(folder="a")] == below_a
    assert [i.path for i in store.list(folder="a", recursive=False)] == ["a/x.blueprint.yaml"]
    assert sorted(h.info.path for h in store.search("deploy", folder="a")) == sorted(below_a)
    assert [i.path for i in store.list(folder="/")] == ["x.blueprint.yaml"]
    assert [h.info.path for h in store.search("deploy", folder="/")] == ["x.blueprint.yaml"]
