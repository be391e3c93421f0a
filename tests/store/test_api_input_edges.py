"""Edge values an app passes to the public store API get a typed error with a hint (or a
sensible answer), never a builtin exception from deep inside."""

from __future__ import annotations

from typing import Any

import pytest

from localstore.errors import InvalidInputError, InvalidMetaError


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
    store, kwargs: dict[str, Any], error: type[Exception]
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
